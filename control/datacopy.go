package control

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fileSig identifies the state of a live file at copy time. ctime is in
// it because no user can set it: a file whose signature is unchanged has
// not been written, chmod-ed or renamed over.
type fileSig struct {
	Ino, Size      uint64
	Mtime, Ctime   int64
	Mode, Uid, Gid uint32
}

func sigOf(st *unix.Stat_t) fileSig {
	return fileSig{
		Ino: st.Ino, Size: uint64(st.Size),
		Mtime: st.Mtim.Nano(), Ctime: st.Ctim.Nano(),
		Mode: st.Mode, Uid: st.Uid, Gid: st.Gid,
	}
}

// manifest maps a regular file's path (relative to the data root) to its
// live signature when it was copied.
type manifest map[string]fileSig

func (m manifest) save(path string) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".manifest-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := gob.NewEncoder(f).Encode(m); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

func loadManifest(path string) (manifest, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	m := manifest{}
	return m, gob.NewDecoder(f).Decode(&m)
}

// copyStats says what a copy did.
type copyStats struct {
	Dirs, Files, Linked, Copied, Symlinks, Skipped int
	Bytes                                          int64 // bytes copied (not linked)
}

// treeCopier copies a directory tree it does not trust (a bot's data dir)
// into one it owns. Every source access is relative to an open directory
// with no-follow semantics, so a symlink planted anywhere in the tree, or
// swapped in during the copy, is copied as a symlink and never followed.
// Regular files whose signature matches the previous copy's manifest are
// hard-linked to that copy (never to live data) instead of copied.
type treeCopier struct {
	prevRoot string   // previous copy (its files may be linked), or ""
	prev     manifest // its manifest
	dstRoot  string
	out      manifest
	stats    copyStats
	inodes   map[uint64]string // source inode -> first destination path (hard links in the source)
}

// copyTree copies src into dst (which must not exist). prevRoot/prev may
// be empty: then every file is copied.
func copyTree(src, dst, prevRoot string, prev manifest) (manifest, copyStats, error) {
	tc := &treeCopier{prevRoot: prevRoot, prev: prev, dstRoot: dst, out: manifest{}, inodes: map[uint64]string{}}
	fd, err := unix.Open(src, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, tc.stats, fmt.Errorf("open %s: %w", src, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return nil, tc.stats, err
	}
	if err := os.Mkdir(dst, 0o700); err != nil {
		return nil, tc.stats, err
	}
	if err := tc.dir(fd, dst, ""); err != nil {
		return nil, tc.stats, err
	}
	if err := setMeta(dst, &st, true); err != nil {
		return nil, tc.stats, err
	}
	return tc.out, tc.stats, nil
}

// dir copies the entries of the open directory dirfd into dstDir.
func (tc *treeCopier) dir(dirfd int, dstDir, rel string) error {
	// Read the names through a dup: os.File takes ownership of its fd.
	dup, err := unix.Dup(dirfd)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(dup), rel)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return fmt.Errorf("read dir %q: %w", rel, err)
	}
	for _, name := range names {
		if err := tc.entry(dirfd, dstDir, rel, name); err != nil {
			return err
		}
	}
	tc.stats.Dirs++
	return nil
}

func (tc *treeCopier) entry(dirfd int, dstDir, rel, name string) error {
	childRel := filepath.Join(rel, name)
	dstPath := filepath.Join(dstDir, name)
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil // gone meanwhile
		}
		return fmt.Errorf("stat %q: %w", childRel, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		cfd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
				return nil // replaced meanwhile: not what was stat-ed, skip
			}
			return fmt.Errorf("open dir %q: %w", childRel, err)
		}
		defer unix.Close(cfd)
		if err := os.Mkdir(dstPath, 0o700); err != nil {
			return err
		}
		if err := tc.dir(cfd, dstPath, childRel); err != nil {
			return err
		}
		return setMeta(dstPath, &st, true)
	case unix.S_IFREG:
		tc.stats.Files++
		sig := sigOf(&st)
		if st.Nlink > 1 {
			if first, ok := tc.inodes[st.Ino]; ok {
				if err := os.Link(first, dstPath); err == nil {
					tc.out[childRel] = sig
					tc.stats.Linked++
					return nil
				}
			}
		}
		if tc.prevRoot != "" {
			if old, ok := tc.prev[childRel]; ok && old == sig {
				if err := os.Link(filepath.Join(tc.prevRoot, childRel), dstPath); err == nil {
					tc.out[childRel] = sig
					tc.inodes[st.Ino] = dstPath
					tc.stats.Linked++
					return nil
				}
			}
		}
		n, err := copyFile(dirfd, name, dstPath, &st)
		if err != nil {
			if errors.Is(err, errChanged) {
				tc.stats.Skipped++
				return nil
			}
			return fmt.Errorf("copy %q: %w", childRel, err)
		}
		tc.out[childRel] = sig
		tc.inodes[st.Ino] = dstPath
		tc.stats.Copied++
		tc.stats.Bytes += n
		return nil
	case unix.S_IFLNK:
		target, err := readlinkat(dirfd, name)
		if err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
				return nil
			}
			return fmt.Errorf("readlink %q: %w", childRel, err)
		}
		if err := os.Symlink(target, dstPath); err != nil {
			return err
		}
		tc.stats.Symlinks++
		return setMeta(dstPath, &st, false)
	default:
		// Devices, fifos and sockets are not data: they are not copied.
		tc.stats.Skipped++
		return nil
	}
}

var errChanged = errors.New("replaced while copying")

// copyFile copies the regular file name (relative to dirfd, not followed)
// to dst and gives dst the source's mode, owner and times.
func copyFile(dirfd int, name, dst string, st *unix.Stat_t) (int64, error) {
	// O_NONBLOCK: a fifo swapped in since the stat must not block us;
	// the fstat below then refuses it.
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ELOOP) {
			return 0, errChanged
		}
		return 0, err
	}
	src := os.NewFile(uintptr(fd), name)
	defer src.Close()
	var now unix.Stat_t
	if err := unix.Fstat(fd, &now); err != nil {
		return 0, err
	}
	if now.Mode&unix.S_IFMT != unix.S_IFREG || now.Ino != st.Ino || now.Dev != st.Dev {
		return 0, errChanged
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		return 0, err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return 0, err
	}
	n, err := io.Copy(out, src) // copy_file_range where the kernel can
	if err != nil {
		out.Close()
		return n, err
	}
	if err := out.Close(); err != nil {
		return n, err
	}
	return n, setMeta(dst, st, true)
}

func readlinkat(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// setMeta gives path (ours) the owner, mode and times of st. Owner before
// mode: chown clears setuid bits.
func setMeta(path string, st *unix.Stat_t, follow bool) error {
	flags := 0
	if !follow {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.Fchownat(unix.AT_FDCWD, path, int(st.Uid), int(st.Gid), unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return err
	}
	if follow {
		if err := unix.Chmod(path, st.Mode&07777); err != nil {
			return err
		}
	}
	ts := []unix.Timespec{st.Atim, st.Mtim}
	return unix.UtimesNanoAt(unix.AT_FDCWD, path, ts, flags)
}

// swapDirs exchanges two directories atomically.
func swapDirs(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}
