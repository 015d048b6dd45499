package scenario

import (
	"context"
	"testing"
	"time"

	"charla/actors"
	"charla/bench/engine"
	"charla/bench/result"
	"charla/transport/transporttest"
)

// These tests run the scenarios against the real engine, in process, over
// real loopback WebSockets.

func TestE2ESteady(t *testing.T) {
	e := transporttest.Start(t)
	res := runScenario(t, "steady", Options{Addr: e.Addr, Conns: 40, Convs: 8, Rate: 500, Duration: 3 * time.Second}, env(t))
	t.Logf("acked %d delivered %d ack p99 %.2f ms deliver p99 %.2f ms", res.Acked, res.Delivered,
		res.LatencyMS[result.SendAck].P99, res.LatencyMS[result.SendDeliver].P99)
	if res.Lost != 0 || res.Duplicated != 0 || res.Reordered != 0 {
		t.Fatalf("lost %d duplicated %d reordered %d: %v", res.Lost, res.Duplicated, res.Reordered, res.Problems)
	}
	if res.Acked == 0 || res.Delivered != res.Acked*5 {
		t.Fatalf("acked %d delivered %d (want 5 deliveries per message)", res.Acked, res.Delivered)
	}
	if !res.OK {
		t.Fatalf("failures %v, errors %v", res.Failures, res.ErrorSamples)
	}
}

func TestE2ESilentDrop(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.HeartbeatInterval = 200 * time.Millisecond
		c.HeartbeatTimeout = 600 * time.Millisecond
	}))
	res := runScenario(t, "silent-drop", Options{Addr: e.Addr, Conns: 30, Silent: 10, Duration: time.Second}, env(t))
	d := res.LatencyMS[result.Detect]
	t.Logf("detect p50 %.0f ms max %.0f ms, timeout %d ms", d.P50, d.Max, res.Engine.TimeoutMS)
	if !res.OK || d.Count != 10 {
		t.Fatalf("failures %v details %v", res.Failures, res.Details)
	}
}

type harnessRestarter struct{ e *transporttest.Engine }

func (h harnessRestarter) PID() int    { return 0 }
func (h harnessRestarter) Cmd() string { return "transporttest" }
func (h harnessRestarter) Restart(context.Context) (engine.RestartTimes, error) {
	rt := engine.RestartTimes{Signaled: time.Now()}
	h.e.Restart()
	rt.Exited, rt.Ready = rt.Signaled, time.Now()
	return rt, nil
}

func TestE2EReconnectStorm(t *testing.T) {
	e := transporttest.Start(t)
	en := env(t)
	en.Engine = harnessRestarter{e}
	res := runScenario(t, "reconnect-storm", Options{Addr: e.Addr, Conns: 30, Convs: 5, Rate: 200, Duration: 3 * time.Second,
		RestartAfter: time.Second, BackoffBase: 50 * time.Millisecond, BackoffCap: 500 * time.Millisecond}, en)
	t.Logf("acked %d, resumed %v clients, all back %.2fs after accepting", res.Acked, res.Details["resumed_clients"], res.Details["all_resumed_after_accepting_s"])
	if res.Lost != 0 || res.Duplicated != 0 || res.Acked == 0 {
		t.Fatalf("lost %d duplicated %d acked %d: %v", res.Lost, res.Duplicated, res.Acked, res.Problems)
	}
	if !res.OK {
		t.Fatalf("failures %v, errors %v", res.Failures, res.ErrorSamples)
	}
}
