package web_test

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCharlaJS runs charla.js's own tests (web/jstest, node's test runner)
// against a real engine: node gets its URL, and a control URL to stop and
// start it for the outage tests.
func TestCharlaJS(t *testing.T) {
	node := requireTool(t, "node", "nodejs")
	e := startEngine(t, t.TempDir())
	control := controlServer(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	args := []string{"--test", "--test-reporter=spec"}
	switch major := nodeMajor(t, node); {
	case major < 20:
		t.Fatalf("node %d has no WebSocket; charla.js's tests need node 20 or later", major)
	case major < 22:
		args = append(args, "--experimental-websocket") // global WebSocket, on by default from node 22
	}
	cmd := exec.CommandContext(ctx, node, append(args, "jstest/charla.test.mjs", "jstest/prom.test.mjs")...)
	cmd.Env = append(os.Environ(), "CHARLA_URL="+e.URL(), "CHARLA_CONTROL="+control)
	out, err := cmd.CombinedOutput()
	t.Logf("node --test:\n%s", out)
	if err != nil {
		t.Fatalf("charla.js tests failed: %v", err)
	}
}

func nodeMajor(t *testing.T, node string) int {
	t.Helper()
	out, err := exec.Command(node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	v := strings.TrimPrefix(strings.TrimSpace(string(out)), "v")
	major, err := strconv.Atoi(strings.SplitN(v, ".", 2)[0])
	if err != nil {
		t.Fatalf("node version %q: %v", out, err)
	}
	return major
}
