// Package creds runs file system calls with the credentials of the
// process that asked for them, as virtiofsd does for its guests.
//
// memohfs serves bot data as root. Were it to create files as root and
// chown them afterwards, a bot could swap the name in between and have
// root chown its own file; it would also need to redo the kernel's rules
// (setgid inheritance, setgid stripping, sticky dirs, default ACLs, the
// umask) by hand. Instead each call that creates, removes, renames or
// changes an entry runs on an OS thread whose file system uid, gid,
// supplementary groups and umask are the caller's: the host kernel then
// applies every rule itself, atomically.
//
// A Pool holds goroutines locked to their OS threads. Each thread has
// unshared its fs_struct (CLONE_FS), so its umask is its own, and switches
// fsuid, fsgid and groups with raw per-thread system calls (never
// syscall.Setgroups, which since Go 1.16 changes every thread of the
// process). After each call the thread is switched back to root and
// checked; a thread that cannot be switched back is never used again:
// its goroutine exits while still locked, and the Go runtime ends the
// thread with it.
package creds

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Cred is who a call runs as.
type Cred struct {
	Uid, Gid uint32
	Groups   []uint32 // supplementary groups
	// Umask is applied by the host kernel to the modes of what the call
	// creates (it skips it where a default ACL rules, as on any disk).
	Umask uint32
}

// Caller reads what the FUSE request did not carry from /proc: the
// supplementary groups of process pid. A process that is gone (or has no
// pid: a request from another pid namespace) has none.
func Caller(pid, uid, gid, umask uint32) Cred {
	c := Cred{Uid: uid, Gid: gid, Umask: umask & 0o777}
	if pid == 0 || uid == 0 {
		return c // root's groups do not matter: it has CAP_DAC_OVERRIDE
	}
	if st, err := readStatus(pid); err == nil {
		c.Groups = st.groups
	}
	return c
}

// status is what memohfs reads of /proc/<pid>/status.
type status struct {
	groups []uint32
	capEff uint64
}

// readStatus parses the Groups and CapEff lines of /proc/<pid>/status:
// the one parser of that file in memohfs.
func readStatus(pid uint32) (status, error) {
	var st status
	b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return st, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Groups:"); ok {
			for _, g := range strings.Fields(v) {
				if n, err := strconv.ParseUint(g, 10, 32); err == nil {
					st.groups = append(st.groups, uint32(n))
				}
			}
		} else if v, ok := strings.CutPrefix(l, "CapEff:"); ok {
			st.capEff, _ = strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		}
	}
	return st, nil
}

// HasCap reports whether process pid has capability c in its effective
// set.
func HasCap(pid uint32, c int) bool {
	st, err := readStatus(pid)
	return err == nil && st.capEff&(1<<uint(c)) != 0
}

// InGroup reports whether process pid (whose primary group is gid0) has
// gid as its group or one of its supplementary groups.
func InGroup(pid, gid0, gid uint32) bool {
	if gid0 == gid {
		return true
	}
	st, err := readStatus(pid)
	if err != nil {
		return false
	}
	for _, g := range st.groups {
		if g == gid {
			return true
		}
	}
	return false
}

// Pool runs calls as their callers on threads of its own.
type Pool struct {
	reqs chan request
	once sync.Once
	// rootGroups are the daemon's own supplementary groups, put back after
	// every call.
	rootGroups []uint32
	size       int
}

type request struct {
	c    Cred
	fn   func() error
	done chan error
}

// ErrSwitch is returned when a thread could not take the caller's
// credentials: the call was not made.
var ErrSwitch = errors.New("creds: cannot switch to the caller's credentials")

// NewPool returns a pool of size threads, started on first use. Only a
// root process can switch credentials; in any other the calls run as the
// process itself.
func NewPool(size int) *Pool {
	if size < 1 {
		size = 1
	}
	return &Pool{reqs: make(chan request), size: size}
}

func (p *Pool) start() {
	if gs, err := unix.Getgroups(); err == nil {
		for _, g := range gs {
			p.rootGroups = append(p.rootGroups, uint32(g))
		}
	}
	for i := 0; i < p.size; i++ {
		go p.worker()
	}
}

// Run runs fn on a thread with c's credentials and returns its error.
// fn must make only system calls: no Go runtime call that could block the
// thread for long or move work to another goroutine.
func (p *Pool) Run(c Cred, fn func() error) error {
	if os.Geteuid() != 0 {
		return fn()
	}
	p.once.Do(p.start)
	r := request{c: c, fn: fn, done: make(chan error, 1)}
	p.reqs <- r
	return <-r.done
}

// worker serves requests on one locked thread until a switch back to
// root fails.
func (p *Pool) worker() {
	runtime.LockOSThread()
	// Never unlocked: the thread's fs_struct and credentials are ours.
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		// Without its own umask the thread would change every thread's:
		// replace it and give up this one.
		go p.worker()
		return
	}
	for r := range p.reqs {
		if err := become(r.c); err != nil {
			r.done <- fmt.Errorf("%w: %v", ErrSwitch, err)
			if restore(p.rootGroups) != nil {
				go p.worker()
				return // the thread ends with this goroutine, still locked
			}
			continue
		}
		err := r.fn()
		if rerr := restore(p.rootGroups); rerr != nil {
			r.done <- err
			go p.worker()
			return
		}
		r.done <- err
	}
}

// become switches this thread to c: groups first (needs CAP_SETGID,
// which a non-zero fsuid does not drop), then fsgid, then fsuid, then
// the umask.
func become(c Cred) error {
	if err := setgroups(c.Groups); err != nil {
		return err
	}
	setfsgid(c.Gid)
	if got := setfsgid(c.Gid); got != c.Gid {
		return fmt.Errorf("fsgid %d, want %d", got, c.Gid)
	}
	setfsuid(c.Uid)
	if got := setfsuid(c.Uid); got != c.Uid {
		return fmt.Errorf("fsuid %d, want %d", got, c.Uid)
	}
	unix.Umask(int(c.Umask))
	return nil
}

// restore switches this thread back to root and checks that it is.
func restore(groups []uint32) error {
	setfsuid(0)
	if got := setfsuid(0); got != 0 {
		return fmt.Errorf("fsuid stuck at %d", got)
	}
	setfsgid(0)
	if got := setfsgid(0); got != 0 {
		return fmt.Errorf("fsgid stuck at %d", got)
	}
	unix.Umask(0)
	return setgroups(groups)
}

// setfsuid returns the previous fsuid (the syscall cannot fail visibly:
// calling it twice with the same value tells whether the first worked).
func setfsuid(uid uint32) uint32 {
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSUID, uintptr(uid), 0, 0)
	return uint32(r)
}

func setfsgid(gid uint32) uint32 {
	r, _, _ := unix.RawSyscall(unix.SYS_SETFSGID, uintptr(gid), 0, 0)
	return uint32(r)
}

// setgroups sets this thread's supplementary groups only.
func setgroups(gs []uint32) error {
	var p unsafe.Pointer
	if len(gs) > 0 {
		p = unsafe.Pointer(&gs[0])
	}
	_, _, e := unix.RawSyscall(unix.SYS_SETGROUPS, uintptr(len(gs)), uintptr(p), 0)
	if e != 0 {
		return e
	}
	return nil
}
