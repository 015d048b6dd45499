// Package engine is how the bench reaches the engine process itself, not
// its protocol: start it from a command line (--engine-cmd), restart it for
// the reconnect-storm scenario, signal an engine it did not start
// (--engine-pid), and read its memory (VmRSS from /proc, Go heap from its
// Prometheus endpoint when it has one), so that "memory per connection"
// is measured on the engine and not guessed.
package engine

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is an engine the bench started and owns.
type Process struct {
	cmdline string
	addr    string
	logw    io.Writer
	env     []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
	starts  int
}

// ReadyTimeout bounds how long a start or restart waits for the engine to
// accept TCP connections on its address.
const ReadyTimeout = 60 * time.Second

// Start runs cmdline through /bin/sh (with exec, so that the PID is the
// engine's) with its output appended to logw, and waits until addr accepts
// connections. env (KEY=VALUE) is added to the bench's own environment. The
// process is in its own process group, so that Stop also ends anything it
// spawned.
func Start(ctx context.Context, cmdline, addr string, logw io.Writer, env ...string) (*Process, error) {
	if strings.TrimSpace(cmdline) == "" {
		return nil, errors.New("start engine: empty --engine-cmd")
	}
	if logw == nil {
		logw = io.Discard
	}
	p := &Process{cmdline: cmdline, addr: addr, logw: logw, env: env}
	if err := p.start(ctx); err != nil {
		return nil, err
	}
	return p, nil
}

func (p *Process) start(ctx context.Context) error {
	if err := ensureFree(p.addr); err != nil {
		return err
	}
	cmd := exec.Command("/bin/sh", "-c", execLine(p.cmdline))
	cmd.Stdout, cmd.Stderr = p.logw, p.logw
	if len(p.env) > 0 {
		cmd.Env = append(os.Environ(), p.env...)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start engine %q: %w", p.cmdline, err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.starts++
	p.mu.Unlock()
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.waitErr = err
		p.mu.Unlock()
		close(exited)
	}()
	if err := WaitReady(ctx, p.addr, ReadyTimeout, exited); err != nil {
		_ = p.Stop(5 * time.Second)
		return fmt.Errorf("start engine %q: %w", p.cmdline, err)
	}
	return nil
}

// execLine puts "exec" in front of the command (after any leading VAR=value
// assignments, which exec would take for the command name), so that the
// shell is replaced by the engine and the PID the bench holds is the
// engine's own: signals and /proc readings must reach the engine.
func execLine(cmdline string) string {
	words := strings.Fields(cmdline)
	i := 0
	for i < len(words) && isAssignment(words[i]) {
		i++
	}
	if i == 0 {
		return "exec " + cmdline
	}
	return strings.Join(words[:i], " ") + " exec " + strings.Join(words[i:], " ")
}

func isAssignment(w string) bool {
	eq := strings.IndexByte(w, '=')
	if eq <= 0 || strings.ContainsAny(w, `"'`) {
		return false
	}
	for i, r := range w[:eq] {
		if !(r == '_' || r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || i > 0 && r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// ensureFree refuses to start an engine on an address something already
// listens on: the bench would measure that other process instead.
func ensureFree(addr string) error {
	c, err := net.DialTimeout("tcp", addr, 500*time.Millisecond)
	if err != nil {
		return nil
	}
	_ = c.Close()
	return fmt.Errorf("start engine: %s already accepts connections; stop whatever listens there or drop --engine-cmd to bench it", addr)
}

// AllowLoopbackEnv is the environment that allow-lists loopback in an
// engine's rate limits (CHARLA_RATE_LIMIT_ALLOW), so that a load run from
// this machine measures the engine and not its limits; none when getenv
// already has a setting of its own. A --rate-limit-allow on the command
// line wins over it, as flags win over the environment.
func AllowLoopbackEnv(getenv func(string) string) []string {
	const name = "CHARLA_RATE_LIMIT_ALLOW"
	if getenv(name) != "" {
		return nil
	}
	return []string{name + "=127.0.0.0/8,::1/128"}
}

// PID is the running engine's process id (0 after it exited).
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	select {
	case <-p.exited:
		return 0
	default:
		return p.cmd.Process.Pid
	}
}

// Cmdline is the command the engine runs with, for results.
func (p *Process) Cmdline() string { return p.cmdline }

// Starts counts how many times the engine was started.
func (p *Process) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Stop sends SIGTERM to the engine's process group and waits up to
// timeout, then SIGKILL. It returns the engine's exit error, if any other
// than the signal.
func (p *Process) Stop(timeout time.Duration) error {
	return p.stop(syscall.SIGTERM, timeout)
}

func (p *Process) stop(sig syscall.Signal, timeout time.Duration) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	_ = syscall.Kill(-cmd.Process.Pid, sig)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-exited:
	case <-t.C:
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		return fmt.Errorf("engine did not exit within %v of %v; killed", timeout, sig)
	}
	return nil
}

// RestartTimes are the moments of a restart, for the reconnect figures.
type RestartTimes struct {
	Signaled time.Time
	Exited   time.Time
	Ready    time.Time
}

// Restart signals the engine (SIGTERM: graceful, SIGKILL: a crash), waits
// for it to exit (bounded by stopTimeout, then SIGKILL), starts the same
// command again and waits until it accepts connections.
func (p *Process) Restart(ctx context.Context, sig syscall.Signal, stopTimeout time.Duration) (RestartTimes, error) {
	var rt RestartTimes
	rt.Signaled = time.Now()
	stopErr := p.stop(sig, stopTimeout)
	rt.Exited = time.Now()
	if err := p.start(ctx); err != nil {
		return rt, errors.Join(stopErr, err)
	}
	rt.Ready = time.Now()
	return rt, stopErr
}

// RestartExternal restarts an engine the bench did not start: it signals
// pid, waits (bounded) until that process is gone, then until addr accepts
// connections again, which is up to whatever supervises the engine.
func RestartExternal(ctx context.Context, pid int, sig syscall.Signal, addr string, timeout time.Duration) (RestartTimes, error) {
	var rt RestartTimes
	rt.Signaled = time.Now()
	if err := syscall.Kill(pid, sig); err != nil {
		return rt, fmt.Errorf("signal engine pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(timeout)
	for n := 0; ; n++ {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) || isZombie(pid) {
			break
		}
		if time.Now().After(deadline) || n > 100000 {
			return rt, fmt.Errorf("engine pid %d still alive %v after %v", pid, timeout, sig)
		}
		time.Sleep(10 * time.Millisecond)
	}
	rt.Exited = time.Now()
	if err := WaitReady(ctx, addr, time.Until(deadline), nil); err != nil {
		return rt, fmt.Errorf("engine at %s did not come back (something else must restart it when --engine-pid is used): %w", addr, err)
	}
	rt.Ready = time.Now()
	return rt, nil
}

func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(b), ')')
	return i >= 0 && i+2 < len(b) && b[i+2] == 'Z'
}

// WaitReady polls addr until it accepts a TCP connection, the timeout
// passes, ctx ends, or exited (may be nil) is closed.
func WaitReady(ctx context.Context, addr string, timeout time.Duration, exited <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for n := 0; n < 1_000_000; n++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting connections after %v: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for %s: %w", addr, ctx.Err())
		case <-exited:
			return fmt.Errorf("engine exited before accepting connections on %s (see its log)", addr)
		case <-time.After(20 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s never accepted a connection", addr)
}

// RSS is the resident memory of pid in bytes, from /proc/PID/status.
func RSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read rss of pid %d: %w", pid, err)
	}
	defer f.Close()
	return parseVmRSS(f)
}

func parseVmRSS(r io.Reader) (int64, error) {
	s := bufio.NewScanner(r)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "VmRSS:") {
			continue
		}
		f := strings.Fields(line[len("VmRSS:"):])
		if len(f) < 1 {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmRSS %q: %w", line, err)
		}
		return kb * 1024, nil
	}
	return 0, errors.New("no VmRSS line in status")
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// CPUSeconds is the user+system CPU time pid has used, from
// /proc/PID/stat: with the bench's own, it tells who used the cores.
func CPUSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read cpu time of pid %d: %w", pid, err)
	}
	return parseStatCPU(string(b))
}

func parseStatCPU(stat string) (float64, error) {
	// The command name (field 2) may contain spaces; fields after it
	// start at state (field 3), so utime and stime (14, 15) are the 12th
	// and 13th after the closing parenthesis.
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("malformed stat")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, errors.New("short stat")
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("parse stat times: %w", err)
	}
	return float64(u+s) / clockTicks, nil
}

// MetricNames are the Prometheus series the bench reads from the engine's
// /metrics when it has one (the Go collector's standard names).
var MetricNames = []string{
	"go_memstats_heap_inuse_bytes",
	"go_memstats_heap_alloc_bytes",
	"go_memstats_sys_bytes",
	"go_goroutines",
	"process_resident_memory_bytes",
}

// Metrics fetches url (the engine's Prometheus text endpoint) and returns
// the unlabelled samples named in MetricNames. A missing endpoint is an
// error the caller may ignore: metrics are a bonus, RSS is the figure.
func Metrics(ctx context.Context, url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("metrics request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch metrics %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch metrics %s: HTTP %d", url, resp.StatusCode)
	}
	return parseMetrics(io.LimitReader(resp.Body, 16<<20), MetricNames)
}

// memStatNames maps the runtime.MemStats lines of a debug=1 heap profile
// to the Prometheus names used by Metrics, so results read the same
// whichever source they came from.
var memStatNames = map[string]string{
	"HeapInuse":  "go_memstats_heap_inuse_bytes",
	"HeapAlloc":  "go_memstats_heap_alloc_bytes",
	"Sys":        "go_memstats_sys_bytes",
	"StackInuse": "go_memstats_stack_inuse_bytes",
}

// PprofMemStats reads the engine's Go memory figures from its
// net/http/pprof endpoint (debugAddr is host:port of charla's
// --debug-addr): the heap profile in text form ends with runtime.MemStats.
// gc=1 collects first, so the heap figure is live memory, not garbage.
func PprofMemStats(ctx context.Context, debugAddr string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	url := "http://" + debugAddr + "/debug/pprof/heap?debug=1&gc=1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("memstats request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch memstats %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch memstats %s: HTTP %d", url, resp.StatusCode)
	}
	out, err := parseMemStats(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return out, err
	}
	// The goroutine count is what a waiting connection costs besides its
	// memory (a long poll must hold none beyond its HTTP handler's).
	if n, err := pprofGoroutines(ctx, debugAddr); err == nil {
		out["go_goroutines"] = n
	}
	return out, nil
}

// pprofGoroutines reads the goroutine count from the first line of the
// debug=1 goroutine profile ("goroutine profile: total N").
func pprofGoroutines(ctx context.Context, debugAddr string) (float64, error) {
	url := "http://" + debugAddr + "/debug/pprof/goroutine?debug=1"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, fmt.Errorf("goroutines request %s: %w", url, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("fetch goroutines %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("fetch goroutines %s: HTTP %d", url, resp.StatusCode)
	}
	return parseGoroutines(io.LimitReader(resp.Body, 64<<20))
}

func parseGoroutines(r io.Reader) (float64, error) {
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil && line == "" {
		return 0, fmt.Errorf("read goroutine profile: %w", err)
	}
	_, n, ok := strings.Cut(strings.TrimSpace(line), "goroutine profile: total ")
	if !ok {
		return 0, fmt.Errorf("goroutine profile starts %q", line)
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		return 0, fmt.Errorf("goroutine profile total %q: %w", n, err)
	}
	return f, nil
}

func parseMemStats(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 4<<20)
	for s.Scan() {
		line := s.Text()
		if !strings.HasPrefix(line, "# ") {
			continue
		}
		k, v, ok := strings.Cut(line[2:], " = ")
		name, want := memStatNames[k]
		if !ok || !want {
			continue
		}
		if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil {
			out[name] = f
		}
	}
	if err := s.Err(); err != nil {
		return out, fmt.Errorf("read memstats: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("no runtime.MemStats in the heap profile")
	}
	return out, nil
}

func parseMetrics(r io.Reader, names []string) (map[string]float64, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	out := map[string]float64{}
	s := bufio.NewScanner(r)
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 || !want[f[0]] {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		out[f[0]] = v
	}
	if err := s.Err(); err != nil {
		return out, fmt.Errorf("read metrics: %w", err)
	}
	return out, nil
}
