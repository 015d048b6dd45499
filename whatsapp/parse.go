package whatsapp

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"charla"
)

// ErrMalformed is wrapped by Parse's error when the body is not a webhook
// payload at all (not JSON, not an object, no entry list).
var ErrMalformed = errors.New("whatsapp: malformed webhook payload")

// Batch is a payload flattened: every message, contact and status of every
// change of every entry, in the order they were received, and what could not
// be used (an item missing its id, a bad timestamp…), each said once.
type Batch struct {
	Messages []Inbound
	Contacts []ContactUpdate
	Statuses []Status
	// Problems lists the items skipped and why; the rest of the batch is
	// still good.
	Problems []string
}

// Inbound is one customer message of a batch, with where it belongs.
type Inbound struct {
	// PhoneNumberID is the business number the customer wrote to.
	PhoneNumberID string
	// WaID is the customer's WhatsApp id (the message's "from").
	WaID string
	// Time is the platform's timestamp (whole seconds, UTC).
	Time time.Time
	// Arrival is the message's position in the payload, from 0: the order
	// of messages with the same Time.
	Arrival int
	Message Message
}

// Conv is the conversation the message goes to.
func (in Inbound) Conv() charla.ConvID { return charla.WhatsAppConv(in.PhoneNumberID, in.WaID) }

// ContactUpdate is what a batch says of a customer: their profile name (""
// when the batch did not carry one) and their latest message's time (zero
// when the batch has no message from them).
type ContactUpdate struct {
	WaID          string
	PhoneNumberID string
	Name          string
	LastInbound   time.Time
}

// StatusKind is the state of an outgoing message.
type StatusKind string

// The states the platform reports, in the order a message goes through them
// (failed may come at any point).
const (
	StatusSent      StatusKind = "sent"
	StatusDelivered StatusKind = "delivered"
	StatusRead      StatusKind = "read"
	StatusFailed    StatusKind = "failed"
)

// Status is one status notification of an outgoing message.
type Status struct {
	// PhoneNumberID is the business number that sent the message.
	PhoneNumberID string
	// MessageID is the wamid the Graph API answered to the send.
	MessageID string
	// RecipientID is the customer's wa_id.
	RecipientID string
	Status      StatusKind
	// Timestamp is the platform's time of the change (whole seconds, UTC).
	Timestamp time.Time
	// BizOpaqueCallbackData echoes what the send carried under that name.
	BizOpaqueCallbackData string
	// Error is set on a failed status: why it failed.
	Error *StatusError
}

// StatusError is the reason of a failed status, as the platform gives it.
type StatusError struct {
	Code    int
	Title   string
	Details string
}

// Parse flattens a webhook body into a Batch. It fails (wrapping
// ErrMalformed) only when body is not a payload at all; an unusable item is
// skipped and listed in Problems. Messages come in payload order (see
// SortInbound for the order they are appended in).
func Parse(body []byte) (Batch, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&p); err != nil {
		return Batch{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if dec.More() {
		return Batch{}, fmt.Errorf("%w: data after the JSON object", ErrMalformed)
	}
	if p.Entry == nil {
		return Batch{}, fmt.Errorf("%w: no entry list", ErrMalformed)
	}
	var b Batch
	contacts := map[[2]string]int{} // (wa_id, phone) → index in b.Contacts
	contact := func(waID, phone string) *ContactUpdate {
		k := [2]string{waID, phone}
		i, ok := contacts[k]
		if !ok {
			i = len(b.Contacts)
			contacts[k] = i
			b.Contacts = append(b.Contacts, ContactUpdate{WaID: waID, PhoneNumberID: phone})
		}
		return &b.Contacts[i]
	}
	for ei, e := range p.Entry {
		for ci, c := range e.Changes {
			where := fmt.Sprintf("entry[%d].changes[%d]", ei, ci)
			if c.Field != "" && c.Field != "messages" {
				b.Problems = append(b.Problems, fmt.Sprintf("%s: field %q ignored", where, c.Field))
				continue
			}
			v := c.Value
			phone := v.Metadata.PhoneNumberID
			if !digits(phone) {
				if len(v.Messages)+len(v.Statuses)+len(v.Contacts) > 0 {
					b.Problems = append(b.Problems, fmt.Sprintf("%s: metadata.phone_number_id %q is not a number; its %d messages and %d statuses skipped", where, clip(phone), len(v.Messages), len(v.Statuses)))
				}
				continue
			}
			for _, e := range v.Errors {
				b.Problems = append(b.Problems, fmt.Sprintf("%s: platform error %d: %s", where, e.Code, clip(e.Title+" "+e.details())))
			}
			for i, ct := range v.Contacts {
				if err := checkWaID(ct.WaID, phone); err != nil {
					b.Problems = append(b.Problems, fmt.Sprintf("%s.contacts[%d]: %v", where, i, err))
					continue
				}
				if name := strings.TrimSpace(clean(ct.Profile.Name)); name != "" {
					contact(ct.WaID, phone).Name = name
				}
			}
			for i, m := range v.Messages {
				at := fmt.Sprintf("%s.messages[%d]", where, i)
				ts, ok := parseUnix(m.Timestamp)
				switch {
				case m.ID == "" || len(m.ID) > 256:
					b.Problems = append(b.Problems, at+": id missing or longer than 256 bytes")
					continue
				case !ok:
					b.Problems = append(b.Problems, fmt.Sprintf("%s (%s): timestamp %q is not Unix seconds", at, clip(m.ID), clip(m.Timestamp)))
					continue
				case m.Type == "":
					b.Problems = append(b.Problems, fmt.Sprintf("%s (%s): type missing", at, clip(m.ID)))
					continue
				}
				if err := checkWaID(m.From, phone); err != nil {
					b.Problems = append(b.Problems, fmt.Sprintf("%s (%s): from: %v", at, clip(m.ID), err))
					continue
				}
				b.Messages = append(b.Messages, Inbound{PhoneNumberID: phone, WaID: m.From, Time: ts, Arrival: len(b.Messages), Message: m})
				if c := contact(m.From, phone); ts.After(c.LastInbound) {
					c.LastInbound = ts
				}
			}
			for i, s := range v.Statuses {
				at := fmt.Sprintf("%s.statuses[%d]", where, i)
				st, err := status(phone, s)
				if err != nil {
					b.Problems = append(b.Problems, fmt.Sprintf("%s: %v", at, err))
					continue
				}
				b.Statuses = append(b.Statuses, st)
			}
		}
	}
	return b, nil
}

// status checks and converts one status notification.
func status(phone string, s StatusPayload) (Status, error) {
	ts, ok := parseUnix(s.Timestamp)
	switch k := StatusKind(s.Status); {
	case s.ID == "" || len(s.ID) > 256:
		return Status{}, errors.New("id missing or longer than 256 bytes")
	case k != StatusSent && k != StatusDelivered && k != StatusRead && k != StatusFailed:
		return Status{}, fmt.Errorf("%s: status %q is not sent, delivered, read or failed", clip(s.ID), clip(s.Status))
	case !ok:
		return Status{}, fmt.Errorf("%s: timestamp %q is not Unix seconds", clip(s.ID), clip(s.Timestamp))
	}
	st := Status{PhoneNumberID: phone, MessageID: s.ID, RecipientID: s.RecipientID, Status: StatusKind(s.Status),
		Timestamp: ts, BizOpaqueCallbackData: s.BizOpaqueCallbackData}
	if len(s.Errors) > 0 {
		e := s.Errors[0]
		st.Error = &StatusError{Code: e.Code, Title: e.Title, Details: e.details()}
	} else if st.Status == StatusFailed {
		st.Error = &StatusError{Title: "failed without an error object"}
	}
	return st, nil
}

// SortInbound orders messages as they are appended: by platform timestamp,
// then by arrival, so that several messages of one customer in one batch
// land in their conversation in the order they were written.
func SortInbound(ms []Inbound) {
	sort.SliceStable(ms, func(i, j int) bool {
		if !ms[i].Time.Equal(ms[j].Time) {
			return ms[i].Time.Before(ms[j].Time)
		}
		return ms[i].Arrival < ms[j].Arrival
	})
}

// checkWaID refuses a customer id that would not make a valid conversation.
func checkWaID(waID, phone string) error {
	if err := charla.ValidateUserID(waID); err != nil {
		return fmt.Errorf("wa_id %q: %s", clip(waID), err.(*charla.Error).Message)
	}
	if err := charla.WhatsAppConv(phone, waID).Validate(); err != nil {
		return fmt.Errorf("wa_id %q: %s", clip(waID), err.(*charla.Error).Message)
	}
	return nil
}

func digits(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// clip keeps a value quoted in a problem short and printable.
func clip(s string) string {
	s = clean(s)
	if len(s) > 64 {
		s = s[:64]
		for !utf8.ValidString(s) {
			s = s[:len(s)-1]
		}
		return s + "…"
	}
	return s
}

// clean makes s storable everywhere: valid UTF-8 and no NUL (PostgreSQL's
// jsonb refuses \u0000).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "")
}
