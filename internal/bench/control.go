package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/memohfs/memohfs/runtime"
)

func (s *stack) ctl(bot, text string) (time.Duration, error) {
	return timed(func() error {
		f, err := os.OpenFile(filepath.Join(s.mnt, bot, "ctl"), os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			return err
		}
		_, werr := f.Write([]byte(text))
		cerr := f.Close()
		if werr != nil {
			b, _ := os.ReadFile(filepath.Join(s.mnt, bot, "err"))
			return fmt.Errorf("ctl %q: %v (%s)", text, werr, strings.TrimSpace(string(b)))
		}
		return cerr
	})
}

// ctlLatency: `echo start > ctl` and `echo stop > ctl` against the same
// steps through the runtime package straight, interleaved.
func (b *bench) ctlLatency(reps int) error {
	s := b.s
	ctx := context.Background()
	if err := os.Mkdir(filepath.Join(s.mnt, "cp"), 0o755); err != nil {
		return err
	}
	data := filepath.Join(s.dir, "direct-data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return err
	}
	if _, err := s.direct.Create(ctx, runtime.BotSpec{Bot: "direct", DataDir: data}); err != nil {
		return err
	}
	for i := 0; i < reps; i++ {
		d, err := s.ctl("cp", "start")
		if err != nil {
			return err
		}
		b.cp("echo start > ctl", "memohfs", ms(d))
		d, err = timed(func() error { _, err := s.direct.Start(ctx, "direct"); return err })
		if err != nil {
			return err
		}
		b.cp("echo start > ctl", "direct", ms(d))
		if d, err = s.ctl("cp", "stop"); err != nil {
			return err
		}
		b.cp("echo stop > ctl", "memohfs", ms(d))
		d, err = timed(func() error { _, err := s.direct.Stop(ctx, "direct", 10*time.Second); return err })
		if err != nil {
			return err
		}
		b.cp("echo stop > ctl", "direct", ms(d))
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// snapshotEvent is the detail of snapshot name's event in the bot's
// events (key=value words: paused_ms, data_bytes_frozen, ...).
func (s *stack) snapshotEvent(bot, name string) (map[string]string, error) {
	f, err := os.OpenFile(filepath.Join(s.mnt, bot, "events"), os.O_RDONLY|syscallNonblock, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, " snapshot ") || !strings.Contains(l, " name="+name+" ") {
			continue
		}
		kv := map[string]string{}
		for _, w := range strings.Fields(l) {
			if k, v, ok := strings.Cut(w, "="); ok {
				kv[k] = v
			}
		}
		return kv, nil
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("no snapshot event for %s", name)
}

// eventNumber is a number of a snapshot event's detail.
func eventNumber(kv map[string]string, key string) (float64, error) {
	v, ok := kv[key]
	if !ok {
		return 0, fmt.Errorf("snapshot event has no %s: %v", key, kv)
	}
	return strconv.ParseFloat(v, 64)
}

// snapshots: pause and total of a snapshot taken while the bot writes,
// with 100 MB (20 with --quick) changed in the rootfs, and 1 MB and 100 MB
// changed in data/. For each, the bot writes the MB as 1 MB files, then
// keeps rewriting them, 1 MB after 1 MB, until the snapshot is done
// (writer): the passes run on a tree that changes under them, so the
// frozen pass has to copy what changed since the last running pass (at
// most the case's MB: a file is copied once per pass). The bytes the
// frozen pass copied in data/ are a row of their own, and a data case
// whose frozen pass never copied anything fails the run: its pause would
// have measured nothing.
func (b *bench) snapshots(reps int) error {
	s := b.s
	if err := os.Mkdir(filepath.Join(s.mnt, "snap"), 0o755); err != nil {
		return err
	}
	if _, err := s.ctl("snap", "start"); err != nil {
		return err
	}
	host := filepath.Join(s.state, "data", "bots", "snap")
	mb := 100
	if b.o.Quick {
		mb = 20
	}
	hits := map[string]int{}
	for i := 0; i < reps; i++ {
		cases := []struct {
			label string
			dir   string // in the bot
			mb    int
			data  bool
		}{
			{fmt.Sprintf("%d MB rootfs", mb), fmt.Sprintf("/root/c%d", i), mb, false},
			{"1 MB data", fmt.Sprintf("/data/c%d-1", i), 1, true},
			{fmt.Sprintf("%d MB data", mb), fmt.Sprintf("/data/c%d-2", i), mb, true},
		}
		for j, c := range cases {
			name := fmt.Sprintf("b%d-%d", i, j)
			w, err := s.startWriter("snap", host, name, c.dir, c.mb)
			if err != nil {
				return fmt.Errorf("snapshot %s: %w", c.label, err)
			}
			d, err := s.ctl("snap", "snapshot "+name)
			rewrote, werr := w.stop()
			if err == nil && werr != nil {
				err = fmt.Errorf("snapshot %s: %w", c.label, werr)
			}
			if err != nil {
				return err
			}
			kv, err := s.snapshotEvent("snap", name)
			if err != nil {
				return err
			}
			pause, err := eventNumber(kv, "paused_ms")
			if err != nil {
				return err
			}
			b.cp("snapshot pause, "+c.label, "memohfs", pause)
			b.cp("snapshot total, "+c.label, "memohfs", ms(d))
			if c.data {
				frozen, err := eventNumber(kv, "data_bytes_frozen")
				if err != nil {
					return err
				}
				b.cp("frozen pass copied, "+c.label, "memohfs", frozen/(1<<20))
				if b.o.Verbose || frozen == 0 {
					fmt.Fprintf(os.Stderr, "bench: snapshot %s (%s): the bot rewrote %d MB meanwhile; event %v\n", name, c.label, rewrote, kv)
				}
				n := hits[c.label] // present (0) even when never hit
				if frozen > 0 {
					n++
				}
				hits[c.label] = n
			}
		}
	}
	for label, n := range hits {
		if n == 0 { // every snapshot of the case
			return fmt.Errorf("snapshot pause, %s: in %d snapshots the frozen pass never copied anything, so the row measured no work", label, reps)
		}
	}
	return nil
}

// writer is a process in the bot that rewrites files while a snapshot
// runs.
type writer struct {
	stopFile string // host path whose existence ends the writer
	done     chan error
	out      *bytes.Buffer
}

// writerScript writes $2 files of 1 MB in dir $1, says so by making $3,
// then rewrites them in place, one after the other (one dd of 16 writes
// of 64 KiB each), until $4 exists, and prints how many MB it rewrote.
const writerScript = `d=$1; n=$2; ready=$3; stop=$4
mkdir -p "$d" || exit 1
k=0
while [ $k -lt $n ]; do
	dd if=/dev/urandom of="$d/f$k" bs=64k count=16 2>/dev/null || exit 1
	k=$((k+1))
done
: > "$ready" || exit 1
j=0
while [ ! -e "$stop" ]; do
	dd if=/dev/urandom of="$d/f$((j % n))" bs=64k count=16 conv=notrunc 2>/dev/null || exit 1
	j=$((j+1))
done
echo $j
`

// startWriter starts a writer in bot (whose host data dir is host, bound
// at /data) on dir, with mb files, and returns once it has written them
// all and is rewriting.
func (s *stack) startWriter(bot, host, tag, dir string, mb int) (*writer, error) {
	ready, stop := ".bench-"+tag+".ready", ".bench-"+tag+".stop"
	w := &writer{stopFile: filepath.Join(host, stop), done: make(chan error, 1), out: &bytes.Buffer{}}
	go func() {
		var errOut bytes.Buffer
		code, err := s.inside.Exec(context.Background(), bot,
			[]string{"sh", "-c", writerScript, "sh", dir, strconv.Itoa(mb), "/data/" + ready, "/data/" + stop}, w.out, &errOut)
		if err == nil && code != 0 {
			err = fmt.Errorf("writer in the bot: exit %d: %s", code, strings.TrimSpace(errOut.String()))
		}
		w.done <- err
	}()
	deadline := time.Now().Add(5 * time.Minute)
	for {
		if _, err := os.Lstat(filepath.Join(host, ready)); err == nil {
			return w, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			w.stop()
			return nil, err
		}
		select {
		case err := <-w.done:
			if err == nil {
				err = errors.New("writer in the bot ended before it was ready")
			}
			return nil, err
		default:
		}
		if time.Now().After(deadline) {
			w.stop()
			return nil, fmt.Errorf("writer in the bot not ready within 5 minutes")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// stop ends the writer and returns how many MB it rewrote; a writer that
// failed or rewrote nothing is an error.
func (w *writer) stop() (int, error) {
	if err := os.WriteFile(w.stopFile, nil, 0o644); err != nil {
		return 0, err
	}
	if err := <-w.done; err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(w.out.String()))
	if err != nil || n == 0 {
		return 0, fmt.Errorf("writer in the bot rewrote nothing (output %q)", w.out.String())
	}
	return n, nil
}

// visibility: how long a file the bot writes inside its container takes
// to show through data/ (new file), and an append to a file the kernel
// has cached (size).
func (b *bench) visibility(reps int) error {
	s := b.s
	ctx := context.Background()
	data := filepath.Join(s.mnt, "snap", "data")
	host := filepath.Join(s.state, "data", "bots", "snap")
	for i := 0; i < reps; i++ {
		name := fmt.Sprintf("vis%d", i)
		lag, err := pollLag(filepath.Join(data, name), filepath.Join(host, name), -1, func() error {
			_, err := s.inside.Exec(ctx, "snap", []string{"sh", "-c", "echo x > /data/" + name}, nil, nil)
			return err
		})
		if err != nil {
			return err
		}
		b.cp("bot-side new file visible", "memohfs", lag)
		fi, err := os.Stat(filepath.Join(data, name))
		if err != nil {
			return err
		}
		lag, err = pollLag(filepath.Join(data, name), filepath.Join(host, name), fi.Size(), func() error {
			_, err := s.inside.Exec(ctx, "snap", []string{"sh", "-c", "echo more >> /data/" + name}, nil, nil)
			return err
		})
		if err != nil {
			return err
		}
		b.cp("bot-side change visible", "memohfs", lag)
	}
	return nil
}

// pollLag starts act and polls path (through the mount) every 0.2 ms until
// it exists (oldSize < 0) or its size differs from oldSize; the lag is from
// the host file's mtime (when the bot wrote) to when the mount showed it.
func pollLag(path, hostPath string, oldSize int64, act func() error) (float64, error) {
	errc := make(chan error, 1)
	go func() { errc <- act() }()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		fi, err := os.Stat(path)
		seen := time.Now()
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return 0, err // only "not there yet" is worth waiting for
		}
		if err == nil && (oldSize < 0 || fi.Size() != oldSize) {
			hf, err := os.Stat(hostPath)
			if err != nil {
				return 0, err
			}
			if err := <-errc; err != nil {
				return 0, err
			}
			lag := seen.Sub(hf.ModTime())
			if lag < 0 {
				lag = 0 // within the mtime clock's granularity
			}
			return ms(lag), nil
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("%s never showed the change", path)
}

// scale: N bots (made, not started): ls /M and cat /M/*/status, warm, and
// memohfs's resident memory.
func (b *bench) scale(n int) error {
	s := b.s
	start := time.Now()
	if err := b.makeBots(n); err != nil {
		return err
	}
	b.cp(fmt.Sprintf("mkdir %d bots (4 at a time), per bot", n), "memohfs", ms(time.Since(start))/float64(n))
	entries, err := os.ReadDir(s.mnt)
	if err != nil {
		return err
	}
	if len(entries) < n {
		return fmt.Errorf("ls /M shows %d bots, want %d", len(entries), n)
	}
	for i := 0; i < 10; i++ {
		d, err := timed(func() error {
			e, err := os.ReadDir(s.mnt)
			if err == nil && len(e) != len(entries) {
				err = fmt.Errorf("ls /M shows %d bots, then %d", len(entries), len(e))
			}
			return err
		})
		if err != nil {
			return err
		}
		b.cp(fmt.Sprintf("ls /M, %d bots, warm", n), "memohfs", ms(d))
	}
	catAll := func() error {
		for _, e := range entries {
			if _, err := os.ReadFile(filepath.Join(s.mnt, e.Name(), "status")); err != nil {
				return err
			}
		}
		return nil
	}
	if err := catAll(); err != nil {
		return err
	}
	for i := 0; i < 5; i++ {
		d, err := timed(catAll)
		if err != nil {
			return err
		}
		b.cp(fmt.Sprintf("cat /M/*/status, %d bots", n), "memohfs", ms(d))
	}
	b.cp(fmt.Sprintf("memohfs RSS, %d bots", n), "memohfs", s.rss())
	return nil
}

// makeBots makes bots s0000 .. s<n-1> (made, not started), 4 mkdirs at a
// time.
func (b *bench) makeBots(n int) error {
	s := b.s
	var wg sync.WaitGroup
	errc := make(chan error, n)
	work := make(chan int)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				if err := os.Mkdir(filepath.Join(s.mnt, fmt.Sprintf("s%04d", i)), 0o755); err != nil {
					errc <- err
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	return nil
}
