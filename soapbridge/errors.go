package soapbridge

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"

	"charla/soapbridge/internal/soapwire"
)

// Kind sorts failures by what the soap actor should do about them: retry
// and count towards the breaker (KindTransport, KindServerFault), answer the
// user that the request is wrong (KindClientFault), or log loudly and give up
// (KindMalformed, KindTooLarge). Retryable is the one-line version.
type Kind uint8

// The kinds of Error.
const (
	// KindTransport means no usable answer arrived: connection refused or
	// reset, a timeout (the context deadline or the http.Client's), or an
	// HTTP 5xx (or 429, 408) without a SOAP fault in it. Retryable.
	KindTransport Kind = iota + 1
	// KindServerFault is a SOAP fault whose faultcode is Server (or one the
	// client does not know): the service failed to process a request that
	// may well be fine. Retryable.
	KindServerFault
	// KindClientFault is a SOAP fault whose faultcode is Client,
	// VersionMismatch or MustUnderstand, or a request the client refused to
	// send (an empty SKU): the same request would fail again. Not retryable.
	// Fault.Reason (and ErrUnknownSKU, ErrInsufficientStock) tell which rule
	// it broke.
	KindClientFault
	// KindMalformed means an answer arrived but is not one the client
	// understands: broken XML, not a SOAP envelope, an unexpected element,
	// a missing or out-of-range field, or an HTTP status other than 2xx/5xx
	// with no fault. Not retryable: a service that answers garbage usually
	// answers the same garbage again, and retrying it would hide a contract
	// problem someone must look at. (A simulator's random malformed answers
	// are the exception, not the rule to design for.)
	KindMalformed
	// KindTooLarge means the answer exceeded Options.MaxResponseBytes. Not
	// retryable, for the same reason as KindMalformed.
	KindTooLarge
	// KindCanceled means the caller's context was canceled (not timed out)
	// before an answer arrived: nobody wants the answer any more. Not
	// retryable.
	KindCanceled
)

// String names the kind in logs and metric labels.
func (k Kind) String() string {
	switch k {
	case KindTransport:
		return "transport"
	case KindServerFault:
		return "server_fault"
	case KindClientFault:
		return "client_fault"
	case KindMalformed:
		return "malformed"
	case KindTooLarge:
		return "too_large"
	case KindCanceled:
		return "canceled"
	default:
		return "unknown"
	}
}

// Sentinels for errors.Is, matched by every *Error of the corresponding kind
// or fault reason, so that callers need not know the Error type.
var (
	// ErrTransport: no usable answer arrived (KindTransport).
	ErrTransport = errors.New("soapbridge: transport failure")
	// ErrServerFault: the service answered with a Server fault.
	ErrServerFault = errors.New("soapbridge: server fault")
	// ErrClientFault: the request is wrong (KindClientFault).
	ErrClientFault = errors.New("soapbridge: client fault")
	// ErrMalformed: the answer is not one the client understands.
	ErrMalformed = errors.New("soapbridge: malformed response")
	// ErrTooLarge: the answer exceeded Options.MaxResponseBytes.
	ErrTooLarge = errors.New("soapbridge: response too large")
	// ErrUnknownSKU: a client fault whose reason is ReasonUnknownSKU.
	ErrUnknownSKU = errors.New("soapbridge: unknown SKU")
	// ErrInsufficientStock: a client fault whose reason is
	// ReasonInsufficientStock.
	ErrInsufficientStock = errors.New("soapbridge: insufficient stock")
)

// Fault reasons: the code an InventoryFault detail carries, which says what
// exactly was wrong beyond the Client/Server faultcode. New reasons may
// appear; callers should treat an unknown one by its Kind.
const (
	ReasonUnknownSKU          = soapwire.ReasonUnknownSKU
	ReasonInsufficientStock   = soapwire.ReasonInsufficientStock
	ReasonInvalidRequest      = soapwire.ReasonInvalidRequest
	ReasonReservationConflict = soapwire.ReasonReservationConflict
	ReasonInternal            = soapwire.ReasonInternal
)

// Fault is a SOAP 1.1 fault as the service sent it. It is the Err of an
// *Error of kind KindClientFault or KindServerFault, so errors.As(err,
// &fault) finds it.
type Fault struct {
	// Code is the faultcode as sent, e.g. "soap:Client".
	Code string
	// String is the faultstring, for people.
	String string
	// Actor is the faultactor, usually empty.
	Actor string
	// Reason is the InventoryFault detail's code (ReasonUnknownSKU, ...),
	// "" when the fault had none.
	Reason string
	// Message is the InventoryFault detail's message.
	Message string
	// Detail is the raw XML inside the detail element, "" when absent.
	Detail string
}

// Error reads "soap fault <code>[ (<reason>)]: <faultstring>".
func (f *Fault) Error() string {
	var b strings.Builder
	b.WriteString("soap fault ")
	b.WriteString(f.Code)
	if f.Reason != "" {
		b.WriteString(" (")
		b.WriteString(f.Reason)
		b.WriteString(")")
	}
	b.WriteString(": ")
	b.WriteString(f.String)
	return b.String()
}

// kind sorts the fault by its faultcode: a QName in the envelope namespace
// whose local part may be refined with dots ("Client.Authentication").
// Prefixes are not resolved: every service seen in practice uses the SOAP 1.1
// names, and an unknown code is taken for a Server fault, the retryable side,
// since it says nothing against the request.
func (f *Fault) kind() Kind {
	code := f.Code
	if i := strings.LastIndexByte(code, ':'); i >= 0 {
		code = code[i+1:]
	}
	if i := strings.IndexByte(code, '.'); i >= 0 {
		code = code[:i]
	}
	switch code {
	case "Client", "VersionMismatch", "MustUnderstand":
		return KindClientFault
	default:
		return KindServerFault
	}
}

// Error is what every Client operation returns on failure: which operation,
// what kind of failure, the HTTP status when a response arrived, and the
// cause (a *Fault for SOAP faults).
type Error struct {
	// Op is the operation: OpGetStock, OpSearchProducts or OpReserveItem.
	Op string
	// Kind says what the caller should do about it.
	Kind Kind
	// StatusCode is the HTTP status of the response, 0 when none arrived.
	StatusCode int
	// Timeout is true when the failure is a timeout (the context deadline
	// or the http.Client's), for the "SOAP timeouts" metric.
	Timeout bool
	// Fault is the SOAP fault, nil unless Kind is KindClientFault or
	// KindServerFault and the service sent one.
	Fault *Fault
	// Err is the underlying error (the *Fault itself for faults).
	Err error
}

// Error reads "soapbridge: <op>: <kind>[ (HTTP <status>)]: <cause>", so a log
// line alone tells what failed and why.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("soapbridge: ")
	b.WriteString(e.Op)
	b.WriteString(": ")
	b.WriteString(e.Kind.String())
	if e.StatusCode != 0 {
		b.WriteString(" (HTTP ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		b.WriteString(")")
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the cause: the *Fault, a context error, a net error...
func (e *Error) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrTransport) and friends work on any *Error.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrTransport:
		return e.Kind == KindTransport
	case ErrServerFault:
		return e.Kind == KindServerFault
	case ErrClientFault:
		return e.Kind == KindClientFault
	case ErrMalformed:
		return e.Kind == KindMalformed
	case ErrTooLarge:
		return e.Kind == KindTooLarge
	case ErrUnknownSKU:
		return e.Fault != nil && e.Fault.Reason == ReasonUnknownSKU
	case ErrInsufficientStock:
		return e.Fault != nil && e.Fault.Reason == ReasonInsufficientStock
	}
	return false
}

// Retryable reports whether a later attempt of the same request may succeed:
// transport failures (timeouts, resets, refused connections, 5xx without a
// fault) and Server faults. Client faults, malformed or too large answers,
// cancellation and errors that are not an *Error are not retryable.
func Retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Kind == KindTransport || e.Kind == KindServerFault
}

// KindOf returns the Kind of err, 0 when err is not (or does not wrap) an
// *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// transportError sorts an error from sending the request or reading the
// response, given the caller's context. A canceled context wins over
// whatever the network said, since that is why the network failed.
func transportError(ctx context.Context, op string, status int, err error) *Error {
	e := &Error{Op: op, Kind: KindTransport, StatusCode: status, Err: err}
	switch {
	case errors.Is(ctx.Err(), context.Canceled):
		e.Kind = KindCanceled
	case errors.Is(ctx.Err(), context.DeadlineExceeded), errors.Is(err, context.DeadlineExceeded):
		e.Timeout = true
	default:
		var netErr net.Error
		if errors.As(err, &netErr) && netErr.Timeout() {
			e.Timeout = true
		}
	}
	return e
}
