package transport

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"

	"charla/auth"
)

// noAgents is an AgentStore that knows nobody: the fuzzed logins all fail
// after the password check, as for unknown e-mails.
type noAgents struct{ auth.AgentStore }

func (noAgents) GetAgentByEmail(context.Context, string) (auth.Agent, error) {
	return auth.Agent{}, auth.ErrAgentNotFound
}

// FuzzLoginBody feeds POST /v1/auth/login arbitrary bodies: it never panics
// and always answers a 4xx with the error body. make test runs the seeds.
func FuzzLoginBody(f *testing.F) {
	cfg := auth.DefaultConfig()
	cfg.Params = auth.Params{MemoryKiB: 64, Time: 1, Threads: 1}
	svc, err := auth.NewService(cfg, noAgents{})
	if err != nil {
		f.Fatal(err)
	}
	s := &Server{cfg: Config{Auth: Authenticator{Mode: AuthJWT, Secret: []byte("0123456789abcdef0123456789abcdef")}, Login: svc}, log: zerolog.Nop()}
	for _, seed := range []string{
		`{"email":"a@b.c","password":"12345678"}`, `{}`, `[]`, `null`, `{"email":1}`, `{"email":"a","password":"b"}{}`,
		`{"email":"` + string(make([]byte, 10000)) + `"}`, "\xff\xfe", `{"email":"a@b.c","password":"` + string(bytes.Repeat([]byte("x"), 2000)) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		w := httptest.NewRecorder()
		r := httptest.NewRequest("POST", "/v1/auth/login", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		s.handleLogin(w, r)
		if w.Code < 400 || w.Code >= 500 || !bytes.HasPrefix(w.Body.Bytes(), []byte(`{"error":{"code":`)) {
			t.Fatalf("body %q: %d %s", body, w.Code, w.Body.Bytes())
		}
		if w.Code == http.StatusOK {
			t.Fatal("a login succeeded")
		}
	})
}
