package actors

import (
	"fmt"
	"maps"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
)

// conversations supervises one conversation actor per active conversation
// and routes every request to it, spawning it on first use. Routing through
// here is what makes passivation safe: once a conversation is asked to stop,
// its requests wait here until it has, and then go to a fresh incarnation
// that reloads from the store, so two actors never write one conversation.
type conversations struct {
	deps     *deps
	children map[charla.ConvID]*actor.PID
	byPID    map[string]charla.ConvID
	// stopping holds requests for conversations that are passivating.
	stopping map[charla.ConvID][]routedEnvelope
	sweep    *time.Timer
	// closing is set by stopAll: requests are refused from then on.
	closing     bool
	stopWaiters []*actor.PID
	// peak is the most conversations alive since the maps were last built.
	peak int
	// owned counts the live conversations a customer's requests loaded, by
	// customer; ownerOf is the customer of each (by PID id).
	owned   map[string]int
	ownerOf map[string]string
	// remote is, in cluster mode, the owner node of each child that stands
	// for a conversation another node owns (a remoteConv), by PID id.
	remote map[string]string
	// epochs is, in cluster mode, the lease epoch each conversation actor
	// here was loaded under, by PID id: one loaded under an older epoch
	// may hold what another owner has changed since (its head, its recent
	// messages), so it is replaced, not reused, when the shard comes back.
	epochs map[string]uint64
	// unowned holds requests for conversations of a shard no node owns at
	// the moment (a lease expiring or changing hands); they are routed
	// again when an owner shows up or at the next retry tick.
	unowned    []routedEnvelope
	retryTimer *time.Timer
}

// routed is implemented by every request a conversation handles: target is
// the conversation, requester who asks (zero for requests that never load a
// conversation).
type routed interface {
	target() charla.ConvID
	requester() charla.Sender
}

type routedEnvelope struct {
	msg    routed
	sender *actor.PID
	// remote: another node forwarded it (remoteReq). However often it is
	// routed (held while its conversation passivates, then routed again),
	// it is taken only by a conversation this node owns, never forwarded.
	remote bool
}

// stopAll asks every conversation to finish what it has in flight and stop;
// it is answered with allStopped once none is left.
type stopAll struct{}
type allStopped struct{}

type sweepTick struct{}

// unownedRetry routes the requests held for want of an owner again.
type unownedRetry struct{}

// unownedRetryEvery is how often requests held for want of an owner are
// routed again: about the time a lease takes to change hands after a
// graceful leave, short against one expiring after a crash.
const unownedRetryEvery = 500 * time.Millisecond

func newConversations(d *deps) *conversations {
	return &conversations{
		deps:     d,
		children: map[charla.ConvID]*actor.PID{},
		byPID:    map[string]charla.ConvID{},
		stopping: map[charla.ConvID][]routedEnvelope{},
		owned:    map[string]int{},
		ownerOf:  map[string]string{},
		remote:   map[string]string{},
		epochs:   map[string]uint64{},
	}
}

func (s *conversations) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.armSweep(ctx)
	case routed:
		s.route(ctx, routedEnvelope{msg: m, sender: ctx.Sender()})
	case remoteReq:
		s.route(ctx, routedEnvelope{msg: m.req, sender: ctx.Sender(), remote: true})
	case ownerFrame:
		s.onOwnerFrame(ctx, m)
	case shardChanged:
		s.onShardChanged(ctx, m.shard)
	case unownedRetry:
		s.retryTimer = nil
		s.routeUnowned(ctx)
	case passivateReq:
		conv, ok := s.byPID[m.pid.Id]
		if cur := s.children[conv]; !ok || cur == nil || cur.Id != m.pid.Id {
			return
		}
		s.passivate(ctx, conv, m.pid)
		s.deps.stats.ConversationsIdled.Add(1)
	case *actor.Terminated:
		s.onTerminated(ctx, m.Who)
	case sweepTick:
		for _, pid := range s.children {
			ctx.Send(pid, idleCheck{})
		}
		s.armSweep(ctx)
	case stopAll:
		s.closing = true
		for conv, pid := range s.children {
			s.passivate(ctx, conv, pid)
		}
		s.routeUnowned(ctx) // refused now: closing
		s.replyWhenEmpty(ctx, ctx.Sender())
	case *actor.Stopping, *actor.Restarting:
		for _, t := range []*time.Timer{s.sweep, s.retryTimer} {
			if t != nil {
				t.Stop()
			}
		}
		// Conversations are not in protoactor's children set (see spawn), so
		// protoactor does not stop them with us: stop every one still alive
		// (none after stopAll) and forget them; a next incarnation starts
		// empty, and the store holds its loads until their writes are done.
		for id := range s.byPID {
			ctx.Stop(actor.NewPID(ctx.ActorSystem().Address(), id))
		}
		s.deps.stats.ConversationsActive.Add(-int64(len(s.byPID)))
	}
}

func (s *conversations) route(ctx actor.Context, e routedEnvelope) {
	m, sender := e.msg, e.sender
	conv := m.target()
	if e.remote && !s.servesRemote(conv) {
		failRequest(ctx, m, charla.Errorf(charla.CodeUnavailable, "%s is not served by this node now; retry", conv))
		return
	}
	if s.closing {
		if sub, ok := m.(subscribeReq); ok && sub.resume {
			return // answering would only make the conn ask again; it is closing too
		}
		failRequest(ctx, m, charla.Errorf(charla.CodeUnavailable, "server is shutting down"))
		return
	}
	if buf, ok := s.stopping[conv]; ok {
		s.stopping[conv] = append(buf, e)
		return
	}
	pid, ok := s.children[conv]
	if ok && !s.current(conv, pid) {
		// Moved since it was spawned: it stops, and this request goes to
		// its successor (here or the new owner) once it has.
		s.passivate(ctx, conv, pid)
		s.deps.stats.Cluster.Moved.Add(1)
		s.stopping[conv] = append(s.stopping[conv], e)
		return
	}
	if !ok {
		switch m.(type) {
		case unsubscribeReq, statusNote:
			return // nothing to leave, nobody to tell: do not load a conversation for that
		}
		by := m.requester()
		if by.Role == charla.RoleCustomer && s.owned[by.ID] >= s.deps.cfg.MaxCustomerConversations {
			// Each loaded conversation costs memory until it idles out:
			// one customer must not be able to make the engine hold
			// thousands (the HTTP edge's rate limits come on top).
			failRequest(ctx, m, charla.Errorf(charla.CodeRateLimited,
				"%s has %d conversations open, the most one customer may; use one of them or retry when one has been idle for %s",
				by.ID, s.owned[by.ID], s.deps.cfg.IdleTimeout))
			return
		}
		owner, epoch, placed := s.placement(conv)
		if !placed {
			s.holdUnowned(ctx, e)
			return
		}
		pid = s.spawn(ctx, conv, owner, epoch)
		if by.Role == charla.RoleCustomer {
			s.owned[by.ID]++
			s.ownerOf[pid.Id] = by.ID
		}
	}
	ctx.RequestWithCustomSender(pid, m, sender)
}

// spawn starts the child of conv: its conversation actor when owner is ""
// (this node writes it, under epoch in a cluster), otherwise a remoteConv
// forwarding to owner.
func (s *conversations) spawn(ctx actor.Context, conv charla.ConvID, owner string, epoch uint64) *actor.PID {
	d := s.deps
	producer := func() actor.Actor { return newConversation(conv, d) }
	if owner != "" {
		producer = func() actor.Actor { return newRemoteConv(conv, owner, d) }
	}
	props := actor.PropsFromProducer(producer, actor.WithDispatcher(d.dispatcher))
	// Not ctx.Spawn: that also records the child in protoactor's children
	// set (a PIDSet), which at this version keeps memory of stopped children
	// for good. Its Remove leaves the vacated slot of its slice set, and the
	// stale *PID there caches the dead actor's process, so up to the peak
	// number of conversations stay pinned (mailbox, context, dedup LRU, ring,
	// timer: ~1.7 KB each); and its lookup map never shrinks from its peak.
	// DefaultSpawner makes the same child (we are its parent: its failures
	// reach our supervisor strategy, its Terminated reaches us) without that
	// set. byPID is our set; what protoactor's did besides, stopping the
	// children when we stop or restart, Receive does on Stopping/Restarting.
	name := ctx.Self().Id + "/" + ctx.ActorSystem().ProcessRegistry.NextId()
	pid, err := actor.DefaultSpawner(ctx.ActorSystem(), name, props, ctx)
	if err != nil {
		panic(fmt.Sprintf("spawn conversation %s: %v", conv, err)) // as ctx.Spawn does; the name is unique
	}
	s.deps.stats.ConversationsActive.Add(1)
	s.children[conv] = pid
	s.byPID[pid.Id] = conv
	if owner != "" {
		s.remote[pid.Id] = owner
	} else if s.deps.cluster != nil {
		s.epochs[pid.Id] = epoch
	}
	s.peak = max(s.peak, len(s.byPID))
	return pid
}

func (s *conversations) onTerminated(ctx actor.Context, who *actor.PID) {
	conv, ok := s.byPID[who.Id]
	if !ok {
		return
	}
	delete(s.byPID, who.Id)
	delete(s.remote, who.Id)
	delete(s.epochs, who.Id)
	s.deps.stats.ConversationsActive.Add(-1)
	if owner, ok := s.ownerOf[who.Id]; ok {
		delete(s.ownerOf, who.Id)
		if s.owned[owner]--; s.owned[owner] <= 0 {
			delete(s.owned, owner)
		}
	}
	s.shrink()
	if cur := s.children[conv]; cur != nil && cur.Id == who.Id {
		delete(s.children, conv) // stopped by its supervisor after too many failures
	}
	buf, wasStopping := s.stopping[conv]
	if !wasStopping {
		return
	}
	delete(s.stopping, conv)
	// Routed afresh: to a new incarnation here, refused when closing, or,
	// in cluster mode, to wherever the conversation is owned now.
	for _, e := range buf {
		s.route(ctx, e)
	}
	s.notifyIfEmpty(ctx)
}

// shrink rebuilds the maps once they hold under a quarter of their peak:
// Go maps never give back the buckets they grew, so a burst of conversations
// would otherwise keep ~100 bytes per conversation of the peak for good. The
// copy costs O(len), paid for by the 3·len removals since the peak.
func (s *conversations) shrink() {
	if s.peak < 1024 || len(s.byPID) > s.peak/4 {
		return
	}
	s.children = maps.Collect(maps.All(s.children))
	s.byPID = maps.Collect(maps.All(s.byPID))
	s.stopping = maps.Collect(maps.All(s.stopping))
	s.owned = maps.Collect(maps.All(s.owned))
	s.ownerOf = maps.Collect(maps.All(s.ownerOf))
	s.remote = maps.Collect(maps.All(s.remote))
	s.epochs = maps.Collect(maps.All(s.epochs))
	s.peak = len(s.byPID)
}

func (s *conversations) armSweep(ctx actor.Context) {
	s.sweep = sendAfter(s.deps.root, s.deps.cfg.SweepInterval, ctx.Self(), sweepTick{})
}

func (s *conversations) replyWhenEmpty(ctx actor.Context, to *actor.PID) {
	s.stopWaiters = append(s.stopWaiters, to)
	s.notifyIfEmpty(ctx)
}

func (s *conversations) notifyIfEmpty(ctx actor.Context) {
	if len(s.byPID) > 0 || len(s.stopWaiters) == 0 {
		return
	}
	for _, w := range s.stopWaiters {
		ctx.Send(w, allStopped{})
	}
	s.stopWaiters = nil
}

// passivate stops conv's child; what is routed to conv meanwhile waits in
// stopping and goes to the next incarnation, so two never overlap.
func (s *conversations) passivate(ctx actor.Context, conv charla.ConvID, pid *actor.PID) {
	delete(s.children, conv)
	s.stopping[conv] = nil
	ctx.Send(pid, passivate{})
}

// placement says where conv is written: owner "" for here (always on a
// single node; under epoch in a cluster), another node's id, or placed
// false when no node owns its shard at the moment.
func (s *conversations) placement(conv charla.ConvID) (owner string, epoch uint64, placed bool) {
	c := s.deps.cluster
	if c == nil {
		return "", 0, true
	}
	shard := c.Placement.Shard(conv)
	if epoch, mine := c.Placement.Epoch(shard); mine {
		return "", epoch, true
	}
	owner, ok := c.Placement.Owner(shard)
	if !ok || owner == c.Node {
		return "", 0, false // ours in the bucket but not held (yet, or any more)
	}
	return owner, 0, true
}

// current reports whether conv's child pid is still where conv is placed:
// a conversation actor loaded under this node's current epoch, or a proxy
// to the current owner.
func (s *conversations) current(conv charla.ConvID, pid *actor.PID) bool {
	if s.deps.cluster == nil {
		return true
	}
	owner, epoch, placed := s.placement(conv)
	return placed && owner == s.remote[pid.Id] && epoch == s.epochs[pid.Id]
}

// servesRemote reports whether a request another node forwarded for conv
// is taken here: only by a conversation this node owns. Any other is
// refused, and the asking node routes the retry by its own, newer, view of
// the leases; forwarding it on could bounce it between nodes whose views
// differ.
func (s *conversations) servesRemote(conv charla.ConvID) bool {
	owner, _, placed := s.placement(conv)
	return !s.closing && placed && owner == ""
}

// holdUnowned keeps a request until its conversation's shard has an owner.
// A client's own request is refused at once (it retries); a conn's
// re-subscription waits, as answering it would only make it ask again.
func (s *conversations) holdUnowned(ctx actor.Context, e routedEnvelope) {
	if sub, ok := e.msg.(subscribeReq); !ok || !sub.resume {
		failRequest(ctx, e.msg, charla.Errorf(charla.CodeUnavailable, "%s is changing nodes; retry", e.msg.target()))
		return
	}
	s.unowned = append(s.unowned, e)
	if s.retryTimer == nil {
		s.retryTimer = sendAfter(s.deps.root, unownedRetryEvery, ctx.Self(), unownedRetry{})
	}
}

func (s *conversations) routeUnowned(ctx actor.Context) {
	held := s.unowned
	s.unowned = nil
	for _, e := range held {
		s.route(ctx, e)
	}
}

// onShardChanged moves the shard's conversations where they now belong:
// each child that is not the right kind (ours to write, or forwarding to
// the current owner) is passivated, and what comes for it meanwhile is
// routed afresh once it has stopped. A conversation we stop writing tells
// its subscribers, here and on other nodes, to subscribe again, which
// routing takes to the new owner. Every proxy of the shard goes: its owner
// may be a new process under the same node id (restarted), which knows
// nothing of the subscriptions made with the old one.
func (s *conversations) onShardChanged(ctx actor.Context, shard int) {
	c := s.deps.cluster
	if c == nil {
		return
	}
	for conv, pid := range s.children {
		if c.Placement.Shard(conv) == shard && (s.remote[pid.Id] != "" || !s.current(conv, pid)) {
			s.passivate(ctx, conv, pid)
			s.deps.stats.Cluster.Moved.Add(1)
		}
	}
	s.routeUnowned(ctx)
}

// onOwnerFrame hands an owner's answer or frame to conv's proxy. A frame
// for a conversation this node no longer follows from that owner (its proxy
// stopped, or this node restarted under the same id) makes the owner drop
// this node's subscription, which would otherwise keep the conversation
// loaded there and its frames coming.
func (s *conversations) onOwnerFrame(ctx actor.Context, m ownerFrame) {
	e := m.env
	if pid, ok := s.children[e.Conv]; ok && s.remote[pid.Id] == e.From {
		ctx.Send(pid, m)
		return
	}
	if e.Kind != peerMsg && e.Kind != peerRelay || e.From == "" {
		return
	}
	c := s.deps.cluster
	unsub := peerEnvelope{Kind: peerUnsubscribe, From: c.Node, Conv: e.Conv}
	if err := c.Bus.Publish(c.reqSubject(e.From), unsub.encode()); err != nil {
		s.deps.log.Warn().Err(err).Str("owner", e.From).Msg("stale subscription not dropped")
	}
}
