// Command ociimage packs a directory into a single-layer OCI image without a container daemon
// or registry (go-containerregistry as a library), and writes it as an image tarball that
// `ctr images import` and `nerdctl load` read, or pushes it to a registry.
//
//	ociimage --rootfs DIR --tag REPO:TAG --entrypoint /usr/local/bin/app [--user 65532]
//	         [--env K=V]... [--workdir /] [--out image.tar] [--push] [--fast]
//
// The layer is reproducible: entries in name order, owned by root unless --owner says
// otherwise, timestamps zero, modes as on disk. Unlike `crane append`, the config carries
// the OS, the architecture and the entrypoint, which a kubelet needs.
package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(v string) error { *r = append(*r, v); return nil }

func main() {
	rootfs := flag.String("rootfs", "", "directory whose contents become the image's file system (required)")
	tag := flag.String("tag", "", "image reference, e.g. ghcr.io/dumpwatch/sidecar:0.1.0 (required)")
	entrypoint := flag.String("entrypoint", "", "entrypoint, words separated by spaces (required)")
	user := flag.String("user", "", "default user (uid or uid:gid); empty: root")
	workdir := flag.String("workdir", "/", "working directory")
	out := flag.String("out", "", "write the image tarball here")
	push := flag.Bool("push", false, "push to the registry of --tag (credentials from ~/.docker/config.json)")
	fast := flag.Bool("fast", false, "compress the layer for speed, not size (images that never leave this machine)")
	var env, owners repeated
	flag.Var(&env, "env", "K=V environment of the image (repeatable)")
	flag.Var(&owners, "owner", "PATH=UID:GID owner of a path in the image and everything under it (repeatable); others are root's")
	flag.Parse()
	if *rootfs == "" || *tag == "" || *entrypoint == "" || (*out == "" && !*push) {
		fmt.Fprintln(os.Stderr, "ociimage: --rootfs, --tag, --entrypoint and --out or --push are required")
		flag.Usage()
		os.Exit(2)
	}
	level := gzip.DefaultCompression
	if *fast {
		level = gzip.BestSpeed
	}
	if err := run(*rootfs, *tag, *entrypoint, *user, *workdir, *out, *push, level, env, owners); err != nil {
		fmt.Fprintf(os.Stderr, "ociimage: %v\n", err)
		os.Exit(1)
	}
}

func run(rootfs, tag, entrypoint, user, workdir, out string, push bool, level int, env, owners []string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return fmt.Errorf("--tag %q: %w", tag, err)
	}
	own, err := parseOwners(owners)
	if err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		r, w := io.Pipe()
		go func() { w.CloseWithError(writeTar(w, rootfs, own)) }()
		return r, nil
	}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(level))
	if err != nil {
		return fmt.Errorf("layer of %s: %w", rootfs, err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer})
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", runtime.GOARCH
	cfg.Config.Entrypoint = strings.Fields(entrypoint)
	cfg.Config.User = user
	cfg.Config.WorkingDir = workdir
	cfg.Config.Env = append([]string{"PATH=/usr/local/bin:/usr/bin:/bin"}, env...)
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	if out != "" {
		tmp := out + ".partial"
		if err := tarball.WriteToFile(tmp, ref, img); err != nil {
			return fmt.Errorf("writing %s: %w", out, err)
		}
		if err := os.Rename(tmp, out); err != nil {
			return err
		}
	}
	if push {
		if err := remote.Write(ref, img, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref.Name(), digest)
	return nil
}

type owner struct{ uid, gid int }

func parseOwners(specs []string) (map[string]owner, error) {
	own := map[string]owner{}
	for _, s := range specs {
		path, ids, ok := strings.Cut(s, "=")
		uid, gid, ok2 := strings.Cut(ids, ":")
		u, err1 := strconv.Atoi(uid)
		g, err2 := strconv.Atoi(gid)
		if !ok || !ok2 || err1 != nil || err2 != nil || !strings.HasPrefix(path, "/") {
			return nil, fmt.Errorf("--owner %q: want /path=UID:GID", s)
		}
		own[strings.TrimSuffix(path, "/")] = owner{u, g}
	}
	return own, nil
}

// ownerOf is the owner of the longest --owner path that is p or holds p.
func ownerOf(own map[string]owner, p string) owner {
	for q := p; ; q = filepath.Dir(q) {
		if o, ok := own[q]; ok {
			return o
		}
		if q == "/" || q == "." {
			return owner{}
		}
	}
}

func writeTar(w io.Writer, root string, own map[string]owner) error {
	var paths []string
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != root {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		info, err := os.Lstat(p)
		if err != nil {
			return err
		}
		link := ""
		if info.Mode()&fs.ModeSymlink != 0 {
			if link, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(info, link)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		o := ownerOf(own, "/"+rel)
		hdr.Name = rel
		if info.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uid, hdr.Gid, hdr.Uname, hdr.Gname = o.uid, o.gid, "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = time.Unix(0, 0), time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			f.Close()
			if err != nil {
				return err
			}
		} else if !info.IsDir() && link == "" {
			return errors.New(p + ": only files, directories and symlinks go into an image")
		}
	}
	return tw.Close()
}
