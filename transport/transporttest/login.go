package transporttest

import (
	"context"
	"net/http"
	"path/filepath"
	"testing"

	"charla/auth"
	"charla/media"
	"charla/store"
	"charla/store/pebble"
	"charla/transport"
)

// Secret is the JWT secret of StartLogin's engines.
var Secret = []byte("0123456789abcdef0123456789abcdef")

// TestParams are cheap argon2id costs for tests: hashing still dominates a
// login (the timing test needs that), but a suite of logins runs in seconds.
var TestParams = auth.Params{MemoryKiB: 4096, Time: 1, Threads: 1}

// LoginStore is a store that keeps agents too, as both of the engine's do.
type LoginStore interface {
	store.Store
	auth.AgentStore
}

// StartLogin runs an engine in jwt mode (Secret) with agent login over st
// (the embedded store in a temporary directory when st is nil) and media in
// a temporary directory. It returns the login service, to add agents.
func StartLogin(t testing.TB, st LoginStore, opts ...Option) (*Engine, *auth.Service) {
	t.Helper()
	if st == nil {
		o := pebble.DefaultOptions()
		o.MemTableSize, o.CacheSize = 4<<20, 8<<20
		ps, err := pebble.Open(context.Background(), filepath.Join(t.TempDir(), "charla.pebble"), o)
		if err != nil {
			t.Fatal(err)
		}
		st = ps
	}
	cfg := auth.DefaultConfig()
	cfg.Params = TestParams
	svc, err := auth.NewService(cfg, st)
	if err != nil {
		t.Fatal(err)
	}
	ms, err := media.Open(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]Option{
		WithStore(func(testing.TB) store.Store { return st }),
		WithTransport(func(c *transport.Config) {
			c.Auth = transport.Authenticator{Mode: transport.AuthJWT, Secret: Secret}
			c.Login, c.Media = svc, ms
		}),
	}, opts...)
	return Start(t, opts...), svc
}

// Do sends one HTTP request to the engine and returns the response with its
// body read. body is JSON-encoded unless it is []byte or an io.Reader.
func (e *Engine) Do(t testing.TB, method, path, token string, body any, header ...string) (*http.Response, []byte) {
	t.Helper()
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	return roundTrip(t, method, "http://"+e.Addr+path, body, h, false)
}
