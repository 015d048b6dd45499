// Package store defines the engine's system of record: the Store interface
// every implementation satisfies (bolt for one process, postgres for
// production) and the sentinel errors callers branch on. The conformance suite
// in storetest runs against every implementation.
package store

import (
	"context"
	"errors"
	"sync"
	"time"

	"charla"
)

// AppendResult is the outcome of one message of an Append call.
type AppendResult struct {
	// Seq is the message's position in its conversation: newly assigned, or
	// the one the first acceptance got when Duplicate is true.
	Seq charla.Seq
	// TS is when the message was first accepted.
	TS time.Time
	// Duplicate is true when (Conv, ClientMsgID) had already been accepted;
	// nothing was written for it.
	Duplicate bool
}

// Store is the durable log of every conversation.
//
// Append is the only writer. Callers guarantee that for a given conversation
// at most one Append is in flight at a time (the conversation actor is the
// single writer of its conversation); implementations may rely on that.
type Store interface {
	// Append durably stores msgs, in one transaction, and returns one result
	// per message in the same order. The store is the sequencer of record: a
	// message whose (Conv, ClientMsgID) is new gets its conversation's head+1
	// (in the order of msgs), whatever Seq the caller put in it; one already
	// accepted is reported as a Duplicate with its original Seq and TS and
	// consumes no seq. Messages of many conversations may share one call
	// (group commit). When Append returns nil every result is durable (fsync
	// or commit); on error nothing of the call is.
	Append(ctx context.Context, msgs []charla.Message) ([]AppendResult, error)

	// Range returns up to limit messages of conv with seq > after, in seq order.
	Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error)

	// Head returns the highest seq of conv, 0 for a conversation without messages.
	Head(ctx context.Context, conv charla.ConvID) (charla.Seq, error)

	// SetReadCursor records that user has read conv up to seq. Cursors only
	// move forward: a lower seq than the stored one is ignored.
	SetReadCursor(ctx context.Context, conv charla.ConvID, user string, seq charla.Seq) error

	// ReadCursors returns every user's read cursor in conv.
	ReadCursors(ctx context.Context, conv charla.ConvID) (map[string]charla.Seq, error)

	// Close releases the store. Calls after Close fail with ErrClosed.
	Close() error
}

// Errors callers branch on, for errors.Is. Implementations wrap their own
// errors so that these match.
var (
	// ErrClosed is returned by a Store after Close.
	ErrClosed = errors.New("store: closed")
	// ErrUnavailable: the store cannot be reached or cannot serve now; the
	// same call may succeed later. The engine spools writes on it.
	ErrUnavailable = errors.New("store: unavailable")
	// ErrInvalid: the store refuses the request itself (a constraint, a value
	// it cannot hold); retrying it is pointless.
	ErrInvalid = errors.New("store: invalid request")
	// ErrFenced: in cluster mode, a write was refused because this node no
	// longer holds the lease (epoch) of the shard of one of its
	// conversations: another node owns the conversation now. It is not
	// ErrUnavailable: the caller must neither spool nor retry it on this
	// node, since the same write would be refused again (or, worse, race the
	// new owner). See *FencedError for which shards, and docs/CLUSTER.md §3.
	ErrFenced = errors.New("store: fenced")
)

// Gate is what every Store implementation needs around Close: calls pass
// it shared, Close shuts it exclusively, so Close waits for the calls in
// flight and every later call fails with ErrClosed. The zero Gate is open.
type Gate struct {
	mu     sync.RWMutex
	closed bool
}

// Enter starts a call: it fails when ctx is done or the gate is shut, and
// otherwise holds the gate until the returned exit is called.
func (g *Gate) Enter(ctx context.Context) (exit func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	g.mu.RLock()
	if g.closed {
		g.mu.RUnlock()
		return nil, ErrClosed
	}
	return g.mu.RUnlock, nil
}

// Shut waits for the calls in flight and shuts the gate; it reports false
// when the gate was shut already (a second Close).
func (g *Gate) Shut() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	was := g.closed
	g.closed = true
	return !was
}
