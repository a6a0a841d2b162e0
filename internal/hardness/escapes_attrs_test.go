package hardness

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Attacks of TestEscapes (escapes_harness_test.go): setattr and xattrs through the mount, on the bot's symlinks and in
// the namespaces only root may write.

func escSetattrSymlink(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "ln -s "+e.secret+" /data/attr-link")
	link := e.data(e.a, "attr-link")
	host := filepath.Join(e.s.HostData(e.a), "attr-link")
	// Root through the mount, on the link itself.
	if err := unix.Fchmodat(unix.AT_FDCWD, link, 0o777, unix.AT_SYMLINK_NOFOLLOW); err == nil {
		t.Error("chmod of the symlink itself succeeded (Linux symlinks have no mode)")
	}
	must(t, unix.Lchown(link, 4242, 4242))
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, link, []unix.Timespec{{Sec: 1}, {Sec: 1}}, unix.AT_SYMLINK_NOFOLLOW))
	var st unix.Stat_t
	must(t, unix.Lstat(host, &st))
	if st.Uid != 4242 || st.Mtim.Sec != 1 {
		t.Errorf("lchown/lutimes did not reach the link: uid %d mtime %d", st.Uid, st.Mtim.Sec)
	}
	if err := unix.Lsetxattr(link, "user.esc", []byte("1"), 0); err != unix.EPERM {
		t.Errorf("lsetxattr user.esc on the link: %v, want EPERM", err)
	}
	if _, err := unix.Lgetxattr(link, "user.esc", make([]byte, 16)); err != unix.ENODATA {
		t.Errorf("lgetxattr user.esc on the link: %v, want ENODATA", err)
	}
	// The user: chmod and utimes follow the link to a file not theirs.
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EPERM)), "chmod", "0666", link)
	e.expect(t, escAlice, e.viaLink(escErr(syscall.EPERM)), "utime", link)
	out, err := e.run(t, escAlice, 10*time.Second, "setfattr", "-h", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, "ermission denied") && !strings.Contains(out, "ot permitted") {
		t.Errorf("setfattr -h on the link as the user: %v %q", err, out)
	}
	out, err = e.run(t, escAlice, 10*time.Second, "setfattr", "-n", "user.esc", "-v", "1", link)
	if err == nil || !strings.Contains(out, e.linkMsg("ermission denied")) {
		t.Errorf("setfattr through the link as the user: %v %q", err, out)
	}
}

func escXattrNamespaces(t *testing.T, e *escEnv) {
	e.sh(t, e.a, "echo x > /data/xattr-file")
	p := e.data(e.a, "xattr-file")
	// A valid VFS_CAP_REVISION_2 value granting CAP_SETUID: file
	// capabilities through the mount would be an escalation.
	capv := make([]byte, 20)
	binary.LittleEndian.PutUint32(capv[0:], 0x02000001)
	binary.LittleEndian.PutUint32(capv[4:], 1<<unix.CAP_SETUID)
	xattrs := map[string][]byte{"security.capability": capv, "trusted.esc": []byte("1"), "security.esc": []byte("1")}
	if e.binds {
		// data/ is the bot's dir itself (a bind): root sets them as on
		// ext4 (compared with a native file); a capability is inert, the
		// bind being nosuid (as /data in the bot).
		native := filepath.Join(e.s.Env.TempDir(t), "f")
		must(t, os.WriteFile(native, nil, 0o644))
		for name, val := range xattrs {
			got, want := unix.Setxattr(p, name, val, 0), unix.Setxattr(native, name, val, 0)
			if got != want {
				t.Errorf("root setxattr %s on data/: %v, on ext4: %v", name, got, want)
			}
			unix.Removexattr(p, name)
		}
		if !escMountOptions(t, e.data(e.a))["nosuid"] {
			t.Errorf("the bind of data/ is not nosuid: a file capability set there would work")
		}
		must(t, unix.Setxattr(p, "user.esc", []byte("1"), 0))
		return
	}
	for name, val := range xattrs {
		if err := unix.Setxattr(p, name, val, 0); err != unix.EOPNOTSUPP {
			t.Errorf("root setxattr %s through the mount: %v, want EOPNOTSUPP", name, err)
		}
		if _, err := unix.Lgetxattr(filepath.Join(e.s.HostData(e.a), "xattr-file"), name, make([]byte, 64)); err != unix.ENODATA {
			t.Errorf("%s on the host file: %v, want ENODATA", name, err)
		}
	}
	must(t, unix.Setxattr(p, "user.esc", []byte("1"), 0))
}
