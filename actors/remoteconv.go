package actors

import (
	"strconv"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/wire"
)

// remoteConv stands, on this node, for a conversation another node owns
// (cluster mode). The conn actors talk to it exactly as to a conversation;
// it forwards their requests to the owner over the bus and answers them with
// the owner's answers. Its subscribers are this node's conns: the owner sends
// each durable message once to this node, and remoteConv fans it out here.
// A conn's seq check makes a frame lost or repeated on the way harmless (it
// replays from the store), as for any subscriber.
type remoteConv struct {
	id    charla.ConvID
	owner string
	deps  *deps

	subs map[string]*actor.PID // this node's subscribers, by PID id
	// latest is the ref of each subscriber's latest subscribe: the answer
	// to an earlier one is stale (its since is behind what the conn has
	// since received) and must not reset the conn's cursor.
	latest  map[string]string
	pending map[string]remotePending
	nextRef uint64
	tick    *time.Timer
	idle    idleClock
}

// remotePending is a request forwarded to the owner and not answered yet.
type remotePending struct {
	req      any // the conn's request, for failRequest and the answer's ref
	deadline time.Time
}

// remoteTick checks the pending requests' deadlines.
type remoteTick struct{}

// resubscribe asks the owner again for a conn's re-subscription that failed
// (ref), unless the conn has subscribed again since.
type resubscribe struct {
	req subscribeReq
	ref string
}

// resubscribeAfter spaces a conn's re-subscriptions while the owner refuses
// them: during a lease's change of hands, the old owner refuses until this
// node sees the new one, and answering the conn at once would have it ask
// again at once, a loop between two nodes at network speed.
const resubscribeAfter = 300 * time.Millisecond

func newRemoteConv(id charla.ConvID, owner string, d *deps) *remoteConv {
	return &remoteConv{id: id, owner: owner, deps: d, subs: map[string]*actor.PID{}, latest: map[string]string{}, pending: map[string]remotePending{}}
}

func (r *remoteConv) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.idle.touch()
		r.idle.arm(ctx, r.deps, r.deps.cfg.IdleTimeout)
	case subscribeReq:
		r.idle.touch()
		r.subs[m.conn.Id] = m.conn
		r.ask(ctx, m, peerEnvelope{Kind: peerSubscribe, By: m.by, Since: m.since})
	case unsubscribeReq:
		if _, ok := r.subs[m.conn.Id]; !ok {
			return
		}
		delete(r.subs, m.conn.Id)
		delete(r.latest, m.conn.Id)
		if len(r.subs) == 0 {
			r.publish(peerEnvelope{Kind: peerUnsubscribe}) // the owner stops sending us its frames
		}
	case sendReq:
		r.idle.touch()
		msg := m.msg
		r.ask(ctx, m, peerEnvelope{Kind: peerSend, Msg: &msg})
	case typingReq:
		// The owner relays to every node but ours (our relay is the one
		// subscriber it excludes): the others here hear it from us.
		r.publish(peerEnvelope{Kind: peerTyping, By: m.by, State: m.state})
		r.broadcast(ctx, m.conn, typingFrame(r.id, m.by, m.state))
	case readReq:
		r.idle.touch()
		r.ask(ctx, m, peerEnvelope{Kind: peerRead, By: m.by, Seq: m.seq})
	case statusNote:
		r.publish(peerEnvelope{Kind: peerStatus, Frame: m.frame})
	case ownerFrame:
		r.onOwner(ctx, m.env)
	case remoteTick:
		r.tick = nil
		r.expire(ctx)
	case resubscribe:
		if _, ok := r.subs[m.req.conn.Id]; ok && r.latest[m.req.conn.Id] == m.ref {
			r.ask(ctx, m.req, peerEnvelope{Kind: peerSubscribe, By: m.req.by, Since: m.req.since})
		}
	case idleCheck:
		r.idle.check(ctx, r.deps, r.id, len(r.subs) > 0 || len(r.pending) > 0)
	case passivate:
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		r.stop(ctx)
	}
}

// ask forwards req to the owner and remembers it until the answer comes.
func (r *remoteConv) ask(ctx actor.Context, req any, env peerEnvelope) {
	// Unique across this node's proxies and processes, not only within this
	// proxy: an answer to a request of an earlier proxy of the same
	// conversation (stopped when the shard moved and came back), or of this
	// node's previous process, must match nothing here.
	r.nextRef++
	ref := r.deps.cluster.incarnation + "/" + ctx.Self().Id + "#" + strconv.FormatUint(r.nextRef, 36)
	env.Ref = ref
	if s, ok := req.(subscribeReq); ok {
		r.latest[s.conn.Id] = ref
	}
	if err := r.publish(env); err != nil {
		r.fail(ctx, ref, req, charla.Errorf(charla.CodeUnavailable, "the node that owns %s cannot be reached; retry", r.id))
		return
	}
	r.pending[ref] = remotePending{req: req, deadline: time.Now().Add(r.deps.cluster.RequestTimeout)}
	r.deps.stats.Cluster.Forwarded.Add(1)
	if r.tick == nil {
		r.tick = sendAfter(r.deps.root, r.deps.cluster.RequestTimeout/4+time.Millisecond, ctx.Self(), remoteTick{})
	}
}

func (r *remoteConv) publish(env peerEnvelope) error {
	env.From, env.Conv = r.deps.cluster.Node, r.id
	err := r.deps.cluster.Bus.Publish(r.deps.cluster.reqSubject(r.owner), env.encode())
	if err != nil {
		r.deps.log.Warn().Err(err).Str("conv", string(r.id)).Str("owner", r.owner).Msg("request to the owner node not sent")
	}
	return err
}

func (r *remoteConv) onOwner(ctx actor.Context, e peerEnvelope) {
	switch e.Kind {
	case peerMsg:
		d := &delivery{conv: r.id, seq: e.Seq, frame: e.Frame}
		for _, s := range r.subs {
			ctx.Send(s, d)
		}
		return
	case peerRelay:
		r.broadcast(ctx, nil, e.Frame)
		return
	case peerReset:
		for _, s := range r.subs {
			ctx.Send(s, convReset{conv: r.id})
		}
		return
	}
	p, ok := r.pending[e.Ref]
	if !ok {
		return // answered already: it timed out
	}
	delete(r.pending, e.Ref)
	switch req := p.req.(type) {
	case subscribeReq:
		if r.latest[req.conn.Id] != e.Ref {
			return // superseded by a later subscribe of the same conn
		}
		if e.Kind == peerFailed || e.Err != nil {
			r.fail(ctx, e.Ref, req, e.Err)
			return
		}
		recent := make([]delivery, len(e.Recent))
		for i, d := range e.Recent {
			recent[i] = delivery{conv: r.id, seq: d.Seq, frame: d.Frame}
		}
		ctx.Send(req.conn, subscribeReply{conv: r.id, ref: req.ref, head: e.Head, recent: recent,
			complete: e.Complete, resume: req.resume, since: e.Since})
	case sendReq:
		if e.Ack == nil {
			r.fail(ctx, e.Ref, req, e.Err)
			return
		}
		ctx.Send(req.conn, sendReply{conv: r.id, ref: req.ref, ack: *e.Ack})
	case readReq:
		if e.Kind != peerReadDone {
			r.fail(ctx, e.Ref, req, e.Err)
			return
		}
		r.broadcast(ctx, req.conn, readFrame(r.id, req.by, req.seq))
		if req.confirm {
			ctx.Send(req.conn, readDone{conv: r.id, ref: req.ref, head: e.Head})
		}
	}
}

// fail answers req (asked as ref) with err (unavailable when the owner gave
// none) and forgets a subscriber whose subscription failed.
func (r *remoteConv) fail(ctx actor.Context, ref string, req any, err *charla.Error) {
	if err == nil {
		err = charla.Errorf(charla.CodeUnavailable, "the node that owns %s did not answer; retry", r.id)
	}
	if s, ok := req.(subscribeReq); ok {
		if s.resume {
			// The conn already has its subscribed frame: it keeps waiting,
			// and we ask again (this proxy is replaced when the owner
			// changes, and the conn then re-subscribes through routing).
			sendAfter(r.deps.root, resubscribeAfter, ctx.Self(), resubscribe{req: s, ref: ref})
			return
		}
		delete(r.subs, s.conn.Id)
		delete(r.latest, s.conn.Id)
	}
	failRequest(ctx, req, err)
}

func (r *remoteConv) expire(ctx actor.Context) {
	now := time.Now()
	for ref, p := range r.pending {
		if now.After(p.deadline) {
			delete(r.pending, ref)
			if s, ok := p.req.(subscribeReq); ok && r.latest[s.conn.Id] != ref {
				continue // superseded: nobody waits for it
			}
			r.deps.stats.Cluster.Unanswered.Add(1)
			r.fail(ctx, ref, p.req, nil)
		}
	}
	if len(r.pending) > 0 {
		r.tick = sendAfter(r.deps.root, r.deps.cluster.RequestTimeout/4+time.Millisecond, ctx.Self(), remoteTick{})
	}
}

// broadcast sends an ephemeral frame to every subscriber here but from.
func (r *remoteConv) broadcast(ctx actor.Context, from *actor.PID, frame []byte) {
	relayTo(ctx, r.subs, from, relay{conv: r.id, frame: frame})
}

// stop answers what is pending and hands the subscribers back to routing:
// the owner moved (or this node took the conversation), and their
// re-subscription reaches whoever owns it now.
func (r *remoteConv) stop(ctx actor.Context) {
	if r.tick != nil {
		r.tick.Stop()
	}
	r.idle.stop()
	for ref, p := range r.pending {
		delete(r.pending, ref)
		failRequest(ctx, p.req, charla.Errorf(charla.CodeUnavailable, "%s moved to another node; retry", r.id))
	}
	if len(r.subs) > 0 {
		r.publish(peerEnvelope{Kind: peerUnsubscribe})
	}
	for _, s := range r.subs {
		ctx.Send(s, convReset{conv: r.id})
	}
	clear(r.subs)
	clear(r.latest)
}

func typingFrame(conv charla.ConvID, by charla.Sender, state string) []byte {
	return wire.Encode(wire.Typing{Type: wire.TypeTyping, Conv: conv, User: by.ID, State: state})
}

func readFrame(conv charla.ConvID, by charla.Sender, seq charla.Seq) []byte {
	return wire.Encode(wire.Read{Type: wire.TypeRead, Conv: conv, User: by.ID, Seq: seq})
}
