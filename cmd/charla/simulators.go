package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"

	"github.com/rs/zerolog"
)

// simulator is what the stand-ins for other people's services (soapsim,
// fakegraph) share on the command line: a listen address, a log format,
// the same validation and the same run until SIGTERM or SIGINT.
type simulator struct {
	name      string // the subcommand: soapsim, fakegraph
	addr      string
	logFormat string
}

// settings are the simulator's own settings followed by its extra ones.
func (s *simulator) settings(envPrefix, defaultAddr string, extra ...setting) flagSet {
	return append(flagSet{
		{name: "addr", env: envPrefix + "_ADDR", usage: "listen address (host:port)", value: strVar(&s.addr, defaultAddr)},
		{name: "log-format", env: "CHARLA_LOG_FORMAT", usage: "json or console", value: strVar(&s.logFormat, "console")},
	}, extra...)
}

// parse reads fs and checks the shared settings, then check's: every
// problem is listed at once. done reports an answered --help or a refused
// configuration, with the exit code.
func (s *simulator) parse(fs flagSet, args []string, getenv func(string) string, stdout, stderr io.Writer, check func() error) (code int, done bool) {
	err := fs.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0, true
	}
	if _, _, aerr := net.SplitHostPort(s.addr); aerr != nil {
		err = errors.Join(err, fmt.Errorf("addr %q: %v", s.addr, aerr))
	}
	if s.logFormat != "json" && s.logFormat != "console" {
		err = errors.Join(err, fmt.Errorf("log-format %q: must be json or console", s.logFormat))
	}
	if check != nil {
		err = errors.Join(err, check())
	}
	if err != nil {
		fmt.Fprintf(stderr, "charla %s: invalid configuration:\n%s\n", s.name, indent(err))
		return 2, true
	}
	return 0, false
}

// run serves until SIGTERM or SIGINT.
func (s *simulator) run(ctx context.Context, stderr io.Writer, serve func(ctx context.Context, log zerolog.Logger) error) int {
	log := config{LogLevel: "info", LogFormat: s.logFormat}.loggerTo(stderr)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, log.With().Str("component", s.name).Logger()); err != nil {
		fmt.Fprintf(stderr, "charla %s: %v\n", s.name, err)
		return 1
	}
	return 0
}
