package fsnodes

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The attributes of the synthetic files and dirs (everything but the
// host trees), as `ls -l` shows them: one link for a file, 2 plus its
// subdirs for a dir (what find and rsync expect of a dir's link count),
// the owner, and a time that means something. A file's three times are
// the same: nothing tracks reads.
//
//	$ ls -l /M/b1
//	drwx------ 6 alice root 0 Dec  4 10:00 cmd      (the bot was made)
//	-rw------- 1 alice root 211 Dec  4 10:00 ctl    (the bot was made)
//	-r--r--r-- 1 alice root 0 Dec  4 10:04 err      (err last changed)
//	-r--r--r-- 1 alice root 0 Dec  4 10:04 events   (the last event)
//	-r--r--r-- 1 alice root 301 Dec  4 10:04 status (the state last changed)

// synthFile fills a synthetic file's attributes.
func synthFile(a *fuse.Attr, perm, owner uint32, size int, t time.Time) {
	a.Mode = fuse.S_IFREG | perm
	a.Nlink = 1
	a.Uid = owner
	a.Size = uint64(size)
	stampTimes(a, t)
}

// synthDir fills a synthetic dir's attributes; subdirs is how many dirs
// it holds.
func synthDir(a *fuse.Attr, perm, owner uint32, subdirs int, t time.Time) {
	a.Mode = fuse.S_IFDIR | perm
	a.Nlink = uint32(2 + subdirs)
	a.Uid = owner
	stampTimes(a, t)
}

// stampTimes sets mtime, ctime and atime to t (left at 0 for a zero t).
func stampTimes(a *fuse.Attr, t time.Time) {
	if t.IsZero() {
		return
	}
	s, n := uint64(t.Unix()), uint32(t.Nanosecond())
	a.Mtime, a.Mtimensec = s, n
	a.Ctime, a.Ctimensec = s, n
	a.Atime, a.Atimensec = s, n
}
