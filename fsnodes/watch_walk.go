package fsnodes

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// wnode is a directory of a watched tree: watched (wd >= 0) or queued to
// be (wd < 0). Nodes are kept as a tree of names, so a path costs its own
// name only and a directory moved or removed drops its subtree at once.
type wnode struct {
	parent *wnode // nil for the root
	name   string
	depth  int
	wd     int32
	kids   map[string]*wnode // subdirectories known here
	// skipped: some subdirectory here is not watched (a limit, or an
	// error): names here not in kids are not covered.
	skipped bool
	dead    bool // detached
}

// rel is n's path relative to the root ("." for the root).
func (n *wnode) rel() string {
	if n.parent == nil {
		return "."
	}
	var parts []string
	for x := n; x.parent != nil; x = x.parent {
		parts = append(parts, x.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	return strings.Join(parts, "/")
}

// join is the relative path of name in n.
func (n *wnode) join(name string) string {
	if n.parent == nil {
		return name
	}
	return n.rel() + "/" + name
}

func (n *wnode) kid(name string, wd int32) *wnode {
	return &wnode{parent: n, name: name, depth: n.depth + 1, wd: wd}
}

// detach drops n and everything below it (tw.mu held) and returns their
// watches, for the caller to remove (after unlocking) when they may still
// be live: a directory moved away keeps its watches in the kernel.
func (tw *treeWatch) detach(n *wnode) []int32 {
	var rm []int32
	stack := []*wnode{n}
	for len(stack) > 0 {
		x := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if x.dead {
			continue
		}
		x.dead = true
		tw.nodes--
		if x.wd >= 0 {
			if tw.wds[x.wd] == x {
				delete(tw.wds, x.wd)
			}
			rm = append(rm, x.wd)
		}
		for _, c := range x.kids {
			stack = append(stack, c)
		}
	}
	if p := n.parent; p != nil && p.kids[n.name] == n {
		delete(p.kids, n.name)
	}
	if n == tw.top {
		tw.top = nil
	}
	return rm
}

func (tw *treeWatch) rmWatches(wds []int32) {
	for _, wd := range wds {
		unix.InotifyRmWatch(tw.ifd, uint32(wd))
	}
}

// addDir watches name, a directory just made in (or moved into) n, and
// the directories below it.
func (tw *treeWatch) addDir(n *wnode, name string) {
	tw.mu.Lock()
	var rm []int32
	if old := n.kids[name]; old != nil {
		rm = tw.detach(old) // replaced: the old one was removed or moved away
	}
	var c *wnode
	var why string
	switch {
	case n.dead:
	case n.depth+1 > tw.w.lim.MaxDepth:
		n.skipped, why = true, degradedDepth
	case tw.nodes >= tw.w.lim.MaxWatches:
		n.skipped, why = true, degradedWatches
	default:
		c = n.kid(name, -1)
		if n.kids == nil {
			n.kids = map[string]*wnode{}
		}
		n.kids[name] = c
		tw.nodes++
	}
	tw.mu.Unlock()
	tw.rmWatches(rm)
	if why != "" {
		tw.degrade(why, nil)
	}
	if c != nil {
		tw.walk(c)
	}
}

// walk watches the queued directory start and, depth first, every
// directory below it, within the tree's limits. It holds no fd between
// directories: each is opened from the root fd by its relative path
// (beneath the root, no symlinks followed), watched, listed and closed,
// so a walk holds at most 2 fds (see watchLimits) at any depth. A
// directory's subdirectories are added to the nodes, queued, in the same
// step as its watch, so covers never trusts a directory nobody watches.
func (tw *treeWatch) walk(start *wnode) {
	stack := []*wnode{start}
	for len(stack) > 0 {
		if tw.stopped() {
			return
		}
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		tw.mu.RLock()
		dead := n.dead
		budget := tw.w.lim.MaxWatches - tw.nodes
		tw.mu.RUnlock()
		if dead {
			continue
		}
		if n.depth+1 > tw.w.lim.MaxDepth {
			budget = 0 // only whether there is any subdirectory
		}
		wd, names, more, err := tw.watchDir(n, budget)
		if err != nil {
			tw.mu.Lock()
			if n.parent != nil {
				tw.detach(n)
				if !gone(err) {
					n.parent.skipped = true
				}
			}
			tw.mu.Unlock()
			if !gone(err) {
				tw.degradeFor(err)
			}
			continue
		}
		var rm []int32
		why := ""
		tw.mu.Lock()
		if old := tw.wds[wd]; old != nil && old != n {
			// The same directory, known under another name: it moved
			// while we walked. Its old node goes (with the watches below
			// it, found again under n); its events fix the rest.
			for _, x := range tw.detach(old) {
				if x != wd {
					rm = append(rm, x)
				}
			}
		}
		if n.dead {
			rm = append(rm, wd) // what held it moved away meanwhile
		} else {
			n.wd = wd
			tw.wds[wd] = n
			for _, name := range names {
				if n.kids[name] != nil {
					continue
				}
				if n.kids == nil {
					n.kids = map[string]*wnode{}
				}
				c := n.kid(name, -1)
				n.kids[name] = c
				tw.nodes++
				stack = append(stack, c)
			}
			if more {
				n.skipped = true
				why = degradedWatches
				if n.depth+1 > tw.w.lim.MaxDepth {
					why = degradedDepth
				}
			}
		}
		tw.mu.Unlock()
		tw.rmWatches(rm)
		if why != "" {
			tw.degrade(why, nil)
		}
	}
}

// watchDir opens n, puts a watch on it and lists up to max of its
// subdirectories (more: there are others). The fds it opens are closed
// when it returns.
func (tw *treeWatch) watchDir(n *wnode, max int) (wd int32, names []string, more bool, err error) {
	fd, err := tw.openDir(n)
	if err != nil {
		return -1, nil, false, err
	}
	defer unix.Close(fd)
	w, err := unix.InotifyAddWatch(tw.ifd, "/proc/self/fd/"+strconv.Itoa(fd), watchMask)
	if err != nil {
		return -1, nil, false, err
	}
	if tw.w.hook != nil {
		tw.w.hook()
	}
	if tw.dirBuf == nil {
		tw.dirBuf = make([]byte, 32<<10)
	}
	names, more, err = subdirs(fd, max, tw.dirBuf)
	if err != nil {
		// Watched, but not all of it listed: not all covered.
		more = true
	}
	return int32(w), names, more, nil
}

// openChunk is the longest relative path opened with one openat2: well
// under PATH_MAX, so a tree of any depth can be opened (in chunks).
const openChunk = 2048

// openDir opens n for reading (its listing), walking from the root fd
// with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS): nothing outside the
// root and no symlink is ever followed, whatever the bot swaps in. A path
// longer than openChunk is opened chunk by chunk, each from the last
// (holding at most two fds at once).
func (tw *treeWatch) openDir(n *wnode) (int, error) {
	var parts []string
	for x := n; x.parent != nil; x = x.parent {
		parts = append(parts, x.name)
	}
	for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
		parts[i], parts[j] = parts[j], parts[i]
	}
	const final = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW
	if len(parts) == 0 {
		return openBeneath(tw.rootFd, ".", final)
	}
	dir := tw.rootFd
	for len(parts) > 0 {
		k, size := 0, 0
		for k < len(parts) && (k == 0 || size+1+len(parts[k]) <= openChunk) {
			size += 1 + len(parts[k])
			k++
		}
		chunk := strings.Join(parts[:k], "/")
		parts = parts[k:]
		flags := final
		if len(parts) > 0 {
			flags = unix.O_PATH | unix.O_DIRECTORY
		}
		fd, err := openBeneath(dir, chunk, flags)
		if err == nil && dir != tw.rootFd && tw.w.hook != nil {
			tw.w.hook() // the previous chunk's fd and this one
		}
		if dir != tw.rootFd {
			unix.Close(dir)
		}
		if err != nil {
			return -1, err
		}
		dir = fd
	}
	return dir, nil
}

// openBeneath opens rel beneath dir, following no symlink on the way.
func openBeneath(dir int, rel string, flags int) (int, error) {
	for {
		fd, err := unix.Openat2(dir, rel, &unix.OpenHow{Flags: uint64(flags | unix.O_CLOEXEC),
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS})
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
			continue // a rename raced the lookup; resolve again
		}
		return fd, err
	}
}

// subdirs lists up to max subdirectories of the directory open as fd
// (more: there are others), by getdents into buf and, where the fs gives
// no type, fstatat without following links.
func subdirs(fd, max int, buf []byte) (names []string, more bool, err error) {
	for {
		n, err := unix.Getdents(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return names, more, err
		}
		if n <= 0 {
			return names, more, nil
		}
		for off := 0; off < n; {
			// struct linux_dirent64: ino u64, off s64, reclen u16, type u8, name.
			reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
			typ := buf[off+18]
			raw := buf[off+19 : off+reclen]
			if i := bytes.IndexByte(raw, 0); i >= 0 {
				raw = raw[:i]
			}
			off += reclen
			name := string(raw)
			if name == "." || name == ".." {
				continue
			}
			if typ == unix.DT_UNKNOWN {
				var st unix.Stat_t
				if unix.Fstatat(fd, name, &st, unix.AT_SYMLINK_NOFOLLOW) != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
					continue
				}
			} else if typ != unix.DT_DIR {
				continue
			}
			if len(names) >= max {
				return names, true, nil
			}
			names = append(names, name)
		}
	}
}
