package store

import (
	"encoding/json"
	"time"

	"charla"
)

// The conversation workflow (issue 13): what the agents' inbox shows of a
// conversation besides its messages, the chatbot's sessions and the canned
// replies. One actor of the engine owns each of these (actors/inbox.go,
// actors/bot*.go); the stores only keep them. The interfaces that read and
// write them are defined where they are used, in package actors.

// Conversation statuses. A conversation starts pending when a customer
// opens it (the chatbot answers), is open once handed off to people, and
// resolved when an agent closes it; a customer writing to a resolved
// conversation makes it pending again.
const (
	StatusPending  = "pending"
	StatusOpen     = "open"
	StatusResolved = "resolved"
)

// ConvState is one conversation's workflow state.
type ConvState struct {
	ID       charla.ConvID `json:"conv"`
	Channel  string        `json:"channel"`  // "whatsapp" or "web"
	Customer string        `json:"customer"` // the owner's user id ("" for a staff-only conversation)
	Status   string        `json:"status"`
	Assignee string        `json:"assignee"` // "" while unassigned
	Tags     []string      `json:"tags"`
	Head     charla.Seq    `json:"head"`
	// Last is the newest message (nil before the first).
	Last *LastMessage `json:"last,omitempty"`
	// LastActivity is when the last message was appended or the state
	// last changed: lists are ordered by it, newest first.
	LastActivity time.Time `json:"last_activity"`
	CreatedAt    time.Time `json:"created_at"`
	// Version grows with every change of any conversation (one counter for
	// the engine): changed_since=V lists what changed after V.
	Version uint64 `json:"version"`
	// Reads are the staff's read cursors (by user id), for unread counts;
	// the read_cursors of the chat log are the record, this a copy kept
	// with the state so that an inbox needs no extra lookups.
	Reads map[string]charla.Seq `json:"reads,omitempty"`
}

// Unread is how many messages user has not read.
func (c ConvState) Unread(user string) uint64 {
	r := c.Reads[user]
	if r >= c.Head {
		return 0
	}
	return uint64(c.Head - r)
}

// LastMessage is a conversation's newest message, as lists show it.
type LastMessage struct {
	Seq    charla.Seq    `json:"seq"`
	TS     time.Time     `json:"ts"`
	Sender charla.Sender `json:"sender"`
	Text   string        `json:"text"` // the body's text, cut to MaxPreview bytes
}

// MaxPreview bounds LastMessage.Text.
const MaxPreview = 200

// ConvFilter selects conversations for a list. Zero fields select all.
type ConvFilter struct {
	Status     string
	Assignee   string
	Unassigned bool
	Tag        string
	// VisibleTo keeps the conversations an agent may see: the unassigned
	// ones and theirs.
	VisibleTo string
	// ChangedSince lists the conversations whose Version is above it,
	// ordered by Version (oldest change first), instead of by activity.
	ChangedSince uint64
	// After is the last row of the previous page (by activity: its
	// LastActivity and ID; by version: its Version).
	After *ConvState
	Limit int
}

// Matches reports whether c passes f's filters (not its paging).
func (f ConvFilter) Matches(c ConvState) bool {
	switch {
	case f.Status != "" && c.Status != f.Status,
		f.Assignee != "" && c.Assignee != f.Assignee,
		f.Unassigned && c.Assignee != "",
		f.VisibleTo != "" && c.Assignee != "" && c.Assignee != f.VisibleTo,
		f.ChangedSince > 0 && c.Version <= f.ChangedSince:
		return false
	}
	if f.Tag == "" {
		return true
	}
	for _, t := range c.Tags {
		if t == f.Tag {
			return true
		}
	}
	return false
}

// Before reports whether a comes before b in f's order: by Version with
// ChangedSince, otherwise newest LastActivity first (ties by ID, descending).
func (f ConvFilter) Before(a, b ConvState) bool {
	if f.ChangedSince > 0 {
		return a.Version < b.Version
	}
	if !a.LastActivity.Equal(b.LastActivity) {
		return a.LastActivity.After(b.LastActivity)
	}
	return a.ID > b.ID
}

// BotSession is a chatbot session's saved state.
type BotSession struct {
	Conv     charla.ConvID
	Customer string
	// State is the bot's own record (package bot), opaque to the store.
	State     json.RawMessage
	ExpiresAt time.Time
	UpdatedAt time.Time
}

// CannedReply is a short code that expands to a text with placeholders.
type CannedReply struct {
	Code      string    `json:"code"`
	Text      string    `json:"text"`
	UpdatedAt time.Time `json:"updated_at"`
}

// SearchHit is one message found by a full-text search.
type SearchHit struct {
	Message charla.Message `json:"message"`
}
