// Package plot draws a run as one self-contained HTML page (inline SVG, no
// scripts, no external assets, so it opens anywhere and can be attached to
// an issue): latency over time, the percentile curve, throughput and
// connections over time, beside the summary table, the goals, the machine
// and the exact command line. A run is easier to see than to read.
package plot

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"math"
	"os"
	"sort"
	"strings"

	"charla/bench/result"
	"charla/bench/stats"
)

// WriteFile renders r to path.
func WriteFile(path string, r *result.Result) error {
	b, err := HTML(r)
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		return fmt.Errorf("write plot: %w", err)
	}
	return nil
}

// HTML renders r as a standalone page.
func HTML(r *result.Result) ([]byte, error) {
	var charts []template.HTML
	for _, name := range r.LatencyNames() {
		if pts := r.Series[name]; len(pts) > 0 {
			charts = append(charts, latencyOverTime(name, pts))
		}
	}
	if c := percentileCurves(r); c != "" {
		charts = append(charts, c)
	}
	if len(r.Timeline) > 0 {
		charts = append(charts, rates(r), connsAndMemory(r))
	}
	var buf bytes.Buffer
	err := page.Execute(&buf, struct {
		R      *result.Result
		Charts []template.HTML
		Lat    []latRow
		Goals  []result.Goal
		Detail []kv
	}{r, charts, latRows(r), r.Goals, details(r)})
	if err != nil {
		return nil, fmt.Errorf("render plot: %w", err)
	}
	return buf.Bytes(), nil
}

type latRow struct {
	Name string
	S    stats.Summary
}

type kv struct {
	K string
	V string
}

func latRows(r *result.Result) []latRow {
	var out []latRow
	for _, n := range r.LatencyNames() {
		if s := r.LatencyMS[n]; s.Count > 0 {
			out = append(out, latRow{n, s})
		}
	}
	return out
}

func details(r *result.Result) []kv {
	keys := make([]string, 0, len(r.Details))
	for k := range r.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]kv, 0, len(keys))
	for _, k := range keys {
		out = append(out, kv{k, fmt.Sprintf("%.6g", r.Details[k])})
	}
	return out
}

// --- charts -----------------------------------------------------------

type pt struct{ x, y float64 }

type line struct {
	name, color, dash string
	pts               []pt
}

type tick struct {
	v     float64
	label string
}

type chart struct {
	title, xlabel, ylabel string
	logY                  bool
	xticks                []tick // nil: automatic
	lines                 []line
}

const (
	width, height                  = 900, 320
	padL, padR, padT, padB float64 = 70, 160, 30, 45
)

var palette = []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}

func latencyOverTime(name string, pts []stats.Point) template.HTML {
	var p50, p99, mx []pt
	for _, p := range pts {
		x := float64(p.Second)
		p50 = append(p50, pt{x, p.P50})
		p99 = append(p99, pt{x, p.P99})
		mx = append(mx, pt{x, p.Max})
	}
	return chart{
		title: name + " latency over time (per second)", xlabel: "seconds since start", ylabel: "ms (log)", logY: true,
		lines: []line{{"p50", palette[0], "", p50}, {"p99", palette[1], "", p99}, {"max", palette[3], "4 3", mx}},
	}.svg()
}

// nines maps a percentile to the curve's x axis: 90 → 1, 99 → 2, 99.9 → 3.
func nines(p float64) float64 {
	if p >= 100 {
		return 5.5
	}
	return math.Min(-math.Log10(1-p/100), 5.5)
}

func percentileCurves(r *result.Result) template.HTML {
	var ls []line
	for i, n := range r.LatencyNames() {
		c := r.Curves[n]
		if len(c) == 0 {
			continue
		}
		var pts []pt
		for _, p := range c {
			pts = append(pts, pt{nines(p.Percentile), p.MS})
		}
		ls = append(ls, line{n, palette[i%len(palette)], "", pts})
	}
	if len(ls) == 0 {
		return ""
	}
	return chart{
		title: "percentile curve", xlabel: "percentile", ylabel: "ms (log)", logY: true,
		xticks: []tick{{0, "0%"}, {1, "90%"}, {2, "99%"}, {3, "99.9%"}, {4, "99.99%"}, {5, "99.999%"}, {5.5, "max"}},
		lines:  ls,
	}.svg()
}

func rates(r *result.Result) template.HTML {
	var s, a, d []pt
	for _, p := range r.Timeline {
		s = append(s, pt{p.Second, p.SentPerS})
		a = append(a, pt{p.Second, p.AckedPerS})
		d = append(d, pt{p.Second, p.DeliveredPerS})
	}
	return chart{title: "messages per second", xlabel: "seconds since start", ylabel: "per second",
		lines: []line{{"sent/s", palette[0], "", s}, {"acked/s", palette[2], "4 3", a}, {"delivered/s", palette[4], "", d}}}.svg()
}

func connsAndMemory(r *result.Result) template.HTML {
	var c, e, m []pt
	for _, p := range r.Timeline {
		c = append(c, pt{p.Second, float64(p.Conns)})
		e = append(e, pt{p.Second, float64(p.Errors)})
		if p.EngineRSSMB > 0 {
			m = append(m, pt{p.Second, p.EngineRSSMB})
		}
	}
	ls := []line{{"connections", palette[0], "", c}, {"errors (total)", palette[1], "4 3", e}}
	if len(m) > 0 {
		ls = append(ls, line{"engine RSS (MB)", palette[2], "", m})
	}
	return chart{title: "connections, errors, engine memory", xlabel: "seconds since start", ylabel: "count / MB", lines: ls}.svg()
}

func (c chart) svg() template.HTML {
	xmin, xmax := math.Inf(1), math.Inf(-1)
	ymin, ymax := math.Inf(1), math.Inf(-1)
	for _, l := range c.lines {
		for _, p := range l.pts {
			xmin, xmax = math.Min(xmin, p.x), math.Max(xmax, p.x)
			y := p.y
			if c.logY && y <= 0 {
				continue
			}
			ymin, ymax = math.Min(ymin, y), math.Max(ymax, y)
		}
	}
	if math.IsInf(xmin, 0) {
		return ""
	}
	if c.xticks != nil {
		xmin, xmax = c.xticks[0].v, c.xticks[len(c.xticks)-1].v
	}
	if xmax == xmin {
		xmax = xmin + 1
	}
	var yticks []tick
	if c.logY {
		if math.IsInf(ymin, 0) {
			ymin, ymax = 0.01, 1
		}
		lo, hi := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
		if hi == lo {
			hi = lo + 1
		}
		ymin, ymax = lo, hi
		for e := lo; e <= hi; e++ {
			yticks = append(yticks, tick{e, trimNum(math.Pow(10, e))})
		}
	} else {
		ymin = math.Min(0, ymin)
		if ymax <= ymin {
			ymax = ymin + 1
		}
		step := niceStep((ymax - ymin) / 5)
		ymax = math.Ceil(ymax/step) * step
		for v := ymin; v <= ymax+step/2; v += step {
			yticks = append(yticks, tick{v, trimNum(v)})
		}
	}
	if c.xticks == nil {
		step := niceStep((xmax - xmin) / 8)
		for v := math.Ceil(xmin/step) * step; v <= xmax; v += step {
			c.xticks = append(c.xticks, tick{v, trimNum(v)})
		}
	}
	pw, ph := width-padL-padR, height-padT-padB
	sx := func(x float64) float64 { return padL + (x-xmin)/(xmax-xmin)*pw }
	sy := func(y float64) float64 {
		if c.logY {
			y = math.Log10(math.Max(y, math.Pow(10, ymin)))
		}
		return padT + ph - (y-ymin)/(ymax-ymin)*ph
	}
	esc := html.EscapeString
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="11">`, width, height, width, height)
	fmt.Fprintf(&b, `<text x="%g" y="18" font-size="14" font-weight="bold">%s</text>`, padL, esc(c.title))
	for _, t := range yticks {
		y := sy(t.v)
		if c.logY {
			y = padT + ph - (t.v-ymin)/(ymax-ymin)*ph
		}
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%.1f" y2="%.1f" stroke="#ddd"/><text x="%g" y="%.1f" text-anchor="end">%s</text>`, padL, padL+pw, y, y, padL-6, y+4, esc(t.label))
	}
	for _, t := range c.xticks {
		x := sx(t.v)
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%g" y2="%g" stroke="#eee"/><text x="%.1f" y="%g" text-anchor="middle">%s</text>`, x, x, padT, padT+ph, x, padT+ph+15, esc(t.label))
	}
	fmt.Fprintf(&b, `<rect x="%g" y="%g" width="%g" height="%g" fill="none" stroke="#999"/>`, padL, padT, pw, ph)
	fmt.Fprintf(&b, `<text x="%g" y="%d" text-anchor="middle">%s</text>`, padL+pw/2, height-8, esc(c.xlabel))
	fmt.Fprintf(&b, `<text transform="translate(14 %g) rotate(-90)" text-anchor="middle">%s</text>`, padT+ph/2, esc(c.ylabel))
	for i, l := range c.lines {
		var path strings.Builder
		for _, p := range l.pts {
			if c.logY && p.y <= 0 {
				continue
			}
			fmt.Fprintf(&path, "%.1f,%.1f ", sx(p.x), sy(p.y))
		}
		dash := ""
		if l.dash != "" {
			dash = fmt.Sprintf(` stroke-dasharray="%s"`, l.dash)
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.6"%s points="%s"/>`, l.color, dash, strings.TrimSpace(path.String()))
		if len(l.pts) == 1 {
			p := l.pts[0]
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`, sx(p.x), sy(p.y), l.color)
		}
		ly := padT + 14 + float64(i)*16
		fmt.Fprintf(&b, `<line x1="%g" x2="%g" y1="%g" y2="%g" stroke="%s" stroke-width="2"%s/><text x="%g" y="%g">%s</text>`,
			padL+pw+12, padL+pw+36, ly-4, ly-4, l.color, dash, padL+pw+42, ly, esc(l.name))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every text above went through html.EscapeString
}

func niceStep(raw float64) float64 {
	if raw <= 0 {
		return 1
	}
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*mag {
			return m * mag
		}
	}
	return 10 * mag
}

func trimNum(v float64) string {
	switch {
	case v == 0:
		return "0"
	case math.Abs(v) >= 1e6:
		return fmt.Sprintf("%gM", v/1e6)
	case math.Abs(v) >= 1e4:
		return fmt.Sprintf("%gk", v/1e3)
	default:
		return fmt.Sprintf("%g", math.Round(v*1000)/1000)
	}
}

var page = template.Must(template.New("page").Funcs(template.FuncMap{
	"f2": func(v float64) string { return fmt.Sprintf("%.2f", v) },
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>charla-bench {{.R.Scenario}} — {{.R.StartedAt.Format "2006-01-02 15:04:05"}}</title>
<style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1000px}
table{border-collapse:collapse;margin:8px 0 18px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.ok{color:#080;font-weight:bold}.fail{color:#b00;font-weight:bold}
code{background:#f4f4f4;padding:2px 4px;word-break:break-all}
svg{display:block;margin:10px 0 20px}
</style></head><body>
<h1>charla-bench {{.R.Scenario}}
{{if .R.OK}}<span class="ok">OK</span>{{else}}<span class="fail">FAIL</span>{{end}}</h1>
<p>{{.R.StartedAt.Format "2006-01-02 15:04:05 MST"}} · {{f2 .R.DurationS}} s measured ·
{{.R.Machine.Cores}} cores ({{.R.Machine.CPU}}) · {{.R.Machine.GoVersion}} · engine {{.R.Engine.Addr}}
{{with .R.Engine.Cmd}}(<code>{{.}}</code>){{end}}</p>
<p>command line: <code>{{.R.CommandLine}}</code></p>
{{range .R.Failures}}<p class="fail">✗ {{.}}</p>{{end}}
<table>
<tr><th>connections</th><td>{{.R.Conns.Connected}} of {{.R.Conns.Target}}</td><th>sent</th><td>{{.R.Sent}}</td><th>acked</th><td>{{.R.Acked}}</td></tr>
<tr><th>throughput</th><td>{{printf "%.0f" .R.ThroughputPerS}} msg/s</td><th>delivered</th><td>{{.R.Delivered}}</td><th>deliveries/s</th><td>{{printf "%.0f" .R.DeliveriesPerS}}</td></tr>
<tr><th>lost</th><td>{{.R.Lost}}</td><th>duplicated</th><td>{{.R.Duplicated}}</td><th>reordered</th><td>{{.R.Reordered}}</td></tr>
<tr><th>errors</th><td>{{.R.Errors}}</td><th>unacked</th><td>{{.R.Unacked}}</td><th>unexpected closes</th><td>{{.R.Conns.UnexpectedCloses}}</td></tr>
</table>
{{if .Lat}}<table><tr><th>latency (ms)</th><th>count</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>
{{range .Lat}}<tr><td>{{.Name}}</td><td>{{.S.Count}}</td><td>{{f2 .S.P50}}</td><td>{{f2 .S.P90}}</td><td>{{f2 .S.P99}}</td><td>{{f2 .S.P999}}</td><td>{{f2 .S.Max}}</td></tr>
{{end}}</table>{{end}}
{{if .Goals}}<table><tr><th>goal</th><th>target</th><th>measured</th><th></th></tr>
{{range .Goals}}<tr><td>{{.Name}}</td><td>{{if .AtMost}}≤{{else}}≥{{end}} {{.Target}} {{.Unit}}</td><td>{{.Measured}} {{.Unit}}</td><td>{{if .Met}}<span class="ok">met</span>{{else}}<span class="fail">missed</span>{{end}}</td></tr>
{{end}}</table>{{end}}
{{range .Charts}}{{.}}{{end}}
{{if .Detail}}<h3>details</h3><table>{{range .Detail}}<tr><td>{{.K}}</td><td>{{.V}}</td></tr>{{end}}</table>{{end}}
</body></html>
`))
