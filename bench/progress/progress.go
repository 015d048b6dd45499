// Package progress prints the live line of a run, once a second on stderr
// (elapsed, connections, messages/s, errors), and keeps those per-second
// samples as the run's timeline, so that what the user watched is also in
// results.json and the plot.
package progress

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Counters are the run-wide counts every client updates. They are plain
// atomics so that the hot path pays one atomic add per event.
type Counters struct {
	Conns     atomic.Int64 // currently open
	Sent      atomic.Int64
	Acked     atomic.Int64
	Delivered atomic.Int64
	Errors    atomic.Int64
}

// Point is one second of the timeline.
type Point struct {
	Second        float64 `json:"t"`
	Conns         int64   `json:"conns"`
	SentPerS      float64 `json:"sent_per_s"`
	AckedPerS     float64 `json:"acked_per_s"`
	DeliveredPerS float64 `json:"delivered_per_s"`
	Errors        int64   `json:"errors"`
	EngineRSSMB   float64 `json:"engine_rss_mb,omitempty"`
	Phase         string  `json:"phase,omitempty"`
}

// maxPoints bounds the timeline (a day of seconds).
const maxPoints = 24 * 3600

// Reporter prints and records the progress line.
type Reporter struct {
	w        io.Writer
	label    string
	c        *Counters
	rss      func() int64
	start    time.Time
	interval time.Duration

	phase atomic.Pointer[string]
	stop  chan struct{}
	done  chan struct{}
	once  sync.Once

	mu     sync.Mutex
	points []Point
	maxRSS int64
}

// Start begins printing to w every interval (1 s when zero). rss, when
// not nil, returns the engine's resident memory in bytes (or <= 0 when
// unknown) and is sampled at every tick.
func Start(w io.Writer, label string, c *Counters, rss func() int64, interval time.Duration) *Reporter {
	if interval <= 0 {
		interval = time.Second
	}
	r := &Reporter{w: w, label: label, c: c, rss: rss, start: time.Now(), interval: interval,
		stop: make(chan struct{}), done: make(chan struct{})}
	empty := ""
	r.phase.Store(&empty)
	go r.loop()
	return r
}

// SetPhase names what the run is doing now ("connect", "send", "drain"…);
// it shows in the line and in the timeline.
func (r *Reporter) SetPhase(p string) { r.phase.Store(&p) }

// Elapsed is the time since Start.
func (r *Reporter) Elapsed() time.Duration { return time.Since(r.start) }

func (r *Reporter) loop() {
	defer close(r.done)
	t := time.NewTicker(r.interval)
	defer t.Stop()
	var prevSent, prevAcked, prevDeliv int64
	prevAt := r.start
	for n := 0; n < maxPoints; n++ {
		select {
		case <-r.stop:
			return
		case now := <-t.C:
			sent, acked, deliv := r.c.Sent.Load(), r.c.Acked.Load(), r.c.Delivered.Load()
			dt := now.Sub(prevAt).Seconds()
			p := Point{
				Second:        now.Sub(r.start).Round(time.Millisecond).Seconds(),
				Conns:         r.c.Conns.Load(),
				SentPerS:      float64(sent-prevSent) / dt,
				AckedPerS:     float64(acked-prevAcked) / dt,
				DeliveredPerS: float64(deliv-prevDeliv) / dt,
				Errors:        r.c.Errors.Load(),
				Phase:         *r.phase.Load(),
			}
			prevSent, prevAcked, prevDeliv, prevAt = sent, acked, deliv, now
			var rssPart string
			if r.rss != nil {
				if b := r.rss(); b > 0 {
					p.EngineRSSMB = float64(b) / (1 << 20)
					rssPart = fmt.Sprintf("  engine rss %.0f MB", p.EngineRSSMB)
					r.mu.Lock()
					r.maxRSS = max(r.maxRSS, b)
					r.mu.Unlock()
				}
			}
			r.mu.Lock()
			r.points = append(r.points, p)
			r.mu.Unlock()
			phase := ""
			if p.Phase != "" {
				phase = " [" + p.Phase + "]"
			}
			fmt.Fprintf(r.w, "%s%s %6.0fs  conns %d  sent/s %.0f  acked/s %.0f  delivered/s %.0f  errors %d%s\n",
				r.label, phase, p.Second, p.Conns, p.SentPerS, p.AckedPerS, p.DeliveredPerS, p.Errors, rssPart)
		}
	}
}

// Stop ends the line and returns the timeline.
func (r *Reporter) Stop() []Point {
	r.once.Do(func() { close(r.stop) })
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Point(nil), r.points...)
}

// MaxRSS is the largest engine RSS sampled, in bytes (0 when unknown).
func (r *Reporter) MaxRSS() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxRSS
}
