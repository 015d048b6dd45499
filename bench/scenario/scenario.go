// Package scenario holds the bench's scenarios, one per performance goal
// of DESIGN.md: steady, idle, silent-drop, reconnect-storm, fanout and
// slow-consumer, and inventory for the SOAP bridge (issue 10). Each builds a fleet, drives it through its phases with a
// live progress line, and returns a result.Result whose Failures say
// whether the engine broke a promise (lost, duplicated, reordered
// messages, healthy clients dropped, silent ones never detected) and
// whose Goals say how far the engine is from DESIGN.md's numbers.
package scenario

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"charla"
	"charla/bench/client"
	"charla/bench/engine"
	"charla/bench/fleet"
	"charla/bench/progress"
	"charla/bench/result"
	"charla/wire"
)

// Options are every knob of every scenario; each scenario reads the ones
// it needs and documents its defaults in Describe.
type Options struct {
	// Addr is the engine's host:port; Path its WebSocket path.
	Addr, Path string
	// Addrs, when set, are the nodes of a cluster: clients are spread over
	// them round-robin (steady, idle, fanout, slow-consumer,
	// reconnect-storm), so that each conversation has members on several
	// nodes, and send→deliver is split into same-node and cross-node.
	// Addr is then Addrs[0].
	Addrs []string
	// Secret, when set, authenticates with minted JWTs instead of dev auth.
	Secret string
	// Conns is the number of connections (subscribers for fanout), Convs
	// the number of conversations they share.
	Conns, Convs int
	// Rate is the total send rate in messages per second.
	Rate float64
	// Duration is the measured phase: sending, or holding connections.
	Duration time.Duration
	// BodySize is the length of each message's text.
	BodySize int
	// ConnectConcurrency bounds parallel dials; HandshakeTimeout each one.
	ConnectConcurrency int
	HandshakeTimeout   time.Duration
	// Drain bounds the wait for outstanding acks and deliveries at the end.
	Drain time.Duration
	// SourceAddrs forces the number of 127.0.0.x source addresses (0: as
	// many as the connection count needs).
	SourceAddrs int
	// Workers is the number of sending goroutines.
	Workers int
	// Senders is the number of sending connections in fanout.
	Senders int

	// PingSample clients send application pings every PingInterval (idle).
	PingSample   int
	PingInterval time.Duration
	// Silent is how many clients go silent (silent-drop); DetectWait bounds
	// the wait for the engine to close them.
	Silent     int
	DetectWait time.Duration
	// HeartbeatTimeout is the engine's silence timeout the silent-drop goal
	// is judged against (0: the welcome frame's timeout_ms).
	HeartbeatTimeout time.Duration
	// RestartAfter is when reconnect-storm restarts the engine;
	// ReconnectWindow bounds each client's reconnecting; BackoffBase and
	// BackoffCap shape its backoff.
	RestartAfter, ReconnectWindow time.Duration
	BackoffBase, BackoffCap       time.Duration
	// Slow is how many clients never read (slow-consumer), with a receive
	// buffer of SlowRecvBuf bytes.
	Slow, SlowRecvBuf int
	// RunID prefixes users and conversations (default: random), so that a
	// run never meets an earlier run's history.
	RunID string
	// MetricsURL is the engine's Prometheus endpoint for Go heap figures
	// (default http://ADDR/metrics; errors are ignored).
	MetricsURL string
	// DebugAddr is the engine's pprof address (charla --debug-addr): when
	// set, Go heap figures come from its runtime.MemStats, after a GC.
	DebugAddr string

	// SOAPAdmin is the inventory simulator's base URL (charla soapsim), the
	// one the engine's --soap-url points at: inventory drives its faults
	// and reads its call counters there.
	SOAPAdmin string
	// InventoryRate is inventory's total request rate, requests/s, over a
	// Zipf mix of the catalogue with exponent ZipfS.
	InventoryRate float64
	ZipfS         float64
	// SOAPLatency is the simulator's added latency in inventory's slow
	// phase.
	SOAPLatency time.Duration
	// BreakerWait bounds each wait for the engine's SOAP breaker: to open
	// under the hanging service, to close after it recovered.
	BreakerWait time.Duration

	// Transport is how members talk to the engine: client.TransportWS
	// (default), client.TransportPoll (POST /v1/poll and /v1/send), or
	// TransportBoth (every other member polls; latencies are also split by
	// transport). steady and idle only.
	Transport string
	// WebhookSecret is the engine's --whatsapp-app-secret, which webhook
	// signs its posts with; WebhookURL the engine's webhook (default
	// http://ADDR/webhooks/whatsapp); WebhookBatch the messages per post.
	WebhookSecret string
	WebhookURL    string
	WebhookBatch  int

	// Kills is node-kill's number of rounds (SIGKILL of the busy
	// conversation's owner, failover, restart); KillEvery the steady load
	// before each kill; FailoverWait bounds each wait for the failover;
	// ResendAfter is when a client resends a message that got no answer
	// (a refused one is resent after 100 ms).
	Kills                                int
	KillEvery, FailoverWait, ResendAfter time.Duration
}

// TransportBoth mixes WebSocket and long-polling members in one run.
const TransportBoth = "both"

// fleetTransport is the fleet-wide transport for t: with both, members
// are WebSockets unless newMembers makes them poll.
func fleetTransport(t string) string {
	if t == TransportBoth {
		return client.TransportWS
	}
	return t
}

// Engine is the engine process, when the bench knows it: its PID for
// memory readings and a way to restart it for reconnect-storm.
type Engine interface {
	// PID is the engine's process id (0 when unknown).
	PID() int
	// Cmd describes how the engine was started, for results.
	Cmd() string
	// Restart restarts the engine and returns when it accepts connections.
	Restart(ctx context.Context) (engine.RestartTimes, error)
}

// Env is what a scenario needs from its surroundings.
type Env struct {
	// Log receives the progress line and notices (stderr in the CLI).
	Log io.Writer
	// Engine may be nil: memory figures and reconnect-storm need it.
	Engine Engine
	// Cluster is the cluster the bench started (--nodes), for node-kill.
	Cluster *engine.Cluster
	// ProgressInterval is the progress line period (1 s when zero).
	ProgressInterval time.Duration
}

type runFunc func(ctx context.Context, o Options, env Env, r *run) error

// Info describes a scenario for help texts.
type Info struct {
	Name, Summary string
	run           runFunc
}

var scenarios = []Info{
	{"steady", "C connections in M conversations, each subscribed to its own, sending R msg/s in total for D: throughput, send→ack and send→deliver percentiles, delivery check", runSteady},
	{"idle", "open C connections and hold them for D on server heartbeats: connect rate, heartbeat RTT from a sample's pings, engine memory per connection", runIdle},
	{"silent-drop", "connect C, make --silent of them stop answering at once: time until the engine closes each, against the heartbeat timeout", runSilentDrop},
	{"reconnect-storm", "C clients subscribed and sending; restart the engine (--engine-cmd or --engine-pid): time until all are back and resubscribed, nothing lost or duplicated across the restart", runStorm},
	{"fanout", "one conversation with C subscribers and --senders senders at R msg/s: deliveries/s and deliver latency", runFanout},
	{"slow-consumer", "steady load, then --slow extra subscribers stop reading: the others' latency against the first half, engine memory bounded, slow ones closed", runSlow},
	{"webhook", "signed WhatsApp webhooks of --webhook-batch messages, R msg/s in total over M customers, C agents subscribed to their conversations: webhook answer and webhook → agent delivery percentiles, each message delivered exactly once (engine with --whatsapp-app-secret = --webhook-secret)", runWebhook},
	{"node-kill", "a cluster of N nodes (--nodes) under R msg/s into M conversations, clients on every node but node 1: SIGKILL node 1 while it owns a busy conversation, measure the failover (kill → first ack of a message sent after it), restart it, --kills times; every acked message in PostgreSQL once, no seq gap", runNodeKill},
	{"inventory", "chat at R msg/s and --inv-rate inventory requests/s (Zipf over the catalogue) against an engine with --soap-url at the simulator --soap-admin: cache hit rate, answer p50/p99 at --soap-latency, chat p99 with the service hanging, recovery to breaker closed", runInventory},
}

// List returns every scenario, in the order the issue lists them.
func List() []Info { return append([]Info(nil), scenarios...) }

// Run runs the named scenario. The error is for runs that could not be
// carried out (bad options, engine unreachable); a run that was carried
// out returns its result, with Failures when the engine broke a promise.
func Run(ctx context.Context, name string, o Options, env Env) (*result.Result, error) {
	var info *Info
	for i := range scenarios {
		if scenarios[i].Name == name {
			info = &scenarios[i]
		}
	}
	if info == nil {
		names := make([]string, len(scenarios))
		for i, s := range scenarios {
			names[i] = s.Name
		}
		return nil, fmt.Errorf("unknown scenario %q (have %s)", name, strings.Join(names, ", "))
	}
	if err := o.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if o.Transport != client.TransportWS && name != "steady" && name != "idle" {
		return nil, fmt.Errorf("%s: --transport %s: only steady and idle run over long-polling", name, o.Transport)
	}
	if env.Log == nil {
		env.Log = io.Discard
	}
	// The progress line is written from its own goroutine while the
	// scenario writes its notices: one lock keeps lines whole and a
	// caller's writer (a bytes.Buffer in tests) safe.
	env.Log = &lockedWriter{w: env.Log}
	r := &run{res: result.New(name), env: env, o: o}
	r.res.Settings = o.Settings()
	r.res.Engine.Addr = o.Addr
	if env.Engine != nil {
		r.res.Engine.Cmd = env.Engine.Cmd()
		r.res.Engine.PID = env.Engine.PID()
	}
	err := info.run(ctx, o, env, r)
	r.finish()
	if err != nil {
		return r.res, fmt.Errorf("%s: %w", name, err)
	}
	return r.res, nil
}

func (o *Options) validate() error {
	var errs []error
	if len(o.Addrs) > 0 {
		o.Addr = o.Addrs[0]
	}
	if o.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if o.Conns <= 0 {
		errs = append(errs, errors.New("--conns must be > 0"))
	}
	if o.Convs <= 0 {
		o.Convs = 1
	}
	if o.Duration <= 0 {
		errs = append(errs, errors.New("--duration must be > 0"))
	}
	if o.Rate < 0 {
		errs = append(errs, errors.New("--rate must be >= 0"))
	}
	if o.Path == "" {
		o.Path = "/v1/ws"
	}
	if o.Drain <= 0 {
		o.Drain = 10 * time.Second
	}
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Senders <= 0 {
		o.Senders = 1
	}
	if o.BodySize <= 0 {
		o.BodySize = 64
	}
	if o.RunID == "" {
		var b [4]byte
		_, _ = rand.Read(b[:])
		o.RunID = "bench-" + hex.EncodeToString(b[:])
	}
	if err := charla.ConvID(o.RunID + "-c0").Validate(); err != nil {
		errs = append(errs, fmt.Errorf("--run-id: %w", err))
	}
	switch o.Transport {
	case "":
		o.Transport = client.TransportWS
	case client.TransportWS, client.TransportPoll, TransportBoth:
	default:
		errs = append(errs, fmt.Errorf("--transport %q: want %s, %s or %s", o.Transport, client.TransportWS, client.TransportPoll, TransportBoth))
	}
	if o.MetricsURL == "" {
		o.MetricsURL = "http://" + o.Addr + "/metrics"
	}
	return errors.Join(errs...)
}

// run is one scenario run's shared state.
type run struct {
	o   Options
	env Env
	res *result.Result
	f   *fleet.Fleet
	rep *progress.Reporter
	// members is everything the fleet must close at the end.
	members []*fleet.Member
	// tolerated error kinds do not fail the run (prefix match).
	tolerated []string
	// measured is the measured phase's length.
	measured time.Duration
	// frame, when set before start, sees the members' frames first
	// (fleet.Config.Frame).
	frame func(m *fleet.Member, f *wire.Frame, at time.Time) bool
	// resend and ack, when set before start, are fleet.Config's.
	resend bool
	ack    func(m *fleet.Member, f *wire.Frame, firstSent, at time.Time)
	// cpuStart is the CPU time of engine process cpuPID when the bench
	// started counting; cpuUsed what earlier processes (before a restart)
	// used.
	cpuStart float64
	cpuPID   int
	cpuUsed  float64
}

// cpuCheckpoint adds the CPU the current engine process used since
// cpuStart, and restarts counting; around a restart it is called before
// (old process) and the new process counts from zero.
func (r *run) cpuCheckpoint() {
	if pid := r.pid(); pid > 0 && pid == r.cpuPID {
		now := r.cpu()
		r.cpuUsed += now - r.cpuStart
		r.cpuStart = now
	}
}

func (r *run) pid() int {
	if r.env.Engine == nil {
		return 0
	}
	return r.env.Engine.PID()
}

// start builds the fleet and starts the progress line.
func (r *run) start(reconnect bool, extraConns int) error {
	o := r.o
	srcs, err := client.NewSources(o.Addr, o.Conns+extraConns, 0, o.SourceAddrs)
	if err != nil {
		return err
	}
	r.res.Conns.SourceAddrs = srcs.String()
	r.res.Settings["run_id"] = o.RunID
	r.f = fleet.New(fleet.Config{
		Addr: o.Addr, Addrs: o.Addrs, Path: o.Path, Secret: o.Secret, Sources: srcs,
		Resend: r.resend, Ack: r.ack,
		HandshakeTimeout: o.HandshakeTimeout, BodySize: o.BodySize,
		UserPrefix: o.RunID + "-", Reconnect: reconnect,
		BackoffBase: o.BackoffBase, BackoffCap: o.BackoffCap, ReconnectWindow: o.ReconnectWindow,
		ConnectConcurrency: o.ConnectConcurrency, Frame: r.frame, Transport: fleetTransport(o.Transport),
	}, time.Now())
	r.rep = progress.Start(r.env.Log, r.res.Scenario, r.f.Counters, r.rss, r.env.ProgressInterval)
	return nil
}

func (r *run) conv(i int) charla.ConvID {
	return charla.ConvID(fmt.Sprintf("%s-c%d", r.o.RunID, i))
}

// rss is the engine's resident memory, or 0 when unknown.
func (r *run) rss() int64 {
	if r.env.Engine == nil {
		return 0
	}
	var sum int64
	for _, pid := range enginePIDs(r.env.Engine) {
		if b, err := engine.RSS(pid); err == nil {
			sum += b
		}
	}
	return sum
}

// enginePIDs are the engine's processes: every node of a cluster (their
// memory and CPU are summed), else the one engine.
func enginePIDs(e Engine) []int {
	if c, ok := e.(interface{ PIDs() []int }); ok {
		var out []int
		for _, p := range c.PIDs() {
			if p > 0 {
				out = append(out, p)
			}
		}
		return out
	}
	if p := e.PID(); p > 0 {
		return []int{p}
	}
	return nil
}

// metrics reads the engine's Go heap figures, or nil.
func (r *run) metrics(ctx context.Context) map[string]float64 {
	if r.o.DebugAddr != "" {
		m, err := engine.PprofMemStats(ctx, r.o.DebugAddr)
		if err != nil {
			fmt.Fprintf(r.env.Log, "%s: engine memstats: %v\n", r.res.Scenario, err)
			return nil
		}
		return m
	}
	m, err := engine.Metrics(ctx, r.o.MetricsURL)
	if err != nil || len(m) == 0 {
		return nil
	}
	return m
}

// connect dials members, recording the connect ramp.
func (r *run) connect(ctx context.Context, members []*fleet.Member) int64 {
	r.rep.SetPhase("connect")
	r.members = append(r.members, members...)
	start := time.Now()
	n := r.f.ConnectAll(ctx, members)
	ramp := time.Since(start)
	r.res.Conns.Target += len(members)
	r.res.Conns.Connected += n
	if ramp > 0 {
		r.res.Conns.ConnectRatePerS = float64(r.res.Conns.Connected) / ramp.Seconds()
	}
	r.res.Details["connect_ramp_s"] = ramp.Seconds()
	if w := r.f.Welcome(); w.Type != "" {
		r.res.Engine.HeartbeatMS, r.res.Engine.TimeoutMS = w.Heartbeat, w.Timeout
	}
	fmt.Fprintf(r.env.Log, "%s: %d of %d connected in %.1fs (%.0f/s)\n", r.res.Scenario, n, len(members), ramp.Seconds(), float64(n)/max(ramp.Seconds(), 1e-9))
	return n
}

// needAll fails the run early when fewer than want members connected: the
// figures of a smaller run would be mistaken for the requested one.
func (r *run) needAll(got int64, want int) error {
	if got < int64(want) {
		return fmt.Errorf("only %d of %d connections opened (%s)", got, want, r.f.Describe())
	}
	return nil
}

// subscribe subscribes every member to its conversation and fails the run
// unless each subscription is confirmed.
func (r *run) subscribe(ctx context.Context, ms []*fleet.Member) error {
	r.rep.SetPhase("subscribe")
	if got := r.f.SubscribeAll(ctx, ms); got < int64(len(ms)) {
		return fmt.Errorf("only %d of %d subscriptions confirmed (%s)", got, len(ms), r.f.Describe())
	}
	return nil
}

// finish fills the result from the fleet, the ledger and the progress
// line, and closes everything. It runs even when the scenario failed.
func (r *run) finish() {
	res := r.res
	if r.rep != nil {
		res.Timeline = r.rep.Stop()
		if m := r.rep.MaxRSS(); m > res.Engine.RSSMaxBytes {
			res.Engine.RSSMaxBytes = m
		}
	}
	r.cpuCheckpoint()
	res.Engine.CPUSeconds = r.cpuUsed
	if r.f == nil {
		return
	}
	r.f.Close(r.members)
	f := r.f
	res.DurationS = r.measured.Seconds()
	st := f.Stats()
	res.Sent = st.Sent
	res.Conns.UnexpectedCloses = st.UnexpectedCloses
	res.Conns.ConnectErrors = f.ErrorCount("connect")

	lr := f.Ledger.Report()
	res.Acked = lr.Acked
	res.DuplicateAcks = lr.DuplicateAcks
	res.Delivered = lr.Delivered
	res.Lost, res.Duplicated, res.Reordered, res.Mismatched = lr.Lost, lr.Duplicated, lr.Reordered, lr.Mismatched
	res.Problems = lr.Samples
	if res.DurationS > 0 {
		res.ThroughputPerS = float64(res.Acked) / res.DurationS
		res.DeliveriesPerS = float64(res.Delivered) / res.DurationS
	}
	if !lr.OK() {
		res.Fail("delivery promise broken: lost %d, duplicated %d, reordered %d, mismatched %d", lr.Lost, lr.Duplicated, lr.Reordered, lr.Mismatched)
	}
	if res.Unacked > 0 {
		res.Fail("%d messages sent but never acked (drain %v)", res.Unacked, r.o.Drain)
	}
	res.Details["subscriptions"] = float64(lr.Subscriptions)
	if lr.BrokenSubscriptions > 0 {
		res.Details["broken_subscriptions"] = float64(lr.BrokenSubscriptions)
	}
	if lr.UnackedDelivered > 0 {
		res.Details["unacked_delivered"] = float64(lr.UnackedDelivered)
	}
	for code, n := range f.CloseCodes() {
		res.Details[fmt.Sprintf("unexpected_closes_code_%d", code)] = float64(n)
	}
	if st.RateLimited > 0 {
		res.Details["rate_limited"] = float64(st.RateLimited)
	}
	if st.Behind > 0 {
		res.Details["sends_behind_schedule_skipped"] = float64(st.Behind)
	}
	if st.Skipped > 0 {
		res.Details["sends_skipped_not_connected"] = float64(st.Skipped)
	}

	res.AddLatency(result.SendAck, f.SendAck)
	res.AddLatency(result.SendDeliver, f.SendDeliver)
	if r.o.Transport == TransportBoth {
		for _, t := range []string{client.TransportWS, client.TransportPoll} {
			res.AddLatency(result.SendAck+"_"+t, f.ByTransport[t].SendAck)
			res.AddLatency(result.SendDeliver+"_"+t, f.ByTransport[t].SendDeliver)
		}
	}
	if len(r.o.Addrs) > 1 {
		res.AddLatency(result.SendDeliverSameNode, f.SendDeliverSameNode)
		res.AddLatency(result.SendDeliverCrossNode, f.SendDeliverCrossNode)
		res.Details["nodes"] = float64(len(r.o.Addrs))
	}
	if st.Resent > 0 {
		res.Details["resent"] = float64(st.Resent)
	}
	if f.Connect.Hist.Count() > 0 {
		res.AddLatency(result.Connect, f.Connect)
	}
	if f.RTT.Hist.Count() > 0 {
		res.AddLatency(result.HeartbeatRTT, f.RTT)
	}
	if f.Reconnect.Hist.Count() > 0 {
		res.AddLatency(result.Reconnect, f.Reconnect)
	}

	res.ErrorSamples = f.Errors()
	var fatal int64
	var fatalKinds []string
	for kind, n := range res.ErrorSamples {
		res.Errors += n
		if !r.isTolerated(kind) {
			fatal += n
			fatalKinds = append(fatalKinds, kind)
		}
	}
	if fatal > 0 {
		sort.Strings(fatalKinds)
		res.Fail("%d errors: %s", fatal, strings.Join(fatalKinds, " | "))
	}
}

func (r *run) isTolerated(kind string) bool {
	if strings.HasPrefix(kind, "subscribe deferred (unavailable)") {
		return true // retried by the fleet; a subscribe that never succeeds fails the run itself
	}
	for _, t := range r.tolerated {
		if strings.HasPrefix(kind, t) {
			return true
		}
	}
	return false
}

// cpu is the engine's CPU time so far, or 0 when unknown.
func (r *run) cpu() float64 {
	if r.env.Engine == nil {
		return 0
	}
	var sum float64
	for _, pid := range enginePIDs(r.env.Engine) {
		if s, err := engine.CPUSeconds(pid); err == nil {
			sum += s
		}
	}
	return sum
}

// memBefore records the engine's memory (and CPU time) at the start of a run.
func (r *run) memBefore(ctx context.Context) {
	r.cpuStart, r.cpuPID = r.cpu(), r.pid()
	r.res.Engine.RSSBeforeBytes = r.rss()
	r.res.Engine.MetricsBefore = r.metrics(ctx)
}

// memAfter records the engine's memory after the load was applied, and
// per connection when conns > 0.
func (r *run) memAfter(ctx context.Context, conns int64) {
	e := &r.res.Engine
	e.RSSAfterBytes = r.rss()
	e.RSSMaxBytes = max(e.RSSMaxBytes, e.RSSAfterBytes)
	e.MetricsAfter = r.metrics(ctx)
	if conns <= 0 {
		return
	}
	if e.RSSBeforeBytes > 0 && e.RSSAfterBytes > 0 {
		e.RSSPerConnBytes = float64(e.RSSAfterBytes-e.RSSBeforeBytes) / float64(conns)
	}
	const heap = "go_memstats_heap_inuse_bytes"
	if b, a := e.MetricsBefore[heap], e.MetricsAfter[heap]; b > 0 && a > 0 {
		e.HeapPerConn = (a - b) / float64(conns)
	}
	const gs = "go_goroutines"
	if b, a := e.MetricsBefore[gs], e.MetricsAfter[gs]; b > 0 && a > 0 {
		r.res.Details["engine_goroutines_per_conn"] = (a - b) / float64(conns)
	}
}

// ProcessEngine adapts an engine the bench started to Engine.
type ProcessEngine struct {
	P *engine.Process
	// Signal restarts it (SIGTERM: graceful, SIGKILL: crash).
	Signal syscall.Signal
	// StopTimeout bounds the wait for it to exit before SIGKILL.
	StopTimeout time.Duration
}

// PID implements Engine.
func (p ProcessEngine) PID() int { return p.P.PID() }

// Cmd implements Engine.
func (p ProcessEngine) Cmd() string { return p.P.Cmdline() }

// Restart implements Engine.
func (p ProcessEngine) Restart(ctx context.Context) (engine.RestartTimes, error) {
	return p.P.Restart(ctx, p.Signal, p.StopTimeout)
}

// PIDEngine adapts an engine the bench was only told the PID of.
type PIDEngine struct {
	Pid     int
	Addr    string
	Signal  syscall.Signal
	Timeout time.Duration
	gone    bool
}

// PID implements Engine; after a restart the new PID is unknown.
func (p *PIDEngine) PID() int {
	if p.gone {
		return 0
	}
	return p.Pid
}

// Cmd implements Engine.
func (p *PIDEngine) Cmd() string { return fmt.Sprintf("external engine, pid %d", p.Pid) }

// Restart implements Engine.
func (p *PIDEngine) Restart(ctx context.Context) (engine.RestartTimes, error) {
	p.gone = true
	return engine.RestartExternal(ctx, p.Pid, p.Signal, p.Addr, p.Timeout)
}

// ClusterEngine adapts the nodes the bench started (--nodes) to Engine:
// memory and CPU are the sum over the nodes; a restart is node-kill's
// business, node by node.
type ClusterEngine struct{ C *engine.Cluster }

// PID implements Engine: the first node's.
func (c ClusterEngine) PID() int { return c.C.Nodes[0].PID() }

// PIDs are every node's process id (0 for a node that is down).
func (c ClusterEngine) PIDs() []int { return c.C.PIDs() }

// Cmd implements Engine: the nodes' command lines.
func (c ClusterEngine) Cmd() string { return strings.Join(c.C.Cmds, " ; ") }

// Restart implements Engine; reconnect-storm restarts one engine, not a
// cluster.
func (c ClusterEngine) Restart(context.Context) (engine.RestartTimes, error) {
	return engine.RestartTimes{}, errors.New("reconnect-storm restarts one engine; against a cluster use node-kill")
}

// lockedWriter serialises the writes of several goroutines to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
