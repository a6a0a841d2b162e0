package treesync

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func write(t *testing.T, p, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ino(t *testing.T, p string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Lstat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// settle waits out the racy window so signatures taken next are trusted.
func settle() { time.Sleep(2 * racySlack) }

func pass(t *testing.T, tr *Tree) Stats {
	t.Helper()
	st, err := tr.Pass()
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestCopy: a copy keeps content, modes, times and symlinks as symlinks;
// never follows a symlink out; keeps hard links; skips fifos unless asked;
// links unchanged files to the previous copy and copies changed ones.
func TestCopy(t *testing.T) {
	dir := t.TempDir()
	src, outside := filepath.Join(dir, "src"), filepath.Join(dir, "outside")
	write(t, filepath.Join(outside, "secret"), "secret")
	write(t, filepath.Join(src, "a.txt"), "a")
	write(t, filepath.Join(src, "sub", "b.txt"), "b")
	write(t, filepath.Join(src, "same.txt"), "same")
	must(t, syscall.Chmod(filepath.Join(src, "a.txt"), 0o4751))
	mt := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	must(t, os.Chtimes(filepath.Join(src, "sub", "b.txt"), mt, mt))
	must(t, os.Symlink(outside, filepath.Join(src, "dirlink")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(src, "filelink")))
	must(t, os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hard.txt")))
	must(t, syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644))
	must(t, unix.Setxattr(filepath.Join(src, "same.txt"), "user.note", []byte("kept"), 0))
	must(t, unix.Setxattr(filepath.Join(src, "same.txt"), "user.other", []byte("dropped"), 0))
	settle()

	dst1 := filepath.Join(dir, "s1")
	tr := New(src, dst1, Options{Xattr: func(n string) bool { return n == "user.note" }})
	st1 := pass(t, tr)
	if st1.Copied != 3 || st1.Linked != 1 || st1.Symlinks != 2 || st1.Skipped != 1 {
		t.Fatalf("first copy stats: %+v", st1)
	}
	if got := read(t, filepath.Join(dst1, "sub", "b.txt")); got != "b" {
		t.Fatalf("content: %q", got)
	}
	fi, _ := os.Lstat(filepath.Join(dst1, "a.txt"))
	if fi.Mode()&os.ModePerm != 0o751 || fi.Mode()&os.ModeSetuid == 0 {
		t.Fatalf("mode: %v", fi.Mode())
	}
	fi, _ = os.Lstat(filepath.Join(dst1, "sub", "b.txt"))
	if !fi.ModTime().Equal(mt) {
		t.Fatalf("mtime %v, want %v", fi.ModTime(), mt)
	}
	for _, l := range []string{"dirlink", "filelink"} {
		fi, err := os.Lstat(filepath.Join(dst1, l))
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("%s not copied as a symlink: %v %v", l, fi, err)
		}
	}
	filepath.Walk(dst1, func(p string, info os.FileInfo, err error) error {
		if info != nil && info.Name() == "secret" {
			t.Fatalf("followed a symlink out: %s", p)
		}
		return nil
	})
	if ino(t, filepath.Join(dst1, "a.txt")) != ino(t, filepath.Join(dst1, "hard.txt")) {
		t.Fatal("hard links in the source are not hard links in the copy")
	}
	if _, err := os.Lstat(filepath.Join(dst1, "fifo")); err == nil {
		t.Fatal("a fifo was copied")
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(dst1, "same.txt"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
		t.Fatalf("xattr user.note: %q %v", buf[:n], err)
	}
	if _, err := unix.Getxattr(filepath.Join(dst1, "same.txt"), "user.other", buf); err != unix.ENODATA {
		t.Fatalf("an xattr the filter refuses was copied: %v", err)
	}
	m1 := tr.Manifest()
	if len(m1) != 4 {
		t.Fatalf("manifest: %v", m1)
	}

	// Second copy: one file changed, one new, the rest linked to s1.
	write(t, filepath.Join(src, "sub", "b.txt"), "B")
	write(t, filepath.Join(src, "new.txt"), "new")
	settle()
	dst2 := filepath.Join(dir, "s2")
	st2 := pass(t, New(src, dst2, Options{PrevRoot: dst1, Prev: m1}))
	if ino(t, filepath.Join(dst2, "same.txt")) != ino(t, filepath.Join(dst1, "same.txt")) {
		t.Fatal("an unchanged file was copied, not linked to the previous copy")
	}
	if ino(t, filepath.Join(dst2, "sub", "b.txt")) == ino(t, filepath.Join(dst1, "sub", "b.txt")) {
		t.Fatal("a changed file was linked to its old copy")
	}
	if ino(t, filepath.Join(dst2, "same.txt")) == ino(t, filepath.Join(src, "same.txt")) {
		t.Fatal("a copy is linked to live data")
	}
	if got := read(t, filepath.Join(dst2, "sub", "b.txt")); got != "B" {
		t.Fatalf("changed content: %q", got)
	}
	if got := read(t, filepath.Join(dst1, "sub", "b.txt")); got != "b" {
		t.Fatalf("the old copy changed: %q", got)
	}
	if st2.Copied != 2 || st2.Linked != 3 {
		t.Fatalf("second copy stats: %+v", st2)
	}
	// A chmod without a content change is a change too (ctime moves).
	must(t, os.Chmod(filepath.Join(src, "same.txt"), 0o600))
	st3 := pass(t, New(src, filepath.Join(dir, "s3"), Options{PrevRoot: dst2, Prev: m1}))
	if st3.Copied < 1 {
		t.Fatalf("chmod-ed file was linked: %+v", st3)
	}
}

// TestPasses: a second pass copies only what changed, removes what is
// gone, handles type changes, and never writes into an earlier copy's
// files; the result equals a fresh copy.
func TestPasses(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	for i := 0; i < 50; i++ {
		write(t, filepath.Join(src, "d", "f"+string(rune('a'+i%26))+strings.Repeat("x", i/26)), "content")
	}
	write(t, filepath.Join(src, "keep"), "keep")
	write(t, filepath.Join(src, "edit"), "before")
	write(t, filepath.Join(src, "gone"), "gone")
	write(t, filepath.Join(src, "gonedir", "x"), "x")
	write(t, filepath.Join(src, "becomesdir"), "file")
	settle()
	prev := filepath.Join(dir, "prev")
	tp := New(src, prev, Options{})
	pass(t, tp)
	settle()

	dst := filepath.Join(dir, "dst")
	tr := New(src, dst, Options{PrevRoot: prev, Prev: tp.Manifest()})
	first := pass(t, tr)
	if first.Linked != 55 || first.Copied != 0 {
		t.Fatalf("first pass: %+v", first)
	}
	settle()
	again := pass(t, tr)
	if again.Copied != 0 || again.Linked != 0 || again.Removed != 0 || again.Unchanged != 55 {
		t.Fatalf("a pass with nothing changed did something: %+v", again)
	}

	write(t, filepath.Join(src, "edit"), "after!")
	must(t, os.Remove(filepath.Join(src, "gone")))
	must(t, os.RemoveAll(filepath.Join(src, "gonedir")))
	must(t, os.Remove(filepath.Join(src, "becomesdir")))
	write(t, filepath.Join(src, "becomesdir", "inner"), "inner")
	write(t, filepath.Join(src, "d", "new"), "new")
	delta := pass(t, tr)
	if delta.Copied != 3 || delta.Removed != 3 {
		t.Fatalf("delta pass: %+v", delta)
	}
	if got := read(t, filepath.Join(prev, "edit")); got != "before" {
		t.Fatalf("the previous copy was written through a hard link: %q", got)
	}
	fresh := filepath.Join(dir, "fresh")
	pass(t, New(src, fresh, Options{}))
	if a, b := listing(t, dst), listing(t, fresh); a != b {
		t.Fatalf("after passes:\n%s\nfresh copy:\n%s", a, b)
	}

	// A file rewritten within the racy window of the pass that copied it
	// is copied again even when size and mtime look the same (timestamps
	// are coarse: several rewrites land in one tick).
	small := filepath.Join(dir, "small")
	write(t, filepath.Join(small, "f"), "v00")
	ts := New(small, filepath.Join(dir, "smallcopy"), Options{})
	for i := 0; i < 50; i++ {
		v := fmt.Sprintf("v%02d", i)
		write(t, filepath.Join(small, "f"), v)
		pass(t, ts)
		if got := read(t, filepath.Join(dir, "smallcopy", "f")); got != v {
			t.Fatalf("rewrite %d missed: copy has %q, want %q", i, got, v)
		}
	}
}

// listing renders a tree: path, type, mode, size, mtime, content.
func listing(t *testing.T, root string) string {
	t.Helper()
	var b bytes.Buffer
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(root, p)
		b.WriteString(rel + " " + fi.Mode().String())
		if fi.Mode().IsRegular() {
			c, _ := os.ReadFile(p)
			b.WriteString(" " + fi.ModTime().UTC().String() + " " + string(c))
		}
		b.WriteString("\n")
		return nil
	})
	return b.String()
}

// TestOverlayUpper: with Special and every xattr, an overlay upper dir's
// whiteouts (0/0 char devices), opaque markers and file capabilities
// survive the copy.
func TestOverlayUpper(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "upper")
	write(t, filepath.Join(src, "etc", "opaque", "kept"), "k")
	must(t, unix.Setxattr(filepath.Join(src, "etc", "opaque"), "trusted.overlay.opaque", []byte("y"), 0))
	must(t, unix.Mknod(filepath.Join(src, "etc", "deleted"), unix.S_IFCHR, 0)) // a whiteout: 0/0, no permission bits
	write(t, filepath.Join(src, "bin", "ping"), "elf")
	// cap_net_raw+ep (VFS_CAP_REVISION_2)
	capv := []byte{1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	must(t, unix.Setxattr(filepath.Join(src, "bin", "ping"), "security.capability", capv, 0))
	must(t, os.Chown(filepath.Join(src, "bin", "ping"), 12, 34))
	must(t, unix.Setxattr(filepath.Join(src, "bin", "ping"), "security.capability", capv, 0))

	dst := filepath.Join(dir, "copy")
	must(t, os.Mkdir(dst, 0o755)) // the snapshotter made it
	tr := New(src, dst, Options{Special: true, Xattr: func(string) bool { return true }})
	pass(t, tr)
	var st unix.Stat_t
	must(t, unix.Lstat(filepath.Join(dst, "etc", "deleted"), &st))
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Fatalf("whiteout: mode %o rdev %d", st.Mode, st.Rdev)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(filepath.Join(dst, "etc", "opaque"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Fatalf("opaque: %q %v", buf[:n], err)
	}
	n, err := unix.Getxattr(filepath.Join(dst, "bin", "ping"), "security.capability", buf)
	if err != nil || !bytes.Equal(buf[:n], capv) {
		t.Fatalf("file capability lost (chown after setxattr?): %x %v", buf[:n], err)
	}
	must(t, unix.Lstat(filepath.Join(dst, "bin", "ping"), &st))
	if st.Uid != 12 || st.Gid != 34 {
		t.Fatalf("owner %d:%d", st.Uid, st.Gid)
	}

	// The whiteout goes away when the file comes back.
	must(t, os.Remove(filepath.Join(src, "etc", "deleted")))
	write(t, filepath.Join(src, "etc", "deleted"), "back")
	pass(t, tr)
	if got := read(t, filepath.Join(dst, "etc", "deleted")); got != "back" {
		t.Fatalf("whiteout replaced by a file: %q", got)
	}
	must(t, unix.Removexattr(filepath.Join(src, "etc", "opaque"), "trusted.overlay.opaque"))
	pass(t, tr)
	if _, err := unix.Getxattr(filepath.Join(dst, "etc", "opaque"), "trusted.overlay.opaque", buf); err != unix.ENODATA {
		t.Fatalf("a removed xattr stayed on the copy: %v", err)
	}
}

// TestSymlinkSwap: a directory swapped for a symlink between passes is
// copied as a symlink; nothing outside is read.
func TestSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	src, outside := filepath.Join(dir, "src"), filepath.Join(dir, "outside")
	write(t, filepath.Join(outside, "secret"), "secret")
	write(t, filepath.Join(src, "d", "f"), "f")
	dst := filepath.Join(dir, "dst")
	tr := New(src, dst, Options{})
	pass(t, tr)
	must(t, os.RemoveAll(filepath.Join(src, "d")))
	must(t, os.Symlink(outside, filepath.Join(src, "d")))
	pass(t, tr)
	fi, err := os.Lstat(filepath.Join(dst, "d"))
	if err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("d: %v %v", fi, err)
	}
	tr2 := New(filepath.Join(src, "d"), filepath.Join(dir, "dst2"), Options{})
	if _, err := tr2.Pass(); err == nil {
		t.Fatal("a symlinked source root was followed")
	}
}
