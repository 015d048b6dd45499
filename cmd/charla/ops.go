package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"charla/metrics"
	"charla/ops"
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

// runtimeSettings builds the settings that change without a restart from
// the engine's startup values, with the settings file applied over them.
func (c config) runtimeSettings(log zerolog.Logger, apply ops.Appliers) (*ops.Runtime, error) {
	rt, err := ops.NewRuntime(ops.InitialSettings(c.LogLevel, c.Transport.RateLimits, c.Actors.Alerts.Rules), apply, log)
	if err != nil {
		return nil, err
	}
	if c.SettingsFile != "" {
		if _, err := rt.Reload(c.SettingsFile); err != nil {
			return nil, err
		}
	}
	return rt, nil
}

// indentAll puts each problem of a joined error on its own line, for a
// problem that has several inside it (a settings file's).
func indentAll(err error) string {
	var out []string
	for _, e := range flatten(err) {
		out = append(out, e.Error())
	}
	return strings.Join(out, "; ")
}

// reloadOnHUP reloads the settings file on every SIGHUP until ctx ends.
func reloadOnHUP(ctx context.Context, rt *ops.Runtime, path string, log zerolog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if path == "" {
					log.Warn().Msg("SIGHUP: no --settings-file to reload")
					continue
				}
				if _, err := rt.Reload(path); err == nil {
					log.Info().Str("file", path).Msg("SIGHUP: runtime settings reloaded")
				}
			}
		}
	}()
}
