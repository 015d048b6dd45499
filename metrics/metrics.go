// Package metrics exports the engine's figures in Prometheus' text format
// (docs/METRICS.md lists every series). It reads the counters the actors
// already keep (actors.Stats, postgres.Stats, the rate limiter's refusals)
// at scrape time, through collectors, so counting costs the hot path
// nothing more than it did; only the distributions (heartbeat RTT,
// send→ack, group commit, SOAP calls) are observed as they happen, into
// the histograms Histograms hands the actor tree.
package metrics

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"charla/actors"
	"charla/ratelimit"
	"charla/store/postgres"
)

// Namespace prefixes every series of the engine's own.
const Namespace = "charla"

// Metrics is the engine's registry: Go runtime and process figures, the
// histograms the actor tree observes into, and the collectors added by
// Watch and Register.
type Metrics struct {
	reg    *prometheus.Registry
	hist   actors.Histograms
	engine *collector // Watch's
}

// Buckets of the histograms, in seconds (sizes in messages). The
// latencies span the goals (a heartbeat RTT p99 of 50 ms, send→ack p99 of
// 25 ms) with room on both sides; the SOAP one reaches its 10 s timeout.
var (
	latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}
	soapBuckets    = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
	sizeBuckets    = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}
)

// New builds the registry with the Go runtime and process collectors and
// the tree's histograms (pass Histograms to actors.Dependencies).
func New() *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	h := func(name, help string, buckets []float64) prometheus.Histogram {
		hist := prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: Namespace, Name: name, Help: help, Buckets: buckets})
		m.reg.MustRegister(hist)
		return hist
	}
	m.hist = actors.Histograms{
		HeartbeatRTT:  h("heartbeat_rtt_seconds", "Time from a server WebSocket ping to its pong.", latencyBuckets),
		SendAck:       h("send_ack_seconds", "Time from a client's send reaching the engine to its ack.", latencyBuckets),
		CommitSize:    h("group_commit_messages", "Messages written in one group commit (store or spool).", sizeBuckets),
		CommitLatency: h("group_commit_seconds", "Duration of one group commit (store or spool).", latencyBuckets),
		SOAPCall:      h("soap_call_seconds", "Duration of one SOAP attempt, failed ones included.", soapBuckets),
	}
	return m
}

// Histograms are what the actor tree observes into; hand them to
// actors.NewSystem through actors.Dependencies.Histograms.
func (m *Metrics) Histograms() actors.Histograms { return m.hist }

// StoreStats is the PostgreSQL store's figures (postgres.Store has it).
type StoreStats interface{ Stats() postgres.Stats }

// Refusals is the rate limiter's count of refused requests per class
// (ratelimit.Registry has it).
type Refusals interface{ Refused(ratelimit.Class) int64 }

// Sources are what Watch reads at every scrape. System is required; the
// others are left out when the engine has none (the embedded store, no
// limiter).
type Sources struct {
	System *actors.System
	Store  StoreStats
	Limits Refusals
}

// Watch registers the collector of the engine's counters, after the actor
// tree is built. Watching again (a tree rebuilt in a test's restart)
// replaces the previous sources; the histograms carry on.
func (m *Metrics) Watch(src Sources) error {
	if src.System == nil {
		return fmt.Errorf("metrics: Watch needs the actor system")
	}
	if m.engine != nil {
		m.reg.Unregister(m.engine)
	}
	m.engine = newEngineCollector(src)
	return m.Register(m.engine)
}

// Register adds a collector beside the engine's. Keep labels of bounded
// cardinality: never a user, conversation or phone number.
func (m *Metrics) Register(c prometheus.Collector) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("metrics: register: %w", err)
	}
	return nil
}

// Gatherer reads every registered series, for the alert rules.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in Prometheus' text format. It does not
// check who asks: mount it where only the intended readers reach it.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
