package result

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"charla/bench/stats"
)

func sample() *Result {
	r := New("steady")
	l := stats.NewLatency(time.Now())
	for i := 1; i <= 100; i++ {
		l.Record(time.Now(), time.Duration(i)*time.Millisecond)
	}
	r.AddLatency(SendAck, l)
	r.Acked, r.Sent, r.DurationS = 100, 100, 2
	r.ThroughputPerS = 50
	r.Settings["conns"] = 10
	r.CommandLine = "charla-bench steady --addr 127.0.0.1:8080"
	r.AddGoal("send→ack p99", "ms", 25, r.LatencyMS[SendAck].P99, true)
	return r
}

// The JSON contract of results.json: the fields the issue names, with
// these exact names, always present.
func TestJSONShape(t *testing.T) {
	path := filepath.Join(t.TempDir(), "r.json")
	if err := sample().WriteJSON(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"scenario", "ok", "failures", "acked", "lost", "duplicated", "reordered", "throughput_per_s",
		"latency_ms", "machine", "settings", "command_line", "engine", "conns", "errors"} {
		if _, ok := m[k]; !ok {
			t.Errorf("results.json lacks %q", k)
		}
	}
	lat := m["latency_ms"].(map[string]any)
	for _, name := range []string{"send_ack", "send_deliver"} {
		s, ok := lat[name].(map[string]any)
		if !ok {
			t.Fatalf("latency_ms.%s missing", name)
		}
		for _, k := range []string{"p50", "p90", "p99", "p999", "max"} {
			if _, ok := s[k].(float64); !ok {
				t.Errorf("latency_ms.%s.%s missing", name, k)
			}
		}
	}
	if p99 := lat["send_ack"].(map[string]any)["p99"].(float64); p99 < 98 || p99 > 100 {
		t.Errorf("send_ack p99 = %v ms, want ~99", p99)
	}
	mach := m["machine"].(map[string]any)
	if mach["cores"].(float64) < 1 || !strings.HasPrefix(mach["go_version"].(string), "go") {
		t.Errorf("machine %v", mach)
	}
	if m["command_line"] != "charla-bench steady --addr 127.0.0.1:8080" || m["settings"].(map[string]any)["conns"].(float64) != 10 {
		t.Errorf("command line / settings lost: %v %v", m["command_line"], m["settings"])
	}
	back, err := Read(path)
	if err != nil || back.LatencyMS[SendAck].P99 != sample().LatencyMS[SendAck].P99 || len(back.Curves[SendAck]) == 0 {
		t.Fatalf("round trip: %v %+v", err, back)
	}
}

func TestTableAndExitCode(t *testing.T) {
	r := sample()
	var out bytes.Buffer
	if err := r.WriteTable(&out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"scenario", "steady", "send_ack", "send_deliver", "lost / duplicated / reordered", "RESULT: OK", "goal send→ack p99"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
	if r.ExitCode() != 0 {
		t.Fatal("exit code of a clean run")
	}
	r.Fail("lost %d", 3)
	out.Reset()
	_ = r.WriteTable(&out)
	if r.ExitCode() != 1 || !strings.Contains(out.String(), "RESULT: FAIL") || !strings.Contains(out.String(), "lost 3") {
		t.Fatalf("failed run: exit %d\n%s", r.ExitCode(), out.String())
	}
}

func TestGoals(t *testing.T) {
	r := New("x")
	r.AddGoal("latency", "ms", 25, 30, true)
	r.AddGoal("rate", "msg/s", 100, 120, false)
	if r.Goals[0].Met || !r.Goals[1].Met {
		t.Fatalf("goals %+v", r.Goals)
	}
	if !r.OK {
		t.Fatal("a missed goal is not a failure")
	}
}
