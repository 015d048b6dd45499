package scenario

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"charla/bench/client"
	"charla/bench/fleet"
	"charla/bench/stats"
)

func runSilentDrop(ctx context.Context, o Options, _ Env, r *run) error {
	if o.Silent <= 0 || o.Silent > o.Conns {
		return fmt.Errorf("--silent must be in 1..--conns (got %d of %d)", o.Silent, o.Conns)
	}
	if err := r.start(false, 0); err != nil {
		return err
	}
	r.memBefore(ctx)
	ms := r.newMembers(o.Conns, 1, 0)
	for _, m := range ms {
		m.Conv = ""
	}
	n := r.connect(ctx, ms)
	if err := r.needAll(n, o.Conns); err != nil {
		return err
	}
	timeout := o.HeartbeatTimeout
	if timeout <= 0 {
		timeout = time.Duration(r.res.Engine.TimeoutMS) * time.Millisecond
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	wait := o.DetectWait
	if wait <= 0 {
		wait = 3 * timeout
	}
	r.memAfter(ctx, n)

	// Everyone answers heartbeats for a moment, so that the silent ones
	// start from a fresh "last seen" on the engine's side.
	r.rep.SetPhase("settle")
	sleepCtx(ctx, min(2*time.Second, timeout/2))

	perm := rand.Perm(len(ms))
	silent := make([]*fleet.Member, o.Silent)
	for i := range silent {
		silent[i] = ms[perm[i]]
	}
	detect := stats.NewLatency(time.Now())
	var (
		mu       sync.Mutex
		silentAt time.Time
		left     atomic.Int64
		over     atomic.Int64
		codes    = map[uint16]int64{}
		allDone  = make(chan struct{})
	)
	left.Store(int64(len(silent)))
	for _, m := range silent {
		m.ExpectClose()
		m.OnClose = func(_ *fleet.Member, err error, at time.Time) {
			mu.Lock()
			d := at.Sub(silentAt)
			codes[client.CloseCode(err)]++
			mu.Unlock()
			detect.Record(at, d)
			if d > timeout {
				over.Add(1)
			}
			if left.Add(-1) == 0 {
				close(allDone)
			}
		}
	}
	r.rep.SetPhase("silent")
	mu.Lock()
	silentAt = time.Now()
	for _, m := range silent {
		if c := m.Conn(); c != nil {
			c.Silence()
		}
	}
	mu.Unlock()
	t := time.NewTimer(wait)
	select {
	case <-allDone:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
	r.measured = time.Since(silentAt)

	detected := int64(len(silent)) - left.Load()
	res := r.res
	res.AddLatency("detect", detect)
	res.Details["silent"] = float64(len(silent))
	res.Details["detected"] = float64(detected)
	res.Details["over_timeout"] = float64(over.Load())
	res.Details["timeout_ms"] = float64(timeout.Milliseconds())
	mu.Lock()
	for code, k := range codes {
		res.Details[fmt.Sprintf("close_code_%d", code)] = float64(k)
	}
	mu.Unlock()
	isSilent := make(map[*fleet.Member]bool, len(silent))
	for _, m := range silent {
		isSilent[m] = true
	}
	healthyClosed := int64(0)
	for _, m := range ms {
		if !m.Connected() && !isSilent[m] {
			healthyClosed++
		}
	}
	res.Details["healthy_closed"] = float64(healthyClosed)
	res.AddGoal("silent client detected (max)", "ms", float64(timeout.Milliseconds()), res.LatencyMS["detect"].Max, true)
	res.AddGoal("silent client detected (p99)", "ms", float64(timeout.Milliseconds()), res.LatencyMS["detect"].P99, true)
	if undetected := int64(len(silent)) - detected; undetected > 0 {
		res.Fail("%d of %d silent clients were still open %v after going silent", undetected, len(silent), wait)
	}
	if healthyClosed > 0 {
		res.Fail("%d clients that kept answering were closed", healthyClosed)
	}
	if ctx.Err() != nil {
		return errors.New("interrupted")
	}
	return nil
}
