package transport_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/ratelimit"
	"charla/ratelimit/ratelimittest"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// limitedEngine runs an engine whose limits apply to loopback (tests run
// over it, which transporttest allow-lists by default), on clock.
func limitedEngine(t *testing.T, clock *ratelimittest.Clock, edit func(*transport.Config)) *transporttest.Engine {
	return transporttest.Start(t, transporttest.WithRateLimitClock(clock.Now), transporttest.WithTransport(func(c *transport.Config) {
		c.RateLimits.Allow = nil
		if edit != nil {
			edit(c)
		}
	}))
}

// sendOne sends a message and returns the answer to it: its ack or error,
// or a zero frame when the connection closed instead.
func sendOne(t *testing.T, c *transporttest.Client, conv charla.ConvID) wire.Frame {
	t.Helper()
	ref := uuid.NewString()
	c.Send(transporttest.SendFrame(conv, ref, "hola", ref))
	deadline := time.After(transporttest.Wait)
	for {
		select {
		case f := <-c.Frames():
			if f.Ref == ref {
				return f
			}
		case <-c.Done():
			return wire.Frame{}
		case <-deadline:
			t.Fatalf("no answer to send %s", ref)
		}
	}
}

// An agent typing 90 messages a minute for 3 minutes, under the default
// 100, is never limited.
func TestSteadyAgentIsNeverLimited(t *testing.T) {
	clock := ratelimittest.NewClock()
	e := limitedEngine(t, clock, nil)
	ana := e.Dial(t, "ana", charla.RoleAgent)
	for i := range 3 * 90 {
		if f := sendOne(t, ana, "c1"); f.Type != wire.TypeAck {
			t.Fatalf("message %d at %s: %+v", i, clock.Now().Format(time.TimeOnly), f)
		}
		clock.Advance(time.Minute / 90)
	}
	if n := e.Limits.Refused(ratelimit.Chat); n != 0 {
		t.Fatalf("%d sends refused", n)
	}
}

// A flood of 1,000 messages a minute is cut to the limit: rate_limited
// with retry_after_ms, the connection still open, until the refusals within
// a minute pass FloodFactor times the limit; then 4029.
func TestFloodIsCutToTheLimitThen4029(t *testing.T) {
	clock := ratelimittest.NewClock()
	e := limitedEngine(t, clock, nil)
	ana := e.Dial(t, "ana", charla.RoleAgent)
	start := clock.Now()
	var acked, refused int
	for {
		f := sendOne(t, ana, "c1")
		if f.Type == "" {
			break // closed
		}
		switch {
		case f.Type == wire.TypeAck:
			acked++
		case f.Type == wire.TypeError && f.Code == charla.CodeRateLimited:
			refused++
			if f.RetryAfter <= 0 || f.RetryAfter > 600 {
				t.Fatalf("retry_after_ms %d, want 1…600 (one token per 0.6 s)", f.RetryAfter)
			}
		default:
			t.Fatalf("unexpected answer %+v", f)
		}
		if acked+refused > 1000 {
			t.Fatal("a flood of 1,000 messages was never closed")
		}
		clock.Advance(time.Minute / 1000)
	}
	<-ana.Done()
	elapsed := clock.Now().Sub(start)
	// At most the burst plus what refilled meanwhile got through.
	allowed := 100 + int(elapsed/(time.Minute/100)) + 1
	t.Logf("in %s of flood: %d acked, %d rate_limited, then close %d", elapsed, acked, refused, ana.CloseCode())
	if acked > allowed || acked < 100 {
		t.Fatalf("%d acked in %s, want 100…%d", acked, elapsed, allowed)
	}
	if refused != ratelimit.FloodFactor*100 {
		t.Fatalf("%d rate_limited before the close, want %d", refused, ratelimit.FloodFactor*100)
	}
	if code := ana.CloseCode(); code != charla.DisconnectRateLimited.Code {
		t.Fatalf("close code %d, want 4029", code)
	}
	// The limit is the user's, not the connection's: a new connection is
	// refused at once, and is welcome again once tokens are back.
	ana2 := e.Dial(t, "ana", charla.RoleAgent)
	f := sendOne(t, ana2, "c1")
	if f.Code != charla.CodeRateLimited {
		t.Fatalf("a new connection of the same user: %+v, want rate_limited", f)
	}
	clock.Advance(time.Duration(f.RetryAfter) * time.Millisecond)
	if f := sendOne(t, ana2, "c1"); f.Type != wire.TypeAck {
		t.Fatalf("after the retry-after: %+v", f)
	}
}

// Fifty agents behind one IP (one office NAT) are limited each on their
// own, not together.
func TestAgentsBehindOneIPAreLimitedOnTheirOwn(t *testing.T) {
	clock := ratelimittest.NewClock()
	const agents, limit = 50, 20
	e := limitedEngine(t, clock, func(c *transport.Config) { c.RateLimits.Chat = limit })
	var wg sync.WaitGroup
	errs := make(chan error, agents)
	for i := range agents {
		c := e.Dial(t, fmt.Sprint("agent-", i), charla.RoleAgent)
		wg.Add(1)
		go func() {
			defer wg.Done()
			conv := charla.ConvID(fmt.Sprint("c", i))
			for j := range limit {
				if f := sendOne(t, c, conv); f.Type != wire.TypeAck {
					errs <- fmt.Errorf("agent %d, message %d: %+v", i, j, f)
					return
				}
			}
			if f := sendOne(t, c, conv); f.Code != charla.CodeRateLimited {
				errs <- fmt.Errorf("agent %d past its limit: %+v", i, f)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A client on the allow-list is never limited, over WebSocket or HTTP.
func TestAllowListedIPIsNeverLimited(t *testing.T) {
	clock := ratelimittest.NewClock()
	e := limitedEngine(t, clock, func(c *transport.Config) {
		c.RateLimits.Allow = []string{"127.0.0.0/8"}
		c.RateLimits.Chat, c.RateLimits.API, c.RateLimits.Upgrade = 5, 5, 5
	})
	var clients []*transporttest.Client
	for range 20 {
		clients = append(clients, e.Dial(t, "ana", charla.RoleAgent))
	}
	for i := range 50 {
		if f := sendOne(t, clients[i%len(clients)], "c1"); f.Type != wire.TypeAck {
			t.Fatalf("message %d: %+v", i, f)
		}
	}
	for i := range 50 {
		if resp := get(t, e, "/v1/nothing", nil); resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("request %d: 429", i)
		}
	}
}

// Over HTTP a refusal is 429 with Retry-After and retry_after_ms; the 11th
// login attempt inside a minute is refused, and a token is back within
// seconds.
func TestHTTPLimitIs429WithRetryAfter(t *testing.T) {
	clock := ratelimittest.NewClock()
	e := limitedEngine(t, clock, nil)
	for i := range 10 {
		if resp := post(t, e, "/v1/auth/login", nil); resp.StatusCode == http.StatusTooManyRequests {
			t.Fatalf("login %d refused", i+1)
		}
	}
	resp := post(t, e, "/v1/auth/login", nil)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") != "6" {
		t.Fatalf("11th login: %s, Retry-After %q; want 429 and 6", resp.Status, resp.Header.Get("Retry-After"))
	}
	clock.Advance(6 * time.Second)
	if resp := post(t, e, "/v1/auth/login", nil); resp.StatusCode == http.StatusTooManyRequests {
		t.Fatal("no token back after Retry-After")
	}
	// Health probes are never limited.
	for range 20 {
		if resp := get(t, e, "/healthz", nil); resp.StatusCode != http.StatusOK {
			t.Fatalf("/healthz: %s", resp.Status)
		}
	}
}

// X-Forwarded-For is honoured only from a trusted proxy: from anyone else
// it cannot move a client into a fresh bucket.
func TestForwardedForOnlyFromTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trusted []string
		limited bool // whether distinct X-Forwarded-For values still share one bucket
	}{
		{"untrusted peer", nil, true},
		{"trusted proxy", []string{"127.0.0.1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := ratelimittest.NewClock()
			e := limitedEngine(t, clock, func(c *transport.Config) {
				c.RateLimits.TrustedProxies = tc.trusted
				c.RateLimits.Upgrade = 3
			})
			refused := 0
			for i := range 6 {
				h := http.Header{"X-Forwarded-For": {fmt.Sprintf("203.0.113.%d", i+1)}}
				c, err := transporttest.DialURL(t, e.URL(fmt.Sprint("u", i), charla.RoleAgent), h)
				if err != nil {
					refused++
					continue
				}
				c.Close()
			}
			if got := refused > 0; got != tc.limited {
				t.Fatalf("%d of 6 upgrades refused; limited=%v, want %v", refused, got, tc.limited)
			}
		})
	}
}

func get(t *testing.T, e *transporttest.Engine, path string, h http.Header) *http.Response {
	t.Helper()
	return do(t, e, http.MethodGet, path, h)
}

func post(t *testing.T, e *transporttest.Engine, path string, h http.Header) *http.Response {
	t.Helper()
	return do(t, e, http.MethodPost, path, h)
}

func do(t *testing.T, e *transporttest.Engine, method, path string, h http.Header) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+e.Addr+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// noKeepAlive leaves no idle connection behind for goleak to find.
var noKeepAlive = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// WebSocket send frames and POST /v1/send draw from one bucket per user:
// the user who spent it over one transport is refused over the other, with
// 429, Retry-After and retry_after_ms.
func TestChatBucketIsSharedAcrossTransports(t *testing.T) {
	clock := ratelimittest.NewClock()
	e := limitedEngine(t, clock, func(c *transport.Config) { c.RateLimits.Chat = 5 })
	ana := e.Dial(t, "ana", charla.RoleAgent)
	for i := range 5 {
		if f := sendOne(t, ana, "c1"); f.Type != wire.TypeAck {
			t.Fatalf("message %d: %+v", i, f)
		}
	}
	id := uuid.NewString()
	body := fmt.Sprintf(`{"type":"send","conv":"c1","client_msg_id":%q,"body":{"text":"hola"}}`, id)
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.Addr+"/v1/send?user=ana&role=agent", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := noKeepAlive.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Code       charla.Code `json:"code"`
		RetryAfter int64       `json:"retry_after_ms"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&answer)
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" || answer.Code != charla.CodeRateLimited || answer.RetryAfter <= 0 {
		t.Fatalf("POST /v1/send after the WebSocket spent the bucket: %s, Retry-After %q, %+v", resp.Status, resp.Header.Get("Retry-After"), answer)
	}
	clock.Advance(time.Duration(answer.RetryAfter) * time.Millisecond)
	if f := sendOne(t, ana, "c1"); f.Type != wire.TypeAck {
		t.Fatalf("after the retry-after: %+v", f)
	}
}
