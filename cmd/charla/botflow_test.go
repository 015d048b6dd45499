package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInvalidBotFlowListsEveryProblem: check-config (and serve) read the
// --bot-flow file and list each of its problems with the others, exit 2.
func TestInvalidBotFlowListsEveryProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "flow.yaml")
	flow := "start: hello\nfallback: hello\nsku_pattern: '('\nchecking_after: 1s\ngive_up_after: 2s\nnodes:\n  hello: {say: hi, action: fly}\n"
	if err := os.WriteFile(path, []byte(flow), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"invalid file", []string{"check-config", "--auth-mode", "dev", "--bot-flow", path, "--bot-session-timeout", "0s"}, 2,
			[]string{"bot-flow " + path + ": sku_pattern", `nodes.hello.action: "fly"`, "messages.apology", "bot-session-timeout must be positive"}},
		{"missing file", []string{"check-config", "--auth-mode", "dev", "--bot-flow", path + ".nope"}, 2, []string{"bot-flow: open"}},
		{"off", []string{"check-config", "--auth-mode", "dev", "--bot-flow", "off"}, 0, nil},
		{"the default", []string{"check-config", "--auth-mode", "dev"}, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(context.Background(), tc.args, &out, &errOut, func(string) string { return "" }); code != tc.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tc.code, errOut.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("stderr does not mention %q:\n%s", w, errOut.String())
				}
			}
		})
	}
}
