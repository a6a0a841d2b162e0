package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// sizes of the data-plane workloads.
type sizes struct {
	Seq        int64 // bytes, sequential write/read
	RandWrite  int64 // bytes, the randwrite file
	Small      int   // small files created, listed, read, removed
	RsyncFiles int
	Saves      int
	Stats      int
	FioSeconds int
}

func sizesFor(o options) sizes {
	if o.Quick {
		return sizes{Seq: 128 << 20, RandWrite: 64 << 20, Small: 2000, RsyncFiles: 1000, Saves: 200, Stats: 20000, FioSeconds: 2}
	}
	return sizes{Seq: 1 << 30, RandWrite: 256 << 20, Small: 10000, RsyncFiles: 5000, Saves: 1000, Stats: 100000, FioSeconds: 5}
}

// metric is one measured value of one workload on one target.
type metric struct {
	Name  string
	Value float64
}

// A suite runs related workloads on one target dir and returns their
// values (in the units of the workload table).
type suite struct {
	Name string
	Run  func(b *bench, dir string) ([]metric, error)
}

func timed(f func() error) (time.Duration, error) {
	start := time.Now()
	err := f()
	return time.Since(start), err
}

func mibps(n int64, d time.Duration) float64 { return float64(n) / (1 << 20) / d.Seconds() }
func perSec(n int, d time.Duration) float64  { return float64(n) / d.Seconds() }

var block = func() []byte {
	b := make([]byte, 1<<20)
	rand.New(rand.NewSource(1)).Read(b)
	return b
}()

func writeFile(path string, size int64, sync bool) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for left := size; left > 0; {
		n := int64(len(block))
		if left < n {
			n = left
		}
		if _, err := f.Write(block[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if sync {
		if err := f.Sync(); err != nil {
			f.Close()
			return err
		}
	}
	return f.Close()
}

func readFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		n, err := f.Read(buf)
		if n == 0 || err != nil {
			return nil
		}
	}
}

// fio runs one fio job and returns its IOPS.
func fio(file string, rw string, size int64, seconds int) (float64, error) {
	out, err := exec.Command("fio", "--name=bench", "--filename="+file, "--rw="+rw, "--bs=4k", "--ioengine=psync",
		fmt.Sprintf("--size=%d", size), fmt.Sprintf("--runtime=%d", seconds), "--time_based",
		"--invalidate=0", "--output-format=json").Output()
	if err != nil {
		return 0, fmt.Errorf("fio %s: %v", rw, err)
	}
	var res struct {
		Jobs []struct {
			Read, Write struct{ IOPS float64 }
		}
	}
	if err := json.Unmarshal(out[bytes.IndexByte(out, '{'):], &res); err != nil || len(res.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	if rw == "randread" {
		return res.Jobs[0].Read.IOPS, nil
	}
	return res.Jobs[0].Write.IOPS, nil
}

func seqSuite(b *bench, dir string) ([]metric, error) {
	z := b.sizes
	f := filepath.Join(dir, "seq.bin")
	defer os.Remove(f)
	var out []metric
	d, err := timed(func() error { return writeFile(f, z.Seq, true) })
	if err != nil {
		return nil, err
	}
	out = append(out, metric{"seq write+fsync", mibps(z.Seq, d)})
	if err := dropCaches(); err != nil {
		return nil, err
	}
	if d, err = timed(func() error { return readFile(f) }); err != nil {
		return nil, err
	}
	out = append(out, metric{"seq read cold", mibps(z.Seq, d)})
	if d, err = timed(func() error { return readFile(f) }); err != nil {
		return nil, err
	}
	out = append(out, metric{"seq read warm", mibps(z.Seq, d)})
	iops, err := fio(f, "randread", z.Seq, z.FioSeconds)
	if err != nil {
		return nil, err
	}
	out = append(out, metric{"4k randread warm", iops})
	rw := filepath.Join(dir, "randwrite.bin")
	defer os.Remove(rw)
	if err := writeFile(rw, z.RandWrite, true); err != nil {
		return nil, err
	}
	if iops, err = fio(rw, "randwrite", z.RandWrite, z.FioSeconds); err != nil {
		return nil, err
	}
	out = append(out, metric{"4k randwrite", iops})
	return out, nil
}

func smallSuite(b *bench, dir string) ([]metric, error) {
	n := b.sizes.Small
	root := filepath.Join(dir, "small")
	defer os.RemoveAll(root)
	page := block[:4096]
	var out []metric
	d, err := timed(func() error {
		if err := os.Mkdir(root, 0o755); err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			sub := filepath.Join(root, fmt.Sprintf("d%02d", i/1000))
			if i%1000 == 0 {
				if err := os.Mkdir(sub, 0o755); err != nil {
					return err
				}
			}
			if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%05d", i)), page, 0o644); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out = append(out, metric{fmt.Sprintf("create %d x 4KiB", n), perSec(n, d)})
	lsR := func() error { return exec.Command("sh", "-c", "ls -lR "+root+" > /dev/null").Run() }
	if err := dropCaches(); err != nil {
		return nil, err
	}
	if d, err = timed(lsR); err != nil {
		return nil, err
	}
	out = append(out, metric{"ls -lR cold", perSec(n, d)})
	if d, err = timed(lsR); err != nil {
		return nil, err
	}
	out = append(out, metric{"ls -lR warm", perSec(n, d)})
	catAll := func() error {
		return filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			_, err = os.ReadFile(p)
			return err
		})
	}
	if err := dropCaches(); err != nil {
		return nil, err
	}
	if d, err = timed(catAll); err != nil {
		return nil, err
	}
	out = append(out, metric{"cat all cold", perSec(n, d)})
	if d, err = timed(catAll); err != nil {
		return nil, err
	}
	out = append(out, metric{"cat all warm", perSec(n, d)})
	if d, err = timed(func() error { return exec.Command("rm", "-rf", root).Run() }); err != nil {
		return nil, err
	}
	out = append(out, metric{"rm -rf", perSec(n, d)})
	return out, nil
}

// rsyncSource makes the tree rsync copies (once, on the native disk, out
// of the targets): the probe's mix of sizes, fixed mtimes.
func rsyncSource(dir string, files int) error {
	r := rand.New(rand.NewSource(42))
	mt := time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)
	for i := 0; i < files; i++ {
		var size int
		switch p := r.Intn(100); {
		case p < 60:
			size = r.Intn(4 << 10)
		case p < 90:
			size = r.Intn(64 << 10)
		case p < 99:
			size = r.Intn(1 << 20)
		default:
			size = r.Intn(8 << 20)
		}
		sub := filepath.Join(dir, fmt.Sprintf("d%02d/e%d", i%50, i%7))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		p := filepath.Join(sub, fmt.Sprintf("f%05d", i))
		if err := writeFile(p, int64(size), false); err != nil {
			return err
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			return err
		}
	}
	return nil
}

func rsyncSuite(b *bench, dir string) ([]metric, error) {
	dst := filepath.Join(dir, "rsync")
	defer os.RemoveAll(dst)
	rs := func() error {
		out, err := exec.Command("rsync", "-a", b.rsyncSrc+"/", dst+"/").CombinedOutput()
		if err != nil {
			return fmt.Errorf("rsync: %v: %s", err, out)
		}
		return nil
	}
	n := b.sizes.RsyncFiles
	d1, err := timed(rs)
	if err != nil {
		return nil, err
	}
	d2, err := timed(rs)
	if err != nil {
		return nil, err
	}
	return []metric{{fmt.Sprintf("rsync -a %d files", n), perSec(n, d1)}, {"rsync -a no-op", perSec(n, d2)}}, nil
}

func savesSuite(b *bench, dir string) ([]metric, error) {
	n := b.sizes.Saves
	doc, tmp := filepath.Join(dir, "doc.txt"), filepath.Join(dir, ".doc.txt.swp")
	defer os.Remove(doc)
	d, err := timed(func() error {
		for i := 0; i < n; i++ {
			f, err := os.OpenFile(tmp, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			if _, err := f.Write(block[:4096]); err != nil {
				return err
			}
			if err := f.Sync(); err != nil {
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp, doc); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return []metric{{fmt.Sprintf("editor saves x%d", n), perSec(n, d)}}, nil
}

func statSuite(b *bench, dir string) ([]metric, error) {
	n := b.sizes.Stats
	p := filepath.Join(dir, "no-such-file")
	os.Lstat(p) // the first lookup may go to the server; the rest may be cached
	d, _ := timed(func() error {
		for i := 0; i < n; i++ {
			os.Lstat(p)
		}
		return nil
	})
	return []metric{{"stat of a missing name", float64(d.Nanoseconds()) / float64(n)}}, nil
}
