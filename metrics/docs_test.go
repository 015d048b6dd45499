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
		for _, p := range []string{"charla_db_", "charla_whatsapp_", "charla_bot_", "charla_cluster_"} {
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

// The WhatsApp series (its breaker among the others) are there exactly
// when the channel is on, so that a dashboard tells "off" from "idle".
func TestWhatsAppSeriesWhenTheChannelIsOn(t *testing.T) {
	series := func(t *testing.T, opts ...transporttest.Option) map[string]float64 {
		reg := metrics.New()
		transporttest.Start(t, append(opts, transporttest.WithMetrics(reg))...)
		fams, err := reg.Gatherer().Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, f := range fams {
			for _, m := range f.Metric {
				name := f.GetName()
				for _, l := range m.Label {
					if l.GetName() == "dependency" || l.GetName() == "kind" {
						name += "{" + l.GetValue() + "}"
					}
				}
				got[name] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
		return got
	}
	off := series(t)
	on := series(t, transporttest.WithDependencies(func(d *actors.Dependencies) {
		d.Inbound = &actors.Inbound{Store: d.Store.(actors.WebhookStore)}
	}))
	for _, name := range []string{"charla_breaker_state{whatsapp}", "charla_whatsapp_webhook_events_total{recorded}",
		"charla_whatsapp_outbox_open", "charla_whatsapp_sent_total"} {
		if _, ok := off[name]; ok {
			t.Errorf("%s is exported with the channel off", name)
		}
		if v, ok := on[name]; !ok || v != 0 {
			t.Errorf("%s with the channel on and idle = %v, %v; want 0, present", name, v, ok)
		}
	}
	if _, ok := off["charla_bot_sessions_active"]; !ok {
		t.Error("charla_bot_sessions_active is missing")
	}
}
