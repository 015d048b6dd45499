package wire

import "time"

// TypeAlert is the server frame that tells admins an alert fired or
// resolved (docs/PROTOCOL.md, "Alerts").
const TypeAlert = "alert"

// Alert is an alert rule firing or resolving, sent to every admin
// connection once per firing and once per resolution.
type Alert struct {
	Type      string    `json:"type"`
	Rule      string    `json:"rule"`     // the rule's name (docs/METRICS.md, the alert rules)
	Severity  string    `json:"severity"` // info, warning, critical
	State     string    `json:"state"`    // firing or resolved
	Value     float64   `json:"value"`    // the reading that fired it (the last one when resolved)
	Op        string    `json:"op"`       // > or <
	Threshold float64   `json:"threshold"`
	Summary   string    `json:"summary"`
	Since     time.Time `json:"started_at"` // when it started firing
	At        time.Time `json:"at"`         // when this frame's event happened
	// DisabledFlag is the feature flag its firing turned off, if any.
	DisabledFlag string `json:"disabled_flag,omitempty"`
}
