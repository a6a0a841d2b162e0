package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// NotFoundError: the bot, snapshot or record does not exist.
type NotFoundError struct{ msg string }

func (e *NotFoundError) Error() string { return e.msg }
func (*NotFoundError) NotFound()       {}

// AlreadyExistsError: a unique name is taken.
type AlreadyExistsError struct{ msg string }

func (e *AlreadyExistsError) Error() string { return e.msg }
func (*AlreadyExistsError) AlreadyExists()  {}

// InvalidError: the input breaks a rule of the schema.
type InvalidError struct{ msg string }

func (e *InvalidError) Error() string   { return e.msg }
func (*InvalidError) InvalidParameter() {}

// UnavailableError: Postgres cannot be reached (or is shutting down).
type UnavailableError struct {
	msg string
	err error
}

func (e *UnavailableError) Error() string { return e.msg }
func (e *UnavailableError) Unwrap() error { return e.err }
func (*UnavailableError) Unavailable()    {}

func notFound(format string, args ...any) error {
	return &NotFoundError{msg: fmt.Sprintf(format, args...) + ": not found"}
}

// IsNotFound and friends classify store errors for callers that do not use
// errdefs.
func IsNotFound(err error) bool      { var e *NotFoundError; return errors.As(err, &e) }
func IsAlreadyExists(err error) bool { var e *AlreadyExistsError; return errors.As(err, &e) }
func IsInvalid(err error) bool       { var e *InvalidError; return errors.As(err, &e) }
func IsUnavailable(err error) bool   { var e *UnavailableError; return errors.As(err, &e) }

// classify turns a pgx error into a store error kind; what describes the
// operation for the message.
func classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return notFound("%s", what)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		// A deadline on a healthy server is the caller's; on a dead one
		// the dial error below says so.
		if !isConnError(err) {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		msg := fmt.Sprintf("%s: %s", what, pgErr.Message)
		switch {
		case pgErr.Code == "23505": // unique_violation
			return &AlreadyExistsError{msg: msg + ": already exists"}
		case pgErr.Code == "23503": // foreign_key_violation
			return &NotFoundError{msg: msg + ": not found"}
		case pgErr.Code == "23514", pgErr.Code == "23502", pgErr.Code[:2] == "22": // check, not null, data exception
			return &InvalidError{msg: msg + ": invalid"}
		case pgErr.Code[:2] == "08", pgErr.Code == "57P01", pgErr.Code == "57P02", pgErr.Code == "57P03", pgErr.Code == "53300":
			return &UnavailableError{msg: msg + ": database unavailable", err: err}
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	if isConnError(err) {
		return &UnavailableError{msg: fmt.Sprintf("%s: database unavailable: %v", what, err), err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

func isConnError(err error) bool {
	var ce *pgconn.ConnectError
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.As(err, &ce), errors.As(err, &oe), errors.As(err, &ne):
		return true
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ENOENT):
		return true
	case pgconn.SafeToRetry(err), pgconn.Timeout(err):
		return true
	}
	return false
}
