// Package p9test tests memohfs's patch of github.com/hugelgupf/p9 (the copy
// in internal/third_party/p9, see its MEMOHFS.md): a Tflush or the end of the
// connection cancels the context a File's ReadAtContext was given, so a read
// that blocks forever (a file read like tail -f) no longer hangs the Tflush
// nor leaks the connection's goroutines.
package p9test
