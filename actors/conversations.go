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
}

// routed is implemented by every request a conversation handles: target is
// the conversation, requester who asks (zero for requests that never load a
// conversation).
type routed interface {
	target() charla.ConvID
	requester() charla.Sender
}

type routedEnvelope struct {
	msg    any
	sender *actor.PID
}

// stopAll asks every conversation to finish what it has in flight and stop;
// it is answered with allStopped once none is left.
type stopAll struct{}
type allStopped struct{}

type sweepTick struct{}

func newConversations(d *deps) *conversations {
	return &conversations{
		deps:     d,
		children: map[charla.ConvID]*actor.PID{},
		byPID:    map[string]charla.ConvID{},
		stopping: map[charla.ConvID][]routedEnvelope{},
		owned:    map[string]int{},
		ownerOf:  map[string]string{},
	}
}

func (s *conversations) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.armSweep(ctx)
	case routed:
		s.route(ctx, m)
	case passivateReq:
		conv, ok := s.byPID[m.pid.Id]
		if cur := s.children[conv]; !ok || cur == nil || cur.Id != m.pid.Id {
			return
		}
		delete(s.children, conv)
		s.stopping[conv] = nil
		ctx.Send(m.pid, passivate{})
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
			delete(s.children, conv)
			s.stopping[conv] = nil
			ctx.Send(pid, passivate{})
		}
		s.replyWhenEmpty(ctx, ctx.Sender())
	case *actor.Stopping, *actor.Restarting:
		if s.sweep != nil {
			s.sweep.Stop()
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

func (s *conversations) route(ctx actor.Context, m routed) {
	conv := m.target()
	if s.closing {
		if sub, ok := m.(subscribeReq); ok && sub.resume {
			return // answering would only make the conn ask again; it is closing too
		}
		failRequest(ctx, m, charla.Errorf(charla.CodeUnavailable, "server is shutting down"))
		return
	}
	if buf, ok := s.stopping[conv]; ok {
		s.stopping[conv] = append(buf, routedEnvelope{m, ctx.Sender()})
		return
	}
	pid, ok := s.children[conv]
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
		pid = s.spawn(ctx, conv)
		if by.Role == charla.RoleCustomer {
			s.owned[by.ID]++
			s.ownerOf[pid.Id] = by.ID
		}
	}
	ctx.Forward(pid)
}

func (s *conversations) spawn(ctx actor.Context, conv charla.ConvID) *actor.PID {
	d := s.deps
	props := actor.PropsFromProducer(func() actor.Actor { return newConversation(conv, d) }, actor.WithDispatcher(d.dispatcher))
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
	s.peak = max(s.peak, len(s.byPID))
	return pid
}

func (s *conversations) onTerminated(ctx actor.Context, who *actor.PID) {
	conv, ok := s.byPID[who.Id]
	if !ok {
		return
	}
	delete(s.byPID, who.Id)
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
	if s.closing {
		for _, e := range buf {
			s.route(ctx, e.msg.(routed))
		}
	} else if len(buf) > 0 {
		pid := s.spawn(ctx, conv)
		for _, e := range buf {
			ctx.RequestWithCustomSender(pid, e.msg, e.sender)
		}
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
