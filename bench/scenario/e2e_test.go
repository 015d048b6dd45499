package scenario

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"charla/actors"
	"charla/bench/engine"
	"charla/bench/result"
	"charla/soapbridge/soapsim"
	"charla/transport/transporttest"
)

// These tests run the scenarios against the real engine, in process, over
// real loopback WebSockets.

// steady over each transport: the same ledger verdict (nothing lost,
// duplicated or reordered; every member of a conversation gets every
// message) whether the clients use WebSockets, long-polling or both.
func TestE2ESteady(t *testing.T) {
	for _, tc := range []struct {
		transport string
		split     bool // latencies split by transport
	}{
		{transport: ""},
		{transport: "poll"},
		{transport: TransportBoth, split: true},
	} {
		t.Run("transport="+tc.transport, func(t *testing.T) {
			e := transporttest.Start(t)
			res := runScenario(t, "steady", Options{Addr: e.Addr, Conns: 40, Convs: 8, Rate: 500, Duration: 3 * time.Second, Transport: tc.transport}, env(t))
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
			if !tc.split {
				return
			}
			ws, poll := res.LatencyMS[result.SendDeliver+"_ws"], res.LatencyMS[result.SendDeliver+"_poll"]
			t.Logf("deliver p50/p99: ws %.2f/%.2f ms, poll %.2f/%.2f ms", ws.P50, ws.P99, poll.P50, poll.P99)
			if ws.Count == 0 || poll.Count == 0 || ws.Count+poll.Count != res.LatencyMS[result.SendDeliver].Count {
				t.Fatalf("deliveries by transport: ws %d + poll %d, all %d", ws.Count, poll.Count, res.LatencyMS[result.SendDeliver].Count)
			}
		})
	}
}

// An idle long-polling fleet holds its sessions on polls alone: nobody is
// closed by the heartbeat timeout, and pings over POST /v1/frames come back
// as pongs on the polls.
func TestE2EIdlePoll(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.HeartbeatInterval = 200 * time.Millisecond
		c.HeartbeatTimeout = 600 * time.Millisecond
	}))
	res := runScenario(t, "idle", Options{Addr: e.Addr, Conns: 20, Duration: 2 * time.Second, PingSample: 5,
		PingInterval: 100 * time.Millisecond, Transport: "poll"}, env(t))
	if !res.OK || res.Details["connected_at_end"] != 20 {
		t.Fatalf("failures %v, errors %v, details %v", res.Failures, res.ErrorSamples, res.Details)
	}
	if res.LatencyMS[result.HeartbeatRTT].Count == 0 {
		t.Fatalf("no pong came back over the polls: %v", res.LatencyMS)
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

// The inventory scenario against the real engine whose SOAP bridge points at
// an in-process simulator, with timeouts and a cool-down small enough for
// the four phases to pass in a few seconds.
func TestE2EInventory(t *testing.T) {
	sim, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim.Handler())
	t.Cleanup(func() {
		sim.Close() // releases hanging calls, or hs.Close would wait for them
		hs.Close()
	})
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.SOAP.URL = hs.URL
		c.SOAP.Timeout = 400 * time.Millisecond
		c.SOAP.Retries = 1
		c.SOAP.BackoffBase, c.SOAP.BackoffMax = 20*time.Millisecond, 50*time.Millisecond
		c.SOAP.Breaker = actors.BreakerConfig{Failures: 3, Cooldown: 700 * time.Millisecond}
	}))
	res := runScenario(t, "inventory", Options{Addr: e.Addr, Conns: 6, Convs: 2, Rate: 60, Duration: 2 * time.Second,
		SOAPAdmin: hs.URL, InventoryRate: 150, SOAPLatency: 100 * time.Millisecond, BreakerWait: 10 * time.Second}, env(t))
	d := res.Details
	t.Logf("hit rate %.3f, slow p50 %.1f p99 %.1f ms, chat p99 healthy %.2f hang %.2f ms, open after %.2fs, closed %.2fs after recovery",
		d["hit_rate"], d["inventory_slow_p50_ms"], d["inventory_slow_p99_ms"], d["chat_send_ack_p99_ms_healthy"],
		d["chat_send_ack_p99_ms_hang"], d["hang_to_breaker_open_s"], d["recovery_to_breaker_closed_s"])
	if !res.OK {
		t.Fatalf("failures %v, errors %v, details %v", res.Failures, res.ErrorSamples, d)
	}
	if d["inventory_healthy_requests"] < 100 || d["hit_rate"] <= 0 || d["hit_rate"] >= 1 {
		t.Fatalf("healthy phase: %v requests, hit rate %v", d["inventory_healthy_requests"], d["hit_rate"])
	}
	if d["inventory_healthy_getstock_calls"] == 0 || d["inventory_unanswered"] != 0 {
		t.Fatalf("calls %v, unanswered %v", d["inventory_healthy_getstock_calls"], d["inventory_unanswered"])
	}
	// A miss waits for the simulator's 100 ms; hits do not.
	if p99 := d["inventory_slow_p99_ms"]; p99 < 100 || p99 > 2000 {
		t.Fatalf("slow phase p99 %v ms", p99)
	}
	if d["chat_send_ack_p99_ms_healthy"] <= 0 || d["chat_send_ack_p99_ms_hang"] <= 0 || res.Acked == 0 || res.Lost != 0 {
		t.Fatalf("chat: acked %d lost %d, details %v", res.Acked, res.Lost, d)
	}
	if d["hang_to_breaker_open_s"] <= 0 || d["recovery_to_breaker_closed_s"] <= 0 || d["recovery_to_breaker_closed_s"] > 5 {
		t.Fatalf("breaker: open after %v s, closed %v s after recovery", d["hang_to_breaker_open_s"], d["recovery_to_breaker_closed_s"])
	}
	if d["inventory_hang_stale"]+d["inventory_hang_refused_retry_after"]+d["inventory_hang_answered"] == 0 {
		t.Fatalf("hang phase: no answers: %v", d)
	}
	if res.LatencyMS["inventory_slow"].Count == 0 || res.LatencyMS["send_ack_hang"].Count == 0 {
		t.Fatalf("latencies %v", res.LatencyMS)
	}
	if f := sim.Faults(); f.Hang != 0 || f.LatencyMS != 0 {
		t.Fatalf("faults left on the simulator: %+v", f)
	}
}
