package actors

import (
	"testing"
	"time"
)

func TestBreaker(t *testing.T) {
	t0 := time.Unix(1000, 0)
	cfg := BreakerConfig{Failures: 3, Window: 10, Ratio: 0.5, Cooldown: 2 * time.Second}
	type step struct {
		at      time.Duration
		op      string // "allow", "ok", "fail"
		want    bool   // for allow
		wantSt  BreakerState
		comment string
	}
	cases := []struct {
		name  string
		steps []step
	}{
		{"trips after consecutive failures, probes after cool-down, closes on success", []step{
			{0, "fail", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""},
			{0, "fail", false, BreakerOpen, "third consecutive failure"},
			{time.Second, "allow", false, BreakerOpen, "cooling down"},
			{2 * time.Second, "allow", true, BreakerHalfOpen, "one probe"},
			{2 * time.Second, "allow", false, BreakerHalfOpen, "only one probe at a time"},
			{2 * time.Second, "ok", false, BreakerClosed, "probe worked"},
			{2 * time.Second, "allow", true, BreakerClosed, ""},
		}},
		{"a failed probe opens it again for a full cool-down", []step{
			{0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerOpen, ""},
			{2 * time.Second, "allow", true, BreakerHalfOpen, ""},
			{3 * time.Second, "fail", false, BreakerOpen, ""},
			{4 * time.Second, "allow", false, BreakerOpen, "cool-down restarted at the failed probe"},
			{5 * time.Second, "allow", true, BreakerHalfOpen, ""},
		}},
		{"late failures of calls sent before the trip do not push the probe back", []step{
			{0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerOpen, ""},
			{1500 * time.Millisecond, "fail", false, BreakerOpen, "a hung call times out while open"},
			{2 * time.Second, "allow", true, BreakerHalfOpen, "the cool-down counts from the trip"},
		}},
		{"successes in between reset the consecutive count", []step{
			{0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerClosed, ""},
			{0, "ok", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""}, {0, "fail", false, BreakerClosed, ""},
			{0, "ok", false, BreakerClosed, ""},
		}},
		{"error ratio over the window trips it", []step{
			{0, "fail", false, BreakerClosed, ""}, {0, "ok", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""}, {0, "ok", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""}, {0, "ok", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""}, {0, "ok", false, BreakerClosed, ""},
			{0, "fail", false, BreakerClosed, ""},
			{0, "fail", false, BreakerOpen, "5 of the last 10 failed"},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := newBreaker(cfg)
			for i, s := range tc.steps {
				now := t0.Add(s.at)
				switch s.op {
				case "allow":
					if got := b.Allow(now); got != s.want {
						t.Fatalf("step %d (%s): Allow = %v, want %v", i, s.comment, got, s.want)
					}
				case "ok":
					b.Success()
				case "fail":
					b.Failure(now)
				}
				if b.state != s.wantSt {
					t.Fatalf("step %d (%s): state %s, want %s", i, s.comment, b.state, s.wantSt)
				}
			}
		})
	}
}
