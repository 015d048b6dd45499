package ops_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/ops"
	"charla/ratelimit"
	"charla/soapbridge/soapsim"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// The "What must be shown" 3: an invalid rate limit is refused
// whole and the old limit stays in force; a valid one applies at once to
// a client that stays connected.
func TestRuntimeChangeBadRefusedGoodAppliedWithoutDroppingAConnection(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithRuntimeSettings(), transporttest.WithTransport(func(c *transport.Config) {
		c.RateLimits.Allow = nil // loopback is limited like anyone
	}))
	ana := e.Dial(t, "ana", charla.RoleAgent)
	send := func() wire.Frame {
		t.Helper()
		cmid := uuid.NewString()
		ana.Send(transporttest.SendFrame("limits", cmid, "x", cmid))
		for {
			if f := ana.Next(transporttest.Wait); f.Ref == cmid && (f.Type == wire.TypeAck || f.Type == wire.TypeError) {
				return f
			}
		}
	}
	patch := func(body string) (int, string) {
		t.Helper()
		status, b := transporttest.Do(t, "PATCH", e.HTTPURL("/v1/admin/settings", "root", charla.RoleAdmin), body, nil)
		var p transport.Problem
		if status != http.StatusOK && json.Unmarshal(b, &p) == nil {
			return status, p.Error.Message
		}
		return status, string(b)
	}
	chatLimit := func() int {
		t.Helper()
		status, b := transporttest.Do(t, "GET", e.HTTPURL("/v1/admin/settings", "root", charla.RoleAdmin), nil, nil)
		var s ops.Settings
		if err := json.Unmarshal(b, &s); status != http.StatusOK || err != nil {
			t.Fatalf("GET settings: %d %s %v", status, b, err)
		}
		return s.RateLimits["chat"]
	}
	for i := range 5 {
		if f := send(); f.Type != wire.TypeAck {
			t.Fatalf("send %d under the default limit: %+v", i, f)
		}
	}

	for _, tc := range []struct {
		name, body string
		status     int
		mentions   []string
	}{
		{"negative limit", `{"rate_limits":{"chat":-5}}`, http.StatusBadRequest, []string{"rate-limit-chat must not be negative"}},
		{"one bad value spoils the change", `{"rate_limits":{"chat":3},"flags":{"teleport":true},"log_level":"loud"}`, http.StatusBadRequest,
			[]string{`unknown flag "teleport"`, `log_level "loud"`}},
		{"not a number", `{"rate_limits":{"chat":"lots"}}`, http.StatusBadRequest, []string{"settings change"}},
		{"unknown setting", `{"rate_limit":{"chat":3}}`, http.StatusBadRequest, []string{"unknown field"}},
		{"not an admin", "", http.StatusForbidden, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := patch(tc.body)
			if tc.name == "not an admin" {
				status, _ = transporttest.Do(t, "PATCH", e.HTTPURL("/v1/admin/settings", "ana", charla.RoleAgent), `{"rate_limits":{"chat":3}}`, nil)
			}
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			for _, m := range tc.mentions {
				if !strings.Contains(body, m) {
					t.Errorf("answer %s does not mention %q", body, m)
				}
			}
			if got := chatLimit(); got != 100 {
				t.Fatalf("chat limit %d after a refused change, want the old 100", got)
			}
		})
	}
	if f := send(); f.Type != wire.TypeAck {
		t.Fatalf("send after refused changes: %+v (the old limit must still hold)", f)
	}

	status, body := patch(`{"rate_limits":{"chat":3}}`)
	if status != http.StatusOK || chatLimit() != 3 {
		t.Fatalf("good change: %d %s", status, body)
	}
	// The same connection, with at most 3 tokens left in its bucket now.
	var acked, refused int
	for range 4 {
		switch f := send(); f.Code {
		case "":
			acked++
		case charla.CodeRateLimited:
			refused++
		default:
			t.Fatalf("send after the change: %+v", f)
		}
	}
	if acked != 3 || refused != 1 {
		t.Errorf("after lowering the limit to 3: %d acked, %d refused; want 3 and 1", acked, refused)
	}
	select {
	case <-ana.Done():
		t.Fatalf("connection dropped by the change (code %d)", ana.CloseCode())
	default:
	}
	if n := e.Sys.Stats().Disconnects(); len(n) != 0 {
		t.Errorf("disconnects %v, want none", n)
	}
}

// A settings file (what SIGHUP reloads) is applied all or nothing: a file
// with one bad value changes nothing; a good one changes what it lists.
func TestSettingsFileReload(t *testing.T) {
	var applied []ops.Rules
	rt, err := ops.NewRuntime(ops.InitialSettings("info", ratelimitDefaults(), ops.DefaultRules()),
		ops.Appliers{Alerts: func(r ops.Rules) error { applied = append(applied, r); return nil }}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "settings.yml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, file string
		problems   []string
	}{
		{"bad rate and bad rule", "rate_limits: {chat: -1}\nalerts:\n  - {name: x, metric: m, kind: sometimes, op: '>', threshold: 1, for: 10s, severity: warning}\n",
			[]string{"rate-limit-chat must not be negative", `kind "sometimes"`}},
		{"typo in a key", "flags: {bot_enabled: false}\nlog_levle: debug\n", []string{"log_levle"}},
		{"bad duration", "alerts:\n  - {name: x, metric: m, kind: value, op: '>', threshold: 1, for: soon, severity: warning}\n", []string{"not a duration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			write(tc.file)
			_, err := rt.Reload(path)
			for _, p := range tc.problems {
				if err == nil || !strings.Contains(err.Error(), p) {
					t.Errorf("reload error %v; want it to mention %q", err, p)
				}
			}
			cur := rt.Current()
			if cur.RateLimits["chat"] != 100 || !rt.Enabled(ops.FlagBotEnabled) || len(cur.Alerts) != len(ops.DefaultRules()) || cur.LogLevel != "info" {
				t.Errorf("settings changed by a refused file: %+v", cur)
			}
		})
	}
	if len(applied) != 0 {
		t.Fatalf("alert rules applied %d times by refused files", len(applied))
	}
	write(`log_level: debug
rate_limits: {chat: 40}
flags: {soap_jobs: false}
alerts:
  - name: spool_growing
    metric: charla_spool_depth
    kind: increase
    window: 1m
    op: ">"
    threshold: 10
    for: 2m
    severity: critical
    summary: the spool grows
`)
	cur, err := rt.Reload(path)
	if err != nil {
		t.Fatal(err)
	}
	if cur.LogLevel != "debug" || cur.RateLimits["chat"] != 40 || cur.RateLimits["auth"] != 10 || rt.Enabled(ops.FlagSOAPJobs) || !rt.Enabled(ops.FlagBotEnabled) {
		t.Errorf("after a good file: %+v", cur)
	}
	if len(applied) != 1 || len(applied[0]) != 1 || applied[0][0].Window != ops.Duration(60e9) || !strings.HasPrefix(cur.ChangedBy, "file ") {
		t.Errorf("rules applied %+v, changed by %q", applied, cur.ChangedBy)
	}
}

func ratelimitDefaults() ratelimit.Config { return ratelimit.DefaultConfig() }

// The soap_jobs flag decides what a lookup slower than the answer budget
// becomes: a job while on, an unavailable answer at the budget while off.
func TestSOAPJobsFlag(t *testing.T) {
	sim, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim.Handler())
	t.Cleanup(func() { sim.Close(); hs.Close() })
	if err := sim.SetFaults(soapsim.Faults{FaultSet: soapsim.FaultSet{LatencyMS: 300}}); err != nil {
		t.Fatal(err)
	}
	e := transporttest.Start(t, transporttest.WithRuntimeSettings(), transporttest.WithActors(func(c *actors.Config) {
		c.SOAP.URL = hs.URL
		c.SOAP.AnswerBudget = 50 * time.Millisecond
	}))
	agent := e.Dial(t, "agent", charla.RoleAgent)
	for i, tc := range []struct {
		on   bool
		want string // the first answer's type
	}{{false, wire.TypeError}, {true, wire.TypeJob}} {
		if _, err := e.Runtime.Apply(ops.Change{Flags: map[string]bool{ops.FlagSOAPJobs: tc.on}}, "test"); err != nil {
			t.Fatal(err)
		}
		ref := fmt.Sprint("r", i)
		agent.Send(wire.Frame{Type: wire.TypeInventory, Ref: ref, SKU: fmt.Sprintf("SKU-%05d", i+1)})
		var f wire.Frame
		for f.Ref != ref {
			f = agent.Next(transporttest.Wait)
		}
		if f.Type != tc.want || (!tc.on && (f.Code != charla.CodeUnavailable || !strings.Contains(f.Message, ops.FlagSOAPJobs))) {
			t.Errorf("soap_jobs %v: first answer %+v, want a %s", tc.on, f, tc.want)
		}
	}
	// The refused lookup's call still finished: nothing more reached the
	// client for it (no job frames), and its item is now cached.
	agent.NoFrame(wire.TypeError, 500*time.Millisecond)
}
