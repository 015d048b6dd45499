package ops_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"charla/ops"
)

// scrapes builds a registry whose series a test sets between evaluations.
type scrapes struct {
	reg     *prometheus.Registry
	gauge   *prometheus.GaugeVec
	counter *prometheus.CounterVec
	den     prometheus.Counter
	hist    prometheus.Histogram
}

func newScrapes() *scrapes {
	s := &scrapes{reg: prometheus.NewRegistry(),
		gauge:   prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "g"}, []string{"dep"}),
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total"}, []string{"class"}),
		den:     prometheus.NewCounter(prometheus.CounterOpts{Name: "d_total"}),
		hist:    prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h_seconds", Buckets: []float64{.01, .1, 1}}),
	}
	s.reg.MustRegister(s.gauge, s.counter, s.den, s.hist)
	return s
}

func (s *scrapes) gather(t *testing.T) []*dto.MetricFamily {
	fams, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return fams
}

// Each rule kind, stepped through evaluations one second apart: when it
// fires, and that it fires once and resolves once.
func TestEvaluatorKinds(t *testing.T) {
	sec := ops.Duration(time.Second)
	tests := []struct {
		name string
		rule ops.Rule
		// steps change the series before each evaluation; want is the
		// events of that evaluation ("" none, "firing", "resolved").
		steps []func(*scrapes)
		want  []string
	}{
		{"value over threshold, labels matched",
			ops.Rule{Kind: ops.KindValue, Metric: "g", Labels: map[string]string{"dep": "soap"}, Op: ">", Threshold: 0},
			[]func(*scrapes){
				func(s *scrapes) { s.gauge.WithLabelValues("store").Set(1) }, // another dependency: no
				func(s *scrapes) { s.gauge.WithLabelValues("soap").Set(1) },
				func(s *scrapes) {},
				func(s *scrapes) { s.gauge.WithLabelValues("soap").Set(0) },
			},
			[]string{"", "firing", "", "resolved"}},
		{"for holds it back until the condition lasted",
			ops.Rule{Kind: ops.KindValue, Metric: "g", Op: ">", Threshold: 5, For: 2 * sec},
			[]func(*scrapes){
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(9) },
				func(s *scrapes) {},
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(1) }, // a break: starts over
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(9) },
				func(s *scrapes) {},
				func(s *scrapes) {},
			},
			[]string{"", "", "", "", "", "firing"}},
		{"increase of a gauge over the window",
			ops.Rule{Kind: ops.KindIncrease, Metric: "g", Window: 2 * sec, Op: ">", Threshold: 0},
			[]func(*scrapes){
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(10) },
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(12) },
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(15) },
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(15) },
				func(s *scrapes) { s.gauge.WithLabelValues("a").Set(15) }, // flat for the whole window
			},
			[]string{"", "firing", "", "", "resolved"}},
		{"rate of a counter summed over labels",
			ops.Rule{Kind: ops.KindRate, Metric: "c_total", Window: 2 * sec, Op: ">", Threshold: 2},
			[]func(*scrapes){
				func(s *scrapes) { s.counter.WithLabelValues("chat"); s.counter.WithLabelValues("api") },               // both at 0
				func(s *scrapes) { s.counter.WithLabelValues("chat").Add(2); s.counter.WithLabelValues("api").Add(2) }, // 4/s
				func(s *scrapes) {}, // 4 over 2 s: 2/s, not above
			},
			[]string{"", "firing", "resolved"}},
		{"ratio needs its denominator to move",
			ops.Rule{Kind: ops.KindRatio, Metric: "c_total", Denominator: "d_total", Window: 10 * sec, Op: ">", Threshold: 0.01},
			[]func(*scrapes){
				func(s *scrapes) { s.den.Add(100); s.counter.WithLabelValues("x") },
				func(s *scrapes) { s.counter.WithLabelValues("x").Add(1) },                 // errors without attempts: no reading
				func(s *scrapes) { s.den.Add(100) },                                        // 1 in 100 over the window: not above 1%
				func(s *scrapes) { s.counter.WithLabelValues("x").Add(2); s.den.Add(100) }, // 3 in 200
			},
			[]string{"", "", "", "firing"}},
		{"quantile of the window's observations",
			ops.Rule{Kind: ops.KindQuantile, Metric: "h_seconds", Quantile: 0.99, Window: 2 * sec, Op: ">", Threshold: 0.1},
			[]func(*scrapes){
				func(s *scrapes) {
					for range 100 {
						s.hist.Observe(0.005)
					}
				},
				func(s *scrapes) {
					for range 10 {
						s.hist.Observe(0.5)
					}
				},
				func(s *scrapes) { // 10 slow of 110 in the window: p99 still slow
					for range 100 {
						s.hist.Observe(0.005)
					}
				},
				func(s *scrapes) { // the slow ones left the window
					for range 1000 {
						s.hist.Observe(0.005)
					}
				},
			},
			[]string{"", "firing", "", "resolved"}},
		{"a metric that does not exist never fires",
			ops.Rule{Kind: ops.KindValue, Metric: "charla_bot_sessions_active", Op: "<", Threshold: 1},
			[]func(*scrapes){func(s *scrapes) {}, func(s *scrapes) {}},
			[]string{"", ""}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.rule.Name, tc.rule.Severity, tc.rule.Summary = "r", ops.SeverityWarning, "s"
			if err := (ops.Rules{tc.rule}).Validate(); err != nil {
				t.Fatal(err)
			}
			s := newScrapes()
			e := ops.NewEvaluator(ops.Rules{tc.rule})
			now := time.Unix(1_000_000, 0)
			var got []string
			for _, step := range tc.steps {
				step(s)
				evs := e.Eval(now, s.gather(t))
				var states []string
				for _, ev := range evs {
					states = append(states, string(ev.State))
				}
				got = append(got, strings.Join(states, ","))
				now = now.Add(time.Second)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("events per evaluation %q, want %q", got, tc.want)
			}
		})
	}
}

// Every problem of a rule set is listed at once, each naming its rule.
func TestRulesValidate(t *testing.T) {
	if err := ops.DefaultRules().Validate(); err != nil {
		t.Fatalf("shipped rules: %v", err)
	}
	bad := ops.Rules{
		{Name: "Bad Name", Metric: "", Kind: "sometimes", Op: ">=", Severity: "page"},
		{Name: "q", Metric: "m", Kind: ops.KindQuantile, Quantile: 2, Op: ">", Severity: ops.SeverityInfo, DisableFlag: "warp"},
		{Name: "q", Metric: "m", Kind: ops.KindValue, Op: ">", Severity: ops.SeverityInfo},
	}
	err := bad.Validate()
	for _, want := range []string{"name must be", "metric is required", `kind "sometimes"`, `op ">="`, `severity "page"`,
		"positive window", "quantile must be between", `disable_flag "warp"`, `"q" is defined twice`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("validation %v; want it to mention %q", err, want)
		}
	}
}
