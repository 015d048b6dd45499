package transport

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"charla"
	"charla/actors"
	"charla/ratelimit"
	"charla/wire"
)

// The edge's guards, in front of every endpoint of the mux (edge): security
// headers, User-Agent deny rules, request body limits, CORS and rate limits.
// Endpoints added to the mux get them all without a line of their own; the
// tables below say which rate-limit class and body limit a path gets.
//
// Timeouts (Config.ReadTimeout, WriteTimeout, IdleTimeout) are the
// http.Server's. They never reach a WebSocket: gws clears the connection's
// deadlines once its handshake answer is written, and from then on the conn
// actor's heartbeat and per-write deadlines govern it. A long-poll must
// answer within WriteTimeout, which is why its default (60 s) is twice the
// longest poll wait (30 s); a handler that must wait longer extends its own
// deadline with http.ResponseController.SetWriteDeadline.

// ServerOption adjusts a Server at NewServer.
type ServerOption func(*Server)

// WithLimits makes the server use lim, the registry the actor tree limits
// WebSocket sends with (actors.Dependencies.Limiter), so that a user's chat
// bucket is one across every transport. Without it the server builds its
// own from Config.RateLimits, and WebSocket sends are limited only if the
// actors were given one.
func WithLimits(lim *ratelimit.Registry) ServerOption {
	return func(s *Server) { s.limits = lim }
}

// Limits is the server's rate-limit registry.
func (s *Server) Limits() *ratelimit.Registry { return s.limits }

func (s *Server) initLimits() {
	if s.limits == nil {
		lim, err := ratelimit.New(s.cfg.RateLimits)
		if err != nil {
			// Validate refuses such a configuration before serve; a test
			// that skips Validate gets no limits rather than a panic.
			s.log.Error().Err(err).Msg("rate limits off")
			lim, _ = ratelimit.New(ratelimit.Config{})
		}
		s.limits = lim
	}
	s.conns = &ipConns{max: s.cfg.MaxConnsPerIP, limits: s.limits, n: map[netip.Addr]int{}}
}

func (c Config) validateLimits() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	errs = append(errs, flatten(c.RateLimits.Validate())...)
	if c.MaxConnsPerIP < 0 {
		bad("max-conns-per-ip must not be negative (got %d; 0 = no cap)", c.MaxConnsPerIP)
	}
	if c.MaxRequestBytes < 1024 {
		bad("max-request-bytes must be at least 1024 (got %d)", c.MaxRequestBytes)
	}
	if c.MaxMediaBytes < c.MaxRequestBytes {
		bad("max-media-bytes (%d) must not be below max-request-bytes (%d)", c.MaxMediaBytes, c.MaxRequestBytes)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"http-read-timeout", c.ReadTimeout}, {"http-write-timeout", c.WriteTimeout}, {"http-idle-timeout", c.IdleTimeout}} {
		if d.v <= 0 {
			bad("%s must be positive (got %s)", d.name, d.v)
		}
	}
	if c.ReadTimeout > 0 && c.ConnectTimeout > c.ReadTimeout {
		bad("http-read-timeout (%s) must not be shorter than connect-timeout (%s), which bounds the headers alone", c.ReadTimeout, c.ConnectTimeout)
	}
	return errs
}

// flatten undoes errors.Join, so each problem is listed on its own.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// routeClasses says which rate-limit class a path is in (the first match;
// "/v1/media" matches itself and everything under "/v1/media/"). Anything
// not listed is ratelimit.API. The middleware takes the token: a handler
// must not call the registry again for the same request.
//
// Chat is not here: every send, over WebSocket, POST /v1/send or a poll
// session's POST /v1/frames, is carried by a conn actor, which takes the
// token from the user's chat bucket (actors.SendLimiter); those requests
// pay an api token at the edge as any other.
var routeClasses = []struct {
	prefix string
	class  ratelimit.Class
}{
	{"/v1/ws", ratelimit.Upgrade}, // per client IP only; the sends inside are limited by the conn actor
	{"/v1/auth", ratelimit.Auth},  // login, refresh, logout
	{"/v1/media", ratelimit.Media},
}

// unlimitedPaths are never rate limited: health probes and metrics scrapes
// come from the platform, at its own pace, and refusing one would take a
// healthy engine out of service.
// The WhatsApp webhook is the platform's too, and its signature is its
// guard (a refusal would only make the platform redeliver).
var unlimitedPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true, webhookPath: true}

// under reports whether path is prefix or below it.
func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func classOf(path string) (ratelimit.Class, bool) {
	if unlimitedPaths[path] {
		return 0, false
	}
	for _, rc := range routeClasses {
		if under(path, rc.prefix) {
			return rc.class, true
		}
	}
	return ratelimit.API, true
}

// edge wraps the mux with the guards, in order: security headers first so
// that every answer (refusals too) carries them.
func (s *Server) edge(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "frame-ancestors 'none'")
		h.Set("X-Frame-Options", "DENY") // frame-ancestors for browsers that predate CSP 2
		h.Set("Referrer-Policy", "no-referrer")
		if s.limits.Denied(r.UserAgent()) {
			refuseRequest(w, r, charla.Errorf(charla.CodeForbidden, "this client is not allowed"))
			return
		}
		if s.limitBody(w, r) && s.cors(w, r) && s.rateLimit(w, r) {
			next.ServeHTTP(w, r)
		}
	})
}

// limitBody refuses a request whose declared body is over its endpoint's
// limit before reading any of it, and caps what is read of the rest. A
// refused request's connection is closed rather than drained: a client that
// promises 100,000 bytes and sends none would otherwise hold it until the
// read timeout.
func (s *Server) limitBody(w http.ResponseWriter, r *http.Request) bool {
	limit := s.cfg.MaxRequestBytes
	switch {
	case r.Method == http.MethodGet || r.Method == http.MethodHead || r.Method == http.MethodOptions:
		limit = 0
	case under(r.URL.Path, "/v1/media"):
		limit = s.cfg.MaxMediaBytes
	case r.URL.Path == webhookPath:
		limit = WebhookMaxBytes
	}
	if r.ContentLength > limit || r.ContentLength < 0 && limit == 0 {
		w.Header().Set("Connection", "close")
		e := charla.Errorf(charla.CodeTooLarge, "request body over %d bytes", limit)
		if limit == 0 {
			e = charla.Errorf(charla.CodeTooLarge, "a %s request carries no body", r.Method)
		}
		refuseRequest(w, r, e)
		return false
	}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = http.MaxBytesReader(w, r.Body, limit)
	}
	return true
}

// CORS: browsers on the origins of --allowed-origins may call the REST and
// long-poll endpoints. The WebSocket endpoint is left to handleWS, which
// refuses a disallowed origin with 403 (CORS does not apply to upgrades).
//
// Credentials rule: Access-Control-Allow-Credentials is sent only to an
// origin listed exactly or by a wildcard entry, never under "*" (which
// would let any site act with a user's cookies). The engine authenticates
// with a bearer token, not cookies, so credentials are needed only for
// cookie-based login endpoints; under "*" such endpoints stay same-origin.
//
// A request from a disallowed origin that changes something (any method but
// GET and HEAD) or a preflight is refused with 403: without that, a page on
// any site could still make a user's browser send it, unread but executed.
// A GET from such an origin is served without CORS headers, so the browser
// withholds the answer from the page.
func (s *Server) cors(w http.ResponseWriter, r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" || under(r.URL.Path, "/v1/ws") {
		return true
	}
	h := w.Header()
	h.Add("Vary", "Origin")
	preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
	if !s.cfg.Origins.Allowed(r) {
		if preflight || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			refuseRequest(w, r, charla.Errorf(charla.CodeForbidden, "origin %q is not allowed", origin))
			return false
		}
		return true
	}
	h.Set("Access-Control-Allow-Origin", origin)
	if _, byName := s.cfg.Origins.match(origin); byName {
		h.Set("Access-Control-Allow-Credentials", "true")
	}
	h.Set("Access-Control-Expose-Headers", "Retry-After")
	if !preflight {
		return true
	}
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, POST, PUT, PATCH, DELETE")
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, Idempotency-Key")
	h.Set("Access-Control-Max-Age", "600")
	w.WriteHeader(http.StatusNoContent)
	return false
}

// match reports whether origin is on the list: listed is true for any
// match, byName only for an exact or wildcard entry (not "*").
func (p OriginPolicy) match(origin string) (listed, byName bool) {
	for _, o := range p {
		switch {
		case o == "*":
			listed = true
		case strings.EqualFold(strings.TrimSuffix(o, "/"), origin) || wildcardMatch(o, origin):
			return true, true
		}
	}
	return listed, false
}

// wildcardMatch matches "scheme://*.domain[:port]" against an origin: same
// scheme, and a host of one or more labels followed by .domain[:port].
func wildcardMatch(pattern, origin string) bool {
	pscheme, prest, ok := strings.Cut(pattern, "://*.")
	if !ok {
		return false
	}
	scheme, authority, ok := strings.Cut(origin, "://")
	if !ok || !strings.EqualFold(scheme, pscheme) {
		return false
	}
	authority = strings.ToLower(authority)
	sub, found := strings.CutSuffix(authority, "."+strings.ToLower(prest))
	return found && sub != "" && !strings.ContainsAny(sub, ":/@?#") && !strings.HasPrefix(sub, ".") && !strings.HasSuffix(sub, ".")
}

// validOrigin checks one --allowed-origins entry.
func validOrigin(o string) error {
	if o == "*" {
		return nil
	}
	if !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
		return fmt.Errorf("%q must be * or start with http:// or https://", o)
	}
	_, rest, _ := strings.Cut(o, "://")
	if strings.HasPrefix(rest, "*.") {
		rest = strings.TrimPrefix(rest, "*.")
		if rest == "" || strings.Contains(rest, "*") {
			return fmt.Errorf("%q: a wildcard entry is scheme://*.domain", o)
		}
		return nil
	}
	if strings.Contains(rest, "*") {
		return fmt.Errorf("%q: * may only open the host, as in https://*.example.com", o)
	}
	if u, err := url.Parse(o); err != nil || u.Host == "" || strings.TrimSuffix(u.Path, "/") != "" {
		return fmt.Errorf("%q is not an origin (scheme://host[:port])", o)
	}
	return nil
}

// rateLimit takes the request's token from its class's bucket: the
// authenticated user's, or the client IP's for anonymous requests and for
// WebSocket upgrades. Allow-listed clients are not limited. A refusal is 429
// with Retry-After (whole seconds, rounded up) and retry_after_ms.
func (s *Server) rateLimit(w http.ResponseWriter, r *http.Request) bool {
	class, limited := classOf(r.URL.Path)
	if !limited || s.limits.Limit(class) == 0 {
		return true
	}
	ip, ok := s.limits.ClientIP(r)
	if ok && s.limits.Exempt(ip) {
		return true
	}
	key := ratelimit.IPKey(ip)
	if class != ratelimit.Upgrade && r.Method != http.MethodOptions {
		if id, err := s.cfg.Auth.Authenticate(r); err == nil {
			key = ratelimit.UserKey(id.User.ID)
		}
	}
	allowed, wait := s.limits.Allow(class, key)
	if allowed {
		return true
	}
	e := charla.Errorf(charla.CodeRateLimited, "%s rate limit reached; retry in %s", class, wait.Round(time.Millisecond))
	e.RetryAfter = wait
	refuseRequest(w, r, e)
	return false
}

// refuseRequest answers a request the guards stopped, in its endpoint's error
// shape: the REST Problem ({"error":{…}}) for the REST endpoints, the
// upgrade refusal's {"code","message"} for /v1/ws; both with
// retry_after_ms and Retry-After (whole seconds, rounded up) when e says
// when to come back.
func refuseRequest(w http.ResponseWriter, r *http.Request, e *charla.Error) {
	retry := wire.RetryAfterMillis(e.RetryAfter)
	if !under(r.URL.Path, "/v1/ws") {
		writeProblemRetry(w, e, retry)
		return
	}
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((retry+999)/1000, 10))
	}
	writeJSON(w, ProblemStatus(e.Code), struct {
		Code       charla.Code `json:"code"`
		Message    string      `json:"message"`
		RetryAfter int64       `json:"retry_after_ms,omitempty"`
	}{e.Code, e.Message, retry})
}

// connOptions are the conn actor's options for the client of r: an
// allow-listed client's sends are not limited either.
func (s *Server) connOptions(r *http.Request) []actors.ConnOption {
	if ip, ok := s.limits.ClientIP(r); ok && s.limits.Exempt(ip) {
		return []actors.ConnOption{actors.Unlimited()}
	}
	return nil
}
