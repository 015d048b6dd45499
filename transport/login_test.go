package transport_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// tokensOf returns a decoder of token responses that fails t unless the
// response is a 200 with both tokens.
func tokensOf(t *testing.T) func(*http.Response, []byte) transport.TokenResponse {
	return func(resp *http.Response, body []byte) transport.TokenResponse {
		t.Helper()
		var tr transport.TokenResponse
		if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &tr) != nil || tr.AccessToken == "" || tr.RefreshToken == "" {
			t.Fatalf("want tokens, got %d %s", resp.StatusCode, body)
		}
		return tr
	}
}

// problemCode decodes a REST error body, failing the test unless the status
// is want.
func problemCode(t *testing.T, resp *http.Response, body []byte, want int) charla.Code {
	t.Helper()
	var p struct {
		Error struct {
			Code    charla.Code `json:"code"`
			Message string      `json:"message"`
		} `json:"error"`
	}
	if resp.StatusCode != want || json.Unmarshal(body, &p) != nil || p.Error.Code == "" || p.Error.Message == "" {
		t.Fatalf("want %d with an error body, got %d %s", want, resp.StatusCode, body)
	}
	return p.Error.Code
}

// Login, the access token on /v1/ws, refresh rotation, reuse detection,
// logout and disabling, in the order a client meets them.
func TestLoginRefreshLogout(t *testing.T) {
	e, svc := transporttest.StartLogin(t, nil)
	ctx := t.Context()
	agent, err := svc.AddAgent(ctx, "Ana@example.com", "Ana", charla.RoleAgent, "correct horse battery")
	if err != nil {
		t.Fatal(err)
	}
	login := func(email, pw string) (*http.Response, []byte) {
		return e.Do(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": pw})
	}
	refresh := func(tok string) (*http.Response, []byte) {
		return e.Do(t, "POST", "/v1/auth/refresh", "", map[string]string{"refresh_token": tok})
	}
	tokens := tokensOf(t)

	for _, tc := range []struct{ name, email, pw string }{
		{"wrong password", "ana@example.com", "wrong horse battery"},
		{"unknown email", "eve@example.com", "correct horse battery"},
	} {
		resp, body := login(tc.email, tc.pw)
		if code := problemCode(t, resp, body, http.StatusUnauthorized); code != charla.CodeUnauthorized {
			t.Fatalf("%s: code %s", tc.name, code)
		}
	}
	first := tokens(login("ANA@example.com ", "correct horse battery"))
	if first.User.ID != agent.ID || first.User.Role != charla.RoleAgent || first.ExpiresIn != 15*60 {
		t.Fatalf("login answered %+v", first)
	}
	// The access token opens a WebSocket as the agent.
	c, err := transporttest.DialURL(t, "ws://"+e.Addr+"/v1/ws", http.Header{"Authorization": {"Bearer " + first.AccessToken}})
	if err != nil {
		t.Fatalf("dial with the login's token: %v", err)
	}
	if w := c.Next(transporttest.Wait); w.Type != wire.TypeWelcome || w.User != agent.ID || w.Role != charla.RoleAgent {
		t.Fatalf("welcome = %+v", w)
	}
	// A token minted elsewhere with the same secret (Supabase Auth) still works.
	supa, _ := transport.MintToken(transporttest.Secret, "9b2c4f7e-0000-4000-8000-000000000001", charla.RoleCustomer, time.Minute)
	if _, err := transporttest.DialURL(t, "ws://"+e.Addr+"/v1/ws?access_token="+supa, nil); err != nil {
		t.Fatalf("dial with a Supabase-style token: %v", err)
	}

	second := tokens(refresh(first.RefreshToken))
	if second.RefreshToken == first.RefreshToken || second.User.ID != agent.ID {
		t.Fatalf("refresh did not rotate: %+v", second)
	}
	third := tokens(refresh(second.RefreshToken))
	// Reusing a spent token is refused and revokes the whole family: the
	// newest token of the family (third) stops working too.
	resp, body := refresh(first.RefreshToken)
	problemCode(t, resp, body, http.StatusUnauthorized)
	resp, body = refresh(third.RefreshToken)
	problemCode(t, resp, body, http.StatusUnauthorized)

	// Logout revokes a fresh login's family.
	fourth := tokens(login("ana@example.com", "correct horse battery"))
	if resp, _ := e.Do(t, "POST", "/v1/auth/logout", "", map[string]string{"refresh_token": fourth.RefreshToken}); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("logout = %d", resp.StatusCode)
	}
	resp, body = refresh(fourth.RefreshToken)
	problemCode(t, resp, body, http.StatusUnauthorized)

	// A disabled agent can neither log in nor refresh.
	fifth := tokens(login("ana@example.com", "correct horse battery"))
	if err := svc.Store().DisableAgent(ctx, "ana@example.com"); err != nil {
		t.Fatal(err)
	}
	resp, body = login("ana@example.com", "correct horse battery")
	problemCode(t, resp, body, http.StatusUnauthorized)
	resp, body = refresh(fifth.RefreshToken)
	problemCode(t, resp, body, http.StatusUnauthorized)
}

// Bad requests are 4xx with the error body, and login needs a secret.
func TestLoginRefusals(t *testing.T) {
	e, _ := transporttest.StartLogin(t, nil)
	for _, tc := range []struct {
		name   string
		path   string
		body   []byte
		ctype  string
		status int
	}{
		{"not json", "/v1/auth/login", []byte("email=a"), "", http.StatusBadRequest},
		{"two objects", "/v1/auth/login", []byte(`{"email":"a@b.c","password":"12345678"}{}`), "", http.StatusBadRequest},
		{"missing password", "/v1/auth/login", []byte(`{"email":"a@b.c"}`), "", http.StatusBadRequest},
		{"form content type", "/v1/auth/login", []byte(`{}`), "application/x-www-form-urlencoded", http.StatusUnsupportedMediaType},
		{"huge", "/v1/auth/login", []byte(`{"email":"` + strings.Repeat("a", 9000) + `"}`), "", http.StatusRequestEntityTooLarge},
		{"empty refresh", "/v1/auth/refresh", []byte(`{}`), "", http.StatusUnauthorized},
		{"logout of nothing", "/v1/auth/logout", []byte(`{"refresh_token":"nope"}`), "", http.StatusNoContent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var h []string
			if tc.ctype != "" {
				h = []string{"Content-Type", tc.ctype}
			}
			resp, body := e.Do(t, "POST", tc.path, "", tc.body, h...)
			if tc.status == http.StatusNoContent {
				if resp.StatusCode != tc.status {
					t.Fatalf("status %d", resp.StatusCode)
				}
				return
			}
			problemCode(t, resp, body, tc.status)
		})
	}
	// Dev mode without a secret cannot sign tokens: 503, not a token signed
	// with an empty key.
	dev, _ := transporttest.StartLogin(t, nil, transporttest.WithTransport(func(c *transport.Config) {
		c.Auth = transport.Authenticator{Mode: transport.AuthDev}
	}))
	resp, body := dev.Do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "a@b.c", "password": "12345678"})
	if code := problemCode(t, resp, body, http.StatusServiceUnavailable); code != charla.CodeUnavailable {
		t.Fatalf("code %s", code)
	}
}

// An unknown e-mail takes as long as a wrong password for a known one: the
// password check runs against a dummy hash. Medians of interleaved samples,
// within a generous factor (the machine is shared and loaded).
func TestLoginTimingHidesUnknownEmails(t *testing.T) {
	e, svc := transporttest.StartLogin(t, nil)
	if _, err := svc.AddAgent(t.Context(), "known@example.com", "K", charla.RoleAgent, "the right password"); err != nil {
		t.Fatal(err)
	}
	const n = 25
	var known, unknown []time.Duration
	for i := range 2 * n {
		email := "known@example.com"
		if i%2 == 1 {
			email = "unknown@example.com"
		}
		start := time.Now()
		resp, _ := e.Do(t, "POST", "/v1/auth/login", "", map[string]string{"email": email, "password": "a wrong password"})
		d := time.Since(start)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d", resp.StatusCode)
		}
		if i%2 == 0 {
			known = append(known, d)
		} else {
			unknown = append(unknown, d)
		}
	}
	slices.Sort(known)
	slices.Sort(unknown)
	k, u := known[n/2], unknown[n/2]
	t.Logf("login p50: known e-mail %v, unknown e-mail %v (wrong password, %d each)", k, u, n)
	if ratio := float64(max(k, u)) / float64(min(k, u)); ratio > 2.5 {
		t.Fatalf("medians differ by %.1fx: known %v, unknown %v", ratio, k, u)
	}
}

// GET /v1/agents names the staff for a panel (assignee ids are user ids):
// enabled accounts only, to agents and admins only.
func TestListAgents(t *testing.T) {
	e, svc := transporttest.StartLogin(t, nil)
	ctx := t.Context()
	for _, a := range []struct {
		email, name string
		role        charla.Role
	}{{"bea@example.com", "Bea", charla.RoleAdmin}, {"ana@example.com", "Ana", charla.RoleAgent}, {"carl@example.com", "Carl", charla.RoleAgent}} {
		if _, err := svc.AddAgent(ctx, a.email, a.name, a.role, "correct horse battery"); err != nil {
			t.Fatal(err)
		}
	}
	if err := svc.Store().DisableAgent(ctx, "carl@example.com"); err != nil {
		t.Fatal(err)
	}
	ana := tokensOf(t)(e.Do(t, "POST", "/v1/auth/login", "", map[string]string{"email": "ana@example.com", "password": "correct horse battery"}))
	resp, body := e.Do(t, "GET", "/v1/agents", ana.AccessToken, nil)
	var list transport.AgentList
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("agents: %d %s", resp.StatusCode, body)
	}
	if len(list.Agents) != 2 || list.Agents[0].Name != "Ana" || list.Agents[0].ID != ana.User.ID || list.Agents[1].Name != "Bea" || list.Agents[1].Role != charla.RoleAdmin {
		t.Fatalf("agents = %s, want Ana and Bea (Carl is disabled)", body)
	}
	if strings.Contains(string(body), "@") {
		t.Fatalf("agents = %s: e-mails are not for other staff", body)
	}
	customer, _ := transport.MintToken(transporttest.Secret, "cus", charla.RoleCustomer, time.Minute)
	resp, body = e.Do(t, "GET", "/v1/agents", customer, nil)
	problemCode(t, resp, body, http.StatusForbidden)
}
