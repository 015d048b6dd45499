// Package transport is the engine's edge: the HTTP server, the WebSocket
// endpoint of protocol v1 (gws), authentication and origin checks. It
// decodes and forwards; all connection state lives in the actors.
package transport

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/auth"
	"charla/docs"
	"charla/media"
	"charla/ops"
	"charla/ratelimit"
	"charla/web"
	"charla/whatsapp"
)

// Config is what the edge needs; cmd/charla fills it from flags and checks
// it with Validate. The comment of each field starts with the setting's name
// as Validate spells it, the engine's flag (README.md's configuration table).
type Config struct {
	Auth             Authenticator // auth-mode and jwt-secret
	Origins          OriginPolicy  // allowed-origins
	MaxFrameBytes    int           // max-frame-bytes: larger client frames close the connection with 1009
	ConnectTimeout   time.Duration // connect-timeout: HTTP request headers (the handshake) must arrive within it
	HeartbeatTimeout time.Duration // heartbeat-timeout: also bounds every socket write; the actors' own, shared
	Login            *auth.Service // access-token-ttl, refresh-token-ttl: agent login (/v1/auth/*); nil answers 503 (login.go)
	Media            *media.Store  // media under data-dir: /v1/media; nil answers 503 (media.go)
	// whatsapp-*: the WhatsApp channel; without an app secret the webhook
	// answers 503 (webhook.go) and /readyz says "whatsapp":"off".
	WhatsApp whatsapp.Config

	// The edge's guards (limits.go): rate limits, per-IP connections,
	// request bodies and the HTTP server's timeouts.
	RateLimits      ratelimit.Config // rate-limit-*, trusted-proxies
	MaxConnsPerIP   int              // max-conns-per-ip: concurrent TCP connections from one peer address (0 = no cap); allow-listed and trusted-proxy peers are exempt
	MaxRequestBytes int64            // max-request-bytes: largest HTTP request body (413 past it); GET, HEAD and OPTIONS may carry none
	MaxMediaBytes   int64            // max-media-bytes: largest request body under /v1/media
	ReadTimeout     time.Duration    // http-read-timeout: a whole HTTP request, body included, must arrive within it
	WriteTimeout    time.Duration    // http-write-timeout: an HTTP answer must be written within it; longer than the longest long-poll wait
	IdleTimeout     time.Duration    // http-idle-timeout: an idle keep-alive connection is closed after it
}

// MinSecretBytes is the shortest HS256 secret Validate accepts in jwt mode:
// a shorter one can be brute-forced from a single token.
const MinSecretBytes = 32

// DefaultConfig returns the engine's defaults, the ones README.md's
// configuration table lists: jwt auth (whose secret the caller must supply),
// same-origin browsers only, and the actors' heartbeat timeout, since the
// two must agree.
func DefaultConfig() Config {
	return Config{
		Auth:             Authenticator{Mode: AuthJWT, MaxSession: 24 * time.Hour},
		MaxFrameBytes:    64 << 10,
		ConnectTimeout:   15 * time.Second,
		HeartbeatTimeout: actors.DefaultConfig().HeartbeatTimeout,
		RateLimits:       ratelimit.DefaultConfig(),
		MaxConnsPerIP:    4096,
		MaxRequestBytes:  1 << 20,
		MaxMediaBytes:    media.MaxBytes, // the largest type media accepts (documents); each type has its own cap below it
		ReadTimeout:      30 * time.Second,
		WriteTimeout:     60 * time.Second,
		IdleTimeout:      60 * time.Second,
		WhatsApp:         whatsapp.DefaultConfig(),
	}
}

// Validate reports every problem of c at once (joined with errors.Join), so
// that an operator fixes a configuration in one round. Each problem names its
// setting as the field's comment does.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.Auth.Mode {
	case AuthJWT:
		if len(c.Auth.Secret) < MinSecretBytes {
			bad("jwt-secret must be at least %d bytes in auth-mode=jwt (got %d); use auth-mode dev for development", MinSecretBytes, len(c.Auth.Secret))
		}
	case AuthDev:
	default:
		bad("auth-mode %q: must be jwt or dev", c.Auth.Mode)
	}
	if c.Auth.MaxSession < 0 {
		bad("max-session must not be negative (got %s)", c.Auth.MaxSession)
	}
	for _, o := range c.Origins {
		if err := validOrigin(o); err != nil {
			bad("allowed-origins: %v", err)
		}
	}
	if c.MaxFrameBytes < 1024 {
		bad("max-frame-bytes must be at least 1024 (got %d)", c.MaxFrameBytes)
	}
	if c.ConnectTimeout <= 0 {
		bad("connect-timeout must be positive (got %s)", c.ConnectTimeout)
	}
	if c.HeartbeatTimeout <= 0 {
		bad("heartbeat-timeout must be positive (got %s)", c.HeartbeatTimeout)
	}
	errs = append(errs, c.validateLimits()...)
	errs = append(errs, flatten(c.WhatsApp.Validate())...)
	return errors.Join(errs...)
}

// Server serves protocol v1 over HTTP.
type Server struct {
	cfg      Config
	sys      *actors.System
	log      zerolog.Logger
	upgrader *gws.Upgrader
	http     *http.Server
	limits   *ratelimit.Registry
	conns    *ipConns
	polls    *pollRegistry   // poll.go
	metrics  http.Handler    // ops.go; nil: no /metrics on this listener
	state    atomic.Int32    // a serverState
	settings RuntimeSettings // ops.go; nil: no runtime settings
	// readyExtra are the details other parts add to /readyz.
	readyExtra map[string]func() any
}

// NewServer builds the edge over a running actor system.
func NewServer(cfg Config, sys *actors.System, log zerolog.Logger, opts ...ServerOption) *Server {
	s := &Server{cfg: cfg, sys: sys, log: log}
	for _, opt := range opts {
		opt(s)
	}
	s.initLimits()
	s.upgrader = gws.NewUpgrader(wsEvents{}, &gws.ServerOption{
		ReadMaxPayloadSize: cfg.MaxFrameBytes,
		CheckUtf8Enabled:   true,
		Recovery:           gws.Recovery,
		HandshakeTimeout:   cfg.ConnectTimeout,
		Logger:             gwsLogger{log},
	})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/ws", s.handleWS)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.Handle("GET /readyz", s.ReadyHandler(false))
	s.routeHistory(mux)       // history.go
	s.routeOps(mux)           // ops.go: /metrics
	s.routeConversations(mux) // conversations.go
	mux.HandleFunc("POST /v1/auth/login", s.handleLogin)
	mux.HandleFunc("POST /v1/auth/refresh", s.handleRefresh)
	mux.HandleFunc("POST /v1/auth/logout", s.handleLogout)
	mux.HandleFunc("POST /v1/media", s.handleMediaUpload)
	mux.HandleFunc("GET /v1/media/{id}", s.handleMediaGet)
	s.routeWebhook(mux) // webhook.go
	mux.Handle("GET /v1/openapi.json", docs.OpenAPIHandler())
	web.Register(mux) // charla.js, the agent panel at /, the dashboard at /dashboard
	s.http = &http.Server{
		Handler:           s.edge(s.gateFlags(mux)),
		ReadHeaderTimeout: cfg.ConnectTimeout,
		// Hijacked WebSockets are outside these: gws clears the deadlines
		// once its handshake answer is written (limits.go says more).
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
		ErrorLog:     nil,
	}
	s.routePoll(mux, s.http) // poll.go
	return s
}

// Serve accepts connections on ln until Shutdown. It returns nil after a
// Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.state.CompareAndSwap(int32(stateStarting), int32(stateServing))
	if err := s.http.Serve(s.conns.wrap(ln)); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve %s: %w", ln.Addr(), err)
	}
	return nil
}

// Shutdown stops accepting, then drains the actor system: clients are told
// to reconnect (1012) once their in-flight sends are acked.
func (s *Server) Shutdown(ctx context.Context) error {
	s.state.Store(int32(stateDraining))
	// WebSockets are hijacked, so http.Server.Shutdown does not wait for them:
	// it only closes the listener and idle HTTP connections.
	herr := s.http.Shutdown(ctx)
	return errors.Join(herr, s.sys.Shutdown(ctx))
}

func (s *Server) handleWS(w http.ResponseWriter, r *http.Request) {
	if status, err := checkHandshake(r); err != nil {
		if status == http.StatusUpgradeRequired {
			w.Header().Set("Sec-WebSocket-Version", "13")
		}
		writeError(w, status, err)
		return
	}
	if !s.cfg.Origins.Allowed(r) {
		writeError(w, http.StatusForbidden, charla.Errorf(charla.CodeForbidden, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	id, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		writeError(w, http.StatusUnauthorized, charla.AsError(err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ConnectTimeout)
	defer cancel()
	s.upgrade(ctx, w, r, id)
}

// Readiness is /readyz's answer. A store that is down leaves the engine
// ready but degraded: chat goes on from the spool. Anyone gets Status; the
// details (load and dependency states an attacker should not read) go to
// admins and to the private listeners only.
type Readiness struct {
	// Status is one word for load balancers: "ready" or "degraded" (200:
	// send traffic), "starting" or "draining" (503: do not).
	Status string `json:"status"`
	*ReadinessDetails
}

// The readiness statuses.
const (
	StatusStarting = "starting"
	StatusReady    = "ready"
	StatusDegraded = "degraded"
	StatusDraining = "draining"
)

// HTTPStatus is the status code /readyz answers r with: 503 while the
// engine is starting or draining, 200 otherwise (degraded included).
func (r Readiness) HTTPStatus() int {
	if r.Status == StatusStarting || r.Status == StatusDraining {
		return http.StatusServiceUnavailable
	}
	return http.StatusOK
}

// ReadinessDetails are the figures behind a Readiness status.
type ReadinessDetails struct {
	Store       string `json:"store"`        // the store breaker: closed, open or half_open
	SpoolDepth  int64  `json:"spool_depth"`  // messages acked from the spool, not yet in the store
	DeadLetters int64  `json:"dead_letters"` // spooled messages the store refused, set aside (see the log)
	Connections int64  `json:"connections"`  // open client connections
	// SOAP is the inventory bridge: "off" when no --soap-url is set, else
	// its breaker (closed, open, half_open); chat is unaffected either way.
	SOAP string `json:"soap"`
	// WhatsApp is the channel: "off" without --whatsapp-app-secret, else
	// "on".
	WhatsApp string `json:"whatsapp"`
	// Alerts are the alerts firing now (docs/PROTOCOL.md's alert frame).
	Alerts []ops.Event `json:"alerts,omitempty"`
	// Extra holds what other parts of the engine add (WithReadinessDetails):
	// the runtime settings and feature flags under "settings".
	Extra map[string]any `json:"extra,omitempty"`
}

// WithReadinessDetails adds name to /readyz's details, read at each
// request by f.
func WithReadinessDetails(name string, f func() any) ServerOption {
	return func(s *Server) {
		if s.readyExtra == nil {
			s.readyExtra = map[string]func() any{}
		}
		s.readyExtra[name] = f
	}
}

// Readiness reports the engine's state with its details.
func (s *Server) Readiness() Readiness {
	st := s.sys.Stats()
	d := &ReadinessDetails{Store: actors.BreakerState(st.StoreBreaker.Load()).String(),
		SpoolDepth: st.SpoolDepth.Load(), DeadLetters: st.DeadLetters.Load(), Connections: st.ConnsActive.Load(), SOAP: s.sys.SOAPState(), WhatsApp: "off",
		Alerts: s.firingAlerts()}
	for name, f := range s.readyExtra {
		if d.Extra == nil {
			d.Extra = map[string]any{}
		}
		d.Extra[name] = f()
	}
	if s.cfg.WhatsApp.Enabled() {
		d.WhatsApp = "on"
	}
	r := Readiness{Status: StatusReady, ReadinessDetails: d}
	switch serverState(s.state.Load()) {
	case stateStarting:
		r.Status = StatusStarting
	case stateDraining:
		r.Status = StatusDraining
	default:
		if d.Store != actors.BreakerClosed.String() || d.SpoolDepth > 0 || (d.SOAP != "off" && d.SOAP != actors.BreakerClosed.String()) {
			r.Status = StatusDegraded
		}
	}
	return r
}

// serverState is where the edge is in its life; it only moves forward.
type serverState int32

const (
	stateStarting serverState = iota // built, not serving yet
	stateServing
	stateDraining // Shutdown has begun
)

// ReadyHandler answers /readyz: details always when private (a listener
// only the operator reaches), else to admins only.
func (s *Server) ReadyHandler(private bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ready := s.Readiness()
		if !private {
			if id, err := s.cfg.Auth.Authenticate(r); err != nil || id.User.Role != charla.RoleAdmin {
				ready.ReadinessDetails = nil
			}
		}
		writeJSON(w, ready.HTTPStatus(), ready)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers an HTTP request with the protocol's error object.
func writeError(w http.ResponseWriter, status int, e *charla.Error) {
	writeJSON(w, status, map[string]string{"code": string(e.Code), "message": e.Message})
}

// gwsLogger routes gws's own error lines (panics it recovered) to zerolog.
type gwsLogger struct{ log zerolog.Logger }

func (l gwsLogger) Error(v ...any) { l.log.Error().Str("component", "gws").Msg(fmt.Sprint(v...)) }
