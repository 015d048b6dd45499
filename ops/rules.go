// Package ops holds what operators change while the engine runs: alert
// rules and their evaluation over the engine's metrics (rules.go, eval.go),
// and the runtime settings and feature flags (settings.go). The alert actor
// (actors/alerts.go) runs the evaluation; cmd/charla reloads the settings
// on SIGHUP and transport serves them to admins.
package ops

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Duration is a time.Duration written as text ("30s", "5m") in the
// settings file and in JSON.
type Duration time.Duration

// MarshalText writes d as time.Duration's String does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// UnmarshalText reads "30s", "1m30s"...
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("%q is not a duration (e.g. 30s, 5m)", b)
	}
	*d = Duration(v)
	return nil
}

// Severity says how urgent an alert is.
type Severity string

// The severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Kind is how a rule reads its metric.
type Kind string

// The kinds of rule. Each reads the sum of the metric's series whose labels
// include the rule's Labels.
const (
	// KindValue is the value now (a gauge: spool depth, breaker open).
	KindValue Kind = "value"
	// KindIncrease is how much the value grew over Window (a counter's
	// increase, or a gauge growing: the spool filling up).
	KindIncrease Kind = "increase"
	// KindRate is KindIncrease per second.
	KindRate Kind = "rate"
	// KindRatio is the increase of Metric over the increase of Denominator
	// within Window (an error rate: errors over attempts); no value while
	// the denominator does not move.
	KindRatio Kind = "ratio"
	// KindQuantile is the Quantile of a histogram's observations within
	// Window (heartbeat RTT p99), interpolated within its bucket.
	KindQuantile Kind = "quantile"
)

// Rule is one alert: when the metric's reading compares to Threshold (by
// Op) for For without a break, the alert fires; once it no longer does, it
// resolves. A rule whose metric does not exist (yet) never fires.
type Rule struct {
	Name        string            `json:"name" yaml:"name"`                                   // unique, [a-z0-9_]
	Metric      string            `json:"metric" yaml:"metric"`                               // a series name of docs/METRICS.md
	Labels      map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`           // only series with these labels
	Kind        Kind              `json:"kind" yaml:"kind"`                                   // value, increase, rate, ratio, quantile
	Denominator string            `json:"denominator,omitempty" yaml:"denominator,omitempty"` // ratio: the metric divided by
	Quantile    float64           `json:"quantile,omitempty" yaml:"quantile,omitempty"`       // quantile: 0 < q < 1
	Window      Duration          `json:"window,omitempty" yaml:"window,omitempty"`           // increase, rate, ratio, quantile: how far back
	Op          string            `json:"op" yaml:"op"`                                       // ">" or "<"
	Threshold   float64           `json:"threshold" yaml:"threshold"`
	For         Duration          `json:"for" yaml:"for"` // how long the condition must hold; 0 = at the first evaluation
	Severity    Severity          `json:"severity" yaml:"severity"`
	Summary     string            `json:"summary" yaml:"summary"` // for people: what is wrong and what to look at
	// DisableFlag names a feature flag turned off when the alert fires: the
	// automatic rollback of a feature that misbehaves.
	DisableFlag string `json:"disable_flag,omitempty" yaml:"disable_flag,omitempty"`
}

var ruleName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,63}$`)

// problems lists what is wrong with r, each naming the rule.
func (r Rule) problems() []error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("alert rule %q: "+format, append([]any{r.Name}, args...)...))
	}
	if !ruleName.MatchString(r.Name) {
		bad("name must be 1-64 characters of a-z, 0-9 and _, starting with a letter")
	}
	if r.Metric == "" {
		bad("metric is required")
	}
	switch r.Kind {
	case KindValue:
	case KindIncrease, KindRate, KindRatio, KindQuantile:
		if r.Window <= 0 {
			bad("kind %s needs a positive window", r.Kind)
		}
	default:
		bad("kind %q: must be value, increase, rate, ratio or quantile", r.Kind)
	}
	if (r.Kind == KindRatio) != (r.Denominator != "") {
		bad("a denominator goes with kind ratio, and only with it")
	}
	if r.Kind == KindQuantile && (r.Quantile <= 0 || r.Quantile >= 1) {
		bad("quantile must be between 0 and 1 (got %g)", r.Quantile)
	}
	if r.Op != ">" && r.Op != "<" {
		bad("op %q: must be > or <", r.Op)
	}
	if r.For < 0 {
		bad("for must not be negative")
	}
	switch r.Severity {
	case SeverityInfo, SeverityWarning, SeverityCritical:
	default:
		bad("severity %q: must be info, warning or critical", r.Severity)
	}
	if r.DisableFlag != "" && !knownFlag(r.DisableFlag) {
		bad("disable_flag %q is not a feature flag (%s)", r.DisableFlag, flagList())
	}
	return errs
}

// Rules are the alert rules the engine evaluates.
type Rules []Rule

// Validate reports every problem of every rule at once.
func (rs Rules) Validate() error {
	var errs []error
	seen := map[string]bool{}
	for _, r := range rs {
		errs = append(errs, r.problems()...)
		if seen[r.Name] {
			errs = append(errs, fmt.Errorf("alert rule %q is defined twice", r.Name))
		}
		seen[r.Name] = true
	}
	return errors.Join(errs...)
}

// DefaultRules are the shipped rules, one per concern of the seed
// (docs/monitoring/prometheus-rules.yml says the same in PromQL).
func DefaultRules() Rules {
	minute := Duration(time.Minute)
	return Rules{
		{Name: "heartbeat_rtt_p99_high", Metric: "charla_heartbeat_rtt_seconds", Kind: KindQuantile, Quantile: 0.99, Window: minute,
			Op: ">", Threshold: 0.1, For: minute, Severity: SeverityWarning,
			Summary: "heartbeat round trips p99 above 100 ms: the engine or the network is overloaded"},
		{Name: "store_error_rate_high", Metric: "charla_store_write_errors_total", Denominator: "charla_group_commits_total", Kind: KindRatio,
			Window: 5 * minute, Op: ">", Threshold: 0.01, For: 2 * minute, Severity: SeverityCritical,
			Summary: "more than 1% of group commits fail in the store (with PostgreSQL they are spooled meanwhile)"},
		{Name: "store_breaker_open", Metric: "charla_breaker_open", Labels: map[string]string{"dependency": "store"}, Kind: KindValue,
			Op: ">", Threshold: 0, Severity: SeverityCritical,
			Summary: "the database breaker is open: messages are acked from the local spool until it answers"},
		{Name: "soap_breaker_open", Metric: "charla_breaker_open", Labels: map[string]string{"dependency": "soap"}, Kind: KindValue,
			Op: ">", Threshold: 0, Severity: SeverityWarning,
			Summary: "the inventory service's breaker is open: stock answers are stale or unavailable"},
		{Name: "whatsapp_breaker_open", Metric: "charla_breaker_open", Labels: map[string]string{"dependency": "whatsapp"}, Kind: KindValue,
			Op: ">", Threshold: 0, Severity: SeverityCritical,
			Summary: "the WhatsApp Cloud API breaker is open: replies wait in the outbox"},
		{Name: "spool_growing", Metric: "charla_spool_depth", Kind: KindIncrease, Window: Duration(30 * time.Second),
			Op: ">", Threshold: 0, For: Duration(30 * time.Second), Severity: SeverityWarning,
			Summary: "the outage spool keeps growing: the database is not taking writes"},
		{Name: "rate_limit_rejections_spiking", Metric: "charla_rate_limit_rejections_total", Kind: KindRate, Window: minute,
			Op: ">", Threshold: 1, For: minute, Severity: SeverityWarning,
			Summary: "more than 60 requests a minute refused by rate limits: a flood, or limits too tight for real users"},
		{Name: "bot_sessions_piling_up", Metric: "charla_bot_sessions_active", Kind: KindValue,
			Op: ">", Threshold: 1000, For: 5 * minute, Severity: SeverityWarning,
			Summary: "more than 1,000 chatbot sessions open for 5 minutes: sessions are not ending or handing off"},
		{Name: "soap_p99_over_budget", Metric: "charla_soap_call_seconds", Kind: KindQuantile, Quantile: 0.99, Window: 5 * minute,
			Op: ">", Threshold: 0.3, For: 2 * minute, Severity: SeverityWarning,
			Summary: "SOAP calls p99 above the 300 ms answer budget: most stock lookups become jobs"},
	}
}
