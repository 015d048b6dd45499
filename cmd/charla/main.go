// Command charla is the Charla engine: `charla serve` runs it; `check-config`
// validates a configuration without starting; `migrate` applies pending
// PostgreSQL migrations; `chat` is a line client for a first session; `token`
// mints a development JWT; `version` prints the build. Every command takes
// --help.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/internal/heapfloor"
	"charla/metrics"
	"charla/ops"
	"charla/ratelimit"
	"charla/store"
	"charla/store/postgres"
	"charla/store/spool"
	"charla/transport"
)

const usage = `Usage: charla <command> [flags]

Commands:
  serve         run the engine (see "charla serve --help" for every setting)
  check-config  validate the settings, print every problem, exit 2 if any
  migrate       apply pending PostgreSQL migrations (--database-url or DATABASE_URL)
  migrate-store import the bbolt store of an earlier version (DIR/charla.db) into the
                append-only log: --data-dir DIR (serve also does it at start)
  chat          a line client: --addr HOST:PORT --user ID --role ROLE [--token JWT] --conv ID;
                prints every frame, sends each line typed as a message
  soapsim       the inventory service simulator: --addr HOST:PORT (127.0.0.1:8081) [--catalog FILE];
                point serve's --soap-url at it
  fakegraph     a fake WhatsApp Graph API: --addr HOST:PORT (127.0.0.1:8082) --webhook-url URL
                --whatsapp-app-secret S [--whatsapp-token T]; point serve's --whatsapp-graph-url at it
  simulate-customer  write to the engine as a WhatsApp customer (signed webhooks): --whatsapp-app-secret S
                [--from WA_ID --name N --phone-number-id ID] [--text T]; else one message per line of stdin
  agents        manage agent logins: add --email E --name N [--role agent|admin]
                (password on stdin or --password-file), list, disable --email E
  token         mint an HS256 JWT: --secret S --user ID [--role agent|customer|admin] [--ttl 24h]
  version       print the version
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}

// run is main without the process: exit codes are 0 ok, 1 runtime failure,
// 2 bad usage or configuration.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve", "check-config", "migrate":
		cfg, err := parseConfig(args[1:], getenv, stdout, args[0] != "migrate")
		if errors.Is(err, errHelp) {
			return 0
		}
		if err != nil {
			fmt.Fprintf(stderr, "charla: invalid configuration:\n%s\n", indent(err))
			return 2
		}
		if args[0] != "migrate" {
			for _, w := range cfg.warnings() {
				fmt.Fprintf(stderr, "charla: WARNING: %s\n", w)
			}
		}
		switch args[0] {
		case "check-config":
			cfg.printEffective(stdout)
			fmt.Fprintln(stdout, "configuration ok")
			return 0
		case "migrate":
			return migrate(ctx, cfg, stdout, stderr)
		}
		if err := serve(ctx, cfg, stdout, stderr); err != nil {
			fmt.Fprintf(stderr, "charla: %v\n", err)
			return 1
		}
		return 0
	case "migrate-store":
		return migrateStore(ctx, args[1:], stdout, stderr, getenv)
	case "soapsim":
		return soapsimCmd(ctx, args[1:], stdout, stderr, getenv)
	case "fakegraph":
		return fakegraphCmd(ctx, args[1:], stdout, stderr, getenv)
	case "simulate-customer":
		return simulateCustomer(ctx, args[1:], os.Stdin, stdout, stderr, getenv)
	case "token":
		return token(args[1:], stdout, stderr, getenv)
	case "agents":
		return agents(ctx, args[1:], os.Stdin, stdout, stderr, getenv)
	case "chat":
		return chat(args[1:], os.Stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, version())
		return 0
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "charla: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func indent(err error) string {
	lines := strings.Split(err.Error(), "\n")
	return "  - " + strings.Join(lines, "\n  - ")
}

// serve wires the store, the actor tree and the edge, and runs them until
// SIGTERM or SIGINT; then it drains in that order's reverse.
func serve(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log, closeLog := cfg.logger(stderr)
	defer closeLog()
	// The log level changes at runtime (runtime settings): every logger
	// derived from this one lets everything through and zerolog's global
	// level filters.
	zerolog.SetGlobalLevel(log.GetLevel())
	log = log.Level(zerolog.TraceLevel)
	// With one P (one core, GOMAXPROCS=1), the thread blocked in the group
	// commit's fdatasync holds the only P until the runtime's monitor takes
	// it back, and every actor waits meanwhile. A second P lets them run on
	// the same core: pinned to one core at 2,000 msg/s in 100 conversations,
	// send→deliver p50 went from 36 ms to 3.6 ms. It costs no CPU.
	if procs := runtime.GOMAXPROCS(0); procs < cfg.MinProcs {
		runtime.GOMAXPROCS(cfg.MinProcs)
		log.Info().Int("gomaxprocs", cfg.MinProcs).Int("was", procs).Msg("raised GOMAXPROCS to min-procs")
	}
	defer heapfloor.Keep(uint64(cfg.GCHeapFloor))()
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	node := newClusterNode(cfg.Cluster)
	dep, closeStore, storeDown, err := openStore(ctx, cfg, node, log)
	if err != nil {
		return err
	}
	defer closeStore()
	if node != nil {
		if dep.Cluster, err = node.join(ctx, dep.Store, log); err != nil {
			return err
		}
		dep.Spool = node.spool
		defer node.close(log)
	}
	if cfg.Transport.Login, cfg.Transport.Media, err = openLogin(cfg, dep.Store); err != nil {
		return err
	}
	// One registry for the edge and the conn actors: a user's chat bucket
	// is one across WebSocket and HTTP.
	limits, err := ratelimit.New(cfg.Transport.RateLimits)
	if err != nil {
		return err
	}
	dep.Limiter = limits
	if dep.Inbound, err = openInbound(cfg, dep.Store, cfg.Transport.Media); err != nil {
		return err
	}
	dep.Graph = graphOf(dep.Inbound)
	logStartupSummary(ctx, dependencyChecks(cfg, dep, storeDown, &http.Client{Timeout: startupCheckTimeout}), log)
	// The settings that change without a restart: the log level (see
	// above), the limits, the alert rules once the tree runs, the feature
	// flags.
	var sys *actors.System
	rt, err := cfg.runtimeSettings(log, ops.Appliers{LogLevel: zerolog.SetGlobalLevel, RateLimits: limits.SetRates,
		Alerts: func(r ops.Rules) error {
			if sys == nil {
				return nil // the tree starts with them (below)
			}
			return sys.SetAlertRules(r)
		}})
	if err != nil {
		return err
	}
	cfg.Actors.Alerts.Rules = rt.Current().Alerts
	dep.Flags = rt
	var reg *metrics.Metrics
	if cfg.Metrics {
		reg = metrics.New()
		dep.Histograms, dep.Metrics = reg.Histograms(), reg.Gatherer()
	}
	if sys, err = actors.NewSystem(cfg.Actors, dep); err != nil {
		return fmt.Errorf("start actors: %w", err)
	}
	if node != nil {
		node.tree.Store(sys)
		sys.Stats().Cluster.ShardsHeld.Store(int64(node.held()))
	}
	reloadOnHUP(ctx, rt, cfg.SettingsFile, log)
	srvOpts := []transport.ServerOption{transport.WithLimits(limits), transport.WithSettings(rt)}
	if node != nil {
		srvOpts = append(srvOpts, transport.WithReadinessDetails("cluster", node.readiness))
	}
	if reg != nil {
		src := metrics.Sources{System: sys, Limits: limits}
		if pg, ok := dep.Store.(metrics.StoreStats); ok {
			src.Store = pg
		}
		if err := reg.Watch(src); err != nil {
			_ = sys.Shutdown(context.Background())
			return err
		}
		srvOpts = append(srvOpts, transport.WithMetrics(reg.Handler()))
	}
	srv := transport.NewServer(cfg.Transport, sys, log, srvOpts...)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = sys.Shutdown(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	for _, w := range cfg.warnings() {
		log.Warn().Msg(w)
	}
	log.Info().Str("addr", ln.Addr().String()).Str("profile", cfg.Profile).Str("auth_mode", cfg.Transport.Auth.Mode).Str("data_dir", cfg.DataDir).Str("version", version()).Msg("charla serving")
	fmt.Fprintf(stdout, "Charla is listening on http://%s  (WebSocket: ws://%s/v1/ws)\n", ln.Addr(), ln.Addr())
	if cfg.Transport.Auth.Mode == transport.AuthDev {
		fmt.Fprintf(stdout, "dev auth: connect to ws://%s/v1/ws?user=alice&role=agent\n", ln.Addr())
		fmt.Fprintf(stdout, "or chat from another terminal: go run ./cmd/charla chat --addr %s --user alice --conv demo\n", ln.Addr())
	}

	if cfg.DebugAddr != "" {
		stopDebug, err := serveDebug(cfg.DebugAddr, srv, reg, log)
		if err != nil {
			_ = sys.Shutdown(context.Background())
			return err
		}
		defer stopDebug()
	}
	if cfg.MetricsAddr != "" {
		stopMetrics, err := servePrivate(cfg.MetricsAddr, "metrics", privateMux(srv, reg), log)
		if err != nil {
			_ = sys.Shutdown(context.Background())
			return err
		}
		defer stopMetrics()
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		_ = sys.Shutdown(context.Background())
		return err
	case <-ctx.Done():
	}
	if node != nil {
		// Shards first: the others take them at once, and this node's
		// conns follow their conversations there before they are closed.
		node.handOver(log)
	}
	log.Info().Msg("shutting down: draining connections")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.Actors.ShutdownGrace)
	defer cancel()
	err = srv.Shutdown(sctx)
	<-served
	if err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	log.Info().Msg("shutdown complete")
	return nil
}

// openStore opens the embedded store, or PostgreSQL with its outage spool
// when a database URL is set. A database that is down at startup does not
// stop the engine: it starts lazily and spools until the database answers;
// down says why, for the startup summary.
//
// A cluster node's store is fenced by its leases; its spool is not on its
// local disk, where no other node could drain it from, but the cluster's
// JetStream stream (node.join, docs/CLUSTER.md §6).
func openStore(ctx context.Context, cfg config, node *clusterNode, log zerolog.Logger) (dep actors.Dependencies, closeStore func(), down, err error) {
	dep = actors.Dependencies{Log: log}
	if node != nil {
		st, err := openDatabase(ctx, cfg.DB, log, node.storeOption())
		if err != nil {
			return dep, nil, nil, fmt.Errorf("open database: %w", err)
		}
		dep.Store = st
		return dep, func() { st.Close() }, nil, nil
	}
	if cfg.DB.URL == "" {
		st, err := openEmbedded(ctx, cfg.DataDir, log)
		if err != nil {
			return dep, nil, nil, err
		}
		dep.Store = st
		return dep, func() { st.Close() }, nil, nil
	}
	sp, err := spool.Open(ctx, filepath.Join(cfg.DataDir, "spool"), cfg.Actors.SpoolOptions(log))
	if err != nil {
		return dep, nil, nil, fmt.Errorf("open spool: %w", err)
	}
	// An engine before the Pebble spool left its messages in spool.db:
	// acked, so they must drain like the others.
	if n, err := spool.ImportBolt(ctx, sp, filepath.Join(cfg.DataDir, "spool.db")); err != nil {
		sp.Close()
		return dep, nil, nil, fmt.Errorf("import the old spool: %w", err)
	} else if n > 0 {
		log.Info().Int("messages", n).Msg("old bbolt spool imported; it drains into the database")
	}
	opts := cfg.DB
	// postgres.Open adds its own component key to the logger.
	st, err := openDatabase(ctx, opts, log)
	if errors.Is(err, store.ErrUnavailable) && !opts.AutoMigrate {
		log.Warn().Err(err).Int("spooled", sp.Len()).Msg("database unreachable at startup; serving from the spool until it answers")
		down = err
		opts.Lazy = true
		st, err = postgres.Open(ctx, opts, log)
	}
	if err != nil {
		sp.Close()
		if errors.Is(err, postgres.ErrSchemaOutdated) {
			return dep, nil, nil, fmt.Errorf("open database: %w (run `charla migrate` or `charla serve --migrate`)", err)
		}
		return dep, nil, nil, fmt.Errorf("open database: %w", err)
	}
	dep.Store, dep.Spool = st, sp
	return dep, func() { st.Close(); sp.Close() }, down, nil
}

// storeOpenBudget bounds the first, eager open of the database. One that
// accepts connections but never answers would hold the start for every
// retry of every connect timeout (36 s measured with the defaults), past the
// 30 s startup budget; past this one the engine starts as for a database
// that refuses: lazily, spooling until it answers. Migrations (--migrate)
// are not bound: they take what they take, and the engine needs them done.
const storeOpenBudget = 15 * time.Second

func openDatabase(ctx context.Context, opts postgres.Options, log zerolog.Logger, extra ...postgres.Option) (*postgres.Store, error) {
	if opts.AutoMigrate {
		return postgres.Open(ctx, opts, log, extra...)
	}
	octx, cancel := context.WithTimeout(ctx, storeOpenBudget)
	defer cancel()
	st, err := postgres.Open(octx, opts, log, extra...)
	if err != nil && errors.Is(octx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, fmt.Errorf("no answer within %s: %w (%w)", storeOpenBudget, store.ErrUnavailable, err)
	}
	return st, err
}

func migrate(ctx context.Context, cfg config, stdout, stderr io.Writer) int {
	applied, err := postgres.MigrateURL(ctx, cfg.DB.URL)
	if err != nil {
		fmt.Fprintf(stderr, "charla migrate: %v\n", err)
		return 1
	}
	if len(applied) == 0 {
		fmt.Fprintf(stdout, "schema is current (version %d)\n", postgres.LatestVersion())
		return 0
	}
	fmt.Fprintf(stdout, "applied migrations %v; schema is at version %d\n", applied, postgres.LatestVersion())
	return 0
}

// serveDebug serves net/http/pprof beside the private endpoints (metrics,
// detailed readiness) on their own listener, never on the public one, so
// that profiles and load figures are reachable only where the operator
// chose.
func serveDebug(addr string, srv *transport.Server, reg *metrics.Metrics, log zerolog.Logger) (func(), error) {
	mux := privateMux(srv, reg)
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return servePrivate(addr, "debug (pprof, /metrics, detailed /readyz)", mux, log)
}

func token(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	var secret, user, role string
	var ttl time.Duration
	fs := flagSet{
		{name: "secret", env: "CHARLA_JWT_SECRET", usage: "HS256 secret the engine checks tokens with", value: strVar(&secret, ""), secret: true},
		{name: "user", usage: "the token's subject (required)", value: strVar(&user, "")},
		{name: "role", usage: "agent, customer or admin", value: strVar(&role, string(charla.RoleAgent))},
		{name: "ttl", usage: "how long the token is valid", value: durVar(&ttl, 24*time.Hour)},
	}
	err := fs.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	errs := flatten(err)
	if secret == "" {
		errs = append(errs, errors.New("--secret (or CHARLA_JWT_SECRET) is required"))
	}
	if user == "" {
		errs = append(errs, errors.New("--user is required"))
	}
	if !charla.Role(role).Valid() {
		errs = append(errs, fmt.Errorf("--role %q: must be agent, customer or admin", role))
	}
	if ttl <= 0 {
		errs = append(errs, errors.New("--ttl must be positive"))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "charla token:\n%s\n", indent(err))
		return 2
	}
	tok, err := transport.MintToken([]byte(secret), user, charla.Role(role), ttl)
	if err != nil {
		fmt.Fprintf(stderr, "charla token: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

func version() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" {
				return "charla " + bi.Main.Version + " " + s.Value
			}
		}
		return "charla " + bi.Main.Version
	}
	return "charla (unknown build)"
}
