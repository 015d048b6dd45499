package actors_test

import (
	"strings"
	"testing"
	"time"

	"charla/actors"
)

// The bridge's settings are checked with the rest, each problem naming its
// flag.
func TestSOAPConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		edit func(*actors.SOAPConfig)
		want string // "" = valid
	}{
		{"defaults, bridge off", func(*actors.SOAPConfig) {}, ""},
		{"simulator URL", func(c *actors.SOAPConfig) { c.URL = "http://127.0.0.1:8081" }, ""},
		{"URL without scheme", func(c *actors.SOAPConfig) { c.URL = "127.0.0.1:8081" }, "soap-url"},
		{"zero timeout", func(c *actors.SOAPConfig) { c.Timeout = 0 }, "soap-timeout must be positive"},
		{"negative override", func(c *actors.SOAPConfig) { c.GetStockTimeout = -time.Second }, "soap-get-stock-timeout"},
		{"negative retries", func(c *actors.SOAPConfig) { c.Retries = -1 }, "soap-retries"},
		{"backoff max below base", func(c *actors.SOAPConfig) { c.BackoffMax = time.Millisecond }, "soap-backoff-max"},
		{"no bulkhead", func(c *actors.SOAPConfig) { c.MaxInflight = 0 }, "soap-max-inflight"},
		{"negative queue", func(c *actors.SOAPConfig) { c.Queue = -1 }, "soap-queue"},
		{"zero TTL", func(c *actors.SOAPConfig) { c.CacheTTL = 0 }, "inventory-cache-ttl"},
		{"zero cache", func(c *actors.SOAPConfig) { c.CacheSize = 0 }, "inventory-cache-size"},
		{"breaker never trips", func(c *actors.SOAPConfig) { c.Breaker.Failures = 0 }, "soap-breaker-failures"},
		{"no jobs", func(c *actors.SOAPConfig) { c.MaxJobs = 0 }, "job-max"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := actors.DefaultConfig()
			tc.edit(&cfg.SOAP)
			err := cfg.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("valid config refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("Validate() = %v, want a problem naming %q", err, tc.want)
			}
		})
	}
}
