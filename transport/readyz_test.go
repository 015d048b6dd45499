package transport_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
)

// /readyz tells anyone whether the engine is ready, and only admins how
// loaded it is and how its dependencies are.
func TestReadyzDetailsAreForAdmins(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.Auth = transport.Authenticator{Mode: transport.AuthJWT, Secret: secret}
	}))
	token := func(role charla.Role) string {
		tok, err := transport.MintToken(secret, "ops", role, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	for _, tc := range []struct {
		name    string
		auth    string
		details bool
	}{
		{"anonymous", "", false},
		{"a customer", token(charla.RoleCustomer), false},
		{"an agent", token(charla.RoleAgent), false},
		{"a bad token", "not.a.token", false},
		{"an admin", token(charla.RoleAdmin), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+e.Addr+"/readyz", nil)
			if tc.auth != "" {
				req.Header.Set("Authorization", "Bearer "+tc.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
				t.Fatalf("readyz: %d %v", resp.StatusCode, err)
			}
			if body["status"] != "ready" {
				t.Fatalf("status %v", body)
			}
			_, hasConns := body["connections"]
			_, hasSpool := body["spool_depth"]
			if hasConns != tc.details || hasSpool != tc.details || (len(body) > 1) != tc.details {
				t.Fatalf("body %v: details shown = %v, want %v", body, len(body) > 1, tc.details)
			}
		})
	}
}

// /readyz answers 503 with a one-word status while the engine starts and
// while it drains, so that a load balancer sends it nothing then; 200 in
// between.
func TestReadyzSaysStartingAndDraining(t *testing.T) {
	e := transporttest.Start(t)
	ask := func(h http.Handler) (int, string) {
		t.Helper()
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
		var body transport.Readiness
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("readyz body %q: %v", rec.Body, err)
		}
		return rec.Code, body.Status
	}
	notServing := transport.NewServer(transport.DefaultConfig(), e.Sys, zerolog.Nop())
	for _, tc := range []struct {
		name   string
		h      func() http.Handler
		before func()
		code   int
		status string
	}{
		{"built, not serving yet", func() http.Handler { return notServing.ReadyHandler(true) }, nil, http.StatusServiceUnavailable, transport.StatusStarting},
		{"serving", func() http.Handler { return e.Server().ReadyHandler(true) }, nil, http.StatusOK, transport.StatusReady},
		{"shutting down", func() http.Handler { return e.Server().ReadyHandler(true) }, e.Close, http.StatusServiceUnavailable, transport.StatusDraining},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			if code, status := ask(tc.h()); code != tc.code || status != tc.status {
				t.Errorf("readyz %d %q, want %d %q", code, status, tc.code, tc.status)
			}
		})
	}
}
