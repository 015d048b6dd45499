package actors

import (
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
}

// routed is implemented by every request a conversation handles.
type routed interface{ target() charla.ConvID }

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
	case *actor.Stopping:
		if s.sweep != nil {
			s.sweep.Stop()
		}
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
		if _, unsub := m.(unsubscribeReq); unsub {
			return // nothing to leave: do not load a conversation for that
		}
		pid = s.spawn(ctx, conv)
	}
	ctx.Forward(pid)
}

func (s *conversations) spawn(ctx actor.Context, conv charla.ConvID) *actor.PID {
	d := s.deps
	props := actor.PropsFromProducer(func() actor.Actor { return newConversation(conv, d) }, actor.WithDispatcher(d.dispatcher))
	pid := ctx.Spawn(props)
	s.deps.stats.ConversationsActive.Add(1)
	s.children[conv] = pid
	s.byPID[pid.Id] = conv
	return pid
}

func (s *conversations) onTerminated(ctx actor.Context, who *actor.PID) {
	conv, ok := s.byPID[who.Id]
	if !ok {
		return
	}
	delete(s.byPID, who.Id)
	s.deps.stats.ConversationsActive.Add(-1)
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
