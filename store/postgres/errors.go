package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5/pgconn"

	"charla/store"
)

// Kind sorts failures by what the caller should do about them: spool and trip
// the breaker (Unavailable), reject the request (Invalid), repair the sequence
// (Conflict), give up quietly (Canceled, Closed), log loudly (Internal), or
// let the shard go to its new owner (Fenced).
// The engine's store actor does not read it: it branches with errors.Is on
// store.ErrUnavailable and store.ErrInvalid, which *Error matches by Kind.
type Kind uint8

// The kinds of Error.
const (
	// KindInternal is a failure that is nobody's input and no outage: a bug,
	// a schema that does not match the code. Not retried.
	KindInternal Kind = iota
	// KindUnavailable means the database could not serve the request: it is
	// unreachable, restarting, overloaded, timed out, or refuses our
	// credentials. The request itself is fine: spool it and try later.
	KindUnavailable
	// KindInvalid means the database rejected the request's content (a body
	// that is not JSON, an empty id, a value out of range). Retrying or
	// spooling it can never succeed.
	KindInvalid
	// KindConflict is AppendSequenced finding a seq already taken by a
	// different message: the engine's sequence and the database's diverged.
	KindConflict
	// KindCanceled means the caller's context ended first.
	KindCanceled
	// KindClosed means the Store was closed.
	KindClosed
	// KindFenced means a fenced store (WithFence) refused a write because
	// this node no longer holds a shard the write touches (a
	// *store.FencedError): another node owns those conversations now.
	// Neither retried nor unavailable: spooling it or trying it again here
	// can never succeed.
	KindFenced
)

// String names the kind in logs and metric labels.
func (k Kind) String() string {
	switch k {
	case KindUnavailable:
		return "unavailable"
	case KindInvalid:
		return "invalid"
	case KindConflict:
		return "conflict"
	case KindCanceled:
		return "canceled"
	case KindClosed:
		return "closed"
	case KindFenced:
		return "fenced"
	default:
		return "internal"
	}
}

// Sentinels for errors.Is, matched by every *Error of the corresponding
// Kind; callers need not know the Error type at all. KindUnavailable and
// KindInvalid match store.ErrUnavailable and store.ErrInvalid, which every
// store shares.
var (
	// ErrConflict: a sequenced message collides with a different stored one.
	ErrConflict = errors.New("postgres: sequence conflict")
	// ErrSchemaOutdated: the database's schema is older than this binary;
	// run the migrations (charla migrate, or Options.AutoMigrate).
	ErrSchemaOutdated = errors.New("postgres: schema outdated")
)

// Error is what every Store operation returns on failure. It says which
// operation failed, what kind of failure it was, whether it was of a
// retryable class (and so was retried Attempts-1 times before giving up), and
// the SQLSTATE when the server reported one.
type Error struct {
	// Op is the operation: "append", "range", "head", ...
	Op string
	// Kind says what the caller should do about it.
	Kind Kind
	// Retryable is true when the failure is transient by nature (connection
	// lost, server restarting, deadlock...): the store retried it and a later
	// call may succeed.
	Retryable bool
	// Attempts is how many attempts were made.
	Attempts int
	// Code is the SQLSTATE the server reported, "" when there was none.
	Code string
	// Err is the underlying error.
	Err error
}

// Error reads "postgres: <op>: <kind>[ after N attempts]: <cause>", so a log
// line alone tells what failed, why, and whether it was retried.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("postgres: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Kind.String())
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " after %d attempts", e.Attempts)
	}
	b.WriteString(": ")
	if e.Err != nil {
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the underlying error (pgconn.PgError, context errors,
// store.ErrClosed, ...).
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, store.ErrUnavailable) and friends work on any
// *Error.
func (e *Error) Is(target error) bool {
	switch target {
	case store.ErrUnavailable:
		return e.Kind == KindUnavailable
	case store.ErrInvalid:
		return e.Kind == KindInvalid
	case ErrConflict:
		return e.Kind == KindConflict
	case store.ErrFenced:
		return e.Kind == KindFenced
	}
	return false
}

// IsRetryable reports whether err is a transient database failure, one that
// a later attempt may not meet. The store already retried it with backoff;
// callers use this to decide between "try again later / spool" and "give up".
func IsRetryable(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Retryable
}

// IsUnavailable reports whether err means the database could not serve the
// request (as opposed to the request being bad): the store actor's signal to
// open its breaker and spool.
func IsUnavailable(err error) bool { return errors.Is(err, store.ErrUnavailable) }

// retryHint wraps an error an operation knows to be retryable although its
// SQLSTATE alone would not say so (a unique-key race in Append).
type retryHint struct{ err error }

func (r retryHint) Error() string { return r.err.Error() }
func (r retryHint) Unwrap() error { return r.err }

// classify sorts an attempt's error. timedOut says the attempt's own deadline
// (QueryTimeout) expired while the caller's context was still alive.
func classify(err error, timedOut bool) (kind Kind, retryable bool, code string) {
	var hint retryHint
	if errors.As(err, &hint) {
		_, _, code = classify(hint.err, false)
		return KindUnavailable, true, code
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		kind, retryable = classifySQLState(pgErr.Code)
		return kind, retryable, pgErr.Code
	}
	if errors.Is(err, store.ErrClosed) {
		return KindClosed, false, ""
	}
	if timedOut || pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return KindUnavailable, true, ""
	}
	if pgconn.SafeToRetry(err) {
		return KindUnavailable, true, ""
	}
	var connectErr *pgconn.ConnectError
	var netErr net.Error
	switch {
	case errors.As(err, &connectErr),
		errors.As(err, &netErr),
		errors.Is(err, pgconn.ErrConnClosed),
		errors.Is(err, io.EOF),
		errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.ECONNREFUSED),
		errors.Is(err, syscall.ECONNABORTED),
		errors.Is(err, syscall.EPIPE),
		errors.Is(err, syscall.ETIMEDOUT),
		errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH):
		return KindUnavailable, true, ""
	}
	return KindInternal, false, ""
}

// classifySQLState maps a server error code to a Kind. Only failures that
// come from the server's state rather than the request's content are
// retryable; constraint, data and syntax errors never are, since they would
// fail the same way every time.
func classifySQLState(code string) (Kind, bool) {
	switch code {
	case "40001", // serialization_failure
		"40P01", // deadlock_detected
		"55P03", // lock_not_available
		"57014", // query_canceled (server statement_timeout)
		"57P01", // admin_shutdown
		"57P02", // crash_shutdown
		"57P03", // cannot_connect_now (starting up, in recovery)
		"57P05": // idle_session_timeout
		return KindUnavailable, true
	}
	if len(code) != 5 {
		return KindInternal, false
	}
	switch code[:2] {
	case "08", // connection_exception
		"53": // insufficient_resources (too many connections, out of memory, disk full)
		return KindUnavailable, true
	case "28", // invalid_authorization_specification: a configuration problem
		"3D": // invalid_catalog_name: the database does not exist
		return KindUnavailable, false
	case "22", // data_exception (invalid JSON, NUL bytes, out of range)
		"23": // integrity_constraint_violation
		return KindInvalid, false
	}
	return KindInternal, false
}
