package postgres

import (
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// migrationFiles holds the schema history, one numbered file per step
// (NNNN_name.sql). Files are append-only: once a version has been applied
// anywhere, its file never changes (Migrate checks a checksum).
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one parsed migration file.
type migration struct {
	version  int
	name     string
	sql      string
	checksum string
}

// loadMigrations parses the embedded files, in version order.
func loadMigrations() ([]migration, error) {
	entries, err := fs.ReadDir(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("postgres: migrations: %w", err)
	}
	var out []migration
	seen := map[int]string{}
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || path.Ext(name) != ".sql" {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("postgres: migrations: %s: want NNNN_name.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("postgres: migrations: %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		body, err := migrationFiles.ReadFile("migrations/" + name)
		if err != nil {
			return nil, fmt.Errorf("postgres: migrations: %w", err)
		}
		sum := sha256.Sum256(body)
		out = append(out, migration{version: v, name: rest, sql: string(body), checksum: hex.EncodeToString(sum[:])})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	return out, nil
}

// LatestVersion is the schema version this binary needs: the highest
// embedded migration.
func LatestVersion() int {
	ms, err := loadMigrations()
	if err != nil || len(ms) == 0 {
		return 0
	}
	return ms[len(ms)-1].version
}

// beginner is what Migrate needs of a connection or pool.
type beginner interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Migrate applies the embedded migrations that the database (its current
// schema) lacks and returns the versions it applied, in order; none when the
// schema is current.
//
// It is safe to run twice in a row and from several processes at once: each
// migration runs in its own transaction that first takes a transaction-level
// advisory lock (pg_advisory_xact_lock, keyed by the current schema) and then
// re-reads schema_migrations, so a concurrent migrator waits and then finds
// the version applied. A transaction-level lock, rather than a session lock
// on a dedicated connection, is what keeps this correct through PgBouncer in
// transaction mode (Supabase's pooler), where consecutive statements of one
// client connection may reach different server sessions. A failed migration
// leaves nothing behind: it is rolled back whole.
func Migrate(ctx context.Context, pool *pgxpool.Pool) ([]int, error) {
	return migrate(ctx, pool)
}

// MigrateURL is Migrate over a single connection opened from url, for the
// engine's `migrate` subcommand.
func MigrateURL(ctx context.Context, url string) ([]int, error) {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("postgres: migrate: connect: %w", err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return migrate(ctx, conn)
}

// migrateLockSQL serializes migrators of one schema. The advisory lock is
// keyed by two int4: a constant naming Charla's migrations (0x43484d47,
// "CHMG") and the hash of the schema being migrated, so that migrations of
// different schemas in one database do not wait for each other.
const migrateLockSQL = `SELECT pg_advisory_xact_lock(1128811847, hashtext(current_schema()))`

// createVersionTableSQL creates the table of applied versions; run under the
// migration lock, so concurrent migrators never race to create it.
const createVersionTableSQL = `
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`

// migrate applies the pending migrations one transaction each.
func migrate(ctx context.Context, db beginner) ([]int, error) {
	ms, err := loadMigrations()
	if err != nil {
		return nil, err
	}
	var applied []int
	for _, m := range ms {
		done, err := applyOne(ctx, db, m, ms)
		if err != nil {
			return applied, fmt.Errorf("postgres: migrate: %04d_%s: %w", m.version, m.name, err)
		}
		if done {
			applied = append(applied, m.version)
		}
	}
	return applied, nil
}

// applyOne applies m unless it is applied already, checking on the way that
// every applied migration this binary knows still has its checksum.
func applyOne(ctx context.Context, db beginner, m migration, all []migration) (applied bool, err error) {
	tx, err := db.Begin(ctx)
	if err != nil {
		return false, err
	}
	defer func() {
		if !applied || err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
		}
	}()
	if _, err := tx.Exec(ctx, migrateLockSQL); err != nil {
		return false, fmt.Errorf("advisory lock: %w", err)
	}
	if _, err := tx.Exec(ctx, createVersionTableSQL); err != nil {
		return false, fmt.Errorf("schema_migrations: %w", err)
	}
	rows, err := tx.Query(ctx, `SELECT version, checksum FROM schema_migrations`)
	if err != nil {
		return false, fmt.Errorf("schema_migrations: %w", err)
	}
	have := map[int]string{}
	var v int
	var sum string
	_, err = pgx.ForEachRow(rows, []any{&v, &sum}, func() error { have[v] = sum; return nil })
	if err != nil {
		return false, fmt.Errorf("schema_migrations: %w", err)
	}
	for _, k := range all {
		if got, ok := have[k.version]; ok && got != k.checksum {
			return false, fmt.Errorf("applied migration %04d_%s was edited afterwards (checksum %s in the database, %s here): add a new migration instead", k.version, k.name, got, k.checksum)
		}
	}
	if _, ok := have[m.version]; ok {
		return false, nil
	}
	if _, err := tx.Exec(ctx, m.sql); err != nil {
		return false, err
	}
	if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)`,
		m.version, m.name, m.checksum); err != nil {
		return false, fmt.Errorf("record version: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("commit: %w", err)
	}
	return true, nil
}

// schemaVersion returns the highest applied version, 0 when none is.
func schemaVersion(ctx context.Context, pool *pgxpool.Pool) (int, error) {
	var v int
	err := pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM schema_migrations`).Scan(&v)
	if err != nil {
		var pgErr interface{ SQLState() string }
		if errors.As(err, &pgErr) && pgErr.SQLState() == "42P01" { // undefined_table
			return 0, nil
		}
		return 0, err
	}
	return v, nil
}
