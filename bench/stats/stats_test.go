package stats

import (
	"math"
	"sync"
	"testing"
	"time"
)

func near(got, want, relTol float64) bool {
	if want == 0 {
		return got == 0
	}
	return math.Abs(got-want)/want <= relTol
}

func TestPercentilesOfUniformSamples(t *testing.T) {
	h := NewHistogram()
	// 1..10000 µs: pN is N% of 10 ms.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Summary()
	checks := []struct {
		name      string
		got, want float64
	}{
		{"p50", s.P50, 5}, {"p90", s.P90, 9}, {"p99", s.P99, 9.9},
		{"p999", s.P999, 9.99}, {"max", s.Max, 10}, {"mean", s.Mean, 5.0005},
	}
	for _, c := range checks {
		if !near(c.got, c.want, 0.002) {
			t.Errorf("%s = %v ms, want %v ms", c.name, c.got, c.want)
		}
	}
	if s.Count != 10000 {
		t.Errorf("count = %d", s.Count)
	}
}

func TestMaxIsExactAndPercentilesNeverExceedIt(t *testing.T) {
	h := NewHistogram()
	h.Record(123456789 * time.Nanosecond) // 123.456 ms: HDR's bucket bound is above it
	s := h.Summary()
	if s.Max != 123.456 {
		t.Fatalf("max = %v, want 123.456", s.Max)
	}
	if s.P50 > s.Max || s.P999 > s.Max {
		t.Fatalf("percentile above max: %+v", s)
	}
}

func TestClampingKeepsCounts(t *testing.T) {
	h := NewHistogram()
	h.Record(-time.Second)
	h.Record(time.Hour)
	if h.Count() != 2 {
		t.Fatalf("count = %d", h.Count())
	}
	if s := h.Summary(); s.Max != 600000 {
		t.Fatalf("max = %v, want the 10 min clamp", s.Max)
	}
}

func TestEmpty(t *testing.T) {
	h := NewHistogram()
	if s := h.Summary(); s != (Summary{}) {
		t.Fatalf("empty summary = %+v", s)
	}
	if c := h.Curve(); c != nil {
		t.Fatalf("empty curve = %v", c)
	}
}

func TestMergeAndConcurrentRecord(t *testing.T) {
	a, b := NewHistogram(), NewHistogram()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 1000 {
				a.Record(time.Duration(i+g) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	b.Record(time.Second)
	a.Merge(b)
	if a.Count() != 4001 || a.Summary().Max != 1000 {
		t.Fatalf("merged: %+v", a.Summary())
	}
}

func TestCurveIsMonotonic(t *testing.T) {
	h := NewHistogram()
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i*i%7919+1) * time.Microsecond)
	}
	c := h.Curve()
	if len(c) != len(CurvePercentiles) {
		t.Fatalf("curve has %d points, want %d", len(c), len(CurvePercentiles))
	}
	for i := 1; i < len(c); i++ {
		if c[i].Percentile <= c[i-1].Percentile || c[i].MS < c[i-1].MS {
			t.Fatalf("curve not monotonic at %d: %v then %v", i, c[i-1], c[i])
		}
	}
	if c[len(c)-1].Percentile != 100 || c[len(c)-1].MS != h.Summary().Max {
		t.Fatalf("curve must end at the max: %v", c[len(c)-1])
	}
}

func TestSeries(t *testing.T) {
	start := time.Now()
	s := NewSeries(start)
	s.Record(start.Add(100*time.Millisecond), 2*time.Millisecond)
	s.Record(start.Add(2500*time.Millisecond), 7*time.Millisecond)
	s.Record(start.Add(2600*time.Millisecond), 9*time.Millisecond)
	s.Record(start.Add(-time.Second), time.Millisecond) // before the start: ignored
	p := s.Points()
	if len(p) != 2 || p[0].Second != 0 || p[1].Second != 2 || p[1].Count != 2 || p[1].Max != 9 {
		t.Fatalf("points = %+v", p)
	}
}
