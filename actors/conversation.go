package actors

import (
	"errors"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/store"
	"charla/wire"
)

// conversation is the single writer of one conversation: it dedups sends by
// client_msg_id, has the store actor persist them (at most one batch in
// flight, so the store's seq order is its order), acks, and fans durable
// messages out to its subscribers. It keeps the recent messages so that most
// replays never touch the store.
type conversation struct {
	id   charla.ConvID
	deps *deps

	loaded     bool
	loadFailed bool  // the load failed: this incarnation only waits to stop
	waiting    []any // requests that arrived before the load finished

	head  charla.Seq
	dedup *dedupWindow
	ring  ring
	subs  map[string]*actor.PID // by PID id

	pending  []*pendingSend // accepted, not yet handed to the store
	inflight []*pendingSend // in the store's current group commit
	byCMID   map[string]*pendingSend

	current     any // the request being handled, answered if it panics
	idle        idleClock
	passivating bool
}

type ackInfo struct {
	seq charla.Seq
	ts  time.Time
}

type waiter struct {
	conn *actor.PID
	ref  string
	at   time.Time // the sendReq's, for the send→ack latency
}

type pendingSend struct {
	msg     charla.Message
	waiters []waiter // the first is the original sender, the rest resent it
}

// Requests to a conversation. They reach it through the conversations actor,
// which routes on target().
type (
	// subscribeReq registers conn as a subscriber. resume is set when the
	// conn re-subscribes by itself after a convReset: the client already has
	// its subscribed frame.
	subscribeReq struct {
		conv   charla.ConvID
		conn   *actor.PID
		by     charla.Sender
		ref    string
		since  charla.Seq
		resume bool
	}
	unsubscribeReq struct {
		conv charla.ConvID
		conn *actor.PID
	}
	sendReq struct {
		conn *actor.PID
		ref  string
		msg  charla.Message
		at   time.Time // when the conn actor read it: send→ack latency is measured from here (zero: not measured)
	}
	typingReq struct {
		conv  charla.ConvID
		conn  *actor.PID
		by    charla.Sender
		state string
	}
	// readReq moves by's read cursor; confirm asks for a readDone on
	// success too (an HTTP caller waits for an answer; a conn does not).
	readReq struct {
		conv    charla.ConvID
		conn    *actor.PID
		ref     string
		by      charla.Sender
		seq     charla.Seq
		confirm bool
	}
)

// statusNote is a frame about the conversation from outside it (a WhatsApp
// delivery status, wire.WhatsAppStatus) for its subscribers. It never loads
// a conversation: one that is not loaded has no subscriber.
type statusNote struct {
	conv  charla.ConvID
	frame []byte
}

func (m statusNote) target() charla.ConvID    { return m.conv }
func (m statusNote) requester() charla.Sender { return charla.Sender{} }

func (m subscribeReq) target() charla.ConvID   { return m.conv }
func (m unsubscribeReq) target() charla.ConvID { return m.conv }
func (m sendReq) target() charla.ConvID        { return m.msg.Conv }
func (m typingReq) target() charla.ConvID      { return m.conv }
func (m readReq) target() charla.ConvID        { return m.conv }

func (m subscribeReq) requester() charla.Sender   { return m.by }
func (m unsubscribeReq) requester() charla.Sender { return charla.Sender{} }
func (m sendReq) requester() charla.Sender        { return m.msg.Sender }
func (m typingReq) requester() charla.Sender      { return m.by }
func (m readReq) requester() charla.Sender        { return m.by }

// Replies and events from a conversation to a conn.
type (
	// subscribeReply: the conn now receives every delivery after head; the
	// messages (since, head] are in recent when complete is true, otherwise
	// the conn reads them from the store.
	subscribeReply struct {
		conv     charla.ConvID
		ref      string
		head     charla.Seq
		recent   []delivery
		complete bool
		resume   bool
		// since is the subscriber's cursor: what it asked for, or the head
		// when it asked for more than the conversation has.
		since charla.Seq
		err   *charla.Error
	}
	sendReply struct {
		conv charla.ConvID
		ref  string
		ack  wire.Ack
		err  *charla.Error
	}
	// delivery is one durable message, encoded once for every subscriber;
	// a subscriber receives a *delivery it must not modify.
	delivery struct {
		conv  charla.ConvID
		seq   charla.Seq
		frame []byte
	}
	// relay is an ephemeral frame (typing, read) for subscribers, who
	// receive a *relay they must not modify.
	relay struct {
		conv  charla.ConvID
		frame []byte
	}
	// convReset tells subscribers that the conversation actor lost its
	// subscriber list (restart or stop): they subscribe again from where
	// they are, and the seq check makes that seamless.
	convReset struct{ conv charla.ConvID }
	// readDone confirms a readReq that asked for it.
	readDone struct {
		conv charla.ConvID
		ref  string
		head charla.Seq
	}
	// requestFailed answers a request that has no reply of its own.
	requestFailed struct {
		conv charla.ConvID
		ref  string
		err  *charla.Error
	}
)

// Lifecycle messages between a conversation and the conversations actor.
type (
	idleCheck    struct{}
	passivateReq struct {
		conv charla.ConvID
		pid  *actor.PID
	}
	passivate struct{}
)

func newConversation(id charla.ConvID, d *deps) *conversation {
	return &conversation{
		id: id, deps: d, dedup: newDedupWindow(d.cfg.DedupWindow),
		ring:   ring{conv: id, max: d.cfg.RecentWindow},
		subs:   map[string]*actor.PID{},
		byCMID: map[string]*pendingSend{},
	}
}

func (c *conversation) Receive(ctx actor.Context) {
	msg := ctx.Message()
	switch msg.(type) {
	case subscribeReq, sendReq, readReq:
		c.current = msg
	}
	// Not deferred: after a panic, current must still name the request
	// when Restarting arrives.
	c.receive(ctx, msg)
	c.current = nil
}

func (c *conversation) receive(ctx actor.Context, msg any) {
	if h := c.deps.hooks; h != nil && h.conversationReceive != nil {
		h.conversationReceive(c.id, msg)
	}
	switch m := msg.(type) {
	case *actor.Started:
		c.idle.touch()
		// Only the replay ring's worth: a thousand conversations reloading
		// after a restart must stay cheap. The dedup window refills as sends
		// arrive, and the store's unique key answers what it misses.
		ctx.Send(c.deps.store, loadReq{conv: c.id, recent: c.deps.cfg.RecentWindow, replyTo: ctx.Self()})
		c.idle.arm(ctx, c.deps, c.deps.cfg.IdleTimeout)
	case loaded:
		c.onLoaded(ctx, m)
	case subscribeReq, unsubscribeReq, sendReq, typingReq, readReq:
		if c.loadFailed {
			// Routed here before the conversations actor took our
			// passivateReq (a request can even come after the failed load
			// when it was sent to us after our spawn): waiting would hold
			// it, and this incarnation, forever.
			failRequest(ctx, m, errLoadFailed())
			return
		}
		if !c.loaded {
			c.waiting = append(c.waiting, m)
			return
		}
		c.handle(ctx, m)
	case statusNote:
		c.broadcast(ctx, nil, m.frame)
	case appendDone:
		c.onAppended(ctx, m)
	case idleCheck:
		c.idle.check(ctx, c.deps, c.id, len(c.subs) > 0 || c.busy())
	case passivate:
		c.passivating = true
		c.stopIfDone(ctx)
	case *actor.Restarting:
		c.abandon(ctx, charla.Errorf(charla.CodeUnavailable, "conversation restarted; resend with the same client_msg_id"))
	case *actor.Stopping:
		c.abandon(ctx, charla.Errorf(charla.CodeUnavailable, "conversation stopped; resend with the same client_msg_id"))
	}
}

func (c *conversation) handle(ctx actor.Context, msg any) {
	c.idle.touch()
	switch m := msg.(type) {
	case subscribeReq:
		c.subscribe(ctx, m)
	case unsubscribeReq:
		delete(c.subs, m.conn.Id)
	case sendReq:
		c.send(ctx, m)
	case typingReq:
		c.broadcast(ctx, m.conn, typingFrame(c.id, m.by, m.state))
	case readReq:
		if m.seq > c.head {
			ctx.Send(m.conn, requestFailed{conv: c.id, ref: m.ref, err: charla.Errorf(charla.CodeBadRequest, "read seq %d is beyond the head %d", m.seq, c.head)})
			break
		}
		ctx.Send(c.deps.store, readCursorReq{conv: c.id, user: m.by.ID, seq: m.seq})
		ctx.Send(c.deps.inbox, convRead{conv: c.id, user: m.by, seq: m.seq})
		c.broadcast(ctx, m.conn, readFrame(c.id, m.by, m.seq))
		if _, _, wa := c.id.WhatsApp(); wa && c.deps.whatsapp != nil && m.by.Role != charla.RoleCustomer {
			ctx.Send(c.deps.whatsapp, markReadReq{conv: c.id, seq: m.seq})
		}
		if m.confirm {
			ctx.Send(m.conn, readDone{conv: c.id, ref: m.ref, head: c.head})
		}
	}
}

// errLoadFailed answers the requests of an incarnation whose load failed;
// the next request loads the conversation again.
func errLoadFailed() *charla.Error {
	return charla.Errorf(charla.CodeUnavailable, "conversation could not be loaded; retry")
}

func (c *conversation) onLoaded(ctx actor.Context, m loaded) {
	if m.err != nil {
		c.deps.log.Error().Err(m.err).Str("conv", string(c.id)).Msg("conversation load failed")
		for _, w := range c.waiting {
			failRequest(ctx, w, errLoadFailed())
		}
		c.waiting = nil
		c.loadFailed = true
		// Stop through the conversations actor so that nothing routed to us
		// meanwhile is lost; the next request loads again.
		ctx.Send(ctx.Parent(), passivateReq{conv: c.id, pid: ctx.Self()})
		return
	}
	c.loaded = true
	c.deps.stats.ConversationsLoaded.Add(1)
	c.head = m.head
	for _, msg := range m.recent {
		c.dedup.add(msg.ClientMsgID, ackInfo{msg.Seq, msg.TS})
		c.ring.push(msg.Seq, encodeMsg(msg))
	}
	waiting := c.waiting
	c.waiting = nil
	for _, w := range waiting {
		c.handle(ctx, w)
	}
	c.stopIfDone(ctx) // asked to stop while loading
}

func (c *conversation) subscribe(ctx actor.Context, m subscribeReq) {
	c.subs[m.conn.Id] = m.conn
	// A since beyond the head is clamped to it: the conversation has nothing
	// there, and the seqs the client believes it has will be given to new
	// messages, which it must receive. The subscribed frame says so.
	since := min(m.since, c.head)
	if m.since > c.head {
		c.deps.log.Warn().Str("conv", string(c.id)).Uint64("since", uint64(m.since)).Uint64("head", uint64(c.head)).Bool("resume", m.resume).Msg("subscriber ahead of the head")
	}
	reply := subscribeReply{conv: c.id, ref: m.ref, head: c.head, resume: m.resume, since: since}
	if since == c.head {
		reply.complete = true
	} else if first := c.ring.first(); first != 0 && first <= since+1 {
		reply.complete = true
		reply.recent = c.ring.after(since)
	}
	ctx.Send(m.conn, reply)
}

func (c *conversation) send(ctx actor.Context, m sendReq) {
	cmid := m.msg.ClientMsgID
	if a, ok := c.dedup.get(cmid); ok {
		c.deps.stats.Duplicates.Add(1)
		ctx.Send(m.conn, sendReply{conv: c.id, ref: m.ref, ack: c.ack(cmid, a, true)})
		c.observeAck(m.at)
		return
	}
	if p, ok := c.byCMID[cmid]; ok {
		p.waiters = append(p.waiters, waiter{m.conn, m.ref, m.at})
		return
	}
	p := &pendingSend{msg: m.msg, waiters: []waiter{{m.conn, m.ref, m.at}}}
	c.pending = append(c.pending, p)
	c.byCMID[cmid] = p
	c.flush(ctx)
}

// flush hands the pending sends to the store unless a batch is in flight:
// one batch at a time keeps the conversation's order the store's order.
func (c *conversation) flush(ctx actor.Context) {
	if len(c.inflight) > 0 || len(c.pending) == 0 {
		return
	}
	c.inflight, c.pending = c.pending, nil
	msgs := make([]charla.Message, len(c.inflight))
	for i, p := range c.inflight {
		msgs[i] = p.msg
	}
	ctx.Send(c.deps.store, appendReq{conv: c.id, head: c.head, msgs: msgs, replyTo: ctx.Self()})
}

func (c *conversation) onAppended(ctx actor.Context, m appendDone) {
	batch := c.inflight
	c.inflight = nil
	if len(batch) == 0 {
		return // the answer to a batch of our previous incarnation
	}
	if c.deps.cluster != nil {
		// The batch's own error, or that of its messages the store fenced
		// while storing the others (one error for them all).
		c.dropFenced(append([]error{m.err}, m.errs...))
	}
	var durable []charla.Message // told to the inbox, once for the batch
	for i, p := range batch {
		delete(c.byCMID, p.msg.ClientMsgID)
		err := m.err
		if err == nil && m.errs != nil {
			err = m.errs[i]
		}
		if err != nil {
			reply := charla.Errorf(charla.CodeUnavailable, "message not stored; resend with the same client_msg_id")
			if errors.Is(err, store.ErrInvalid) {
				reply = charla.Errorf(charla.CodeBadRequest, "the store refused this message")
			}
			for _, w := range p.waiters {
				ctx.Send(w.conn, sendReply{conv: c.id, ref: w.ref, err: reply})
			}
			continue
		}
		r := m.results[i]
		a := ackInfo{r.Seq, r.TS}
		c.dedup.add(p.msg.ClientMsgID, a)
		// The sender hears first: its ack is the latency it feels.
		for j, w := range p.waiters {
			ctx.Send(w.conn, sendReply{conv: c.id, ref: w.ref, ack: c.ack(p.msg.ClientMsgID, a, r.Duplicate || j > 0)})
			c.observeAck(w.at)
		}
		if !r.Duplicate {
			msg := p.msg
			msg.Seq, msg.TS = r.Seq, r.TS
			c.head = r.Seq
			// One delivery for every subscriber, sent by pointer: as a value
			// each Send boxed a copy (a third of what a fan-out to 100
			// subscribers allocated). Receivers never modify it.
			d := &delivery{conv: c.id, seq: r.Seq, frame: encodeMsg(msg)}
			c.ring.push(d.seq, d.frame)
			for _, s := range c.subs {
				ctx.Send(s, d)
			}
			durable = append(durable, msg)
			c.deps.stats.MessagesIn.Add(1)
		} else {
			c.deps.stats.Duplicates.Add(1)
		}
	}
	if len(durable) > 0 {
		ctx.Send(c.deps.inbox, convAppended{conv: c.id, msgs: durable})
	}
	c.flush(ctx)
	c.stopIfDone(ctx)
}

// dropFenced tells the leases of the shards a write was fenced on: another
// node owns them now, and this one must stop writing them at once (its
// conversations of those shards are moved by the change that follows). The
// senders get unavailable, and their retries reach the new owner.
func (c *conversation) dropFenced(errs []error) {
	var fenced *store.FencedError
	i := slices.IndexFunc(errs, func(err error) bool { return errors.As(err, &fenced) })
	if i < 0 {
		return
	}
	err := errs[i]
	c.deps.stats.Cluster.Fenced.Add(1)
	for _, f := range fenced.Fences {
		if f.Holds {
			c.deps.cluster.Placement.Lost(f.Shard, f.Held)
		}
	}
	c.deps.log.Warn().Err(err).Str("conv", string(c.id)).Msg("write fenced: another node owns the conversation now")
}

// observeAck records a send→ack latency, for sends whose start is known.
func (c *conversation) observeAck(at time.Time) {
	if !at.IsZero() {
		c.deps.stats.hist.SendAck.Observe(time.Since(at).Seconds())
	}
}

func (c *conversation) ack(cmid string, a ackInfo, dup bool) wire.Ack {
	return wire.Ack{Type: wire.TypeAck, Conv: c.id, ClientMsgID: cmid, Seq: a.seq, TS: a.ts, Duplicate: dup}
}

// broadcast relays frame to every subscriber but from (nil: to all).
func (c *conversation) broadcast(ctx actor.Context, from *actor.PID, frame []byte) {
	relayTo(ctx, c.subs, from, relay{conv: c.id, frame: frame})
}

// relayTo sends r to every one of subs but from (nil: to all).
func relayTo(ctx actor.Context, subs map[string]*actor.PID, from *actor.PID, r relay) {
	p := &r // one for every subscriber, as deliveries
	for id, s := range subs {
		if from == nil || id != from.Id {
			ctx.Send(s, p)
		}
	}
}

// idleClock unloads an actor of the conversations actor's (a conversation
// or its stand-in for a remote owner) once it has been idle for the idle
// timeout with nothing owed: it asks its parent, so that nothing routed to
// it meanwhile is lost.
type idleClock struct {
	last  time.Time
	timer *time.Timer
}

func (i *idleClock) touch() { i.last = time.Now() }

func (i *idleClock) arm(ctx actor.Context, d *deps, after time.Duration) {
	i.stop()
	i.timer = sendAfter(d.root, after, ctx.Self(), idleCheck{})
}

// check asks the parent to passivate conv unless it is busy or was active
// within the timeout; it checks again later otherwise.
func (i *idleClock) check(ctx actor.Context, d *deps, conv charla.ConvID, busy bool) {
	idle := time.Since(i.last)
	if idle < d.cfg.IdleTimeout || busy {
		i.arm(ctx, d, max(d.cfg.IdleTimeout-idle, time.Second))
		return
	}
	ctx.Send(ctx.Parent(), passivateReq{conv: conv, pid: ctx.Self()})
}

func (i *idleClock) stop() {
	if i.timer != nil {
		i.timer.Stop()
	}
}

// busy: something is owed to a client. A load slower than the idle timeout
// counts, or the requests waiting on it would be failed by the unload.
func (c *conversation) busy() bool {
	loading := !c.loaded && !c.loadFailed
	return loading || len(c.waiting) > 0 || len(c.pending) > 0 || len(c.inflight) > 0
}

func (c *conversation) stopIfDone(ctx actor.Context) {
	if c.passivating && !c.busy() {
		ctx.Stop(ctx.Self())
	}
}

// abandon answers everything this incarnation still owes before it goes: the
// request being handled (if it panicked), sends not yet durable, and
// subscribers, who re-subscribe and lose nothing.
func (c *conversation) abandon(ctx actor.Context, err *charla.Error) {
	c.idle.stop()
	if s, isSend := c.current.(sendReq); c.current != nil && (!isSend || c.byCMID[s.msg.ClientMsgID] == nil) {
		failRequest(ctx, c.current, err)
	}
	for _, p := range append(c.inflight, c.pending...) {
		for _, w := range p.waiters {
			ctx.Send(w.conn, sendReply{conv: c.id, ref: w.ref, err: err})
		}
	}
	for _, w := range c.waiting {
		failRequest(ctx, w, err)
	}
	for _, s := range c.subs {
		ctx.Send(s, convReset{conv: c.id})
	}
	c.pending, c.inflight, c.waiting, c.current = nil, nil, nil, nil
	clear(c.subs)
	clear(c.byCMID)
}

// failRequest answers a request that will not be handled.
func failRequest(ctx actor.Context, req any, err *charla.Error) {
	switch r := req.(type) {
	case sendReq:
		ctx.Send(r.conn, sendReply{conv: r.msg.Conv, ref: r.ref, err: err})
	case subscribeReq:
		if r.resume {
			ctx.Send(r.conn, convReset{conv: r.conv})
		} else {
			ctx.Send(r.conn, subscribeReply{conv: r.conv, ref: r.ref, err: err})
		}
	case readReq:
		ctx.Send(r.conn, requestFailed{conv: r.conv, ref: r.ref, err: err})
	}
}

func encodeMsg(m charla.Message) []byte {
	return wire.Encode(wire.Msg{Type: wire.TypeMsg, Message: m})
}

// ring keeps the most recent deliveries of a conversation, oldest first.
// Their frames are kept back to back in one buffer, so that a conversation's
// ring is two objects without pointers: as a frame object per message, 256
// recent messages in each of 1,000 busy conversations were a quarter of a
// million objects for every garbage collection to mark, which on one core
// took the actors' CPU while it ran.
type ring struct {
	conv  charla.ConvID
	max   int
	buf   []byte     // the frames, back to back
	items []ringItem // oldest first
}

// ringItem is one delivery in a ring: its frame is buf[off:off+n].
type ringItem struct {
	seq    charla.Seq
	off, n int
}

// push keeps a copy of frame, the delivery of seq.
func (r *ring) push(seq charla.Seq, frame []byte) {
	if r.max <= 0 {
		return
	}
	if len(r.items) >= 2*r.max {
		// Keep the newest max-1: amortised, a push moves one frame.
		keep := r.items[len(r.items)-r.max+1:]
		base := len(r.buf)
		if len(keep) > 0 {
			base = keep[0].off
		}
		r.buf = r.buf[:copy(r.buf, r.buf[base:])]
		r.items = r.items[:copy(r.items, keep)]
		for i := range r.items {
			r.items[i].off -= base
		}
	}
	r.items = append(r.items, ringItem{seq: seq, off: len(r.buf), n: len(frame)})
	r.buf = append(r.buf, frame...)
}

// first is the oldest seq kept, 0 when empty.
func (r *ring) first() charla.Seq {
	if len(r.items) == 0 {
		return 0
	}
	return r.items[0].seq
}

// after returns the kept deliveries with seq > since, their frames copied
// out (the buffer is reused) into one allocation.
func (r *ring) after(since charla.Seq) []delivery {
	i := 0
	if first := r.first(); since+1 > first {
		i = int(since + 1 - first)
	}
	if i >= len(r.items) {
		return nil
	}
	items := r.items[i:]
	base, last := items[0].off, items[len(items)-1]
	frames := append([]byte(nil), r.buf[base:last.off+last.n]...)
	out := make([]delivery, len(items))
	for k, it := range items {
		off := it.off - base
		out[k] = delivery{conv: r.conv, seq: it.seq, frame: frames[off : off+it.n : off+it.n]}
	}
	return out
}
