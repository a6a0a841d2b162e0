package fsnodes_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Helpers of the POSIX comparison with native ext4 (posix_ext4_test.go):
// one case runs the same steps on an ext4 dir and in a bot's data/ and
// notes what each step observed; the notes are then compared.

// posixWho is who a step runs as: no passwd entry needed.
type posixWho struct {
	name     string
	uid, gid uint32
	groups   []uint32 // supplementary groups
}

// posixRun runs fn on an OS thread of its own whose real, effective,
// saved and file system uid and gid, supplementary groups and umask are
// w's, as a process of that user would have them (a non-root thread has
// no capabilities left), and returns fn's error. The thread is never
// given back: its goroutine ends while locked, and the Go runtime ends
// the thread with it. A switch that failed is an error of its own kind
// (errPosixSwitch).
func posixRun(w posixWho, umask int, fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: see above
		if err := posixBecome(w, umask); err != nil {
			done <- fmt.Errorf("%w: %v", errPosixSwitch, err)
			return
		}
		done <- fn()
	}()
	return <-done
}

var errPosixSwitch = errors.New("cannot switch the thread to the user")

// posixBecome switches this thread (only) to w: a fs_struct of its own
// for the umask, then groups, gid and uid with raw per-thread calls (Go's
// syscall.Setuid and Setgroups act on every thread of the process).
func posixBecome(w posixWho, umask int) error {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return fmt.Errorf("unshare(CLONE_FS): %v", err)
	}
	unix.Umask(umask)
	if w.uid == 0 {
		return nil
	}
	gs := append([]uint32(nil), w.groups...)
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0); e != 0 {
		return fmt.Errorf("setgroups: %v", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(w.gid), uintptr(w.gid), uintptr(w.gid)); e != 0 {
		return fmt.Errorf("setresgid: %v", e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(w.uid), uintptr(w.uid), uintptr(w.uid)); e != 0 {
		return fmt.Errorf("setresuid: %v", e)
	}
	if uid, _, _ := unix.RawSyscall(unix.SYS_GETEUID, 0, 0, 0); uint32(uid) != w.uid {
		return fmt.Errorf("euid %d after setresuid(%d)", uid, w.uid)
	}
	return nil
}

// posixRoot is root with umask 0: the setup of every case.
var posixRoot = posixWho{name: "root"}

// posixSide is one side of a comparison: the same steps run on ext4 and
// in data/, each noting what it saw in order.
type posixSide struct {
	t    *testing.T
	name string // "ext4" or "data/"
	dir  string // the case's own dir on this side
	keys []string
	vals map[string]string
	// scratch is a native file touched to see the clock move.
	scratch string
	// host is, on the data/ side, the case's dir on the host: what a
	// stat through data/ shows is checked against the host file.
	host string
}

func (s *posixSide) p(rel string) string { return filepath.Join(s.dir, rel) }

// as runs fn as w with umask and returns fn's error; a failed switch
// fails the test.
func (s *posixSide) as(w posixWho, umask int, fn func() error) error {
	s.t.Helper()
	err := posixRun(w, umask, fn)
	if errors.Is(err, errPosixSwitch) {
		s.t.Fatalf("%s: %v", s.name, err)
	}
	return err
}

// setup runs fn as root (umask 0) and fails the test if it fails.
func (s *posixSide) setup(what string, fn func() error) {
	s.t.Helper()
	if err := s.as(posixRoot, 0, fn); err != nil {
		s.t.Fatalf("%s on %s: %v", what, s.name, err)
	}
}

// mkdir makes rel as root with exactly mode, owned by uid:gid.
func (s *posixSide) mkdir(rel string, mode uint32, uid, gid uint32) {
	s.t.Helper()
	p := s.p(rel)
	s.setup("mkdir "+rel, func() error {
		if err := unix.Mkdir(p, 0o700); err != nil {
			return err
		}
		if err := unix.Lchown(p, int(uid), int(gid)); err != nil {
			return err
		}
		return unix.Chmod(p, mode)
	})
}

// file makes rel as root with one byte in it, exactly mode, owned by
// uid:gid.
func (s *posixSide) file(rel string, mode uint32, uid, gid uint32) {
	s.t.Helper()
	p := s.p(rel)
	s.setup("create "+rel, func() error {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if _, err := unix.Write(fd, []byte("x")); err != nil {
			return err
		}
		if err := unix.Fchown(fd, int(uid), int(gid)); err != nil {
			return err
		}
		return unix.Fchmod(fd, mode)
	})
}

// stat is root's lstat of rel (through the mount on the data/ side: what
// a user sees, caches included). On the data/ side the type, mode,
// owner, link count and size must be the host file's.
func (s *posixSide) stat(rel string) unix.Stat_t {
	s.t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(s.p(rel), &st); err != nil {
		s.t.Fatalf("lstat %s on %s: %v", rel, s.name, err)
	}
	if s.host != "" {
		var h unix.Stat_t
		if err := unix.Lstat(filepath.Join(s.host, rel), &h); err != nil {
			s.t.Fatalf("lstat %s on the host: %v", rel, err)
		}
		seen := fmt.Sprintf("mode %#o owner %d:%d nlink %d size %d", st.Mode, st.Uid, st.Gid, st.Nlink, st.Size)
		if had := fmt.Sprintf("mode %#o owner %d:%d nlink %d size %d", h.Mode, h.Uid, h.Gid, h.Nlink, h.Size); seen != had {
			s.t.Errorf("%s: data/ shows %s, the host file has %s", rel, seen, had)
		}
	}
	return st
}

func (s *posixSide) note(key, val string) {
	if s.vals == nil {
		s.vals = map[string]string{}
	}
	if _, dup := s.vals[key]; dup {
		s.t.Fatalf("observation %q noted twice (a bug in the test)", key)
	}
	s.keys = append(s.keys, key)
	s.vals[key] = val
}

// noteErr notes the errno of an operation ("ok" for none).
func (s *posixSide) noteErr(key string, err error) { s.note(key, posixErrno(err)) }

// noteMode notes rel's whole st_mode (type and bits) in octal.
func (s *posixSide) noteMode(key, rel string) { s.note(key, fmt.Sprintf("%#o", s.stat(rel).Mode)) }

// noteOwner notes rel's uid:gid.
func (s *posixSide) noteOwner(key, rel string) {
	st := s.stat(rel)
	s.note(key, fmt.Sprintf("%d:%d", st.Uid, st.Gid))
}

// noteNlink notes rel's link count.
func (s *posixSide) noteNlink(key, rel string) { s.note(key, fmt.Sprint(s.stat(rel).Nlink)) }

// noteXattr notes the bytes of a raw xattr of rel (read as root), in
// hex, or the errno that reading it gave.
func (s *posixSide) noteXattr(key, rel, attr string) {
	buf := make([]byte, 4096)
	n, err := unix.Lgetxattr(s.p(rel), attr, buf)
	if err != nil {
		s.note(key, posixErrno(err))
		return
	}
	s.note(key, fmt.Sprintf("%x", buf[:n]))
}

// ctimeMoved runs op (as w) after the clock moved past rel's ctime, and
// notes op's errno and whether the file's ctime then moved (the file is
// at relAfter after op).
func (s *posixSide) ctimeMoved(key, rel, relAfter string, w posixWho, op func() error) {
	s.t.Helper()
	before := s.stat(rel).Ctim
	s.waitPast(before)
	s.noteErr(key+": errno", s.as(w, 0o022, op))
	after := s.stat(relAfter).Ctim
	if after == before {
		s.note(key, "ctime same")
	} else {
		s.note(key, "ctime moved")
	}
}

// waitPast waits until a file changed now gets a ctime later than ts
// (the kernel stamps with a coarse clock: two changes within one tick
// can share a ctime). It polls a scratch file: no sleep of a guessed
// length.
func (s *posixSide) waitPast(ts unix.Timespec) {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, s.scratch, nil, 0); err != nil {
			s.t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Lstat(s.scratch, &st); err != nil {
			s.t.Fatal(err)
		}
		if st.Ctim.Sec > ts.Sec || st.Ctim.Sec == ts.Sec && st.Ctim.Nsec > ts.Nsec {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("the clock did not move past %d.%09d in 10 s", ts.Sec, ts.Nsec)
		}
		runtime.Gosched()
	}
}

// posixErrno names err's errno, "ok" for nil.
func posixErrno(err error) string {
	if err == nil {
		return "ok"
	}
	var e unix.Errno
	if errors.As(err, &e) {
		if n := unix.ErrnoName(e); n != "" {
			return n
		}
	}
	return err.Error()
}

// posixCompare compares data/'s notes with ext4's, key by key, and checks
// that ext4 itself gave want (else the comparison could be two equal
// wrong things). Every note of both sides is logged when the case failed,
// and under -v.
func posixCompare(t *testing.T, ext4, data *posixSide, want map[string]string) {
	t.Helper()
	for _, k := range ext4.keys {
		got, ok := data.vals[k]
		switch {
		case !ok:
			t.Errorf("%s: nothing noted through data/, ext4 gave %s", k, ext4.vals[k])
		case got != ext4.vals[k]:
			t.Errorf("%s: data/ gave %s, ext4 gave %s", k, got, ext4.vals[k])
		}
	}
	for _, k := range data.keys {
		if _, ok := ext4.vals[k]; !ok {
			t.Errorf("%s: noted through data/ only (%s)", k, data.vals[k])
		}
	}
	for k, v := range want {
		got, ok := ext4.vals[k]
		if !ok {
			t.Errorf("ext4 itself: no %q noted (the comparison is void)", k)
		} else if got != v {
			t.Errorf("ext4 itself: %s = %s, want %s (the comparison is void)", k, got, v)
		}
	}
	if t.Failed() || testing.Verbose() {
		var b strings.Builder
		for _, k := range ext4.keys {
			fmt.Fprintf(&b, "  %-50s ext4 %-14s data/ %s\n", k, ext4.vals[k], data.vals[k])
		}
		t.Logf("all notes:\n%s", b.String())
	}
}

// POSIX ACL tags, as the kernel's xattr format has them.
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// aclEntry is one entry of a POSIX ACL: a tag, rwx bits, and the uid or
// gid of a named entry.
type aclEntry struct {
	tag  uint16
	perm uint16
	id   uint32
}

// aclXattr encodes entries (given in the kernel's order: by tag, then id)
// as the value of system.posix_acl_access or _default: a version 2
// header, then {tag u16, perm u16, id u32} little-endian per entry, the
// id 0xffffffff where the entry names nobody.
func aclXattr(entries ...aclEntry) []byte {
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range entries {
		id := e.id
		if e.tag != aclUser && e.tag != aclGroup {
			id = 0xffffffff
		}
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, id)
	}
	return b
}
