package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"charla/ops"
	"charla/transport/transporttest"
)

// The settings file is reloaded on SIGHUP by the real process: a file with
// a bad value is refused whole and the old values stay; a good one
// applies, and the client connected meanwhile keeps its connection.
func TestSIGHUPReloadsTheSettingsFile(t *testing.T) {
	dir, addr, metricsAddr := t.TempDir(), freeAddr(t), freeAddr(t)
	path := filepath.Join(dir, "settings.yml")
	write := func(s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("rate_limits: {chat: 50}\n")
	p := startEngine(t, addr, dir, "--settings-file", path, "--metrics-addr", metricsAddr)
	settings := func() ops.Settings {
		t.Helper()
		status, body := transporttest.Do(t, "GET", fmt.Sprintf("http://%s/v1/admin/settings?user=root&role=admin", addr), nil, nil)
		var s ops.Settings
		if err := json.Unmarshal(body, &s); status != http.StatusOK || err != nil {
			t.Fatalf("GET settings: %d %s", status, body)
		}
		return s
	}
	if s := settings(); s.RateLimits["chat"] != 50 || !s.Flags[ops.FlagPollingFallback] {
		t.Fatalf("settings at start: %+v", s)
	}
	c := dial(t, addr, "stays")
	sendN(t, c, "hup", 1)
	hup := func(wantLog string) {
		t.Helper()
		before := strings.Count(p.logs.String(), wantLog)
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(10 * time.Second); strings.Count(p.logs.String(), wantLog) == before; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after SIGHUP:\n%s", wantLog, p.logs.String())
			}
		}
	}

	write("rate_limits: {chat: -1}\nflags: {polling_fallback: false}\n")
	hup("runtime settings change refused")
	if s := settings(); s.RateLimits["chat"] != 50 || !s.Flags[ops.FlagPollingFallback] {
		t.Fatalf("a refused file changed the settings: %+v", s)
	}

	write("rate_limits: {chat: 20}\nflags: {polling_fallback: false}\n")
	hup("runtime settings reloaded")
	if s := settings(); s.RateLimits["chat"] != 20 || s.Flags[ops.FlagPollingFallback] || !strings.HasPrefix(s.ChangedBy, "file ") {
		t.Fatalf("after a good file: %+v", s)
	}
	if status, _ := transporttest.Do(t, "POST", fmt.Sprintf("http://%s/v1/poll?user=p&role=agent", addr), `{"wait_ms":0}`, nil); status != http.StatusServiceUnavailable {
		t.Errorf("poll with polling_fallback off: %d, want 503", status)
	}
	sendN(t, c, "hup", 1) // the same connection, still served
	select {
	case <-c.Done():
		t.Fatalf("connection closed by the reload (code %d)", c.CloseCode())
	default:
	}

	// The private listener: metrics without credentials, details in readyz.
	status, body := transporttest.Do(t, "GET", "http://"+metricsAddr+"/metrics", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), "charla_connections_active 1") {
		t.Errorf("metrics-addr /metrics: %d\n%s", status, body)
	}
	status, body = transporttest.Do(t, "GET", "http://"+metricsAddr+"/readyz", nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"polling_fallback":false`) {
		t.Errorf("metrics-addr /readyz: %d %s", status, body)
	}
	if status, _ := transporttest.Do(t, "GET", "http://"+addr+"/metrics", nil, nil); status != http.StatusUnauthorized {
		t.Errorf("main listener /metrics without credentials: %d, want 401", status)
	}
}

// check-config reads the settings file too, and lists its problems with
// the rest.
func TestCheckConfigListsSettingsFileProblems(t *testing.T) {
	path := filepath.Join(t.TempDir(), "settings.yml")
	if err := os.WriteFile(path, []byte("rate_limits: {chat: -1}\nflags: {warp: true}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"check-config", "--auth-mode", "dev", "--settings-file", path, "--alert-interval", "0s"},
		&stdout, &stderr, func(string) string { return "" })
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, stderr.String())
	}
	for _, want := range []string{"rate-limit-chat must not be negative", `unknown flag "warp"`, "alert-interval must be positive"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not mention %q:\n%s", want, stderr.String())
		}
	}
}
