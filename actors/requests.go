package actors

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// The request/response API of the tree for the HTTP endpoints (history and
// read cursors): each call is one message to the actor that owns the data
// and one answer to a future, bounded by the context's deadline (or
// DefaultRequestTimeout), so that an HTTP handler never talks to the store
// behind the actors' back.

// DefaultRequestTimeout bounds a request whose context has no deadline.
const DefaultRequestTimeout = 5 * time.Second

// ErrRequestTimeout is wrapped, beside an unavailable *charla.Error, in the
// error of a request the tree did not answer in time.
var ErrRequestTimeout = errors.New("actors: request timed out")

// History returns up to limit messages of conv with seq > after, in seq
// order, read by the store actor (through the spool while the store is
// down). A page that the store cannot serve whole is an unavailable
// *charla.Error: a client never sees a history with a hole.
func (s *System) History(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	res, err := s.request(ctx, s.deps.store, func(reply *actor.PID) any {
		return rangeReq{conv: conv, after: after, limit: limit, replyTo: reply}
	})
	if err != nil {
		return nil, err
	}
	d := res.(rangeDone)
	if d.err != nil && len(d.msgs) == 0 || len(d.msgs) > 0 && d.msgs[0].Seq != after+1 {
		s.deps.log.Warn().AnErr("err", d.err).Str("conv", string(conv)).Uint64("after", uint64(after)).Msg("history page unavailable")
		return nil, charla.Errorf(charla.CodeUnavailable, "history of %s after seq %d is temporarily unavailable; retry", conv, after)
	}
	// A short page from the spool stops at its first hole.
	for i := 1; i < len(d.msgs); i++ {
		if d.msgs[i].Seq != d.msgs[i-1].Seq+1 {
			return d.msgs[:i], nil
		}
	}
	return d.msgs, nil
}

// ReadCursors returns every user's read cursor in conv, those set a moment
// ago and not yet written included.
func (s *System) ReadCursors(ctx context.Context, conv charla.ConvID) (map[string]charla.Seq, error) {
	res, err := s.request(ctx, s.deps.store, func(reply *actor.PID) any {
		return readCursorsReq{conv: conv, replyTo: reply}
	})
	if err != nil {
		return nil, err
	}
	d := res.(cursorsRead)
	if d.err != nil {
		s.deps.log.Warn().Err(d.err).Str("conv", string(conv)).Msg("read cursors unavailable")
		return nil, charla.Errorf(charla.CodeUnavailable, "read cursors of %s are temporarily unavailable; retry", conv)
	}
	return d.cursors, nil
}

// MarkRead moves by's read cursor in conv to seq, exactly as a read frame
// does (through the conversation: seq must not pass its head, the others
// subscribed get a read frame), and returns the conversation's head. Errors
// are *charla.Error.
func (s *System) MarkRead(ctx context.Context, by charla.Sender, conv charla.ConvID, seq charla.Seq) (charla.Seq, error) {
	if seq == 0 {
		return 0, charla.Errorf(charla.CodeBadRequest, "read needs a seq of 1 or more")
	}
	res, err := s.request(ctx, s.deps.conversations, func(reply *actor.PID) any {
		return readReq{conv: conv, conn: reply, by: by, seq: seq, confirm: true}
	})
	if err != nil {
		return 0, err
	}
	switch m := res.(type) {
	case readDone:
		return m.head, nil
	case requestFailed:
		return 0, m.err
	default:
		return 0, fmt.Errorf("mark read: unexpected answer %T", res)
	}
}

// Post appends msg to its conversation exactly as a client's send does
// (same single writer, same dedup by ClientMsgID, same fan-out to the
// subscribers) and returns the ack once it is durable. It is the door for
// producers inside the engine — the WhatsApp webhook, the chatbot, REST —
// which authenticate and validate on their own side: msg.Sender is trusted.
// Errors are *charla.Error (a refused or unavailable append).
func (s *System) Post(ctx context.Context, msg charla.Message) (wire.Ack, error) {
	if err := msg.Conv.Validate(); err != nil {
		return wire.Ack{}, err
	}
	if err := charla.ValidateClientMsgID(msg.ClientMsgID); err != nil {
		return wire.Ack{}, err
	}
	res, err := s.request(ctx, s.deps.conversations, func(reply *actor.PID) any {
		return sendReq{conn: reply, msg: msg}
	})
	if err != nil {
		return wire.Ack{}, err
	}
	switch m := res.(type) {
	case sendReply:
		if m.err != nil {
			return wire.Ack{}, m.err
		}
		return m.ack, nil
	default:
		return wire.Ack{}, fmt.Errorf("post to %s: unexpected answer %T", msg.Conv, res)
	}
}

// request sends the message build makes for a reply PID to pid, and waits
// for the first answer. A timeout wraps both an unavailable *charla.Error
// (what the client is told) and ErrRequestTimeout.
func (s *System) request(ctx context.Context, pid *actor.PID, build func(reply *actor.PID) any) (any, error) {
	timeout := DefaultRequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Millisecond)
	}
	f := actor.NewFuture(s.as, timeout)
	s.as.Root.Send(pid, build(f.PID()))
	res, err := f.Result()
	if err != nil {
		s.deps.log.Warn().Err(err).Str("to", pid.Id).Msg("request to the actor tree unanswered")
		return nil, fmt.Errorf("%w (%w)", charla.Errorf(charla.CodeUnavailable, "the engine did not answer in time; retry"), ErrRequestTimeout)
	}
	return res, nil
}
