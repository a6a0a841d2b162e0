package fsnodes_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
	"golang.org/x/sys/unix"
)

// Who the POSIX cases run as. The bot is pxUser's (its directory is 0700
// to them), so every step runs as root or as pxUser, with or without the
// supplementary group pxGroup; the other users only own files.
const (
	pxUser   = 10011 // the bot's owner; its primary group is 10011 too
	pxGroup  = 10020 // a group pxUser is in only where the case says so
	pxOther  = 10040 // owns files in the case dirs
	pxOther2 = 10041 // owns a sticky dir
	pxNamed  = 10030 // named in ACL entries
)

var (
	pxRoot   = posixWho{name: "root"}
	pxPlain  = posixWho{name: "user", uid: pxUser, gid: pxUser}
	pxMember = posixWho{name: "user in group", uid: pxUser, gid: pxUser, groups: []uint32{pxGroup}}
)

// posixCase is one comparison: run makes the same steps on either side
// as w and notes what it saw; want says what ext4 itself must give for
// the case to be about anything.
type posixCase struct {
	name string
	whos []posixWho
	run  func(s *posixSide, w posixWho)
	want func(w posixWho) map[string]string
}

// TestPosixExt4: data/ behaves as native ext4 for ownership, modes,
// permissions, timestamps and link counts. Each case runs the same
// system calls, as the same user with the same groups and umask, in a
// native ext4 dir and through a bot's data/ (mounted with allow_other),
// and compares every observation: modes, owners, errnos, link counts,
// and whether a ctime moved.
func TestPosixExt4(t *testing.T) {
	s := newStack(t, fsnodes.Options{AllowOther: true})
	if out, err := s.AsUser(pxUser, `mkdir $M/px`); err != nil {
		t.Fatalf("mkdir as %d: %v %s", pxUser, err, out)
	}
	tmp := s.Env.TempDir(t)
	native := filepath.Join(tmp, "ext4")
	must(t, os.Mkdir(native, 0o755))
	scratch := filepath.Join(tmp, "clock")
	must(t, os.WriteFile(scratch, nil, 0o644))
	data := s.Path("px", "data")
	for _, dir := range []string{native, filepath.Join(s.Root, "bots", "px")} {
		var sfs unix.Statfs_t
		must(t, unix.Statfs(dir, &sfs))
		if sfs.Type != unix.EXT4_SUPER_MAGIC {
			t.Fatalf("%s is not on ext4 (magic %#x): the comparison would be with something else", dir, sfs.Type)
		}
	}

	for _, c := range posixCases() {
		for _, w := range c.whos {
			t.Run(c.name+"/"+w.name, func(t *testing.T) {
				name := strings.NewReplacer(" ", "_", "/", "_").Replace(c.name + "-" + w.name)
				var sides [2]*posixSide
				for i, base := range []string{native, data} {
					side := &posixSide{t: t, name: []string{"ext4", "data/"}[i], dir: filepath.Join(base, name), scratch: scratch}
					if base == data {
						side.host = filepath.Join(s.Root, "bots", "px", name)
					}
					side.mkdir("", 0o755, w.uid, w.gid)
					c.run(side, w)
					sides[i] = side
				}
				posixCompare(t, sides[0], sides[1], c.want(w))
			})
		}
	}
}

func posixCases() []posixCase {
	cases := []posixCase{
		{name: "setgid dir inheritance", whos: []posixWho{pxRoot, pxMember}, run: pxSetgidInherit, want: func(w posixWho) map[string]string {
			return map[string]string{
				"dir mode":   "042775",
				"f owner":    fmt.Sprintf("%d:%d", w.uid, pxGroup),
				"d owner":    fmt.Sprintf("%d:%d", w.uid, pxGroup),
				"d mode":     "042755",
				"d/e mode":   "042755",
				"f mode":     "0100644",
				"sgid mode":  "0102755",
				"fifo owner": fmt.Sprintf("%d:%d", w.uid, pxGroup),
			}
		}},
		{name: "setgid stripping", whos: []posixWho{pxRoot, pxPlain}, run: pxSetgidStrip, want: func(w posixWho) map[string]string {
			if w.uid == 0 {
				return map[string]string{"f mode after chmod 2755": "0102755", "h mode": "0102755"}
			}
			return map[string]string{
				"f mode after chmod 2755": "0100755",
				"g owner":                 fmt.Sprintf("%d:%d", pxUser, pxGroup),
				"g mode after chmod 2755": "0100755",
				"h mode":                  "0100755",
				"d mode":                  "042755",
			}
		}},
	}
	for _, umask := range []int{0, 0o022, 0o077} {
		cases = append(cases, posixCase{
			name: fmt.Sprintf("umask %03o", umask),
			whos: []posixWho{pxRoot, pxPlain},
			run:  func(s *posixSide, w posixWho) { pxUmask(s, w, umask) },
			want: func(posixWho) map[string]string {
				m := func(typ, perm uint32) string { return fmt.Sprintf("%#o", typ|perm&^uint32(umask)) }
				return map[string]string{
					"file 0666 mode":    m(unix.S_IFREG, 0o666),
					"dir 0777 mode":     m(unix.S_IFDIR, 0o777),
					"fifo 0666 mode":    m(unix.S_IFIFO, 0o666),
					"symlink mode":      "0120777",
					"O_TMPFILE 0666":    m(unix.S_IFREG, 0o666),
					"dir 01777 mode":    m(unix.S_IFDIR, 0o1777),
					"mknod file 0666":   m(unix.S_IFREG, 0o666),
					"setuid file 04777": m(unix.S_IFREG, 0o4777),
				}
			},
		})
	}
	cases = append(cases,
		posixCase{name: "default ACL", whos: []posixWho{pxRoot, pxPlain}, run: pxDefaultACL, want: func(w posixWho) map[string]string {
			m := map[string]string{
				"set default ACL":            "ok",
				"acl/f mode (umask 077)":     "0100660",
				"acl/d mode (umask 077)":     "040770",
				"min/f mode (umask 0)":       "0100640",
				"min/d mode (umask 0)":       "040750",
				"write granted by ACL entry": "ok",
				"write denied by ACL entry":  "EACCES",
			}
			if w.uid == 0 {
				m["write denied by ACL entry"] = "ok"
			}
			return m
		}},
		posixCase{name: "supplementary group", whos: []posixWho{pxRoot, pxMember, pxPlain}, run: pxSuppGroup, want: func(w posixWho) map[string]string {
			if w.uid != 0 && len(w.groups) == 0 {
				return map[string]string{"write a 0660 root:G file": "EACCES", "create in a 0770 root:G dir": "EACCES"}
			}
			return map[string]string{"write a 0660 root:G file": "ok", "create in a 0770 root:G dir": "ok"}
		}},
		posixCase{name: "sticky dir", whos: []posixWho{pxRoot, pxPlain}, run: pxSticky, want: func(w posixWho) map[string]string {
			refused := "EPERM"
			if w.uid == 0 {
				refused = "ok"
			}
			return map[string]string{
				"unlink another's file":            refused,
				"rename another's file":            refused,
				"rename own file over another's":   refused,
				"rmdir another's dir":              refused,
				"unlink own file":                  "ok",
				"rename own file":                  "ok",
				"dir owner unlinks another's file": "ok",
				"dir owner renames another's file": "ok",
			}
		}},
		posixCase{name: "truncate and utimes", whos: []posixWho{pxRoot, pxPlain}, run: pxTruncUtimes, want: func(w posixWho) map[string]string {
			if w.uid == 0 {
				return map[string]string{"truncate without write permission": "ok", "utimes explicit, not owner, writable": "ok"}
			}
			return map[string]string{
				"truncate without write permission":     "EACCES",
				"truncate with write permission":        "ok",
				"open O_TRUNC without write permission": "EACCES",
				"utimes NULL, writable":                 "ok",
				"utimes UTIME_NOW, writable":            "ok",
				"utimes explicit, not owner, writable":  "EPERM",
				"utimes UTIME_NOW, not writable":        "EACCES",
				"utimes explicit, not writable":         "EPERM",
				"utimes explicit, owner":                "ok",
			}
		}},
		posixCase{name: "ctime", whos: []posixWho{pxRoot, pxPlain}, run: pxCtime, want: func(posixWho) map[string]string {
			return map[string]string{
				"chmod 0600":    "ctime moved",
				"chown":         "ctime moved",
				"link":          "ctime moved",
				"open for read": "ctime same",
			}
		}},
		posixCase{name: "link counts", whos: []posixWho{pxRoot, pxPlain}, run: pxLinkCounts, want: func(w posixWho) map[string]string {
			m := map[string]string{
				"f nlink after link":                  "2",
				"f nlink after rename over its link":  "1",
				"rename onto its own hard link":       "ok",
				"f nlink after rename onto own link":  "2",
				"open file nlink after last unlink":   "0",
				"D nlink after mkdir D/a D/b":         "4",
				"D nlink after rename D/b to E/b":     "2",
				"E nlink after rename D/b to E/b":     "3",
				"case dir nlink after mkdir D E":      "4",
				"link to another's 0600 file (errno)": "EPERM",
			}
			if w.uid == 0 {
				m["link to another's 0600 file (errno)"] = "ok"
			}
			return m
		}},
	)
	return cases
}

// Steps as w; each returns the call's error.
func pxCreate(p string, mode uint32) func() error {
	return func() error {
		fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, mode)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
}

func pxOpen(p string, flags int) func() error {
	return func() error {
		fd, err := unix.Open(p, flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			unix.Close(fd)
		}
		return err
	}
}

// pxSetgidInherit: chmod 2775 dir; chgrp G dir; what is made in it takes
// G, and a directory takes the setgid bit too (a member of G runs it).
func pxSetgidInherit(s *posixSide, w posixWho) {
	s.noteErr("mkdir dir", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("dir"), 0o777) }))
	s.noteErr("chmod 2775 dir", s.as(w, 0o022, func() error { return unix.Chmod(s.p("dir"), 0o2775) }))
	s.noteErr("chgrp G dir", s.as(w, 0o022, func() error { return unix.Lchown(s.p("dir"), -1, pxGroup) }))
	s.noteMode("dir mode", "dir")
	s.noteErr("create dir/f", s.as(w, 0o022, pxCreate(s.p("dir/f"), 0o644)))
	s.noteErr("mkdir dir/d", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("dir/d"), 0o755) }))
	s.noteErr("mkdir dir/d/e", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("dir/d/e"), 0o755) }))
	s.noteErr("mkfifo dir/fifo", s.as(w, 0o022, func() error { return unix.Mknod(s.p("dir/fifo"), unix.S_IFIFO|0o644, 0) }))
	s.noteErr("symlink dir/l", s.as(w, 0o022, func() error { return unix.Symlink("f", s.p("dir/l")) }))
	s.noteErr("create dir/sgid 02755", s.as(w, 0o022, pxCreate(s.p("dir/sgid"), 0o2755)))
	for _, n := range []string{"f", "d", "d/e", "fifo", "l", "sgid"} {
		s.noteOwner(n+" owner", "dir/"+n)
		s.noteMode(n+" mode", "dir/"+n)
	}
}

// pxSetgidStrip: setgid is kept only for a member of the file's group
// (or root): chmod g+s of a file of a group the caller is not in, a file
// made in a setgid dir of such a group, then chmod 2755, a create asking
// for setgid there; and chown by the owner of a setuid+setgid file.
func pxSetgidStrip(s *posixSide, w posixWho) {
	s.file("f", 0o755, w.uid, pxGroup)
	s.noteErr("chmod 2755 f", s.as(w, 0o022, func() error { return unix.Chmod(s.p("f"), 0o2755) }))
	s.noteMode("f mode after chmod 2755", "f")
	s.noteErr("chmod g+s f via fchmod", s.as(w, 0o022, func() error {
		fd, err := unix.Open(s.p("f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Fchmod(fd, 0o2711)
	}))
	s.noteMode("f mode after fchmod 2711", "f")

	s.mkdir("sg", 0o2777, 0, pxGroup)
	s.noteErr("create sg/g", s.as(w, 0o022, pxCreate(s.p("sg/g"), 0o755)))
	s.noteOwner("g owner", "sg/g")
	s.noteMode("g mode", "sg/g")
	s.noteErr("chmod 2755 sg/g", s.as(w, 0o022, func() error { return unix.Chmod(s.p("sg/g"), 0o2755) }))
	s.noteMode("g mode after chmod 2755", "sg/g")
	s.noteErr("create sg/h 02755", s.as(w, 0o022, pxCreate(s.p("sg/h"), 0o2755)))
	s.noteMode("h mode", "sg/h")
	s.noteErr("mknod sg/r 02755", s.as(w, 0o022, func() error { return unix.Mknod(s.p("sg/r"), unix.S_IFREG|0o2755, 0) }))
	s.noteMode("r mode", "sg/r")
	s.noteErr("mkdir sg/d", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("sg/d"), 0o755) }))
	s.noteMode("d mode", "sg/d")

	s.file("s", 0o6755, w.uid, w.gid)
	s.noteErr("chown own setuid+setgid file to own group", s.as(w, 0o022, func() error { return unix.Lchown(s.p("s"), -1, int(w.gid)) }))
	s.noteMode("s mode after chown", "s")
}

// pxUmask: what is made with umask u has exactly its mode minus u.
func pxUmask(s *posixSide, w posixWho, umask int) {
	s.noteErr("create file 0666", s.as(w, umask, pxCreate(s.p("file"), 0o666)))
	s.noteMode("file 0666 mode", "file")
	s.noteErr("mkdir 0777", s.as(w, umask, func() error { return unix.Mkdir(s.p("dir"), 0o777) }))
	s.noteMode("dir 0777 mode", "dir")
	s.noteErr("mkfifo 0666", s.as(w, umask, func() error { return unix.Mknod(s.p("fifo"), unix.S_IFIFO|0o666, 0) }))
	s.noteMode("fifo 0666 mode", "fifo")
	s.noteErr("symlink", s.as(w, umask, func() error { return unix.Symlink("file", s.p("link")) }))
	s.noteMode("symlink mode", "link")
	s.noteErr("mkdir 01777", s.as(w, umask, func() error { return unix.Mkdir(s.p("sticky"), 0o1777) }))
	s.noteMode("dir 01777 mode", "sticky")
	s.noteErr("mknod regular 0666", s.as(w, umask, func() error { return unix.Mknod(s.p("node"), unix.S_IFREG|0o666, 0) }))
	s.noteMode("mknod file 0666", "node")
	s.noteErr("create setuid 04777", s.as(w, umask, pxCreate(s.p("suid"), 0o4777)))
	s.noteMode("setuid file 04777", "suid")
	var tmpMode uint32
	s.noteErr("O_TMPFILE", s.as(w, umask, func() error {
		fd, err := unix.Open(s.dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o666)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		err = unix.Fstat(fd, &st)
		tmpMode = st.Mode
		return err
	}))
	s.note("O_TMPFILE 0666", fmt.Sprintf("%#o", tmpMode))
}

// pxDefaultACL: a default ACL on the dir decides the modes of what is
// made in it, not the umask, and is inherited (access ACL of a new file,
// access and default ACL of a new dir); an access ACL entry grants and
// denies as the mode would not.
func pxDefaultACL(s *posixSide, w posixWho) {
	ext := aclXattr(aclEntry{tag: aclUserObj, perm: 7}, aclEntry{tag: aclUser, perm: 7, id: pxNamed},
		aclEntry{tag: aclGroupObj, perm: 5}, aclEntry{tag: aclMask, perm: 7}, aclEntry{tag: aclOther})
	s.noteErr("mkdir acl", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("acl"), 0o755) }))
	s.noteErr("set default ACL", s.as(w, 0o022, func() error { return unix.Setxattr(s.p("acl"), "system.posix_acl_default", ext, 0) }))
	s.noteXattr("acl default ACL read back", "acl", "system.posix_acl_default")
	s.noteErr("create acl/f (umask 077)", s.as(w, 0o077, pxCreate(s.p("acl/f"), 0o666)))
	s.noteErr("mkdir acl/d (umask 077)", s.as(w, 0o077, func() error { return unix.Mkdir(s.p("acl/d"), 0o777) }))
	s.noteErr("mkfifo acl/p (umask 077)", s.as(w, 0o077, func() error { return unix.Mknod(s.p("acl/p"), unix.S_IFIFO|0o666, 0) }))
	s.noteMode("acl/f mode (umask 077)", "acl/f")
	s.noteXattr("acl/f access ACL", "acl/f", "system.posix_acl_access")
	s.noteMode("acl/d mode (umask 077)", "acl/d")
	s.noteXattr("acl/d access ACL", "acl/d", "system.posix_acl_access")
	s.noteXattr("acl/d default ACL", "acl/d", "system.posix_acl_default")
	s.noteMode("acl/p mode (umask 077)", "acl/p")

	// A minimal default ACL (no named entries) rules too: more strictly
	// than umask 0 here.
	minimal := aclXattr(aclEntry{tag: aclUserObj, perm: 7}, aclEntry{tag: aclGroupObj, perm: 5}, aclEntry{tag: aclOther})
	s.noteErr("mkdir min", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("min"), 0o755) }))
	s.noteErr("set minimal default ACL", s.as(w, 0o022, func() error { return unix.Setxattr(s.p("min"), "system.posix_acl_default", minimal, 0) }))
	s.noteErr("create min/f (umask 0)", s.as(w, 0, pxCreate(s.p("min/f"), 0o666)))
	s.noteErr("mkdir min/d (umask 0)", s.as(w, 0, func() error { return unix.Mkdir(s.p("min/d"), 0o777) }))
	s.noteMode("min/f mode (umask 0)", "min/f")
	s.noteXattr("min/f access ACL", "min/f", "system.posix_acl_access")
	s.noteMode("min/d mode (umask 0)", "min/d")

	// Access ACLs: another user's 0600 file with an entry naming w, and
	// one naming someone else.
	for name, who := range map[string]uint32{"granted": w.uid, "denied": pxNamed} {
		s.file(name, 0o600, pxOther, pxOther)
		acl := aclXattr(aclEntry{tag: aclUserObj, perm: 6}, aclEntry{tag: aclUser, perm: 6, id: who},
			aclEntry{tag: aclGroupObj}, aclEntry{tag: aclMask, perm: 6}, aclEntry{tag: aclOther})
		s.setup("set access ACL of "+name, func() error { return unix.Setxattr(s.p(name), "system.posix_acl_access", acl, 0) })
	}
	s.noteMode("granted mode", "granted")
	s.noteXattr("granted access ACL", "granted", "system.posix_acl_access")
	s.noteErr("write granted by ACL entry", s.as(w, 0o022, pxOpen(s.p("granted"), unix.O_WRONLY)))
	s.noteErr("write denied by ACL entry", s.as(w, 0o022, pxOpen(s.p("denied"), unix.O_WRONLY)))
}

// pxSuppGroup: a supplementary group counts for the group bits, on
// existing files and for creating in a directory.
func pxSuppGroup(s *posixSide, w posixWho) {
	s.file("f", 0o660, 0, pxGroup)
	s.noteErr("write a 0660 root:G file", s.as(w, 0o022, func() error {
		fd, err := unix.Open(s.p("f"), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte("y"))
		return err
	}))
	s.note("f size", fmt.Sprint(s.stat("f").Size))
	s.noteErr("read a 0660 root:G file", s.as(w, 0o022, pxOpen(s.p("f"), unix.O_RDONLY)))
	s.mkdir("gdir", 0o770, 0, pxGroup)
	err := s.as(w, 0o022, pxCreate(s.p("gdir/n"), 0o644))
	s.noteErr("create in a 0770 root:G dir", err)
	if err == nil {
		s.noteOwner("gdir/n owner", "gdir/n")
	}
	s.noteErr("mkdir in a 0770 root:G dir", s.as(w, 0o022, func() error { return unix.Mkdir(s.p("gdir/d"), 0o755) }))
}

// pxSticky: in a 1777 dir only the file's owner, the dir's owner and
// root may unlink or rename a file (EPERM for anyone else).
func pxSticky(s *posixSide, w posixWho) {
	s.mkdir("st", 0o1777, pxOther2, pxOther2)
	for _, n := range []string{"other", "other2", "victim"} {
		s.file("st/"+n, 0o666, pxOther, pxOther)
	}
	s.mkdir("st/odir", 0o777, pxOther, pxOther)
	s.file("st/mine", 0o644, w.uid, w.gid)
	s.file("st/mine2", 0o644, w.uid, w.gid)
	s.file("st/mine3", 0o644, w.uid, w.gid)
	s.noteErr("O_CREAT open of another's 0666 file", s.as(w, 0o022, pxOpen(s.p("st/other"), unix.O_CREAT|unix.O_WRONLY)))
	s.noteErr("unlink another's file", s.as(w, 0o022, func() error { return unix.Unlink(s.p("st/other")) }))
	s.noteErr("rename another's file", s.as(w, 0o022, func() error { return unix.Rename(s.p("st/other2"), s.p("st/moved")) }))
	s.noteErr("rename own file over another's", s.as(w, 0o022, func() error { return unix.Rename(s.p("st/mine2"), s.p("st/victim")) }))
	s.noteErr("rmdir another's dir", s.as(w, 0o022, func() error { return unix.Rmdir(s.p("st/odir")) }))
	s.noteErr("unlink own file", s.as(w, 0o022, func() error { return unix.Unlink(s.p("st/mine")) }))
	s.noteErr("rename own file", s.as(w, 0o022, func() error { return unix.Rename(s.p("st/mine3"), s.p("st/mine4")) }))
	s.note("st entries", pxList(s, "st"))

	s.mkdir("own", 0o1777, w.uid, w.gid)
	s.file("own/other", 0o644, pxOther, pxOther)
	s.file("own/other2", 0o644, pxOther, pxOther)
	s.noteErr("dir owner unlinks another's file", s.as(w, 0o022, func() error { return unix.Unlink(s.p("own/other")) }))
	s.noteErr("dir owner renames another's file", s.as(w, 0o022, func() error { return unix.Rename(s.p("own/other2"), s.p("own/moved")) }))
	s.note("own entries", pxList(s, "own"))
}

// pxList lists a dir's names, sorted, as root.
func pxList(s *posixSide, rel string) string {
	s.t.Helper()
	es, err := os.ReadDir(s.p(rel))
	if err != nil {
		s.t.Fatalf("list %s on %s: %v", rel, s.name, err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	return strings.Join(names, " ")
}

// pxTruncUtimes: truncate needs write permission; setting times to now
// needs write permission or ownership; setting them to anything else
// needs ownership.
func pxTruncUtimes(s *posixSide, w posixWho) {
	s.file("ro", 0o644, pxOther, pxOther)
	s.file("rw", 0o666, pxOther, pxOther)
	s.file("own", 0o444, w.uid, w.gid)
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	then := []unix.Timespec{{Sec: 1}, {Sec: 1}}
	nowOmit := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_OMIT}}
	utimes := func(rel string, ts []unix.Timespec) func() error {
		return func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, s.p(rel), ts, 0) }
	}
	s.noteErr("truncate without write permission", s.as(w, 0o022, func() error { return unix.Truncate(s.p("ro"), 0) }))
	s.noteErr("open O_TRUNC without write permission", s.as(w, 0o022, pxOpen(s.p("ro"), unix.O_WRONLY|unix.O_TRUNC)))
	s.note("ro size", fmt.Sprint(s.stat("ro").Size))
	s.noteErr("truncate with write permission", s.as(w, 0o022, func() error { return unix.Truncate(s.p("rw"), 5) }))
	s.note("rw size", fmt.Sprint(s.stat("rw").Size))
	s.noteErr("ftruncate with write permission", s.as(w, 0o022, func() error {
		fd, err := unix.Open(s.p("rw"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		return unix.Ftruncate(fd, 2)
	}))
	s.note("rw size after ftruncate", fmt.Sprint(s.stat("rw").Size))
	s.noteErr("utimes NULL, writable", s.as(w, 0o022, utimes("rw", nil)))
	s.noteErr("utimes UTIME_NOW, writable", s.as(w, 0o022, utimes("rw", now)))
	s.noteErr("utimes explicit, not owner, writable", s.as(w, 0o022, utimes("rw", then)))
	s.noteErr("utimes UTIME_NOW, not writable", s.as(w, 0o022, utimes("ro", now)))
	s.noteErr("utimes NULL, not writable", s.as(w, 0o022, utimes("ro", nil)))
	s.noteErr("utimes explicit, not writable", s.as(w, 0o022, utimes("ro", then)))
	s.noteErr("utimes atime NOW mtime OMIT, not writable", s.as(w, 0o022, utimes("ro", nowOmit)))
	s.noteErr("utimes explicit, owner", s.as(w, 0o022, utimes("own", then)))
	s.noteErr("utimes UTIME_NOW, owner, read-only file", s.as(w, 0o022, utimes("own", now)))
	for _, n := range []string{"ro", "rw", "own"} {
		s.note(n+" mtime is 1", fmt.Sprint(s.stat(n).Mtim.Sec == 1))
	}
}

// pxCtime: whether a change moves the file's ctime (not when exactly).
func pxCtime(s *posixSide, w posixWho) {
	s.file("f", 0o644, w.uid, w.gid)
	s.ctimeMoved("chmod 0600", "f", "f", w, func() error { return unix.Chmod(s.p("f"), 0o600) })
	s.ctimeMoved("chmod to the same mode", "f", "f", w, func() error { return unix.Chmod(s.p("f"), 0o600) })
	chown := func() error { return unix.Lchown(s.p("f"), -1, int(w.gid)) } // no change but the ctime
	if w.uid == 0 {
		chown = func() error { return unix.Lchown(s.p("f"), pxOther, pxOther) }
	}
	s.ctimeMoved("chown", "f", "f", w, chown)
	s.ctimeMoved("link", "f", "f", w, func() error { return unix.Link(s.p("f"), s.p("g")) })
	s.ctimeMoved("open for read", "f", "f", w, pxOpen(s.p("f"), unix.O_RDONLY))
	s.ctimeMoved("unlink of the other link", "f", "f", w, func() error { return unix.Unlink(s.p("g")) })
	s.ctimeMoved("rename", "f", "h", w, func() error { return unix.Rename(s.p("f"), s.p("h")) })
	s.ctimeMoved("utimes NULL", "h", "h", w, func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, s.p("h"), nil, 0) })
	s.ctimeMoved("setxattr user.x", "h", "h", w, func() error { return unix.Setxattr(s.p("h"), "user.x", []byte("1"), 0) })
}

// pxLinkCounts: st_nlink of files after link, rename over a link and
// unlink (also of an open file), and of dirs after mkdir, rmdir and
// rename of subdirs.
func pxLinkCounts(s *posixSide, w posixWho) {
	do := func(key string, fn func() error) { s.noteErr(key, s.as(w, 0o022, fn)) }
	do("create f", pxCreate(s.p("f"), 0o644))
	s.noteNlink("f nlink after create", "f")
	do("link f g", func() error { return unix.Link(s.p("f"), s.p("g")) })
	s.noteNlink("f nlink after link", "f")
	s.noteNlink("g nlink after link", "g")
	do("create h", pxCreate(s.p("h"), 0o644))
	do("rename h over g", func() error { return unix.Rename(s.p("h"), s.p("g")) })
	s.noteNlink("f nlink after rename over its link", "f")
	s.noteNlink("g nlink after rename over it", "g")
	do("link f k", func() error { return unix.Link(s.p("f"), s.p("k")) })
	s.noteErr("rename onto its own hard link", s.as(w, 0o022, func() error { return unix.Rename(s.p("f"), s.p("k")) }))
	s.noteNlink("f nlink after rename onto own link", "f")
	s.noteNlink("k nlink after rename onto own link", "k")

	var open []string
	s.noteErr("unlink f, k while open", s.as(w, 0o022, func() error {
		fd, err := unix.Open(s.p("f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		for _, n := range []string{"f", "k"} {
			if err := unix.Unlink(s.p(n)); err != nil {
				return err
			}
			if err := unix.Fstat(fd, &st); err != nil {
				return err
			}
			open = append(open, fmt.Sprint(st.Nlink))
		}
		return nil
	}))
	s.note("open file nlink after unlinks", strings.Join(open, " "))
	last := "-"
	if len(open) == 2 {
		last = open[1]
	}
	s.note("open file nlink after last unlink", last)

	s.noteNlink("case dir nlink", "")
	do("mkdir D", func() error { return unix.Mkdir(s.p("D"), 0o755) })
	do("mkdir E", func() error { return unix.Mkdir(s.p("E"), 0o755) })
	s.noteNlink("case dir nlink after mkdir D E", "")
	s.noteNlink("D nlink after mkdir", "D")
	do("mkdir D/a", func() error { return unix.Mkdir(s.p("D/a"), 0o755) })
	do("mkdir D/b", func() error { return unix.Mkdir(s.p("D/b"), 0o755) })
	s.noteNlink("D nlink after mkdir D/a D/b", "D")
	do("rmdir D/a", func() error { return unix.Rmdir(s.p("D/a")) })
	s.noteNlink("D nlink after rmdir D/a", "D")
	do("rename D/b E/b", func() error { return unix.Rename(s.p("D/b"), s.p("E/b")) })
	s.noteNlink("D nlink after rename D/b to E/b", "D")
	s.noteNlink("E nlink after rename D/b to E/b", "E")
	do("mkdir D/c", func() error { return unix.Mkdir(s.p("D/c"), 0o755) })
	do("rename D/c over empty E/b", func() error { return unix.Rename(s.p("D/c"), s.p("E/b")) })
	s.noteNlink("D nlink after rename D/c over E/b", "D")
	s.noteNlink("E nlink after rename D/c over E/b", "E")
	s.noteNlink("E/b nlink", "E/b")
	do("rename E into D", func() error { return unix.Rename(s.p("E"), s.p("D/E")) })
	s.noteNlink("D nlink after rename E into D", "D")
	s.noteNlink("case dir nlink after rename E into D", "")
	do("rmdir D/E/b", func() error { return unix.Rmdir(s.p("D/E/b")) })
	s.noteNlink("D/E nlink after rmdir D/E/b", "D/E")

	// protected_hardlinks: a user may not link another's file they can
	// neither read nor write; root may.
	s.file("theirs", 0o600, pxOther, pxOther)
	s.noteErr("link to another's 0600 file (errno)", s.as(w, 0o022, func() error { return unix.Link(s.p("theirs"), s.p("mine")) }))
	s.noteNlink("theirs nlink", "theirs")
}
