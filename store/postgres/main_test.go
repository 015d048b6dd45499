package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// The tests run against a real PostgreSQL: a database of their own, created
// from CHARLA_TEST_DATABASE_URL (its database is only used to create and drop
// ours) and dropped at the end. Each test gets a fresh schema in it, so tests
// are isolated without paying for a database each.
const defaultTestURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	// testDBURL is the URL of this run's database, "" when PostgreSQL is
	// unreachable outside CI.
	testDBURL string
	// skipReason says why testDBURL is empty.
	skipReason string
	schemaSeq  atomic.Int64
)

func TestMain(m *testing.M) {
	code := run(m)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

func run(m *testing.M) int {
	base := os.Getenv("CHARLA_TEST_DATABASE_URL")
	if base == "" {
		base = defaultTestURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is unreachable at %s: %v (set CHARLA_TEST_DATABASE_URL, or start it: pg_ctlcluster <version> main start)", redact(base), err)
		if os.Getenv("CI") == "true" {
			// Under CI a missing database is a failure, never a skip: a
			// green run must mean the store was tested.
			fmt.Fprintln(os.Stderr, "FAIL: "+msg)
			return 1
		}
		skipReason = msg
		return m.Run()
	}
	name := "charla_test_" + randHex(6)
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: create database %s: %v\n", name, err)
		admin.Close(ctx)
		return 1
	}
	u, err := url.Parse(base)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: CHARLA_TEST_DATABASE_URL must be a URL: %v\n", err)
		return 1
	}
	u.Path = "/" + name
	testDBURL = u.String()

	code := m.Run()

	dctx, dcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer dcancel()
	if _, err := admin.Exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
		fmt.Fprintf(os.Stderr, "drop database %s: %v\n", name, err)
	}
	admin.Close(dctx)
	return code
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}

// needDB skips the test when PostgreSQL is unreachable outside CI.
func needDB(t testing.TB) {
	t.Helper()
	if testDBURL == "" {
		t.Skip(skipReason)
	}
}

// schemaURL creates a fresh, empty schema in the test database and returns a
// URL whose connections use it (search_path), with extra query parameters.
func schemaURL(t testing.TB, params ...string) string {
	t.Helper()
	needDB(t)
	schema := fmt.Sprintf("t%d_%s", schemaSeq.Add(1), randHex(3))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, testDBURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	u, _ := url.Parse(testDBURL)
	q := u.Query()
	q.Set("search_path", schema)
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// testOptions are small and fast: a handful of connections, short backoff.
func testOptions(url string) Options {
	o := DefaultOptions()
	o.URL = url
	o.MaxConns = 4
	o.MinConns = 0
	o.QueryTimeout = 5 * time.Second
	o.ConnectTimeout = 2 * time.Second
	o.RetryBaseDelay = 5 * time.Millisecond
	o.RetryMaxDelay = 50 * time.Millisecond
	o.AutoMigrate = true
	return o
}

// testLogger writes to the test's log, so that retries show up on failure.
func testLogger(t testing.TB) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// openOpts opens a store with o and closes it at the end of the test.
func openOpts(t testing.TB, o Options) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Open(ctx, o, testLogger(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// openTest opens a store on a fresh schema.
func openTest(t testing.TB, params ...string) *Store {
	t.Helper()
	return openOpts(t, testOptions(schemaURL(t, params...)))
}

// adminPool is a pool on the test database, for inspecting and sabotaging.
func adminPool(t testing.TB) *pgxpool.Pool {
	t.Helper()
	needDB(t)
	p, err := pgxpool.New(context.Background(), testDBURL)
	if err != nil {
		t.Fatalf("admin pool: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}
