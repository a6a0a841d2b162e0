package testenv

import "os"

// DataBinds says which path data/ takes in this run: the FUSE node (the
// default, as `memohfs up` serves it) or, with
// MEMOHFS_TEST_DATA_PATH=bind, binds of the data dirs over it. Tests of
// the binds themselves choose their path explicitly.
func DataBinds() bool { return os.Getenv("MEMOHFS_TEST_DATA_PATH") == "bind" }
