package transport_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// CORS for the REST endpoints follows --allowed-origins: a listed origin
// (exact or by wildcard) gets the headers and credentials, "*" the headers
// without credentials, another origin nothing, and may not change anything;
// preflights are answered; the WebSocket upgrade from a disallowed origin
// is still 403.
func TestCORS(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.Origins = transport.OriginPolicy{"https://panel.example.com", "https://*.tenant.example"}
	}))
	for _, tc := range []struct {
		name, method, origin string
		preflight            bool
		status               int
		allowOrigin, creds   string
	}{
		{"listed origin", "GET", "https://panel.example.com", false, 200, "https://panel.example.com", "true"},
		{"wildcard subdomain", "GET", "https://acme.tenant.example", false, 200, "https://acme.tenant.example", "true"},
		{"wildcard does not cover the domain", "GET", "https://tenant.example", false, 200, "", ""},
		{"wildcard is not a suffix match", "GET", "https://eviltenant.example", false, 200, "", ""},
		{"other origin may read nothing", "GET", "https://evil.example", false, 200, "", ""},
		{"other origin may change nothing", "POST", "https://evil.example", false, 403, "", ""},
		{"preflight", "OPTIONS", "https://panel.example.com", true, 204, "https://panel.example.com", "true"},
		{"preflight from another origin", "OPTIONS", "https://evil.example", true, 403, "", ""},
		{"no origin", "GET", "", false, 200, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			if tc.origin != "" {
				h.Set("Origin", tc.origin)
			}
			if tc.preflight {
				h.Set("Access-Control-Request-Method", "POST")
				h.Set("Access-Control-Request-Headers", "authorization, content-type")
			}
			path := "/healthz"
			if tc.method != "GET" {
				path = "/v1/nothing"
			}
			resp := do(t, e, tc.method, path, h)
			if tc.status == 200 && tc.method == "POST" {
				tc.status = 404
			}
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != tc.allowOrigin {
				t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, tc.allowOrigin)
			}
			if got := resp.Header.Get("Access-Control-Allow-Credentials"); got != tc.creds {
				t.Fatalf("Access-Control-Allow-Credentials %q, want %q", got, tc.creds)
			}
			if tc.preflight && tc.status == 204 && !strings.Contains(resp.Header.Get("Access-Control-Allow-Headers"), "Authorization") {
				t.Fatalf("preflight allows headers %q", resp.Header.Get("Access-Control-Allow-Headers"))
			}
		})
	}
	t.Run("websocket from a disallowed origin", func(t *testing.T) {
		_, err := transporttest.DialURL(t, e.URL("ana", charla.RoleAgent), http.Header{"Origin": {"https://evil.example"}})
		if err == nil || !strings.Contains(err.Error(), "403") {
			t.Fatalf("upgrade from a disallowed origin: %v, want 403", err)
		}
		c, err := transporttest.DialURL(t, e.URL("ana", charla.RoleAgent), http.Header{"Origin": {"https://x.tenant.example"}})
		if err != nil {
			t.Fatalf("upgrade from a wildcard origin: %v", err)
		}
		c.Close()
	})
	t.Run("star allows without credentials", func(t *testing.T) {
		star := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) { c.Origins = transport.OriginPolicy{"*"} }))
		resp := get(t, star, "/healthz", http.Header{"Origin": {"https://anywhere.example"}})
		if resp.Header.Get("Access-Control-Allow-Origin") != "https://anywhere.example" || resp.Header.Get("Access-Control-Allow-Credentials") != "" {
			t.Fatalf("under *: %v", resp.Header)
		}
	})
}

// Every answer carries the security headers, refusals included.
func TestSecurityHeaders(t *testing.T) {
	e := transporttest.Start(t)
	want := map[string]string{
		"X-Content-Type-Options":  "nosniff",
		"Content-Security-Policy": "frame-ancestors 'none'",
		"X-Frame-Options":         "DENY",
		"Referrer-Policy":         "no-referrer",
	}
	for _, path := range []string{"/healthz", "/readyz", "/v1/ws", "/v1/nothing"} {
		resp := get(t, e, path, nil)
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s (%d): %s = %q, want %q", path, resp.StatusCode, k, got, v)
			}
		}
	}
}

func TestDeniedUserAgentAndBodyLimits(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.RateLimits.DenyUserAgents = []string{"badbot"}
		c.MaxRequestBytes = 4096
	}))
	if resp := get(t, e, "/healthz", http.Header{"User-Agent": {"Mozilla/5.0 (BadBot/1.0)"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("denied user agent: %s", resp.Status)
	}
	for _, tc := range []struct {
		method string
		size   int
		status int
	}{{"POST", 4096, 404}, {"POST", 4097, 413}, {"GET", 1, 413}} {
		req, _ := http.NewRequest(tc.method, "http://"+e.Addr+"/v1/nothing", strings.NewReader(strings.Repeat("x", tc.size)))
		resp, err := noKeepAlive.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s with %d bytes: %s, want %d", tc.method, tc.size, resp.Status, tc.status)
		}
	}
}

// Requests that promise a body and never send it, and idle keep-alive
// connections, are closed within the configured timeouts, not held.
func TestSlowAndIdleConnectionsAreClosed(t *testing.T) {
	const readTimeout, idleTimeout = time.Second, time.Second
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.ConnectTimeout, c.ReadTimeout, c.IdleTimeout = readTimeout, readTimeout, idleTimeout
	}))
	// The slack is for a loaded 2-core machine running the race detector
	// with a thousand connections at once; the figure logged is the slowest.
	slack := 5 * time.Second
	for _, tc := range []struct {
		name, request string
		conns         int
		within        time.Duration
	}{
		// The classic: 1,000 requests promising 100,000 bytes to /v1/ws,
		// none sent; each is answered at once and closed.
		{"body promised to /v1/ws", "GET /v1/ws HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", 1000, readTimeout + slack},
		{"body promised to a POST", "POST /v1/nothing HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial", 100, readTimeout + slack},
		{"headers never finished", "GET /healthz HTTP/1.1\r\nHost: x\r\n", 100, readTimeout + slack},
		{"idle keep-alive", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 100, idleTimeout + slack},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conns := tc.conns
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			var mu sync.Mutex
			var slowest time.Duration
			for range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					took, err := closedWithin(e.Addr, tc.request, tc.within)
					mu.Lock()
					slowest = max(slowest, took)
					mu.Unlock()
					errs <- err
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			t.Logf("%d connections, all closed; the slowest after %s", conns, slowest.Round(time.Millisecond))
		})
	}
}

// closedWithin writes request on a new connection and reports how long the
// server took to close it, or an error unless it did within d (reading
// whatever it answers).
func closedWithin(addr, request string, d time.Duration) (time.Duration, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, request); err != nil {
		return 0, err
	}
	_ = conn.SetReadDeadline(start.Add(d))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			return d, fmt.Errorf("still open after %s", time.Since(start).Round(time.Millisecond))
		}
	}
	return time.Since(start), nil
}

// One address may hold at most max-conns-per-ip connections; past it a new
// one is answered 429 and closed; a freed slot is usable again.
func TestConnectionCapPerIP(t *testing.T) {
	const limit = 5
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.RateLimits.Allow = nil
		c.MaxConnsPerIP = limit
	}))
	var held []*transporttest.Client
	for range limit {
		held = append(held, e.Dial(t, "ana", charla.RoleAgent))
	}
	conn, err := net.Dial("tcp", e.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	_ = conn.SetReadDeadline(time.Now().Add(transporttest.Wait))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("connection %d: %v %v, want 429", limit+1, resp, err)
	}
	held[0].Close()
	deadline := time.Now().Add(transporttest.Wait)
	for {
		c, err := transporttest.DialURL(t, e.URL("ana", charla.RoleAgent), nil)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a freed slot is not given back: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Allow-listed addresses are exempt.
	free := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) { c.MaxConnsPerIP = limit }))
	for range 2 * limit {
		free.Dial(t, "ana", charla.RoleAgent)
	}
}

// The HTTP server's write and read timeouts never reach a WebSocket: it
// lives and works well past them.
func TestWebSocketOutlivesHTTPTimeouts(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.ConnectTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	}))
	ana := e.Dial(t, "ana", charla.RoleAgent)
	time.Sleep(time.Second)
	for i := range 3 {
		if f := sendOne(t, ana, "c1"); f.Type != wire.TypeAck {
			t.Fatalf("send %d after the timeouts: %+v", i, f)
		}
		time.Sleep(400 * time.Millisecond)
	}
}

func TestEdgeConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*transport.Config)
		want string
	}{
		{"wildcard origin", func(c *transport.Config) { c.Origins = transport.OriginPolicy{"https://*.example.com"} }, ""},
		{"bad wildcard", func(c *transport.Config) { c.Origins = transport.OriginPolicy{"https://a.*.example.com"} }, "allowed-origins"},
		{"origin with a path", func(c *transport.Config) { c.Origins = transport.OriginPolicy{"https://example.com/app"} }, "is not an origin"},
		{"negative cap", func(c *transport.Config) { c.MaxConnsPerIP = -1 }, "max-conns-per-ip"},
		{"tiny body", func(c *transport.Config) { c.MaxRequestBytes = 10 }, "max-request-bytes"},
		{"media below request", func(c *transport.Config) { c.MaxMediaBytes = 1024 }, "max-media-bytes"},
		{"no write timeout", func(c *transport.Config) { c.WriteTimeout = 0 }, "http-write-timeout must be positive"},
		{"read below connect", func(c *transport.Config) { c.ReadTimeout = time.Second }, "http-read-timeout"},
		{"bad allow-list", func(c *transport.Config) { c.RateLimits.Allow = []string{"x"} }, "rate-limit-allow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := transport.DefaultConfig()
			c.Auth = transport.Authenticator{Mode: transport.AuthDev}
			tc.edit(&c)
			err := c.Validate()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}
