// Package postgres is the production store.Store on PostgreSQL (and so on
// Supabase, including its transaction pooler), through pgx's pool.
//
// Append is a group commit: the messages of many conversations go to the
// server as a handful of arrays in one statement, which sequences them,
// weeds out duplicates and inserts the rest in one round trip and one
// transaction. Every operation runs with its own deadline per attempt and is
// retried, with exponential backoff and full jitter, only when the failure is
// of a transient kind; the error it returns says which kind it was (see Kind
// and IsRetryable) and matches store.ErrUnavailable or store.ErrInvalid, which
// the engine's store actor tests with errors.Is to know whether to spool
// (database down) or reject (bad request).
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
)

// Store is the PostgreSQL implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	pool   *pgxpool.Pool
	opts   Options
	log    zerolog.Logger
	closed atomic.Bool

	ops                  [numOps]opCounters
	appended, duplicates atomic.Int64

	// fence is nil on a single node; in cluster mode (WithFence) it makes
	// every write of messages check the node's shard epochs (fence.go).
	fence *fencing
}

var _ store.Store = (*Store)(nil)

// Open validates opts, builds the pool and, unless opts.Lazy, checks that the
// server answers (with the usual retries, bounded by ctx) and that the schema
// is current, applying migrations first when opts.AutoMigrate is set. An
// unreachable server makes Open fail with an error matching store.ErrUnavailable,
// an outdated schema with one matching ErrSchemaOutdated. extra adds what
// is not a setting, such as a cluster node's fence (WithFence).
func Open(ctx context.Context, opts Options, logger zerolog.Logger, extra ...Option) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	var oc openConfig
	for _, o := range extra {
		o(&oc)
	}
	fence, err := newFencing(oc)
	if err != nil {
		return nil, err
	}
	cfg, err := poolConfig(opts)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	s := &Store{
		pool:  pool,
		opts:  opts,
		log:   logger.With().Str("component", "postgres").Logger(),
		fence: fence,
	}
	if !opts.Lazy {
		if err := s.Ping(ctx); err != nil {
			pool.Close()
			return nil, err
		}
		if err := s.checkSchema(ctx); err != nil {
			pool.Close()
			return nil, err
		}
	}
	cc := cfg.ConnConfig
	s.log.Info().
		Str("host", cc.Host).Uint16("port", cc.Port).Str("database", cc.Database).Str("user", cc.User).
		Str("exec_mode", cc.DefaultQueryExecMode.String()).
		Int32("max_conns", cfg.MaxConns).Int32("min_conns", cfg.MinConns).
		Dur("query_timeout", opts.QueryTimeout).Int("retry_attempts", opts.RetryAttempts).
		Bool("lazy", opts.Lazy).Bool("fenced", fence != nil).
		Msg("postgres store open")
	return s, nil
}

// poolConfig turns Options into a pgxpool configuration.
func poolConfig(opts Options) (*pgxpool.Config, error) {
	cfg, err := pgxpool.ParseConfig(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	cfg.MaxConns = opts.MaxConns
	cfg.MinConns = opts.MinConns
	cfg.HealthCheckPeriod = opts.HealthCheckPeriod
	cfg.MaxConnLifetime = opts.MaxConnLifetime
	cfg.MaxConnLifetimeJitter = opts.MaxConnLifetimeJitter
	cfg.MaxConnIdleTime = opts.MaxConnIdleTime
	// A ping of a stale pooled connection must not eat the whole attempt.
	cfg.PingTimeout = min(opts.ConnectTimeout, opts.QueryTimeout)
	cc := cfg.ConnConfig
	cc.ConnectTimeout = opts.ConnectTimeout
	dialer := &net.Dialer{Timeout: opts.ConnectTimeout, KeepAlive: opts.KeepAlive}
	if opts.KeepAlive > 0 {
		// Probe after KeepAlive of silence, then every KeepAlive, and give
		// up after 3 unanswered probes: a dead peer is found in ~4 periods.
		dialer.KeepAliveConfig = net.KeepAliveConfig{Enable: true, Idle: opts.KeepAlive, Interval: opts.KeepAlive, Count: 3}
	}
	cc.DialFunc = dialer.DialContext
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" && opts.ApplicationName != "" {
		cc.RuntimeParams["application_name"] = opts.ApplicationName
	}
	return cfg, nil
}

// checkSchema migrates (AutoMigrate) or verifies that the schema is current.
func (s *Store) checkSchema(ctx context.Context) error {
	if s.opts.AutoMigrate {
		applied, err := s.Migrate(ctx)
		if err != nil {
			return err
		}
		if len(applied) > 0 {
			s.log.Info().Ints("versions", applied).Msg("postgres migrations applied")
		}
		return nil
	}
	var have int
	err := s.do(ctx, opMigrate, func(ctx context.Context) error {
		var err error
		have, err = schemaVersion(ctx, s.pool)
		return err
	})
	if err != nil {
		return err
	}
	if want := LatestVersion(); have < want {
		return fmt.Errorf("postgres: open: %w: the database is at version %d, this binary needs %d: run `charla migrate` or enable auto-migration", ErrSchemaOutdated, have, want)
	}
	return nil
}

// Migrate applies pending migrations through the store's pool; see the
// package-level Migrate.
func (s *Store) Migrate(ctx context.Context) ([]int, error) {
	var applied []int
	err := s.do(ctx, opMigrate, func(ctx context.Context) error {
		a, err := Migrate(ctx, s.pool)
		applied = append(applied, a...)
		return err
	})
	return applied, err
}

// Ping checks that the database answers, with the usual retries: the
// engine's /readyz and the breaker's half-open probe.
func (s *Store) Ping(ctx context.Context) error {
	return s.do(ctx, opPing, func(ctx context.Context) error { return s.pool.Ping(ctx) })
}

// Close closes the pool, waiting for operations in flight to release their
// connections. Later calls, Close included, fail with store.ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return &Error{Op: "close", Kind: KindClosed, Err: store.ErrClosed}
	}
	s.pool.Close()
	s.log.Info().Msg("postgres store closed")
	return nil
}

// do runs fn, one attempt per QueryTimeout, retrying retryable failures with
// exponential backoff and full jitter, and records the call in the stats.
// Every error it returns is an *Error.
func (s *Store) do(ctx context.Context, o op, fn func(ctx context.Context) error) error {
	_, err := s.doAttempts(ctx, o, func(ctx context.Context, _ int) error { return fn(ctx) })
	return err
}

// doAttempts is do for callers that need the attempt number (1-based).
func (s *Store) doAttempts(ctx context.Context, o op, fn func(ctx context.Context, attempt int) error) (int, error) {
	start := time.Now()
	c := &s.ops[o]
	fail := func(e *Error) (int, error) {
		c.record(time.Since(start), e.Attempts, true)
		return e.Attempts, e
	}
	if s.closed.Load() {
		return fail(&Error{Op: o.String(), Kind: KindClosed, Err: store.ErrClosed})
	}
	if err := ctx.Err(); err != nil {
		return fail(&Error{Op: o.String(), Kind: KindCanceled, Err: err})
	}
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, s.opts.QueryTimeout)
		err := fn(actx, attempt)
		timedOut := errors.Is(actx.Err(), context.DeadlineExceeded) && ctx.Err() == nil
		cancel()
		if err == nil {
			c.record(time.Since(start), attempt, false)
			return attempt, nil
		}
		e := s.wrap(ctx, o, err, timedOut, attempt)
		if !e.Retryable || e.Kind == KindCanceled || e.Kind == KindClosed || attempt > s.opts.RetryAttempts {
			s.logFailure(e)
			return fail(e)
		}
		delay := s.backoff(attempt)
		s.log.Warn().Err(err).Str("op", o.String()).Int("attempt", attempt).Dur("retry_in", delay).Msg("postgres operation failed, retrying")
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fail(&Error{Op: o.String(), Kind: KindCanceled, Attempts: attempt, Err: fmt.Errorf("%w (after: %w)", ctx.Err(), err)})
		case <-t.C:
		}
	}
}

// wrap turns an attempt's error into an *Error, classifying it.
func (s *Store) wrap(ctx context.Context, o op, err error, timedOut bool, attempt int) *Error {
	e := &Error{Op: o.String(), Attempts: attempt, Err: err}
	var already *Error
	if errors.As(err, &already) {
		// fn classified it itself (e.g. a sequence conflict).
		e.Kind, e.Retryable, e.Code, e.Err = already.Kind, already.Retryable, already.Code, already.Err
		return e
	}
	switch {
	case ctx.Err() != nil:
		e.Kind = KindCanceled
		if !errors.Is(err, ctx.Err()) {
			e.Err = fmt.Errorf("%w: %w", ctx.Err(), err)
		}
	case s.closed.Load():
		e.Kind = KindClosed
		e.Err = fmt.Errorf("%w: %w", store.ErrClosed, err)
	default:
		e.Kind, e.Retryable, e.Code = classify(err, timedOut)
	}
	return e
}

// logFailure logs a final failure at a level that matches its kind: outages
// and bugs are worth a warning, bad input and cancellations are the caller's
// business.
func (s *Store) logFailure(e *Error) {
	var ev *zerolog.Event
	switch e.Kind {
	case KindUnavailable, KindInternal, KindConflict, KindFenced:
		ev = s.log.Warn()
	default:
		ev = s.log.Debug()
	}
	ev.Err(e.Err).Str("op", e.Op).Str("kind", e.Kind.String()).Str("sqlstate", e.Code).Int("attempts", e.Attempts).Msg("postgres operation failed")
}

// backoff returns the sleep before retry number attempt (1-based): uniform in
// [0, min(RetryMaxDelay, RetryBaseDelay·2^(attempt-1))).
func (s *Store) backoff(attempt int) time.Duration {
	ceil := s.opts.RetryBaseDelay
	for i := 1; i < attempt && ceil < s.opts.RetryMaxDelay; i++ {
		ceil *= 2
	}
	ceil = min(ceil, s.opts.RetryMaxDelay)
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil)
}

// rangeSQL is one range scan of the primary key (conversation_id, seq).
const rangeSQL = `
SELECT seq, client_msg_id, sender_id, sender_role, body, created_at
FROM messages
WHERE conversation_id = $1 AND seq > $2
ORDER BY seq
LIMIT $3`

// Range returns up to limit messages of conv with seq > after, in seq order.
// The primary key (conversation_id, seq) serves it as one index range scan.
func (s *Store) Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	var out []charla.Message
	err := s.do(ctx, opRange, func(ctx context.Context) error {
		out = out[:0]
		if limit <= 0 || after >= math.MaxInt64 {
			return nil
		}
		rows, err := s.pool.Query(ctx, rangeSQL, string(conv), int64(after), limit)
		if err != nil {
			return err
		}
		var (
			seq       int64
			cmid, sid string
			role      string
			body      []byte
			ts        time.Time
		)
		_, err = pgx.ForEachRow(rows, []any{&seq, &cmid, &sid, &role, &body, &ts}, func() error {
			out = append(out, charla.Message{
				Conv:        conv,
				Seq:         charla.Seq(seq),
				ClientMsgID: cmid,
				Sender:      charla.Sender{ID: sid, Role: charla.Role(role)},
				Body:        compactJSON(body),
				TS:          ts.UTC(),
			})
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Head returns the highest seq of conv, 0 for a conversation without
// messages: conversations.head, which every append keeps equal to it.
func (s *Store) Head(ctx context.Context, conv charla.ConvID) (charla.Seq, error) {
	var head int64
	err := s.do(ctx, opHead, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, `SELECT head FROM conversations WHERE id = $1`, string(conv)).Scan(&head)
		if errors.Is(err, pgx.ErrNoRows) {
			head = 0
			return nil
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	return charla.Seq(head), nil
}

// Heads returns the heads of convs in one round trip (those without a
// message are left out).
func (s *Store) Heads(ctx context.Context, convs []charla.ConvID) (map[charla.ConvID]charla.Seq, error) {
	ids := make([]string, len(convs))
	for i, c := range convs {
		ids[i] = string(c)
	}
	out := make(map[charla.ConvID]charla.Seq, len(convs))
	err := s.do(ctx, opHead, func(ctx context.Context) error {
		clear(out)
		rows, err := s.pool.Query(ctx, `SELECT id, head FROM conversations WHERE id = ANY($1) AND head > 0`, ids)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var id string
			var head int64
			if err := rows.Scan(&id, &head); err != nil {
				return err
			}
			out[charla.ConvID(id)] = charla.Seq(head)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetReadCursor moves user's cursor in conv forward to seq (never back). The
// conversation row is created if needed, since a cursor may be set before
// the first message (an agent opening an empty conversation).
func (s *Store) SetReadCursor(ctx context.Context, conv charla.ConvID, user string, seq charla.Seq) error {
	if seq > math.MaxInt64 {
		return &Error{Op: opSetReadCursor.String(), Kind: KindInvalid, Attempts: 0, Err: fmt.Errorf("seq %d out of range", seq)}
	}
	return s.do(ctx, opSetReadCursor, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `
WITH conv AS (
    INSERT INTO conversations (id) VALUES ($1) ON CONFLICT (id) DO NOTHING
)
INSERT INTO read_cursors AS rc (conversation_id, user_id, seq)
VALUES ($1, $2, $3)
ON CONFLICT (conversation_id, user_id)
DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
WHERE rc.seq < EXCLUDED.seq`, string(conv), user, int64(seq))
		return err
	})
}

// ReadCursors returns every user's cursor in conv (an empty map when none).
func (s *Store) ReadCursors(ctx context.Context, conv charla.ConvID) (map[string]charla.Seq, error) {
	out := map[string]charla.Seq{}
	err := s.do(ctx, opReadCursors, func(ctx context.Context) error {
		clear(out)
		rows, err := s.pool.Query(ctx, `SELECT user_id, seq FROM read_cursors WHERE conversation_id = $1`, string(conv))
		if err != nil {
			return err
		}
		var user string
		var seq int64
		_, err = pgx.ForEachRow(rows, []any{&user, &seq}, func() error {
			out[user] = charla.Seq(seq)
			return nil
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
