package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/store/spool"
	"charla/transport/transporttest"
	"charla/wire"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m, transporttest.LeakOptions()...)) }

// proxy is an in-process TCP proxy in front of PostgreSQL that a test can
// blackhole (connections hang) or stop (connections reset and refused).
type proxy struct {
	p *toxiproxy.Proxy
}

func newProxy(t *testing.T, dbURL string) (*proxy, string) {
	t.Helper()
	p, u := pgtest.Proxy(t, dbURL)
	return &proxy{p}, u
}

func (x *proxy) blackhole(t *testing.T) {
	_, err := x.p.Toxics.AddToxicJson(strings.NewReader(`{"name":"blackhole","type":"timeout","stream":"downstream","toxicity":1,"attributes":{"timeout":0}}`))
	if err != nil {
		t.Fatal(err)
	}
}

func (x *proxy) heal(t *testing.T) {
	x.p.Toxics.ResetToxics(context.Background())
	if err := x.p.Start(); err != nil && !strings.Contains(err.Error(), "already") {
		t.Fatalf("restart proxy: %v", err)
	}
}

// engineOverPG runs an in-process engine on PostgreSQL (at dbURL) with the
// outage spool, tuned to notice an outage fast.
func engineOverPG(t *testing.T, dbURL string, opts ...transporttest.Option) *transporttest.Engine {
	open := func(tb testing.TB) store.Store {
		o := postgres.DefaultOptions()
		o.URL, o.AutoMigrate, o.Lazy = dbURL, false, true
		o.MaxConns, o.MinConns = 8, 0
		o.QueryTimeout, o.ConnectTimeout = 2*time.Second, 500*time.Millisecond
		o.RetryAttempts, o.RetryBaseDelay, o.RetryMaxDelay = 2, 10*time.Millisecond, 50*time.Millisecond
		st, err := postgres.Open(context.Background(), o, zerolog.Nop())
		if err != nil {
			tb.Fatalf("open postgres: %v", err)
		}
		return st
	}
	base := []transporttest.Option{
		transporttest.WithStore(open),
		transporttest.WithSpool(),
		transporttest.WithActors(func(c *actors.Config) {
			c.StoreWriteTimeout = 300 * time.Millisecond
			c.StoreBreaker.Failures = 2
			c.StoreBreaker.Cooldown = 500 * time.Millisecond
		}),
	}
	e := transporttest.Start(t, append(base, opts...)...)
	// Warm the pool: on a loaded machine the first connection through the
	// proxy can take longer than the short write timeout above, and a
	// conversation first touched then would be refused as if the database
	// were down.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Store().Head(ctx, "warm-up"); err != nil {
		t.Fatalf("warm up the pool: %v", err)
	}
	return e
}

func migrated(t *testing.T) string {
	t.Helper()
	u := pgtest.SchemaURL(t)
	if _, err := postgres.MigrateURL(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	return u
}

// load sends from several clients into several conversations until stopped,
// each client resending the same client_msg_id after an error, as clients
// must; it records every ack.
type load struct {
	mu    sync.Mutex
	acked map[charla.ConvID]map[charla.Seq]string
	errs  int
	stop  chan struct{}
	done  sync.WaitGroup
}

func startLoad(t *testing.T, e *transporttest.Engine, convs []charla.ConvID, senders int, every time.Duration) *load {
	l := &load{acked: map[charla.ConvID]map[charla.Seq]string{}, stop: make(chan struct{})}
	for _, c := range convs {
		l.acked[c] = map[charla.Seq]string{}
	}
	for s := range senders {
		c := e.Dial(t, fmt.Sprintf("sender%d", s), charla.RoleAgent)
		l.done.Add(1)
		go func() {
			defer l.done.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				case <-tick.C:
				}
				conv := convs[(s+i)%len(convs)]
				cmid := uuid.NewString()
				for attempt := 0; ; attempt++ {
					c.Send(wire.Frame{Type: wire.TypeSend, Ref: cmid, Conv: conv, ClientMsgID: cmid, Body: json.RawMessage(`{"text":"x"}`)})
					f, ok := replyTo(c, cmid)
					if !ok {
						return
					}
					if f.Type == wire.TypeAck {
						l.mu.Lock()
						if prev, dup := l.acked[conv][f.Seq]; dup && prev != cmid {
							t.Errorf("seq %d of %s acked for %s and %s", f.Seq, conv, prev, cmid)
						}
						l.acked[conv][f.Seq] = cmid
						l.mu.Unlock()
						break
					}
					l.mu.Lock()
					l.errs++
					l.mu.Unlock()
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	return l
}

func replyTo(c *transporttest.Client, ref string) (wire.Frame, bool) {
	timeout := time.After(20 * time.Second)
	for {
		select {
		case f := <-c.Frames():
			if f.Ref == ref && (f.Type == wire.TypeAck || f.Type == wire.TypeError) {
				return f, true
			}
		case <-timeout:
			return wire.Frame{}, false
		}
	}
}

func (l *load) finish() {
	close(l.stop)
	l.done.Wait()
}

// watcher is a subscriber that checks exactly-once, in-order delivery and
// records when each message arrived.
type watcher struct {
	mu       sync.Mutex
	next     charla.Seq
	arrivals []time.Time
	err      error
}

func watch(t *testing.T, e *transporttest.Engine, conv charla.ConvID) *watcher {
	c := e.Dial(t, "watch-"+string(conv), charla.RoleAgent)
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Ref: "sub"})
	w := &watcher{next: 1}
	go func() {
		for {
			select {
			case f := <-c.Frames():
				if f.Type == wire.TypeError && f.Ref == "sub" {
					// The conversation could not load in time (a busy
					// machine, a slow first connection): subscribe again
					// from where we are, as a client does.
					w.mu.Lock()
					since := w.next - 1
					w.mu.Unlock()
					time.Sleep(100 * time.Millisecond)
					c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Ref: "sub", Since: since})
					continue
				}
				if f.Type != wire.TypeMsg {
					continue
				}
				w.mu.Lock()
				if f.Seq != w.next && w.err == nil {
					w.err = fmt.Errorf("%s: got seq %d, want %d", conv, f.Seq, w.next)
				}
				w.next = f.Seq + 1
				w.arrivals = append(w.arrivals, time.Now())
				w.mu.Unlock()
			case <-c.Done():
				return
			}
		}
	}()
	return w
}

// storedLog reads a conversation's log straight from PostgreSQL.
func storedLog(t *testing.T, dbURL string, conv charla.ConvID) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT seq, client_msg_id FROM messages WHERE conversation_id = $1 ORDER BY seq`, string(conv))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for rows.Next() {
		var seq int64
		var id string
		if err := rows.Scan(&seq, &id); err != nil {
			t.Fatal(err)
		}
		if seq != int64(len(ids)+1) {
			t.Fatalf("%s: stored seq %d at position %d: a gap or a duplicate", conv, seq, len(ids)+1)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return ids
}

func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return time.Since(start)
}

// waitDrained waits until every message spooled so far — each one acked
// (the spooled count is raised before the acks go out) — is in the store.
func waitDrained(t *testing.T, e *transporttest.Engine, what string) {
	t.Helper()
	st := e.Sys.Stats()
	waitFor(t, what, 30*time.Second, func() bool { return st.SpoolDepth.Load() == 0 && st.Drained.Load() >= st.Spooled.Load() })
}

// TestDatabaseOutageUnderLoad cuts PostgreSQL off for 20 s while several
// clients send into several conversations: first by blackholing the
// connections (they hang), then by refusing them. Chat goes on from the
// spool; when the database is back the spool drains, and PostgreSQL ends up
// with every acked message exactly once, in seq order, without a gap.
func TestDatabaseOutageUnderLoad(t *testing.T) {
	dbURL := migrated(t)
	px, proxied := newProxy(t, dbURL)
	e := engineOverPG(t, proxied)
	convs := []charla.ConvID{"o1", "o2", "o3", "o4"}
	var ws []*watcher
	for _, c := range convs {
		ws = append(ws, watch(t, e, c))
	}
	l := startLoad(t, e, convs, 4, 10*time.Millisecond) // up to 400 msg/s
	start := time.Now()
	time.Sleep(3 * time.Second)

	cut := time.Now()
	px.blackhole(t)
	time.Sleep(10 * time.Second)
	px.p.Stop() // now refused, and the hanging connections reset
	time.Sleep(10 * time.Second)
	spooledDuringOutage := e.Sys.Stats().Spooled.Load()
	maxDepth := e.Sys.Stats().SpoolDepth.Load()
	back := time.Now()
	px.heal(t)
	drain := waitFor(t, "spool empty", 30*time.Second, func() bool { return e.Sys.Stats().SpoolDepth.Load() == 0 })
	spooledBefore := e.Sys.Stats().Spooled.Load()
	time.Sleep(2 * time.Second) // traffic straight to the database again
	l.finish()
	end := time.Now()
	// On a loaded machine a write may still outlast the store's 300 ms
	// write timeout and go to the spool: what PostgreSQL holds is read once
	// that is drained too.
	waitDrained(t, e, "spool empty after the load")
	if n := e.Sys.Stats().Spooled.Load() - spooledBefore; n > 0 {
		t.Logf("%d messages spooled after the database returned (slow writes)", n)
	}

	st := e.Sys.Stats()
	t.Logf("outage %s; spooled during it %d (depth %d at its end); drained in %s after the database returned; breaker trips %d; send errors %d (resent)",
		back.Sub(cut).Round(time.Millisecond), spooledDuringOutage, maxDepth, drain.Round(time.Millisecond), st.BreakerTrips.Load(), l.errs)
	if spooledDuringOutage == 0 || st.BreakerTrips.Load() == 0 {
		t.Fatalf("the outage was not noticed: spooled %d, trips %d", spooledDuringOutage, st.BreakerTrips.Load())
	}
	if st.Drained.Load() < spooledDuringOutage {
		t.Fatalf("drained %d < spooled %d", st.Drained.Load(), spooledDuringOutage)
	}

	// Live delivery never stopped: every 2-second slice of the run saw
	// messages delivered (the first writes after the cut wait for the
	// store's write timeout before they are spooled).
	for i, w := range ws {
		w.mu.Lock()
		if w.err != nil {
			t.Fatal(w.err)
		}
		for s := start; s.Add(2 * time.Second).Before(end); s = s.Add(2 * time.Second) {
			n := 0
			for _, a := range w.arrivals {
				if !a.Before(s) && a.Before(s.Add(2*time.Second)) {
					n++
				}
			}
			if n == 0 {
				t.Errorf("%s: no delivery between %s and %s after the start", convs[i], s.Sub(start), s.Sub(start)+2*time.Second)
			}
		}
		w.mu.Unlock()
	}

	total := 0
	for _, conv := range convs {
		stored := storedLog(t, dbURL, conv)
		acked := l.acked[conv]
		if len(stored) != len(acked) {
			t.Fatalf("%s: %d stored, %d acked", conv, len(stored), len(acked))
		}
		for seq, id := range acked {
			if stored[seq-1] != id {
				t.Fatalf("%s seq %d: stored %s, acked %s", conv, seq, stored[seq-1], id)
			}
		}
		total += len(stored)
	}
	t.Logf("%d messages acked and stored exactly once", total)
}

// TestRealServerStop does the same with the real server stopped (immediate
// mode) and started again. It stops the machine's PostgreSQL, so it runs
// only when CHARLA_TEST_PG_STOP=1 (set by .ci/run, which runs it alone).
func TestRealServerStop(t *testing.T) {
	if os.Getenv("CHARLA_TEST_PG_STOP") != "1" {
		t.Skip("stops the machine's PostgreSQL: set CHARLA_TEST_PG_STOP=1 (CI does, running this test alone)")
	}
	version := strings.TrimSpace(run(t, "ls", "/etc/postgresql"))
	dbURL := migrated(t)
	e := engineOverPG(t, dbURL)
	convs := []charla.ConvID{"r1", "r2"}
	l := startLoad(t, e, convs, 2, 10*time.Millisecond)
	time.Sleep(2 * time.Second)
	run(t, "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "stop", "-m", "immediate")
	restarted := false
	defer func() {
		if !restarted {
			run(t, "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")
		}
	}()
	time.Sleep(10 * time.Second)
	run(t, "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start")
	restarted = true
	waitFor(t, "spool empty", 30*time.Second, func() bool { return e.Sys.Stats().SpoolDepth.Load() == 0 })
	l.finish()
	waitDrained(t, e, "spool empty after the load")
	if e.Sys.Stats().Spooled.Load() == 0 {
		t.Fatal("nothing was spooled while the server was down")
	}
	for _, conv := range convs {
		stored := storedLog(t, dbURL, conv)
		if len(stored) != len(l.acked[conv]) {
			t.Fatalf("%s: %d stored, %d acked", conv, len(stored), len(l.acked[conv]))
		}
		for seq, id := range l.acked[conv] {
			if stored[seq-1] != id {
				t.Fatalf("%s seq %d: stored %s, acked %s", conv, seq, stored[seq-1], id)
			}
		}
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// TestStoreRefusesOneMessage: a message the database refuses (a constraint
// here) fails at once with a clear error and no retry or spooling, and the
// other messages of the same group commit are stored.
func TestStoreRefusesOneMessage(t *testing.T) {
	dbURL := migrated(t)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `ALTER TABLE messages ADD CONSTRAINT no_forbidden CHECK (body->>'text' <> 'forbidden')`); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	e := engineOverPG(t, dbURL)
	c := e.Dial(t, "a", charla.RoleAgent)
	texts := []string{"one", "two", "forbidden", "three", "four"}
	start := time.Now()
	for i, text := range texts {
		c.Send(wire.Frame{Type: wire.TypeSend, Ref: fmt.Sprint(i), Conv: "refuse", ClientMsgID: uuid.NewString(), Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text))})
	}
	var seqs []charla.Seq
	for range texts {
		f := c.Next(10 * time.Second)
		switch {
		case f.Ref == "2":
			if f.Type != wire.TypeError || f.Code != charla.CodeBadRequest {
				t.Fatalf("refused message got %+v, want a bad_request error", f)
			}
		case f.Type == wire.TypeAck:
			seqs = append(seqs, f.Seq)
		default:
			t.Fatalf("unexpected %+v", f)
		}
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("answers took %s: the refusal was retried", took)
	}
	if len(seqs) != 4 || e.Sys.Stats().Spooled.Load() != 0 || e.Sys.Stats().BreakerTrips.Load() != 0 {
		t.Fatalf("acks %v, spooled %d, trips %d: want 4 acks, nothing spooled, breaker closed", seqs, e.Sys.Stats().Spooled.Load(), e.Sys.Stats().BreakerTrips.Load())
	}
	if stored := storedLog(t, dbURL, "refuse"); len(stored) != 4 {
		t.Fatalf("%d stored, want 4 with seqs 1..4", len(stored))
	}
}

// TestHistoryDuringOutage: a replay that needs history the engine does not
// hold while the database is down is told so (unavailable), and gets the
// whole history, in order and once, when the database is back.
func TestHistoryDuringOutage(t *testing.T) {
	px, proxied := newProxy(t, migrated(t))
	e := engineOverPG(t, proxied, transporttest.WithActors(func(c *actors.Config) {
		c.RecentWindow, c.DedupWindow = 4, 4
		c.StoreWriteTimeout = 300 * time.Millisecond
		c.StoreBreaker.Failures = 2
		c.StoreBreaker.Cooldown = 500 * time.Millisecond
	}))
	c := e.Dial(t, "a", charla.RoleAgent)
	send := func(n int) {
		for range n {
			cmid := uuid.NewString()
			c.Send(wire.Frame{Type: wire.TypeSend, Ref: cmid, Conv: "hist", ClientMsgID: cmid, Body: json.RawMessage(`{"text":"h"}`)})
			if f, ok := replyTo(c, cmid); !ok || f.Type != wire.TypeAck {
				t.Fatalf("send: %+v", f)
			}
		}
	}
	send(20)
	px.p.Stop()
	send(5)
	if n := e.Sys.Stats().Spooled.Load(); n != 5 {
		t.Fatalf("%d messages spooled, want 5", n)
	}
	r := e.Dial(t, "reader", charla.RoleAgent)
	r.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "hist", Ref: "s"})
	if f := r.Next(10 * time.Second); f.Type != wire.TypeSubscribed || f.Head != 25 {
		t.Fatalf("subscribe during the outage: %+v", f)
	}
	if f := r.Next(10 * time.Second); f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
		t.Fatalf("want an unavailable notice for the missing history, got %+v", f)
	}
	time.Sleep(time.Second) // the reader retries, still in vain
	px.heal(t)
	for seq := charla.Seq(1); seq <= 25; seq++ {
		f := r.Next(15 * time.Second)
		if f.Type != wire.TypeMsg || f.Seq != seq {
			t.Fatalf("after the outage: %+v, want msg seq %d", f, seq)
		}
	}
}

// TestReadyzDuringOutage: /readyz stays 200 while the database is down, and
// says the engine is degraded, with the breaker's state and the spool depth.
func TestReadyzDuringOutage(t *testing.T) {
	px, proxied := newProxy(t, migrated(t))
	e := engineOverPG(t, proxied)
	ready := func() map[string]any { return readyz(t, e) }
	if r := ready(); r["status"] != "ready" || r["store"] != "closed" {
		t.Fatalf("healthy: %v", r)
	}
	c := e.Dial(t, "a", charla.RoleAgent)
	send := func(i int) wire.Frame {
		cmid := uuid.NewString()
		c.Send(wire.Frame{Type: wire.TypeSend, Ref: cmid, Conv: "rz", ClientMsgID: cmid, Body: json.RawMessage(`{"text":"x"}`)})
		f, _ := replyTo(c, cmid)
		return f
	}
	if f := send(0); f.Type != wire.TypeAck { // loaded before the outage: it can go on without the database
		t.Fatalf("before: %+v", f)
	}
	px.p.Stop()
	for i := range 5 {
		if f := send(i); f.Type != wire.TypeAck {
			t.Fatalf("send %d: %+v", i, f)
		}
	}
	if r := ready(); r["status"] != "degraded" || r["spool_depth"].(float64) == 0 {
		t.Fatalf("during the outage: %v", r)
	}
	px.heal(t)
	waitFor(t, "ready again", 30*time.Second, func() bool { return ready()["status"] == "ready" })
}

// sendText sends text as client_msg_id cmid and returns the answer.
func sendText(t *testing.T, c *transporttest.Client, conv charla.ConvID, cmid, body string) wire.Frame {
	t.Helper()
	c.Send(wire.Frame{Type: wire.TypeSend, Ref: cmid, Conv: conv, ClientMsgID: cmid, Body: json.RawMessage(body)})
	f, ok := replyTo(c, cmid)
	if !ok {
		t.Fatalf("no answer to %s", body)
	}
	return f
}

// storedBodies reads a conversation's seq → (client_msg_id, body) straight
// from PostgreSQL.
func storedBodies(t *testing.T, dbURL string, conv charla.ConvID) map[charla.Seq][2]string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	rows, err := conn.Query(ctx, `SELECT seq, client_msg_id, body::text FROM messages WHERE conversation_id = $1`, string(conv))
	if err != nil {
		t.Fatal(err)
	}
	out := map[charla.Seq][2]string{}
	var (
		seq        int64
		cmid, body string
	)
	if _, err := pgx.ForEachRow(rows, []any{&seq, &cmid, &body}, func() error {
		out[charla.Seq(seq)] = [2]string{cmid, body}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// readyz reads /readyz with its details (they are for admins).
func readyz(t *testing.T, e *transporttest.Engine) map[string]any {
	t.Helper()
	resp, err := http.Get("http://" + e.Addr + "/readyz?user=ops&role=admin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %d %v", resp.StatusCode, err)
	}
	return body
}

// TestDrainSetsRefusedMessageAside: a message acked from the spool during an
// outage that the database then refuses (a constraint added while it was
// unreachable: the engine could not know) does not block the drain. It is
// set aside as a dead letter (counted in /readyz), its seq holds a tombstone
// with its client_msg_id, the messages after it reach PostgreSQL, and so
// does the traffic after the drain. A body jsonb would refuse is refused at
// the edge, outage or not.
func TestDrainSetsRefusedMessageAside(t *testing.T) {
	dbURL := migrated(t)
	px, proxied := newProxy(t, dbURL)
	e := engineOverPG(t, proxied)
	c := e.Dial(t, "a", charla.RoleAgent)
	const conv = "dl"
	for i := range 2 {
		if f := sendText(t, c, conv, uuid.NewString(), `{"text":"before"}`); f.Type != wire.TypeAck || f.Seq != charla.Seq(i+1) {
			t.Fatalf("before the outage: %+v", f)
		}
	}
	px.p.Stop()
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, dbURL) // not through the proxy
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `ALTER TABLE messages ADD CONSTRAINT no_forbidden CHECK (body->>'text' <> 'forbidden')`); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)

	refused := uuid.NewString()
	for i, tc := range []struct{ cmid, text string }{{uuid.NewString(), "a"}, {refused, "forbidden"}, {uuid.NewString(), "b"}} {
		if f := sendText(t, c, conv, tc.cmid, fmt.Sprintf(`{"text":%q}`, tc.text)); f.Type != wire.TypeAck || f.Seq != charla.Seq(3+i) {
			t.Fatalf("during the outage, %s: %+v", tc.text, f)
		}
	}
	start := time.Now()
	if f := sendText(t, c, conv, uuid.NewString(), `{"text":"\ud800"}`); f.Type != wire.TypeError || f.Code != charla.CodeBadRequest {
		t.Fatalf("a lone surrogate during the outage: %+v, want bad_request", f)
	} else if took := time.Since(start); took > time.Second {
		t.Fatalf("the lone surrogate was refused after %s, not at once", took)
	}
	if n := e.Sys.Stats().Spooled.Load(); n != 3 {
		t.Fatalf("%d spooled, want 3", n)
	}

	px.heal(t)
	waitFor(t, "spool drained", 30*time.Second, func() bool {
		return e.Sys.Stats().SpoolDepth.Load() == 0 && e.Sys.Stats().DeadLetters.Load() == 1
	})
	if f := sendText(t, c, conv, uuid.NewString(), `{"text":"after"}`); f.Type != wire.TypeAck || f.Seq != 6 {
		t.Fatalf("after the drain: %+v", f)
	}
	if n := e.Sys.Stats().Spooled.Load(); n != 3 {
		t.Fatalf("%d spooled in all, want 3: traffic after the drain goes to the database", n)
	}
	stored := storedBodies(t, dbURL, conv)
	if len(storedLog(t, dbURL, conv)) != 6 { // fails on a gap
		t.Fatalf("stored %v, want seqs 1..6", stored)
	}
	if s := stored[4]; s[0] != refused || s[1] != `{"text": "", "deleted": true}` {
		t.Fatalf("seq 4 holds %v, want the tombstone of %s", s, refused)
	}
	if stored[5][1] != `{"text": "b"}` || stored[6][1] != `{"text": "after"}` {
		t.Fatalf("after the refused message: %v", stored)
	}
	if r := readyz(t, e); r["dead_letters"].(float64) != 1 {
		t.Fatalf("readyz: %v, want dead_letters 1", r)
	}
	// Its sender, resending, hears the seq it was acked with.
	if f := sendText(t, c, conv, refused, `{"text":"forbidden"}`); f.Type != wire.TypeAck || !f.Duplicate || f.Seq != 4 {
		t.Fatalf("resend of the refused message: %+v, want a duplicate of seq 4", f)
	}
	// A reader of the store's history sees the tombstone.
	msgs, err := e.Store().Range(ctx, conv, 3, 1)
	if err != nil || len(msgs) != 1 || string(msgs[0].Body) != `{"text":"","deleted":true}` || msgs[0].ClientMsgID != refused {
		t.Fatalf("history at seq 4: %+v, %v", msgs, err)
	}
}

// TestOldSpoolWithJSONBRefusal: a spool left by an engine that accepted a
// body jsonb refuses (a lone surrogate, SQLSTATE 22P02, before the edge
// checked it) drains on start: the message becomes a dead letter with a
// tombstone, and everything after it is stored.
func TestOldSpoolWithJSONBRefusal(t *testing.T) {
	dbURL := migrated(t)
	dir := t.TempDir()
	sp, err := spool.Open(context.Background(), filepath.Join(dir, "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := time.Now().UTC().Truncate(time.Microsecond)
	msg := func(seq charla.Seq, body string) charla.Message {
		return charla.Message{Conv: "legacy", Seq: seq, ClientMsgID: uuid.NewString(), Sender: charla.Sender{ID: "a", Role: charla.RoleAgent}, Body: json.RawMessage(body), TS: ts}
	}
	if err := sp.Put(context.Background(), []charla.Message{msg(1, `{"text":"ok"}`), msg(2, `{"text":"\ud800"}`), msg(3, `{"text":"later"}`)}); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}
	e := engineOverPG(t, dbURL, transporttest.WithDataDir(dir))
	waitFor(t, "spool drained", 30*time.Second, func() bool {
		return e.Sys.Stats().SpoolDepth.Load() == 0 && e.Sys.Stats().DeadLetters.Load() == 1
	})
	stored := storedBodies(t, dbURL, "legacy")
	if len(storedLog(t, dbURL, "legacy")) != 3 || stored[2][1] != `{"text": "", "deleted": true}` || stored[3][1] != `{"text": "later"}` {
		t.Fatalf("stored %v", stored)
	}
}

// TestResendOlderThanDedupWindowDuringOutage: during an outage a resend of a
// message acked long ago (past the conversation's in-memory dedup window of
// 4) is answered as a duplicate with its original seq, whether that ack came
// from the database or from the spool, and PostgreSQL ends up with each
// message once.
func TestResendOlderThanDedupWindowDuringOutage(t *testing.T) {
	dbURL := migrated(t)
	px, proxied := newProxy(t, dbURL)
	e := engineOverPG(t, proxied, transporttest.WithActors(func(c *actors.Config) {
		c.RecentWindow, c.DedupWindow = 4, 4
		c.StoreWriteTimeout = 300 * time.Millisecond
		c.StoreBreaker.Failures = 2
		c.StoreBreaker.Cooldown = 500 * time.Millisecond
	}))
	c := e.Dial(t, "a", charla.RoleAgent)
	const conv = "rs"
	var ids []string
	send := func(n int) {
		t.Helper()
		for range n {
			id := uuid.NewString()
			if f := sendText(t, c, conv, id, `{"text":"r"}`); f.Type != wire.TypeAck || f.Duplicate || f.Seq != charla.Seq(len(ids)+1) {
				t.Fatalf("send %d: %+v", len(ids)+1, f)
			}
			ids = append(ids, id)
		}
	}
	resend := func(seq charla.Seq) {
		t.Helper()
		if f := sendText(t, c, conv, ids[seq-1], `{"text":"r"}`); f.Type != wire.TypeAck || !f.Duplicate || f.Seq != seq {
			t.Fatalf("resend of seq %d: %+v, want a duplicate with its original seq", seq, f)
		}
	}
	send(7) // 1..7 through the database
	px.p.Stop()
	send(6) // 8..13 spooled
	if n := e.Sys.Stats().Spooled.Load(); n != 6 {
		t.Fatalf("%d spooled, want 6", n)
	}
	resend(1) // acked by the database, 12 sends ago
	resend(8) // acked from the spool, 5 sends ago
	send(1)   // 14: the resends consumed no seq
	if n := e.Sys.Stats().Spooled.Load(); n != 7 {
		t.Fatalf("%d spooled, want 7: a resend was spooled", n)
	}
	px.heal(t)
	waitFor(t, "spool drained", 30*time.Second, func() bool { return e.Sys.Stats().SpoolDepth.Load() == 0 })
	stored := storedLog(t, dbURL, conv)
	if len(stored) != len(ids) {
		t.Fatalf("stored %d messages, want %d: %v", len(stored), len(ids), stored)
	}
	for i, id := range ids {
		if stored[i] != id {
			t.Fatalf("seq %d: stored %s, acked %s", i+1, stored[i], id)
		}
	}
	resend(1) // and after the outage, from the database
}

// claimingSpool answers drains as a cluster's spool does while the shards
// it holds records of are still being claimed: a fenced error, nothing
// handed to the store.
type claimingSpool struct {
	actors.Spool
	claiming atomic.Bool
	asked    atomic.Int32
}

func (s *claimingSpool) Drain(ctx context.Context, batch int, sink func(context.Context, []charla.Message) error) (int, error) {
	s.asked.Add(1)
	if s.claiming.Load() {
		return 0, &store.FencedError{Shards: []int{3}, Fences: []store.ShardFence{{Shard: 3}}}
	}
	return s.Spool.Drain(ctx, batch, sink)
}

// A drain answered "shards not served yet" is tried again within
// milliseconds, with no traffic to wake the store actor, and tells the
// store's breaker nothing (a half-open probe that stayed unanswered kept
// every later drain from starting); once the claim is done the spool
// drains in full.
func TestDrainWaitsForShardsBeingClaimed(t *testing.T) {
	dbURL := migrated(t)
	px, proxied := newProxy(t, dbURL)
	var sp *claimingSpool
	e := engineOverPG(t, proxied, transporttest.WithDependencies(func(d *actors.Dependencies) {
		sp = &claimingSpool{Spool: d.Spool}
		d.Spool = sp
	}), transporttest.WithActors(func(c *actors.Config) {
		c.StoreBreaker.Failures = 1 // open at the outage's first write: drains then are half-open probes
	}))
	c := e.Dial(t, "a", charla.RoleAgent)
	const conv = "claiming"
	if f := sendText(t, c, conv, uuid.NewString(), `{"text":"before"}`); f.Type != wire.TypeAck || f.Seq != 1 {
		t.Fatalf("before the outage: %+v", f)
	}
	sp.claiming.Store(true)
	px.p.Stop()
	for i := range 3 {
		if f := sendText(t, c, conv, uuid.NewString(), `{"text":"spooled"}`); f.Type != wire.TypeAck || f.Seq != charla.Seq(i+2) {
			t.Fatalf("during the outage: %+v", f)
		}
	}
	px.heal(t)
	asked := sp.asked.Load()
	waitFor(t, "drains retried while the shards are claimed", 30*time.Second, func() bool { return sp.asked.Load() >= asked+2 })
	trips, asked := e.Sys.Stats().BreakerTrips.Load(), sp.asked.Load()
	time.Sleep(500 * time.Millisecond)
	if n := sp.asked.Load() - asked; n < 10 {
		t.Errorf("%d drains in 500 ms while the shards were claimed, want a retry every few milliseconds", n)
	}
	if now := e.Sys.Stats().BreakerTrips.Load(); now != trips {
		t.Errorf("the breaker opened %d times while the shards were claimed: a drain that did not reach the store counted as its failure", now-trips)
	}
	sp.claiming.Store(false)
	waitFor(t, "spool drained once claimed", 30*time.Second, func() bool { return e.Sys.Stats().SpoolDepth.Load() == 0 })
	if got := storedLog(t, dbURL, conv); len(got) != 4 {
		t.Fatalf("stored %d messages, want the one before the outage and the 3 spooled", len(got))
	}
}
