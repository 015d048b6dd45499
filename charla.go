// Package charla holds the domain every other package speaks: conversations,
// messages, senders, roles, protocol error codes and close codes. It depends on
// nothing but the standard library, so that actors, transport, store and bench
// can all share it without depending on each other.
package charla

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"
)

// ConvID names a conversation. It is opaque to the engine: 1 to 128 bytes of
// letters, digits and "-_.:@+". Clients may rely on the engine accepting any
// such string and on the same ID always naming the same conversation.
type ConvID string

// MaxConvIDLen is the longest conversation ID the engine accepts.
const MaxConvIDLen = 128

// Validate reports whether c is a well-formed conversation ID.
func (c ConvID) Validate() error {
	if c == "" {
		return Errorf(CodeBadRequest, "conv is required")
	}
	if len(c) > MaxConvIDLen {
		return Errorf(CodeBadRequest, "conv is longer than %d bytes", MaxConvIDLen)
	}
	for i := 0; i < len(c); i++ {
		b := c[i]
		switch {
		case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		case strings.IndexByte("-_.:@+", b) >= 0:
		default:
			return Errorf(CodeBadRequest, "conv has a character outside [A-Za-z0-9-_.:@+]")
		}
	}
	return nil
}

// Seq is a message's position in its conversation: the first accepted message
// is 1 and each accepted message adds exactly 1, so a client that has seen seq N
// has seen every message up to N.
type Seq uint64

// Role is what a user is allowed to do.
type Role string

// The roles of PROTOCOL.md.
const (
	RoleCustomer Role = "customer"
	RoleAgent    Role = "agent"
	RoleAdmin    Role = "admin"
	// RoleBot is the chatbot's: only the engine posts as it (through
	// actors.System.Post); no token may carry it, so Valid refuses it.
	RoleBot Role = "bot"
)

// Valid reports whether r is a role a client may authenticate as.
func (r Role) Valid() bool {
	return r == RoleCustomer || r == RoleAgent || r == RoleAdmin
}

// Sender identifies who wrote a message. Clients may rely on ID being the
// authenticated user id (the JWT's sub) and never a client-supplied value.
type Sender struct {
	ID   string `json:"id"`
	Role Role   `json:"role"`
}

// CanAccess reports whether s may read and write conversation c. Agents and
// admins serve every conversation; a customer only the ones they own (see
// ConvID.Owner): "<user id>" and "<user id>:<anything>". User ids never
// contain ':' (ValidateUserID), so no customer's namespace overlaps another's.
func (s Sender) CanAccess(c ConvID) bool {
	if s.Role == RoleAgent || s.Role == RoleAdmin {
		return true
	}
	return c.Owner() == s.ID
}

// WhatsAppConv is the one conversation of WhatsApp user waID with the
// business number phoneNumberID (both digits as the Cloud API gives them).
// Its owner (see Owner) is "wa." + waID: a customer token for that user id
// may read it, and no web customer id collides with it by accident.
func WhatsAppConv(phoneNumberID, waID string) ConvID {
	return ConvID("wa." + waID + ":" + phoneNumberID)
}

// WhatsApp reports whether c is a WhatsApp conversation (see WhatsAppConv)
// and returns its customer's wa_id and business phone number id.
func (c ConvID) WhatsApp() (waID, phoneNumberID string, ok bool) {
	owner, phone, found := strings.Cut(string(c), ":")
	waID, isWA := strings.CutPrefix(owner, "wa.")
	if !found || !isWA || waID == "" || phone == "" {
		return "", "", false
	}
	return waID, phone, true
}

// Owner is the user id that owns a customer conversation: the id up to its
// first ':', or the whole id.
func (c ConvID) Owner() string {
	owner, _, _ := strings.Cut(string(c), ":")
	return owner
}

// MaxUserIDLen bounds a user id: a Supabase subject is a 36-byte UUID, a
// WhatsApp id a phone number; 128 leaves room for e-mail-like ids.
const MaxUserIDLen = 128

// ValidateUserID checks a user id (a JWT's sub, a dev-mode user, a WhatsApp
// id): 1 to MaxUserIDLen bytes of ASCII letters, digits and "-_.@+". That
// keeps ':' (the conversation namespace separator), whitespace and control
// characters out of every id a conversation may be named after.
func ValidateUserID(id string) error {
	if id == "" || len(id) > MaxUserIDLen {
		return Errorf(CodeUnauthorized, "user id must be 1 to %d characters (got %d)", MaxUserIDLen, len(id))
	}
	for i := 0; i < len(id); i++ {
		switch b := id[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', strings.IndexByte("-_.@+", b) >= 0:
		default:
			return Errorf(CodeUnauthorized, "user id %q has %q at byte %d: only letters, digits and -_.@+ are allowed", id, b, i)
		}
	}
	return nil
}

// Message is one accepted chat message. Once a client has seen it (ack or msg
// frame) it is durable and never changes.
type Message struct {
	// Conv is the conversation the message belongs to.
	Conv ConvID `json:"conv"`
	// Seq is assigned by the engine; see Seq.
	Seq Seq `json:"seq"`
	// ClientMsgID is the sender's idempotency key: at most one message per
	// (Conv, ClientMsgID) is ever accepted.
	ClientMsgID string `json:"client_msg_id"`
	// Sender is the authenticated author.
	Sender Sender `json:"sender"`
	// Body is the client's JSON object, stored and relayed as the same JSON
	// value (insignificant whitespace may differ between live and replay).
	Body json.RawMessage `json:"body"`
	// TS is when the engine accepted the message (UTC).
	TS time.Time `json:"ts"`
}

// ValidateClientMsgID checks the idempotency key of a send: required, and a
// UUID in its canonical textual form (any version), so that keys from
// different clients cannot collide by accident.
func ValidateClientMsgID(id string) error {
	if id == "" {
		return Errorf(CodeBadRequest, "client_msg_id is required")
	}
	if len(id) != 36 {
		return Errorf(CodeBadRequest, "client_msg_id must be a UUID (36 characters)")
	}
	if _, _, ok := ParseClientMsgID(id); !ok {
		return Errorf(CodeBadRequest, "client_msg_id must be a UUID")
	}
	return nil
}

// ParseClientMsgID parses a UUID in the canonical 36-character form (any
// case) that ValidateClientMsgID accepts: its 16 bytes, and in upper which
// of its 32 hex digits were upper case, since ids are compared as strings
// ("A" and "a" in the same place are different ids). ok is false for
// anything else.
func ParseClientMsgID(id string) (uuid [16]byte, upper uint32, ok bool) {
	if len(id) != 36 {
		return uuid, 0, false
	}
	digit := 0
	for i := 0; i < len(id); i++ {
		b := id[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if b != '-' {
				return [16]byte{}, 0, false
			}
			continue
		}
		var v byte
		switch {
		case b >= '0' && b <= '9':
			v = b - '0'
		case b >= 'a' && b <= 'f':
			v = b - 'a' + 10
		case b >= 'A' && b <= 'F':
			v = b - 'A' + 10
			upper |= 1 << digit
		default:
			return [16]byte{}, 0, false
		}
		uuid[digit/2] |= v << (4 * (1 - digit%2))
		digit++
	}
	return uuid, upper, true
}

// ValidateBody checks that a message body is a JSON object with a string
// "text" field, no larger than max bytes.
func ValidateBody(body json.RawMessage, max int) error {
	if len(body) == 0 {
		return Errorf(CodeBadRequest, "body is required")
	}
	if len(body) > max {
		return Errorf(CodeTooLarge, "body is %d bytes, the limit is %d", len(body), max)
	}
	var b struct {
		Text *string `json:"text"`
	}
	if err := json.Unmarshal(body, &b); err != nil {
		return Errorf(CodeBadRequest, "body must be a JSON object: %v", err)
	}
	if b.Text == nil {
		return Errorf(CodeBadRequest, `body must have a "text" string`)
	}
	// The body is stored as PostgreSQL jsonb, which refuses what
	// encoding/json accepts and passes on: invalid UTF-8, \u0000 and
	// surrogates outside a pair (SQLSTATE 22P02, 22021). Refused here, the
	// sender hears bad_request at once, whichever store runs; otherwise a
	// body accepted during a database outage would be refused at drain time,
	// long after its ack.
	if !utf8.Valid(body) {
		return Errorf(CodeBadRequest, "body must be valid UTF-8")
	}
	if bad := badEscape(body); bad != "" {
		return Errorf(CodeBadRequest, "body must not contain %s", bad)
	}
	return nil
}

// badEscape returns the first \u escape of valid JSON text that jsonb
// refuses, described for the error message, or "": \u0000, a high surrogate
// (\ud800-\udbff) not followed by a low one, or a low surrogate
// (\udc00-\udfff) not preceded by a high one. In valid JSON a backslash
// only appears inside a string and always starts an escape, so skipping each
// escape whole keeps the scan aligned (\\u0000 is a backslash and text).
func badEscape(b []byte) string {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\\')
		if j < 0 || i+j+1 >= len(b) {
			return ""
		}
		i += j
		if b[i+1] != 'u' {
			i += 2
			continue
		}
		r, ok := hex4(b, i+2)
		if !ok {
			return ""
		}
		switch {
		case r == 0:
			return `\u0000`
		case r >= 0xdc00 && r <= 0xdfff:
			return fmt.Sprintf(`a lone surrogate (\u%04x without a high surrogate before it)`, r)
		case r >= 0xd800 && r <= 0xdbff:
			if i+7 < len(b) && b[i+6] == '\\' && b[i+7] == 'u' {
				if r2, ok := hex4(b, i+8); ok && r2 >= 0xdc00 && r2 <= 0xdfff {
					i += 12 // a pair: one character outside the BMP
					continue
				}
			}
			return fmt.Sprintf(`a lone surrogate (\u%04x without a low surrogate after it)`, r)
		}
		i += 6
	}
}

// hex4 reads the four hex digits of a \u escape at b[i:].
func hex4(b []byte, i int) (rune, bool) {
	if i+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[i : i+4] {
		switch {
		case '0' <= c && c <= '9':
			r = r<<4 | rune(c-'0')
		case 'a' <= c && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case 'A' <= c && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	return r, true
}

// String makes a Sender readable in logs.
func (s Sender) String() string { return fmt.Sprintf("%s(%s)", s.ID, s.Role) }
