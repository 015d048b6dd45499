package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
)

// backoffStrategy restarts a failed child alone (one-for-one) after an
// exponential delay, and stops it when it fails more than maxFailures times
// within window. Its mailbox stays suspended meanwhile, so requests wait
// rather than hit a half-built actor. (protoactor's own "exponential"
// strategy is linear and never gives up.)
type backoffStrategy struct {
	maxFailures int
	window      time.Duration
	base, cap   time.Duration
	log         zerolog.Logger
	stats       *Stats
}

func (s backoffStrategy) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, rs *actor.RestartStatistics, reason any, msg any) {
	rs.Fail()
	n := rs.NumberOfFailures(s.window)
	if n > s.maxFailures {
		s.log.Error().Str("component", child.Id).Interface("reason", reason).Int("failures", n).Msg("actor failed too often; stopping it")
		sup.StopChildren(child)
		return
	}
	s.stats.restart(child.Id)
	delay := s.base << min(n-1, 16)
	if delay > s.cap || delay <= 0 {
		delay = s.cap
	}
	s.log.Warn().Str("component", child.Id).Interface("reason", reason).Str("message", typeName(msg)).Dur("restart_in", delay).Msg("actor failed; restarting it alone")
	time.AfterFunc(delay, func() { sup.RestartChildren(child) })
}

// stopStrategy stops a failed child: right for conn actors, whose client
// simply reconnects.
type stopStrategy struct{ log zerolog.Logger }

func (s stopStrategy) HandleFailure(_ *actor.ActorSystem, sup actor.Supervisor, child *actor.PID, _ *actor.RestartStatistics, reason any, msg any) {
	s.log.Error().Str("component", child.Id).Interface("reason", reason).Str("message", typeName(msg)).Msg("actor failed; stopping it")
	sup.StopChildren(child)
}

func typeName(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprintf("%T", v)
}

// releaseStoppedChild runs on every *actor.Terminated of a parent whose
// children come and go (the gateway's conns). It works around protoactor's
// PIDSet.Remove (at the version we use), which shrinks the children slice
// without clearing the slot it vacates: the stale *PID there caches the dead
// child's process (mailbox, context, actor), so up to the peak number of
// children stay pinned. (conversations avoids the set altogether: see its
// spawn.) By the time Receive sees Terminated protoactor has removed the
// child, so the vacated slot is the one just past the slice's end; Children
// returns that very slice, which only changes on the parent's goroutine.
func releaseStoppedChild(ctx actor.Context) {
	if kids := ctx.Children(); len(kids) < cap(kids) {
		kids[:len(kids)+1][len(kids)] = nil
	}
}
