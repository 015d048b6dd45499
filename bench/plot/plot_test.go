package plot

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"charla/bench/progress"
	"charla/bench/result"
	"charla/bench/stats"
)

func TestHTMLIsSelfContained(t *testing.T) {
	r := result.New("steady")
	start := time.Now()
	l := stats.NewLatency(start)
	for i := range 3000 {
		l.Record(start.Add(time.Duration(i)*time.Millisecond), time.Duration(1+i%50)*time.Millisecond)
	}
	r.AddLatency(result.SendAck, l)
	r.AddLatency(result.SendDeliver, l)
	r.Timeline = []progress.Point{{Second: 1, Conns: 10, SentPerS: 100, EngineRSSMB: 50}, {Second: 2, Conns: 10, SentPerS: 98, EngineRSSMB: 51}}
	r.CommandLine = `charla-bench steady --engine-cmd "<script>alert(1)</script>"`
	r.AddGoal("send→ack p99", "ms", 25, 49, true)
	r.Fail("lost 1")
	path := filepath.Join(t.TempDir(), "p.html")
	if err := WriteFile(path, r); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	if n := strings.Count(s, "<svg"); n != 5 {
		t.Errorf("%d charts, want 5 (2 latency series, percentile curve, rates, connections)", n)
	}
	for _, want := range []string{"percentile curve", "99.9%", "send_ack latency over time", "FAIL", "missed", "&lt;script&gt;"} {
		if !strings.Contains(s, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "https://", "src="} {
		if strings.Contains(s, bad) {
			t.Errorf("page contains %q: it must not load or run anything", bad)
		}
	}
}

func TestEmptyResultStillRenders(t *testing.T) {
	if _, err := HTML(result.New("idle")); err != nil {
		t.Fatal(err)
	}
}
