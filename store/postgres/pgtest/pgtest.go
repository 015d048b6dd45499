// Package pgtest gives tests a real PostgreSQL: one database per test run
// (created from CHARLA_TEST_DATABASE_URL, dropped at the end) and a fresh
// schema per test, so tests are isolated without paying for a database each.
//
// Under CI (CI=true) an unreachable server fails the run; elsewhere the tests
// that need it are skipped with the reason.
package pgtest

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

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/jackc/pgx/v5"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

// DefaultURL is the server the tests use unless CHARLA_TEST_DATABASE_URL
// names another; its database is only used to create and drop ours.
const DefaultURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

var (
	dbURL      string // this run's database, "" when unreachable outside CI
	skipReason string
	schemaSeq  atomic.Int64
)

// Main runs the package's tests around a database of their own, then checks
// that they leaked no goroutine (ignoring those of leakOpts); call it from
// TestMain and pass its result to os.Exit.
func Main(m *testing.M, leakOpts ...goleak.Option) int {
	code := run(m)
	if code == 0 {
		if err := goleak.Find(leakOpts...); err != nil {
			fmt.Fprintf(os.Stderr, "goroutine leak: %v\n", err)
			code = 1
		}
	}
	return code
}

func run(m *testing.M) int {
	base := os.Getenv("CHARLA_TEST_DATABASE_URL")
	if base == "" {
		base = DefaultURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, base)
	if err != nil {
		msg := fmt.Sprintf("PostgreSQL is unreachable at %s: %v (set CHARLA_TEST_DATABASE_URL, or start it: pg_ctlcluster <version> main start)", Redact(base), err)
		if os.Getenv("CI") == "true" {
			// Under CI a missing database is a failure, never a skip: a
			// green run must mean the store was tested.
			fmt.Fprintln(os.Stderr, "FAIL: "+msg)
			return 1
		}
		skipReason = msg
		return m.Run()
	}
	name := "charla_test_" + RandHex(6)
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
	dbURL = u.String()
	admin.Close(ctx)

	code := m.Run()

	// A new connection: a test may have restarted the server meanwhile.
	dctx, dcancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer dcancel()
	admin, err = pgx.Connect(dctx, base)
	if err == nil {
		_, err = admin.Exec(dctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		admin.Close(dctx)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "drop database %s: %v\n", name, err)
	}
	return code
}

// Need skips the test when PostgreSQL is unreachable outside CI.
func Need(t testing.TB) {
	t.Helper()
	if dbURL == "" {
		t.Skip(skipReason)
	}
}

// DatabaseURL is this run's database (Need first).
func DatabaseURL(t testing.TB) string {
	t.Helper()
	Need(t)
	return dbURL
}

// SchemaURL creates a fresh, empty schema in the test database and returns a
// URL whose connections use it (search_path), with extra query parameters
// given as name, value pairs.
func SchemaURL(t testing.TB, params ...string) string {
	t.Helper()
	Need(t)
	schema := fmt.Sprintf("t%d_%s", schemaSeq.Add(1), RandHex(3))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	u, _ := url.Parse(dbURL)
	q := u.Query()
	q.Set("search_path", schema)
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// Proxy starts an in-process TCP proxy (toxiproxy) in front of the server of
// dbURL and returns it with dbURL rewritten to go through it: a test cuts the
// database off with Stop (connections reset, new ones refused) or a toxic,
// and brings it back with Start.
func Proxy(t testing.TB, dbURL string) (*toxiproxy.Proxy, string) {
	t.Helper()
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "pg", "127.0.0.1:0", u.Host)
	if err := p.Start(); err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Stop)
	u.Host = p.Listen
	return p, u.String()
}

// RandHex returns 2n random hex characters, for unique names.
func RandHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Redact hides the password of a URL for messages.
func Redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
}
