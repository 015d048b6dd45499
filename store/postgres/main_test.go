package postgres

import (
	"context"
	"os"
	"testing"
	"time"

	"charla/store/postgres/pgtest"

	"github.com/rs/zerolog"
)

func TestMain(m *testing.M) { os.Exit(pgtest.Main(m)) }

func needDB(t testing.TB) { t.Helper(); pgtest.Need(t) }

func schemaURL(t testing.TB, params ...string) string {
	t.Helper()
	return pgtest.SchemaURL(t, params...)
}

func randHex(n int) string { return pgtest.RandHex(n) }

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
