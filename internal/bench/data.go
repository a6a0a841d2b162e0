package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
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

// A suite runs related workloads on one target and returns their values
// (in the units of the workload table). Any failed operation fails it.
type suite struct {
	Name string
	Run  func(b *bench, t target) ([]metric, error)
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

// readFile reads path to its end and fails unless it read exactly want
// bytes: a failed or short read must fail the run, never count as fast.
func readFile(path string, want int64) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var got int64
	for {
		n, err := f.Read(buf)
		got += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if got != want {
		return fmt.Errorf("read %s: %d bytes, want %d", path, got, want)
	}
	return nil
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
			Error       int
			Read, Write struct{ IOPS float64 }
		}
	}
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return 0, fmt.Errorf("fio %s: no JSON in its output", rw)
	}
	if err := json.Unmarshal(out[i:], &res); err != nil || len(res.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	iops := res.Jobs[0].Write.IOPS
	if rw == "randread" {
		iops = res.Jobs[0].Read.IOPS
	}
	if res.Jobs[0].Error != 0 || iops <= 0 {
		return 0, fmt.Errorf("fio %s: error %d, %g IOPS", rw, res.Jobs[0].Error, iops)
	}
	return iops, nil
}

func seqSuite(b *bench, t target) ([]metric, error) {
	z := b.sizes
	f := filepath.Join(t.Dir, "seq.bin")
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
	if d, err = timed(func() error { return readFile(f, z.Seq) }); err != nil {
		return nil, err
	}
	out = append(out, metric{"seq read cold", mibps(z.Seq, d)})
	if d, err = timed(func() error { return readFile(f, z.Seq) }); err != nil {
		return nil, err
	}
	out = append(out, metric{"seq read warm", mibps(z.Seq, d)})
	iops, err := fio(f, "randread", z.Seq, z.FioSeconds)
	if err != nil {
		return nil, err
	}
	out = append(out, metric{"4k randread warm", iops})
	rw := filepath.Join(t.Dir, "randwrite.bin")
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

// createTree makes root and n files of 4 KiB in it, 1,000 to a subdir:
// the "create" workload, for root here and for benchUID in `bench create`.
func createTree(root string, n int) error {
	page := block[:4096]
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
}

func smallSuite(b *bench, t target) ([]metric, error) {
	n := b.sizes.Small
	root := filepath.Join(t.Dir, "small")
	defer os.RemoveAll(root)
	var out []metric
	d, err := timed(func() error { return createTree(root, n) })
	if err != nil {
		return nil, err
	}
	out = append(out, metric{fmt.Sprintf("create %d x 4KiB", n), perSec(n, d)})
	lsR := func() error {
		out, err := exec.Command("sh", "-c", "ls -lR "+root+" > /dev/null").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ls -lR: %v: %s", err, out)
		}
		return nil
	}
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
		files := 0
		err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() {
				return err
			}
			files++
			return readFile(p, 4096)
		})
		if err == nil && files != n {
			err = fmt.Errorf("cat all: %d files, want %d", files, n)
		}
		return err
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
	rm := func() error {
		out, err := exec.Command("rm", "-rf", root).CombinedOutput()
		if err != nil {
			return fmt.Errorf("rm -rf: %v: %s", err, out)
		}
		if _, err := os.Lstat(root); !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("rm -rf left %s (%v)", root, err)
		}
		return nil
	}
	if d, err = timed(rm); err != nil {
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

func rsyncSuite(b *bench, t target) ([]metric, error) {
	dst := filepath.Join(t.Dir, "rsync")
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

func savesSuite(b *bench, t target) ([]metric, error) {
	n := b.sizes.Saves
	doc, tmp := filepath.Join(t.Dir, "doc.txt"), filepath.Join(t.Dir, ".doc.txt.swp")
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

// statSuite: lstat of a name that does not exist, by its full path (the
// walk crosses every name above it: on memohfs /M and the bot, FUSE
// dentries, and two mounts), and at an fd of its dir (the name's own
// lookup alone). Every answer must be ENOENT: any other (EIO, ENOTCONN,
// a file) fails the run.
func statSuite(b *bench, t target) ([]metric, error) {
	n := b.sizes.Stats
	p := filepath.Join(t.Dir, "no-such-file")
	dirfd, err := unix.Open(t.Dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	defer unix.Close(dirfd)
	var st unix.Stat_t
	byPath := func() error {
		if err := unix.Lstat(p, &st); err != unix.ENOENT {
			return fmt.Errorf("lstat %s: %v, want ENOENT", p, err)
		}
		return nil
	}
	atFd := func() error {
		if err := unix.Fstatat(dirfd, "no-such-file", &st, unix.AT_SYMLINK_NOFOLLOW); err != unix.ENOENT {
			return fmt.Errorf("fstatat %s: %v, want ENOENT", p, err)
		}
		return nil
	}
	var out []metric
	for _, m := range []struct {
		name string
		op   func() error
	}{{"stat of a missing name", byPath}, {"stat of a missing name, at its dir's fd", atFd}} {
		// The first lookup may go to the server; the rest may be cached.
		if err := m.op(); err != nil {
			return nil, err
		}
		d, err := timed(func() error {
			for i := 0; i < n; i++ {
				if err := m.op(); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		out = append(out, metric{m.name, float64(d.Nanoseconds()) / float64(n)})
	}
	return out, nil
}
