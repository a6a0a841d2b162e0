package control

import (
	"context"
	"errors"
	"fmt"

	"github.com/containerd/errdefs"
)

// Kind classifies a refusal or failure; fsnodes maps it to an errno.
type Kind int

const (
	KindInternal    Kind = iota // EIO: something broke
	KindInvalid                 // EINVAL: unknown verb, bad argument or name
	KindNotFound                // ENOENT: unknown bot or snapshot
	KindExists                  // EEXIST: the name is taken
	KindBusy                    // EBUSY: not in this state
	KindUnavailable             // EIO: containerd or Postgres cannot be reached
	KindPermission              // EACCES: not yours
	KindInterrupted             // EINTR: the caller gave up
	KindAgain                   // EAGAIN: a limit is reached for now
	KindBrokenPipe              // EPIPE: nothing reads what is written
)

var kindNames = map[Kind]string{
	KindInternal: "internal error", KindInvalid: "invalid", KindNotFound: "not found",
	KindExists: "exists", KindBusy: "busy", KindUnavailable: "unavailable",
	KindPermission: "permission denied", KindInterrupted: "interrupted",
	KindAgain: "try again", KindBrokenPipe: "broken pipe",
}

func (k Kind) String() string { return kindNames[k] }

// Error is a refusal or failure with its reason in words.
type Error struct {
	Kind Kind
	Msg  string
	Err  error // cause, if any
}

func (e *Error) Error() string { return e.Msg }
func (e *Error) Unwrap() error { return e.Err }

func errorf(k Kind, format string, args ...any) error {
	return &Error{Kind: k, Msg: fmt.Sprintf(format, args...)}
}

// wrap classifies err (from runtime, store or the OS) and prefixes what.
func wrap(err error, what string) error {
	if err == nil {
		return nil
	}
	var ce *Error
	if errors.As(err, &ce) {
		if what == "" {
			return err
		}
		return &Error{Kind: ce.Kind, Msg: what + ": " + ce.Msg, Err: err}
	}
	msg := err.Error()
	if what != "" {
		msg = what + ": " + msg
	}
	return &Error{Kind: classify(err), Msg: msg, Err: err}
}

// classify maps errdefs classes (the runtime's, and the store's, whose
// error types carry the same method sets) to a Kind.
func classify(err error) Kind {
	switch {
	case errors.Is(err, context.Canceled):
		return KindInterrupted
	case errdefs.IsUnavailable(err), errors.Is(err, context.DeadlineExceeded):
		return KindUnavailable
	case errdefs.IsNotFound(err):
		return KindNotFound
	case errdefs.IsAlreadyExists(err):
		return KindExists
	case errdefs.IsFailedPrecondition(err), errdefs.IsConflict(err):
		return KindBusy
	case errdefs.IsInvalidArgument(err):
		return KindInvalid
	case errdefs.IsPermissionDenied(err):
		return KindPermission
	}
	return KindInternal
}

// KindOf tells the kind of any error control returns.
func KindOf(err error) Kind {
	var ce *Error
	if errors.As(err, &ce) {
		return ce.Kind
	}
	return classify(err)
}
