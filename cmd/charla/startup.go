package main

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"charla/actors"
)

// startupCheckTimeout bounds each dependency's check. They run at once, so
// the summary costs at most this at startup, well inside the 30 s budget.
const startupCheckTimeout = 5 * time.Second

// dependencyCheck is one configured dependency: check answers a detail for
// the summary, or why the dependency is down; nil check = not configured.
type dependencyCheck struct {
	name  string
	check func(ctx context.Context) (string, error)
}

// pinger is the store that can tell whether its database answers
// (postgres.Store).
type pinger interface {
	Ping(ctx context.Context) error
}

// dependencyChecks lists the dependencies the engine talks to, in the
// summary's order. storeDown is why the database did not answer when it was
// opened (nil if it did): not asked twice, the start is on a budget. A
// message broker (NATS) joins them once the engine has a cluster setting.
func dependencyChecks(cfg config, dep actors.Dependencies, storeDown error, client *http.Client) []dependencyCheck {
	store := func(context.Context) (string, error) { return "embedded (pebble) in " + cfg.DataDir, nil }
	if p, ok := dep.Store.(pinger); ok {
		where := redactedURL(cfg.DB.URL)
		store = func(ctx context.Context) (string, error) {
			err := storeDown
			if err == nil {
				err = p.Ping(ctx)
			}
			if err != nil {
				return "", fmt.Errorf("postgresql %s: %w (acks are spooled until it answers)", where, err)
			}
			return "postgresql " + where, nil
		}
	}
	checks := []dependencyCheck{{name: "store", check: store}, {name: "soap"}, {name: "whatsapp-graph"}}
	if u := cfg.Actors.SOAP.URL; u != "" {
		checks[1].check = reachable(client, u)
	}
	if cfg.Transport.WhatsApp.Enabled() {
		checks[2].check = reachable(client, cfg.Transport.WhatsApp.GraphURL)
	}
	return checks
}

// reachable checks that an HTTP service answers at all: any status will
// do, since a SOAP endpoint refuses a GET and the Graph API one without a
// path; what matters at startup is that the address, TLS and routing work.
func reachable(client *http.Client, target string) func(context.Context) (string, error) {
	return func(ctx context.Context) (string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return "", err
		}
		resp, err := client.Do(req)
		if err != nil {
			return "", err
		}
		resp.Body.Close()
		return fmt.Sprintf("%s answers (HTTP %d)", redactedURL(target), resp.StatusCode), nil
	}
}

func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "(unparsable URL)"
	}
	u.RawQuery = "" // may carry a token
	return u.Redacted()
}

// logStartupSummary runs every check at once, each within
// startupCheckTimeout, and logs one line per dependency and one summary
// line. A dependency that is down is a warning, not a stop: the engine
// serves degraded (spooling, inventory unavailable, outbox waiting) and
// recovers when it answers.
func logStartupSummary(ctx context.Context, checks []dependencyCheck, log zerolog.Logger) {
	type result struct {
		detail string
		err    error
		took   time.Duration
	}
	results := make([]chan result, len(checks))
	for i, c := range checks {
		results[i] = make(chan result, 1)
		if c.check == nil {
			continue
		}
		go func() {
			cctx, cancel := context.WithTimeout(ctx, startupCheckTimeout)
			defer cancel()
			start := time.Now()
			detail, err := c.check(cctx)
			results[i] <- result{detail, err, time.Since(start)}
		}()
	}
	start := time.Now()
	var summary []string
	for i, c := range checks {
		if c.check == nil {
			log.Info().Str("dependency", c.name).Str("state", "off").Msg("startup check: not configured")
			summary = append(summary, c.name+"=off")
			continue
		}
		r := <-results[i]
		if r.err != nil {
			log.Warn().Str("dependency", c.name).Str("state", "down").Dur("took", r.took).Err(r.err).Msg("startup check: unreachable, serving degraded")
			summary = append(summary, c.name+"=down")
			continue
		}
		log.Info().Str("dependency", c.name).Str("state", "up").Dur("took", r.took).Str("detail", r.detail).Msg("startup check")
		summary = append(summary, c.name+"=up")
	}
	log.Info().Str("dependencies", strings.Join(summary, " ")).Dur("took", time.Since(start)).Msg("startup summary")
}
