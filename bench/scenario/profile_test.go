package scenario

import (
	"os"
	"strconv"
	"testing"
	"time"

	"charla/bench/result"
	"charla/transport/transporttest"
)

// TestProfileSteady runs steady against an in-process engine for as many
// seconds as CHARLA_BENCH_PROFILE_SECONDS says (skipped when unset), so
// that the engine's hot path can be profiled without a pprof endpoint:
//
//	CHARLA_BENCH_PROFILE_SECONDS=20 go test -run TestProfileSteady -cpuprofile cpu.prof ./bench/scenario/
//	go tool pprof -top -focus 'charla/(actors|transport|store)' scenario.test cpu.prof
//
// The profile holds the bench's clients too; -focus keeps the engine's part.
// CHARLA_BENCH_PROFILE_RATE and _CONNS change the load (default 3000 msg/s,
// 1000 connections in 100 conversations).
func TestProfileSteady(t *testing.T) {
	secs, _ := strconv.Atoi(os.Getenv("CHARLA_BENCH_PROFILE_SECONDS"))
	if secs <= 0 {
		t.Skip("set CHARLA_BENCH_PROFILE_SECONDS to run")
	}
	rate, conns := 3000.0, 1000
	if v, err := strconv.ParseFloat(os.Getenv("CHARLA_BENCH_PROFILE_RATE"), 64); err == nil && v > 0 {
		rate = v
	}
	if v, err := strconv.Atoi(os.Getenv("CHARLA_BENCH_PROFILE_CONNS")); err == nil && v > 0 {
		conns = v
	}
	e := transporttest.Start(t)
	res := runScenario(t, "steady", Options{Addr: e.Addr, Conns: conns, Convs: max(1, conns/10), Rate: rate,
		Duration: time.Duration(secs) * time.Second}, Env{Log: testLog{t}, ProgressInterval: 5 * time.Second})
	t.Logf("acked %d (%.0f/s), lost %d, duplicated %d, send→ack p50 %.2f p99 %.2f ms, send→deliver p99 %.2f ms",
		res.Acked, res.ThroughputPerS, res.Lost, res.Duplicated, res.LatencyMS[result.SendAck].P50,
		res.LatencyMS[result.SendAck].P99, res.LatencyMS[result.SendDeliver].P99)
}
