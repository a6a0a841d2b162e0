package control

import "golang.org/x/sys/unix"

// swapDirs exchanges two directories atomically.
func swapDirs(a, b string) error {
	return unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE)
}
