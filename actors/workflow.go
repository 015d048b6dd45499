package actors

import (
	"context"
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/store"
	"charla/wire"
)

// The workflow's request API for the HTTP endpoints: each call is one
// message to the inbox actor, which owns the data, answered once the change
// is durable (actions) or read from the store once every earlier change is
// saved (lists, search, canned replies).

// Act runs an action (wire.TypeTake, TypeAssign, TypeTransfer, TypeResolve,
// TypeReopen, TypeHandoff) on conv for by; to is the assignee of assign
// and transfer. It returns the conversation as by now sees it. Errors are
// *charla.Error.
func (s *System) Act(ctx context.Context, by charla.Sender, op string, conv charla.ConvID, to string) (wire.Conversation, error) {
	return s.act(ctx, workflowReq{op: op, conv: conv, by: by, to: to})
}

// SetTags replaces conv's tags.
func (s *System) SetTags(ctx context.Context, by charla.Sender, conv charla.ConvID, tags []string) (wire.Conversation, error) {
	return s.act(ctx, workflowReq{op: opTags, conv: conv, by: by, tags: tags})
}

func (s *System) act(ctx context.Context, req workflowReq) (wire.Conversation, error) {
	if req.by.Role != charla.RoleAgent && req.by.Role != charla.RoleAdmin {
		return wire.Conversation{}, charla.Errorf(charla.CodeForbidden, "only agents and admins work conversations")
	}
	if err := req.conv.Validate(); err != nil {
		return wire.Conversation{}, err
	}
	res, err := s.request(ctx, s.deps.inbox, func(reply *actor.PID) any {
		req.replyTo = reply
		return req
	})
	if err != nil {
		return wire.Conversation{}, err
	}
	d, ok := res.(workflowDone)
	if !ok {
		return wire.Conversation{}, fmt.Errorf("act on %s: unexpected answer %T", req.conv, res)
	}
	if d.err != nil {
		return wire.Conversation{}, d.err
	}
	return ConversationFrame(d.state, req.by.ID, ""), nil
}

// Conversations lists the conversations by may see (an agent: the
// unassigned ones and theirs; an admin: all) that pass f, as by sees them.
func (s *System) Conversations(ctx context.Context, by charla.Sender, f store.ConvFilter) ([]wire.Conversation, error) {
	if by.Role == charla.RoleAgent {
		f.VisibleTo = by.ID
	}
	v, err := s.queryStore(ctx, func(c context.Context, st workflowStore) (any, error) { return st.ListConvStates(c, f) })
	if err != nil {
		return nil, err
	}
	states := v.([]store.ConvState)
	out := make([]wire.Conversation, len(states))
	for i, c := range states {
		out[i] = ConversationFrame(c, by.ID, "")
	}
	return out, nil
}

// SearchMessages finds the messages whose text holds every word of query,
// newest first.
func (s *System) SearchMessages(ctx context.Context, query string, limit int) ([]charla.Message, error) {
	v, err := s.queryStore(ctx, func(c context.Context, st workflowStore) (any, error) { return st.SearchMessages(c, query, limit) })
	if err != nil {
		return nil, err
	}
	return v.([]charla.Message), nil
}

// CannedReplies returns every canned reply, by code.
func (s *System) CannedReplies(ctx context.Context) ([]store.CannedReply, error) {
	v, err := s.queryStore(ctx, func(c context.Context, st workflowStore) (any, error) { return st.ListCanned(c) })
	if err != nil {
		return nil, err
	}
	return v.([]store.CannedReply), nil
}

// PutCanned creates or replaces a canned reply.
func (s *System) PutCanned(ctx context.Context, c store.CannedReply) (store.CannedReply, error) {
	c.UpdatedAt = time.Now().UTC().Truncate(time.Microsecond)
	_, err := s.queryStore(ctx, func(cx context.Context, st workflowStore) (any, error) { return nil, st.PutCanned(cx, c) })
	return c, err
}

// DeleteCanned removes a canned reply; a missing one is not_found.
func (s *System) DeleteCanned(ctx context.Context, code string) error {
	v, err := s.queryStore(ctx, func(c context.Context, st workflowStore) (any, error) { return st.DeleteCanned(c, code) })
	if err != nil {
		return err
	}
	if !v.(bool) {
		return charla.Errorf(charla.CodeNotFound, "no canned reply %q", code)
	}
	return nil
}

// SetAgentCapacity sets how many open conversations agent is auto-assigned
// at most; a negative capacity returns them to the default.
func (s *System) SetAgentCapacity(ctx context.Context, agent string, capacity int) error {
	res, err := s.request(ctx, s.deps.inbox, func(reply *actor.PID) any {
		return capacitySet{agent: agent, capacity: capacity, replyTo: reply}
	})
	if err != nil {
		return err
	}
	return storeAnswerErr(res.(inboxAnswer).err)
}

func (s *System) queryStore(ctx context.Context, fn func(context.Context, workflowStore) (any, error)) (any, error) {
	res, err := s.request(ctx, s.deps.inbox, func(reply *actor.PID) any { return inboxQuery{fn: fn, replyTo: reply} })
	if err != nil {
		return nil, err
	}
	a := res.(inboxAnswer)
	if a.err != nil {
		return nil, storeAnswerErr(a.err)
	}
	return a.v, nil
}

// storeAnswerErr is what a client is told of a store failure: its own
// *charla.Error, or unavailable.
func storeAnswerErr(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := err.(*charla.Error); ok {
		return e
	}
	return fmt.Errorf("%w (%w)", charla.Errorf(charla.CodeUnavailable, "the conversation store is unavailable; retry"), err)
}
