package ratelimit

import (
	"fmt"

	"golang.org/x/time/rate"
)

// rates are the per-class limits, replaced whole when an operator changes
// them at runtime.
type rates struct {
	limits [numClasses]rate.Limit
	bursts [numClasses]int // 0: the class is not limited
}

func newRates(c Config) *rates {
	rt := &rates{}
	for class, perMinute := range [numClasses]int{Auth: c.Auth, Chat: c.Chat, Media: c.Media, API: c.API, Upgrade: c.Upgrade} {
		if perMinute > 0 {
			rt.limits[class] = rate.Limit(float64(perMinute) / Window.Seconds())
			rt.bursts[class] = perMinute
		}
	}
	return rt
}

// Rates returns the per-minute figures in force (c's other fields empty).
func (r *Registry) Rates() Config {
	b := r.rates.Load().bursts
	return Config{Auth: b[Auth], Chat: b[Chat], Media: b[Media], API: b[API], Upgrade: b[Upgrade]}
}

// SetRates changes the per-minute figures of every class while the
// registry serves (the address lists stay as they are). c's figures are
// checked first: on error nothing changes. Every existing bucket takes the
// new rate and burst now, keeping the tokens it has (capped at the new
// burst), so that lowering a limit does not hand anyone a fresh burst and
// raising it does not wait for the next refill.
func (r *Registry) SetRates(c Config) error {
	check := DefaultConfig() // valid lists; only the figures are c's
	check.Auth, check.Chat, check.Media, check.API, check.Upgrade = c.Auth, c.Chat, c.Media, c.API, c.Upgrade
	if err := check.Validate(); err != nil {
		return fmt.Errorf("rate limits: %w", err)
	}
	rt := newRates(c)
	r.rates.Store(rt) // before the buckets: see Allow
	now := r.now()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		for k, lim := range sh.buckets {
			if rt.bursts[k.class] == 0 {
				delete(sh.buckets, k) // no longer limited; a later limit starts full
				continue
			}
			lim.SetLimitAt(now, rt.limits[k.class])
			lim.SetBurstAt(now, rt.bursts[k.class])
		}
		sh.mu.Unlock()
	}
	return nil
}
