package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla/bench/scenario"
	"charla/transport/transporttest"
)

// os/signal's watcher goroutine lives for the process once NotifyContext
// has been called; everything else must be gone.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "charla-bench-test")
	if err != nil {
		panic(err)
	}
	// The engine binary the cluster tests start as real processes (no race
	// detector: they test the bench, and it starts faster without).
	engineBinary = filepath.Join(dir, "charla")
	if out, err := exec.Command("go", "build", "-o", engineBinary, "charla/cmd/charla").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build charla: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreTopFunction("os/signal.signal_recv")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func TestCommandLineMasksTheSecret(t *testing.T) {
	got := commandLine([]string{"steady", "--token-secret", "s3cret", "--engine-cmd", "./bin/charla serve --addr x", "--token-secret=abc"})
	if strings.Contains(got, "s3cret") || strings.Contains(got, "abc") {
		t.Fatalf("secret leaked: %s", got)
	}
	if !strings.Contains(got, `--engine-cmd './bin/charla serve --addr x'`) {
		t.Fatalf("engine command not quoted for a shell: %s", got)
	}
}

func TestFlagsOverrideDefaults(t *testing.T) {
	d := scenario.Defaults("steady")
	o := withDefaults(d, scenario.Options{Conns: 7, Rate: 0}, map[string]bool{"conns": true, "rate": true})
	if o.Conns != 7 || o.Rate != 0 || o.Convs != d.Convs || o.Duration != d.Duration {
		t.Fatalf("options %+v", o)
	}
}

func TestUsageAndBadInput(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(nil, &out, &errb); code != 2 || !strings.Contains(errb.String(), "reconnect-storm") {
		t.Fatalf("no args: exit %d, %s", code, errb.String())
	}
	if code := run([]string{"list"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "silent-drop") {
		t.Fatalf("list: exit %d", code)
	}
	errb.Reset()
	if code := run([]string{"steady", "--no-such-flag"}, &out, &errb); code != 2 {
		t.Fatalf("bad flag: exit %d", code)
	}
	if code := run([]string{"nope", "--addr", "127.0.0.1:1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "unknown scenario") {
		t.Fatalf("unknown scenario: exit %d, %s", code, errb.String())
	}
	if code := run([]string{"steady", "--restart-signal", "HUP", "--conns", "1"}, &out, &errb); code != 2 {
		t.Fatalf("bad signal: exit %d", code)
	}
	errb.Reset()
	if code := run([]string{"inventory", "--addr", "127.0.0.1:1", "--conns", "1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--soap-admin") {
		t.Fatalf("inventory without a simulator: exit %d, %s", code, errb.String())
	}
}

// The binary's whole path, against the in-process engine: flags, run,
// table, JSON and plot, exit code 0.
func TestSteadyWritesOutputs(t *testing.T) {
	e := transporttest.Start(t)
	dir := t.TempDir()
	outPath, plotPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	var out, errb bytes.Buffer
	code := run([]string{"steady", "--addr", e.Addr, "--conns", "10", "--convs", "2", "--rate", "100",
		"--duration", (time.Second).String(), "--out", outPath, "--plot", plotPath}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "RESULT: OK") || !strings.Contains(errb.String(), "conns 10") {
		t.Fatalf("table or progress missing:\n%s\n%s", out.String(), errb.String())
	}
	b, err := os.ReadFile(outPath)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["scenario"] != "steady" || m["acked"].(float64) == 0 || !strings.HasPrefix(m["command_line"].(string), "charla-bench steady --addr") {
		t.Fatalf("json %v", m)
	}
	if st, err := os.Stat(plotPath); err != nil || st.Size() < 1000 {
		t.Fatalf("plot: %v", err)
	}
	if code := run([]string{"plot", outPath, "--plot", filepath.Join(dir, "again.html")}, &out, &errb); code != 0 {
		t.Fatalf("replot exit %d: %s", code, errb.String())
	}
}
