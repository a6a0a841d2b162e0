package fsnodes_test

import (
	"errors"
	"syscall"
	"testing"

	"github.com/memohfs/memohfs/fsnodes"
	"github.com/memohfs/memohfs/internal/testenv"
	"github.com/memohfs/memohfs/internal/teststack"
)

// stack is one test's memohfs (teststack), with the methods of this
// package's tests.
type stack struct{ *teststack.Stack }

// newStack mounts with data/ on this run's path (testenv.DataBinds).
func newStack(t *testing.T, opts fsnodes.Options) *stack {
	t.Helper()
	return &stack{teststack.New(t, teststack.Options{FS: opts})}
}

// newStackOn mounts with opts as given (DataBinds too): for tests of one
// path only.
func newStackOn(t *testing.T, opts fsnodes.Options) *stack {
	t.Helper()
	return &stack{teststack.New(t, teststack.Options{FS: opts, ForceDataPath: true})}
}

// with gives a view of the stack that reports to t (a subtest).
func (s *stack) with(t *testing.T) *stack { return &stack{s.Stack.With(t)} }

func errnoIs(err error, want syscall.Errno) bool { return errors.Is(err, want) }

// must is teststack.Must.
var must = teststack.Must

// eventually is testenv.Eventually.
var eventually = testenv.Eventually
