package fsnodes_test

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/memohfs/memohfs/fsnodes"
)

// TestWatchOrder: changes behind the mount are seen in the order they
// were made, as on a local disk. The bot appends to a file ten times (one
// burst of events, which the watcher gathers), then makes a flag file;
// a reader polling both through data/ sees the flag only with the file's
// final size. Same rounds on native ext4. A round where the file was not
// done in the reader's stat just before it saw the flag is a window hit
// (the flag could have outrun the file): the test fails if data/ had
// none.
func TestWatchOrder(t *testing.T) {
	s := newStack(t, fsnodes.Options{})
	s.Mkbot("wo")
	native := s.Env.TempDir(t)
	const rounds, appends = 100, 10
	for _, side := range []struct{ name, dir, host string }{
		{"native ext4", native, native},
		{"data/", s.Path("wo", "data"), s.Control.DataDir("wo")},
	} {
		stale, windows := 0, 0
		for i := range rounds {
			name, flag := fmt.Sprintf("f%d", i), fmt.Sprintf("flag%d", i)
			p, fp := filepath.Join(side.dir, name), filepath.Join(side.dir, flag)
			must(t, os.WriteFile(filepath.Join(side.host, name), []byte("x"), 0o644))
			waitSize(t, p, 1)
			if _, err := os.Lstat(fp); !errors.Is(err, fs.ErrNotExist) { // cached as missing
				t.Fatalf("%s: %v", fp, err)
			}
			done := make(chan struct{})
			go func() { // the bot
				defer close(done)
				f, err := os.OpenFile(filepath.Join(side.host, name), os.O_WRONLY|os.O_APPEND, 0)
				if err != nil {
					t.Error(err)
					return
				}
				for range appends {
					f.Write([]byte("y"))
				}
				f.Close()
				if err := os.WriteFile(filepath.Join(side.host, flag), nil, 0o644); err != nil {
					t.Error(err)
				}
			}()
			var before int64 // the file's size in the stat just before the flag was seen
			deadline := time.Now().Add(time.Minute)
			for {
				st, err := os.Lstat(p)
				must(t, err)
				before = st.Size()
				if _, err := os.Lstat(fp); err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s never seen", side.name, flag)
				}
			}
			<-done
			if before != 1+appends {
				windows++ // the file was not done a moment before the flag was seen
			}
			if st, err := os.Lstat(p); err != nil || st.Size() != 1+appends {
				stale++
				t.Errorf("%s: round %d: the flag is seen, the file is not done: %v %v", side.name, i, st.Size(), err)
			}
		}
		t.Logf("%s: %d rounds, %d window hits, %d stale", side.name, rounds, windows, stale)
		// On ext4 the side is a comparison (its window is narrow: a
		// round may well see the flag at once); data/ must hit its own.
		if windows == 0 && side.name == "data/" {
			t.Errorf("%s: no round hit the window (the file not done just before the flag was seen)", side.name)
		}
	}
}

// waitSize waits until a stat of p shows size n.
func waitSize(t *testing.T, p string, n int64) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if st, err := os.Lstat(p); err == nil && st.Size() == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never had size %d", p, n)
		}
		time.Sleep(time.Millisecond)
	}
}
