package ops_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/metrics"
	"charla/ops"
	"charla/soapbridge/soapsim"
	"charla/store"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/transport/transporttest"
	"charla/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, transporttest.LeakOptions()...)) }

// hookServer is the test's alert webhook: it records every event it
// accepts, and refuses the first attempt of each with a 503 so that every
// delivery needs the engine's retry.
type hookServer struct {
	mu       sync.Mutex
	events   []ops.Event
	attempts int
	url      string
}

func startHook(t *testing.T) *hookServer {
	h := &hookServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var ev ops.Event
		if err := json.NewDecoder(r.Body).Decode(&ev); err != nil {
			t.Errorf("webhook body: %v", err)
		}
		h.mu.Lock()
		defer h.mu.Unlock()
		h.attempts++
		if h.attempts%2 == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		h.events = append(h.events, ev)
	}))
	t.Cleanup(srv.Close)
	h.url = srv.URL
	return h
}

// states returns the states the webhook received for rule, in order.
func (h *hookServer) states(rule string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, ev := range h.events {
		if ev.Rule == rule {
			out = append(out, string(ev.State))
		}
	}
	return out
}

// adminAlerts reads the alert frames an admin connection gets, by rule.
type adminAlerts struct {
	mu     sync.Mutex
	frames map[string][]wire.Frame
}

func watchAlerts(t *testing.T, e *transporttest.Engine) *adminAlerts {
	c := e.Dial(t, "ops-admin", charla.RoleAdmin)
	a := &adminAlerts{frames: map[string][]wire.Frame{}}
	go func() {
		for {
			select {
			case <-c.Done():
				return
			case f := <-c.Frames():
				if f.Type == wire.TypeAlert {
					a.mu.Lock()
					a.frames[f.Rule] = append(a.frames[f.Rule], f)
					a.mu.Unlock()
				}
			}
		}
	}()
	return a
}

func (a *adminAlerts) states(rule string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, f := range a.frames[rule] {
		out = append(out, f.State)
	}
	return out
}

func (a *adminAlerts) first(rule string) wire.Frame {
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.frames[rule]) == 0 {
		return wire.Frame{}
	}
	return a.frames[rule][0]
}

// waitStates waits until both the admin and the webhook saw want for rule.
func waitStates(t *testing.T, a *adminAlerts, h *hookServer, rule string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got, hooked := strings.Join(a.states(rule), ","), strings.Join(h.states(rule), ",")
		if got == strings.Join(want, ",") && hooked == got {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("alert %s: admin saw [%s], webhook saw [%s]; want [%s]", rule, got, hooked, strings.Join(want, ","))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// alertsEngine runs an engine with metrics, runtime settings, rules and a
// webhook, evaluating every 50 ms.
func alertsEngine(t *testing.T, rules ops.Rules, hook string, opts ...transporttest.Option) *transporttest.Engine {
	return transporttest.Start(t, append([]transporttest.Option{
		transporttest.WithMetrics(metrics.New()),
		transporttest.WithRuntimeSettings(),
		transporttest.WithActors(func(c *actors.Config) {
			c.Alerts.Interval = 50 * time.Millisecond
			c.Alerts.Rules = rules
			c.Alerts.WebhookURL = hook
			c.Alerts.WebhookRetries = 3
		}),
	}, opts...)...)
}

// The "What must be shown" 2, for a breaker: the SOAP breaker opens
// on a fault from the real simulator, its alert fires once to an admin's
// WebSocket and once to the webhook (through a retry), turns off the flag
// linked to it, and resolves once when the breaker closes again.
func TestAlertFiresAndResolvesForABreakerAndRollsBackItsFlag(t *testing.T) {
	sim, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim.Handler())
	t.Cleanup(func() { sim.Close(); hs.Close() })
	if err := sim.SetFaults(soapsim.Faults{FaultSet: soapsim.FaultSet{SOAPFault: 1}}); err != nil {
		t.Fatal(err)
	}
	const rule = "soap_breaker_open"
	rules := ops.Rules{{Name: rule, Metric: "charla_breaker_open", Labels: map[string]string{"dependency": "soap"}, Kind: ops.KindValue,
		Op: ">", Threshold: 0, Severity: ops.SeverityWarning, Summary: "inventory breaker open", DisableFlag: ops.FlagPollingFallback}}
	hook := startHook(t)
	e := alertsEngine(t, rules, hook.url, transporttest.WithActors(func(c *actors.Config) {
		c.SOAP.URL = hs.URL
		c.SOAP.Retries = 0
		c.SOAP.AnswerBudget = 5 * time.Second
		c.SOAP.Breaker = actors.BreakerConfig{Failures: 1, Cooldown: 300 * time.Millisecond}
	}))
	admin := watchAlerts(t, e)
	agent := e.Dial(t, "agent", charla.RoleAgent)
	poll := func() int {
		status, _ := transporttest.Do(t, "POST", e.HTTPURL("/v1/poll", "agent", charla.RoleAgent), map[string]any{"wait_ms": 0}, nil)
		return status
	}
	if status := poll(); status != http.StatusOK {
		t.Fatalf("poll before the alert: %d", status)
	}

	agent.Send(wire.Frame{Type: wire.TypeInventory, Ref: "a", SKU: "SKU-00001"})
	if f := agent.NextOf(wire.TypeError, transporttest.Wait); f.Code != charla.CodeUnavailable {
		t.Fatalf("inventory through a faulty service: %+v", f)
	}
	waitStates(t, admin, hook, rule, "firing")
	if f := admin.first(rule); f.Severity != "warning" || f.DisabledFlag != ops.FlagPollingFallback {
		t.Errorf("alert frame %+v: want severity warning and the flag it turned off", f)
	}
	if e.Runtime.Enabled(ops.FlagPollingFallback) {
		t.Fatal("the linked flag is still on after its alert fired")
	}
	if status := poll(); status != http.StatusServiceUnavailable {
		t.Errorf("poll with polling_fallback rolled back: %d, want 503", status)
	}
	status, body := transporttest.Do(t, "GET", e.HTTPURL("/readyz", "ops", charla.RoleAdmin), nil, nil)
	if status != http.StatusOK || !strings.Contains(string(body), `"rule":"soap_breaker_open"`) || !strings.Contains(string(body), `"polling_fallback":false`) {
		t.Errorf("readyz details while firing: %d %s", status, body)
	}

	// The service heals; after the cool-down a lookup probes and closes
	// the breaker.
	if err := sim.SetFaults(soapsim.Faults{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(400 * time.Millisecond)
	agent.Send(wire.Frame{Type: wire.TypeInventory, Ref: "b", SKU: "SKU-00002"})
	if f := agent.NextOf(wire.TypeInventory, transporttest.Wait); f.Item == nil {
		t.Fatalf("inventory after healing: %+v", f)
	}
	waitStates(t, admin, hook, rule, "firing", "resolved")
	time.Sleep(300 * time.Millisecond) // several evaluations: nothing more may come
	waitStates(t, admin, hook, rule, "firing", "resolved")
}

// The "What must be shown" 2, for a spool growing: PostgreSQL
// becomes unreachable under load, the spool grows, its alert fires once
// (and the store breaker's), and both resolve once when the database is
// back and the spool has drained.
func TestAlertFiresAndResolvesForASpoolGrowing(t *testing.T) {
	pgtest.Need(t)
	dbURL := pgtest.SchemaURL(t)
	if _, err := postgres.MigrateURL(context.Background(), dbURL); err != nil {
		t.Fatal(err)
	}
	proxy, proxied := pgtest.Proxy(t, dbURL)
	rules := ops.Rules{
		{Name: "spool_growing", Metric: "charla_spool_depth", Kind: ops.KindIncrease, Window: ops.Duration(2 * time.Second),
			Op: ">", Threshold: 0, Severity: ops.SeverityWarning, Summary: "spool growing"},
		{Name: "store_breaker_open", Metric: "charla_breaker_open", Labels: map[string]string{"dependency": "store"}, Kind: ops.KindValue,
			Op: ">", Threshold: 0, Severity: ops.SeverityCritical, Summary: "store breaker open"},
	}
	hook := startHook(t)
	open := func(tb testing.TB) store.Store {
		o := postgres.DefaultOptions()
		o.URL, o.Lazy = proxied, true
		o.MaxConns, o.MinConns = 4, 0
		o.QueryTimeout, o.ConnectTimeout = 2*time.Second, 500*time.Millisecond
		o.RetryAttempts, o.RetryBaseDelay, o.RetryMaxDelay = 1, 10*time.Millisecond, 50*time.Millisecond
		st, err := postgres.Open(context.Background(), o, zerolog.Nop())
		if err != nil {
			tb.Fatalf("open postgres: %v", err)
		}
		return st
	}
	e := alertsEngine(t, rules, hook.url, transporttest.WithStore(open), transporttest.WithSpool(),
		transporttest.WithActors(func(c *actors.Config) {
			c.StoreWriteTimeout = 300 * time.Millisecond
			c.StoreBreaker.Failures = 2
			c.StoreBreaker.Cooldown = 500 * time.Millisecond
		}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Store().Head(ctx, "warm-up"); err != nil {
		t.Fatalf("warm up the pool: %v", err)
	}
	admin := watchAlerts(t, e)
	sender := e.Dial(t, "sender", charla.RoleAgent)
	send := func() {
		t.Helper()
		cmid := uuid.NewString()
		sender.Send(transporttest.SendFrame("outage", cmid, "x", cmid))
		for {
			f := sender.Next(transporttest.Wait)
			if f.Ref == cmid && f.Type == wire.TypeAck {
				return
			}
			if f.Ref == cmid {
				t.Fatalf("send during the outage answered %+v", f)
			}
		}
	}
	send() // loads the conversation while the database answers

	if _, err := proxy.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	// Messages keep coming while the database is away: acked from the spool.
	for i := 0; len(admin.states("spool_growing")) == 0; i++ {
		if i > 200 {
			t.Fatalf("no spool_growing alert after %d spooled sends; store_breaker_open: %v", i, admin.states("store_breaker_open"))
		}
		send()
		time.Sleep(20 * time.Millisecond)
	}
	waitStates(t, admin, hook, "spool_growing", "firing")
	waitStates(t, admin, hook, "store_breaker_open", "firing")

	if err := proxy.Toxics.RemoveToxic(context.Background(), "blackhole"); err != nil {
		t.Fatal(err)
	}
	waitStates(t, admin, hook, "store_breaker_open", "firing", "resolved")
	waitStates(t, admin, hook, "spool_growing", "firing", "resolved")
	if d := e.Sys.Stats().SpoolDepth.Load(); d != 0 {
		t.Errorf("spool depth %d after the alert resolved", d)
	}
	time.Sleep(300 * time.Millisecond)
	waitStates(t, admin, hook, "spool_growing", "firing", "resolved")
	waitStates(t, admin, hook, "store_breaker_open", "firing", "resolved")
}
