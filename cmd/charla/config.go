package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"charla/actors"
	"charla/store/postgres"
	"charla/transport"
)

// config is every setting of `charla serve`. Each is a flag and an
// environment variable (the flag wins); see settings().
type config struct {
	Addr              string
	DataDir           string
	AuthMode          string
	JWTSecret         string
	AllowedOrigins    string
	HeartbeatInterval time.Duration
	HeartbeatTimeout  time.Duration
	ConnectTimeout    time.Duration
	MaxFrameBytes     int
	MaxBodyBytes      int
	SendQueueFrames   int
	MaxSubscriptions  int
	SendQueueBytes    int
	IdleTimeout       time.Duration
	SweepInterval     time.Duration
	ShutdownTimeout   time.Duration
	LogLevel          string
	LogFormat         string

	DebugAddr string

	DatabaseURL       string
	Migrate           bool
	DB                postgres.Options
	StoreWriteTimeout time.Duration
	BreakerFailures   int
	BreakerCooldown   time.Duration
}

type setting struct {
	name, env, usage string
	value            flag.Value
}

// settings binds each field of c to its flag and environment variable, with
// DESIGN.md's defaults.
func (c *config) settings() []setting {
	db, a := postgres.DefaultOptions(), actors.DefaultConfig()
	c.DB = db
	return []setting{
		{"addr", "CHARLA_ADDR", "listen address (host:port)", strVar(&c.Addr, "127.0.0.1:8080")},
		{"data-dir", "CHARLA_DATA_DIR", "directory of the embedded store", strVar(&c.DataDir, "./data")},
		{"auth-mode", "CHARLA_AUTH_MODE", "jwt, or dev (?user=&role= trusted as given: development only)", strVar(&c.AuthMode, transport.AuthJWT)},
		{"jwt-secret", "CHARLA_JWT_SECRET", "HS256 secret (Supabase JWT secret); required in jwt mode, 32 bytes or more", strVar(&c.JWTSecret, "")},
		{"allowed-origins", "CHARLA_ALLOWED_ORIGINS", "comma-separated browser origins allowed to connect; empty = same origin and non-browser clients only; * = any", strVar(&c.AllowedOrigins, "")},
		{"heartbeat-interval", "CHARLA_HEARTBEAT_INTERVAL", "server ping period", durVar(&c.HeartbeatInterval, 5*time.Second)},
		{"heartbeat-timeout", "CHARLA_HEARTBEAT_TIMEOUT", "silence after which a connection is closed (4008)", durVar(&c.HeartbeatTimeout, 10*time.Second)},
		{"connect-timeout", "CHARLA_CONNECT_TIMEOUT", "time allowed for the WebSocket handshake", durVar(&c.ConnectTimeout, 15*time.Second)},
		{"max-frame-bytes", "CHARLA_MAX_FRAME_BYTES", "largest client frame; larger closes with 1009", intVar(&c.MaxFrameBytes, 65536)},
		{"max-body-bytes", "CHARLA_MAX_BODY_BYTES", "largest message body; larger is refused with too_large", intVar(&c.MaxBodyBytes, 32768)},
		{"max-subscriptions", "CHARLA_MAX_SUBSCRIPTIONS", "conversations one connection may subscribe to at once", intVar(&c.MaxSubscriptions, 1000)},
		{"send-queue-frames", "CHARLA_SEND_QUEUE_FRAMES", "per-connection outbound queue in frames; past it 4008 slow consumer", intVar(&c.SendQueueFrames, 1024)},
		{"send-queue-bytes", "CHARLA_SEND_QUEUE_BYTES", "per-connection outbound queue in bytes; past it 4008 slow consumer", intVar(&c.SendQueueBytes, 4<<20)},
		{"session-idle-timeout", "CHARLA_SESSION_IDLE_TIMEOUT", "an idle conversation with no subscriber is unloaded after this", durVar(&c.IdleTimeout, 15*time.Minute)},
		{"session-sweep-interval", "CHARLA_SESSION_SWEEP_INTERVAL", "how often idle conversations are swept", durVar(&c.SweepInterval, 5*time.Minute)},
		{"shutdown-timeout", "CHARLA_SHUTDOWN_TIMEOUT", "how long SIGTERM waits for in-flight sends", durVar(&c.ShutdownTimeout, 10*time.Second)},
		{"log-level", "CHARLA_LOG_LEVEL", "debug, info, warn or error", strVar(&c.LogLevel, "info")},
		{"log-format", "CHARLA_LOG_FORMAT", "json or console", strVar(&c.LogFormat, "json")},
		{"debug-addr", "CHARLA_DEBUG_ADDR", "serve Go's pprof profiles on this address (keep it private); empty = off", strVar(&c.DebugAddr, "")},
		{"database-url", "DATABASE_URL", "PostgreSQL URL (Supabase: add default_query_exec_mode=simple_protocol for the transaction pooler); empty = embedded store", strVar(&c.DatabaseURL, "")},
		{"migrate", "CHARLA_MIGRATE", "apply pending database migrations before serving", boolVar(&c.Migrate, false)},
		{"db-max-conns", "CHARLA_DB_MAX_CONNS", "connection pool size", int32Var(&c.DB.MaxConns, db.MaxConns)},
		{"db-min-conns", "CHARLA_DB_MIN_CONNS", "connections kept open when idle", int32Var(&c.DB.MinConns, db.MinConns)},
		{"db-query-timeout", "CHARLA_DB_QUERY_TIMEOUT", "deadline of each database attempt", durVar(&c.DB.QueryTimeout, db.QueryTimeout)},
		{"db-connect-timeout", "CHARLA_DB_CONNECT_TIMEOUT", "deadline of a new database connection", durVar(&c.DB.ConnectTimeout, db.ConnectTimeout)},
		{"db-retry-attempts", "CHARLA_DB_RETRY_ATTEMPTS", "retries of a retryable database error (backoff with jitter)", intVar(&c.DB.RetryAttempts, db.RetryAttempts)},
		{"db-retry-base-delay", "CHARLA_DB_RETRY_BASE_DELAY", "first retry backoff", durVar(&c.DB.RetryBaseDelay, db.RetryBaseDelay)},
		{"db-retry-max-delay", "CHARLA_DB_RETRY_MAX_DELAY", "largest retry backoff", durVar(&c.DB.RetryMaxDelay, db.RetryMaxDelay)},
		{"db-health-check-period", "CHARLA_DB_HEALTH_CHECK_PERIOD", "how often idle connections are checked", durVar(&c.DB.HealthCheckPeriod, db.HealthCheckPeriod)},
		{"db-max-conn-lifetime", "CHARLA_DB_MAX_CONN_LIFETIME", "connections are rotated after this", durVar(&c.DB.MaxConnLifetime, db.MaxConnLifetime)},
		{"db-max-conn-lifetime-jitter", "CHARLA_DB_MAX_CONN_LIFETIME_JITTER", "random spread of rotations", durVar(&c.DB.MaxConnLifetimeJitter, db.MaxConnLifetimeJitter)},
		{"db-max-conn-idle-time", "CHARLA_DB_MAX_CONN_IDLE_TIME", "idle connections are closed after this", durVar(&c.DB.MaxConnIdleTime, db.MaxConnIdleTime)},
		{"db-keepalive", "CHARLA_DB_KEEPALIVE", "TCP keep-alive period of database connections (negative disables)", durVar(&c.DB.KeepAlive, db.KeepAlive)},
		{"store-write-timeout", "CHARLA_STORE_WRITE_TIMEOUT", "with PostgreSQL: how long an ack waits for the database before the message is spooled", durVar(&c.StoreWriteTimeout, a.StoreWriteTimeout)},
		{"store-breaker-failures", "CHARLA_STORE_BREAKER_FAILURES", "consecutive database failures that open the breaker", intVar(&c.BreakerFailures, a.StoreBreaker.Failures)},
		{"store-breaker-cooldown", "CHARLA_STORE_BREAKER_COOLDOWN", "how long the open breaker waits before probing the database", durVar(&c.BreakerCooldown, a.StoreBreaker.Cooldown)},
	}
}

// parseConfig reads the environment, then args, and validates the result.
// Every problem is reported at once, so an operator fixes them in one go.
func parseConfig(args []string, getenv func(string) string, usage io.Writer, serving bool) (config, error) {
	var c config
	ss := c.settings()
	byName := map[string]setting{}
	var errs []error
	for _, s := range ss {
		byName[s.name] = s
		if v := getenv(s.env); v != "" {
			if err := s.value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", s.env, v, err))
			}
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" || a == "-help" {
			printUsage(usage, ss)
			return c, errHelp
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		s, ok := byName[name]
		if !strings.HasPrefix(a, "-") || !ok {
			errs = append(errs, fmt.Errorf("unknown argument %q", a))
			if strings.HasPrefix(a, "-") && !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // its value
			}
			continue
		}
		if b, isBool := s.value.(interface{ IsBoolFlag() bool }); !hasVal && isBool && b.IsBoolFlag() {
			val = "true"
		} else if !hasVal {
			if i+1 >= len(args) {
				errs = append(errs, fmt.Errorf("--%s needs a value", name))
				continue
			}
			i++
			val = args[i]
		}
		if err := s.value.Set(val); err != nil {
			errs = append(errs, fmt.Errorf("--%s=%q: %v", name, val, err))
		}
	}
	errs = append(errs, c.validate(serving)...)
	return c, errors.Join(errs...)
}

var errHelp = errors.New("help requested")

// validate checks the settings; serving adds what only serve needs (a
// listen address, credentials), so that `migrate` runs with a URL alone.
func (c config) validate(serving bool) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !serving {
		if c.DatabaseURL == "" {
			bad("database-url (or DATABASE_URL) is required")
		} else if err := c.postgres().Validate(); err != nil {
			for _, e := range flatten(err) {
				bad("database: %v", e)
			}
		}
		return errs
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr %q: %v", c.Addr, err)
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			bad("debug-addr %q: %v", c.DebugAddr, err)
		}
	}
	if c.DataDir == "" {
		bad("data-dir must not be empty")
	}
	switch c.AuthMode {
	case transport.AuthJWT:
		if len(c.JWTSecret) < 32 {
			bad("jwt-secret must be at least 32 bytes in auth-mode=jwt (got %d); set CHARLA_JWT_SECRET or use --auth-mode dev for development", len(c.JWTSecret))
		}
	case transport.AuthDev:
	default:
		bad("auth-mode %q: must be jwt or dev", c.AuthMode)
	}
	for _, o := range c.origins() {
		if o != "*" && !strings.HasPrefix(o, "http://") && !strings.HasPrefix(o, "https://") {
			bad("allowed-origins: %q must be * or start with http:// or https://", o)
		}
	}
	positive := func(name string, d time.Duration) {
		if d <= 0 {
			bad("%s must be positive (got %s)", name, d)
		}
	}
	positive("heartbeat-interval", c.HeartbeatInterval)
	positive("heartbeat-timeout", c.HeartbeatTimeout)
	positive("connect-timeout", c.ConnectTimeout)
	positive("session-idle-timeout", c.IdleTimeout)
	positive("session-sweep-interval", c.SweepInterval)
	positive("shutdown-timeout", c.ShutdownTimeout)
	if c.HeartbeatInterval > 0 && c.HeartbeatTimeout <= c.HeartbeatInterval {
		bad("heartbeat-timeout (%s) must be longer than heartbeat-interval (%s), or a healthy client is closed between two pings", c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	atLeast := func(name string, v, min int) {
		if v < min {
			bad("%s must be at least %d (got %d)", name, min, v)
		}
	}
	atLeast("max-frame-bytes", c.MaxFrameBytes, 1024)
	atLeast("max-body-bytes", c.MaxBodyBytes, 64)
	atLeast("send-queue-frames", c.SendQueueFrames, 16)
	atLeast("max-subscriptions", c.MaxSubscriptions, 1)
	atLeast("send-queue-bytes", c.SendQueueBytes, 64<<10)
	if c.MaxBodyBytes > c.MaxFrameBytes {
		bad("max-body-bytes (%d) must not exceed max-frame-bytes (%d)", c.MaxBodyBytes, c.MaxFrameBytes)
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		bad("log-level %q: must be debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("log-format %q: must be json or console", c.LogFormat)
	}
	if c.DatabaseURL != "" {
		if err := c.postgres().Validate(); err != nil {
			for _, e := range flatten(err) {
				bad("database: %v", e)
			}
		}
		positive("store-write-timeout", c.StoreWriteTimeout)
		positive("store-breaker-cooldown", c.BreakerCooldown)
		atLeast("store-breaker-failures", c.BreakerFailures, 1)
	} else if c.Migrate {
		bad("migrate needs database-url")
	}
	return errs
}

// flatten undoes errors.Join, so each problem gets its own line.
func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (c config) postgres() postgres.Options {
	o := c.DB
	o.URL, o.AutoMigrate, o.ApplicationName = c.DatabaseURL, c.Migrate, "charla"
	return o
}

func (c config) origins() []string {
	var out []string
	for _, o := range strings.Split(c.AllowedOrigins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}

func (c config) actors() actors.Config {
	a := actors.DefaultConfig()
	a.HeartbeatInterval, a.HeartbeatTimeout = c.HeartbeatInterval, c.HeartbeatTimeout
	a.SendQueueFrames, a.SendQueueBytes = c.SendQueueFrames, c.SendQueueBytes
	a.MaxBodyBytes, a.MaxSubscriptions = c.MaxBodyBytes, c.MaxSubscriptions
	a.IdleTimeout, a.SweepInterval = c.IdleTimeout, c.SweepInterval
	a.ShutdownGrace = c.ShutdownTimeout
	a.StoreWriteTimeout = c.StoreWriteTimeout
	a.StoreBreaker.Failures, a.StoreBreaker.Cooldown = c.BreakerFailures, c.BreakerCooldown
	return a
}

func (c config) transport() transport.Config {
	return transport.Config{
		Auth:             transport.Authenticator{Mode: c.AuthMode, Secret: []byte(c.JWTSecret)},
		Origins:          c.origins(),
		MaxFrameBytes:    c.MaxFrameBytes,
		ConnectTimeout:   c.ConnectTimeout,
		HeartbeatTimeout: c.HeartbeatTimeout,
	}
}

func (c config) logger(w io.Writer) zerolog.Logger {
	level, _ := zerolog.ParseLevel(c.LogLevel)
	if c.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

func printUsage(w io.Writer, ss []setting) {
	fmt.Fprintln(w, "Settings (flag, environment variable, current value):")
	for _, s := range ss {
		v := s.value.String()
		if (s.name == "jwt-secret" || s.name == "database-url") && v != "" {
			v = "(set; not shown)" // help output ends up in terminals and tickets
		}
		fmt.Fprintf(w, "  --%-28s %-34s %q\n      %s\n", s.name, s.env, v, s.usage)
	}
}

// value is a flag.Value over a typed setting: parse turns text into it,
// and its problem is what an operator reads when the text is wrong.
type value[T any] struct {
	p       *T
	parse   func(string) (T, error)
	problem string
	isBool  bool
}

func (v value[T]) String() string   { return fmt.Sprint(*v.p) }
func (v value[T]) IsBoolFlag() bool { return v.isBool }
func (v value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		return errors.New(v.problem)
	}
	*v.p = x
	return nil
}

func newVar[T any](p *T, def T, parse func(string) (T, error), problem string) value[T] {
	*p = def
	return value[T]{p: p, parse: parse, problem: problem}
}

func strVar(p *string, def string) flag.Value {
	return newVar(p, def, func(s string) (string, error) { return s, nil }, "")
}

func durVar(p *time.Duration, def time.Duration) flag.Value {
	return newVar(p, def, time.ParseDuration, "not a duration (e.g. 5s, 1m30s)")
}

func boolVar(p *bool, def bool) flag.Value {
	v := newVar(p, def, strconv.ParseBool, "not true or false")
	v.isBool = true
	return v
}

func intVar(p *int, def int) flag.Value {
	return newVar(p, def, strconv.Atoi, "not a whole number")
}

func int32Var(p *int32, def int32) flag.Value {
	return newVar(p, def, func(s string) (int32, error) {
		n, err := strconv.ParseInt(s, 10, 32)
		return int32(n), err
	}, "not a whole number")
}
