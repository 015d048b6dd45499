package metrics_test

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"charla/actors"
	"charla/metrics"
	"charla/ops"
	"charla/transport/transporttest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, transporttest.LeakOptions()...) }

var seriesName = regexp.MustCompile(`charla_[a-z0-9_]+[a-z0-9]`)

// The names dashboards and alert rules rely on are the names the engine
// exports: every series docs/METRICS.md, the Prometheus rules, the Grafana
// dashboard and the shipped alert rules name exists (or is one only
// PostgreSQL or a reserved hook produces), and every series the engine
// exports is documented.
func TestMetricNamesAreDocumentedAndExist(t *testing.T) {
	reg := metrics.New()
	// A bridge that is configured (its series appear) and never called.
	transporttest.Start(t, transporttest.WithMetrics(reg), transporttest.WithActors(func(c *actors.Config) { c.SOAP.URL = "http://127.0.0.1:9" }))
	fams, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, f := range fams {
		name := f.GetName()
		exported[name] = true
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			exported[name+suffix] = true
		}
	}
	onlyElsewhere := func(name string) bool {
		for _, p := range []string{"charla_db_", "charla_whatsapp_", "charla_bot_"} {
			if strings.HasPrefix(name, p) {
				return true
			}
		}
		return false
	}
	docs := map[string]string{}
	for _, path := range []string{"../docs/METRICS.md", "../docs/monitoring/prometheus-rules.yml", "../docs/monitoring/grafana-dashboard.json"} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		docs[path] = string(b)
	}
	var g map[string]any
	if err := json.Unmarshal([]byte(docs["../docs/monitoring/grafana-dashboard.json"]), &g); err != nil {
		t.Fatalf("grafana dashboard is not JSON: %v", err)
	}
	for _, r := range ops.DefaultRules() {
		docs["ops.DefaultRules "+r.Name] = r.Metric + " " + r.Denominator
	}
	for where, text := range docs {
		for _, name := range seriesName.FindAllString(text, -1) {
			if !exported[name] && !onlyElsewhere(name) {
				t.Errorf("%s names %s, which the engine does not export", where, name)
			}
		}
	}
	for name := range exported {
		if strings.HasPrefix(name, "charla_") && !strings.HasSuffix(name, "_bucket") && !strings.HasSuffix(name, "_sum") && !strings.HasSuffix(name, "_count") &&
			!strings.Contains(docs["../docs/METRICS.md"], "`"+name+"`") {
			t.Errorf("%s is exported but not documented in docs/METRICS.md", name)
		}
	}
}

// A dependency actor built elsewhere (WhatsApp) reports its breaker through
// Sources.Breakers, under the same series as the store's and SOAP's.
func TestBreakersHook(t *testing.T) {
	reg := metrics.New()
	e := transporttest.Start(t, transporttest.WithMetrics(reg))
	state := actors.BreakerOpen
	if err := reg.Watch(metrics.Sources{System: e.Sys, Breakers: []metrics.Breaker{{Dependency: "whatsapp",
		State: func() actors.BreakerState { return state }, Trips: func() int64 { return 3 }}}}); err != nil {
		t.Fatal(err)
	}
	fams, err := reg.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range fams {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == "dependency" && l.GetValue() == "whatsapp" {
					got[f.GetName()] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
	}
	want := map[string]float64{"charla_breaker_open": 1, "charla_breaker_state": float64(actors.BreakerOpen), "charla_breaker_trips_total": 3}
	for name, v := range want {
		if got[name] != v {
			t.Errorf("%s{dependency=whatsapp} = %v, want %v (all: %v)", name, got[name], v, got)
		}
	}
}
