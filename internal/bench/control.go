package main

import (
	"bufio"
	"context"
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

// snapshotEvent finds the pause of snapshot name in the bot's events.
func (s *stack) snapshotPause(bot, name string) (float64, error) {
	f, err := os.OpenFile(filepath.Join(s.mnt, bot, "events"), os.O_RDONLY|syscallNonblock, 0)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		if !strings.Contains(l, " snapshot ") || !strings.Contains(l, " name="+name+" ") {
			continue
		}
		for _, w := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(w, "paused_ms="); ok {
				return strconv.ParseFloat(v, 64)
			}
		}
	}
	return 0, fmt.Errorf("no snapshot event with a pause for %s", name)
}

// snapshots: pause and total, with 100 MB changed in the rootfs, and with
// 1 MB and 100 MB changed in data/.
func (b *bench) snapshots(reps int) error {
	s := b.s
	ctx := context.Background()
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
	for i := 0; i < reps; i++ {
		cases := []struct {
			label  string
			change func() error
		}{
			{fmt.Sprintf("%d MB rootfs", mb), func() error {
				code, err := s.inside.Exec(ctx, "snap", []string{"dd", "if=/dev/urandom", fmt.Sprintf("of=/root/blob%d", i),
					"bs=1M", fmt.Sprintf("count=%d", mb)}, nil, nil)
				if err == nil && code != 0 {
					err = fmt.Errorf("dd in the bot: exit %d", code)
				}
				return err
			}},
			{"1 MB data", func() error { return writeFile(filepath.Join(host, fmt.Sprintf("one%d", i)), 1<<20, false) }},
			{fmt.Sprintf("%d MB data", mb), func() error {
				return writeFile(filepath.Join(host, fmt.Sprintf("big%d", i)), int64(mb)<<20, false)
			}},
		}
		for j, c := range cases {
			if err := c.change(); err != nil {
				return err
			}
			name := fmt.Sprintf("b%d-%d", i, j)
			d, err := s.ctl("snap", "snapshot "+name)
			if err != nil {
				return err
			}
			pause, err := s.snapshotPause("snap", name)
			if err != nil {
				return err
			}
			b.cp("snapshot pause, "+c.label, "memohfs", pause)
			b.cp("snapshot total, "+c.label, "memohfs", ms(d))
		}
	}
	return nil
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
	start := time.Now()
	for i := 0; i < n; i++ {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
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
		d, _ := timed(func() error { _, err := os.ReadDir(s.mnt); return err })
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
	catAll()
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
