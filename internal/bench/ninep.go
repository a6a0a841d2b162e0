package main

import (
	"errors"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/hugelgupf/p9/p9"
)

// ninePBot is the 9P rows' own bot: its status, its ctl, and a file in its
// data/ (a bind on the FUSE mount, as every bot's by default).
const ninePBot = "np9"

// ninePMsize is the message size the bench's 9P client asks for (the
// server takes up to 4 MiB); reads of data/ go in chunks of about this.
const ninePMsize = 1 << 20

// ninePClient is one 9P2000.L connection to the bench's memohfs, as root,
// attached at the tree's root.
type ninePClient struct {
	c    *p9.Client
	root p9.File
}

// dial9P connects to s's 9P socket, waiting for it to be served (memohfs
// may listen a moment after the mount is up).
func (s *stack) dial9P() (*ninePClient, error) {
	deadline := time.Now().Add(30 * time.Second)
	var nc net.Conn
	for {
		var err error
		if nc, err = net.Dial("unix", s.sock); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("9P socket %s: %w", s.sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, err := p9.NewClient(nc, p9.WithMessageSize(ninePMsize))
	if err != nil {
		nc.Close()
		return nil, err
	}
	root, err := c.Attach("")
	if err != nil {
		c.Close()
		return nil, err
	}
	return &ninePClient{c: c, root: root}, nil
}

func (n *ninePClient) close() {
	n.root.Close()
	n.c.Close()
}

// open walks to path (slash-separated, from the root; "" is the root
// itself, as a new fid) and opens it.
func (n *ninePClient) open(path string, flags p9.OpenFlags) (p9.File, error) {
	var names []string
	if path = strings.Trim(path, "/"); path != "" {
		names = strings.Split(path, "/")
	}
	_, f, err := n.root.Walk(names)
	if err != nil {
		return nil, fmt.Errorf("9P walk %s: %w", path, err)
	}
	if _, _, err := f.Open(flags); err != nil {
		f.Close()
		return nil, fmt.Errorf("9P open %s: %w", path, err)
	}
	return f, nil
}

// list opens dir and reads all its entries, as ls does; it gives how
// many.
func (n *ninePClient) list(dir string) (int, error) {
	f, err := n.open(dir, p9.ReadOnly)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	count := 0
	for off := uint64(0); ; {
		ds, err := f.Readdir(off, 256<<10)
		if err != nil {
			return count, err
		}
		if len(ds) == 0 {
			return count, nil
		}
		for _, d := range ds {
			if d.Name != "." && d.Name != ".." {
				count++
			}
			off = d.Offset
		}
	}
}

// readAll is walk, open, read to the end and clunk of path, with buf; it
// gives the bytes read.
func (n *ninePClient) readAll(path string, buf []byte) (int64, error) {
	f, err := n.open(path, p9.ReadOnly)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	for {
		k, err := f.ReadAt(buf, total)
		total += int64(k)
		if k == 0 || errors.Is(err, io.EOF) {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// ctl writes text to bot's ctl as `echo text > ctl` does over 9P: walk,
// open write-only with O_TRUNC, write, clunk.
func (n *ninePClient) ctl(bot, text string) error {
	f, err := n.open(bot+"/ctl", p9.WriteOnly|p9.OpenFlags(syscall.O_TRUNC))
	if err != nil {
		return err
	}
	_, werr := f.WriteAt([]byte(text), 0)
	cerr := f.Close()
	if werr != nil {
		return fmt.Errorf("9P ctl %q: %w", text, werr)
	}
	return cerr
}

// ninePRows compares the 9P face (--9p unix:PATH, this one memohfs's,
// over a unix socket, the bench's client with msize 1 MiB) with the FUSE
// mount of the same memohfs, interleaved in one run: the 9P value goes in
// the memohfs column, the FUSE one in the anchor column. The root listing
// is of the bots there are: the scale step's when the control group ran
// it, else bots (s0000...) made here (--only 9p: --bots of them).
func (b *bench) ninePRows(reps int) error {
	s := b.s
	n, err := s.dial9P()
	if err != nil {
		return err
	}
	defer n.close()

	// ls of the root. The first listing of each settles what the mkdirs
	// left (the FUSE one right after a thousand mkdirs is noisy).
	fuseList := func() (int, error) {
		e, err := os.ReadDir(s.mnt)
		return len(e), err
	}
	want, err := fuseList()
	if err != nil {
		return err
	}
	if got, err := n.list(""); err != nil {
		return err
	} else if got != want {
		return fmt.Errorf("ls of the root: %d entries over 9P, %d on FUSE", got, want)
	}
	lsRow := fmt.Sprintf("9P: ls of the root, %d bots, warm (anchor: FUSE ReadDir)", want)
	for i := 0; i < max(reps, 20); i++ {
		for _, w := range rotate([]string{"memohfs", "direct"}, i) {
			list := n.list
			if w == "direct" {
				list = func(string) (int, error) { return fuseList() }
			}
			var got int
			d, err := timed(func() error { var err error; got, err = list(""); return err })
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("ls of the root: %d entries, then %d", want, got)
			}
			b.cp(lsRow, w, ms(d))
		}
	}

	if err := os.Mkdir(filepath.Join(s.mnt, ninePBot), 0o755); err != nil {
		return err
	}
	if err := waitBound(filepath.Join(s.mnt, ninePBot), 30*time.Second); err != nil {
		return err
	}

	// status: walk, open, read to EOF, clunk; per read, over many.
	const statusReads = 200
	buf := make([]byte, 64<<10)
	status := filepath.Join(s.mnt, ninePBot, "status")
	if _, err := n.readAll(ninePBot+"/status", buf); err != nil {
		return err
	}
	if _, err := os.ReadFile(status); err != nil {
		return err
	}
	statusRow := "9P: read <bot>/status, walk+open+read+clunk, per read (anchor: FUSE os.ReadFile)"
	for i := 0; i < max(reps, 10); i++ {
		for _, w := range rotate([]string{"memohfs", "direct"}, i) {
			d, err := timed(func() error {
				for j := 0; j < statusReads; j++ {
					var err error
					if w == "memohfs" {
						_, err = n.readAll(ninePBot+"/status", buf)
					} else {
						_, err = os.ReadFile(status)
					}
					if err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			b.cpUnit(statusRow, "µs", w, float64(d.Nanoseconds())/1000/statusReads)
		}
	}

	if err := b.ninePData(n, reps); err != nil {
		return err
	}

	// ctl start, each way; the stop between goes the same way, untimed.
	// The bot's first start (its rootfs made) is left out of both: one
	// start and stop on FUSE first, untimed.
	if _, err := s.ctl(ninePBot, "start"); err != nil {
		return err
	}
	if _, err := s.ctl(ninePBot, "stop"); err != nil {
		return err
	}
	ctlRow := "9P: echo start > ctl, not the bot's first (anchor: the same on FUSE)"
	for i := 0; i < max(reps, 5); i++ {
		for _, w := range rotate([]string{"memohfs", "direct"}, i) {
			ctl := func(text string) error {
				if w == "memohfs" {
					return n.ctl(ninePBot, text)
				}
				_, err := s.ctl(ninePBot, text)
				return err
			}
			d, err := timed(func() error { return ctl("start") })
			if err != nil {
				return fmt.Errorf("start over %s: %w", map[string]string{"memohfs": "9P", "direct": "FUSE"}[w], err)
			}
			b.cp(ctlRow, w, ms(d))
			if err := ctl("stop"); err != nil {
				return err
			}
		}
	}
	return nil
}

// ninePData: a file in the bot's data/ read whole, warm, and read at
// random 4 KiB offsets, over 9P and through the FUSE mount's data/ (a
// bind: the kernel's own ext4, no FUSE request).
func (b *bench) ninePData(n *ninePClient, reps int) error {
	s := b.s
	size := int64(256 << 20)
	if b.o.Quick {
		size = 64 << 20
	}
	const name = "seq9p"
	path := filepath.Join(botData(s.mnt, ninePBot), name)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	for off := int64(0); off < size; off += int64(len(block)) {
		if _, err := f.Write(block); err != nil {
			f.Close()
			return err
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	rel := ninePBot + "/data/" + name
	buf := make([]byte, ninePMsize)
	fuseRead := func() (int64, error) {
		f, err := os.Open(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		return io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
	}
	// Warm-up: the page cache holds the file for both from here on.
	for _, read := range []func() (int64, error){func() (int64, error) { return n.readAll(rel, buf) }, fuseRead} {
		if got, err := read(); err != nil {
			return err
		} else if got != size {
			return fmt.Errorf("%s: read %d bytes, want %d", rel, got, size)
		}
	}
	seqRow := fmt.Sprintf("9P: data/ seq read %d MiB, warm, msize 1 MiB (anchor: FUSE mount's data/, a bind = native)", size>>20)
	for i := 0; i < reps; i++ {
		for _, w := range rotate([]string{"memohfs", "direct"}, i) {
			read := fuseRead
			if w == "memohfs" {
				read = func() (int64, error) { return n.readAll(rel, buf) }
			}
			var got int64
			d, err := timed(func() error { var err error; got, err = read(); return err })
			if err != nil {
				return err
			}
			if got != size {
				return fmt.Errorf("%s: read %d bytes, want %d", rel, got, size)
			}
			b.cpUnit(seqRow, "MiB/s", w, mibps(got, d))
		}
	}

	// 4 KiB preads at random offsets, one at a time, the file open.
	const preads = 20000
	nf, err := n.open(rel, p9.ReadOnly)
	if err != nil {
		return err
	}
	defer nf.Close()
	ff, err := os.Open(path)
	if err != nil {
		return err
	}
	defer ff.Close()
	rng := rand.New(rand.NewSource(9))
	offs := make([]int64, preads)
	for i := range offs {
		offs[i] = rng.Int63n(size/4096) * 4096
	}
	page := buf[:4096]
	randRow := fmt.Sprintf("9P: data/ 4k randread warm, %d preads (anchor: FUSE mount's data/, a bind = native)", preads)
	for i := 0; i < reps; i++ {
		for _, w := range rotate([]string{"memohfs", "direct"}, i) {
			var r io.ReaderAt = ff
			if w == "memohfs" {
				r = nf
			}
			d, err := timed(func() error {
				for _, off := range offs {
					if k, err := r.ReadAt(page, off); k != len(page) {
						return fmt.Errorf("pread of %s at %d: %d bytes: %v", rel, off, k, err)
					}
				}
				return nil
			})
			if err != nil {
				return err
			}
			b.cpUnit(randRow, "IOPS", w, perSec(preads, d))
		}
	}
	return os.Remove(path)
}

// rotate is ws, started at the i-th (so neither way always goes first).
func rotate(ws []string, i int) []string {
	k := i % len(ws)
	return append(append([]string(nil), ws[k:]...), ws[:k]...)
}
