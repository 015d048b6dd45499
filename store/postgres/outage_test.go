package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"charla/store/postgres/pgtest"

	toxiproxy "github.com/Shopify/toxiproxy/v2"

	"charla"
	"charla/store"
)

// proxied puts a TCP proxy between the store and the test database. The
// schema is migrated first, directly: the outage options' short query
// timeout bounds a whole Migrate, which a loaded machine may exceed.
func proxied(t *testing.T, dbURL string) (*toxiproxy.Proxy, string) {
	t.Helper()
	if _, err := MigrateURL(t.Context(), dbURL); err != nil {
		t.Fatal(err)
	}
	return pgtest.Proxy(t, dbURL)
}

func outageOptions(url string) Options {
	o := testOptions(url)
	o.QueryTimeout = 300 * time.Millisecond
	o.ConnectTimeout = 300 * time.Millisecond
	o.RetryAttempts = 2
	o.RetryBaseDelay = time.Millisecond
	o.RetryMaxDelay = 5 * time.Millisecond
	return o
}

// TestUnavailable cuts the network path to the database: calls fail fast with
// an error the caller can tell from a bad request, after the configured
// retries, and succeed again once the path is back.
func TestUnavailable(t *testing.T) {
	p, url := proxied(t, schemaURL(t))
	s := openOpts(t, outageOptions(url))
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "a", "before"))

	p.Stop() // closes the listener and every proxied connection
	before := s.Stats().Ops["append"]
	start := time.Now()
	_, err := s.Append(ctx, []charla.Message{tmsg("c", "b", "during")})
	took := time.Since(start)
	if !IsUnavailable(err) || !IsRetryable(err) || errors.Is(err, store.ErrInvalid) {
		t.Fatalf("Append with the database cut off = %v; want unavailable and retryable", err)
	}
	var e *Error
	if !errors.As(err, &e) || e.Attempts != 3 {
		t.Errorf("error %#v, want 3 attempts (1 + RetryAttempts)", e)
	}
	if d := s.Stats().Ops["append"].Attempts - before.Attempts; d != 3 {
		t.Errorf("%d attempts counted, want 3", d)
	}
	if took > 3*time.Second {
		t.Errorf("failing took %v; connect timeouts should bound it", took)
	}
	if err := s.Ping(ctx); !IsUnavailable(err) {
		t.Errorf("Ping during the outage = %v, want unavailable", err)
	}

	if err := p.Start(); err != nil {
		t.Fatalf("proxy restart: %v", err)
	}
	res, err := s.Append(ctx, []charla.Message{tmsg("c", "b", "after")})
	if err != nil {
		t.Fatalf("Append after the outage: %v", err)
	}
	if res[0].Seq != 2 || res[0].Duplicate {
		t.Errorf("result %+v, want seq 2 (the failed call wrote nothing)", res[0])
	}
}

// TestHungConnection stalls the network without closing it: each attempt is
// cut by QueryTimeout, retried, and reported as unavailable.
func TestHungConnection(t *testing.T) {
	p, url := proxied(t, schemaURL(t))
	s := openOpts(t, outageOptions(url))
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "a", "before"))

	if _, err := p.Toxics.AddToxicJson(strings.NewReader(
		`{"name":"stall","type":"timeout","stream":"downstream","attributes":{"timeout":0}}`)); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := s.Head(ctx, "c")
	took := time.Since(start)
	var e *Error
	if !IsUnavailable(err) || !errors.As(err, &e) || e.Attempts != 3 {
		t.Fatalf("Head over a stalled connection = %v; want unavailable after 3 attempts", err)
	}
	if took < 3*300*time.Millisecond || took > 5*time.Second {
		t.Errorf("took %v, want about 3 × QueryTimeout", took)
	}
	if err := p.Toxics.RemoveToxic(context.Background(), "stall"); err != nil {
		t.Fatal(err)
	}
	if h, err := s.Head(ctx, "c"); err != nil || h != 1 {
		t.Errorf("Head after the stall = %d, %v; want 1", h, err)
	}
}

// TestOpenWhileDown: Open fails as unavailable, unless Lazy, which starts the
// store anyway so that the engine can spool until the database is back.
func TestOpenWhileDown(t *testing.T) {
	p, url := proxied(t, schemaURL(t))
	p.Stop()
	o := outageOptions(url)
	_, err := Open(t.Context(), o, testLogger(t))
	if !IsUnavailable(err) {
		t.Fatalf("Open with the database down = %v, want unavailable", err)
	}
	o.Lazy = true
	s := openOpts(t, o)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Migrate(t.Context()); err != nil {
		t.Fatalf("Migrate once up: %v", err)
	}
	mustAppend(t, s, tmsg("c", "a", "hello"))
}
