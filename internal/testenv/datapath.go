package testenv

import "os"

// DataBinds says which path data/ takes in this run: binds (the default,
// as `memohfs up` serves it) or, with MEMOHFS_TEST_DATA_PATH=fuse, the
// FUSE node alone. make test runs the data/ suites both ways.
func DataBinds() bool { return os.Getenv("MEMOHFS_TEST_DATA_PATH") != "fuse" }
