package testenv

import (
	"bufio"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
)

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	defer f.Close()
	dir = filepath.Clean(dir)
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMount(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// fuseMountsUnder lists the FUSE mount points at or below dir, deepest
// first.
func fuseMountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	dir = filepath.Clean(dir)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		_, after, ok := strings.Cut(line, " - ")
		if len(fields) < 5 || !ok || !strings.HasPrefix(after, "fuse") {
			continue
		}
		if mp := unescapeMount(fields[4]); under(mp, dir) {
			out = append(out, mp)
		}
	}
	sort.Slice(out, func(i, j int) bool { return len(out[i]) > len(out[j]) })
	return out
}

// unmountUnder detaches every mount at or below dir.
func unmountUnder(dir string) {
	for _, mp := range mountsUnder(dir) {
		syscall.Unmount(mp, syscall.MNT_DETACH)
	}
}

// MountsUnder is mountsUnder for tests that assert nothing is left.
func MountsUnder(dir string) []string { return mountsUnder(dir) }

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// AbortFUSE aborts the FUSE connection of the mount at mnt and detaches
// it, so no request to a dead or stuck server can hang the test process
// (a thread waiting on FUSE cannot be killed otherwise). It never touches
// the mount itself (a stat could hang).
func AbortFUSE(mnt string) error {
	if entries, _ := os.ReadDir("/sys/fs/fuse/connections"); len(entries) == 0 {
		syscall.Mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, "")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMount(fields[4]) != filepath.Clean(mnt) {
			continue
		}
		if _, minor, ok := strings.Cut(fields[2], ":"); ok {
			os.WriteFile(filepath.Join("/sys/fs/fuse/connections", minor, "abort"), []byte("1"), 0)
		}
	}
	f.Close()
	return syscall.Unmount(mnt, syscall.MNT_DETACH)
}
