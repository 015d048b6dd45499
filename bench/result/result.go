// Package result is the outcome of one bench run: the JSON document
// (results.json) that scripts compare across runs, and the table a person
// reads at the end of a run. Both say on which machine, with which engine
// settings and with which exact command line the figures were taken,
// because a latency figure without those is not comparable to anything.
package result

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"charla/bench/progress"
	"charla/bench/stats"
)

// Latency names used as keys of LatencyMS. SendAck and SendDeliver are
// always present (zero counts when a scenario does not send).
const (
	SendAck      = "send_ack"
	SendDeliver  = "send_deliver"
	HeartbeatRTT = "heartbeat_rtt"
	Connect      = "connect"
	Detect       = "detect"
	Reconnect    = "reconnect"
	// SendDeliverSameNode and SendDeliverCrossNode split send→deliver in a
	// cluster run by whether sender and receiver share a node; Failover is
	// node-kill's kill → first ack of a message sent after the kill.
	SendDeliverSameNode  = "send_deliver_same_node"
	SendDeliverCrossNode = "send_deliver_cross_node"
	Failover             = "failover"
)

// Result is one run. Field names are the results.json contract; add
// fields, do not rename them.
type Result struct {
	Scenario  string    `json:"scenario"`
	OK        bool      `json:"ok"`
	Failures  []string  `json:"failures"`
	StartedAt time.Time `json:"started_at"`
	// DurationS is the measured phase (sending, or holding connections),
	// the denominator of every rate.
	DurationS float64 `json:"duration_s"`

	Conns Conns `json:"conns"`

	Sent          int64 `json:"sent"`
	Acked         int64 `json:"acked"`
	DuplicateAcks int64 `json:"duplicate_acks"`
	Unacked       int64 `json:"unacked"`
	Delivered     int64 `json:"delivered"`
	Lost          int64 `json:"lost"`
	Duplicated    int64 `json:"duplicated"`
	Reordered     int64 `json:"reordered"`
	Mismatched    int64 `json:"mismatched"`

	ThroughputPerS float64 `json:"throughput_per_s"`
	DeliveriesPerS float64 `json:"deliveries_per_s"`

	Errors       int64            `json:"errors"`
	ErrorSamples map[string]int64 `json:"error_samples,omitempty"`
	Problems     []string         `json:"problems,omitempty"`

	LatencyMS map[string]stats.Summary `json:"latency_ms"`
	Details   map[string]float64       `json:"details,omitempty"`
	Goals     []Goal                   `json:"goals,omitempty"`

	Engine      Engine         `json:"engine"`
	Bench       Bench          `json:"bench"`
	Machine     Machine        `json:"machine"`
	Settings    map[string]any `json:"settings"`
	CommandLine string         `json:"command_line"`

	Timeline []progress.Point              `json:"timeline,omitempty"`
	Series   map[string][]stats.Point      `json:"series,omitempty"`
	Curves   map[string][]stats.CurvePoint `json:"curves,omitempty"`
}

// Conns describes the connection side of a run.
type Conns struct {
	Target           int     `json:"target"`
	Connected        int64   `json:"connected"`
	ConnectErrors    int64   `json:"connect_errors"`
	UnexpectedCloses int64   `json:"unexpected_closes"`
	ConnectRatePerS  float64 `json:"connect_rate_per_s"`
	SourceAddrs      string  `json:"source_addrs"`
}

// Engine is what the bench knows of the engine under test.
type Engine struct {
	Addr        string `json:"addr"`
	PID         int    `json:"pid,omitempty"`
	Cmd         string `json:"cmd,omitempty"`
	HeartbeatMS int64  `json:"heartbeat_ms,omitempty"`
	TimeoutMS   int64  `json:"timeout_ms,omitempty"`
	Restarts    int    `json:"restarts,omitempty"`

	RSSBeforeBytes  int64              `json:"rss_before_bytes,omitempty"`
	RSSAfterBytes   int64              `json:"rss_after_bytes,omitempty"`
	RSSMaxBytes     int64              `json:"rss_max_bytes,omitempty"`
	RSSPerConnBytes float64            `json:"rss_per_conn_bytes,omitempty"`
	MetricsBefore   map[string]float64 `json:"metrics_before,omitempty"`
	MetricsAfter    map[string]float64 `json:"metrics_after,omitempty"`
	HeapPerConn     float64            `json:"heap_per_conn_bytes,omitempty"`
	// CPUSeconds is the CPU time the engine used during the run (when its
	// PID is known): on a shared machine, with Bench.CPUSeconds, it says
	// who used the cores.
	CPUSeconds float64 `json:"cpu_seconds,omitempty"`
}

// Bench is the bench process's own footprint: on a shared 2-core machine
// the load generator competes with the engine, and readers must know how
// much.
type Bench struct {
	RSSBytes       int64   `json:"rss_bytes"`
	CPUSeconds     float64 `json:"cpu_seconds"`
	OpenFilesLimit uint64  `json:"open_files_limit"`
}

// Goal is one DESIGN.md performance goal checked by the run. A missed goal
// is reported, not an error exit: goals are targets, delivery is a promise.
type Goal struct {
	Name     string  `json:"name"`
	Unit     string  `json:"unit"`
	Target   float64 `json:"target"`
	Measured float64 `json:"measured"`
	// AtMost is true when Measured must be <= Target (latencies, memory),
	// false when it must be >= Target (rates, counts).
	AtMost bool `json:"at_most"`
	Met    bool `json:"met"`
}

// Machine is where the run happened.
type Machine struct {
	Cores         int    `json:"cores"`
	GOMAXPROCS    int    `json:"gomaxprocs"`
	GoVersion     string `json:"go_version"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
	CPU           string `json:"cpu,omitempty"`
	Kernel        string `json:"kernel,omitempty"`
	Hostname      string `json:"hostname,omitempty"`
	MemTotalBytes int64  `json:"mem_total_bytes,omitempty"`
	// LoadAvg is /proc/loadavg when the run started: on a shared machine
	// it tells how much else was competing for the cores.
	LoadAvg string `json:"loadavg,omitempty"`
}

// DetectMachine reads the machine description from the runtime and /proc.
func DetectMachine() Machine {
	m := Machine{
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
	}
	m.Hostname, _ = os.Hostname()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
				m.MemTotalBytes = kb * 1024
				break
			}
		}
	}
	return m
}

// New starts the result of a run of scenario.
func New(scenario string) *Result {
	return &Result{
		Scenario:  scenario,
		OK:        true,
		Failures:  []string{},
		StartedAt: time.Now().UTC(),
		LatencyMS: map[string]stats.Summary{SendAck: {}, SendDeliver: {}},
		Details:   map[string]float64{},
		Settings:  map[string]any{},
		Machine:   DetectMachine(),
		Series:    map[string][]stats.Point{},
		Curves:    map[string][]stats.CurvePoint{},
	}
}

// Fail records a broken promise or a failed check: the run exits 1.
func (r *Result) Fail(format string, args ...any) {
	r.OK = false
	r.Failures = append(r.Failures, fmt.Sprintf(format, args...))
}

// AddLatency stores a latency's summary, series and curve under name.
func (r *Result) AddLatency(name string, l *stats.Latency) {
	r.LatencyMS[name] = l.Hist.Summary()
	if pts := l.Series.Points(); len(pts) > 0 {
		r.Series[name] = pts
	}
	if c := l.Hist.Curve(); len(c) > 0 {
		r.Curves[name] = c
	}
}

// AddGoal records a goal; atMost says which side of target is good.
func (r *Result) AddGoal(name, unit string, target, measured float64, atMost bool) {
	met := measured >= target
	if atMost {
		met = measured <= target
	}
	r.Goals = append(r.Goals, Goal{Name: name, Unit: unit, Target: target, Measured: round3(measured), AtMost: atMost, Met: met})
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// ExitCode is 0 when every check passed and 1 otherwise.
func (r *Result) ExitCode() int {
	if r.OK {
		return 0
	}
	return 1
}

// WriteJSON writes the result, indented, to path ("-" for stdout).
func (r *Result) WriteJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	b = append(b, '\n')
	if path == "-" {
		_, err = os.Stdout.Write(b)
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}

// Read loads a results.json (for re-plotting a past run).
func Read(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read result: %w", err)
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode result %s: %w", path, err)
	}
	return &r, nil
}

func mb(b int64) string { return fmt.Sprintf("%.1f MB", float64(b)/(1<<20)) }

// latencyOrder is the order latency rows are printed and plotted in.
var latencyOrder = []string{SendAck, SendDeliver, SendDeliverSameNode, SendDeliverCrossNode, Failover, HeartbeatRTT, Connect, Detect, Reconnect}

// LatencyNames lists the result's latency series: the known ones in
// latencyOrder, then any other in name order.
func (r *Result) LatencyNames() []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range latencyOrder {
		if _, ok := r.LatencyMS[n]; ok {
			out = append(out, n)
			seen[n] = true
		}
	}
	var rest []string
	for n := range r.LatencyMS {
		if !seen[n] {
			rest = append(rest, n)
		}
	}
	sort.Strings(rest)
	return append(out, rest...)
}

// WriteTable prints the human summary.
func (r *Result) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format, args...) }
	p("scenario\t%s\t(%.1f s measured, %d cores, %s, load at start %s)\n", r.Scenario, r.DurationS, r.Machine.Cores, r.Machine.GoVersion, r.Machine.LoadAvg)
	p("connections\t%d of %d\t(%d connect errors, %d unexpected closes, %.0f conn/s, source %s)\n",
		r.Conns.Connected, r.Conns.Target, r.Conns.ConnectErrors, r.Conns.UnexpectedCloses, r.Conns.ConnectRatePerS, r.Conns.SourceAddrs)
	if r.Sent > 0 || r.Acked > 0 {
		p("sent / acked\t%d / %d\t(throughput %.0f msg/s, %d unacked, %d duplicate acks)\n", r.Sent, r.Acked, r.ThroughputPerS, r.Unacked, r.DuplicateAcks)
		p("delivered\t%d\t(%.0f deliveries/s)\n", r.Delivered, r.DeliveriesPerS)
		p("lost / duplicated / reordered\t%d / %d / %d\t(mismatched %d)\n", r.Lost, r.Duplicated, r.Reordered, r.Mismatched)
	}
	p("errors\t%d\t\n", r.Errors)
	tw.Flush()

	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "latency (ms)\tcount\tp50\tp90\tp99\tp99.9\tmax\t\n")
	for _, n := range r.LatencyNames() {
		s := r.LatencyMS[n]
		if s.Count == 0 && n != SendAck && n != SendDeliver {
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", n, s.Count, s.P50, s.P90, s.P99, s.P999, s.Max)
	}
	tw.Flush()

	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if r.Engine.RSSBeforeBytes > 0 || r.Engine.RSSAfterBytes > 0 {
		fmt.Fprintln(tw)
		fmt.Fprintf(tw, "engine memory\trss before %s, after %s, max %s\t", mb(r.Engine.RSSBeforeBytes), mb(r.Engine.RSSAfterBytes), mb(r.Engine.RSSMaxBytes))
		if r.Engine.RSSPerConnBytes > 0 {
			fmt.Fprintf(tw, "(%.1f KiB per connection)", r.Engine.RSSPerConnBytes/1024)
		}
		fmt.Fprintln(tw)
	}
	const heap = "go_memstats_heap_inuse_bytes"
	if b, a := r.Engine.MetricsBefore[heap], r.Engine.MetricsAfter[heap]; b > 0 || a > 0 {
		fmt.Fprintf(tw, "engine Go heap\tin use before %s, after %s\t", mb(int64(b)), mb(int64(a)))
		if r.Engine.HeapPerConn > 0 {
			fmt.Fprintf(tw, "(%.1f KiB per connection)", r.Engine.HeapPerConn/1024)
		}
		fmt.Fprintln(tw)
	}
	if r.Engine.CPUSeconds > 0 || r.Bench.CPUSeconds > 0 {
		fmt.Fprintf(tw, "cpu time\tengine %.1f s, bench %.1f s (over %.1f s measured)\t\n", r.Engine.CPUSeconds, r.Bench.CPUSeconds, r.DurationS)
	}
	if len(r.Details) > 0 {
		fmt.Fprintln(tw)
		keys := make([]string, 0, len(r.Details))
		for k := range r.Details {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t\n", k, trim(r.Details[k]))
		}
	}
	if len(r.Goals) > 0 {
		fmt.Fprintln(tw)
		for _, g := range r.Goals {
			op, verdict := "≥", "MISSED"
			if g.AtMost {
				op = "≤"
			}
			if g.Met {
				verdict = "met"
			}
			fmt.Fprintf(tw, "goal %s %s %s %s\tmeasured %s %s\t%s\n", g.Name, op, trim(g.Target), g.Unit, trim(g.Measured), g.Unit, verdict)
		}
	}
	if len(r.ErrorSamples) > 0 {
		fmt.Fprintln(tw)
		keys := make([]string, 0, len(r.ErrorSamples))
		for k := range r.ErrorSamples {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(tw, "error ×%d\t%s\n", r.ErrorSamples[k], k)
		}
	}
	for _, pr := range r.Problems {
		fmt.Fprintf(tw, "problem\t%s\n", pr)
	}
	fmt.Fprintln(tw)
	if r.OK {
		fmt.Fprintf(tw, "RESULT: OK\n")
	} else {
		fmt.Fprintf(tw, "RESULT: FAIL\n")
		for _, f := range r.Failures {
			fmt.Fprintf(tw, "  - %s\n", f)
		}
	}
	return tw.Flush()
}

func trim(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
