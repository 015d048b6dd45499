package actors

import (
	"math/rand/v2"
	"time"
)

// WhatsAppConfig is the whatsapp actor's part of Config: the policy around
// every call to the Graph API's messages endpoint. Like Config, the comment
// of each field starts with the setting's flag name, which is how Validate
// names it.
type WhatsAppConfig struct {
	// whatsapp-rate: messages per second per business number (the Cloud
	// API's default throughput is 80).
	Rate float64
	// whatsapp-burst: sends a business number may start at once after a
	// quiet spell. The calls themselves leave evenly spaced at Rate whatever
	// it is; the burst only lets a few records of attempts run ahead.
	Burst int
	// whatsapp-pair-interval: one message per this interval to one
	// customer from one business number, past the burst (the platform's
	// pair rate limit is about one per 6 s).
	PairInterval time.Duration
	// whatsapp-pair-burst: messages to one customer sent back to back
	// before the pair interval applies.
	PairBurst int
	// whatsapp-window: the customer-service window opened by the
	// customer's last message, outside which only templates may be sent.
	Window      time.Duration
	CallTimeout time.Duration // whatsapp-call-timeout: deadline of one Graph API call
	BackoffBase time.Duration // whatsapp-backoff-base: the first retry after throttling or a 5xx waits up to this (full jitter)
	BackoffMax  time.Duration // whatsapp-backoff-max: no retry waits longer
	// whatsapp-max-attempts: Graph API calls for one message before it
	// fails (throttled and 5xx answers count).
	MaxAttempts int
	MaxInflight int // whatsapp-max-inflight: Graph API calls in flight at once
	// whatsapp-reconcile-window: how long a message whose send outcome is
	// unknown (the engine died, or the connection broke, during the call)
	// waits for a status notification naming it before it is failed as
	// "outcome unknown". It is never resent blindly.
	ReconcileWindow time.Duration
	// whatsapp-rescan-interval: how often the outbox is read again, for
	// entries that reached the store without passing through this engine's
	// write path (an outage spool's drain notifies too; this is the net).
	RescanInterval time.Duration
	Breaker        BreakerConfig // whatsapp-breaker-*: when the Graph API is considered down
}

// DefaultWhatsAppConfig returns the outbound policy's defaults.
func DefaultWhatsAppConfig() WhatsAppConfig {
	return WhatsAppConfig{
		Rate:            80,
		Burst:           4,
		PairInterval:    6 * time.Second,
		PairBurst:       5,
		Window:          24 * time.Hour,
		CallTimeout:     10 * time.Second,
		BackoffBase:     time.Second,
		BackoffMax:      time.Minute,
		MaxAttempts:     20,
		MaxInflight:     32,
		ReconcileWindow: 10 * time.Minute,
		RescanInterval:  30 * time.Second,
		Breaker:         BreakerConfig{Failures: 5, Cooldown: 30 * time.Second},
	}
}

// problems lists every problem of c.
func (c WhatsAppConfig) problems() []error {
	var p problems
	if c.Rate <= 0 {
		p.bad("whatsapp-rate must be positive (got %g)", c.Rate)
	}
	p.atLeast("whatsapp-burst", c.Burst, 1)
	p.positive("whatsapp-pair-interval", c.PairInterval)
	p.atLeast("whatsapp-pair-burst", c.PairBurst, 1)
	p.positive("whatsapp-window", c.Window)
	p.positive("whatsapp-call-timeout", c.CallTimeout)
	p.backoff("whatsapp-backoff-", c.BackoffBase, c.BackoffMax)
	p.atLeast("whatsapp-max-attempts", c.MaxAttempts, 1)
	p.atLeast("whatsapp-max-inflight", c.MaxInflight, 1)
	p.positive("whatsapp-reconcile-window", c.ReconcileWindow)
	p.positive("whatsapp-rescan-interval", c.RescanInterval)
	p.add(c.Breaker.validate("whatsapp-breaker-")...)
	return p.errs
}

// fullJitter is the wait before the attempt after attempt n: uniform in
// [0, min(max, base·2^(n-1))], so that many calls failing together do not
// come back together.
func fullJitter(base, ceiling time.Duration, n int) time.Duration {
	d := base << min(max(n-1, 0), 20)
	if d > ceiling || d <= 0 {
		d = ceiling
	}
	return time.Duration(rand.Int64N(int64(d) + 1))
}
