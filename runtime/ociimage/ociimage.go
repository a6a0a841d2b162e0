// Package ociimage writes the default memohfs bot image: a one-layer OCI
// image-layout tar built from the host's busybox-static, with no registry and
// no shell tooling involved. The output is reproducible: the same busybox
// binary and options give the same bytes, so the image digest is stable
// across builds and machines.
package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path"
	goruntime "runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// DefaultName is the reference the default bot image is stored under.
const DefaultName = "docker.io/memohfs/bot:dev"

// InitScript is the default bot process: it stays up, logs one line, and
// exits 0 on SIGTERM so a stop does not have to wait out its grace period.
const InitScript = `trap 'echo "memohfs bot $(hostname) stopping"; exit 0' TERM INT; ` +
	`echo "memohfs bot $(hostname) up"; while :; do sleep 3600 & wait $!; done`

// Options say what goes into the image.
type Options struct {
	Name    string // image reference; DefaultName when empty
	Busybox string // path to a static busybox; /bin/busybox when empty
	Arch    string // GOARCH-style architecture; the running one when empty
}

// Result describes a written image.
type Result struct {
	Name           string
	ManifestDigest string // sha256:...
	LayerDigest    string
	Size           int64 // bytes of the layout tar
}

var epoch = time.Unix(0, 0).UTC()

// WriteFile builds the image and writes it atomically to file.
func WriteFile(file string, opts Options) (Result, error) {
	var buf bytes.Buffer
	res, err := Write(&buf, opts)
	if err != nil {
		return res, err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return res, err
	}
	if err := os.Rename(tmp, file); err != nil {
		os.Remove(tmp)
		return res, err
	}
	return res, nil
}

// Write builds the image and writes the OCI image-layout tar to w.
func Write(w io.Writer, opts Options) (Result, error) {
	if opts.Name == "" {
		opts.Name = DefaultName
	}
	if opts.Busybox == "" {
		opts.Busybox = "/bin/busybox"
	}
	if opts.Arch == "" {
		opts.Arch = goruntime.GOARCH
	}
	bb, err := os.ReadFile(opts.Busybox)
	if err != nil {
		return Result{}, fmt.Errorf("read busybox: %w (install busybox-static)", err)
	}
	applets, err := listApplets(opts.Busybox)
	if err != nil {
		return Result{}, err
	}
	layer, err := rootfsLayer(bb, applets)
	if err != nil {
		return Result{}, err
	}
	layerDigest := digest(layer)

	config := map[string]any{
		"architecture": opts.Arch,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config": map[string]any{
			"Env":        []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin"},
			"Cmd":        []string{"/bin/sh", "-c", InitScript},
			"WorkingDir": "/",
			"Labels":     map[string]string{"org.opencontainers.image.title": "memohfs bot"},
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history": []map[string]string{{"created": epoch.Format(time.RFC3339), "created_by": "memohfs ociimage: busybox-static"}},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return Result{}, err
	}
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.manifest.v1+json",
		"config":        descriptor("application/vnd.oci.image.config.v1+json", configJSON),
		"layers":        []any{descriptor("application/vnd.oci.image.layer.v1.tar", layer)},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return Result{}, err
	}
	tag := opts.Name
	if i := strings.LastIndex(tag, ":"); i > strings.LastIndex(tag, "/") {
		tag = tag[i+1:]
	}
	mdesc := descriptor("application/vnd.oci.image.manifest.v1+json", manifestJSON)
	mdesc["platform"] = map[string]string{"architecture": opts.Arch, "os": "linux"}
	mdesc["annotations"] = map[string]string{
		"io.containerd.image.name":          opts.Name,
		"org.opencontainers.image.ref.name": tag,
	}
	index := map[string]any{
		"schemaVersion": 2,
		"mediaType":     "application/vnd.oci.image.index.v1+json",
		"manifests":     []any{mdesc},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return Result{}, err
	}

	cw := &countWriter{w: w}
	tw := tar.NewWriter(cw)
	files := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)},
		{"index.json", indexJSON},
	}
	for _, f := range files {
		if err := writeFile(tw, f.name, 0o644, f.data); err != nil {
			return Result{}, err
		}
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := writeDir(tw, d, 0o755); err != nil {
			return Result{}, err
		}
	}
	blobs := map[string][]byte{}
	for _, b := range [][]byte{configJSON, layer, manifestJSON} {
		blobs[strings.TrimPrefix(digest(b), "sha256:")] = b
	}
	for _, hexd := range slices.Sorted(maps.Keys(blobs)) {
		if err := writeFile(tw, "blobs/sha256/"+hexd, 0o644, blobs[hexd]); err != nil {
			return Result{}, err
		}
	}
	if err := tw.Close(); err != nil {
		return Result{}, err
	}
	return Result{Name: opts.Name, ManifestDigest: digest(manifestJSON), LayerDigest: layerDigest, Size: cw.n}, nil
}

// listApplets asks busybox for its applets with their install paths
// (bin/sh, usr/bin/env, ...), sorted.
func listApplets(busybox string) ([]string, error) {
	out, err := exec.Command(busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	var applets []string
	for _, l := range strings.Split(string(out), "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l == "bin/busybox" || strings.Contains(l, "..") || path.IsAbs(l) {
			continue
		}
		applets = append(applets, path.Clean(l))
	}
	sort.Strings(applets)
	return applets, nil
}

// rootfsLayer builds the single uncompressed layer.
func rootfsLayer(busybox []byte, applets []string) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		data []byte
	}
	entries := map[string]entry{}
	dir := func(name string, mode int64) {
		entries[name+"/"] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "run", "sbin", "usr", "usr/bin", "usr/sbin", "var", "data"} {
		dir(d, 0o755)
	}
	dir("tmp", 0o1777)
	dir("root", 0o700)
	file := func(name string, mode int64, data []byte) {
		entries[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data))}, data: data}
	}
	file("bin/busybox", 0o755, busybox)
	file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n"))
	file("etc/group", 0o644, []byte("root:x:0:\nnogroup:x:65534:\n"))
	for _, a := range applets {
		if _, ok := entries[path.Dir(a)+"/"]; !ok {
			continue // only applets in the directories above
		}
		entries[a] = entry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: a, Linkname: "/bin/busybox", Mode: 0o777}}
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, name := range slices.Sorted(maps.Keys(entries)) {
		e := entries[name]
		h := e.hdr
		h.ModTime, h.Uid, h.Gid, h.Format = epoch, 0, 0, tar.FormatUSTAR
		if err := tw.WriteHeader(&h); err != nil {
			return nil, fmt.Errorf("layer %s: %w", name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func writeFile(tw *tar.Writer, name string, mode int64, data []byte) error {
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatUSTAR}
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func writeDir(tw *tar.Writer, name string, mode int64) error {
	return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, ModTime: epoch, Format: tar.FormatUSTAR})
}

func descriptor(mediaType string, b []byte) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest(b), "size": len(b)}
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
