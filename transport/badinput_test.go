package transport_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/lxzan/gws"

	"charla"
	"charla/actors"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// Bad frames get an error frame (with the request's ref when it has one)
// and leave the connection open.
func TestBadFramesGetErrorsAndKeepTheConnection(t *testing.T) {
	e := transporttest.Start(t)
	c := e.Dial(t, "carol", charla.RoleCustomer)
	big := `{"text":"` + strings.Repeat("y", e.Sys.Config().MaxBodyBytes) + `"}`
	cases := []struct {
		name string
		raw  string
		ref  string
		code charla.Code
	}{
		{"invalid JSON", `{"type":"send",`, "", charla.CodeBadRequest},
		{"not an object", `[1,2]`, "", charla.CodeBadRequest},
		{"no type", `{"ref":"r0"}`, "r0", charla.CodeBadRequest},
		{"unknown type", `{"type":"teleport","ref":"r1"}`, "r1", charla.CodeBadRequest},
		{"send without client_msg_id", `{"type":"send","ref":"r2","conv":"carol","body":{"text":"hi"}}`, "r2", charla.CodeBadRequest},
		{"send with a client_msg_id that is no UUID", `{"type":"send","ref":"r3","conv":"carol","client_msg_id":"abc","body":{"text":"hi"}}`, "r3", charla.CodeBadRequest},
		{"send without conv", `{"type":"send","ref":"r4","client_msg_id":"` + uuid.NewString() + `","body":{"text":"hi"}}`, "r4", charla.CodeBadRequest},
		{"send without body", `{"type":"send","ref":"r5","conv":"carol","client_msg_id":"` + uuid.NewString() + `"}`, "r5", charla.CodeBadRequest},
		{"body without text", `{"type":"send","ref":"r6","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":{"img":1}}`, "r6", charla.CodeBadRequest},
		{"body too large", `{"type":"send","ref":"r7","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":` + big + `}`, "r7", charla.CodeTooLarge},
		// What PostgreSQL's jsonb refuses (SQLSTATE 22P02) is refused at the edge, whatever the store.
		{"body with a lone high surrogate", `{"type":"send","ref":"r7a","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":{"text":"\ud800"}}`, "r7a", charla.CodeBadRequest},
		{"body with a lone low surrogate", `{"type":"send","ref":"r7b","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":{"text":"a\udc00b"}}`, "r7b", charla.CodeBadRequest},
		{"body with NUL", `{"type":"send","ref":"r7c","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":{"text":"a\u0000"}}`, "r7c", charla.CodeBadRequest},
		{"subscribe without conv", `{"type":"subscribe","ref":"r8"}`, "r8", charla.CodeBadRequest},
		{"conv with bad characters", `{"type":"subscribe","ref":"r9","conv":"a b"}`, "r9", charla.CodeBadRequest},
		{"customer in someone else's conversation", `{"type":"subscribe","ref":"r10","conv":"dave"}`, "r10", charla.CodeForbidden},
		{"typing with a bad state", `{"type":"typing","ref":"r11","conv":"carol","state":"maybe"}`, "r11", charla.CodeBadRequest},
		{"read without seq", `{"type":"read","ref":"r12","conv":"carol"}`, "r12", charla.CodeBadRequest},
		{"read beyond the head", `{"type":"read","ref":"r13","conv":"carol","seq":99}`, "r13", charla.CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := c.SendRaw([]byte(tc.raw)); err != nil {
				t.Fatal(err)
			}
			f := c.NextOf(wire.TypeError, transporttest.Wait)
			if f.Code != tc.code || f.Ref != tc.ref || f.Message == "" {
				t.Fatalf("error frame = %+v, want code %s ref %q with a message", f, tc.code, tc.ref)
			}
			c.Send(wire.Frame{Type: wire.TypePing, Ref: "alive"})
			if p := c.NextOf(wire.TypePong, transporttest.Wait); p.Ref != "alive" {
				t.Fatalf("pong = %+v", p)
			}
		})
	}
	// Nothing of the above was stored; a surrogate pair is a character, fine.
	c.Subscribe("carol", 0)
	c.Send(transporttest.SendFrame("carol", uuid.NewString(), "ok", ""))
	if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 1 {
		t.Fatalf("first good message got seq %d, want 1", ack.Seq)
	}
	if err := c.SendRaw([]byte(`{"type":"send","ref":"pair","conv":"carol","client_msg_id":"` + uuid.NewString() + `","body":{"text":"\ud83d\ude00"}}`)); err != nil {
		t.Fatal(err)
	}
	if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 2 || ack.Ref != "pair" {
		t.Fatalf("a surrogate pair got %+v, want an ack at seq 2", ack)
	}
}

func TestSubscriptionLimit(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) { c.MaxSubscriptions = 2 }))
	c := e.Dial(t, "many", charla.RoleAgent)
	c.Subscribe("s1", 0)
	c.Subscribe("s2", 0)
	c.Subscribe("s2", 0) // again: a replacement, not a third
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "s3", Ref: "third"})
	if f := c.NextOf(wire.TypeError, transporttest.Wait); f.Code != charla.CodeBadRequest || f.Ref != "third" {
		t.Fatalf("third subscription: %+v", f)
	}
	c.Send(wire.Frame{Type: wire.TypeUnsubscribe, Conv: "s1"})
	c.NextOf(wire.TypeUnsubscribed, transporttest.Wait)
	c.Subscribe("s3", 0)
}

// Frames that break the WebSocket layer itself close the connection with
// the RFC 6455 code; a binary frame is only a protocol error and does not.
func TestWebSocketViolations(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) { c.MaxFrameBytes = 4096 }))
	cases := []struct {
		name  string
		write func(c *transporttest.Client) error
		close uint16 // 0: stays open with a bad_request error frame
	}{
		{"frame over max-frame-bytes", func(c *transporttest.Client) error {
			return c.SendRaw([]byte(`{"type":"ping","t":"` + strings.Repeat("z", 5000) + `"}`))
		}, 1009},
		{"text frame that is not UTF-8", func(c *transporttest.Client) error {
			return c.SendRaw([]byte("{\"type\":\"ping\",\"t\":\"\xff\xfe\"}"))
		}, 1007},
		{"binary frame", func(c *transporttest.Client) error {
			return c.Conn().WriteMessage(gws.OpcodeBinary, []byte(`{"type":"ping"}`))
		}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := e.Dial(t, "v", charla.RoleAgent)
			if err := tc.write(c); err != nil {
				t.Fatal(err)
			}
			if tc.close == 0 {
				if f := c.NextOf(wire.TypeError, transporttest.Wait); f.Code != charla.CodeBadRequest {
					t.Fatalf("error frame %+v", f)
				}
				c.Send(wire.Frame{Type: wire.TypePing, Ref: "alive"})
				c.NextOf(wire.TypePong, transporttest.Wait)
				return
			}
			select {
			case <-c.Done():
			case <-time.After(transporttest.Wait):
				t.Fatal("connection not closed")
			}
			if code := c.CloseCode(); code != tc.close {
				t.Fatalf("close code %d, want %d", code, tc.close)
			}
		})
	}
}

func TestUpgradeIsRefusedBeforeUpgrading(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.Auth = transport.Authenticator{Mode: transport.AuthJWT, Secret: secret}
		c.Origins = transport.OriginPolicy{"https://panel.example"}
	}))
	mintFor := func(secret []byte, user string, ttl time.Duration) string {
		tok, err := transport.MintToken(secret, user, charla.RoleAgent, ttl)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	mint := func(secret []byte, ttl time.Duration) string { return mintFor(secret, "ana", ttl) }
	good := mint(secret, time.Hour)
	cases := []struct {
		name   string
		query  string
		header http.Header
		status int
	}{
		{"valid bearer token", "", http.Header{"Authorization": {"Bearer " + good}}, 101},
		{"valid access_token query", "?access_token=" + good, nil, 101},
		{"allowed origin", "?access_token=" + good, http.Header{"Origin": {"https://panel.example"}}, 101},
		{"no token", "", nil, 401},
		{"dev params are not auth in jwt mode", "?user=ana&role=admin", nil, 401},
		{"garbage token", "?access_token=not.a.jwt", nil, 401},
		{"wrong secret", "?access_token=" + mint([]byte("another-secret-another-secret-xx"), time.Hour), nil, 401},
		{"expired token", "?access_token=" + mint(secret, -time.Minute), nil, 401},
		{"sub with ':' (another customer's namespace)", "?access_token=" + mintFor(secret, "bob:x", time.Hour), nil, 401},
		{"whitespace-only sub", "?access_token=" + mintFor(secret, "   ", time.Hour), nil, 401},
		{"sub with a control character", "?access_token=" + mintFor(secret, "bob\x01", time.Hour), nil, 401},
		{"sub over 128 bytes", "?access_token=" + mintFor(secret, strings.Repeat("b", 129), time.Hour), nil, 401},
		{"malformed Authorization", "", http.Header{"Authorization": {"Token " + good}}, 401},
		{"wrong origin", "?access_token=" + good, http.Header{"Origin": {"https://evil.example"}}, 403},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", "http://"+e.Addr+"/v1/ws"+tc.query, nil)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			req.Header.Set("Connection", "Upgrade")
			req.Header.Set("Upgrade", "websocket")
			req.Header.Set("Sec-WebSocket-Version", "13")
			req.Header.Set("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.status == 101 {
				return
			}
			var body struct{ Code, Message string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Message == "" {
				t.Fatalf("error body %+v (%v), want code and message", body, err)
			}
			want := map[int]charla.Code{401: charla.CodeUnauthorized, 403: charla.CodeForbidden}[tc.status]
			if charla.Code(body.Code) != want {
				t.Fatalf("code %q, want %q", body.Code, want)
			}
		})
	}
}

// Dev mode holds user ids to the same alphabet as tokens.
func TestDevUserIDs(t *testing.T) {
	e := transporttest.Start(t)
	for _, tc := range []struct {
		user string
		ok   bool
	}{{"34600111222", true}, {"bob", true}, {"bob:x", false}, {"bob x", false}, {" ", false}, {"", false}} {
		_, err := transporttest.DialURL(t, "ws://"+e.Addr+"/v1/ws?role=customer&user="+url.QueryEscape(tc.user), nil)
		if (err == nil) != tc.ok {
			t.Errorf("user %q: %v, want ok=%v", tc.user, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "401") {
			t.Errorf("user %q refused with %v, want HTTP 401", tc.user, err)
		}
	}
}

// One rule for expiry, at the upgrade and during the session: a token is
// honoured until exp + ClockSkew, and --max-session bounds a session whose
// token lasts for years (and every dev-mode session).
func TestSessionEnds(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name       string
		mode       string
		ttl        time.Duration
		maxSession time.Duration
		openFor    time.Duration // at least this long before the 4001
	}{
		{"a token within the skew is honoured until exp+skew, not closed at once", transport.AuthJWT, -3 * time.Second, 0, 500 * time.Millisecond},
		{"max-session ends a year-long token's session", transport.AuthJWT, 365 * 24 * time.Hour, 1500 * time.Millisecond, time.Second},
		{"max-session ends a dev session", transport.AuthDev, 0, 1500 * time.Millisecond, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
				c.Auth = transport.Authenticator{Mode: tc.mode, Secret: secret, MaxSession: tc.maxSession}
			}))
			u := e.URL("ana", charla.RoleAgent)
			if tc.mode == transport.AuthJWT {
				tok, _ := transport.MintToken(secret, "ana", charla.RoleAgent, tc.ttl)
				u = "ws://" + e.Addr + "/v1/ws?access_token=" + tok
			}
			start := time.Now()
			c, err := transporttest.DialURL(t, u, nil)
			if err != nil {
				t.Fatal(err)
			}
			if f := c.Next(transporttest.Wait); f.Type != wire.TypeWelcome {
				t.Fatalf("first frame %+v", f)
			}
			select {
			case <-c.Done():
			case <-time.After(transporttest.Wait):
				t.Fatal("session not ended")
			}
			if code, open := c.CloseCode(), time.Since(start); code != 4001 || open < tc.openFor {
				t.Fatalf("closed with %d after %s, want 4001 after at least %s", code, open, tc.openFor)
			}
		})
	}
}

func TestTokenExpiryClosesWith4001(t *testing.T) {
	secret := []byte("0123456789abcdef0123456789abcdef")
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.Auth = transport.Authenticator{Mode: transport.AuthJWT, Secret: secret}
	}))
	// jwt's exp has second precision: 2 s leaves at least 1 s of session.
	tok, _ := transport.MintToken(secret, "ana", charla.RoleAgent, 2*time.Second)
	c, err := transporttest.DialURL(t, "ws://"+e.Addr+"/v1/ws?access_token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.Done():
	case <-time.After(transporttest.Wait):
		t.Fatal("not closed after the token expired")
	}
	if code := c.CloseCode(); code != 4001 {
		t.Fatalf("close code %d, want 4001", code)
	}
}
