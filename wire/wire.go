// Package wire is the JSON encoding of protocol v1 (docs/PROTOCOL.md): the
// frames clients send, the frames the engine sends, and the batching rule
// (several server objects in one WebSocket frame, separated by '\n').
// It sits below the core: the actors encode frames once for every
// subscriber, the transports decode them, and the bench clients and tests
// decode server frames with the same code.
package wire

import (
	"bytes"
	"encoding/json"
	"time"

	"charla"
	"charla/soapbridge"
)

// Frame types, both directions.
const (
	TypeWelcome      = "welcome"
	TypeSubscribe    = "subscribe"
	TypeSubscribed   = "subscribed"
	TypeUnsubscribe  = "unsubscribe"
	TypeUnsubscribed = "unsubscribed"
	TypeSend         = "send"
	TypeAck          = "ack"
	TypeMsg          = "msg"
	TypePing         = "ping"
	TypePong         = "pong"
	TypeTyping       = "typing"
	TypeRead         = "read"
	TypeError        = "error"
	TypeInventory    = "inventory"
	TypeJob          = "job"
	TypePresence     = "presence"
	TypeConversation = "conversation"
	TypeReserve      = "reserve"
	TypeReserved     = "reserved"
	TypeInvalidate   = "invalidate"
	TypeInvalidated  = "invalidated"
)

// FrameTypes lists every frame type, both directions: the engine counts
// frames by these (its frames_* metrics); a type missing here is counted
// as "other". Add a new type here too.
var FrameTypes = [...]string{
	TypeWelcome, TypeSubscribe, TypeSubscribed, TypeUnsubscribe, TypeUnsubscribed,
	TypeSend, TypeAck, TypeMsg, TypePing, TypePong, TypeTyping, TypeRead, TypeError,
	TypeInventory, TypeJob, TypePresence, TypeConversation, TypeReserve, TypeReserved,
	TypeInvalidate, TypeInvalidated, TypeAlert,
}

// TypeOf returns the type of a frame Encode made, read from its first
// field (every frame type's struct starts with Type) without decoding or
// copying it: the result is part of frame; nil when frame does not start so.
func TypeOf(frame []byte) []byte {
	const prefix = `{"type":"`
	if !bytes.HasPrefix(frame, []byte(prefix)) {
		return nil
	}
	rest := frame[len(prefix):]
	end := bytes.IndexByte(rest, '"')
	if end < 0 {
		return nil
	}
	return rest[:end]
}

// The states of a job, in the order a job goes through them; done and
// failed are final.
const (
	JobQueued   = "queued"
	JobRunning  = "running"
	JobRetrying = "retrying"
	JobDone     = "done"
	JobFailed   = "failed"
)

// Frame is every field any frame may carry, in either direction. The engine
// decodes client frames into it; clients (bench, tests) decode server frames
// into it. Unknown fields are ignored, as the protocol requires.
type Frame struct {
	Type        string          `json:"type"`
	Ref         string          `json:"ref,omitempty"`
	Conv        charla.ConvID   `json:"conv,omitempty"`
	Since       charla.Seq      `json:"since,omitempty"`
	Head        charla.Seq      `json:"head,omitempty"`
	Seq         charla.Seq      `json:"seq,omitempty"`
	ClientMsgID string          `json:"client_msg_id,omitempty"`
	Body        json.RawMessage `json:"body,omitempty"`
	Sender      *charla.Sender  `json:"sender,omitempty"`
	TS          time.Time       `json:"ts,omitzero"`
	Duplicate   bool            `json:"duplicate,omitempty"`
	// T is the client clock of a ping, echoed verbatim in the pong.
	T          json.RawMessage `json:"t,omitempty"`
	ServerTime time.Time       `json:"server_time,omitzero"`
	State      string          `json:"state,omitempty"`
	User       string          `json:"user,omitempty"`
	Role       charla.Role     `json:"role,omitempty"`
	ConnID     string          `json:"conn_id,omitempty"`
	Heartbeat  int64           `json:"heartbeat_ms,omitempty"`
	Timeout    int64           `json:"timeout_ms,omitempty"`
	Code       charla.Code     `json:"code,omitempty"`
	Message    string          `json:"message,omitempty"`
	RetryAfter int64           `json:"retry_after_ms,omitempty"`
	SKU        string          `json:"sku,omitempty"`
	// Quantity and ReservationID are a reserve request's; JobID names the
	// job a job request asks about.
	Quantity      int    `json:"quantity,omitempty"`
	ReservationID string `json:"reservation_id,omitempty"`
	JobID         string `json:"job_id,omitempty"`
	// Server side of the inventory frames (Inventory, Reserved, Job).
	Item        *soapbridge.Item        `json:"item,omitempty"`
	Stale       bool                    `json:"stale,omitempty"`
	AgeMS       int64                   `json:"age_ms,omitempty"`
	Reservation *soapbridge.Reservation `json:"reservation,omitempty"`
	Op          string                  `json:"op,omitempty"`
	Attempt     int                     `json:"attempt,omitempty"`
	Result      json.RawMessage         `json:"result,omitempty"`
	JobError    *JobError               `json:"error,omitempty"`
	// Server side of wa_status (whatsapp.go; Seq, ClientMsgID and TS above)
	// and of the workflow frames (Conversation, Inbox; workflow.go): Status
	// is either's.
	Status     string `json:"status,omitempty"`
	WAMID      string `json:"wamid,omitempty"`
	ErrorCode  int    `json:"error_code,omitempty"`
	ErrorTitle string `json:"error_title,omitempty"`
	// Server side of the alert frame (alert.go), as far as clients branch
	// on it.
	Rule         string   `json:"rule,omitempty"`
	Severity     string   `json:"severity,omitempty"`
	DisabledFlag string   `json:"disabled_flag,omitempty"`
	Assignee     string   `json:"assignee,omitempty"`
	Unread       uint64   `json:"unread,omitempty"`
	Version      uint64   `json:"version,omitempty"`
	Tags         []string `json:"tags,omitempty"`
}

// Decode parses one client frame. A frame that is not a JSON object, or
// has no type, is a bad_request; the ref is recovered when possible so that
// the error can answer the request.
func Decode(data []byte) (Frame, error) {
	var f Frame
	if err := json.Unmarshal(data, &f); err != nil {
		return f, charla.Errorf(charla.CodeBadRequest, "frame is not a valid JSON object: %v", err)
	}
	if f.Type == "" {
		return f, charla.Errorf(charla.CodeBadRequest, `frame has no "type"`)
	}
	return f, nil
}

// Split returns the JSON objects of one server WebSocket frame: one, or
// several separated by '\n' when the engine batched them.
func Split(data []byte) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		if i < 0 {
			out = append(out, data)
			break
		}
		if i > 0 {
			out = append(out, data[:i])
		}
		data = data[i+1:]
	}
	return out
}

// Welcome is the first frame of every connection.
type Welcome struct {
	Type       string      `json:"type"`
	ConnID     string      `json:"conn_id"`
	User       string      `json:"user"`
	Role       charla.Role `json:"role"`
	Heartbeat  int64       `json:"heartbeat_ms"`
	Timeout    int64       `json:"timeout_ms"`
	ServerTime time.Time   `json:"server_time"`
}

// Subscribed answers subscribe; Head is the highest seq at that moment, and
// every msg with seq in (since, Head] follows it before any later one.
type Subscribed struct {
	Type string        `json:"type"`
	Ref  string        `json:"ref,omitempty"`
	Conv charla.ConvID `json:"conv"`
	Head charla.Seq    `json:"head"`
	// Since is where delivery resumes: the since of the subscribe, or the
	// head when the subscribe asked for more than the conversation holds
	// (the client then drops what it kept beyond it).
	Since charla.Seq `json:"since"`
}

// Unsubscribed answers unsubscribe.
type Unsubscribed struct {
	Type string        `json:"type"`
	Ref  string        `json:"ref,omitempty"`
	Conv charla.ConvID `json:"conv"`
}

// Ack answers send once the message is durable.
type Ack struct {
	Type        string        `json:"type"`
	Ref         string        `json:"ref,omitempty"`
	Conv        charla.ConvID `json:"conv"`
	ClientMsgID string        `json:"client_msg_id"`
	Seq         charla.Seq    `json:"seq"`
	TS          time.Time     `json:"ts"`
	Duplicate   bool          `json:"duplicate,omitempty"`
}

// Msg delivers one stored message.
type Msg struct {
	Type string `json:"type"`
	charla.Message
}

// Pong answers ping.
type Pong struct {
	Type       string          `json:"type"`
	Ref        string          `json:"ref,omitempty"`
	T          json.RawMessage `json:"t,omitempty"`
	ServerTime time.Time       `json:"server_time"`
}

// Typing relays a typing indicator; never stored.
type Typing struct {
	Type  string        `json:"type"`
	Conv  charla.ConvID `json:"conv"`
	User  string        `json:"user"`
	State string        `json:"state"`
}

// Read relays a read cursor.
type Read struct {
	Type string        `json:"type"`
	Conv charla.ConvID `json:"conv"`
	User string        `json:"user"`
	Seq  charla.Seq    `json:"seq"`
}

// Error answers a request that failed, or reports a problem with no request.
type Error struct {
	Type    string      `json:"type"`
	Ref     string      `json:"ref,omitempty"`
	Code    charla.Code `json:"code"`
	Message string      `json:"message"`
	// RetryAfter is the protocol's retry_after_ms: set on rate_limited
	// refusals (from charla.Error.RetryAfter) and on the inventory bridge's
	// unavailable answers (a full queue, an open breaker), when trying
	// again sooner is pointless.
	RetryAfter int64 `json:"retry_after_ms,omitempty"`
}

// Inventory answers an inventory request with one item: fresh from the
// cache or the service, or (Stale) the last known value, AgeMS old, when
// the service is failing or its breaker is open.
type Inventory struct {
	Type  string          `json:"type"`
	Ref   string          `json:"ref,omitempty"`
	SKU   string          `json:"sku"`
	Item  soapbridge.Item `json:"item"`
	Stale bool            `json:"stale"`
	AgeMS int64           `json:"age_ms"`
}

// Reserved answers a reserve request once the service made the
// reservation.
type Reserved struct {
	Type        string                 `json:"type"`
	Ref         string                 `json:"ref,omitempty"`
	SKU         string                 `json:"sku"`
	Reservation soapbridge.Reservation `json:"reservation"`
}

// Invalidated answers an invalidate request: the SKU's next inventory
// request asks the service.
type Invalidated struct {
	Type string `json:"type"`
	Ref  string `json:"ref,omitempty"`
	SKU  string `json:"sku"`
}

// Job reports a slow inventory or reserve request's progress, and answers a
// job request with the job's current state. Op is the request's type
// (inventory or reserve). Result, on done, is what the request would have
// answered at once: an Inventory or a Reserved frame's fields without type
// and ref. Error, on failed, is what an error frame would have said.
type Job struct {
	Type    string          `json:"type"`
	Ref     string          `json:"ref,omitempty"`
	JobID   string          `json:"job_id"`
	Op      string          `json:"op"`
	SKU     string          `json:"sku"`
	State   string          `json:"state"`
	Attempt int             `json:"attempt,omitempty"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *JobError       `json:"error,omitempty"`
}

// JobError is why a job failed, with the codes of error frames.
type JobError struct {
	Code       charla.Code `json:"code"`
	Message    string      `json:"message"`
	RetryAfter int64       `json:"retry_after_ms,omitempty"`
}

// ErrorFrame builds the error frame for err answering the request ref.
func ErrorFrame(ref string, err *charla.Error) Error {
	return Error{Type: TypeError, Ref: ref, Code: err.Code, Message: err.Message, RetryAfter: RetryAfterMillis(err.RetryAfter)}
}

// RetryAfterMillis is d in whole milliseconds, rounded up: a client that
// waits exactly that long finds its token back, never a moment too early.
// Zero and negative durations are 0 (no retry_after_ms on the wire).
func RetryAfterMillis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// Encode marshals a server frame. The frame types here cannot fail to
// marshal (no channels, funcs or invalid raw JSON reach them: bodies are
// validated on the way in), so a failure is a programming error.
func Encode(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic("wire: encode: " + err.Error())
	}
	return b
}
