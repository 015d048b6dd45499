package scenario

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla/bench/engine"
	"charla/bench/internal/fakeengine"
	"charla/bench/result"
	"charla/soapbridge"
)

// Two goroutines of the in-process engine of TestE2EInventory outlive it by
// design: the inventory cache's expirable LRU cleaner, which never exits
// (see soapbridge.Cache), and protoactor's dead-letter throttle, a one-shot
// timer that ends on its own within its interval (timers of the soap actor
// fire into the stopped system). Everything else must be gone.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(soapbridge.CacheGoroutine),
		goleak.IgnoreAnyFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
}

func fake(t *testing.T, o fakeengine.Options) *fakeengine.Engine {
	t.Helper()
	e, err := fakeengine.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Helper()
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func env(t *testing.T) Env {
	return Env{Log: testLog{t}, ProgressInterval: 250 * time.Millisecond}
}

func runScenario(t *testing.T, name string, o Options, e Env) *result.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := Run(ctx, name, o, e)
	if err != nil {
		t.Fatalf("run %s: %v", name, err)
	}
	return res
}

func TestSteadyOnAFaithfulEngine(t *testing.T) {
	e := fake(t, fakeengine.Options{})
	res := runScenario(t, "steady", Options{Addr: e.Addr, Conns: 20, Convs: 4, Rate: 400, Duration: time.Second, Drain: 5 * time.Second}, env(t))
	if !res.OK || res.Lost != 0 || res.Duplicated != 0 || res.Acked == 0 {
		t.Fatalf("result %+v", res)
	}
	if res.Acked < 300 || res.Delivered != res.Acked*5 {
		t.Fatalf("acked %d delivered %d: every message reaches its conversation's 5 subscribers", res.Acked, res.Delivered)
	}
	if s := res.LatencyMS[result.SendAck]; s.Count != res.Acked || s.P50 <= 0 {
		t.Fatalf("send_ack %+v", s)
	}
	if s := res.LatencyMS[result.SendDeliver]; s.Count != res.Delivered {
		t.Fatalf("send_deliver %+v vs %d deliveries", s, res.Delivered)
	}
	if res.ThroughputPerS <= 0 || len(res.Timeline) == 0 || len(res.Goals) == 0 || res.Engine.HeartbeatMS != 5000 {
		t.Fatalf("result lacks figures: %+v", res)
	}
}

// The bench must notice an engine that loses or duplicates deliveries,
// and fail the run for it.
func TestSteadyCatchesLossAndDuplication(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    fakeengine.Options
		bad  func(*result.Result) bool
	}{
		{"drop", fakeengine.Options{DropEvery: 17}, func(r *result.Result) bool { return r.Lost > 0 }},
		{"duplicate", fakeengine.Options{DuplicateEvery: 13}, func(r *result.Result) bool { return r.Duplicated > 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := fake(t, tc.o)
			res := runScenario(t, "steady", Options{Addr: e.Addr, Conns: 6, Convs: 2, Rate: 200, Duration: 500 * time.Millisecond, Drain: time.Second}, env(t))
			if res.OK || !tc.bad(res) || res.ExitCode() != 1 || len(res.Problems) == 0 {
				t.Fatalf("a faulty engine passed: ok=%v lost=%d dup=%d failures=%v", res.OK, res.Lost, res.Duplicated, res.Failures)
			}
		})
	}
}

func TestFanout(t *testing.T) {
	e := fake(t, fakeengine.Options{})
	res := runScenario(t, "fanout", Options{Addr: e.Addr, Conns: 50, Rate: 50, Duration: time.Second, Senders: 2}, env(t))
	if !res.OK || res.Acked == 0 || res.Delivered != res.Acked*50 {
		t.Fatalf("fanout: ok=%v acked=%d delivered=%d failures=%v", res.OK, res.Acked, res.Delivered, res.Failures)
	}
}

func TestIdle(t *testing.T) {
	e := fake(t, fakeengine.Options{Heartbeat: 100 * time.Millisecond, Timeout: time.Second})
	res := runScenario(t, "idle", Options{Addr: e.Addr, Conns: 50, Duration: 600 * time.Millisecond, PingSample: 10, PingInterval: 100 * time.Millisecond}, env(t))
	if !res.OK || res.Conns.Connected != 50 || res.LatencyMS[result.HeartbeatRTT].Count == 0 || res.Details["server_heartbeats_per_conn"] < 1 {
		t.Fatalf("idle: %+v", res)
	}
	if res.Conns.ConnectRatePerS <= 0 || res.LatencyMS[result.Connect].Count != 50 {
		t.Fatalf("connect figures missing: %+v", res.Conns)
	}
}

func TestSilentDrop(t *testing.T) {
	e := fake(t, fakeengine.Options{Heartbeat: 100 * time.Millisecond, Timeout: 400 * time.Millisecond})
	res := runScenario(t, "silent-drop", Options{Addr: e.Addr, Conns: 40, Silent: 15, Duration: time.Second}, env(t))
	if !res.OK || res.Details["detected"] != 15 || res.Details["healthy_closed"] != 0 {
		t.Fatalf("silent-drop: ok=%v details=%v failures=%v", res.OK, res.Details, res.Failures)
	}
	d := res.LatencyMS[result.Detect]
	if d.Count != 15 || d.Max > 1000 || d.P50 <= 0 {
		t.Fatalf("detect %+v", d)
	}
	if res.Details["close_code_4008"] != 15 {
		t.Fatalf("close codes: %v", res.Details)
	}
}

type fakeRestarter struct{ e *fakeengine.Engine }

func (f fakeRestarter) PID() int    { return 0 }
func (f fakeRestarter) Cmd() string { return "fake" }
func (f fakeRestarter) Restart(context.Context) (engine.RestartTimes, error) {
	rt := engine.RestartTimes{Signaled: time.Now()}
	f.e.Restart(200 * time.Millisecond)
	rt.Exited, rt.Ready = rt.Signaled, time.Now()
	return rt, nil
}

func TestReconnectStorm(t *testing.T) {
	e := fake(t, fakeengine.Options{})
	en := env(t)
	en.Engine = fakeRestarter{e}
	res := runScenario(t, "reconnect-storm", Options{Addr: e.Addr, Conns: 30, Convs: 3, Rate: 300, Duration: 2 * time.Second,
		RestartAfter: 500 * time.Millisecond, BackoffBase: 50 * time.Millisecond, BackoffCap: 200 * time.Millisecond}, en)
	if !res.OK || res.Lost != 0 || res.Duplicated != 0 || res.Details["resumed_clients"] != 30 || res.Engine.Restarts != 1 {
		t.Fatalf("storm: ok=%v lost=%d dup=%d details=%v failures=%v errors=%v", res.OK, res.Lost, res.Duplicated, res.Details, res.Failures, res.ErrorSamples)
	}
	if res.LatencyMS[result.Reconnect].Count < 30 {
		t.Fatalf("reconnect latency %+v", res.LatencyMS[result.Reconnect])
	}
}

func TestReconnectStormNeedsAnEngine(t *testing.T) {
	_, err := Run(context.Background(), "reconnect-storm", Options{Addr: "127.0.0.1:1", Conns: 1, Duration: time.Second}, Env{})
	if err == nil || !strings.Contains(err.Error(), "--engine-cmd") {
		t.Fatalf("err = %v", err)
	}
}

func TestSlowConsumer(t *testing.T) {
	e := fake(t, fakeengine.Options{QueueFrames: 64, SendBuffer: 8192})
	res := runScenario(t, "slow-consumer", Options{Addr: e.Addr, Conns: 6, Convs: 1, Rate: 200, Duration: 2 * time.Second, Slow: 2, BodySize: 2000}, env(t))
	if !res.OK || res.Lost != 0 {
		t.Fatalf("slow-consumer: ok=%v lost=%d failures=%v errors=%v", res.OK, res.Lost, res.Failures, res.ErrorSamples)
	}
	if res.Details["slow_closed_4008"]+res.Details["slow_closed_other"] != 2 {
		t.Fatalf("slow consumers not closed: %v", res.Details)
	}
	if res.Details["baseline_send_deliver_p99_ms"] <= 0 || res.Details["slow_phase_send_deliver_p99_ms"] <= 0 {
		t.Fatalf("phase latencies missing: %v", res.Details)
	}
}

func TestUnknownScenarioAndBadOptions(t *testing.T) {
	if _, err := Run(context.Background(), "nope", Options{}, Env{}); err == nil || !strings.Contains(err.Error(), "steady") {
		t.Fatalf("err = %v", err)
	}
	_, err := Run(context.Background(), "steady", Options{}, Env{})
	if err == nil || !strings.Contains(err.Error(), "--addr") || !strings.Contains(err.Error(), "--conns") {
		t.Fatalf("err = %v", err)
	}
	if len(List()) != 9 {
		t.Fatal("nine scenarios (node-kill added for the cluster)")
	}
}
