package web_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
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

// click clicks what sel selects as soon as it is shown. The lookup and the
// click are one evaluation because the panel re-renders its lists as frames
// arrive: a node chromedp found a moment before may be gone by the time it
// clicks ("Could not find node with given id").
func click(t *testing.T, ctx context.Context, timeout time.Duration, sel string) {
	t.Helper()
	waitJS(t, ctx, timeout, "click "+sel, fmt.Sprintf(`(el => el !== null && el.checkVisibility() && (el.click(), true))(document.querySelector(%q))`, sel))
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
	cust := &customerSide{t: t, addr: e.Addr, conv: conv}
	// agentSays types a reply and sends it with Enter.
	agentSays := func(text string) {
		t.Helper()
		run(t, ctx, 10*time.Second, chromedp.SendKeys(chromedp.CSS("#composer textarea"), text+"\r"))
	}
	// shows is true in the page once text is shown with that status.
	shows := func(text, status string) string {
		return fmt.Sprintf(`[...document.querySelectorAll("#messages li")].some((li) => li.firstChild.textContent === %q && li.dataset.status === %q)`, text, status)
	}
	// inSync waits until the page shows everything the customer has seen,
	// then checks it shows each seq once, in order, confirmed.
	inSync := func() {
		t.Helper()
		waitJS(t, ctx, 15*time.Second, "the page has every message", fmt.Sprintf(`document.querySelectorAll("#messages li[data-seq='%d']").length === 1`, cust.last))
		checkThread(t, ctx, int(cust.last))
	}
	connected := `document.querySelector("#conn-state").dataset.state === "connected"`
	// act clicks a workflow action: done, or said to be unavailable on an
	// engine without the workflow — never silently dropped.
	act := func(action, done string) {
		t.Helper()
		click(t, ctx, 5*time.Second, `[data-action=`+action+`]`)
		waitJS(t, ctx, 10*time.Second, action+" answered", done+` || document.querySelector("#action-note").textContent.includes("not available on this engine yet")`)
	}

	signIn(t, ctx, px.URL(), "ana@example.com")

	// Open the customer's conversation; the customer writes; it shows live.
	run(t, ctx, 10*time.Second,
		chromedp.SendKeys(chromedp.CSS(`#open-form [name=conv]`), string(conv)+"\r"),
		chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	cust.connect()
	first := "Hola, ¿tienen stock del SKU-00042?"
	cust.says(first)
	waitJS(t, ctx, 10*time.Second, "the customer's message, live", shows(first, "confirmed"))
	// The agent has it on screen: the customer is told it was read.
	cust.until("a read receipt", func(f wire.Frame) bool { return f.Type == wire.TypeRead && f.Seq >= 1 })
	// The customer types: the agent sees it.
	cust.c.Send(wire.Frame{Type: wire.TypeTyping, Conv: conv, State: "on"})
	waitJS(t, ctx, 10*time.Second, "typing shown", `document.querySelector("#typing").textContent.includes("cust-1 is typing")`)
	// The agent takes the conversation from the chatbot.
	act("take", `document.querySelector("#conv-assignee").textContent.startsWith("assigned to")`)

	// An optimistic reply: pending at once, confirmed on its ack.
	js[bool](t, ctx, `(window.statuses = [], window.charla.addEventListener("message", (e) => e.detail.sender || window.statuses.push(e.detail.status)), true)`)
	reply := "¡Hola! Lo miro ahora mismo."
	agentSays(reply)
	waitJS(t, ctx, 10*time.Second, "the reply confirmed", shows(reply, "confirmed"))
	if got := js[[]string](t, ctx, `window.statuses`); strings.Join(got, ",") != "pending,confirmed" {
		t.Fatalf("the reply went through %v, want pending then confirmed", got)
	}
	cust.waitText(reply)
	inSync()

	// A stock lookup slower than the answer budget becomes a job; the panel
	// follows it to the item.
	simFaults(t, sim, `{"latency_ms":1500}`)
	js[bool](t, ctx, `(window.jobStates = [], window.charla.addEventListener("job", (e) => window.jobStates.push(e.detail.state)), true)`)
	run(t, ctx, 10*time.Second, chromedp.SendKeys(chromedp.CSS(`#stock-form [name=sku]`), "SKU-00077\r"))
	waitJS(t, ctx, 20*time.Second, "the job done", `document.querySelector("#stock-result .job[data-state=done] dl.item") !== null`)
	if states := js[[]string](t, ctx, `window.jobStates`); len(states) < 2 || states[len(states)-1] != wire.JobDone {
		t.Fatalf("job frames %v, want queued… done", states)
	}
	simFaults(t, sim, `{}`)

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
	cust.connect()
	cust.says("¿Y el precio?")
	inSync()

	// Messages typed while the engine is down go out once when it is back,
	// even when the tab was closed meanwhile (the outbox is in IndexedDB).
	if err := e.Stop(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 10*time.Second, "the page notices", `document.querySelector("#conn-state").dataset.state !== "connected"`)
	offline := []string{"Escrito sin conexión (1)", "Escrito sin conexión (2)"}
	for _, text := range offline {
		agentSays(text)
		waitJS(t, ctx, 5*time.Second, "pending", shows(text, "pending"))
	}
	run(t, ctx, 10*time.Second, chromedp.Navigate("about:blank"))
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	run(t, ctx, 15*time.Second, chromedp.Navigate(px.URL()+"/"), chromedp.WaitVisible(chromedp.CSS("#app")))
	waitJS(t, ctx, 15*time.Second, "connected after the reload", connected)
	click(t, ctx, 10*time.Second, `#conv-list li[data-conv="cust-1"]`)
	run(t, ctx, 10*time.Second, chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	cust.connect()
	for _, text := range offline {
		waitJS(t, ctx, 15*time.Second, "confirmed after the outage", shows(text, "confirmed"))
		cust.waitText(text)
	}
	inSync()

	// WebSockets blocked by the proxy: the page falls back to polling and keeps working.
	px.blockWS.Store(true)
	if err := e.Stop(); err != nil { // drops the page's WebSocket; it must come back without one
		t.Fatal(err)
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	waitJS(t, ctx, 30*time.Second, "polling", `document.querySelector("#conn-state").dataset.state === "polling"`)
	cust.connect()
	cust.says("¿Siguen ahí?")
	waitJS(t, ctx, 10*time.Second, "a message by polling", shows("¿Siguen ahí?", "confirmed"))
	agentSays("Sí, por long-polling.")
	waitJS(t, ctx, 10*time.Second, "a reply by polling", shows("Sí, por long-polling.", "confirmed"))
	cust.waitText("Sí, por long-polling.")
	inSync()
	// And back to a WebSocket once the proxy lets them through.
	px.blockWS.Store(false)
	waitJS(t, ctx, 30*time.Second, "back on a WebSocket", `(s => s.dataset.state === "connected" && s.dataset.transport === "websocket")(document.querySelector("#conn-state"))`)
	act("resolve", `document.querySelector("#conv-status").textContent === "resolved"`)
	inSync()
	// An admin assigns the conversation to themself: Ana's panel names the
	// assignee (GET /v1/agents) instead of showing a user id.
	token, rootID := login(t, e.URL(), "root@example.com")
	if st, b := post(t, e.URL()+"/v1/conversations/"+string(conv)+"/assign", token, map[string]string{"assignee": rootID}); st != http.StatusOK {
		t.Fatalf("assign: %d %s", st, b)
	}
	waitJS(t, ctx, 10*time.Second, "the assignee by name", `document.querySelector("#conv-assignee").textContent === "assigned to Root"`)
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
		cust.says(fmt.Sprintf("mensaje %d", i))
		time.Sleep(200 * time.Millisecond)
	}
	// From /metrics (an engine with them), the message rate and the
	// send→ack latency are plotted too; from /readyz, connections alone.
	waitJS(t, ctx, 10*time.Second, "the message rate plotted", `document.querySelector("#source").textContent !== "from /metrics" || !document.querySelector("[data-chart=messages]").hidden && !document.querySelector("[data-chart=ack]").hidden`)
	// An engine with alert rules: the SOAP breaker opening reaches the
	// dashboard as an alert (an engine without them is told apart by its
	// answer to GET /v1/admin/alerts).
	admin, err := transport.MintToken([]byte(jwtSecret), "root", charla.RoleAdmin, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if r, _ := get(t, e.URL()+"/v1/admin/alerts", admin); r == http.StatusOK {
		simFaults(t, sim, `{"http_500":1}`)
		for i := range 3 { // each lookup is retried: a few open the breaker
			cust.c.Send(wire.Frame{Type: wire.TypeInventory, SKU: fmt.Sprintf("SKU-%05d", 200+i), Ref: "inv"})
		}
		waitJS(t, ctx, 60*time.Second, "the SOAP breaker's alert", `document.querySelector("#alert-list li[data-rule=soap_breaker_open]") !== null`)
		simFaults(t, sim, `{}`)
	} else {
		t.Logf("no alerts on this engine (GET /v1/admin/alerts: %d): the alert list is not exercised", r)
	}
	screenshot(t, ctx, "dashboard.png")
}

// signIn signs an agent in on the panel at base and waits until it is connected.
func signIn(t *testing.T, ctx context.Context, base, email string) {
	t.Helper()
	run(t, ctx, 30*time.Second,
		chromedp.Navigate(base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#login-form")),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=email]`), email),
		chromedp.SendKeys(chromedp.CSS(`#login-form [name=password]`), "correct horse battery"),
		chromedp.Click(chromedp.CSS(`#login-form button`)),
		chromedp.WaitVisible(chromedp.CSS("#app")),
	)
	waitJS(t, ctx, 15*time.Second, "connected after sign-in", `document.querySelector("#conn-state").dataset.state === "connected"`)
}

// login signs email in over REST and returns its access token and user id.
func login(t *testing.T, base, email string) (token, userID string) {
	t.Helper()
	st, b := post(t, base+"/v1/auth/login", "", map[string]string{"email": email, "password": "correct horse battery"})
	var tr struct {
		AccessToken string `json:"access_token"`
		User        struct {
			ID string `json:"id"`
		} `json:"user"`
	}
	if st != http.StatusOK || json.Unmarshal(b, &tr) != nil || tr.AccessToken == "" {
		t.Fatalf("login %s: %d %s", email, st, b)
	}
	return tr.AccessToken, tr.User.ID
}

// post answers the status and body of a JSON POST (authenticated when
// token is set).
func post(t *testing.T, url, token string, body any) (int, []byte) {
	t.Helper()
	raw, _ := json.Marshal(body)
	return request(t, http.MethodPost, url, token, bytes.NewReader(raw))
}

// get answers the status and body of an authenticated GET.
func get(t *testing.T, url, token string) (int, []byte) {
	t.Helper()
	return request(t, http.MethodGet, url, token, nil)
}

func request(t *testing.T, method, url, token string, body io.Reader) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return r.StatusCode, b
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

// customerSide is the customer of the test's conversation, over WebSocket
// with a JWT. Across its connections it checks what it receives: every seq
// once, in order, from where its last connection left off.
type customerSide struct {
	t    *testing.T
	addr string
	conv charla.ConvID
	c    *transporttest.Client
	last charla.Seq
}

// connect (again) and resubscribe from the last seq seen.
func (cs *customerSide) connect() {
	cs.t.Helper()
	tok, err := transport.MintToken([]byte(jwtSecret), string(cs.conv), charla.RoleCustomer, time.Hour)
	if err != nil {
		cs.t.Fatal(err)
	}
	c, err := transporttest.DialURL(cs.t, fmt.Sprintf("ws://%s/v1/ws?access_token=%s", cs.addr, tok), nil)
	if err != nil {
		cs.t.Fatal(err)
	}
	if f := c.Next(10 * time.Second); f.Type != wire.TypeWelcome {
		cs.t.Fatalf("customer's first frame %+v", f)
	}
	cs.c = c
	if f := c.Subscribe(cs.conv, cs.last); f.Since != cs.last {
		cs.t.Fatalf("subscribed from %d, want %d", f.Since, cs.last)
	}
}

// until reads frames until pred holds, checking each msg's seq.
func (cs *customerSide) until(what string, pred func(wire.Frame) bool) wire.Frame {
	cs.t.Helper()
	deadline := time.Now().Add(transporttest.Wait)
	for {
		select {
		case f := <-cs.c.Frames():
			if f.Type == wire.TypeMsg && f.Conv == cs.conv {
				if f.Seq != cs.last+1 {
					cs.t.Fatalf("customer got seq %d after %d (gap, duplicate or reorder)", f.Seq, cs.last)
				}
				cs.last = f.Seq
			}
			if pred(f) {
				return f
			}
		case <-time.After(time.Until(deadline)):
			cs.t.Fatalf("customer: no %s within %s", what, transporttest.Wait)
		}
	}
}

// says sends text and waits for its ack and for its msg (in either order).
func (cs *customerSide) says(text string) {
	cs.t.Helper()
	id := uuid.NewString()
	cs.c.Send(transporttest.SendFrame(cs.conv, id, text, id))
	var acked, delivered bool
	cs.until("ack and msg", func(f wire.Frame) bool {
		if f.Type == wire.TypeError && f.Ref == id {
			cs.t.Fatalf("customer's send answered %+v", f)
		}
		acked = acked || (f.Type == wire.TypeAck && f.Ref == id)
		delivered = delivered || (f.Type == wire.TypeMsg && f.ClientMsgID == id)
		return acked && delivered
	})
}

// waitText waits for the message whose text is text.
func (cs *customerSide) waitText(text string) {
	cs.t.Helper()
	cs.until(text, func(f wire.Frame) bool {
		var body struct{ Text string }
		return f.Type == wire.TypeMsg && json.Unmarshal(f.Body, &body) == nil && body.Text == text
	})
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
