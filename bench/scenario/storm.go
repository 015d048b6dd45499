package scenario

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"charla/bench/engine"
	"charla/bench/fleet"
)

// The reconnect goal of DESIGN.md: after an engine restart 10,000 clients
// reconnect and resume within 5 s.
const resumeGoal = 5 * time.Second

func runStorm(ctx context.Context, o Options, env Env, r *run) error {
	if env.Engine == nil {
		return errors.New("reconnect-storm restarts the engine: give --engine-cmd (the bench starts it) or --engine-pid (something else restarts it)")
	}
	restartAfter := o.RestartAfter
	if restartAfter <= 0 {
		restartAfter = o.Duration / 3
	}
	if restartAfter >= o.Duration {
		return fmt.Errorf("--restart-after %v must be shorter than --duration %v", restartAfter, o.Duration)
	}
	if err := r.start(true, 0); err != nil {
		return err
	}
	// During the restart, writes to dying connections fail and the engine
	// may refuse sends while it shuts down; the fleet resends those
	// messages after reconnecting, and the ledger judges the outcome.
	r.tolerated = []string{"send: ", "send deferred (unavailable)"}
	r.memBefore(ctx)
	ms := r.newMembers(o.Conns, o.Convs, 0)
	n := r.connect(ctx, ms)
	if err := r.needAll(n, o.Conns); err != nil {
		return err
	}
	if err := r.subscribe(ctx, ms); err != nil {
		return err
	}
	r.memAfter(ctx, 0) // memory per connection is idle's figure; here messages dominate

	var wg sync.WaitGroup
	sendStart := time.Now()
	wg.Go(func() { r.f.Pace(ctx, ms, o.Rate, o.Duration, o.Workers) })
	r.rep.SetPhase("send")
	sleepCtx(ctx, restartAfter)

	r.rep.SetPhase("restart")
	fmt.Fprintf(env.Log, "reconnect-storm: restarting the engine\n")
	r.cpuCheckpoint()
	rt, rerr := env.Engine.Restart(ctx)
	r.cpuStart, r.cpuPID = 0, r.pid() // the new process counts from its start
	if rerr != nil {
		wg.Wait()
		r.measured = time.Since(sendStart)
		r.drain(ctx, ms)
		return fmt.Errorf("restart engine: %w", rerr)
	}
	r.res.Engine.Restarts++
	r.res.Engine.PID = env.Engine.PID()
	fmt.Fprintf(env.Log, "reconnect-storm: engine down %.2fs (signal → accepting)\n", rt.Ready.Sub(rt.Signaled).Seconds())

	r.rep.SetPhase("reconnect")
	allBack, back := waitResumed(ctx, ms, rt, o.ReconnectWindowOrDefault())
	r.rep.SetPhase("send")
	wg.Wait()
	r.measured = time.Since(sendStart)
	r.drain(ctx, ms)
	r.res.Engine.RSSAfterBytes = r.rss()

	res := r.res
	res.Details["restart_signal_to_exit_s"] = rt.Exited.Sub(rt.Signaled).Seconds()
	res.Details["restart_signal_to_accepting_s"] = rt.Ready.Sub(rt.Signaled).Seconds()
	res.Details["resumed_clients"] = float64(back)
	res.Details["reconnects"] = float64(r.f.Stats().Reconnects)
	if !allBack.IsZero() {
		res.Details["all_resumed_after_accepting_s"] = allBack.Sub(rt.Ready).Seconds()
		res.Details["all_resumed_after_signal_s"] = allBack.Sub(rt.Signaled).Seconds()
		res.AddGoal("all clients resumed after the engine accepts again", "s", resumeGoal.Seconds(), allBack.Sub(rt.Ready).Seconds(), true)
	} else {
		res.Fail("%d of %d clients were not reconnected and resubscribed within %v", int(n)-back, n, o.ReconnectWindowOrDefault())
	}
	return nil
}

// ReconnectWindowOrDefault is the reconnect window with its default.
func (o Options) ReconnectWindowOrDefault() time.Duration {
	if o.ReconnectWindow > 0 {
		return o.ReconnectWindow
	}
	return 60 * time.Second
}

// waitResumed polls until every member has resumed (reconnected and
// resubscribed) since the restart signal and returns the moment the last
// one first did, or the zero time if not all did within window, and how many
// are back.
func waitResumed(ctx context.Context, ms []*fleet.Member, rt engine.RestartTimes, window time.Duration) (time.Time, int) {
	deadline := rt.Ready.Add(window)
	back := 0
	for n := 0; n < 1_000_000; n++ {
		back = 0
		var last time.Time
		for _, m := range ms {
			if at := m.FirstResumeAfter(rt.Signaled); !at.IsZero() {
				back++
				if at.After(last) {
					last = at
				}
			}
		}
		if back == len(ms) {
			return last, back
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return time.Time{}, back
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Time{}, back
}
