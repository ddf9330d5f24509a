package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// volumeSyncPeriod is how often Secret and ConfigMap volumes are compared with their source. A
// kubelet takes up to about a minute (its sync period plus its cache); a test should not wait that long.
const volumeSyncPeriod = 2 * time.Second

// sourceFiles is the content of a configMap or secret volume: one file per key (the volume's
// `items` are not supported). A missing optional source is empty; a missing required one is a
// NotFound error.
func (w *podWorker) sourceFiles(ctx context.Context, p *corev1.Pod, v corev1.Volume) (map[string][]byte, error) {
	files := map[string][]byte{}
	switch {
	case v.ConfigMap != nil:
		cm, err := w.a.client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, v.ConfigMap.Name, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && v.ConfigMap.Optional != nil && *v.ConfigMap.Optional {
				return files, nil
			}
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for k, val := range cm.Data {
			files[k] = []byte(val)
		}
		for k, val := range cm.BinaryData {
			files[k] = val
		}
	case v.Secret != nil:
		s, err := w.a.client.CoreV1().Secrets(p.Namespace).Get(ctx, v.Secret.SecretName, metav1.GetOptions{})
		if err != nil {
			if apierrors.IsNotFound(err) && v.Secret.Optional != nil && *v.Secret.Optional {
				return files, nil
			}
			return nil, fmt.Errorf("volume %s: %w", v.Name, err)
		}
		for k, val := range s.Data {
			files[k] = val
		}
	}
	return files, nil
}

// writeAtomically lays files out in dir the way a kubelet's atomic writer does, so that a reader
// sees either the old or the new set of keys, never a mix: the data goes into a fresh hidden
// directory `..<time>`, the symlink `..data` is switched to it by a rename, and each key is a
// symlink `<key> -> ..data/<key>`. The previous data directory and keys that went away are removed.
func writeAtomically(dir string, files map[string][]byte) error {
	tsDir := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000")
	if err := os.MkdirAll(filepath.Join(dir, tsDir), 0o755); err != nil {
		return err
	}
	for k, val := range files {
		f := filepath.Join(dir, tsDir, k)
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(f, val, 0o644); err != nil {
			return err
		}
	}
	previous, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(tsDir, tmpLink); err != nil {
		return err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, "..data")); err != nil {
		return err
	}
	// Top-level names: a key "a/b" is reached through the symlink "a".
	keys := map[string]bool{}
	for k := range files {
		top := strings.SplitN(k, "/", 2)[0]
		keys[top] = true
		link := filepath.Join(dir, top)
		want := filepath.Join("..data", top)
		if target, err := os.Readlink(link); err == nil && target == want {
			continue
		}
		_ = os.RemoveAll(link)
		if err := os.Symlink(want, link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name := e.Name()
		stale := name == previous && name != tsDir
		gone := !strings.HasPrefix(name, "..") && !keys[name]
		if stale || gone {
			_ = os.RemoveAll(filepath.Join(dir, name))
		}
	}
	return nil
}

// onDisk is what writeAtomically last wrote in dir (nil when nothing was).
func onDisk(dir string) map[string][]byte {
	data := filepath.Join(dir, "..data")
	if _, err := os.Stat(data); err != nil {
		return nil
	}
	files := map[string][]byte{}
	_ = filepath.WalkDir(data+"/", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		if b, err := os.ReadFile(path); err == nil {
			rel, _ := filepath.Rel(data+"/", path)
			files[rel] = b
		}
		return nil
	})
	return files
}

func sameFiles(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// syncVolumes keeps the pod's configMap and secret volumes in step with their sources, as a
// kubelet does, until the pod is gone: a changed source is written out again atomically; a
// deleted one leaves the files as they were.
func (w *podWorker) syncVolumes(ctx context.Context, p *corev1.Pod, dirs map[string]string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case <-time.After(volumeSyncPeriod):
		}
		for _, v := range p.Spec.Volumes {
			if v.ConfigMap == nil && v.Secret == nil {
				continue
			}
			files, err := w.sourceFiles(ctx, p, v)
			if err != nil || sameFiles(files, onDisk(dirs[v.Name])) {
				continue
			}
			if err := writeAtomically(dirs[v.Name], files); err != nil {
				w.logf("volume %s: %v", v.Name, err)
				continue
			}
			w.logf("volume %s updated from its source", v.Name)
		}
	}
}

// claimDir is the directory that stands for a PersistentVolumeClaim: <state-dir>/pvc/<namespace>/<claim>,
// shared by every pod of the namespace that mounts the claim (like a ReadWriteMany volume) and
// kept when the pods go. The claim must exist (a NotFound keeps the pod Pending, as a kubelet
// would); there is no provisioner, so it need not be Bound.
func (w *podWorker) claimDir(ctx context.Context, p *corev1.Pod, v corev1.Volume) (string, error) {
	name := v.PersistentVolumeClaim.ClaimName
	if _, err := w.a.client.CoreV1().PersistentVolumeClaims(p.Namespace).Get(ctx, name, metav1.GetOptions{}); err != nil {
		return "", fmt.Errorf("volume %s: claim %s: %w", v.Name, name, err)
	}
	d := filepath.Join(w.a.stateDir, "pvc", p.Namespace, name)
	if err := os.MkdirAll(d, 0o777); err != nil {
		return "", err
	}
	// Writable for any uid, like a fresh volume with fsGroup applied.
	_ = os.Chmod(d, 0o777)
	return d, nil
}
