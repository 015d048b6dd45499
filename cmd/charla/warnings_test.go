package main

import (
	"bytes"
	"strings"
	"testing"
)

// Dangerous but valid settings are accepted with a warning on stderr, never
// refused: check-config exits 0 and names each danger.
func TestCheckConfigWarns(t *testing.T) {
	good := "q7Vd0hX2mZt9LrB4sK8wYc1NfJ6pGe3UaTo5iHvRzQx="
	for _, tc := range []struct {
		name string
		args []string
		want []string // substrings of the warnings, in order; none when empty
	}{
		{"a production setup", []string{"--addr", "0.0.0.0:8080", "--jwt-secret", good}, nil},
		{"dev auth on loopback", []string{"--auth-mode", "dev"}, nil},
		{"dev auth on every interface", []string{"--auth-mode", "dev", "--addr", "0.0.0.0:8080"}, []string{"auth-mode dev on 0.0.0.0:8080"}},
		{"dev auth on a host name", []string{"--auth-mode", "dev", "--addr", "chat.example:8080"}, []string{"auth-mode dev on chat.example:8080"}},
		{"debug on every interface", []string{"--auth-mode", "dev", "--debug-addr", ":6060"}, []string{"debug-addr :6060"}},
		{"debug on loopback", []string{"--auth-mode", "dev", "--debug-addr", "127.0.0.1:6060"}, nil},
		{"a secret of one character", []string{"--jwt-secret", strings.Repeat("a", 64)}, []string{"jwt-secret looks guessable"}},
		{"a secret of a short pattern", []string{"--jwt-secret", strings.Repeat("ab12", 10)}, []string{"jwt-secret looks guessable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(t.Context(), append([]string{"check-config"}, tc.args...), &stdout, &stderr, func(string) string { return "" }); code != 0 {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
			if len(tc.want) == 0 {
				if stderr.Len() > 0 {
					t.Fatalf("unexpected warnings:\n%s", stderr.String())
				}
				return
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("warnings:\n%s\nwant %d", stderr.String(), len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], "WARNING") || !strings.Contains(lines[i], w) {
					t.Errorf("warning %d = %q, want it to say %q", i, lines[i], w)
				}
			}
		})
	}
}
