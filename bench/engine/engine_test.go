package engine

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// When the test binary runs as the "engine" of a test, it serves /metrics
// on the address in this variable until it is signalled.
const engineEnv = "CHARLA_BENCH_TEST_ENGINE_ADDR"

func TestMain(m *testing.M) {
	if addr := os.Getenv(engineEnv); addr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
			fmt.Fprintln(w, "# HELP go_goroutines x\ngo_goroutines 7\ngo_memstats_heap_inuse_bytes 1.5e+06\nother_metric 3")
		})
		fmt.Println("fake engine listening; rate-limit allow-list:", os.Getenv("CHARLA_RATE_LIMIT_ALLOW"))
		_ = http.ListenAndServe(addr, mux)
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

func TestStartRestartStop(t *testing.T) {
	addr := freeAddr(t)
	var log bytes.Buffer
	cmd := fmt.Sprintf("%s=%s %s -test.run=^$", engineEnv, addr, os.Args[0])
	ctx := context.Background()
	// The bench allow-lists loopback in the engine it starts.
	env := AllowLoopbackEnv(func(string) string { return "" })
	p, err := Start(ctx, cmd, addr, &log, env...) // exec copies output on one goroutine, done before Wait returns
	if err != nil {
		t.Fatal(err)
	}
	pid := p.PID()
	if pid == 0 {
		t.Fatal("no pid")
	}
	rss, err := RSS(pid)
	if err != nil || rss <= 0 {
		t.Fatalf("rss %d, %v", rss, err)
	}
	m, err := Metrics(ctx, "http://"+addr+"/metrics")
	if err != nil || m["go_goroutines"] != 7 || m["go_memstats_heap_inuse_bytes"] != 1.5e6 || len(m) != 2 {
		t.Fatalf("metrics %v, %v", m, err)
	}
	if _, err := Start(ctx, cmd, addr, nil); err == nil || !strings.Contains(err.Error(), "already accepts") {
		t.Fatalf("second engine on a busy address: %v", err)
	}

	rt, err := p.Restart(ctx, syscall.SIGKILL, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID() == pid || p.PID() == 0 || p.Starts() != 2 {
		t.Fatalf("after restart pid %d (was %d), starts %d", p.PID(), pid, p.Starts())
	}
	if !rt.Signaled.Before(rt.Ready) || rt.Exited.Before(rt.Signaled) {
		t.Fatalf("restart times %+v", rt)
	}
	if err := p.Stop(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.PID() != 0 {
		t.Fatal("pid after stop")
	}
	if !strings.Contains(log.String(), "fake engine listening; rate-limit allow-list: 127.0.0.0/8,::1/128") {
		t.Fatalf("engine output not logged, or no loopback allow-list: %q", log.String())
	}
}

// An operator's own allow-list is left alone.
func TestAllowLoopbackEnvKeepsTheOperators(t *testing.T) {
	if env := AllowLoopbackEnv(func(string) string { return "10.0.0.0/8" }); env != nil {
		t.Fatalf("env %q, want none", env)
	}
}

func TestStartFailureIsReported(t *testing.T) {
	_, err := Start(context.Background(), "exit 3", freeAddr(t), nil)
	if err == nil || !strings.Contains(err.Error(), "exited before accepting") {
		t.Fatalf("err = %v", err)
	}
}

func TestExecLine(t *testing.T) {
	for in, want := range map[string]string{
		"./bin/charla serve --addr x":  "exec ./bin/charla serve --addr x",
		"A=1 B_2=x ./bin/charla serve": "A=1 B_2=x exec ./bin/charla serve",
		"./x --flag=1":                 "exec ./x --flag=1",
	} {
		if got := execLine(in); got != want {
			t.Errorf("execLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestCPUSeconds(t *testing.T) {
	got, err := parseStatCPU("123 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0")
	if err != nil || got != 4 {
		t.Fatalf("%v %v, want 4 s", got, err)
	}
	if s, err := CPUSeconds(os.Getpid()); err != nil || s < 0 {
		t.Fatalf("own cpu %v %v", s, err)
	}
}

func TestParseMemStats(t *testing.T) {
	m, err := parseMemStats(strings.NewReader("heap profile: 1: 2 [3: 4] @ heap/1048576\n\n# runtime.MemStats\n# Alloc = 100\n# HeapAlloc = 200\n# HeapInuse = 300\n# Sys = 400\n"))
	if err != nil || m["go_memstats_heap_inuse_bytes"] != 300 || m["go_memstats_heap_alloc_bytes"] != 200 || m["go_memstats_sys_bytes"] != 400 {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := parseMemStats(strings.NewReader("nothing")); err == nil {
		t.Fatal("no error without MemStats")
	}
}

func TestParseVmRSS(t *testing.T) {
	n, err := parseVmRSS(strings.NewReader("Name:\tx\nVmRSS:\t  2048 kB\n"))
	if err != nil || n != 2048*1024 {
		t.Fatalf("%d %v", n, err)
	}
	if _, err := parseVmRSS(strings.NewReader("Name: x\n")); err == nil {
		t.Fatal("no error without VmRSS")
	}
}

func TestParseGoroutines(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
		err  bool
	}{
		{in: "goroutine profile: total 2023\n1000 @ 0x4 0x5\n", want: 2023},
		{in: "goroutine profile: total 7", want: 7},
		{in: "heap profile: 1: 2 [3: 4] @ heap/1048576\n", err: true},
		{in: "goroutine profile: total many\n", err: true},
		{in: "", err: true},
	} {
		got, err := parseGoroutines(strings.NewReader(tc.in))
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("parseGoroutines(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.err)
		}
	}
}
