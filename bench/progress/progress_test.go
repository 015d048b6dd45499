package progress

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReporterPrintsAndRecords(t *testing.T) {
	var out bytes.Buffer
	var c Counters
	c.Conns.Store(3)
	r := Start(&out, "steady", &c, func() int64 { return 64 << 20 }, 20*time.Millisecond)
	r.SetPhase("send")
	for range 5 {
		c.Sent.Add(10)
		c.Errors.Add(1)
		time.Sleep(25 * time.Millisecond)
	}
	pts := r.Stop()
	r.Stop() // idempotent
	if len(pts) < 2 {
		t.Fatalf("only %d points", len(pts))
	}
	last := pts[len(pts)-1]
	if last.Conns != 3 || last.EngineRSSMB != 64 || last.Phase != "send" || last.Errors == 0 {
		t.Fatalf("last point %+v", last)
	}
	var sent float64
	for _, p := range pts {
		sent += p.SentPerS * 0.02
	}
	if sent <= 0 {
		t.Fatal("no send rate recorded")
	}
	line := strings.SplitN(out.String(), "\n", 2)[0]
	for _, want := range []string{"steady", "conns 3", "sent/s", "errors", "engine rss 64 MB"} {
		if !strings.Contains(line, want) {
			t.Errorf("line %q lacks %q", line, want)
		}
	}
	if r.MaxRSS() != 64<<20 {
		t.Fatalf("max rss %d", r.MaxRSS())
	}
}
