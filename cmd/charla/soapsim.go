package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"

	"charla/soapbridge/soapsim"
)

// defaultSimAddr is where `charla soapsim` listens, and what `make run`
// points the engine's --soap-url at.
const defaultSimAddr = "127.0.0.1:8081"

// soapsimCmd runs the inventory service simulator until SIGTERM or SIGINT:
// the WSDL at /?wsdl, the service at /, faults and counters under /admin/
// (see soapbridge/soapsim).
func soapsimCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var addr, catalog, logFormat string
	fs := flagSet{
		{name: "addr", env: "CHARLA_SOAPSIM_ADDR", usage: "listen address (host:port)", value: strVar(&addr, defaultSimAddr)},
		{name: "catalog", env: "CHARLA_SOAPSIM_CATALOG", usage: "CSV catalogue (sku,name,quantity,warehouse); empty = 10,000 generated items", value: strVar(&catalog, "")},
		{name: "log-format", env: "CHARLA_LOG_FORMAT", usage: "json or console", value: strVar(&logFormat, "console")},
	}
	err := fs.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if _, _, aerr := net.SplitHostPort(addr); aerr != nil {
		err = errors.Join(err, fmt.Errorf("addr %q: %v", addr, aerr))
	}
	if logFormat != "json" && logFormat != "console" {
		err = errors.Join(err, fmt.Errorf("log-format %q: must be json or console", logFormat))
	}
	if err != nil {
		fmt.Fprintf(stderr, "charla soapsim: invalid configuration:\n%s\n", indent(err))
		return 2
	}
	var opts soapsim.Options
	if catalog != "" {
		if opts.Items, err = soapsim.LoadCSVFile(catalog); err != nil {
			fmt.Fprintf(stderr, "charla soapsim: catalog %s: %v\n", catalog, err)
			return 2
		}
	}
	log := config{LogLevel: "info", LogFormat: logFormat}.logger(stderr)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := soapsim.Run(ctx, addr, opts, log.With().Str("component", "soapsim").Logger()); err != nil {
		fmt.Fprintf(stderr, "charla soapsim: %v\n", err)
		return 1
	}
	return 0
}
