package main

import (
	"context"
	"fmt"
	"io"

	"github.com/rs/zerolog"

	"charla/soapbridge/soapsim"
)

// defaultSimAddr is where `charla soapsim` listens, and what `make run`
// points the engine's --soap-url at.
const defaultSimAddr = "127.0.0.1:8081"

// soapsimCmd runs the inventory service simulator until SIGTERM or SIGINT:
// the WSDL at /?wsdl, the service at /, faults and counters under /admin/
// (see soapbridge/soapsim).
func soapsimCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	sim := simulator{name: "soapsim"}
	var catalog string
	fs := sim.settings("CHARLA_SOAPSIM", defaultSimAddr,
		setting{name: "catalog", env: "CHARLA_SOAPSIM_CATALOG", usage: "CSV catalogue (sku,name,quantity,warehouse); empty = 10,000 generated items", value: strVar(&catalog, "")})
	if code, done := sim.parse(fs, args, getenv, stdout, stderr, nil); done {
		return code
	}
	var opts soapsim.Options
	if catalog != "" {
		var err error
		if opts.Items, err = soapsim.LoadCSVFile(catalog); err != nil {
			fmt.Fprintf(stderr, "charla soapsim: catalog %s: %v\n", catalog, err)
			return 2
		}
	}
	return sim.run(ctx, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return soapsim.Run(ctx, sim.addr, opts, log)
	})
}
