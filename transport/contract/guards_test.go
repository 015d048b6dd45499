package contract

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/ratelimit"
	"charla/soapbridge/soapsim"
	"charla/store"
	"charla/store/pebble"
	"charla/transport"
	"charla/transport/transporttest"
)

// as adds dev authentication (the engine runs in dev mode) to path.
func as(path, user string, role charla.Role) string {
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	return path + sep + "user=" + url.QueryEscape(user) + "&role=" + string(role)
}

// downStore is the embedded store with a switch that makes it unreachable,
// as a database behind a broken network is: no real store can be cut from
// under a running engine here.
type downStore struct {
	store.Store
	down atomic.Bool
}

func (d *downStore) err(op string) error {
	return fmt.Errorf("%s: connection refused: %w", op, store.ErrUnavailable)
}

func (d *downStore) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	if d.down.Load() {
		return nil, d.err("append")
	}
	return d.Store.Append(ctx, msgs)
}

func (d *downStore) Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	if d.down.Load() {
		return nil, d.err("range")
	}
	return d.Store.Range(ctx, conv, after, limit)
}

func (d *downStore) Head(ctx context.Context, conv charla.ConvID) (charla.Seq, error) {
	if d.down.Load() {
		return 0, d.err("head")
	}
	return d.Store.Head(ctx, conv)
}

// TestContractGuards makes the guards and the handlers refuse — a body too
// large (413), a rate limit (429 with Retry-After), the store unreachable
// (503) — and validates each refusal against openapi.json, on top of the
// status and the error code a client branches on.
func TestContractGuards(t *testing.T) {
	st := &downStore{}
	e := transporttest.Start(t,
		transporttest.WithTransport(func(c *transport.Config) {
			c.RateLimits = ratelimit.Config{Auth: 1, Chat: 1, Media: 1, API: 5, Upgrade: 600} // loopback not allow-listed
		}),
		transporttest.WithStore(func(tb testing.TB) store.Store {
			o := pebble.DefaultOptions()
			o.MemTableSize, o.CacheSize = 4<<20, 8<<20
			p, err := pebble.Open(context.Background(), filepath.Join(tb.TempDir(), "charla.pebble"), o)
			if err != nil {
				tb.Fatal(err)
			}
			st.Store = p
			return st
		}))
	c := &checker{t: t, router: router(t), base: "http://" + e.Addr}
	const js = "application/json"
	send := func(conv, text string) []byte {
		return jsonBody(map[string]any{"ref": "r", "conv": conv, "client_msg_id": uuid.NewString(), "body": map[string]string{"text": text}})
	}
	code := func(b []byte) charla.Code {
		var p struct{ Error struct{ Code charla.Code } }
		json.Unmarshal(b, &p)
		return p.Error.Code
	}

	for _, tc := range []struct {
		name          string
		method, path  string
		body          []byte
		status        int
		code          charla.Code
		retryAfter    bool // a Retry-After header of whole seconds ≥ 1
		before, after func()
	}{
		// 413: every body limit, each in its endpoint's shape.
		{name: "send over --max-frame-bytes", method: "POST", path: as("/v1/send", "big1", charla.RoleAgent),
			body: send("big", strings.Repeat("x", 70<<10)), status: 413, code: charla.CodeTooLarge},
		{name: "poll body over its limit", method: "POST", path: as("/v1/poll", "big2", charla.RoleAgent),
			body: []byte(`{"cursors":{},"pad":"` + strings.Repeat("x", 300<<10) + `"}`), status: 413, code: charla.CodeTooLarge},
		{name: "frames over --max-request-bytes", method: "POST", path: as("/v1/frames", "big3", charla.RoleAgent),
			body: []byte(`{"frames":[{"type":"ping"}],"pad":"` + strings.Repeat("x", 1<<20) + `"}`), status: 413, code: charla.CodeTooLarge},
		{name: "a GET with a body", method: "GET", path: as("/v1/conversations/big/messages", "big4", charla.RoleAgent),
			body: []byte(`{}`), status: 413, code: charla.CodeTooLarge},
		{name: "a probe with a body", method: "GET", path: "/healthz", body: []byte(`{}`), status: 413, code: charla.CodeTooLarge},

		// 429: one user past each class's bucket; the answer says when to
		// come back.
		{name: "login past the auth limit", method: "POST", path: "/v1/auth/login",
			body: jsonBody(map[string]string{"email": "a@example.com", "password": "x"}), status: 429, code: charla.CodeRateLimited, retryAfter: true,
			before: func() {
				c.do("POST", "/v1/auth/login", "", js, jsonBody(map[string]string{"email": "a@example.com", "password": "x"}))
			}},
		{name: "send past the chat limit", method: "POST", path: as("/v1/send", "chatty", charla.RoleAgent),
			body: send("chatty", "two"), status: 429, code: charla.CodeRateLimited, retryAfter: true,
			before: func() {
				c.expect(200, "POST", as("/v1/send", "chatty", charla.RoleAgent), "", js, send("chatty", "one"))
			}},
		{name: "history past the api limit", method: "GET", path: as("/v1/conversations/busy/messages", "busy", charla.RoleAgent),
			status: 429, code: charla.CodeRateLimited, retryAfter: true,
			before: func() {
				for range 5 {
					c.expect(200, "GET", as("/v1/conversations/busy/messages", "busy", charla.RoleAgent), "", "", nil)
				}
			}},
		{name: "media past the media limit", method: "GET", path: as("/v1/media/ffffffffffffffffffffffffffffffff", "snap", charla.RoleAgent),
			status: 429, code: charla.CodeRateLimited, retryAfter: true,
			before: func() {
				// Not configured here (503), but the token was taken at the edge.
				c.expect(503, "GET", as("/v1/media/ffffffffffffffffffffffffffffffff", "snap", charla.RoleAgent), "", "", nil)
			}},

		// 503: the store is unreachable (and there is no spool to take the
		// writes): a send is not acked, a history page is not served.
		{name: "send with the store down", method: "POST", path: as("/v1/send", "down1", charla.RoleAgent),
			body: send("down", "lost?"), status: 503, code: charla.CodeUnavailable,
			before: func() { st.down.Store(true) }, after: func() { st.down.Store(false) }},
		{name: "history with the store down", method: "GET", path: as("/v1/conversations/cold/messages", "down2", charla.RoleAgent),
			status: 503, code: charla.CodeUnavailable,
			before: func() { st.down.Store(true) }, after: func() { st.down.Store(false) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			if tc.before != nil {
				tc.before()
			}
			if tc.after != nil {
				defer tc.after()
			}
			ctype := ""
			if tc.body != nil {
				ctype = js
			}
			status, body, header := c.doHeader(tc.method, tc.path, "", ctype, tc.body)
			if status != tc.status || code(body) != tc.code {
				t.Fatalf("%s %s = %d %s, want %d %s", tc.method, tc.path, status, body, tc.status, tc.code)
			}
			if ra := header.Get("Retry-After"); tc.retryAfter {
				if n, err := strconv.Atoi(ra); err != nil || n < 1 {
					t.Fatalf("Retry-After %q, want whole seconds ≥ 1", ra)
				}
			}
		})
	}
	c.t = t
	// Nothing was lost by the refusals: the send refused while the store
	// was down is not there, the one acked before the limit is.
	var page transport.HistoryPage
	json.Unmarshal(c.expect(200, "GET", as("/v1/conversations/chatty/messages", "reader", charla.RoleAgent), "", "", nil), &page)
	if len(page.Messages) != 1 {
		t.Fatalf("history of chatty = %+v, want the one acked message", page)
	}
}

// TestContractPollFrames drives one of every server frame a poll answer can
// carry through real polls (chat, typing, read, ping, errors, the inventory
// bridge against its simulator, unsubscribe) and validates every answer
// against openapi.json, whose ServerFrame is one exact schema per type.
func TestContractPollFrames(t *testing.T) {
	sim, err := soapsim.New(soapsim.Options{Faults: soapsim.Faults{Operations: map[string]soapsim.FaultSet{
		"GetStock": {LatencyMS: 600}, // past the answer budget: the first inventory of a SKU is a job
	}}})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(sim.Handler())
	t.Cleanup(func() {
		sim.Close()
		hs.Close()
	})
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) { c.SOAP.URL = hs.URL }))
	c := &checker{t: t, router: router(t), base: "http://" + e.Addr}
	const js = "application/json"

	seen := map[string]int{}
	type session struct {
		user    string
		role    charla.Role
		id      string
		cursors map[string]int
	}
	// poll polls s until pred holds for the frames it got (each answer is
	// validated by the checker), within 10 s.
	poll := func(s *session, pred func(frames []json.RawMessage) bool) []json.RawMessage {
		t.Helper()
		var got []json.RawMessage
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			var pr transport.PollResponse
			json.Unmarshal(c.expect(200, "POST", as("/v1/poll", s.user, s.role), "", js,
				jsonBody(map[string]any{"session": s.id, "cursors": s.cursors, "wait_ms": 1000})), &pr)
			s.id = pr.Session
			for _, f := range pr.Frames {
				seen[frameType(f)]++
				var m struct {
					Type string
					Conv string
					Seq  int
				}
				json.Unmarshal(f, &m)
				if m.Type == "msg" {
					s.cursors[m.Conv] = m.Seq
				}
			}
			got = append(got, pr.Frames...)
			if pred(got) {
				return got
			}
		}
		t.Fatalf("%s: polls within 10 s brought %d frames, not the ones wanted: %s", s.user, len(got), got)
		return nil
	}
	has := func(typ string) func([]json.RawMessage) bool {
		return func(fs []json.RawMessage) bool {
			for _, f := range fs {
				if frameType(f) == typ {
					return true
				}
			}
			return false
		}
	}
	frames := func(s *session, fs ...any) {
		t.Helper()
		c.expect(202, "POST", as("/v1/frames", s.user, s.role), "", js, jsonBody(map[string]any{"session": s.id, "frames": fs}))
	}

	carol := &session{user: "carol", role: charla.RoleCustomer, cursors: map[string]int{"carol": 0}}
	ana := &session{user: "ana", role: charla.RoleAgent, cursors: map[string]int{"carol": 0}}
	root := &session{user: "root", role: charla.RoleAdmin, cursors: map[string]int{}}
	poll(carol, has("subscribed")) // welcome, subscribed
	poll(ana, has("subscribed"))
	poll(root, has("welcome"))

	frames(carol, map[string]any{"type": "send", "ref": "s1", "conv": "carol", "client_msg_id": uuid.NewString(), "body": map[string]string{"text": "hola"}})
	poll(carol, func(fs []json.RawMessage) bool { return has("ack")(fs) && has("msg")(fs) })
	poll(ana, has("msg"))
	frames(ana, map[string]any{"type": "typing", "conv": "carol", "state": "on"}, map[string]any{"type": "read", "conv": "carol", "seq": 1})
	poll(carol, func(fs []json.RawMessage) bool { return has("typing")(fs) && has("read")(fs) })
	frames(carol, map[string]any{"type": "ping", "ref": "p1", "t": 42}, map[string]any{"type": "send", "ref": "s2", "conv": "dave", "client_msg_id": uuid.NewString(), "body": map[string]string{"text": "not mine"}})
	poll(carol, func(fs []json.RawMessage) bool { return has("pong")(fs) && has("error")(fs) })

	sku := soapsim.SKU(1)
	frames(carol, map[string]any{"type": "inventory", "ref": "i1", "sku": sku})
	poll(carol, func(fs []json.RawMessage) bool {
		for _, f := range fs {
			var j struct{ Type, State string }
			json.Unmarshal(f, &j)
			if j.Type == "job" && (j.State == "done" || j.State == "failed") {
				return true
			}
		}
		return false
	})
	frames(carol, map[string]any{"type": "inventory", "ref": "i2", "sku": sku}) // cached now
	poll(carol, has("inventory"))
	frames(ana, map[string]any{"type": "reserve", "ref": "r1", "sku": soapsim.SKU(2), "quantity": 1})
	poll(ana, has("reserved"))
	frames(root, map[string]any{"type": "invalidate", "ref": "v1", "sku": sku})
	poll(root, has("invalidated"))

	carol.cursors = map[string]int{} // no longer following carol
	poll(carol, has("unsubscribed"))

	for _, typ := range []string{"welcome", "subscribed", "unsubscribed", "ack", "msg", "pong", "typing", "read", "error", "inventory", "job", "reserved", "invalidated"} {
		if seen[typ] == 0 {
			t.Errorf("no %s frame came in a poll answer (seen %v)", typ, seen)
		}
	}
}

// doHeader is do that also returns the answer's header.
func (c *checker) doHeader(method, path, token, ctype string, body []byte) (int, []byte, http.Header) {
	c.t.Helper()
	status, b := c.do(method, path, token, ctype, body)
	return status, b, c.lastHeader
}
