package transport_test

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	"charla"
	"charla/actors"
	"charla/metrics"
	"charla/soapbridge/soapsim"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// series is one expected sample of a scrape: a metric, its labels, and
// which of its values (a counter's or gauge's, a histogram's count or sum).
type series struct {
	name    string
	labels  string // "k=v,k2=v2" or ""
	field   string // "", "count", "sum"
	want    float64
	atLeast bool // want is a floor (timing-dependent figures)
}

func (s series) String() string {
	return fmt.Sprintf("%s{%s}%s", s.name, s.labels, map[string]string{"": "", "count": "_count", "sum": "_sum"}[s.field])
}

// scrape reads /metrics as an admin and parses it with Prometheus' own
// text parser.
func scrape(t *testing.T, e *transporttest.Engine) map[string]*dto.MetricFamily {
	t.Helper()
	status, body := transporttest.Do(t, "GET", e.HTTPURL("/metrics", "ops", charla.RoleAdmin), nil, nil)
	if status != http.StatusOK {
		t.Fatalf("GET /metrics as admin: %d %s", status, body)
	}
	var p expfmt.TextParser
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// value finds s in fams; ok is false when the series is absent.
func (s series) value(fams map[string]*dto.MetricFamily) (float64, bool) {
	fam := fams[s.name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.Metric {
		var got []string
		for _, l := range m.Label {
			got = append(got, l.GetName()+"="+l.GetValue())
		}
		if strings.Join(got, ",") != s.labels {
			continue
		}
		switch {
		case s.field == "count" && m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case s.field == "sum" && m.Histogram != nil:
			return m.Histogram.GetSampleSum(), true
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

// The "What must be shown" 1: after a scripted session — connect,
// send, a duplicate, a slow consumer, a rate-limited send, a SOAP fault
// from the real simulator — /metrics says exactly what happened.
func TestMetricsAfterAScriptedSession(t *testing.T) {
	sim, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim.Handler())
	t.Cleanup(func() { sim.Close(); hs.Close() })
	if err := sim.SetFaults(soapsim.Faults{FaultSet: soapsim.FaultSet{SOAPFault: 1}}); err != nil {
		t.Fatal(err)
	}
	const chatLimit = 30
	reg := metrics.New()
	e := transporttest.Start(t, transporttest.WithMetrics(reg),
		transporttest.WithActors(func(c *actors.Config) {
			c.HeartbeatInterval = 50 * time.Millisecond // a few heartbeat round trips to measure
			c.SendQueueFrames = 16                      // the poll session below overflows it
			c.MaxSendsInFlight = 8
			c.SOAP.URL = hs.URL
			c.SOAP.Retries = 1
			c.SOAP.BackoffBase, c.SOAP.BackoffMax = 10*time.Millisecond, 20*time.Millisecond
			c.SOAP.AnswerBudget = 5 * time.Second // the fault comes as an error frame, not a job
			c.SOAP.Breaker = actors.BreakerConfig{Failures: 1000, Cooldown: time.Second}
		}),
		transporttest.WithTransport(func(c *transport.Config) {
			c.RateLimits.Allow = nil // loopback is limited like anyone
			c.RateLimits.Chat = chatLimit
		}))

	t.Run("admins only", func(t *testing.T) {
		for _, tc := range []struct {
			role charla.Role
			want int
		}{{"", http.StatusUnauthorized}, {charla.RoleAgent, http.StatusForbidden}, {charla.RoleCustomer, http.StatusForbidden}} {
			u := "http://" + e.Addr + "/metrics"
			if tc.role != "" {
				u = e.HTTPURL("/metrics", "x", tc.role)
			}
			if status, _ := transporttest.Do(t, "GET", u, nil, nil); status != tc.want {
				t.Errorf("GET /metrics as %q: %d, want %d", tc.role, status, tc.want)
			}
		}
	})

	send := func(c *transporttest.Client, conv charla.ConvID, cmid string) wire.Frame {
		t.Helper()
		c.Send(transporttest.SendFrame(conv, cmid, "hello", "r"))
		for {
			f := c.Next(transporttest.Wait)
			if f.Type == wire.TypeAck || f.Type == wire.TypeError {
				return f
			}
		}
	}
	// alice: three messages and one resend of the first.
	alice := e.Dial(t, "alice", charla.RoleAgent)
	first := uuid.NewString()
	send(alice, "demo", first)
	send(alice, "demo", uuid.NewString())
	send(alice, "demo", uuid.NewString())
	if f := send(alice, "demo", first); !f.Duplicate {
		t.Fatalf("resend answered %+v, want a duplicate ack", f)
	}

	// A poll session follows "feed" and never polls again: the messages
	// pile up for it past its queue, and it is closed as a slow consumer.
	status, body := transporttest.Do(t, "POST", e.HTTPURL("/v1/poll", "slow", charla.RoleAgent),
		map[string]any{"cursors": map[string]int{"feed": 0}, "wait_ms": 0}, nil)
	if status != http.StatusOK {
		t.Fatalf("poll: %d %s", status, body)
	}
	feeder := e.Dial(t, "feeder", charla.RoleAgent)
	const fed = 24
	for range fed {
		if f := send(feeder, "feed", uuid.NewString()); f.Type != wire.TypeAck {
			t.Fatalf("feeder's send answered %+v", f)
		}
	}

	// flooder: one send more than the chat limit's burst.
	flooder := e.Dial(t, "flooder", charla.RoleAgent)
	refused := 0
	for range chatLimit + 1 {
		if f := send(flooder, "flood", uuid.NewString()); f.Code == charla.CodeRateLimited {
			refused++
		}
	}
	if refused != 1 {
		t.Fatalf("%d sends refused, want 1", refused)
	}

	// One stock lookup; the simulator answers every attempt with a fault.
	alice.Send(wire.Frame{Type: wire.TypeInventory, Ref: "inv", SKU: "SKU-00001"})
	if f := alice.NextOf(wire.TypeError, transporttest.Wait); f.Code != charla.CodeUnavailable || f.Ref != "inv" {
		t.Fatalf("inventory answered %+v, want unavailable", f)
	}

	stored := 3 + fed + chatLimit
	acks := stored + 1 // the duplicate is acked too
	want := []series{
		{name: "charla_connections_opened_total", want: 4},
		{name: "charla_connections_active", want: 3},
		{name: "charla_connections_closed_total", labels: "reason=slow_consumer", want: 1},
		{name: "charla_slow_consumer_closes_total", want: 1},
		{name: "charla_messages_stored_total", want: float64(stored)},
		{name: "charla_duplicates_total", want: 1},
		{name: "charla_frames_in_total", labels: "type=send", want: float64(acks + refused)},
		{name: "charla_frames_in_total", labels: "type=inventory", want: 1},
		{name: "charla_frames_out_total", labels: "type=ack", want: float64(acks)},
		{name: "charla_frames_out_total", labels: "type=welcome", want: 4},
		{name: "charla_errors_sent_total", labels: "code=rate_limited", want: 1},
		{name: "charla_errors_sent_total", labels: "code=unavailable", want: 1},
		{name: "charla_rate_limit_rejections_total", labels: "class=chat", want: 1},
		{name: "charla_rate_limit_rejections_total", labels: "class=auth", want: 0},
		{name: "charla_send_ack_seconds", field: "count", want: float64(acks)},
		{name: "charla_group_commit_messages", field: "sum", want: float64(stored)},
		{name: "charla_conversations_active", want: 3},
		{name: "charla_conversations_loaded_total", want: 3},
		{name: "charla_breaker_state", labels: "dependency=store", want: 0},
		{name: "charla_breaker_open", labels: "dependency=soap", want: 0},
		{name: "charla_spool_depth", want: 0},
		{name: "charla_soap_calls_total", want: 2},
		{name: "charla_soap_retries_total", want: 1},
		{name: "charla_soap_failures_total", want: 2},
		{name: "charla_soap_timeouts_total", want: 0},
		{name: "charla_soap_call_seconds", field: "count", want: 2},
		// The request's own lookup, then the failure's look for a last
		// known value to serve stale.
		{name: "charla_inventory_cache_misses_total", want: 2},
		{name: "charla_inventory_cache_hits_total", want: 0},
		{name: "charla_inventory_cache_hit_ratio", want: 0},
		{name: "charla_heartbeat_rtt_seconds", field: "count", want: 1, atLeast: true},
		{name: "go_goroutines", want: 1, atLeast: true},
	}
	// Counters move a moment after the frames that tell the client (an ack
	// leaves before its message is counted): scrape until they settle.
	deadline := time.Now().Add(5 * time.Second)
	for {
		fams := scrape(t, e)
		var wrong []string
		for _, s := range want {
			got, ok := s.value(fams)
			if !ok || (s.atLeast && got < s.want) || (!s.atLeast && got != s.want) {
				wrong = append(wrong, fmt.Sprintf("%s = %v (present %v), want %v", s, got, ok, s.want))
			}
		}
		if len(wrong) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the session:\n%s", strings.Join(wrong, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Every series' name is the documented one: no label carries a user or
	// a conversation.
	for name, fam := range scrape(t, e) {
		for _, m := range fam.Metric {
			for _, l := range m.Label {
				for _, private := range []string{"alice", "feeder", "flooder", "demo", "feed", "SKU-00001"} {
					if l.GetValue() == private {
						t.Errorf("%s has label %s=%s: per-user or per-conversation labels are unbounded", name, l.GetName(), l.GetValue())
					}
				}
			}
		}
	}
}
