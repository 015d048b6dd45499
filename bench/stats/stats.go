// Package stats turns raw latency samples into the figures a bench run is
// judged by: percentiles from an HDR histogram (so that p99.9 and max are
// exact to three significant digits whatever the sample count), a per-second
// series for "latency over time", and the percentile curve for plots.
//
// Values are recorded in microseconds and reported in milliseconds: the
// goals in DESIGN.md are stated in milliseconds, and microsecond resolution
// keeps sub-millisecond loopback latencies distinguishable.
package stats

import (
	"math"
	"sync"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// The trackable range: 1 µs to 10 minutes. Anything slower than ten minutes
// is clamped to it (and still counted), because a bench run that slow has
// failed for other reasons already.
const (
	lowestMicros  = 1
	highestMicros = int64(10 * time.Minute / time.Microsecond)
)

// Summary is the latency figure set every scenario reports, in milliseconds.
// The field names are the JSON contract of results.json.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p999"`
	Max   float64 `json:"max"`
}

// CurvePoint is one point of a percentile curve: Percentile in [0,100] and
// the latency at it in milliseconds.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	MS         float64 `json:"ms"`
}

// Point is one second of a latency series. Second counts from the start of
// the series; the latencies are in milliseconds.
type Point struct {
	Second int     `json:"second"`
	Count  int64   `json:"count"`
	P50    float64 `json:"p50"`
	P99    float64 `json:"p99"`
	Max    float64 `json:"max"`
}

// Histogram is a goroutine-safe HDR histogram. Every client read loop of a
// run records into the same few histograms, hence the mutex; the exact
// maximum is kept beside it because HDR reports a bucket's upper bound.
type Histogram struct {
	mu  sync.Mutex
	h   *hdr.Histogram
	max int64
}

// NewHistogram returns an empty histogram with three significant digits.
func NewHistogram() *Histogram {
	return &Histogram{h: hdr.New(lowestMicros, highestMicros, 3)}
}

func clampMicros(d time.Duration) int64 {
	us := d.Microseconds()
	if us < lowestMicros {
		return lowestMicros
	}
	if us > highestMicros {
		return highestMicros
	}
	return us
}

// Record adds one sample. Negative durations (clock steps) count as the
// smallest value rather than being dropped, so that counts stay true.
func (h *Histogram) Record(d time.Duration) {
	us := clampMicros(d)
	h.mu.Lock()
	_ = h.h.RecordValue(us) // cannot fail: us is clamped into range
	if us > h.max {
		h.max = us
	}
	h.mu.Unlock()
}

// Merge adds every sample of o into h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil || o == h {
		return
	}
	o.mu.Lock()
	c := o.h.Export()
	omax := o.max
	o.mu.Unlock()
	h.mu.Lock()
	h.h.Merge(hdr.Import(c))
	if omax > h.max {
		h.max = omax
	}
	h.mu.Unlock()
}

// Count is the number of samples recorded.
func (h *Histogram) Count() int64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.h.TotalCount()
}

func ms(us int64) float64 { return float64(us) / 1000 }

// at is the value at percentile p, never above the exact maximum: HDR
// answers with its bucket's upper bound, which may exceed every sample.
// The caller holds h.mu.
func (h *Histogram) at(p float64) int64 {
	return min(h.h.ValueAtQuantile(p), h.max)
}

// Summary returns the percentiles. An empty histogram summarises to zeros,
// which the caller must read together with Count.
func (h *Histogram) Summary() Summary {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return Summary{}
	}
	return Summary{
		Count: h.h.TotalCount(),
		Mean:  math.Round(h.h.Mean()) / 1000,
		P50:   ms(h.at(50)),
		P90:   ms(h.at(90)),
		P99:   ms(h.at(99)),
		P999:  ms(h.at(99.9)),
		Max:   ms(h.max),
	}
}

// CurvePercentiles are the x positions of a percentile curve: evenly spaced
// on the "number of nines" axis, which is how tail latency is read.
var CurvePercentiles = func() []float64 {
	var ps []float64
	for k := 0; k <= 25; k++ { // 0 .. 99.999
		ps = append(ps, 100*(1-math.Pow(10, -float64(k)/5)))
	}
	return append(ps, 100)
}()

// Curve returns the latency at each of CurvePercentiles (empty when no
// samples were recorded).
func (h *Histogram) Curve() []CurvePoint {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h.TotalCount() == 0 {
		return nil
	}
	out := make([]CurvePoint, 0, len(CurvePercentiles))
	for _, p := range CurvePercentiles {
		v := h.at(p)
		out = append(out, CurvePoint{Percentile: math.Round(p*1000) / 1000, MS: ms(v)})
	}
	return out
}

// maxSeriesSeconds bounds a series' memory: a run longer than a day keeps
// its histogram but stops extending the per-second series.
const maxSeriesSeconds = 24 * 3600

// Series keeps one small histogram per second, for "latency over time".
// Two significant digits are plenty for a plot and keep each second small.
type Series struct {
	mu      sync.Mutex
	start   time.Time
	seconds []*hdr.Histogram
	maxes   []int64
}

// NewSeries starts a series whose second 0 begins at start.
func NewSeries(start time.Time) *Series { return &Series{start: start} }

// Record adds a sample observed at time at.
func (s *Series) Record(at time.Time, d time.Duration) {
	sec := int(at.Sub(s.start) / time.Second)
	if sec < 0 || sec >= maxSeriesSeconds {
		return
	}
	us := clampMicros(d)
	s.mu.Lock()
	for len(s.seconds) <= sec {
		s.seconds = append(s.seconds, nil)
		s.maxes = append(s.maxes, 0)
	}
	h := s.seconds[sec]
	if h == nil {
		h = hdr.New(lowestMicros, highestMicros, 2)
		s.seconds[sec] = h
	}
	_ = h.RecordValue(us)
	if us > s.maxes[sec] {
		s.maxes[sec] = us
	}
	s.mu.Unlock()
}

// Points returns one point per second that has samples.
func (s *Series) Points() []Point {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Point
	for i, h := range s.seconds {
		if h == nil || h.TotalCount() == 0 {
			continue
		}
		out = append(out, Point{
			Second: i,
			Count:  h.TotalCount(),
			P50:    ms(min(h.ValueAtQuantile(50), s.maxes[i])),
			P99:    ms(min(h.ValueAtQuantile(99), s.maxes[i])),
			Max:    ms(s.maxes[i]),
		})
	}
	return out
}

// Latency is what a scenario records one kind of latency into: the whole
// run's histogram and its per-second series together.
type Latency struct {
	Hist   *Histogram
	Series *Series
}

// NewLatency returns an empty Latency whose series starts at start.
func NewLatency(start time.Time) *Latency {
	return &Latency{Hist: NewHistogram(), Series: NewSeries(start)}
}

// Record adds a sample of duration d observed at time at.
func (l *Latency) Record(at time.Time, d time.Duration) {
	l.Hist.Record(d)
	l.Series.Record(at, d)
}
