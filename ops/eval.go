package ops

import (
	"math"
	"reflect"
	"slices"
	"sort"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// State is where an alert is.
type State string

// The states an Event reports.
const (
	StateFiring   State = "firing"
	StateResolved State = "resolved"
)

// Event is an alert firing or resolving: what the log, the admins' `alert`
// frame and the webhook carry.
type Event struct {
	Rule      string    `json:"rule"`
	Severity  Severity  `json:"severity"`
	State     State     `json:"state"`
	Value     float64   `json:"value"` // the reading that fired (or the last one when resolving)
	Op        string    `json:"op"`
	Threshold float64   `json:"threshold"`
	Summary   string    `json:"summary"`
	Since     time.Time `json:"started_at"` // when it started firing
	At        time.Time `json:"at"`         // when this event happened
	// DisabledFlag is the feature flag the firing turned off, if any.
	DisabledFlag string `json:"disabled_flag,omitempty"`
}

// point is one reading of a rule's series at one evaluation.
type point struct {
	at      time.Time
	v, den  float64
	buckets []bucket // quantile: cumulative counts by upper bound
}

type bucket struct{ upper, count float64 }

// ruleState is one rule's memory between evaluations.
type ruleState struct {
	rule     Rule
	history  []point
	pending  time.Time // when the condition started holding; zero: it does not
	firing   bool
	since    time.Time
	last     float64
	hasValue bool
}

// Evaluator runs the rules over successive scrapes; it is owned by one
// actor and not safe for concurrent use.
type Evaluator struct {
	states []*ruleState
}

// NewEvaluator starts with no history: rules over a window read the part of
// it seen so far.
func NewEvaluator(rules Rules) *Evaluator {
	e := &Evaluator{}
	e.SetRules(rules)
	return e
}

// SetRules replaces the rules. A rule kept unchanged keeps its history and
// state. One that changed starts a new history but stays firing if it was
// (the next Eval resolves it if its new condition does not hold), so that
// a change never fires an alert twice. One removed while firing is
// returned resolved.
func (e *Evaluator) SetRules(rules Rules) (removed []Event) {
	old := map[string]*ruleState{}
	for _, s := range e.states {
		old[s.rule.Name] = s
	}
	e.states = make([]*ruleState, 0, len(rules))
	for _, r := range rules {
		s := old[r.Name]
		delete(old, r.Name)
		if s == nil || !sameRule(s.rule, r) {
			firing, since := false, time.Time{}
			if s != nil {
				firing, since = s.firing, s.since
			}
			s = &ruleState{rule: r, firing: firing, since: since}
		}
		e.states = append(e.states, s)
	}
	now := time.Now()
	for _, s := range old {
		if s.firing {
			removed = append(removed, s.event(StateResolved, now))
		}
	}
	return removed
}

func sameRule(a, b Rule) bool { return reflect.DeepEqual(a, b) }

// Eval reads fams (one scrape, taken at now) and returns the alerts that
// fire or resolve at this evaluation, in rule order. An alert already
// firing is not returned again while it keeps firing.
func (e *Evaluator) Eval(now time.Time, fams []*dto.MetricFamily) []Event {
	byName := make(map[string]*dto.MetricFamily, len(fams))
	for _, f := range fams {
		byName[f.GetName()] = f
	}
	var out []Event
	for _, s := range e.states {
		v, ok := s.read(now, byName)
		s.last, s.hasValue = v, ok
		holds := ok && ((s.rule.Op == ">" && v > s.rule.Threshold) || (s.rule.Op == "<" && v < s.rule.Threshold))
		switch {
		case !holds:
			s.pending = time.Time{}
			if s.firing {
				s.firing = false
				out = append(out, s.event(StateResolved, now))
			}
		case s.pending.IsZero():
			s.pending = now
			fallthrough
		default:
			if !s.firing && now.Sub(s.pending) >= time.Duration(s.rule.For) {
				s.firing, s.since = true, now
				out = append(out, s.event(StateFiring, now))
			}
		}
	}
	return out
}

// Firing returns the alerts firing now.
func (e *Evaluator) Firing() []Event {
	var out []Event
	for _, s := range e.states {
		if s.firing {
			out = append(out, s.event(StateFiring, s.since))
		}
	}
	return out
}

func (s *ruleState) event(st State, at time.Time) Event {
	r := s.rule
	return Event{Rule: r.Name, Severity: r.Severity, State: st, Value: s.last, Op: r.Op, Threshold: r.Threshold,
		Summary: r.Summary, Since: s.since, At: at}
}

// read takes this evaluation's point and returns the rule's reading; ok is
// false when there is none (no such series, or nothing to compare yet).
func (s *ruleState) read(now time.Time, fams map[string]*dto.MetricFamily) (float64, bool) {
	r := s.rule
	fam := fams[r.Metric]
	if fam == nil {
		return 0, false
	}
	p := point{at: now}
	if r.Kind == KindQuantile {
		p.buckets = sumBuckets(fam, r.Labels)
		if p.buckets == nil {
			return 0, false
		}
	} else {
		p.v = sumValues(fam, r.Labels)
	}
	if r.Kind == KindRatio {
		den := fams[r.Denominator]
		if den == nil {
			return 0, false
		}
		p.den = sumValues(den, r.Labels)
	}
	if r.Kind == KindValue {
		return p.v, true
	}
	// Keep what the window needs: the newest point at or before its start,
	// and everything after it.
	s.history = append(s.history, p)
	start := now.Add(-time.Duration(r.Window))
	i := sort.Search(len(s.history), func(i int) bool { return s.history[i].at.After(start) })
	if i > 0 {
		s.history = slices.Delete(s.history, 0, i-1)
	}
	base := s.history[0]
	if len(s.history) < 2 {
		return 0, false // one point: nothing grew yet
	}
	switch r.Kind {
	case KindIncrease:
		return p.v - base.v, true
	case KindRate:
		return (p.v - base.v) / now.Sub(base.at).Seconds(), true
	case KindRatio:
		d := p.den - base.den
		if d <= 0 {
			return 0, false
		}
		return (p.v - base.v) / d, true
	default: // KindQuantile
		return quantile(r.Quantile, p.buckets, base.buckets)
	}
}

// matches says whether m carries every label of want.
func matches(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.Label {
		if v, ok := want[l.GetName()]; ok {
			if v != l.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(want)
}

// sumValues adds the matching series' values (a histogram's or summary's
// count).
func sumValues(fam *dto.MetricFamily, labels map[string]string) float64 {
	var sum float64
	for _, m := range fam.Metric {
		if !matches(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.Summary.GetSampleCount())
		}
	}
	return sum
}

// sumBuckets merges the matching histograms' cumulative buckets (+Inf
// last); nil when the family has no histogram.
func sumBuckets(fam *dto.MetricFamily, labels map[string]string) []bucket {
	var out []bucket
	for _, m := range fam.Metric {
		h := m.Histogram
		if h == nil || !matches(m, labels) {
			continue
		}
		if out == nil {
			for _, b := range h.Bucket {
				out = append(out, bucket{upper: b.GetUpperBound()})
			}
			out = append(out, bucket{upper: math.Inf(1)})
		}
		for i, b := range h.Bucket {
			if i < len(out)-1 {
				out[i].count += float64(b.GetCumulativeCount())
			}
		}
		out[len(out)-1].count += float64(h.GetSampleCount())
	}
	return out
}

// quantile is histogram_quantile over the observations between base and
// now: the bucket holding the q-th observation, interpolated linearly
// within it (the highest finite bound when it falls past every bound).
func quantile(q float64, now, base []bucket) (float64, bool) {
	if len(now) == 0 || len(base) != len(now) {
		base = make([]bucket, len(now)) // the histogram's layout changed: count from zero
	}
	total := now[len(now)-1].count - base[len(base)-1].count
	if total <= 0 {
		return 0, false
	}
	rank := q * total
	prevUpper, prevCount := 0.0, 0.0
	for i, b := range now {
		count := b.count - base[i].count
		if count >= rank {
			if math.IsInf(b.upper, 1) {
				return prevUpper, true
			}
			if count == prevCount {
				return b.upper, true
			}
			return prevUpper + (b.upper-prevUpper)*(rank-prevCount)/(count-prevCount), true
		}
		prevUpper, prevCount = b.upper, count
	}
	return prevUpper, true
}
