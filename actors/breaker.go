package actors

import "time"

// BreakerState is a circuit breaker's state; its String is the metric label.
type BreakerState int32

// The three states of a breaker.
const (
	BreakerClosed   BreakerState = iota // calls go through
	BreakerOpen                         // calls are not tried until the cool-down ends
	BreakerHalfOpen                     // one probe at a time decides
)

func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half_open"
	default:
		return "closed"
	}
}

// BreakerConfig sets when a breaker trips and when it tries again.
type BreakerConfig struct {
	// Failures trips the breaker after that many consecutive failures.
	Failures int
	// Window and Ratio trip it when, among the last Window outcomes, the
	// share of failures reaches Ratio (0 disables this rule): a dependency
	// that fails every other call is as down as one that always fails.
	Window int
	Ratio  float64
	// Cooldown is how long it stays open before a probe is let through.
	Cooldown time.Duration
}

// breaker is a value owned by one actor (so it needs no locks): Allow
// before a call, Success or Failure after it — the two-step shape that fits
// an actor whose calls complete as messages.
type breaker struct {
	cfg      BreakerConfig
	state    BreakerState
	failures int    // consecutive
	outcomes []bool // ring of the last Window outcomes, true = failure
	next     int
	openedAt time.Time
	probing  bool
	trips    int64
}

func newBreaker(cfg BreakerConfig) breaker {
	return breaker{cfg: cfg, outcomes: make([]bool, 0, max(cfg.Window, 0))}
}

// Allow reports whether a call may be made now. In half-open only one probe
// is let through until its outcome is reported.
func (b *breaker) Allow(now time.Time) bool {
	switch b.state {
	case BreakerOpen:
		if now.Sub(b.openedAt) < b.cfg.Cooldown {
			return false
		}
		b.state = BreakerHalfOpen
		fallthrough
	case BreakerHalfOpen:
		if b.probing {
			return false
		}
		b.probing = true
		return true
	default:
		return true
	}
}

// Unused reports that an allowed call was not made after all: a half-open
// breaker lets the next one probe.
func (b *breaker) Unused() { b.probing = false }

// RetryAt is when an open breaker will let a probe through.
func (b *breaker) RetryAt() time.Time { return b.openedAt.Add(b.cfg.Cooldown) }

// Success reports a call that worked.
func (b *breaker) Success() {
	b.record(false)
	b.failures, b.probing = 0, false
	if b.state != BreakerClosed {
		b.state = BreakerClosed
		b.outcomes = b.outcomes[:0]
	}
}

// Failure reports a call that failed because the dependency is down.
func (b *breaker) Failure(now time.Time) {
	b.record(true)
	b.failures++
	if b.state == BreakerOpen {
		// A call sent before the trip, failing late (a hang runs into its
		// timeout): it says nothing new, and must not push the probe back.
		return
	}
	b.probing = false
	if b.state == BreakerHalfOpen || b.failures >= b.cfg.Failures || b.ratioExceeded() {
		if b.state != BreakerOpen {
			b.trips++
		}
		b.state, b.openedAt = BreakerOpen, now
	}
}

func (b *breaker) record(failed bool) {
	if b.cfg.Window <= 0 {
		return
	}
	if len(b.outcomes) < b.cfg.Window {
		b.outcomes = append(b.outcomes, failed)
		return
	}
	b.outcomes[b.next] = failed
	b.next = (b.next + 1) % b.cfg.Window
}

func (b *breaker) ratioExceeded() bool {
	if b.cfg.Ratio <= 0 || len(b.outcomes) < b.cfg.Window {
		return false
	}
	n := 0
	for _, f := range b.outcomes {
		if f {
			n++
		}
	}
	return float64(n)/float64(len(b.outcomes)) >= b.cfg.Ratio
}
