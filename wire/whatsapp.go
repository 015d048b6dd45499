package wire

import (
	"time"

	"charla"
)

// TypeWhatsAppStatus is the frame that tells the subscribers of a WhatsApp
// conversation how one of its outgoing messages fares.
const TypeWhatsAppStatus = "wa_status"

// The statuses of a wa_status frame. Accepted is the engine's (the Graph
// API took the message); sent, delivered and read are the platform's and
// only move forward; failed is final and carries an error.
const (
	WAStatusAccepted  = "accepted"
	WAStatusSent      = "sent"
	WAStatusDelivered = "delivered"
	WAStatusRead      = "read"
	WAStatusFailed    = "failed"
)

// WhatsAppStatus is a wa_status frame. A client may rely on: one frame per
// change, never a status lower than one it was already sent for the same
// message (sent, delivered, read), and failed being the last word, with
// ErrorCode and ErrorTitle set.
type WhatsAppStatus struct {
	Type string        `json:"type"`
	Conv charla.ConvID `json:"conv"`
	// Seq and ClientMsgID name the outgoing message.
	Seq         charla.Seq `json:"seq"`
	ClientMsgID string     `json:"client_msg_id"`
	Status      string     `json:"status"`
	// WAMID is the platform's id of the message, once the Graph API
	// accepted it.
	WAMID string `json:"wamid,omitempty"`
	// ErrorCode is the Graph API's error code of a failed message (131047:
	// the 24-hour window is closed, a template is needed), or 0 when the
	// engine gave up on its own; ErrorTitle says what happened in words.
	ErrorCode  int    `json:"error_code,omitempty"`
	ErrorTitle string `json:"error_title,omitempty"`
	// TS is when the status happened (the platform's time for its own).
	TS time.Time `json:"ts"`
}
