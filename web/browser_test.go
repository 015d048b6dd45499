package web_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/uuid"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// jwtSecret signs the browser test engine's tokens.
const jwtSecret = "web-test-secret-0123456789abcdef0123"

// reconnectBudget is how soon after the engine is back the page must be
// connected again (the figure).
const reconnectBudget = 5 * time.Second

// proxy stands between the browser and the engine, as a company's proxy
// would, and can refuse WebSocket upgrades while passing plain HTTP.
type proxy struct {
	addr    string
	blockWS atomic.Bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: freeAddr(t)}
	rp := &httputil.ReverseProxy{
		// The engine sees the page's own Host, so the page is same-origin.
		Rewrite:  func(r *httputil.ProxyRequest) { r.SetURL(u); r.Out.Host = r.In.Host },
		ErrorLog: nil,
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, _ error) {
			w.WriteHeader(http.StatusBadGateway) // the engine is down
		},
	}
	srv := &http.Server{Addr: p.addr, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.blockWS.Load() && strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			http.Error(w, "WebSockets are not allowed here", http.StatusForbidden)
			return
		}
		rp.ServeHTTP(w, r)
	})}
	ln, err := net.Listen("tcp", p.addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { _ = srv.Close() })
	return p
}

func (p *proxy) URL() string { return "http://" + p.addr }

// browser starts a headless chromium for the test.
func browser(t *testing.T) context.Context {
	t.Helper()
	exe := requireTool(t, "chromium", "chromium-browser", "google-chrome")
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.NoSandbox,
		chromedp.Flag("headless", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1400, 860),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// addAgent creates a login with `charla agents add`, as an operator does
// (before the engine starts: it holds the embedded store).
func addAgent(t *testing.T, dataDir, email, name, role, password string) {
	t.Helper()
	cmd := exec.Command(binary, "agents", "add", "--data-dir", dataDir, "--email", email, "--name", name, "--role", role)
	cmd.Stdin = strings.NewReader(password + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("charla agents add: %v\n%s", err, out)
	}
}

// run runs chromedp actions, failing the test on error.
func run(t *testing.T, ctx context.Context, timeout time.Duration, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := chromedp.Do(tctx, steps...); err != nil {
		t.Fatal(err)
	}
}

// js evaluates expr in the page.
func js[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(tctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitJS waits until expr is true in the page, and returns how long it took.
func waitJS(t *testing.T, ctx context.Context, timeout time.Duration, what, expr string) time.Duration {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(timeout); time.Now().Before(deadline); time.Sleep(25 * time.Millisecond) {
		if ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](expr)); err == nil && ok {
			return time.Since(start)
		}
	}
	page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	t.Fatalf("%s: not within %s (%s); the page shows:\n%s", what, timeout, expr, page)
	return 0
}

// shown is what the conversation view lists: each message's client_msg_id,
// seq and status, in display order.
type shown struct {
	CMID   string `json:"cmid"`
	Seq    string `json:"seq"`
	Status string `json:"status"`
	Text   string `json:"text"`
}

const shownJS = `[...document.querySelectorAll("#messages li")].map((li) => ({cmid: li.dataset.cmid, seq: li.dataset.seq, status: li.dataset.status, text: li.firstChild.textContent}))`

// checkThread fails unless the view shows seqs 1…n, each once, all confirmed.
func checkThread(t *testing.T, ctx context.Context, n int) []shown {
	t.Helper()
	got := js[[]shown](t, ctx, shownJS)
	if len(got) != n {
		t.Fatalf("the page shows %d messages, want %d: %+v", len(got), n, got)
	}
	seen := map[string]bool{}
	for i, m := range got {
		if m.Seq != fmt.Sprint(i+1) || m.Status != "confirmed" || seen[m.CMID] {
			t.Fatalf("message %d shown as %+v (want seq %d, confirmed, once): %+v", i, m, i+1, got)
		}
		seen[m.CMID] = true
	}
	return got
}

// TestPanelInBrowser drives the agent panel in Debian's chromium against the
// real engine: sign-in, a customer's message live, an optimistic reply,
// an engine restart, messages typed while it is down, and WebSockets
// blocked by a proxy.
func TestPanelInBrowser(t *testing.T) {
	ctx := browser(t)
	dataDir := t.TempDir()
	addAgent(t, dataDir, "ana@example.com", "Ana", "agent", "correct horse battery")
	addAgent(t, dataDir, "root@example.com", "Root", "admin", "correct horse battery")
	sim := startSoapsim(t)
	e := startEngine(t, dataDir, "--auth-mode", "jwt", "--jwt-secret", jwtSecret, "--soap-url", sim)
	px := startProxy(t, e.URL())
	const conv = charla.ConvID("cust-1")

	customer := func() *transporttest.Client {
		tok, err := transport.MintToken([]byte(jwtSecret), string(conv), charla.RoleCustomer, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, err := transporttest.DialURL(t, fmt.Sprintf("ws://%s/v1/ws?access_token=%s", e.Addr, tok), nil)
		if err != nil {
			t.Fatal(err)
		}
		if f := c.Next(10 * time.Second); f.Type != wire.TypeWelcome {
			t.Fatalf("customer's first frame %+v", f)
		}
		c.Subscribe(conv, 0)
		return c
	}
	customerSays := func(c *transporttest.Client, text string) {
		t.Helper()
		c.Send(transporttest.SendFrame(conv, uuid.NewString(), text, "c"))
		if f := c.NextOf(wire.TypeAck, transporttest.Wait); f.Ref != "c" {
			t.Fatalf("customer's ack %+v", f)
		}
	}
	// agentSays types a reply and sends it with Enter.
	agentSays := func(text string) {
		t.Helper()
		run(t, ctx, 10*time.Second, chromedp.SendKeys(chromedp.CSS("#composer textarea"), text+"\r"))
	}
	connected := `document.querySelector("#conn-state").dataset.state === "connected"`

	// Sign in.
	run(t, ctx, 30*time.Second,
		chromedp.Navigate(px.URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=email]`), "ana@example.com"),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=password]`), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`#login-form button`)),
		chromedp.WaitVisible(chromedp.CSS("#app")),
	)
	waitJS(t, ctx, 15*time.Second, "connected after sign-in", connected)

	// Open the customer's conversation; the customer writes; it shows live.
	run(t, ctx, 10*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#open-form [name=conv]`), string(conv)+"\r"),
		chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	cust := customer()
	customerSays(cust, "Hola, ¿tienen stock del SKU-00042?")
	waitJS(t, ctx, 10*time.Second, "the customer's message, live", `document.querySelectorAll("#messages li[data-seq='1']").length === 1`)
	// The agent has it on screen: the customer is told it was read.
	if f := cust.NextOf(wire.TypeRead, transporttest.Wait); f.Conv != conv || f.Seq != 1 {
		t.Fatalf("read frame %+v, want seq 1 of %s", f, conv)
	}
	// The customer types: the agent sees it.
	cust.Send(wire.Frame{Type: wire.TypeTyping, Conv: conv, State: "on"})
	waitJS(t, ctx, 10*time.Second, "typing shown", `document.querySelector("#typing").textContent.includes("cust-1 is typing")`)

	// An optimistic reply: pending at once, confirmed on its ack.
	js[bool](t, ctx, `(window.statuses = [], window.charla.addEventListener("message", (e) => e.detail.sender || window.statuses.push(e.detail.status)), true)`)
	agentSays("¡Hola! Lo miro ahora mismo.")
	waitJS(t, ctx, 10*time.Second, "the reply confirmed", `document.querySelectorAll("#messages li[data-status='confirmed']").length === 2`)
	if got := js[[]string](t, ctx, `window.statuses`); strings.Join(got, ",") != "pending,confirmed" {
		t.Fatalf("the reply went through %v, want pending then confirmed", got)
	}
	if f := cust.Collect(conv, 1, 1)[0]; !strings.Contains(string(f.Body), "Lo miro") {
		t.Fatalf("the customer got %s", f.Body)
	}
	checkThread(t, ctx, 2)

	// A stock lookup slower than the answer budget becomes a job; the panel
	// follows it to the item.
	simFaults(t, sim, `{"latency_ms":1500}`)
	js[bool](t, ctx, `(window.jobStates = [], window.charla.addEventListener("job", (e) => window.jobStates.push(e.detail.state)), true)`)
	run(t, ctx, 10*time.Second, chromedp.SendKeys(chromedp.CSS(`#stock-form [name=sku]`), "SKU-00042\r"))
	waitJS(t, ctx, 20*time.Second, "the job done", `document.querySelector("#stock-result .job[data-state=done] dl.item") !== null`)
	if states := js[[]string](t, ctx, `window.jobStates`); len(states) < 2 || states[len(states)-1] != wire.JobDone {
		t.Fatalf("job frames %v, want queued… done", states)
	}
	simFaults(t, sim, `{}`)

	// A workflow action: done, or said to be unavailable on an engine
	// without the workflow — never silently dropped.
	run(t, ctx, 5*time.Second, chromedp.Click(chromedp.CSS(`[data-action=resolve]`)))
	waitJS(t, ctx, 10*time.Second, "resolve answered", `document.querySelector("#conv-status").textContent === "resolved" || document.querySelector("#action-note").textContent.includes("not available on this engine yet")`)

	// The engine restarts; the page is back within the budget, nothing lost or doubled.
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	down := time.Now()
	waitJS(t, ctx, 10*time.Second, "the page notices", `document.querySelector("#conn-state").dataset.state !== "connected"`)
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}

	reconnect := waitJS(t, ctx, 15*time.Second, "reconnected", connected)
	t.Logf("FIGURE reconnect: page connected %s after the engine was back (%s after it went down)", reconnect.Round(time.Millisecond), time.Since(down).Round(time.Millisecond))
	if reconnect > reconnectBudget {
		t.Errorf("the page reconnected %s after the engine was back, want within %s", reconnect, reconnectBudget)
	}
	cust = customer()
	cust.Collect(conv, 0, 2)
	customerSays(cust, "¿Y el precio?")
	waitJS(t, ctx, 10*time.Second, "a message after the restart", `document.querySelectorAll("#messages li[data-seq='3']").length === 1`)
	checkThread(t, ctx, 3)

	// Messages typed while the engine is down go out once when it is back,
	// even when the tab was closed meanwhile (the outbox is in IndexedDB).
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 10*time.Second, "the page notices", `document.querySelector("#conn-state").dataset.state !== "connected"`)
	agentSays("Escrito sin conexión (1)")
	agentSays("Escrito sin conexión (2)")
	waitJS(t, ctx, 5*time.Second, "both pending", `document.querySelectorAll("#messages li[data-status='pending']").length === 2`)
	run(t, ctx, 10*time.Second, chromedp.Navigate("about:blank"))
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, 15*time.Second, chromedp.Navigate(px.URL()+"/"), chromedp.WaitVisible(chromedp.CSS("#app")))
	waitJS(t, ctx, 15*time.Second, "connected after the reload", connected)
	run(t, ctx, 10*time.Second, chromedp.Click(chromedp.CSS(`#conv-list li[data-conv="cust-1"]`)), chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	waitJS(t, ctx, 15*time.Second, "both confirmed", `document.querySelectorAll("#messages li[data-status='confirmed']").length === 5`)
	cust = customer()
	got := cust.Collect(conv, 0, 5)
	cust.NoFrame(wire.TypeMsg, 500*time.Millisecond)
	if !strings.Contains(string(got[3].Body), "(1)") || !strings.Contains(string(got[4].Body), "(2)") {
		t.Fatalf("after the outage the customer has %s, %s", got[3].Body, got[4].Body)
	}
	checkThread(t, ctx, 5)

	// WebSockets blocked by the proxy: the page falls back to polling and keeps working.
	px.blockWS.Store(true)
	if err := e.Stop(); err != nil { // drops the page's WebSocket; it must come back without one
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, "polling", `document.querySelector("#conn-state").dataset.state === "polling"`)
	cust = customer()
	cust.Collect(conv, 0, 5)
	customerSays(cust, "¿Siguen ahí?")
	waitJS(t, ctx, 10*time.Second, "a message by polling", `document.querySelectorAll("#messages li[data-seq='6']").length === 1`)
	agentSays("Sí, por long-polling.")
	waitJS(t, ctx, 10*time.Second, "a reply by polling", `document.querySelectorAll("#messages li[data-status='confirmed']").length === 7`)
	if f := cust.Collect(conv, 5, 2)[1]; !strings.Contains(string(f.Body), "long-polling") {
		t.Fatalf("the customer got %s", f.Body)
	}
	checkThread(t, ctx, 7)
	// And back to a WebSocket once the proxy lets them through.
	px.blockWS.Store(false)
	waitJS(t, ctx, 30*time.Second, "back on a WebSocket", `(s => s.dataset.state === "connected" && s.dataset.transport === "websocket")(document.querySelector("#conn-state"))`)
	checkThread(t, ctx, 7)
	screenshot(t, ctx, "panel.png")

	// The dashboard, as an admin.
	js[bool](t, ctx, `(localStorage.clear(), true)`)
	run(t, ctx, 10*time.Second, chromedp.Navigate(px.URL()+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=email]`), "root@example.com"),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=password]`), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`#login-form button`)),
		chromedp.WaitVisible(chromedp.CSS("#app")),
		chromedp.Navigate(px.URL()+"/dashboard"),
		chromedp.WaitVisible(chromedp.CSS("#board")))
	waitJS(t, ctx, 15*time.Second, "plotted", `document.querySelector("[data-chart=connections] .now").textContent !== "—" && document.querySelector("[data-chart=connections] .now").textContent !== ""`)
	waitJS(t, ctx, 10*time.Second, "the store breaker", `document.querySelector("#breaker-rows [data-dependency=store]") !== null`)
	// Some traffic to plot: a message every 200 ms for 5 s.
	for i := range 25 {
		customerSays(cust, fmt.Sprintf("mensaje %d", i))
		time.Sleep(200 * time.Millisecond)
	}
	// From /metrics (an engine with them), the message rate and the
	// send→ack latency are plotted too; from /readyz, connections alone.
	waitJS(t, ctx, 10*time.Second, "the message rate plotted", `document.querySelector("#source").textContent !== "from /metrics" || !document.querySelector("[data-chart=messages]").hidden && !document.querySelector("[data-chart=ack]").hidden`)
	screenshot(t, ctx, "dashboard.png")
}

// startSoapsim runs the inventory simulator and returns its URL.
func startSoapsim(t *testing.T) string {
	t.Helper()
	addr := freeAddr(t)
	cmd := exec.Command(binary, "soapsim", "--addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if r, err := http.Get("http://" + addr + "/admin/faults"); err == nil {
			r.Body.Close()
			return "http://" + addr
		}
	}
	t.Fatal("soapsim did not answer")
	return ""
}

// simFaults sets the simulator's faults.
func simFaults(t *testing.T, sim, faults string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, sim+"/admin/faults", strings.NewReader(faults))
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusOK && r.StatusCode != http.StatusNoContent {
		t.Fatalf("soapsim faults %s: HTTP %d", faults, r.StatusCode)
	}
}

// screenshot saves the page under $CHARLA_SCREENSHOTS (the README's
// docs/screenshots when run as it says), else in the test's directory.
func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	dir := os.Getenv("CHARLA_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	png, err := chromedp.Run(tctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
