package actors

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/bot"
	"charla/store"
)

// BotConfig is the chatbot's settings.
type BotConfig struct {
	// bot-flow: the flow the bot follows; nil turns the bot off (the
	// engine's default is bot.Default; the tree's, for tests, is off).
	Flow *bot.Flow
	// bot-session-timeout: a session idle this long saves its state and
	// stops; the customer's next message resumes it.
	SessionTimeout time.Duration
	// bot-session-sweep: how often sessions are checked for idleness
	// beside each one's own timer.
	SweepInterval time.Duration
}

// DefaultBotConfig is 15 minutes of idleness, a sweep every 5, no flow.
func DefaultBotConfig() BotConfig {
	return BotConfig{SessionTimeout: 15 * time.Minute, SweepInterval: 5 * time.Minute}
}

func (c BotConfig) problems() []error {
	var errs []error
	if c.SessionTimeout <= 0 {
		errs = append(errs, fmt.Errorf("bot-session-timeout must be positive (got %s)", c.SessionTimeout))
	}
	if c.SweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("bot-session-sweep must be positive (got %s)", c.SweepInterval))
	}
	return errs
}

// botStore is what the chatbot needs of a store; without it sessions live
// in memory only (an expired one starts over).
type botStore interface {
	SaveBotSession(ctx context.Context, b store.BotSession) error
	LoadBotSession(ctx context.Context, conv charla.ConvID) (store.BotSession, bool, error)
}

// botInput is a customer's message in a pending conversation, for its bot
// session (from the inbox).
type botInput struct {
	conv     charla.ConvID
	customer string
	msg      charla.Message
}

// Session lifecycle between a bot session and the bots actor (the
// conversations actor's passivation, for sessions).
type (
	botExpireReq struct{ pid *actor.PID }
	botExpire    struct{}
)

// bots supervises one session actor per conversation the bot serves,
// spawned on the first customer message and stopped when idle. Routing
// through here makes expiry safe as for conversations: inputs for a
// session that is saving wait here, then go to a fresh one that loads what
// it saved.
type bots struct {
	d        *deps
	st       botStore
	children map[charla.ConvID]*actor.PID
	byPID    map[string]charla.ConvID
	stopping map[charla.ConvID][]botInput
	peak     int
	sweep    *time.Timer

	closing     bool
	stopWaiters []*actor.PID
}

func newBots(d *deps, st store.Store) *bots {
	b := &bots{d: d, children: map[charla.ConvID]*actor.PID{}, byPID: map[string]charla.ConvID{}, stopping: map[charla.ConvID][]botInput{}}
	if bs, ok := st.(botStore); ok {
		b.st = bs
	}
	return b
}

func (b *bots) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		b.armSweep(ctx)
	case botInput:
		b.route(ctx, m)
	case botExpireReq:
		conv, ok := b.byPID[m.pid.Id]
		if cur := b.children[conv]; !ok || cur == nil || cur.Id != m.pid.Id {
			return
		}
		delete(b.children, conv)
		b.stopping[conv] = nil
		ctx.Send(m.pid, botExpire{})
	case *actor.Terminated:
		b.onTerminated(ctx, m.Who)
	case sweepTick:
		for _, pid := range b.children {
			ctx.Send(pid, idleCheck{})
		}
		b.armSweep(ctx)
	case stopAll:
		b.closing = true
		for conv, pid := range b.children {
			delete(b.children, conv)
			b.stopping[conv] = nil
			ctx.Send(pid, botExpire{})
		}
		b.stopWaiters = append(b.stopWaiters, ctx.Sender())
		b.notifyIfEmpty(ctx)
	case *actor.Stopping, *actor.Restarting:
		if b.sweep != nil {
			b.sweep.Stop()
		}
		for id := range b.byPID {
			ctx.Stop(actor.NewPID(ctx.ActorSystem().Address(), id))
		}
		b.d.stats.BotSessions.Add(-int64(len(b.byPID)))
	}
}

func (b *bots) route(ctx actor.Context, m botInput) {
	if b.closing {
		return // the customer's message is stored; the bot answers the next one
	}
	if buf, ok := b.stopping[m.conv]; ok {
		b.stopping[m.conv] = append(buf, m)
		return
	}
	pid, ok := b.children[m.conv]
	if !ok {
		pid = b.spawn(ctx, m.conv, m.customer)
	}
	ctx.Send(pid, m)
}

func (b *bots) spawn(ctx actor.Context, conv charla.ConvID, customer string) *actor.PID {
	d, st := b.d, b.st
	props := actor.PropsFromProducer(func() actor.Actor { return newBotSession(d, st, conv, customer) }, actor.WithDispatcher(d.dispatcher))
	// Not ctx.Spawn, for the reason conversations.spawn gives: protoactor's
	// children set would pin every expired session's memory.
	name := ctx.Self().Id + "/" + ctx.ActorSystem().ProcessRegistry.NextId()
	pid, err := actor.DefaultSpawner(ctx.ActorSystem(), name, props, ctx)
	if err != nil {
		panic(fmt.Sprintf("spawn bot session %s: %v", conv, err))
	}
	b.d.stats.BotSessions.Add(1)
	b.children[conv] = pid
	b.byPID[pid.Id] = conv
	b.peak = max(b.peak, len(b.byPID))
	return pid
}

func (b *bots) onTerminated(ctx actor.Context, who *actor.PID) {
	conv, ok := b.byPID[who.Id]
	if !ok {
		return
	}
	delete(b.byPID, who.Id)
	b.d.stats.BotSessions.Add(-1)
	b.d.stats.BotSessionsExpired.Add(1)
	if cur := b.children[conv]; cur != nil && cur.Id == who.Id {
		delete(b.children, conv)
	}
	// Go maps keep the buckets of their peak: rebuild them once a burst
	// of sessions has gone, as conversations.shrink does.
	if b.peak >= 1024 && len(b.byPID) <= b.peak/4 {
		b.children, b.byPID, b.stopping = maps.Clone(b.children), maps.Clone(b.byPID), maps.Clone(b.stopping)
		b.peak = len(b.byPID)
	}
	buf, wasStopping := b.stopping[conv]
	delete(b.stopping, conv)
	if wasStopping && !b.closing && len(buf) > 0 {
		pid := b.spawn(ctx, conv, buf[0].customer)
		for _, m := range buf {
			ctx.Send(pid, m)
		}
	}
	b.notifyIfEmpty(ctx)
}

func (b *bots) armSweep(ctx actor.Context) {
	b.sweep = sendAfter(b.d.root, b.d.cfg.Bot.SweepInterval, ctx.Self(), sweepTick{})
}

func (b *bots) notifyIfEmpty(ctx actor.Context) {
	if len(b.byPID) > 0 || len(b.stopWaiters) == 0 {
		return
	}
	for _, w := range b.stopWaiters {
		ctx.Send(w, allStopped{})
	}
	b.stopWaiters = nil
}
