package scenario

import (
	"context"
	"os"
	"time"

	"charla/bench/engine"
	"charla/bench/result"
)

// The idle goals of DESIGN.md.
const (
	idleConnsGoal      = 100000
	idleBytesPerConn   = 20 * 1024
	heartbeatRTTGoalMS = 50
)

func runIdle(ctx context.Context, o Options, _ Env, r *run) error {
	if err := r.start(false, 0); err != nil {
		return err
	}
	r.memBefore(ctx)
	benchBefore, _ := engine.RSS(os.Getpid())
	ms := r.newMembers(o.Conns, 1, 0)
	for _, m := range ms {
		m.Conv = "" // idle clients subscribe to nothing
	}
	n := r.connect(ctx, ms)
	if n == 0 {
		return r.needAll(n, o.Conns)
	}
	// Let the engine settle (its per-connection state is allocated on the
	// first frames) before reading its memory.
	time.Sleep(time.Second)
	r.memAfter(ctx, n)
	benchAfter, _ := engine.RSS(os.Getpid())

	r.rep.SetPhase("hold")
	sample := min(o.PingSample, int(n))
	if sample <= 0 {
		sample = min(1000, int(n))
	}
	interval := o.PingInterval
	if interval <= 0 {
		interval = 5 * time.Second
		if hb := r.res.Engine.HeartbeatMS; hb > 0 {
			interval = time.Duration(hb) * time.Millisecond
		}
	}
	live := connected(ms)
	start := time.Now()
	r.f.PingLoop(ctx, live[:min(sample, len(live))], interval, o.Duration)
	if rest := o.Duration - time.Since(start); rest > 0 {
		sleepCtx(ctx, rest)
	}
	r.measured = time.Since(start)

	// Memory again at the end of the hold: it should not have grown.
	rss := r.rss()
	r.res.Details["engine_rss_end_bytes"] = float64(rss)
	r.res.Engine.RSSMaxBytes = max(r.res.Engine.RSSMaxBytes, rss)
	var beats int64
	for _, m := range live {
		if c := m.Conn(); c != nil {
			beats += c.Heartbeats()
		}
	}
	if len(live) > 0 {
		r.res.Details["server_heartbeats_per_conn"] = float64(beats) / float64(len(live))
	}
	r.res.Details["ping_sample"] = float64(sample)
	if benchBefore > 0 && benchAfter > 0 {
		r.res.Details["bench_rss_per_conn_bytes"] = float64(benchAfter-benchBefore) / float64(n)
	}
	still := int64(len(connected(ms)))
	r.res.Details["connected_at_end"] = float64(still)

	r.res.AddGoal("connections", "conns", idleConnsGoal, float64(n), false)
	if r.res.Engine.RSSPerConnBytes > 0 {
		r.res.AddGoal("engine RSS per connection", "bytes", idleBytesPerConn, r.res.Engine.RSSPerConnBytes, true)
	}
	if r.f.RTT.Hist.Count() > 0 {
		r.res.AddLatency(result.HeartbeatRTT, r.f.RTT)
		r.res.AddGoal("heartbeat RTT p99", "ms", heartbeatRTTGoalMS, r.res.LatencyMS[result.HeartbeatRTT].P99, true)
	}
	if n < int64(o.Conns) {
		r.res.Fail("only %d of %d connections opened", n, o.Conns)
	}
	if still < n {
		r.res.Fail("%d healthy connections were closed while idle", n-still)
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
