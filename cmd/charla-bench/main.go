// Command charla-bench measures a Charla engine against its performance
// goals (each scenario's Goals): it drives many protocol v1 clients over real
// WebSockets through one of the scenarios in charla/bench/scenario, prints
// a live progress line on stderr and a table on stdout, and writes the
// result as JSON (--out) and as an HTML plot (--plot).
//
// Usage:
//
//	charla-bench SCENARIO --addr HOST:PORT [--conns C] [--convs M] [--rate R] [--duration D]
//	             [--out results.json] [--plot out.html] [--engine-cmd "…" | --engine-pid PID]
//	             [--token-secret S] [--engine-cpus 0 --load-cpus 1] [scenario flags]
//	charla-bench SCENARIO --addrs HOST:PORT,HOST:PORT,…      clients spread over a cluster's nodes
//	charla-bench SCENARIO --nodes N --engine-cmd "… --addr {addr} --cluster-node-id n{i} --cluster-name {name} …"
//	             start (and pin) N cluster nodes from one template; node-kill needs it
//	charla-bench suite [--out-dir DIR] [--engine-cmd "…"]   the default suite, small sizes
//	             [--soap-admin URL --soapsim-cmd "…"]       (inventory: with the SOAP simulator)
//	charla-bench plot results.json --plot out.html          re-draw a past run
//	charla-bench list                                       the scenarios
//
// Exit codes: 0 every check passed; 1 the engine broke a promise (lost,
// duplicated or reordered messages, healthy clients dropped, silent ones
// never closed, errors); 2 the run could not be carried out.
// This file only wires flags to the bench packages.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"charla/bench/clusterstate"
	"charla/bench/engine"
	"charla/bench/pin"
	"charla/bench/plot"
	"charla/bench/result"
	"charla/bench/rlimit"
	"charla/bench/scenario"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

// cli is every flag; zero values mean "the scenario's default".
type cli struct {
	o             scenario.Options
	out, plotPath string
	outDir        string
	engineCmd     string
	engineLog     string
	enginePID     int
	restartSignal string
	stopTimeout   time.Duration
	cpuProfile    string
	soapsimCmd    string
	engineCPUs    string // taskset -c list for the started engine ("" = not pinned)
	loadCPUs      string // CPU list the bench pins itself to ("" = not pinned)
	addrs         string // comma-separated node addresses
	nodes         int    // cluster nodes to start from --engine-cmd as a template (0 = one engine)
}

func flags(c *cli, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("charla-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &c.o
	fs.StringVar(&o.Addr, "addr", "127.0.0.1:8080", "engine `host:port`")
	fs.StringVar(&c.addrs, "addrs", "", "a cluster's nodes, `host:port,host:port,…`: clients spread over them round-robin (send→deliver also split same-node / cross-node); with --nodes, where the started nodes listen (default: consecutive ports from --addr)")
	fs.IntVar(&c.nodes, "nodes", 0, "start `N` cluster nodes from --engine-cmd as a template: {i} node number from 1, {addr}/{port} its address, {name} a cluster name unique to the run (their KV buckets are deleted at the end)")
	fs.IntVar(&o.Kills, "kills", 0, "node-kill: rounds of SIGKILL, failover, restart")
	fs.DurationVar(&o.KillEvery, "kill-every", 0, "node-kill: steady load before each kill (default --duration)")
	fs.DurationVar(&o.FailoverWait, "failover-wait", 0, "node-kill: bound on each failover (default 30s)")
	fs.DurationVar(&o.ResendAfter, "resend-after", 0, "node-kill: resend a message with no answer after this long (default 5s; one refused unavailable after 100ms)")
	fs.StringVar(&o.Path, "path", "/v1/ws", "WebSocket path")
	fs.StringVar(&o.Secret, "token-secret", "", "HS256 `secret` to mint JWTs with (default: dev auth, ?user=&role=)")
	fs.IntVar(&o.Conns, "conns", 0, "connections (fanout: subscribers)")
	fs.IntVar(&o.Convs, "convs", 0, "conversations")
	fs.Float64Var(&o.Rate, "rate", 0, "total send rate, messages/s")
	fs.DurationVar(&o.Duration, "duration", 0, "measured phase (sending, or holding connections)")
	fs.IntVar(&o.BodySize, "body-size", 0, "message text length in bytes (default 64)")
	fs.IntVar(&o.ConnectConcurrency, "connect-concurrency", 0, "parallel dials (default 64)")
	fs.DurationVar(&o.HandshakeTimeout, "handshake-timeout", 0, "dial + upgrade + welcome timeout (default 15s)")
	fs.DurationVar(&o.Drain, "drain", 0, "wait for the last acks and deliveries (default 10s)")
	fs.IntVar(&o.SourceAddrs, "source-addrs", 0, "force this many 127.0.0.x source addresses (default: as needed, one per ~25k connections)")
	fs.IntVar(&o.Workers, "workers", 0, "sending goroutines (default 4)")
	fs.IntVar(&o.Senders, "senders", 0, "fanout: sending connections (default 1)")
	fs.IntVar(&o.PingSample, "ping-sample", 0, "idle: clients that send ping frames for the RTT")
	fs.DurationVar(&o.PingInterval, "ping-interval", 0, "idle: ping period per sampled client (default: the engine's heartbeat)")
	fs.IntVar(&o.Silent, "silent", 0, "silent-drop: clients that go silent")
	fs.DurationVar(&o.DetectWait, "detect-wait", 0, "silent-drop: how long to wait for the engine to close them (default 3x timeout)")
	fs.DurationVar(&o.HeartbeatTimeout, "heartbeat-timeout", 0, "silent-drop: the timeout to judge against (default: the welcome's timeout_ms)")
	fs.DurationVar(&o.RestartAfter, "restart-after", 0, "reconnect-storm: restart the engine after this long")
	fs.DurationVar(&o.ReconnectWindow, "reconnect-window", 0, "reconnect-storm: give up reconnecting after this long (default 60s)")
	fs.DurationVar(&o.BackoffBase, "backoff-base", 0, "reconnect backoff start, full jitter (default 250ms)")
	fs.DurationVar(&o.BackoffCap, "backoff-cap", 0, "reconnect backoff cap (default 5s)")
	fs.IntVar(&o.Slow, "slow", 0, "slow-consumer: clients that never read (default conns/10)")
	fs.IntVar(&o.SlowRecvBuf, "slow-recv-buf", 0, "slow-consumer: their socket receive buffer in bytes (default 4096)")
	fs.StringVar(&o.RunID, "run-id", "", "prefix of users and conversations (default: random)")
	fs.StringVar(&o.Transport, "transport", "", "steady, idle: ws (default), poll (POST /v1/poll + /v1/send), or both (every other client polls; latencies split by transport)")
	fs.StringVar(&o.MetricsURL, "metrics-url", "", "engine Prometheus endpoint for Go heap figures (default http://ADDR/metrics, if any)")
	fs.StringVar(&o.DebugAddr, "engine-debug-addr", "", "the engine's pprof `host:port` (charla --debug-addr): Go heap before/after from runtime.MemStats")
	fs.StringVar(&o.SOAPAdmin, "soap-admin", "", "inventory: the SOAP simulator's base `URL` (charla soapsim; the engine's --soap-url), for its faults and counters")
	fs.Float64Var(&o.InventoryRate, "inv-rate", 0, "inventory: total inventory request rate, requests/s")
	fs.Float64Var(&o.ZipfS, "zipf-s", 0, "inventory: Zipf exponent of the SKU mix over the 10,000-item catalogue (default 1.1)")
	fs.DurationVar(&o.SOAPLatency, "soap-latency", 0, "inventory: the simulator's latency in the slow phase (default 200ms)")
	fs.DurationVar(&o.BreakerWait, "breaker-wait", 0, "inventory: bound on waiting for the SOAP breaker to open, then to close (default 90s)")
	fs.StringVar(&o.WebhookSecret, "webhook-secret", "", "webhook: the engine's --whatsapp-app-secret, to sign the webhooks with")
	fs.StringVar(&o.WebhookURL, "webhook-url", "", "webhook: the engine's webhook `URL` (default http://ADDR/webhooks/whatsapp)")
	fs.IntVar(&o.WebhookBatch, "webhook-batch", 0, "webhook: messages per signed webhook (default 10)")
	fs.StringVar(&c.soapsimCmd, "soapsim-cmd", "", "inventory: start the simulator with this shell `command` (it must listen at --soap-admin) and stop it at the end")
	fs.StringVar(&c.out, "out", "", "write the JSON result to this `file`")
	fs.StringVar(&c.plotPath, "plot", "", "write an HTML plot of the run to this `file`")
	fs.StringVar(&c.outDir, "out-dir", "bench-results", "suite: directory for NAME.json and NAME.html")
	fs.StringVar(&c.engineCmd, "engine-cmd", "", "start the engine with this shell `command` (and restart it for reconnect-storm)")
	fs.StringVar(&c.engineLog, "engine-log", "", "append the started engine's output to this file (default: a file in the temp dir)")
	fs.IntVar(&c.enginePID, "engine-pid", 0, "the engine's `pid`, for memory figures and reconnect-storm's restart signal")
	fs.StringVar(&c.restartSignal, "restart-signal", "TERM", "reconnect-storm: TERM (graceful restart) or KILL (crash)")
	fs.DurationVar(&c.stopTimeout, "stop-timeout", 15*time.Second, "how long a signalled engine may take to exit")
	fs.StringVar(&c.engineCPUs, "engine-cpus", "", "run the --engine-cmd engine on these `cpus` (taskset -c list, e.g. 0) with GOMAXPROCS = their number: the pinned setup the goals are measured in")
	fs.StringVar(&c.loadCPUs, "load-cpus", "", "pin the bench itself to these `cpus` (e.g. 1), away from the engine's")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the bench's own CPU profile to this `file` (is the load generator the bottleneck?)")
	fs.Usage = func() { usage(stderr, fs) }
	return fs
}

func usage(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "usage: charla-bench SCENARIO --addr HOST:PORT [flags]\n       charla-bench suite [flags] | plot RESULT.json --plot OUT.html | list\n\nscenarios:\n")
	for _, s := range scenario.List() {
		fmt.Fprintf(w, "  %-16s %s\n", s.Name, s.Summary)
	}
	fmt.Fprintf(w, "\nflags (zero = the scenario's default, see `charla-bench list`):\n")
	fs.PrintDefaults()
}

func run(args []string, stdout, stderr io.Writer) int {
	var c cli
	fs := flags(&c, stderr)
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fs.Usage()
		return 2
	}
	cmd, rest := args[0], args[1:]
	var file string
	if cmd == "plot" && len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		file, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "charla-bench: unexpected arguments %q (flags go after the scenario)\n", fs.Args())
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.addrs != "" {
		for a := range strings.SplitSeq(c.addrs, ",") {
			if a = strings.TrimSpace(a); a != "" {
				c.o.Addrs = append(c.o.Addrs, a)
			}
		}
	}

	if c.loadCPUs != "" && cmd != "list" && cmd != "help" && cmd != "plot" {
		cpus, err := pin.ParseCPUs(c.loadCPUs)
		if err == nil {
			err = pin.Self(cpus)
		}
		if err != nil {
			fmt.Fprintln(stderr, "charla-bench: --load-cpus:", err)
			return 2
		}
	}

	switch cmd {
	case "list":
		for _, s := range scenario.List() {
			d := scenario.Defaults(s.Name)
			fmt.Fprintf(stdout, "%-16s defaults: conns %d, convs %d, rate %g/s, duration %v\n  %s\n", s.Name, d.Conns, d.Convs, d.Rate, d.Duration, s.Summary)
		}
		return 0
	case "help":
		fs.Usage()
		return 0
	case "plot":
		return replot(file, c.plotPath, stderr)
	case "suite":
		return suite(c, set, stdout, stderr, args)
	}
	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(stderr, "charla-bench: cpu profile:", err)
			return 2
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	o := withDefaults(scenario.Defaults(cmd), c.o, set)
	return runOne(cmd, o, c, stdout, stderr, args, c.out, c.plotPath)
}

// withDefaults takes each size from the command line when given there and
// from the scenario's defaults otherwise.
func withDefaults(d, given scenario.Options, set map[string]bool) scenario.Options {
	o := given
	pick := func(name string, dst *int, def int) {
		if !set[name] {
			*dst = def
		}
	}
	pick("conns", &o.Conns, d.Conns)
	pick("convs", &o.Convs, d.Convs)
	pick("ping-sample", &o.PingSample, d.PingSample)
	pick("silent", &o.Silent, d.Silent)
	pick("senders", &o.Senders, d.Senders)
	pick("slow", &o.Slow, d.Slow)
	if !set["rate"] {
		o.Rate = d.Rate
	}
	if !set["inv-rate"] {
		o.InventoryRate = d.InventoryRate
	}
	if !set["duration"] {
		o.Duration = d.Duration
	}
	if !set["restart-after"] {
		o.RestartAfter = d.RestartAfter
	}
	pick("kills", &o.Kills, d.Kills)
	return o
}

func replot(file, out string, stderr io.Writer) int {
	if file == "" || out == "" {
		fmt.Fprintln(stderr, "usage: charla-bench plot RESULT.json --plot OUT.html")
		return 2
	}
	r, err := result.Read(file)
	if err == nil {
		err = plot.WriteFile(out, r)
	}
	if err != nil {
		fmt.Fprintln(stderr, "charla-bench:", err)
		return 2
	}
	return 0
}

// runOne runs one scenario with its engine and writes its outputs.
func runOne(name string, o scenario.Options, c cli, stdout, stderr io.Writer, args []string, out, plotPath string) int {
	extra := o.Senders + o.Slow + 16
	lim, err := rlimit.Ensure(rlimit.Need(o.Conns + extra))
	if err != nil {
		fmt.Fprintln(stderr, "charla-bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if name == "inventory" && c.soapsimCmd != "" {
		stopSim, err := startSim(ctx, c, o.SOAPAdmin, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "charla-bench:", err)
			return 2
		}
		defer stopSim()
	}
	var (
		eng     scenario.Engine
		cl      *engine.Cluster
		cleanup func()
	)
	if c.nodes > 0 {
		cl, cleanup, err = startCluster(ctx, c, &o, stderr)
		if cl != nil {
			eng = scenario.ClusterEngine{C: cl}
		}
	} else {
		eng, cleanup, err = startEngine(ctx, c, o.Addr, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "charla-bench:", err)
		return 2
	}
	defer cleanup()

	res, runErr := scenario.Run(ctx, name, o, scenario.Env{Log: stderr, Engine: eng, Cluster: cl})
	if res == nil {
		fmt.Fprintln(stderr, "charla-bench:", runErr)
		return 2
	}
	res.CommandLine = commandLine(args)
	res.Bench = benchInfo(lim)
	if runErr != nil {
		res.Fail("run not completed: %v", runErr)
	}
	if ctx.Err() != nil {
		res.Fail("interrupted")
	}
	fmt.Fprintln(stdout)
	_ = res.WriteTable(stdout)
	if out != "" {
		if err := res.WriteJSON(out); err != nil {
			fmt.Fprintln(stderr, "charla-bench:", err)
		}
	}
	if plotPath != "" {
		if err := plot.WriteFile(plotPath, res); err != nil {
			fmt.Fprintln(stderr, "charla-bench:", err)
		}
	}
	if runErr != nil {
		fmt.Fprintln(stderr, "charla-bench:", runErr)
		return 2
	}
	return res.ExitCode()
}

// startEngine starts or adopts the engine, as the flags say.
func startEngine(ctx context.Context, c cli, addr string, stderr io.Writer) (scenario.Engine, func(), error) {
	sig := syscall.SIGTERM
	switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(c.restartSignal), "SIG")) {
	case "TERM":
	case "KILL":
		sig = syscall.SIGKILL
	default:
		return nil, nil, fmt.Errorf("--restart-signal %q: want TERM or KILL", c.restartSignal)
	}
	if c.engineCmd != "" && c.enginePID != 0 {
		return nil, nil, errors.New("give --engine-cmd or --engine-pid, not both")
	}
	if c.engineCPUs != "" && c.engineCmd == "" {
		return nil, nil, errors.New("--engine-cpus pins the engine the bench starts: give --engine-cmd (or start the engine under taskset yourself)")
	}
	if c.enginePID != 0 {
		return &scenario.PIDEngine{Pid: c.enginePID, Addr: addr, Signal: sig, Timeout: engine.ReadyTimeout}, func() {}, nil
	}
	if c.engineCmd == "" {
		return nil, func() {}, nil
	}
	logPath := engineLogPath(c, 0)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("engine log: %w", err)
	}
	wrap, err := pinWrap(c)
	if err != nil {
		_ = logf.Close()
		return nil, nil, err
	}
	cmdline, err := wrap(c.engineCmd)
	if err != nil {
		_ = logf.Close()
		return nil, nil, err
	}
	env := engine.AllowLoopbackEnv(os.Getenv)
	fmt.Fprintf(stderr, "charla-bench: starting engine: %s %s (output in %s)\n", strings.Join(env, " "), cmdline, logPath)
	p, err := engine.Start(ctx, cmdline, addr, logf, env...)
	if err != nil {
		_ = logf.Close()
		return nil, nil, err
	}
	cleanup := func() {
		if err := p.Stop(c.stopTimeout); err != nil {
			fmt.Fprintln(stderr, "charla-bench:", err)
		}
		_ = logf.Close()
	}
	return scenario.ProcessEngine{P: p, Signal: sig, StopTimeout: c.stopTimeout}, cleanup, nil
}

// engineLogPath is where the engine's output goes: --engine-log, or a file
// in the temp dir; node i (from 1) of a cluster gets its own, suffixed .nI.
func engineLogPath(c cli, node int) string {
	p := c.engineLog
	if p == "" {
		p = filepath.Join(os.TempDir(), fmt.Sprintf("charla-bench-engine-%d.log", os.Getpid()))
	}
	if node > 0 {
		p += fmt.Sprintf(".n%d", node)
	}
	return p
}

// pinWrap is how an engine command is pinned (--engine-cpus): under
// taskset on those CPUs with GOMAXPROCS their number; unchanged without.
func pinWrap(c cli) (func(string) (string, error), error) {
	if c.engineCPUs == "" {
		return func(s string) (string, error) { return s, nil }, nil
	}
	cpus, err := pin.ParseCPUs(c.engineCPUs)
	if err != nil {
		return nil, fmt.Errorf("--engine-cpus: %w", err)
	}
	return func(s string) (string, error) {
		out, err := pin.Command(s, cpus)
		if err != nil {
			return "", fmt.Errorf("--engine-cpus: %w", err)
		}
		return out, nil
	}, nil
}

// startCluster starts --nodes engines from the --engine-cmd template, each
// pinned and logged as the single engine is, sets o.Addrs to their
// addresses, and returns a cleanup that stops them (all at once) and
// deletes the cluster's KV buckets.
func startCluster(ctx context.Context, c cli, o *scenario.Options, stderr io.Writer) (*engine.Cluster, func(), error) {
	if c.engineCmd == "" || c.enginePID != 0 {
		return nil, nil, errors.New("--nodes starts the cluster itself: give --engine-cmd (a template with {addr} or {port}, {i}, {name}) and no --engine-pid")
	}
	addrs, err := engine.NodeAddrs(o.Addr, o.Addrs, c.nodes)
	if err != nil {
		return nil, nil, err
	}
	wrap, err := pinWrap(c)
	if err != nil {
		return nil, nil, err
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	name := "bench_" + hex.EncodeToString(b[:])
	var logs []*os.File
	closeLogs := func() {
		for _, f := range logs {
			_ = f.Close()
		}
	}
	for i := range addrs {
		f, err := os.OpenFile(engineLogPath(c, i+1), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			closeLogs()
			return nil, nil, fmt.Errorf("engine log: %w", err)
		}
		logs = append(logs, f)
	}
	env := engine.AllowLoopbackEnv(os.Getenv)
	fmt.Fprintf(stderr, "charla-bench: starting %d cluster nodes at %s: %s %s (output in %s)\n", len(addrs), strings.Join(addrs, ","),
		strings.Join(env, " "), engine.Expand(c.engineCmd, 1, addrs[0], name), engineLogPath(c, 1)+"…")
	cl, err := engine.StartCluster(ctx, engine.ClusterConfig{
		Template: c.engineCmd, Addrs: addrs, Name: name, Wrap: wrap, Env: env,
		Log: func(i int) io.Writer { return logs[i] },
	})
	if err != nil {
		closeLogs()
		return nil, nil, err
	}
	o.Addrs = addrs
	o.Addr = addrs[0]
	fmt.Fprintf(stderr, "charla-bench: %d nodes accepting (pids %v)\n", len(addrs), cl.PIDs())
	cleanup := func() {
		if err := cl.Stop(c.stopTimeout); err != nil {
			fmt.Fprintln(stderr, "charla-bench:", err)
		}
		closeLogs()
		if url := cl.Setting("cluster-nats-url"); url != "" {
			bucket := cl.Setting("cluster-name")
			if bucket == "" {
				bucket = "charla"
			}
			if err := clusterstate.DeleteBuckets(context.Background(), url, bucket); err != nil {
				fmt.Fprintln(stderr, "charla-bench:", err)
			}
		}
	}
	if err := settle(ctx, cl, stderr); err != nil {
		cleanup()
		return nil, nil, err
	}
	return cl, cleanup, nil
}

// settle waits until the nodes share the shards evenly (their leases in
// the cluster's KV bucket), so that a run does not measure the start's
// hand-overs. A cluster whose command names no NATS URL is not waited for.
func settle(ctx context.Context, cl *engine.Cluster, stderr io.Writer) error {
	of, err := clusterstate.Describe(cl)
	if err != nil || of.NATSURL == "" {
		fmt.Fprintf(stderr, "charla-bench: not waiting for the cluster to settle: %v\n", cmpOr(err, "no --cluster-nats-url in the engine command"))
		return nil
	}
	l, err := clusterstate.DialLeases(of.NATSURL, of.Name, of.Shards)
	if err != nil {
		return err
	}
	defer l.Close()
	start := time.Now()
	counts, err := l.WaitBalanced(ctx, of.NodeIDs, 60*time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "charla-bench: cluster %s settled in %.1fs, shards per node %v\n", of.Name, time.Since(start).Seconds(), counts)
	return nil
}

func cmpOr(err error, otherwise string) string {
	if err != nil {
		return err.Error()
	}
	return otherwise
}

// startSim starts the SOAP simulator from --soapsim-cmd, the way the engine
// is started (its own process group, output appended to a log), and waits
// until it accepts connections at --soap-admin's host:port.
func startSim(ctx context.Context, c cli, admin string, stderr io.Writer) (func(), error) {
	u, err := url.Parse(admin)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("--soapsim-cmd needs --soap-admin http://HOST:PORT, the address it listens at (got %q)", admin)
	}
	logPath := filepath.Join(os.TempDir(), fmt.Sprintf("charla-bench-soapsim-%d.log", os.Getpid()))
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("simulator log: %w", err)
	}
	fmt.Fprintf(stderr, "charla-bench: starting the SOAP simulator: %s (output in %s)\n", c.soapsimCmd, logPath)
	p, err := engine.Start(ctx, c.soapsimCmd, u.Host, logf)
	if err != nil {
		_ = logf.Close()
		return nil, fmt.Errorf("simulator: %w", err)
	}
	return func() {
		if err := p.Stop(c.stopTimeout); err != nil {
			fmt.Fprintln(stderr, "charla-bench: simulator:", err)
		}
		_ = logf.Close()
	}, nil
}

// suite runs every scenario at Quick sizes (make bench). reconnect-storm
// needs --engine-cmd or --engine-pid and is skipped without them;
// inventory needs --soap-admin (and an engine with --soap-url at it).
func suite(c cli, set map[string]bool, stdout, stderr io.Writer, args []string) int {
	if err := os.MkdirAll(c.outDir, 0o755); err != nil {
		fmt.Fprintln(stderr, "charla-bench:", err)
		return 2
	}
	worst := 0
	for _, s := range scenario.List() {
		if s.Name == "reconnect-storm" && c.engineCmd == "" && c.enginePID == 0 {
			fmt.Fprintln(stderr, "charla-bench: suite: skipping reconnect-storm (needs --engine-cmd or --engine-pid)")
			continue
		}
		if s.Name == "webhook" && c.o.WebhookSecret == "" {
			fmt.Fprintln(stderr, "charla-bench: suite: skipping webhook (needs --webhook-secret, the engine's --whatsapp-app-secret)")
			continue
		}
		if s.Name == "inventory" && c.o.SOAPAdmin == "" {
			fmt.Fprintln(stderr, "charla-bench: suite: skipping inventory (needs --soap-admin, and the engine's --soap-url at that simulator)")
			continue
		}
		o := withDefaults(scenario.Quick(s.Name), c.o, set)
		fmt.Fprintf(stderr, "charla-bench: suite: %s\n", s.Name)
		code := runOne(s.Name, o, c, stdout, stderr, args,
			filepath.Join(c.outDir, s.Name+".json"), filepath.Join(c.outDir, s.Name+".html"))
		worst = max(worst, code)
	}
	return worst
}

// commandLine is the exact command, quoted so it can be pasted back into
// a shell, with the JWT secret masked.
func commandLine(args []string) string {
	parts := []string{"charla-bench"}
	mask := false
	for _, a := range args {
		switch {
		case mask:
			a, mask = "***", false
		case a == "--token-secret" || a == "-token-secret" || a == "--webhook-secret" || a == "-webhook-secret":
			mask = true
		case strings.HasPrefix(a, "--token-secret=") || strings.HasPrefix(a, "-token-secret=") ||
			strings.HasPrefix(a, "--webhook-secret=") || strings.HasPrefix(a, "-webhook-secret="):
			a = a[:strings.IndexByte(a, '=')+1] + "***"
		}
		if a == "" || strings.ContainsAny(a, " \t\"'$\\`*?|&;<>(){}[]~#!") && a != "***" {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func benchInfo(lim rlimit.Limit) result.Bench {
	b := result.Bench{OpenFilesLimit: lim.Soft}
	if rss, err := engine.RSS(os.Getpid()); err == nil {
		b.RSSBytes = rss
	}
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err == nil {
		b.CPUSeconds = time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
	}
	return b
}
