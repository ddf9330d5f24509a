package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// podWorker owns one pod bound to this node: its directories, its processes and its status.
type podWorker struct {
	a       *agent
	ns      string
	name    string
	uid     types.UID
	wake    chan struct{}
	stop    chan struct{}
	once    sync.Once
	mu      sync.Mutex
	procs   map[string]*exec.Cmd // running container processes by container name
	pause   *exec.Cmd            // holder of the shared PID namespace (shareProcessNamespace)
	killing bool
}

func newPodWorker(a *agent, p *corev1.Pod) *podWorker {
	return &podWorker{a: a, ns: p.Namespace, name: p.Name, uid: p.UID,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), procs: map[string]*exec.Cmd{}}
}

func (w *podWorker) notify() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *podWorker) gone() { w.once.Do(func() { close(w.stop) }) }

func (w *podWorker) logf(format string, args ...any) {
	log.Printf("nodeagent: %s/%s: %s", w.ns, w.name, fmt.Sprintf(format, args...))
}

// containerState is what the worker knows about one container.
type containerState struct {
	running  bool
	started  time.Time
	exited   bool
	code     int32
	reason   string
	message  string
	finished time.Time
	restarts int32
	pid      int
	waiting  string
}

func (w *podWorker) run(ctx context.Context) {
	p := w.a.latest(w.ns, w.name, w.uid)
	if p == nil {
		return
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		// Finished before this agent (re)started: only finalize deletion.
		w.waitForDeletion(ctx)
		return
	}
	dir := w.a.podDir(p)
	startTime := metav1.Now()
	states := map[string]*containerState{}
	var smu sync.Mutex
	report := func(phase corev1.PodPhase, msg string) {
		smu.Lock()
		defer smu.Unlock()
		w.report(ctx, p, startTime, states, phase, msg)
	}
	volumes, ok := w.volumesWhenSourcesExist(ctx, p, dir, report)
	if !ok {
		return
	}
	go w.syncVolumes(ctx, p, volumes)
	if p.Spec.ShareProcessNamespace != nil && *p.Spec.ShareProcessNamespace {
		if err := w.startPause(dir); err != nil {
			w.logf("shared PID namespace: %v", err)
			report(corev1.PodFailed, "shared PID namespace: "+err.Error())
			w.waitForDeletion(ctx)
			return
		}
	}
	for _, c := range p.Spec.InitContainers {
		states[c.Name] = &containerState{waiting: "PodInitializing"}
	}
	for _, c := range p.Spec.Containers {
		states[c.Name] = &containerState{waiting: "PodInitializing"}
	}
	report(corev1.PodPending, "")

	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, c := range p.Spec.InitContainers {
			if !w.runContainer(ctx, p, c, dir, volumes, states, &smu, report) {
				return
			}
		}
		var wg sync.WaitGroup
		for _, c := range p.Spec.Containers {
			wg.Add(1)
			go func(c corev1.Container) {
				defer wg.Done()
				w.runContainer(ctx, p, c, dir, volumes, states, &smu, report)
			}(c)
		}
		wg.Wait()
	}()

	for {
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			w.killAll(time.Second)
			return
		case <-done:
			smu.Lock()
			phase := corev1.PodSucceeded
			for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
				if s := states[c.Name]; !s.exited || s.code != 0 {
					phase = corev1.PodFailed
				}
			}
			smu.Unlock()
			w.stopPause()
			report(phase, "")
			w.waitForDeletion(ctx)
			return
		case <-w.wake:
			if cur := w.a.latest(w.ns, w.name, w.uid); cur != nil && cur.DeletionTimestamp != nil {
				grace := int64(30)
				if cur.DeletionGracePeriodSeconds != nil {
					grace = *cur.DeletionGracePeriodSeconds
				}
				if grace > 10 {
					grace = 10
				}
				w.killAll(time.Duration(grace) * time.Second)
				<-done
				w.finalize(ctx)
				return
			}
		}
	}
}

// volumesWhenSourcesExist prepares the pod's volumes, waiting like a kubelet (the pod stays
// Pending) while a Secret or ConfigMap it mounts does not exist yet, e.g. one that cert-manager
// has still to issue. False when the pod is gone or failed meanwhile (already handled).
func (w *podWorker) volumesWhenSourcesExist(ctx context.Context, p *corev1.Pod, dir string,
	report func(corev1.PodPhase, string)) (map[string]string, bool) {
	waiting := ""
	for {
		volumes, err := w.prepareVolumes(ctx, p, dir)
		if err == nil {
			return volumes, true
		}
		if !apierrors.IsNotFound(err) {
			w.logf("volumes: %v", err)
			report(corev1.PodFailed, "volumes: "+err.Error())
			w.waitForDeletion(ctx)
			return nil, false
		}
		if msg := "volumes: " + err.Error(); msg != waiting {
			waiting = msg
			w.logf("%s (waiting)", msg)
			report(corev1.PodPending, msg)
		}
		select {
		case <-ctx.Done():
			return nil, false
		case <-w.stop:
			return nil, false
		case <-w.wake:
			if cur := w.a.latest(w.ns, w.name, w.uid); cur != nil && cur.DeletionTimestamp != nil {
				w.finalize(ctx)
				return nil, false
			}
		case <-time.After(time.Second):
		}
	}
}

// waitForDeletion waits until the pod is deleted, finalizing a graceful deletion like a kubelet.
func (w *podWorker) waitForDeletion(ctx context.Context) {
	for {
		if cur := w.a.latest(w.ns, w.name, w.uid); cur != nil && cur.DeletionTimestamp != nil {
			w.finalize(ctx)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-w.stop:
			return
		case <-w.wake:
		}
	}
}

func (w *podWorker) finalize(ctx context.Context) {
	zero := int64(0)
	uid := w.uid
	err := w.a.client.CoreV1().Pods(w.ns).Delete(ctx, w.name, metav1.DeleteOptions{
		GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
		w.logf("final delete: %v", err)
	}
}

// runContainer runs one container to completion, restarting it as the pod's restartPolicy says.
// It returns whether the container ended successfully.
func (w *podWorker) runContainer(ctx context.Context, p *corev1.Pod, c corev1.Container, dir string,
	volumes map[string]string, states map[string]*containerState, smu *sync.Mutex, report func(corev1.PodPhase, string)) bool {
	for {
		w.mu.Lock()
		killing := w.killing
		w.mu.Unlock()
		if killing || ctx.Err() != nil {
			return false
		}
		cmd, err := w.command(ctx, p, c, dir, volumes)
		if err == nil {
			err = cmd.Start()
		}
		smu.Lock()
		s := states[c.Name]
		if err != nil {
			s.waiting, s.running = "", false
			s.exited, s.code, s.reason, s.message, s.finished = true, 128, "StartError", err.Error(), time.Now()
			smu.Unlock()
			w.logf("container %s: %v", c.Name, err)
			report(corev1.PodRunning, "")
			return false
		}
		w.mu.Lock()
		w.procs[c.Name] = cmd
		w.mu.Unlock()
		s.waiting, s.running, s.exited, s.started, s.pid = "", true, false, time.Now(), cmd.Process.Pid
		smu.Unlock()
		report(corev1.PodRunning, "")

		err = cmd.Wait()
		code := int32(0)
		if cmd.ProcessState != nil {
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				code = 128 + int32(ws.Signal())
			} else {
				code = int32(cmd.ProcessState.ExitCode())
			}
		} else if err != nil {
			code = 128
		}
		w.mu.Lock()
		delete(w.procs, c.Name)
		killing = w.killing
		w.mu.Unlock()
		smu.Lock()
		s.running, s.exited, s.code, s.finished = false, true, code, time.Now()
		s.reason = "Completed"
		if code != 0 {
			s.reason = "Error"
		}
		smu.Unlock()
		w.logf("container %s exited with %d", c.Name, code)
		restart := !killing && (p.Spec.RestartPolicy == corev1.RestartPolicyAlways ||
			(p.Spec.RestartPolicy == corev1.RestartPolicyOnFailure && code != 0))
		if !restart {
			report(corev1.PodRunning, "")
			return code == 0
		}
		smu.Lock()
		s.restarts++
		smu.Unlock()
		report(corev1.PodRunning, "")
		time.Sleep(time.Second)
	}
}

// command builds the process for a container: the entrypoint from the image map (or the spec's
// command), args, env, and a shell prologue that runs in the container's fresh mount namespace
// to bind its volumes and mount its own /proc.
func (w *podWorker) command(ctx context.Context, p *corev1.Pod, c corev1.Container, dir string, volumes map[string]string) (*exec.Cmd, error) {
	env, err := w.env(ctx, p, c)
	if err != nil {
		return nil, err
	}
	lookup := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		lookup[k] = v
	}
	var argv []string
	if len(c.Command) > 0 {
		argv = expand(c.Command, lookup)
	} else if ep, ok := w.a.images[c.Image]; ok {
		argv = []string{ep}
	} else {
		return nil, fmt.Errorf("image %q is not in the node agent's image map and the container has no command", c.Image)
	}
	argv = append(argv, expand(c.Args, lookup)...)

	// Every volume is first bound into a private staging tmpfs, then from there onto its mount
	// path: a mount over /tmp (the dumpwatch sidecar pattern) would otherwise hide the sources of
	// the following mounts, which live in the agent's state directory (often under /tmp).
	var script strings.Builder
	script.WriteString("set -e\nmount --make-rprivate / 2>/dev/null || true\nmount -t proc proc /proc\n")
	if len(c.VolumeMounts) > 0 {
		fmt.Fprintf(&script, "mkdir -p %s\nmount -t tmpfs stage %s\n", stageDir, stageDir)
	}
	for i, m := range c.VolumeMounts {
		src, ok := volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("volumeMount %s: no volume of that name", m.Name)
		}
		if m.SubPath != "" {
			src = filepath.Join(src, m.SubPath)
			if err := os.MkdirAll(src, 0o777); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(&script, "mkdir %s/%d\nmount --bind %s %s/%d\n", stageDir, i, quote(src), stageDir, i)
	}
	for i, m := range c.VolumeMounts {
		fmt.Fprintf(&script, "mkdir -p %s\nmount --bind %s/%d %s\n", quote(m.MountPath), stageDir, i, quote(m.MountPath))
		if m.ReadOnly {
			fmt.Fprintf(&script, "mount -o remount,bind,ro %s\n", quote(m.MountPath))
		}
	}
	if c.WorkingDir != "" {
		fmt.Fprintf(&script, "cd %s\n", quote(c.WorkingDir))
	}
	script.WriteString("exec \"$@\"\n")

	var full []string
	w.mu.Lock()
	pause := w.pause
	w.mu.Unlock()
	if pause != nil {
		init, err := childOf(pause.Process.Pid)
		if err != nil {
			return nil, err
		}
		full = []string{"nsenter", "--target", strconv.Itoa(init), "--pid", "--",
			"unshare", "--mount", "--propagation", "private", "--"}
	} else {
		full = []string{"unshare", "--pid", "--fork", "--kill-child", "--mount", "--propagation", "private", "--"}
	}
	full = append(full, "sh", "-c", script.String(), c.Name)
	full = append(full, argv...)

	logPath := filepath.Join(dir, "logs", c.Name+".log")
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(full[0], full[1:]...)
	cmd.Env = env
	cmd.Dir = "/" // an image without WORKDIR starts in /; workingDir is applied by the prologue
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd, nil
}

func (w *podWorker) env(ctx context.Context, p *corev1.Pod, c corev1.Container) ([]string, error) {
	env := []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOSTNAME=" + p.Name, "HOME=/root",
		"KUBERNETES_SERVICE_HOST=" + w.a.apiHost, "KUBERNETES_SERVICE_PORT=" + w.a.apiPort}
	vals := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.Value != "" {
			v = expand([]string{e.Value}, vals)[0]
		}
		if f := e.ValueFrom; f != nil {
			switch {
			case f.FieldRef != nil:
				v = fieldRef(p, f.FieldRef.FieldPath)
			case f.ConfigMapKeyRef != nil:
				cm, err := w.a.client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, f.ConfigMapKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = cm.Data[f.ConfigMapKeyRef.Key]
			case f.SecretKeyRef != nil:
				s, err := w.a.client.CoreV1().Secrets(p.Namespace).Get(ctx, f.SecretKeyRef.Name, metav1.GetOptions{})
				if err != nil {
					return nil, fmt.Errorf("env %s: %w", e.Name, err)
				}
				v = string(s.Data[f.SecretKeyRef.Key])
			}
		}
		vals[e.Name] = v
		env = append(env, e.Name+"="+v)
	}
	return env, nil
}

func fieldRef(p *corev1.Pod, path string) string {
	switch path {
	case "metadata.name":
		return p.Name
	case "metadata.namespace":
		return p.Namespace
	case "metadata.uid":
		return string(p.UID)
	case "spec.nodeName":
		return p.Spec.NodeName
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName
	case "status.podIP", "status.hostIP":
		return "127.0.0.1"
	}
	return ""
}

// expand does Kubernetes' $(VAR) substitution in command and args.
func expand(in []string, vals map[string]string) []string {
	out := make([]string, len(in))
	for i, s := range in {
		var b strings.Builder
		for j := 0; j < len(s); j++ {
			if strings.HasPrefix(s[j:], "$$") {
				b.WriteByte('$')
				j++
				continue
			}
			if strings.HasPrefix(s[j:], "$(") {
				if end := strings.IndexByte(s[j:], ')'); end > 0 {
					if v, ok := vals[s[j+2:j+end]]; ok {
						b.WriteString(v)
						j += end
						continue
					}
				}
			}
			b.WriteByte(s[j])
		}
		out[i] = b.String()
	}
	return out
}

// stageDir is where a container's volumes are staged inside its own mount namespace (on a
// private tmpfs, so nothing is left on the host but the empty directory).
const stageDir = "/run/dumpwatch-nodeagent-stage"

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// prepareVolumes makes a host directory for every volume: emptyDir and anything unsupported is an
// empty directory, hostPath is the host path itself, persistentVolumeClaim the claim's directory
// (claimDir), configMap and secret are written out as a
// kubelet does (volumes.go; kept in sync by syncVolumes), projected ones once.
func (w *podWorker) prepareVolumes(ctx context.Context, p *corev1.Pod, dir string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range p.Spec.Volumes {
		if v.HostPath != nil {
			out[v.Name] = v.HostPath.Path
			continue
		}
		if v.PersistentVolumeClaim != nil {
			d, err := w.claimDir(ctx, p, v)
			if err != nil {
				return nil, err
			}
			out[v.Name] = d
			continue
		}
		d := filepath.Join(dir, "volumes", v.Name)
		if err := os.MkdirAll(d, 0o777); err != nil {
			return nil, err
		}
		_ = os.Chmod(d, 0o777)
		if v.ConfigMap != nil || v.Secret != nil {
			files, err := w.sourceFiles(ctx, p, v)
			if err != nil {
				return nil, err
			}
			if err := writeAtomically(d, files); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
			out[v.Name] = d
			continue
		}
		files := map[string][]byte{}
		if v.Projected != nil {
			if err := w.projected(ctx, p, v.Projected, files); err != nil {
				return nil, fmt.Errorf("volume %s: %w", v.Name, err)
			}
		}
		for k, val := range files {
			f := filepath.Join(d, k)
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				return nil, err
			}
			if err := os.WriteFile(f, val, 0o644); err != nil {
				return nil, err
			}
		}
		out[v.Name] = d
	}
	return out, nil
}

// projected fills a projected volume: service-account tokens (TokenRequest bound to the pod),
// ConfigMaps, Secrets and downward-API fields; enough for in-cluster client configuration.
func (w *podWorker) projected(ctx context.Context, p *corev1.Pod, v *corev1.ProjectedVolumeSource, files map[string][]byte) error {
	keys := func(data map[string][]byte, items []corev1.KeyToPath) {
		if len(items) == 0 {
			for k, val := range data {
				files[k] = val
			}
		}
		for _, it := range items {
			if val, ok := data[it.Key]; ok {
				files[it.Path] = val
			}
		}
	}
	for _, src := range v.Sources {
		switch {
		case src.ServiceAccountToken != nil:
			t := src.ServiceAccountToken
			exp := int64(3600)
			if t.ExpirationSeconds != nil {
				exp = *t.ExpirationSeconds
			}
			var aud []string
			if t.Audience != "" {
				aud = []string{t.Audience}
			}
			sa := p.Spec.ServiceAccountName
			if sa == "" {
				sa = "default"
			}
			tr := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{Audiences: aud, ExpirationSeconds: &exp,
				BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}}}
			res, err := w.a.client.CoreV1().ServiceAccounts(p.Namespace).CreateToken(ctx, sa, tr, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("token for service account %s: %w", sa, err)
			}
			files[t.Path] = []byte(res.Status.Token)
		case src.ConfigMap != nil:
			cm, err := w.a.client.CoreV1().ConfigMaps(p.Namespace).Get(ctx, src.ConfigMap.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && src.ConfigMap.Optional != nil && *src.ConfigMap.Optional {
					continue
				}
				return err
			}
			data := map[string][]byte{}
			for k, val := range cm.Data {
				data[k] = []byte(val)
			}
			keys(data, src.ConfigMap.Items)
		case src.Secret != nil:
			s, err := w.a.client.CoreV1().Secrets(p.Namespace).Get(ctx, src.Secret.Name, metav1.GetOptions{})
			if err != nil {
				if apierrors.IsNotFound(err) && src.Secret.Optional != nil && *src.Secret.Optional {
					continue
				}
				return err
			}
			keys(s.Data, src.Secret.Items)
		case src.DownwardAPI != nil:
			for _, it := range src.DownwardAPI.Items {
				if it.FieldRef != nil {
					files[it.Path] = []byte(fieldRef(p, it.FieldRef.FieldPath))
				}
			}
		}
	}
	return nil
}

// startPause starts the process that holds the pod's shared PID namespace (PID 1 in it).
func (w *podWorker) startPause(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	cmd := exec.Command("unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--", "sleep", "infinity")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	for i := 0; i < 100; i++ {
		if _, err := childOf(cmd.Process.Pid); err == nil {
			w.mu.Lock()
			w.pause = cmd
			w.mu.Unlock()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	return errors.New("the PID namespace holder did not start")
}

func (w *podWorker) stopPause() {
	w.mu.Lock()
	pause := w.pause
	w.pause = nil
	w.mu.Unlock()
	if pause != nil {
		_ = syscall.Kill(-pause.Process.Pid, syscall.SIGKILL)
	}
}

// childOf finds the first child of pid (the PID-namespace init that `unshare --fork` started).
func childOf(pid int) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err == nil {
		if f := strings.Fields(string(data)); len(f) > 0 {
			return strconv.Atoi(f[0])
		}
	}
	return 0, fmt.Errorf("process %d has no child yet", pid)
}

// killAll stops every container: SIGTERM to each process group, SIGKILL after the grace period.
func (w *podWorker) killAll(grace time.Duration) {
	w.mu.Lock()
	w.killing = true
	procs := make([]*exec.Cmd, 0, len(w.procs))
	for _, c := range w.procs {
		procs = append(procs, c)
	}
	w.mu.Unlock()
	for _, c := range procs {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
	}
	deadline := time.Now().Add(grace)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		n := len(w.procs)
		w.mu.Unlock()
		if n == 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, c := range procs {
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
	}
	w.stopPause()
}

// report writes the pod's status through the API (a merge patch of the status subresource).
func (w *podWorker) report(ctx context.Context, p *corev1.Pod, start metav1.Time, states map[string]*containerState, phase corev1.PodPhase, msg string) {
	status := corev1.PodStatus{Phase: phase, Message: msg, HostIP: "127.0.0.1", PodIP: "127.0.0.1",
		HostIPs: []corev1.HostIP{{IP: "127.0.0.1"}}, PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		StartTime: &start, QOSClass: qosClass(p)}
	toStatus := func(c corev1.Container) corev1.ContainerStatus {
		s := states[c.Name]
		if s == nil {
			// Not set up yet (volumes still being prepared), as a kubelet says it.
			s = &containerState{waiting: "ContainerCreating"}
		}
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image, ImageID: "dumpwatch-local://" + c.Image,
			RestartCount: s.restarts}
		switch {
		case s.running:
			t := true
			cs.Started, cs.Ready = &t, true
			cs.ContainerID = fmt.Sprintf("dumpwatch://%d", s.pid)
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(s.started)}
		case s.exited:
			f := false
			cs.Started = &f
			cs.ContainerID = fmt.Sprintf("dumpwatch://%d", s.pid)
			cs.State.Terminated = &corev1.ContainerStateTerminated{ExitCode: s.code, Reason: s.reason, Message: s.message,
				StartedAt: metav1.NewTime(s.started), FinishedAt: metav1.NewTime(s.finished), ContainerID: cs.ContainerID}
		default:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: s.waiting}
		}
		return cs
	}
	allReady, initDone := true, true
	for _, c := range p.Spec.InitContainers {
		cs := toStatus(c)
		if cs.State.Terminated == nil || cs.State.Terminated.ExitCode != 0 {
			initDone = false
		}
		status.InitContainerStatuses = append(status.InitContainerStatuses, cs)
	}
	for _, c := range p.Spec.Containers {
		cs := toStatus(c)
		allReady = allReady && cs.Ready
		status.ContainerStatuses = append(status.ContainerStatuses, cs)
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		s := corev1.ConditionFalse
		if ok {
			s = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: metav1.Now()}
	}
	ready := allReady && phase == corev1.PodRunning
	status.Conditions = []corev1.PodCondition{cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, initDone),
		cond(corev1.ContainersReady, ready), cond(corev1.PodReady, ready)}
	data, _ := json.Marshal(map[string]any{"status": status})
	_, err := w.a.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, data, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		w.logf("status: %v", err)
	}
}

// qosClass keeps the class the API server computed at creation: status.qosClass is immutable,
// so reporting BestEffort for a pod with resources makes every status write fail.
func qosClass(p *corev1.Pod) corev1.PodQOSClass {
	if p.Status.QOSClass != "" {
		return p.Status.QOSClass
	}
	return corev1.PodQOSBestEffort
}
