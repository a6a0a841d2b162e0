package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/memohfs/memohfs/internal/embedded"
)

// cmdBot runs the cmd/ rows.
const cmdBot = "cmdb"

// cmdRows measures cmd/: `memohfs exec b -- true` against `ctr task exec`
// of the same in the same containerd, stdout throughput through data, and
// a 1 KiB request/response through data against the same exchange over a
// plain pipe.
func (b *bench) cmdRows(reps int) error {
	s := b.s
	if err := os.Mkdir(filepath.Join(s.mnt, cmdBot), 0o755); err != nil {
		return err
	}
	if _, err := s.ctl(cmdBot, "start"); err != nil {
		return err
	}
	defer s.ctl(cmdBot, "stop")
	ci, err := s.inside.Container(context.Background(), cmdBot)
	if err != nil {
		return err
	}
	run, err := embedded.RunDir(s.state)
	if err != nil {
		return err
	}
	ctr := filepath.Join(filepath.Dir(s.o.Binary), "ctr")
	sock := filepath.Join(run, "ctrd", "c.sock")
	for i := 0; i < reps; i++ {
		d, err := timed(func() error {
			return exec.Command(s.o.Binary, "exec", "--mount", s.mnt, cmdBot, "--", "true").Run()
		})
		if err != nil {
			return fmt.Errorf("memohfs exec true: %w", err)
		}
		b.cp("memohfs exec b -- true (anchor: ctr task exec)", "memohfs", ms(d))
		d, err = timed(func() error {
			out, err := exec.Command(ctr, "-a", sock, "-n", "memohfs", "task", "exec", "--exec-id", "bench-"+strconv.Itoa(i), ci.ID, "true").CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("ctr task exec true: %w", err)
		}
		b.cp("memohfs exec b -- true (anchor: ctr task exec)", "direct", ms(d))
	}
	for i := 0; i < reps; i++ {
		mibs, err := stdoutThroughput(exec.Command(b.s.o.Binary, "exec", "--mount", b.s.mnt, cmdBot, "--", "dd", "if=/dev/zero", "bs=1M", "count=512", "status=none"))
		if err != nil {
			return err
		}
		b.cpUnit("stdout through data (anchor: ctr task exec)", "MiB/s", "memohfs", mibs)
		mibs, err = stdoutThroughput(exec.Command(ctr, "-a", sock, "-n", "memohfs", "task", "exec", "--exec-id", "bench-out-"+strconv.Itoa(i), ci.ID,
			"dd", "if=/dev/zero", "bs=1M", "count=512", "status=none"))
		if err != nil {
			return err
		}
		b.cpUnit("stdout through data (anchor: ctr task exec)", "MiB/s", "direct", mibs)
	}
	med, p99, err := b.roundTrips(2000, func() (io.Writer, io.Reader, func(), error) { return b.cmdCat() })
	if err != nil {
		return err
	}
	b.cpUnit("1 KiB round trip through data, median (anchor: plain pipe)", "µs", "memohfs", med)
	b.cpUnit("1 KiB round trip through data, p99 (anchor: plain pipe)", "µs", "memohfs", p99)
	med, p99, err = b.roundTrips(2000, pipeCat)
	if err != nil {
		return err
	}
	b.cpUnit("1 KiB round trip through data, median (anchor: plain pipe)", "µs", "direct", med)
	b.cpUnit("1 KiB round trip through data, p99 (anchor: plain pipe)", "µs", "direct", p99)
	return nil
}

// cpUnit is cp with a unit of its own.
func (b *bench) cpUnit(name, unit, target string, v float64) {
	r := b.get(name, unit, unit == "MiB/s", "control")
	r.Values[target] = append(r.Values[target], v)
}

// stdoutThroughput reads the 512 MiB cmd writes to its stdout (what a
// user pipes), timed from the first byte. The bot writes them with dd
// bs=1M: busybox head -c alone makes no more than ~250 MiB/s here, even
// into /dev/null.
func stdoutThroughput(cmd *exec.Cmd) (float64, error) {
	const mb = 512
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	buf := make([]byte, 1<<20)
	first, err := out.Read(buf)
	start := time.Now()
	total := int64(first)
	n := 0
	for err == nil {
		n, err = out.Read(buf)
		total += int64(n)
	}
	took := time.Since(start)
	if werr := cmd.Wait(); werr != nil {
		return 0, fmt.Errorf("%s: %w", cmd.Args[0], werr)
	}
	if total != int64(mb)<<20 {
		return 0, fmt.Errorf("stdout: %d bytes, want %d", total, mb<<20)
	}
	return float64(total-int64(first)) / (1 << 20) / took.Seconds(), nil
}

// cmdCat starts `cat` in the bot through cmd/ (the files, as a client
// would use them) and gives its stdin and stdout.
func (b *bench) cmdCat() (io.Writer, io.Reader, func(), error) {
	dir := filepath.Join(b.s.mnt, cmdBot, "cmd")
	ctl, err := os.OpenFile(filepath.Join(dir, "clone"), os.O_RDWR, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	nb := make([]byte, 16)
	n, err := ctl.Read(nb)
	if err == nil {
		_, err = ctl.Write([]byte("exec cat\n"))
	}
	if err != nil {
		ctl.Close()
		return nil, nil, nil, err
	}
	data, err := os.OpenFile(filepath.Join(dir, strings.TrimSpace(string(nb[:n])), "data"), os.O_RDWR, 0)
	if err != nil {
		ctl.Close()
		return nil, nil, nil, err
	}
	return data, data, func() { data.Close(); ctl.Close() }, nil
}

// pipeCat is the anchor: the same cat on the host, over plain pipes.
func pipeCat() (io.Writer, io.Reader, func(), error) {
	cmd := exec.Command("cat")
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, nil, nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, nil, nil, err
	}
	return in, out, func() { in.Close(); cmd.Wait() }, nil
}

// roundTrips sends 1 KiB and reads it back, n times, and gives the
// median and p99 in µs.
func (b *bench) roundTrips(n int, start func() (io.Writer, io.Reader, func(), error)) (float64, float64, error) {
	w, r, done, err := start()
	if err != nil {
		return 0, 0, err
	}
	defer done()
	msg := []byte(strings.Repeat("x", 1023) + "\n")
	got := make([]byte, len(msg))
	lat := make([]float64, 0, n)
	for i := 0; i < n+n/10; i++ {
		t0 := time.Now()
		if _, err := w.Write(msg); err != nil {
			return 0, 0, err
		}
		if _, err := io.ReadFull(r, got); err != nil {
			return 0, 0, err
		}
		if i >= n/10 { // the first tenth warms up
			lat = append(lat, float64(time.Since(t0).Nanoseconds())/1000)
		}
	}
	sort.Float64s(lat)
	return lat[len(lat)/2], lat[len(lat)*99/100], nil
}
