package mount

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// MountInfo is one line of /proc/self/mountinfo: a mount as this
// process's mount namespace has it.
type MountInfo struct {
	ID, Parent int    // mount ids (statx's STATX_MNT_ID gives the former)
	Dev        uint64 // the filesystem's device, as st_dev shows it
	Root       string // the dir of the filesystem shown at the mount point
	MountPoint string
	Options    []string // per-mount options: rw, nosuid, nodev, nosymfollow, ...
	FSType     string   // with its subtype, as in fuse.memohfs
	Source     string
}

// HasOptions says whether the mount has every per-mount option in opts.
func (m MountInfo) HasOptions(opts ...string) bool {
	for _, o := range opts {
		found := false
		for _, have := range m.Options {
			if have == o {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Submounts lists the mounts at or under dir (a clean absolute path, as
// mountinfo shows it: no symlink resolved), in the order the kernel lists
// them: a mount stacked on another comes after it. It reads only
// /proc/self/mountinfo, never touching a mount, which could hang if its
// server does.
func Submounts(dir string) ([]MountInfo, error) {
	all, err := mounts()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []MountInfo
	for _, m := range all {
		if m.MountPoint == dir || strings.HasPrefix(m.MountPoint, dir+"/") || dir == "/" {
			out = append(out, m)
		}
	}
	return out, nil
}

// mountsOn lists the mounts whose mount point is dir itself, the one on
// top last.
func mountsOn(dir string) ([]MountInfo, error) {
	all, err := mounts()
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	var out []MountInfo
	for _, m := range all {
		if m.MountPoint == dir {
			out = append(out, m)
		}
	}
	return out, nil
}

// mounts is this mount namespace's table, from /proc/self/mountinfo.
func mounts() ([]MountInfo, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseMountinfo(f)
}

// ParseMountinfo reads mountinfo lines (proc(5)); escaped characters in
// paths (\040 for a space, \012 for a newline, ...) are restored.
func ParseMountinfo(r io.Reader) ([]MountInfo, error) {
	var out []MountInfo
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for n := 1; sc.Scan(); n++ {
		m, err := parseMountinfoLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("mountinfo line %d: %w", n, err)
		}
		out = append(out, m)
	}
	return out, sc.Err()
}

func parseMountinfoLine(line string) (MountInfo, error) {
	var m MountInfo
	f := strings.Fields(line)
	sep := -1
	for i := 6; i < len(f); i++ {
		if f[i] == "-" {
			sep = i
			break
		}
	}
	if len(f) < 6 || sep < 0 || sep+2 >= len(f) {
		return m, fmt.Errorf("malformed: %q", line)
	}
	var err error
	if m.ID, err = strconv.Atoi(f[0]); err != nil {
		return m, fmt.Errorf("mount id %q", f[0])
	}
	if m.Parent, err = strconv.Atoi(f[1]); err != nil {
		return m, fmt.Errorf("parent id %q", f[1])
	}
	maj, min, ok := strings.Cut(f[2], ":")
	ma, err1 := strconv.ParseUint(maj, 10, 32)
	mi, err2 := strconv.ParseUint(min, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return m, fmt.Errorf("device %q", f[2])
	}
	m.Dev = unix.Mkdev(uint32(ma), uint32(mi))
	m.Root = unescapeOctal(f[3])
	m.MountPoint = unescapeOctal(f[4])
	m.Options = strings.Split(f[5], ",")
	m.FSType = unescapeOctal(f[sep+1])
	m.Source = unescapeOctal(f[sep+2])
	return m, nil
}

// unescapeOctal restores what the kernel's seq_escape wrote as \ooo.
func unescapeOctal(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
