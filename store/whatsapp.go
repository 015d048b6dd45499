package store

import "time"

// The WhatsApp channel's records beside the chat log (the inbound actor's
// WebhookStore, implemented by pebble and postgres).

// WebhookEvent is one webhook POST whose signature checked out, kept from
// before its 200 until it is processed, so that a crash in between loses
// nothing: the engine processes the pending ones again at start.
type WebhookEvent struct {
	// Hash is the hex SHA-256 of Body, the event's key: the platform's
	// redelivery of the same POST is the same event.
	Hash       string
	Body       []byte
	ReceivedAt time.Time
	// ProcessedAt is zero while the event is pending.
	ProcessedAt time.Time
	// Problem says what of the event could not be used (a malformed body,
	// skipped items); empty when all of it was.
	Problem string
}

// Contact is what the engine knows of a WhatsApp customer, keyed by WaID.
type Contact struct {
	WaID string
	// Name is the profile name the platform last gave ("" when never).
	Name string
	// PhoneNumberID is the business number of their latest message.
	PhoneNumberID string
	// LastInboundAt is their latest message's platform time; it only moves
	// forward (the 24-hour customer-service window opens from it).
	LastInboundAt time.Time
}
