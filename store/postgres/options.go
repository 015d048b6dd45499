package postgres

import (
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Options configures the PostgreSQL store. Every number the seed document
// complained about (pool of 10, 30 s query timeout, 3 retries, no health
// checks, no connection rotation) is a field here, so that the engine's
// command line and environment can raise or lower it and Validate can reject
// nonsense before the engine starts serving.
type Options struct {
	// URL is the connection string (postgres://user:pass@host:port/db?...).
	// Through Supabase's transaction pooler (PgBouncer in transaction mode)
	// add default_query_exec_mode=simple_protocol: the store then sends no
	// prepared statements and keeps no session state between transactions.
	URL string

	// MaxConns caps the pool. The seed's starved pool had 10; a group commit
	// needs few connections, but reads (history paging, cursors) from many
	// conversations at once need more.
	MaxConns int32

	// MinConns keeps that many connections open even when idle, so the first
	// requests after a quiet period do not pay for TCP and auth handshakes.
	MinConns int32

	// QueryTimeout bounds every attempt of every operation (a context
	// deadline per attempt, not per call), so that a hung connection costs at
	// most this long before the attempt is retried on another connection.
	QueryTimeout time.Duration

	// ConnectTimeout bounds dialing plus the startup handshake of a new
	// connection; an unreachable host is detected this fast.
	ConnectTimeout time.Duration

	// RetryAttempts is how many times a failed operation is retried after
	// its first attempt (so RetryAttempts+1 attempts at most), and only when
	// the failure is retryable (connection lost, server restarting,
	// serialization failure, deadlock). 0 disables retries.
	RetryAttempts int

	// RetryBaseDelay is the backoff before the first retry; each further
	// retry doubles the ceiling, and the actual sleep is uniformly random
	// below it ("full jitter"), so that many callers failing together do not
	// retry together.
	RetryBaseDelay time.Duration

	// RetryMaxDelay caps the backoff ceiling.
	RetryMaxDelay time.Duration

	// HealthCheckPeriod is how often idle connections are checked and the
	// pool topped back up to MinConns.
	HealthCheckPeriod time.Duration

	// MaxConnLifetime rotates connections: one older than this (plus a random
	// part of MaxConnLifetimeJitter) is closed when released, so that
	// failovers, DNS changes and server-side memory growth are picked up
	// without a restart.
	MaxConnLifetime time.Duration

	// MaxConnLifetimeJitter spreads rotations so that the whole pool is not
	// closed at the same instant.
	MaxConnLifetimeJitter time.Duration

	// MaxConnIdleTime closes connections idle for longer, giving back server
	// slots (and pooler slots) after a burst.
	MaxConnIdleTime time.Duration

	// KeepAlive is the TCP keep-alive period of every connection: a peer
	// that vanished (NAT timeout, failover, cable) is detected on an idle
	// connection within about four periods instead of hours. Negative
	// disables keep-alive.
	KeepAlive time.Duration

	// ApplicationName is reported to the server (pg_stat_activity), unless
	// the URL sets application_name itself, so operators can tell the
	// engine's connections apart.
	ApplicationName string

	// AutoMigrate applies pending migrations in Open. Without it Open checks
	// that the schema is current and fails if it is not, so that a binary
	// never runs against a schema it does not know.
	AutoMigrate bool

	// Lazy makes Open return without contacting the server (no ping, no
	// schema check), for an engine that must start, and spool, while the
	// database is down. The first operation then connects.
	Lazy bool
}

// DefaultOptions returns the engine's defaults: the seed's numbers raised
// (pool 50, 10 s per operation, 5 retries with backoff and jitter, health
// checks, rotation and keep-alive), with no URL. README.md's configuration
// table lists them as the engine's flags.
func DefaultOptions() Options {
	return Options{
		MaxConns:              50,
		MinConns:              2,
		QueryTimeout:          10 * time.Second,
		ConnectTimeout:        5 * time.Second,
		RetryAttempts:         5,
		RetryBaseDelay:        50 * time.Millisecond,
		RetryMaxDelay:         2 * time.Second,
		HealthCheckPeriod:     30 * time.Second,
		MaxConnLifetime:       30 * time.Minute,
		MaxConnLifetimeJitter: 5 * time.Minute,
		MaxConnIdleTime:       5 * time.Minute,
		KeepAlive:             15 * time.Second,
		ApplicationName:       "charla",
	}
}

// SettingError is one problem Validate found. Setting is the Options field
// name, so that the engine's command can translate it to the flag or
// environment variable the operator actually typed.
type SettingError struct {
	Setting string
	Problem string
}

// Error reads "postgres: <Setting>: <problem>".
func (e *SettingError) Error() string {
	return "postgres: " + e.Setting + ": " + e.Problem
}

// Validate reports every problem of o at once (joined with errors.Join, each
// a *SettingError), so that an operator fixes a configuration in one round
// instead of one error per restart.
func (o Options) Validate() error {
	var errs []error
	bad := func(setting, format string, args ...any) {
		errs = append(errs, &SettingError{Setting: setting, Problem: fmt.Sprintf(format, args...)})
	}
	if o.URL == "" {
		bad("URL", "is required (postgres://user:password@host:5432/dbname)")
	} else if _, err := pgxpool.ParseConfig(o.URL); err != nil {
		// pgconn redacts the password in its parse errors.
		bad("URL", "cannot be parsed: %v", err)
	}
	if o.MaxConns < 1 {
		bad("MaxConns", "must be at least 1, got %d", o.MaxConns)
	}
	if o.MinConns < 0 {
		bad("MinConns", "must not be negative, got %d", o.MinConns)
	} else if o.MaxConns >= 1 && o.MinConns > o.MaxConns {
		bad("MinConns", "must not exceed MaxConns (%d), got %d", o.MaxConns, o.MinConns)
	}
	if o.QueryTimeout <= 0 {
		bad("QueryTimeout", "must be positive, got %v", o.QueryTimeout)
	}
	if o.ConnectTimeout <= 0 {
		bad("ConnectTimeout", "must be positive, got %v", o.ConnectTimeout)
	}
	if o.RetryAttempts < 0 {
		bad("RetryAttempts", "must not be negative, got %d", o.RetryAttempts)
	} else if o.RetryAttempts > 100 {
		bad("RetryAttempts", "must be at most 100, got %d", o.RetryAttempts)
	}
	if o.RetryAttempts > 0 {
		if o.RetryBaseDelay <= 0 {
			bad("RetryBaseDelay", "must be positive when RetryAttempts > 0, got %v", o.RetryBaseDelay)
		}
		if o.RetryMaxDelay < o.RetryBaseDelay {
			bad("RetryMaxDelay", "must be at least RetryBaseDelay (%v), got %v", o.RetryBaseDelay, o.RetryMaxDelay)
		}
	}
	if o.HealthCheckPeriod <= 0 {
		bad("HealthCheckPeriod", "must be positive, got %v", o.HealthCheckPeriod)
	}
	if o.MaxConnLifetime <= 0 {
		bad("MaxConnLifetime", "must be positive, got %v", o.MaxConnLifetime)
	}
	if o.MaxConnLifetimeJitter < 0 {
		bad("MaxConnLifetimeJitter", "must not be negative, got %v", o.MaxConnLifetimeJitter)
	}
	if o.MaxConnIdleTime <= 0 {
		bad("MaxConnIdleTime", "must be positive, got %v", o.MaxConnIdleTime)
	}
	if o.KeepAlive == 0 {
		bad("KeepAlive", "must be positive (or negative to disable keep-alive), got 0")
	}
	return errors.Join(errs...)
}
