package control

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
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

// TestCopyTree: a copy keeps content, modes, times and symlinks as
// symlinks; never follows a symlink out; hard-links unchanged files to the
// previous copy and copies changed ones.
func TestCopyTree(t *testing.T) {
	dir := t.TempDir()
	src, outside := filepath.Join(dir, "src"), filepath.Join(dir, "outside")
	write(t, filepath.Join(outside, "secret"), "secret")
	write(t, filepath.Join(src, "a.txt"), "a")
	write(t, filepath.Join(src, "sub", "b.txt"), "b")
	write(t, filepath.Join(src, "same.txt"), "same")
	if err := syscall.Chmod(filepath.Join(src, "a.txt"), 0o4751); err != nil {
		t.Fatal(err)
	}
	mt := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
	if err := os.Chtimes(filepath.Join(src, "sub", "b.txt"), mt, mt); err != nil {
		t.Fatal(err)
	}
	must(t, os.Symlink(outside, filepath.Join(src, "dirlink")))
	must(t, os.Symlink(filepath.Join(outside, "secret"), filepath.Join(src, "filelink")))
	must(t, os.Link(filepath.Join(src, "a.txt"), filepath.Join(src, "hard.txt")))
	must(t, syscall.Mkfifo(filepath.Join(src, "fifo"), 0o644))

	dst1 := filepath.Join(dir, "s1")
	m1, st1, err := copyTree(src, dst1, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if st1.Copied != 3 || st1.Linked != 1 || st1.Symlinks != 2 || st1.Skipped != 1 {
		t.Fatalf("first copy stats: %+v", st1)
	}
	if b, _ := os.ReadFile(filepath.Join(dst1, "sub", "b.txt")); string(b) != "b" {
		t.Fatalf("content: %q", b)
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
	if _, err := os.Lstat(filepath.Join(dst1, "dirlink", "secret")); err == nil {
		// Lstat of a path through a symlink follows it: check the copy
		// holds no regular file named secret anywhere instead.
		filepath.Walk(dst1, func(p string, info os.FileInfo, err error) error {
			if info != nil && info.Name() == "secret" {
				t.Fatalf("followed a symlink out: %s", p)
			}
			return nil
		})
	}
	if ino(t, filepath.Join(dst1, "a.txt")) != ino(t, filepath.Join(dst1, "hard.txt")) {
		t.Fatal("hard links in the source are not hard links in the copy")
	}
	if _, err := os.Lstat(filepath.Join(dst1, "fifo")); err == nil {
		t.Fatal("a fifo was copied")
	}

	// Second copy: one file changed, one new, the rest linked to s1.
	write(t, filepath.Join(src, "sub", "b.txt"), "B")
	write(t, filepath.Join(src, "new.txt"), "new")
	dst2 := filepath.Join(dir, "s2")
	_, st2, err := copyTree(src, dst2, dst1, m1)
	if err != nil {
		t.Fatal(err)
	}
	if ino(t, filepath.Join(dst2, "same.txt")) != ino(t, filepath.Join(dst1, "same.txt")) {
		t.Fatal("an unchanged file was copied, not linked to the previous copy")
	}
	if ino(t, filepath.Join(dst2, "sub", "b.txt")) == ino(t, filepath.Join(dst1, "sub", "b.txt")) {
		t.Fatal("a changed file was linked to its old copy")
	}
	if ino(t, filepath.Join(dst2, "same.txt")) == ino(t, filepath.Join(src, "same.txt")) {
		t.Fatal("a copy is linked to live data")
	}
	if b, _ := os.ReadFile(filepath.Join(dst2, "sub", "b.txt")); string(b) != "B" {
		t.Fatalf("changed content: %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dst1, "sub", "b.txt")); string(b) != "b" {
		t.Fatalf("the old copy changed: %q", b)
	}
	if st2.Copied != 2 || st2.Linked != 3 {
		t.Fatalf("second copy stats: %+v", st2)
	}
	// A chmod without a content change is a change too (ctime moves).
	must(t, os.Chmod(filepath.Join(src, "same.txt"), 0o600))
	_, st3, err := copyTree(src, filepath.Join(dir, "s3"), dst2, m1)
	if err != nil {
		t.Fatal(err)
	}
	if st3.Copied < 1 {
		t.Fatalf("chmod-ed file was linked: %+v", st3)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
