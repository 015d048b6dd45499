package transport_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"

	"charla/transport/transporttest"
)

// The upgrade is held to RFC 6455 §4.2.1 before anything else looks at it.
func TestHandshakeFollowsRFC6455(t *testing.T) {
	e := transporttest.Start(t)
	addr := strings.TrimPrefix(e.URL("ana", "agent"), "ws://")
	addr = addr[:strings.IndexByte(addr, '/')]
	const goodKey = "dGhlIHNhbXBsZSBub25jZQ=="
	for _, tc := range []struct {
		name        string
		proto       string
		headers     map[string]string
		status      int
		wantVersion bool // the answer lists Sec-WebSocket-Version: 13
	}{
		{"a valid upgrade", "HTTP/1.1", nil, http.StatusSwitchingProtocols, false},
		{"version 8", "HTTP/1.1", map[string]string{"Sec-WebSocket-Version": "8"}, http.StatusUpgradeRequired, true},
		{"no version", "HTTP/1.1", map[string]string{"Sec-WebSocket-Version": ""}, http.StatusUpgradeRequired, true},
		{"a key that is not base64", "HTTP/1.1", map[string]string{"Sec-WebSocket-Key": "x"}, http.StatusBadRequest, false},
		{"a key of 15 bytes", "HTTP/1.1", map[string]string{"Sec-WebSocket-Key": "AAAAAAAAAAAAAAAAAAAA"}, http.StatusBadRequest, false},
		{"no key", "HTTP/1.1", map[string]string{"Sec-WebSocket-Key": ""}, http.StatusBadRequest, false},
		{"HTTP/1.0", "HTTP/1.0", nil, http.StatusBadRequest, false},
		{"no Upgrade header", "HTTP/1.1", map[string]string{"Upgrade": ""}, http.StatusBadRequest, false},
		{"Connection lists upgrade among others", "HTTP/1.1", map[string]string{"Connection": "keep-alive, Upgrade"}, http.StatusSwitchingProtocols, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := map[string]string{"Host": addr, "Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": goodKey, "Sec-WebSocket-Version": "13"}
			for k, v := range tc.headers {
				h[k] = v
			}
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			var req strings.Builder
			fmt.Fprintf(&req, "GET /v1/ws?user=ana&role=agent %s\r\n", tc.proto)
			for k, v := range h {
				if v != "" {
					fmt.Fprintf(&req, "%s: %s\r\n", k, v)
				}
			}
			req.WriteString("\r\n")
			if _, err := conn.Write([]byte(req.String())); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %s, want %d", resp.Status, tc.status)
			}
			if got := resp.Header.Get("Sec-WebSocket-Version"); tc.wantVersion && got != "13" {
				t.Fatalf("Sec-WebSocket-Version %q, want 13", got)
			}
		})
	}
}
