package actors

import (
	"errors"
	"net/url"
	"time"

	"charla/soapbridge"
)

// SOAPConfig is the soap actor's part of Config: where the inventory
// service is and the policy the actor wraps around each call (DESIGN.md,
// "soapbridge"). Like Config, the comment of each field starts with the
// setting's flag name, which is how Validate names it.
type SOAPConfig struct {
	URL     string        // soap-url: the service's endpoint; empty turns the bridge off (inventory answers unavailable)
	Timeout time.Duration // soap-timeout: deadline of one call of any operation without its own
	// soap-get-stock-timeout: deadline of one GetStock call; 0 = soap-timeout.
	// A stock lookup is interactive: an operator may well want it shorter.
	GetStockTimeout time.Duration
	// soap-reserve-timeout: deadline of one ReserveItem call; 0 = soap-timeout.
	ReserveTimeout time.Duration
	Retries        int           // soap-retries: further attempts after a retryable failure (timeouts, resets, 5xx, server faults)
	BackoffBase    time.Duration // soap-backoff-base: the first retry waits up to this (full jitter)
	BackoffMax     time.Duration // soap-backoff-max: no retry waits longer
	MaxInflight    int           // soap-max-inflight: calls in flight at once (the bulkhead)
	Queue          int           // soap-queue: calls waiting for a slot; past it requests are refused at once (unavailable)
	// inventory-answer-budget: how long an inventory or reserve request
	// waits for the service before it becomes a job (job frames follow).
	AnswerBudget time.Duration
	CacheTTL     time.Duration // inventory-cache-ttl: how long an item is served fresh
	CacheSize    int           // inventory-cache-size: fresh items kept (the last known values behind them are kept for 5× as many)
	Breaker      BreakerConfig // soap-breaker-*: when the service is considered down
	JobRetention time.Duration // job-retention: how long a finished job can still be asked for
	MaxJobs      int           // job-max: jobs kept (finished ones are dropped oldest first past it; unfinished past it are refused)
}

// DefaultSOAPConfig returns the bridge's defaults (DESIGN.md's seed
// settings: 10 s, 5 retries, 60 s TTL), with no URL: the bridge is off until
// an operator points it at a service.
func DefaultSOAPConfig() SOAPConfig {
	return SOAPConfig{
		Timeout:      10 * time.Second,
		Retries:      5,
		BackoffBase:  100 * time.Millisecond,
		BackoffMax:   5 * time.Second,
		MaxInflight:  8,
		Queue:        256,
		AnswerBudget: 300 * time.Millisecond,
		CacheTTL:     soapbridge.DefaultCacheTTL,
		CacheSize:    soapbridge.DefaultCacheSize,
		Breaker:      BreakerConfig{Failures: 5, Cooldown: 30 * time.Second},
		JobRetention: 15 * time.Minute,
		MaxJobs:      10_000,
	}
}

// Enabled reports whether a service is configured.
func (c SOAPConfig) Enabled() bool { return c.URL != "" }

// timeout is the deadline of one call of op.
func (c SOAPConfig) timeout(op string) time.Duration {
	switch {
	case op == soapbridge.OpGetStock && c.GetStockTimeout > 0:
		return c.GetStockTimeout
	case op == soapbridge.OpReserveItem && c.ReserveTimeout > 0:
		return c.ReserveTimeout
	}
	return c.Timeout
}

// Validate reports every problem of c at once, each naming its setting.
// The settings are checked with the bridge off too, so that turning it on
// later cannot reveal an old mistake.
func (c SOAPConfig) Validate() error { return errors.Join(c.problems()...) }

// problems is Validate's list, for Config.Validate to join with its own.
func (c SOAPConfig) problems() []error {
	var p problems
	if c.URL != "" {
		u, err := url.Parse(c.URL)
		switch {
		case err != nil:
			p.bad("soap-url %q: %v", c.URL, err)
		case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "":
			p.bad("soap-url %q must be an absolute http or https URL (e.g. http://127.0.0.1:8081)", c.URL)
		}
	}
	notNegative := func(name string, d time.Duration) {
		if d < 0 {
			p.bad("%s must not be negative (got %s; 0 means soap-timeout)", name, d)
		}
	}
	p.positive("soap-timeout", c.Timeout)
	notNegative("soap-get-stock-timeout", c.GetStockTimeout)
	notNegative("soap-reserve-timeout", c.ReserveTimeout)
	p.atLeast("soap-retries", c.Retries, 0)
	p.backoff("soap-backoff-", c.BackoffBase, c.BackoffMax)
	p.atLeast("soap-max-inflight", c.MaxInflight, 1)
	p.atLeast("soap-queue", c.Queue, 0)
	p.positive("inventory-answer-budget", c.AnswerBudget)
	p.positive("inventory-cache-ttl", c.CacheTTL)
	p.atLeast("inventory-cache-size", c.CacheSize, 1)
	p.add(c.Breaker.validate("soap-breaker-")...)
	p.positive("job-retention", c.JobRetention)
	p.atLeast("job-max", c.MaxJobs, 1)
	return p.errs
}
