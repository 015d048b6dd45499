package transport

import (
	"encoding/base64"
	"net/http"
	"strings"

	"charla"
)

// checkHandshake holds an upgrade request to RFC 6455 §4.2.1 before it
// reaches gws, which is lenient: it answers a wrong version with a bare 400
// and accepts a malformed key or an HTTP/1.0 request. It returns the status
// to answer a bad request with (426 asks for Sec-WebSocket-Version: 13).
func checkHandshake(r *http.Request) (status int, err *charla.Error) {
	bad := func(format string, args ...any) (int, *charla.Error) {
		return http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, format, args...)
	}
	if !r.ProtoAtLeast(1, 1) {
		return bad("a WebSocket upgrade needs HTTP/1.1 or later (got %s)", r.Proto)
	}
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "websocket") {
		return bad(`a WebSocket upgrade needs "Connection: Upgrade" and "Upgrade: websocket"`)
	}
	if v := r.Header.Get("Sec-WebSocket-Version"); v != "13" {
		// §4.4: the server answers 426 and lists the versions it speaks.
		return http.StatusUpgradeRequired, charla.Errorf(charla.CodeBadRequest, "Sec-WebSocket-Version %q is not supported; this server speaks 13", v)
	}
	key := r.Header.Get("Sec-WebSocket-Key")
	if raw, derr := base64.StdEncoding.DecodeString(key); derr != nil || len(raw) != 16 {
		return bad("Sec-WebSocket-Key must be 16 random bytes in base64 (got %q)", key)
	}
	return 0, nil
}

// headerHasToken reports whether a comma-separated header lists token
// (case-insensitively), as Connection: keep-alive, Upgrade does.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}
