package store

import (
	"encoding/json"
	"time"

	"charla"
)

// The WhatsApp outbox. Every message appended to a WhatsApp conversation
// (charla.ConvID.WhatsApp) by a sender who is not the customer is outbound:
// Append (and the spool's drain) writes its OutboxEntry in the same atomic
// write as the message, so an acked outbound message is always in the outbox
// and a message that is not stored never is. The whatsapp actor is the only
// writer of entries after that (SaveOutbox); platform status notifications
// are kept per wamid (ApplyWhatsAppStatus), forward-only.

// Outbound reports whether m goes out to a WhatsApp customer: the rule both
// stores apply inside Append.
func Outbound(m charla.Message) bool {
	_, _, ok := m.Conv.WhatsApp()
	return ok && m.Sender.Role != charla.RoleCustomer
}

// OutboxState is where an outbound message stands in its delivery to the
// Graph API.
type OutboxState string

// The states of an outbox entry. Pending and Sending entries are open
// (OpenOutbox lists them); Sent and Failed are final.
const (
	// OutboxPending: not tried yet, or the next attempt is due at
	// NextAttempt (after throttling or a transient failure).
	OutboxPending OutboxState = "pending"
	// OutboxSending: an attempt was recorded as started before the Graph
	// API was called and its outcome was not recorded. Found at startup, it
	// means the engine died during the call: the message may or may not
	// have gone out. It is never resent blindly; NextAttempt is the deadline
	// by which a status notification must name it (see the whatsapp actor).
	OutboxSending OutboxState = "sending"
	// OutboxSent: the Graph API accepted it; WAMID is its message id.
	OutboxSent OutboxState = "sent"
	// OutboxFailed: given up; ErrorCode and ErrorTitle say why.
	OutboxFailed OutboxState = "failed"
)

// OutboxEntry is one outbound message and its delivery.
type OutboxEntry struct {
	Conv        charla.ConvID
	Seq         charla.Seq
	ClientMsgID string
	Sender      charla.Sender
	Body        json.RawMessage
	// TS is when the message was accepted.
	TS time.Time

	State    OutboxState
	Attempts int // Graph API calls started
	// NextAttempt: when a pending entry is due; for a sending entry, the
	// deadline of its reconciliation.
	NextAttempt time.Time
	WAMID       string
	// ErrorCode and ErrorTitle explain a failed entry: the Graph API's
	// error code (131047 for the closed 24-hour window), or 0 when the
	// engine gave up on its own (an attempt whose outcome stayed unknown).
	ErrorCode  int
	ErrorTitle string
	// Delivery is the platform's status of WAMID; only OutboxOf fills it.
	Delivery DeliveryStatus
}

// NewOutboxEntry is the entry Append writes for outbound message m once it
// has its seq and time.
func NewOutboxEntry(m charla.Message) OutboxEntry {
	return OutboxEntry{
		Conv: m.Conv, Seq: m.Seq, ClientMsgID: m.ClientMsgID, Sender: m.Sender, Body: m.Body, TS: m.TS,
		State: OutboxPending, NextAttempt: m.TS,
	}
}

// DeliveryStatus is what the platform said last about one sent message
// (WhatsApp's sent, delivered, read, failed), kept by wamid whether or not
// the entry that sent it is known yet: a notification may overtake the
// Graph API's answer.
type DeliveryStatus struct {
	WAMID string
	// Conv, Seq and ClientMsgID name the outbound message once SaveOutbox
	// has recorded the wamid; empty before.
	Conv        charla.ConvID
	Seq         charla.Seq
	ClientMsgID string
	// Status is "" (nothing heard yet), sent, delivered, read or failed.
	Status     string
	ErrorCode  int
	ErrorTitle string
	// TS is the platform's time of Status.
	TS time.Time
}

// StatusRank orders statuses: a status only ever replaces one of lower
// rank. failed ranks with read, so that neither overwrites the other (a
// message read cannot have failed; a failed one is not read later).
func StatusRank(status string) int {
	switch status {
	case "sent":
		return 1
	case "delivered":
		return 2
	case "read", "failed":
		return 3
	default:
		return 0
	}
}

// Advance moves d forward to n's status when n ranks higher, keeping its
// error for failed, and reports whether it moved. Late or repeated
// notifications change nothing.
func (d *DeliveryStatus) Advance(n DeliveryStatus) bool {
	if StatusRank(n.Status) <= StatusRank(d.Status) {
		return false
	}
	d.Status, d.ErrorCode, d.ErrorTitle, d.TS = n.Status, n.ErrorCode, n.ErrorTitle, n.TS
	return true
}
