package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// staff reports whether the conn's user works the inbox (agents, admins).
func (c *conn) staff() bool {
	return c.user.Role == charla.RoleAgent || c.user.Role == charla.RoleAdmin
}

// onWorkflowFrame handles the agents' frames (docs/PROTOCOL.md, "Inbox and
// workflow"): inbox follows every conversation the agent may see, presence
// sets away/online, and the actions go to the inbox actor, which answers
// with the conversation frame (ref set) or an error.
func (c *conn) onWorkflowFrame(ctx actor.Context, f wire.Frame) {
	if !c.staff() {
		c.reply(ctx, f.Ref, charla.Errorf(charla.CodeForbidden, "only agents and admins may use %s", f.Type))
		return
	}
	switch f.Type {
	case wire.TypeInbox:
		c.followsInbox = true
		ctx.Send(c.deps.inbox, inboxSubscribe{conn: ctx.Self(), user: c.user, ref: f.Ref})
		return
	case wire.TypePresence:
		if f.State != wire.PresenceAway && f.State != wire.PresenceOnline {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, `presence state must be "away" or "online"`))
			return
		}
		ctx.Send(c.deps.inbox, presenceSet{user: c.user, away: f.State == wire.PresenceAway})
		return
	}
	if err := c.checkConv(f.Conv); err != nil {
		c.reply(ctx, f.Ref, err)
		return
	}
	ctx.Send(c.deps.inbox, workflowReq{op: f.Type, conv: f.Conv, by: c.user, to: f.User, ref: f.Ref, replyTo: ctx.Self()})
}

// rejoinInbox tells a restarted inbox about this conn: its user's presence
// and, when it followed the inbox, the subscription. The new `inbox` frame
// (no ref) tells the client that frames may have been missed meanwhile
// (docs/PROTOCOL.md).
func (c *conn) rejoinInbox(ctx actor.Context) {
	if !c.staff() {
		return
	}
	ctx.Send(c.deps.inbox, staffConn{user: c.user, pid: ctx.Self(), up: true})
	if c.followsInbox {
		ctx.Send(c.deps.inbox, inboxSubscribe{conn: ctx.Self(), user: c.user})
	}
}
