package transport

import (
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"time"

	"charla"
	"charla/auth"
	"charla/store"
)

// maxAuthBody bounds the JSON body of the /v1/auth endpoints: an e-mail, a
// password (auth.MaxPasswordBytes) or a refresh token, with room to spare.
const maxAuthBody = 8 << 10

// loginRequest is POST /v1/auth/login's body.
type loginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// refreshRequest is the body of POST /v1/auth/refresh and /v1/auth/logout.
type refreshRequest struct {
	RefreshToken string `json:"refresh_token"`
}

// TokenResponse is what a login or a refresh answers: the field names of
// Supabase Auth's token endpoint, so that its client libraries' shapes fit.
type TokenResponse struct {
	AccessToken      string    `json:"access_token"`
	TokenType        string    `json:"token_type"` // always "bearer"
	ExpiresIn        int64     `json:"expires_in"` // seconds
	ExpiresAt        int64     `json:"expires_at"` // unix seconds
	RefreshToken     string    `json:"refresh_token"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"`
	User             AgentInfo `json:"user"`
}

// AgentInfo is the signed-in agent as a token response shows it.
type AgentInfo struct {
	ID    string      `json:"id"`
	Email string      `json:"email"`
	Name  string      `json:"name"`
	Role  charla.Role `json:"role"`
}

// decodeJSONBody decodes a small JSON object body into v: at most max
// bytes, Content-Type application/json (or none), one object and nothing
// after it. Unknown fields are ignored, as in protocol frames.
func decodeJSONBody(w http.ResponseWriter, r *http.Request, max int64, v any) (int, *charla.Error) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return http.StatusUnsupportedMediaType, charla.Errorf(charla.CodeBadRequest, "Content-Type must be application/json")
		}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, max))
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, charla.Errorf(charla.CodeTooLarge, "body is larger than %d bytes", max)
		}
		return http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, "body must be a JSON object: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, "body must be one JSON object")
	}
	return 0, nil
}

// decodeLogin reads and checks a login body.
func decodeLogin(w http.ResponseWriter, r *http.Request) (loginRequest, int, *charla.Error) {
	var req loginRequest
	if status, e := decodeJSONBody(w, r, maxAuthBody, &req); e != nil {
		return req, status, e
	}
	if req.Email == "" || req.Password == "" {
		return req, http.StatusBadRequest, charla.Errorf(charla.CodeBadRequest, "email and password are required")
	}
	return req, 0, nil
}

// loginReady answers 503 unless login can work: it needs the agents' store
// and a secret to sign access tokens with. Dev mode without a jwt-secret
// has none, and minting tokens with an empty key would be worse than none.
func (s *Server) loginReady(w http.ResponseWriter) bool {
	switch {
	case s.cfg.Login == nil:
		writeProblemStatus(w, http.StatusServiceUnavailable, charla.Errorf(charla.CodeUnavailable, "login is not configured on this server"))
		return false
	case len(s.cfg.Auth.Secret) == 0:
		writeProblemStatus(w, http.StatusServiceUnavailable, charla.Errorf(charla.CodeUnavailable, "login needs --jwt-secret to sign access tokens"))
		return false
	}
	return true
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	if !s.loginReady(w) {
		return
	}
	req, status, e := decodeLogin(w, r)
	if e != nil {
		writeProblemStatus(w, status, e)
		return
	}
	sess, err := s.cfg.Login.Login(r.Context(), req.Email, req.Password)
	s.answerSession(w, sess, err)
}

// refreshBody reads the body of /v1/auth/refresh and /logout, answering
// the request itself when it cannot.
func (s *Server) refreshBody(w http.ResponseWriter, r *http.Request) (refreshRequest, bool) {
	var req refreshRequest
	if !s.loginReady(w) {
		return req, false
	}
	if status, e := decodeJSONBody(w, r, maxAuthBody, &req); e != nil {
		writeProblemStatus(w, status, e)
		return req, false
	}
	return req, true
}

func (s *Server) handleRefresh(w http.ResponseWriter, r *http.Request) {
	req, ok := s.refreshBody(w, r)
	if !ok {
		return
	}
	sess, err := s.cfg.Login.Refresh(r.Context(), req.RefreshToken)
	s.answerSession(w, sess, err)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request) {
	req, ok := s.refreshBody(w, r)
	if !ok {
		return
	}
	if err := s.cfg.Login.Logout(r.Context(), req.RefreshToken); err != nil {
		s.authFailure(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// answerSession mints the access token of a granted session and answers
// with both tokens, or answers err.
func (s *Server) answerSession(w http.ResponseWriter, sess auth.Session, err error) {
	if err != nil {
		s.authFailure(w, err)
		return
	}
	ttl := s.cfg.Login.Config().AccessTTL
	exp := time.Now().Add(ttl)
	tok, err := MintToken(s.cfg.Auth.Secret, sess.Agent.ID, sess.Agent.Role, ttl)
	if err != nil {
		s.authFailure(w, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, TokenResponse{
		AccessToken: tok, TokenType: "bearer", ExpiresIn: int64(ttl / time.Second), ExpiresAt: exp.Unix(),
		RefreshToken: sess.RefreshToken, RefreshExpiresAt: sess.RefreshExpiresAt.UTC(),
		User: AgentInfo{ID: sess.Agent.ID, Email: sess.Agent.Email, Name: sess.Agent.Name, Role: sess.Agent.Role},
	})
}

// authFailure answers a login service error: 401 for the refusals, 503 when
// the store is down, 500 for anything else (logged, not shown).
func (s *Server) authFailure(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, auth.ErrInvalidCredentials), errors.Is(err, auth.ErrInvalidRefresh), errors.Is(err, auth.ErrRefreshReused):
		writeProblemStatus(w, http.StatusUnauthorized, charla.Errorf(charla.CodeUnauthorized, "%s", trimPrefix(err.Error())))
	case errors.Is(err, store.ErrUnavailable):
		s.log.Warn().Err(err).Msg("login: store unavailable")
		writeProblemStatus(w, http.StatusServiceUnavailable, charla.Errorf(charla.CodeUnavailable, "the agents' store is unavailable; try again"))
	default:
		s.log.Error().Err(err).Msg("login failed")
		writeProblemStatus(w, http.StatusInternalServerError, charla.AsError(err))
	}
}

// trimPrefix drops the "auth: " of a sentinel's text for the client.
func trimPrefix(s string) string {
	const p = "auth: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}
