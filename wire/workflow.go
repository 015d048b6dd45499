package wire

import (
	"time"

	"charla"
)

// Frame types of the agents' workflow (docs/PROTOCOL.md, "Inbox and
// workflow"). Client to server: inbox (follow every conversation the agent
// may see), the actions on a conversation, and presence (away/online).
// Server to client: inbox (the answer), conversation and presence.
const (
	TypeInbox    = "inbox"
	TypeTake     = "take"
	TypeAssign   = "assign"
	TypeTransfer = "transfer"
	TypeResolve  = "resolve"
	TypeReopen   = "reopen"
	TypeHandoff  = "handoff"
)

// Presence states of an agent.
const (
	PresenceOnline  = "online"
	PresenceAway    = "away"
	PresenceOffline = "offline"
)

// Inbox answers an inbox request: from now on every change of a
// conversation the agent may see arrives as a conversation frame. Version
// is the engine's change counter at that moment: GET
// /v1/conversations?changed_since=<the last version the client saw> fills
// the gap of a reconnect.
type Inbox struct {
	Type    string `json:"type"`
	Ref     string `json:"ref,omitempty"`
	Version uint64 `json:"version"`
}

// Conversation is a conversation's whole workflow state, sent to agents
// when it is created or any of it changes (and as the answer, with ref, to
// an action). Clients keep the one with the highest Version per conv.
type Conversation struct {
	Type     string        `json:"type"`
	Ref      string        `json:"ref,omitempty"`
	Conv     charla.ConvID `json:"conv"`
	Channel  string        `json:"channel"`
	Customer string        `json:"customer"`
	Status   string        `json:"status"`   // pending (the bot answers), open (people), resolved
	Assignee string        `json:"assignee"` // "" when unassigned
	Tags     []string      `json:"tags"`
	Head     charla.Seq    `json:"head"`
	// Unread is how many messages the receiving user has not read (head
	// minus their read cursor).
	Unread       uint64       `json:"unread"`
	Last         *LastMessage `json:"last,omitempty"`
	LastActivity time.Time    `json:"last_activity"`
	Version      uint64       `json:"version"`
}

// LastMessage is a conversation's newest message, cut for a list.
type LastMessage struct {
	Seq    charla.Seq    `json:"seq"`
	TS     time.Time     `json:"ts"`
	Sender charla.Sender `json:"sender"`
	Text   string        `json:"text"`
}

// Presence is an agent's presence, to agents: online while a connection of
// theirs is open (away when they say so), offline once the last one has
// been closed for the grace period.
type Presence struct {
	Type  string      `json:"type"`
	User  string      `json:"user"`
	Role  charla.Role `json:"role"`
	State string      `json:"state"`
}
