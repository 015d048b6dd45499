package ratelimit_test

import (
	"strings"
	"testing"

	"charla/ratelimit"
	"charla/ratelimit/ratelimittest"
)

// Limits change while the registry serves: a bucket keeps the tokens it
// has, capped at the new burst; a class turned off lets everything
// through; a bad figure changes nothing.
func TestSetRates(t *testing.T) {
	allowed := func(r *ratelimit.Registry, n int) int {
		ok := 0
		for range n {
			if a, _ := r.Allow(ratelimit.Chat, "u:ana"); a {
				ok++
			}
		}
		return ok
	}
	for _, tc := range []struct {
		name    string
		chat    int
		err     string
		allowed int // of 20 more sends, after 5 at the default 100/min
	}{
		{"lowered below what is left: capped", 3, "", 3},
		{"raised: keeps what is left", 200, "", 20},
		{"off", 0, "", 20},
		{"negative: refused, the old limit stays", -1, "rate-limit-chat must not be negative", 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ratelimit.New(ratelimit.DefaultConfig(), ratelimit.WithClock(ratelimittest.NewClock().Now))
			if err != nil {
				t.Fatal(err)
			}
			if got := allowed(r, 5); got != 5 {
				t.Fatalf("%d of 5 allowed at the default limit", got)
			}
			c := ratelimit.DefaultConfig()
			c.Chat = tc.chat
			err = r.SetRates(c)
			if (err != nil) != (tc.err != "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Fatalf("SetRates: %v, want %q", err, tc.err)
			}
			if tc.err != "" && r.Limit(ratelimit.Chat) != 100 {
				t.Fatalf("limit %d after a refused change", r.Limit(ratelimit.Chat))
			}
			if got := allowed(r, 20); got != tc.allowed {
				t.Errorf("%d of 20 allowed after the change, want %d", got, tc.allowed)
			}
		})
	}
}
