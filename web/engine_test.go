package web_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla/ratelimit"
	"charla/transport/transporttest"
)

// The web side is tested against the real engine binary: the browser and
// node talk to it over HTTP and WebSocket as they would in production, and
// a restart is a real process stopping and starting on the same data.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "charla-web")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "charla")
	// No race detector in the engine: these tests are about the browser side,
	// and the binary builds and starts faster without it.
	if out, err := exec.Command("go", "build", "-o", binary, "charla/cmd/charla").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build charla: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(transporttest.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, err)
			code = 1
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTool finds a program the test needs; missing, the test is skipped
// on a developer's machine and fails under CI=true (.ci/run installs it).
func requireTool(t *testing.T, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not found (.ci/run installs it)", strings.Join(names, " or "))
	}
	t.Skipf("%s not found; .ci/run installs it", strings.Join(names, " or "))
	return ""
}

// engine is a charla serve process that a test may stop and start again on
// the same address and data, from any goroutine.
type engine struct {
	Addr string
	args []string
	logs transporttest.LogBuffer

	mu  sync.Mutex
	cmd *exec.Cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startEngine runs the engine on dataDir with the given auth flags (dev auth
// when none), loopback exempt from the rate limits, and stops it when the
// test ends.
func startEngine(t *testing.T, dataDir string, auth ...string) *engine {
	t.Helper()
	return startEngineAt(t, freeAddr(t), dataDir, auth...)
}

// startEngineAt is startEngine on a chosen address (one another process
// must know beforehand).
func startEngineAt(t *testing.T, addr, dataDir string, auth ...string) *engine {
	t.Helper()
	if len(auth) == 0 {
		auth = []string{"--auth-mode", "dev"}
	}
	e := &engine{Addr: addr}
	e.args = append([]string{"serve", "--addr", e.Addr, "--data-dir", dataDir, "--log-level", "warn",
		"--rate-limit-allow", strings.Join(ratelimit.LoopbackCIDRs, ",")}, auth...)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("engine log:\n%s", e.logs.String())
		}
	})
	return e
}

// Start runs the engine and returns once it answers /healthz.
func (e *engine) Start() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd != nil {
		return errors.New("engine already running")
	}
	cmd := exec.Command(binary, e.args...)
	cmd.Stdout, cmd.Stderr = &e.logs, &e.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start engine: %w", err)
	}
	e.cmd = cmd
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r, err := http.Get("http://" + e.Addr + "/healthz"); err == nil {
			r.Body.Close()
			return nil
		}
	}
	return fmt.Errorf("engine did not answer on %s:\n%s", e.Addr, e.logs.String())
}

// Stop ends the engine as an orchestrator would (SIGTERM: clients get 1012).
func (e *engine) Stop() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cmd == nil {
		return nil
	}
	cmd := e.cmd
	e.cmd = nil
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return fmt.Errorf("engine exit: %w", err)
		}
		return nil
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("engine did not stop within 20 s of SIGTERM")
	}
}

// URL is the engine's HTTP base.
func (e *engine) URL() string { return "http://" + e.Addr }

// controlServer lets a node test stop and start the engine: POST /stop,
// /start. It is only reachable from the test's loopback.
func controlServer(t *testing.T, e *engine) string {
	t.Helper()
	mux := http.NewServeMux()
	act := func(f func() error) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			if err := f(); err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}
	}
	mux.HandleFunc("POST /stop", act(e.Stop))
	mux.HandleFunc("POST /start", act(e.Start))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return "http://" + ln.Addr().String()
}
