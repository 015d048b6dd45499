package transport

import (
	"net/http"
	"strconv"

	"charla"
)

// Problem is the body of every REST error answer (the HTTP APIs beside the
// WebSocket: history, read cursors, long-polling):
// {"error":{"code":"forbidden","message":"…"}}. Clients branch on Code, the
// protocol's error code, and on the HTTP status, which follows from it
// (ProblemStatus).
type Problem struct {
	Error ProblemDetail `json:"error"`
}

// ProblemDetail is a Problem's error object.
type ProblemDetail struct {
	Code    charla.Code `json:"code"`
	Message string      `json:"message"`
	// RetryAfterMS is set with rate_limited (and mirrored in Retry-After).
	RetryAfterMS int64 `json:"retry_after_ms,omitempty"`
}

// ProblemStatus is the HTTP status of a protocol error code: one table, so
// that every REST endpoint answers a given code with the same status.
func ProblemStatus(code charla.Code) int {
	switch code {
	case charla.CodeBadRequest:
		return http.StatusBadRequest
	case charla.CodeUnauthorized:
		return http.StatusUnauthorized
	case charla.CodeForbidden:
		return http.StatusForbidden
	case charla.CodeNotFound:
		return http.StatusNotFound
	case charla.CodeRateLimited:
		return http.StatusTooManyRequests
	case charla.CodeTooLarge:
		return http.StatusRequestEntityTooLarge
	case charla.CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

// writeProblem answers a REST request with e as a Problem, with the status
// ProblemStatus gives its code. Internal errors never carry their cause:
// charla.AsError already replaced it with a generic message.
func writeProblem(w http.ResponseWriter, e *charla.Error) {
	writeProblemRetry(w, e, 0)
}

// writeProblemRetry is writeProblem with a retry hint (rate_limited,
// unavailable): retry_after_ms in the body and Retry-After (whole seconds,
// rounded up) in the headers.
func writeProblemRetry(w http.ResponseWriter, e *charla.Error, retryAfterMS int64) {
	if retryAfterMS > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((retryAfterMS+999)/1000, 10))
	}
	writeJSON(w, ProblemStatus(e.Code), Problem{Error: ProblemDetail{Code: e.Code, Message: e.Message, RetryAfterMS: retryAfterMS}})
}
