package actors

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/bot"
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

// Canned-reply placeholders the server fills (RenderCanned), besides
// {{customer}} and {{agent}} (the panel's names for the first two); any
// other {{…}} is left as written.
const (
	// PlaceholderCustomerName is the customer's WhatsApp profile name (from
	// the contacts the webhook records), or their user id on the web or
	// when the platform sent no name.
	PlaceholderCustomerName = "customer_name"
	// PlaceholderAgentName is the user id of the agent rendering the reply.
	PlaceholderAgentName = "agent_name"
	// PlaceholderConv is the conversation's id.
	PlaceholderConv = "conv"
)

// RenderCanned is canned reply code with its placeholders filled for conv,
// as by would send it there: by must be staff who may see conv (an agent:
// unassigned or theirs). An unknown conversation or code is not_found.
func (s *System) RenderCanned(ctx context.Context, by charla.Sender, conv charla.ConvID, code string) (store.CannedReply, error) {
	if by.Role != charla.RoleAgent && by.Role != charla.RoleAdmin {
		return store.CannedReply{}, charla.Errorf(charla.CodeForbidden, "only agents and admins use canned replies")
	}
	if err := conv.Validate(); err != nil {
		return store.CannedReply{}, err
	}
	v, err := s.queryStore(ctx, func(c context.Context, st workflowStore) (any, error) {
		cs, found, err := st.LoadConvState(c, conv)
		if err != nil {
			return nil, err
		}
		if !found {
			return charla.Errorf(charla.CodeNotFound, "no conversation %s in the workflow", conv), nil
		}
		if !maySee(by, &cs) {
			return charla.Errorf(charla.CodeForbidden, "%s may not act on %s: it is assigned to %s", by.ID, conv, cs.Assignee), nil
		}
		all, err := st.ListCanned(c)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(all, func(r store.CannedReply) bool { return r.Code == code })
		if i < 0 {
			return charla.Errorf(charla.CodeNotFound, "no canned reply %q", code), nil
		}
		name := conv.Owner()
		if waID, _, ok := conv.WhatsApp(); ok {
			name = waID
			if contacts, ok := st.(contactStore); ok {
				ct, found, err := contacts.Contact(c, waID)
				if err != nil {
					return nil, err
				}
				if found && ct.Name != "" {
					name = ct.Name
				}
			}
		}
		r := all[i]
		// {{customer}} and {{agent}} are the names the panel fills by itself
		// (web/static/panel.js): the same values, so a reply reads the same
		// rendered either way.
		r.Text = bot.Fill(r.Text, map[string]string{PlaceholderCustomerName: name, "customer": name,
			PlaceholderAgentName: by.ID, "agent": by.ID, PlaceholderConv: string(conv)})
		return r, nil
	})
	if err != nil {
		return store.CannedReply{}, err
	}
	if perr, ok := v.(*charla.Error); ok {
		return store.CannedReply{}, perr
	}
	return v.(store.CannedReply), nil
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
