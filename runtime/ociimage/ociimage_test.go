package ociimage

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"testing"
)

func busybox(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat("/bin/busybox"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("busybox-static missing in CI: %v", err)
		}
		t.Skip("no /bin/busybox (install busybox-static)")
	}
	return "/bin/busybox"
}

func TestReproducible(t *testing.T) {
	bb := busybox(t)
	var a, b bytes.Buffer
	ra, err := Write(&a, Options{Busybox: bb})
	if err != nil {
		t.Fatal(err)
	}
	rb, err := Write(&b, Options{Busybox: bb})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) || ra != rb {
		t.Fatalf("two builds differ: %+v vs %+v", ra, rb)
	}
	var c bytes.Buffer
	rc, err := Write(&c, Options{Busybox: bb, Name: "docker.io/memohfs/other:1"})
	if err != nil {
		t.Fatal(err)
	}
	if rc.ManifestDigest != ra.ManifestDigest {
		t.Fatalf("the name must live in index.json only, manifest changed: %s vs %s", rc.ManifestDigest, ra.ManifestDigest)
	}
	if int64(a.Len()) != ra.Size {
		t.Fatalf("size %d, wrote %d", ra.Size, a.Len())
	}
}

// TestLayout checks the tar is a valid OCI layout: every blob's name is its
// digest, index -> manifest -> config/layer all resolve, and the layer holds
// busybox, its applets and the image's init script runs /bin/sh.
func TestLayout(t *testing.T) {
	bb := busybox(t)
	var buf bytes.Buffer
	res, err := Write(&buf, Options{Busybox: bb})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if !h.ModTime.Equal(epoch) || h.Uid != 0 || h.Gid != 0 {
			t.Errorf("%s: not normalised: %v %d %d", h.Name, h.ModTime, h.Uid, h.Gid)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	blob := func(d string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+d[len("sha256:"):]]
		if !ok {
			t.Fatalf("blob %s missing", d)
		}
		s := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(s[:]) != d {
			t.Fatalf("blob %s has wrong content", d)
		}
		return b
	}
	var index struct {
		Manifests []struct {
			Digest      string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatal(err)
	}
	if len(index.Manifests) != 1 || index.Manifests[0].Annotations["io.containerd.image.name"] != DefaultName {
		t.Fatalf("index: %+v", index)
	}
	if index.Manifests[0].Digest != res.ManifestDigest {
		t.Fatalf("manifest digest %s, result says %s", index.Manifests[0].Digest, res.ManifestDigest)
	}
	var manifest struct {
		Config struct{ Digest string }
		Layers []struct{ Digest, MediaType string }
	}
	if err := json.Unmarshal(blob(res.ManifestDigest), &manifest); err != nil {
		t.Fatal(err)
	}
	var config struct {
		Config struct{ Cmd []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blob(manifest.Config.Digest), &config); err != nil {
		t.Fatal(err)
	}
	if len(manifest.Layers) != 1 || config.RootFS.DiffIDs[0] != manifest.Layers[0].Digest {
		t.Fatalf("uncompressed layer: diff id must equal digest: %+v %+v", manifest, config)
	}
	if config.Config.Cmd[0] != "/bin/sh" {
		t.Fatalf("cmd %v", config.Config.Cmd)
	}
	layer := map[string]*tar.Header{}
	lr := tar.NewReader(bytes.NewReader(blob(manifest.Layers[0].Digest)))
	for {
		h, err := lr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		layer[h.Name] = h
	}
	if h := layer["bin/busybox"]; h == nil || h.Mode&0o111 == 0 {
		t.Fatalf("bin/busybox missing or not executable")
	}
	if h := layer["bin/sh"]; h == nil || h.Typeflag != tar.TypeSymlink || h.Linkname != "/bin/busybox" {
		t.Fatalf("bin/sh: %+v", h)
	}
	if h := layer["tmp/"]; h == nil || h.Mode != 0o1777 {
		t.Fatalf("tmp/: %+v", h)
	}
	if layer["data/"] == nil {
		t.Fatalf("no /data mount point")
	}
}
