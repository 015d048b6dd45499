package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// Socket is what a conn actor needs of its transport.
type Socket interface {
	// Async runs f on the socket's writer, after every f given before; f
	// may block (in WriteFrame), nothing else does.
	Async(f func())
	// WriteFrame writes one text frame, with a deadline; only from Async.
	// It must not keep frame once it returns: the outbox reuses the
	// buffer of a joined write.
	WriteFrame(frame []byte) error
	// Ping sends a WebSocket ping, in order with the frames.
	Ping()
	// Close sends the close frame (best effort) and closes the connection.
	Close(d charla.Disconnect)
}

// conn owns one client connection: its heartbeat, its subscriptions (with
// the per-conversation seq check that makes delivery exactly-once and in
// order), and its bounded outbound queue. The transport only decodes frames
// and forwards them here.
type conn struct {
	deps    *deps
	self    *actor.PID
	id      string
	user    charla.Sender
	sock    Socket
	expires time.Time // token expiry, zero when none

	subs map[charla.ConvID]*subscription
	out  *outbox

	lastSeen time.Time
	nextPing time.Time
	pingSent time.Time
	timer    *time.Timer

	sends int // sends awaiting their ack or error
	state connState

	unlimited    bool      // on the allow-list: no send limit
	refused      int       // sends refused since refusedSince (the 4029 rule)
	refusedSince time.Time // on the limiter's clock

	followsInbox bool // sent an inbox frame: followed again if the inbox restarts
}

// connState is where a connection is in its life. It only moves forward.
type connState uint8

const (
	// connOpen: frames are handled.
	connOpen connState = iota
	// connShuttingDown: the engine is stopping; sends are refused, those in
	// flight are answered, then the client is told to reconnect (1012).
	connShuttingDown
	// connClosed: the close frame is sent (or the client left); frames read
	// after it are dropped, the client resends them after reconnecting.
	connClosed
)

// subscription tracks one conversation for one client. next is the only seq
// that may be delivered now: lower ones are duplicates and are dropped, a
// higher one means something is missing and switches to replay, which reads
// the store up to target and then goes live again.
type subscription struct {
	state  subState
	next   charla.Seq
	target charla.Seq
	// toldUnavailable: the client was told once that its replay waits for
	// the store; it is not told again for the same subscription.
	toldUnavailable bool
}

// subState is where a subscription is between subscribe and live delivery.
type subState uint8

const (
	// subPending: the conversation has not answered the subscribe yet;
	// deliveries are dropped (its answer's head covers them).
	subPending subState = iota
	// subLive: deliveries go straight to the client, in seq order.
	subLive
	// subReplaying: (next, target] is read from the store page by page as
	// the outbound queue has room; live deliveries only raise target.
	subReplaying
	// subFetching: subReplaying with a page read in flight.
	subFetching
)

// Messages from the transport (through ConnHandle).
type (
	inFrame   struct{ f wire.Frame }
	inInvalid struct {
		ref string
		err error
	}
	inAlive    struct{ pong bool }
	sockClosed struct{ err error }
)

// Internal and control messages.
type (
	// outboxRoom: the outbound queue fell to half its cap or emptied.
	outboxRoom struct{}
	connTick   struct{}
	closeConn  struct{ d charla.Disconnect }
	// shutdownConn moves the conn to connShuttingDown.
	shutdownConn struct{}
	replayRetry  struct{ conv charla.ConvID }
)

func newConn(d *deps, id string, user charla.Sender, sock Socket, expires time.Time, opts ...ConnOption) *conn {
	c := &conn{deps: d, id: id, user: user, sock: sock, expires: expires, subs: map[charla.ConvID]*subscription{}}
	for _, opt := range opts {
		opt(c)
	}
	return c
}

func (c *conn) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c.self = ctx.Self()
		self, root := c.self, c.deps.root
		c.out = &outbox{sock: c.sock, maxFrames: c.deps.cfg.SendQueueFrames, maxBytes: c.deps.cfg.SendQueueBytes,
			signal: func() { root.Send(self, outboxRoom{}) }}
		now := time.Now()
		c.lastSeen = now
		c.nextPing = now.Add(c.deps.cfg.HeartbeatInterval)
		c.deps.stats.ConnsActive.Add(1)
		c.deps.stats.Connects.Add(1)
		c.deps.log.Debug().Str("conn", c.id).Str("user", c.user.ID).Str("role", string(c.user.Role)).Msg("connected")
		c.enqueue(wire.Encode(wire.Welcome{
			Type: wire.TypeWelcome, ConnID: c.id, User: c.user.ID, Role: c.user.Role,
			Heartbeat: c.deps.cfg.HeartbeatInterval.Milliseconds(), Timeout: c.deps.cfg.HeartbeatTimeout.Milliseconds(),
			ServerTime: now.UTC(),
		}))
		c.arm(ctx)
		if c.staff() {
			ctx.Send(c.deps.inbox, staffConn{user: c.user, pid: ctx.Self(), up: true})
		}
	case inFrame:
		if c.state == connClosed {
			return // read after our close frame: the client resends after reconnecting
		}
		c.lastSeen = time.Now()
		c.deps.stats.framesIn.add(m.f.Type)
		c.onFrame(ctx, m.f)
	case inInvalid:
		c.lastSeen = time.Now()
		c.reply(ctx, m.ref, m.err)
	case inAlive:
		c.lastSeen = time.Now()
		if m.pong && !c.pingSent.IsZero() {
			c.deps.stats.observeRTT(c.lastSeen.Sub(c.pingSent))
			c.pingSent = time.Time{}
		}
	case connTick:
		c.onTick(ctx)
	case outboxRoom:
		for conv := range c.subs {
			c.pump(ctx, conv)
		}
		c.maybeFinishShutdown()
	case subscribeReply:
		c.onSubscribed(ctx, m)
	case sendReply:
		c.sends--
		if m.err != nil {
			c.reply(ctx, m.ref, m.err)
		} else {
			m.ack.Ref = m.ref
			c.enqueue(wire.Encode(m.ack))
		}
		c.maybeFinishShutdown()
	case requestFailed:
		c.reply(ctx, m.ref, m.err)
	case workflowDone:
		if m.err != nil {
			c.reply(ctx, m.ref, m.err)
			break
		}
		c.enqueue(wire.Encode(ConversationFrame(m.state, c.user.ID, m.ref)))
	case inboxRestarted:
		c.rejoinInbox(ctx) // conn_workflow.go
	case soapFrame:
		if m.code != "" {
			c.deps.stats.errorSent(m.code)
		}
		c.enqueue(m.frame)
	case pushFrame:
		c.enqueue(m.frame)
	case *delivery:
		c.onDelivery(ctx, m.conv, m.seq, m.frame)
	case *relay:
		if s := c.subs[m.conv]; s != nil && s.state != subPending {
			c.enqueue(m.frame)
		}
	case convReset:
		if s := c.subs[m.conv]; s != nil {
			s.state = subPending
			ctx.Send(c.deps.conversations, subscribeReq{conv: m.conv, conn: ctx.Self(), by: c.user, since: s.next - 1, resume: true})
		}
	case rangeDone:
		c.onRange(ctx, m)
	case replayRetry:
		c.pump(ctx, m.conv)
	case closeConn:
		c.close(m.d)
	case shutdownConn:
		if c.state == connOpen {
			c.state = connShuttingDown
		}
		c.maybeFinishShutdown()
	case sockClosed:
		if c.state != connClosed {
			c.state = connClosed
			c.deps.stats.disconnect(charla.DisconnectClientClosed)
			c.deps.log.Debug().Str("conn", c.id).Str("user", c.user.ID).AnErr("cause", m.err).Msg("client closed the connection")
		}
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		if c.timer != nil {
			c.timer.Stop()
		}
		for conv := range c.subs {
			ctx.Send(c.deps.conversations, unsubscribeReq{conv: conv, conn: ctx.Self()})
		}
		c.close(charla.DisconnectInternal) // a no-op unless we failed
		if c.staff() {
			ctx.Send(c.deps.inbox, staffConn{user: c.user, pid: ctx.Self()})
		}
		c.deps.stats.ConnsActive.Add(-1)
	}
}

func (c *conn) onFrame(ctx actor.Context, f wire.Frame) {
	switch f.Type {
	case wire.TypePing:
		c.enqueue(wire.Encode(wire.Pong{Type: wire.TypePong, Ref: f.Ref, T: f.T, ServerTime: time.Now().UTC()}))
	case wire.TypeSubscribe:
		if err := c.checkConv(f.Conv); err != nil {
			c.reply(ctx, f.Ref, err)
			return
		}
		if _, again := c.subs[f.Conv]; !again && len(c.subs) >= c.deps.cfg.MaxSubscriptions {
			// Each subscription keeps a conversation loaded: bound what one
			// client can make the engine hold.
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "at most %d subscriptions per connection; unsubscribe first", c.deps.cfg.MaxSubscriptions))
			return
		}
		// next is set from the conversation's answer, which clamps a since
		// beyond its head (since+1 would overflow at 2^64-1).
		c.subs[f.Conv] = &subscription{}
		ctx.Send(c.deps.conversations, subscribeReq{conv: f.Conv, conn: ctx.Self(), by: c.user, ref: f.Ref, since: f.Since})
	case wire.TypeUnsubscribe:
		if err := f.Conv.Validate(); err != nil {
			c.reply(ctx, f.Ref, err)
			return
		}
		if _, ok := c.subs[f.Conv]; ok {
			delete(c.subs, f.Conv)
			ctx.Send(c.deps.conversations, unsubscribeReq{conv: f.Conv, conn: ctx.Self()})
		}
		c.enqueue(wire.Encode(wire.Unsubscribed{Type: wire.TypeUnsubscribed, Ref: f.Ref, Conv: f.Conv}))
	case wire.TypeSend:
		if err := c.checkSend(f); err != nil {
			c.reply(ctx, f.Ref, err)
			return
		}
		if c.tooManyInFlight(f.Ref) || c.sendLimited(f.Ref) {
			return
		}
		c.sends++
		ctx.Send(c.deps.conversations, sendReq{conn: ctx.Self(), ref: f.Ref, at: c.lastSeen, msg: charla.Message{
			Conv: f.Conv, ClientMsgID: f.ClientMsgID, Sender: c.user, Body: f.Body,
		}})
	case wire.TypeTyping:
		if err := c.checkConv(f.Conv); err != nil {
			c.reply(ctx, f.Ref, err)
			return
		}
		if f.State != "on" && f.State != "off" {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, `typing state must be "on" or "off"`))
			return
		}
		ctx.Send(c.deps.conversations, typingReq{conv: f.Conv, conn: ctx.Self(), by: c.user, state: f.State})
	case wire.TypeRead:
		if err := c.checkConv(f.Conv); err != nil {
			c.reply(ctx, f.Ref, err)
			return
		}
		if f.Seq == 0 {
			c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "read needs a seq of 1 or more"))
			return
		}
		ctx.Send(c.deps.conversations, readReq{conv: f.Conv, conn: ctx.Self(), ref: f.Ref, by: c.user, seq: f.Seq})
	case wire.TypeInventory, wire.TypeReserve, wire.TypeJob, wire.TypeInvalidate:
		c.onInventoryFrame(ctx, f) // conn_inventory.go
	case wire.TypeInbox, wire.TypePresence, wire.TypeTake, wire.TypeAssign, wire.TypeTransfer, wire.TypeResolve, wire.TypeReopen, wire.TypeHandoff:
		c.onWorkflowFrame(ctx, f) // conn_workflow.go
	default:
		c.reply(ctx, f.Ref, charla.Errorf(charla.CodeBadRequest, "unknown frame type %q", f.Type))
	}
}

func (c *conn) checkConv(conv charla.ConvID) error {
	if err := conv.Validate(); err != nil {
		return err
	}
	if !c.user.CanAccess(conv) {
		return charla.Errorf(charla.CodeForbidden, "%s may not use conversation %s", c.user.ID, conv)
	}
	return nil
}

func (c *conn) checkSend(f wire.Frame) error {
	if c.state == connShuttingDown {
		return charla.Errorf(charla.CodeUnavailable, "server is restarting; resend after reconnecting")
	}
	if err := c.checkConv(f.Conv); err != nil {
		return err
	}
	if err := charla.ValidateClientMsgID(f.ClientMsgID); err != nil {
		return err
	}
	if err := charla.ValidateBody(f.Body, c.deps.cfg.MaxBodyBytes); err != nil {
		return err
	}
	return nil
}

// reply answers ref with err's error frame (a *charla.Error keeps its code;
// anything else is internal, so no detail leaks onto the wire).
func (c *conn) reply(_ actor.Context, ref string, err error) {
	e := charla.AsError(err)
	c.deps.stats.errorSent(e.Code)
	c.enqueue(wire.Encode(wire.ErrorFrame(ref, e)))
}

func (c *conn) onSubscribed(ctx actor.Context, m subscribeReply) {
	s := c.subs[m.conv]
	if s == nil {
		return // unsubscribed meanwhile
	}
	if m.err != nil {
		delete(c.subs, m.conv)
		c.reply(ctx, m.ref, m.err)
		return
	}
	if m.resume && s.state != subPending {
		// The answer to an earlier re-subscription: each convReset sends
		// one, and in a cluster a conversation's move can bring two (its
		// old owner's and this node's). The first answer made the
		// subscription live; a later one would set the cursor back to
		// where the conn was then, and frames it has sent since would go
		// out again.
		return
	}
	s.next = m.since + 1
	s.target = max(s.target, m.head)
	if !m.resume {
		c.enqueue(wire.Encode(wire.Subscribed{Type: wire.TypeSubscribed, Ref: m.ref, Conv: m.conv, Head: m.head, Since: m.since}))
	}
	s.state = subLive
	if !m.complete {
		if s.next <= m.head {
			s.state = subReplaying
		}
		c.pump(ctx, m.conv)
		return
	}
	for _, d := range m.recent {
		c.onDelivery(ctx, m.conv, d.seq, d.frame)
	}
}

func (c *conn) onDelivery(ctx actor.Context, conv charla.ConvID, seq charla.Seq, frame []byte) {
	s := c.subs[conv]
	if s == nil || s.state == subPending {
		return // from a subscription that was replaced; the new one covers it
	}
	switch {
	case s.state == subReplaying || s.state == subFetching:
		s.target = max(s.target, seq)
	case seq < s.next:
		// already delivered
	case seq > s.next:
		s.state, s.target = subReplaying, seq
		c.pump(ctx, conv)
	default:
		c.enqueue(frame)
		s.next++
	}
}

// pump reads the next page of a replay when the outbound queue has room, so
// a replay of any length never makes its own client a slow consumer.
func (c *conn) pump(ctx actor.Context, conv charla.ConvID) {
	s := c.subs[conv]
	if s == nil || s.state != subReplaying || c.state == connClosed {
		return
	}
	if s.next > s.target {
		s.state = subLive
		return
	}
	if !c.out.arm(false) {
		return // outboxRoom pumps again
	}
	s.state = subFetching
	limit := min(charla.Seq(c.deps.cfg.ReplayPage), s.target-s.next+1)
	ctx.Send(c.deps.store, rangeReq{conv: conv, after: s.next - 1, limit: int(limit), replyTo: ctx.Self()})
}

func (c *conn) onRange(ctx actor.Context, m rangeDone) {
	s := c.subs[m.conv]
	if s == nil || s.state != subFetching {
		return // unsubscribed, or resubscribed after a reset, meanwhile
	}
	s.state = subReplaying
	before := s.next
	for _, msg := range m.msgs {
		if msg.Seq == s.next {
			c.enqueue(encodeMsg(msg))
			s.next++
		}
	}
	if s.next == before {
		// The store is down and the spool does not reach back that far: the
		// history follows when the store is back. Say so once, and retry.
		c.deps.log.Warn().AnErr("err", m.err).Str("conn", c.id).Str("conv", string(m.conv)).Uint64("after", uint64(s.next-1)).Msg("replay page unavailable; retrying")
		if !s.toldUnavailable {
			s.toldUnavailable = true
			c.reply(ctx, "", charla.Errorf(charla.CodeUnavailable, "history of %s after seq %d is temporarily unavailable; it will follow, in order", m.conv, s.next-1))
		}
		sendAfter(c.deps.root, time.Second, ctx.Self(), replayRetry{conv: m.conv})
		return
	}
	c.pump(ctx, m.conv)
}

func (c *conn) onTick(ctx actor.Context) {
	if c.state == connClosed {
		return
	}
	now := time.Now()
	switch {
	case now.Sub(c.lastSeen) >= c.deps.cfg.HeartbeatTimeout:
		c.close(charla.DisconnectHeartbeatTimeout)
		return
	case !c.expires.IsZero() && !now.Before(c.expires):
		c.close(charla.DisconnectTokenExpired)
		return
	case !now.Before(c.nextPing):
		c.sock.Ping()
		if c.pingSent.IsZero() {
			c.pingSent = now
		}
		c.nextPing = now.Add(c.deps.cfg.HeartbeatInterval)
	}
	c.arm(ctx)
}

// arm schedules the next tick at the earliest of: next ping, silence
// deadline, token expiry. One timer per connection, no goroutine.
func (c *conn) arm(ctx actor.Context) {
	at := c.nextPing
	if dl := c.lastSeen.Add(c.deps.cfg.HeartbeatTimeout); dl.Before(at) {
		at = dl
	}
	if !c.expires.IsZero() && c.expires.Before(at) {
		at = c.expires
	}
	d := max(time.Until(at), time.Millisecond)
	if c.timer == nil {
		c.timer = sendAfter(c.deps.root, d, ctx.Self(), connTick{})
		return
	}
	c.timer.Reset(d) // one timer for the connection's life: no allocation per heartbeat
}

// enqueue queues a frame for the client; past the cap the client is a slow
// consumer and is closed, so that it costs nobody else anything.
func (c *conn) enqueue(frame []byte) {
	if c.state == connClosed {
		return
	}
	if !c.out.push(frame) {
		c.close(charla.DisconnectSlowConsumer)
		return
	}
	c.deps.stats.framesOut.addEncoded(frame)
}

// maybeFinishShutdown closes with 1012 once a shutting-down conn has
// answered every send and its client has read everything queued.
func (c *conn) maybeFinishShutdown() {
	if c.state == connShuttingDown && c.sends == 0 && c.out.arm(true) {
		c.close(charla.DisconnectServiceRestart)
	}
}

func (c *conn) close(d charla.Disconnect) {
	if c.state == connClosed {
		return
	}
	c.state = connClosed
	c.deps.stats.disconnect(d)
	ev := c.deps.log.Debug()
	if d == charla.DisconnectSlowConsumer || d == charla.DisconnectInternal {
		ev = c.deps.log.Warn() // worth a look: a client that does not read, or a bug
	}
	ev.Str("conn", c.id).Str("user", c.user.ID).Uint16("code", d.Code).Str("reason", d.Reason).Int("subscriptions", len(c.subs)).Msg("closing connection")
	c.sock.Close(d)
}
