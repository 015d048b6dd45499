package scenario

import (
	"context"
	"time"

	"charla/bench/client"
	"charla/bench/fleet"
	"charla/bench/stats"
)

// The protocol's per-client outbound cap (PROTOCOL.md, guarantee 5): the
// engine's memory may grow by at most this much per slow consumer.
const queueCapBytes = 4 << 20

func runSlow(ctx context.Context, o Options, _ Env, r *run) error {
	slowN := o.Slow
	if slowN <= 0 {
		slowN = max(1, o.Conns/10)
	}
	if err := r.start(false, slowN); err != nil {
		return err
	}
	r.memBefore(ctx)
	normal := r.newMembers(o.Conns, o.Convs, 0)
	slow := r.newMembers(slowN, o.Convs, o.Conns)
	recv := o.SlowRecvBuf
	if recv <= 0 {
		recv = 4096
	}
	for _, m := range slow {
		m.RecvBufferBytes = recv
	}
	all := append(append([]*fleet.Member(nil), normal...), slow...)
	n := r.connect(ctx, all)
	if err := r.needAll(n, len(all)); err != nil {
		return err
	}
	if err := r.subscribe(ctx, all); err != nil {
		return err
	}
	half := o.Duration / 2

	// Phase 1: everyone reads. Its latency is the baseline.
	base := &fleet.Phase{SendAck: stats.NewHistogram(), SendDeliver: stats.NewHistogram()}
	r.f.SetPhase(base)
	r.sendPhase(ctx, normal, o.Rate, half)
	rssBaseline := r.rss()

	// Phase 2: the slow ones stop reading; the engine owes them nothing
	// more (it is expected to close them with 4008).
	for _, m := range slow {
		m.ExpectClose()
		if s := m.Sub(); s != nil {
			s.Break("slow consumer by design")
		}
		if c := m.Conn(); c != nil {
			c.Stall()
		}
	}
	loaded := &fleet.Phase{SendAck: stats.NewHistogram(), SendDeliver: stats.NewHistogram()}
	r.f.SetPhase(loaded)
	r.rep.SetPhase("slow")
	start := time.Now()
	r.f.Pace(ctx, normal, o.Rate, o.Duration-half, o.Workers)
	r.measured += time.Since(start)
	r.f.SetPhase(nil)
	rssLoaded := r.rss()
	maxDuringSlow := r.rep.MaxRSS()
	r.drain(ctx, normal)
	r.memAfter(ctx, 0) // memory per connection is idle's figure; here messages dominate

	// Let the slow ones read again: each should find its connection closed.
	r.rep.SetPhase("check slow")
	var closed4008, closedOther, open int
	for _, m := range slow {
		if c := m.Conn(); c != nil {
			c.Release()
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, m := range slow {
		c := m.Conn()
		if c == nil {
			continue
		}
		t := time.NewTimer(max(time.Until(deadline), time.Millisecond))
		select {
		case <-c.Done():
			if client.CloseCode(c.Err()) == 4008 {
				closed4008++
			} else {
				closedOther++
			}
		case <-t.C:
			open++
		}
		t.Stop()
	}

	res := r.res
	r.finishLatencies()
	b, l := base.SendDeliver.Summary(), loaded.SendDeliver.Summary()
	res.Details["baseline_send_deliver_p99_ms"] = b.P99
	res.Details["slow_phase_send_deliver_p99_ms"] = l.P99
	res.Details["baseline_send_ack_p99_ms"] = base.SendAck.Summary().P99
	res.Details["slow_phase_send_ack_p99_ms"] = loaded.SendAck.Summary().P99
	res.Details["slow_consumers"] = float64(slowN)
	res.Details["slow_closed_4008"] = float64(closed4008)
	res.Details["slow_closed_other"] = float64(closedOther)
	res.Details["slow_still_open"] = float64(open)
	res.Details["engine_rss_baseline_bytes"] = float64(rssBaseline)
	res.Details["engine_rss_slow_end_bytes"] = float64(rssLoaded)
	if b.P99 > 0 {
		res.Details["deliver_p99_ratio"] = l.P99 / b.P99
		res.AddGoal("send→deliver p99, slow phase / baseline", "x", 2, l.P99/b.P99, true)
	}
	if rssBaseline > 0 {
		growth := float64(max(maxDuringSlow, rssLoaded) - rssBaseline)
		res.Details["engine_rss_growth_bytes"] = growth
		res.AddGoal("engine RSS growth during slow phase (≤ slow × 4 MiB)", "bytes", float64(slowN)*queueCapBytes, growth, true)
	}
	res.AddGoal("slow consumers closed by the engine", "conns", float64(slowN), float64(closed4008+closedOther), false)
	return nil
}
