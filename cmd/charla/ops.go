package main

import (
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"charla/metrics"
	"charla/transport"
)

// privateMux is what every private listener serves (--debug-addr,
// --metrics-addr): liveness, the detailed readiness and, with metrics on,
// /metrics, all without credentials: only those the operator lets reach the
// address can ask.
func privateMux(srv *transport.Server, reg *metrics.Metrics) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"status":"ok"}`)
	})
	mux.Handle("GET /readyz", srv.ReadyHandler(true))
	if reg != nil {
		mux.Handle("GET /metrics", reg.Handler())
	}
	return mux
}

// servePrivate serves mux on addr until the returned stop is called.
func servePrivate(addr, what string, mux *http.ServeMux, log zerolog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", what, err)
	}
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Msg(what + " listening")
	return func() { _ = s.Close() }, nil
}
