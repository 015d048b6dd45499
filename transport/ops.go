package transport

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"charla"
	"charla/ops"
)

// WithMetrics serves h (the engine's Prometheus registry) at GET /metrics
// on the main listener, to admins only: load figures help an attacker. A
// scraper without an admin token reads it on --metrics-addr instead.
func WithMetrics(h http.Handler) ServerOption { return func(s *Server) { s.metrics = h } }

// RuntimeSettings keeps the settings that change without a restart
// (ops.Runtime).
type RuntimeSettings interface {
	Current() ops.Settings
	Apply(c ops.Change, by string) (ops.Settings, error)
	Enabled(flag string) bool
}

// WithSettings serves the runtime settings to admins (GET and PATCH
// /v1/admin/settings), shows them in /readyz's details, and lets the
// feature flags gate what they name (polling_fallback: the long-polling
// endpoints).
func WithSettings(rs RuntimeSettings) ServerOption {
	return func(s *Server) {
		s.settings = rs
		WithReadinessDetails("settings", func() any {
			cur := rs.Current()
			cur.Alerts = nil // the rules are long; GET /v1/admin/settings has them
			return cur
		})(s)
	}
}

// routeOps mounts the operators' endpoints.
func (s *Server) routeOps(mux *http.ServeMux) {
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.adminOnly(s.metrics))
	}
	mux.Handle("GET /v1/admin/alerts", s.adminOnly(http.HandlerFunc(s.handleAlerts)))
	if s.settings != nil {
		mux.Handle("GET /v1/admin/settings", s.adminOnly(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, http.StatusOK, s.settings.Current())
		})))
		mux.Handle("PATCH /v1/admin/settings", s.adminOnly(http.HandlerFunc(s.handleSettingsPatch)))
	}
}

// adminOnly lets admins through (admin token, or role=admin in dev mode):
// 401 without valid credentials, 403 for any other role.
func (s *Server) adminOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := s.cfg.Auth.Authenticate(r)
		switch {
		case err != nil:
			writeProblem(w, charla.AsError(err))
		case id.User.Role != charla.RoleAdmin:
			writeProblem(w, charla.Errorf(charla.CodeForbidden, "admins only"))
		default:
			h.ServeHTTP(w, r)
		}
	})
}

// AlertsAnswer is GET /v1/admin/alerts: the alerts firing now.
type AlertsAnswer struct {
	Firing []ops.Event `json:"firing"`
}

func (s *Server) handleAlerts(w http.ResponseWriter, r *http.Request) {
	firing, err := s.sys.FiringAlerts(r.Context())
	answer(w, AlertsAnswer{Firing: append([]ops.Event{}, firing...)}, err)
}

// handleSettingsPatch applies an ops.Change: every problem is listed at
// once (400) and nothing changes; else the settings in force are answered.
func (s *Server) handleSettingsPatch(w http.ResponseWriter, r *http.Request) {
	id, _ := s.cfg.Auth.Authenticate(r) // adminOnly passed
	var c ops.Change
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "settings change: %v", err))
		return
	}
	cur, err := s.settings.Apply(c, "admin "+id.User.ID)
	if err != nil {
		var msgs []string
		for _, e := range flattenErr(err) {
			msgs = append(msgs, e.Error())
		}
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "settings change refused, nothing changed: %s", strings.Join(msgs, "; ")))
		return
	}
	writeJSON(w, http.StatusOK, cur)
}

func flattenErr(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErr(e)...)
		}
		return out
	}
	return []error{err}
}

// pollPaths are the long-polling endpoints the polling_fallback flag gates.
var pollPaths = map[string]bool{"/v1/poll": true, "/v1/send": true, "/v1/frames": true}

// gateFlags refuses what a feature flag turned off, before it reaches its
// handler.
func (s *Server) gateFlags(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.settings != nil && pollPaths[r.URL.Path] && !s.settings.Enabled(ops.FlagPollingFallback) {
			writeProblem(w, charla.Errorf(charla.CodeUnavailable, "long-polling is turned off (feature flag %s); use the WebSocket", ops.FlagPollingFallback))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// firingAlerts is /readyz's list of alerts firing now; a tree that does
// not answer quickly leaves it out rather than hold the probe.
func (s *Server) firingAlerts() []ops.Event {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	firing, _ := s.sys.FiringAlerts(ctx)
	return firing
}
