package charla

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Code is a protocol error code: the value of an error frame's "code", a Go
// error (through Error) and a metric label, all at once.
type Code string

// The error codes of docs/PROTOCOL.md. Clients may branch on these values; the
// message text that comes with them is for people and may change.
const (
	CodeBadRequest   Code = "bad_request"
	CodeUnauthorized Code = "unauthorized"
	CodeForbidden    Code = "forbidden"
	CodeNotFound     Code = "not_found"
	CodeRateLimited  Code = "rate_limited"
	CodeTooLarge     Code = "too_large"
	CodeUnavailable  Code = "unavailable"
	CodeInternal     Code = "internal"
)

// Error is a protocol error: it becomes an error frame on the wire.
type Error struct {
	Code    Code
	Message string
	// RetryAfter, when positive, is how long the client should wait before
	// trying again: a rate_limited refusal knows when its bucket has a token
	// back, and says so (retry_after_ms on the wire, Retry-After over HTTP)
	// so that a client backs off exactly as long as it must.
	RetryAfter time.Duration
}

func (e *Error) Error() string { return string(e.Code) + ": " + e.Message }

// Errorf builds an *Error with a formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError turns any error into the protocol error a client should see: a
// wrapped *Error keeps its code, anything else is "internal" with a generic
// message, so that internals never leak onto the wire.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: "internal error"}
}

// Disconnect is why the engine closed a connection: at once the WebSocket close
// frame (Code, Reason), an error, and a metric label (Label).
type Disconnect struct {
	Code   uint16
	Reason string
}

func (d Disconnect) Error() string { return fmt.Sprintf("disconnect %d: %s", d.Code, d.Reason) }

// Label is a short stable name for metrics and logs: the reason in
// snake_case ("slow_consumer"), distinct for every value below.
func (d Disconnect) Label() string { return strings.ReplaceAll(d.Reason, " ", "_") }

// The close codes of docs/PROTOCOL.md. Two of them share 4008: clients handle them
// alike (reconnect), the reason tells people which it was.
var (
	DisconnectNormal           = Disconnect{1000, "normal"}
	DisconnectGoingAway        = Disconnect{1001, "going away"}
	DisconnectFrameTooLarge    = Disconnect{1009, "frame too large"}
	DisconnectInternal         = Disconnect{1011, "internal error"}
	DisconnectServiceRestart   = Disconnect{1012, "service restart"}
	DisconnectTokenExpired     = Disconnect{4001, "token expired"}
	DisconnectForbidden        = Disconnect{4003, "forbidden"}
	DisconnectSlowConsumer     = Disconnect{4008, "slow consumer"}
	DisconnectHeartbeatTimeout = Disconnect{4008, "heartbeat timeout"}
	DisconnectRateLimited      = Disconnect{4029, "rate limited"}
	// DisconnectClientClosed is never sent: it labels the connections that
	// the client ended (or that broke) rather than the engine.
	DisconnectClientClosed = Disconnect{1000, "client closed"}
)
