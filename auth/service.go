package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"

	"charla"
)

// Config is login's settings; cmd/charla fills it from flags. The comment of
// each field starts with its flag's name.
type Config struct {
	AccessTTL  time.Duration // access-token-ttl: life of a login's JWT; short, since it cannot be revoked
	RefreshTTL time.Duration // refresh-token-ttl: life of a refresh token; each use rotates it
	// Params are the argon2id costs of new password hashes and of the
	// dummy hash an unknown e-mail is checked against. Not a flag.
	Params Params
}

// DefaultConfig returns README.md's defaults: 15 minutes of access, 30 days
// of refresh, DefaultParams.
func DefaultConfig() Config {
	return Config{AccessTTL: 15 * time.Minute, RefreshTTL: 30 * 24 * time.Hour, Params: DefaultParams}
}

// Validate reports every problem of c at once.
func (c Config) Validate() error {
	var errs []error
	if c.AccessTTL < time.Minute || c.AccessTTL > 24*time.Hour {
		errs = append(errs, fmt.Errorf("access-token-ttl must be between 1m and 24h (got %s)", c.AccessTTL))
	}
	if c.RefreshTTL <= c.AccessTTL {
		errs = append(errs, fmt.Errorf("refresh-token-ttl (%s) must exceed access-token-ttl (%s)", c.RefreshTTL, c.AccessTTL))
	}
	return errors.Join(errs...)
}

// Errors of Service that a client is told about (401): they say as little as
// possible, so that nobody learns which e-mails exist.
var (
	ErrInvalidCredentials = errors.New("auth: invalid e-mail or password")
	ErrInvalidRefresh     = errors.New("auth: invalid or expired refresh token")
	// ErrRefreshReused is a refresh token presented a second time: its
	// family is revoked, and the agent must log in again.
	ErrRefreshReused = errors.New("auth: refresh token reused; its session is revoked")
)

// Session is what a login or a refresh grants, before the access token that
// transport mints for Agent.
type Session struct {
	Agent            Agent
	RefreshToken     string // the client's secret; only its SHA-256 is stored
	RefreshExpiresAt time.Time
}

// Service is agent login over an AgentStore.
type Service struct {
	cfg   Config
	store AgentStore
	// dummyHash is checked for unknown e-mails, so that they take as long
	// as a wrong password and nobody can tell which e-mails exist.
	dummyHash string
}

// NewService returns the login service of cfg over st.
func NewService(cfg Config, st AgentStore) (*Service, error) {
	h, err := HashPassword("not-a-password-of-anyone", cfg.Params)
	if err != nil {
		return nil, err
	}
	return &Service{cfg: cfg, store: st, dummyHash: h}, nil
}

// Config is the service's configuration.
func (s *Service) Config() Config { return s.cfg }

// Store is the service's AgentStore.
func (s *Service) Store() AgentStore { return s.store }

// AddAgent creates an agent with a fresh UUID and the hash of password.
func (s *Service) AddAgent(ctx context.Context, email, name string, role charla.Role, password string) (Agent, error) {
	hash, err := HashPassword(password, s.cfg.Params)
	if err != nil {
		return Agent{}, err
	}
	a := Agent{ID: uuid.NewString(), Email: NormalizeEmail(email), Name: name, PasswordHash: hash, Role: role, CreatedAt: time.Now().UTC().Truncate(time.Microsecond)}
	if err := ValidateAgent(a); err != nil {
		return Agent{}, err
	}
	if err := s.store.AddAgent(ctx, a); err != nil {
		return Agent{}, err
	}
	return a, nil
}

// Login checks email and password and opens a session (a new refresh-token
// family). Every refusal is ErrInvalidCredentials, and an unknown e-mail
// costs the same password check as a known one.
func (s *Service) Login(ctx context.Context, email, password string) (Session, error) {
	a, err := s.store.GetAgentByEmail(ctx, NormalizeEmail(email))
	hash := a.PasswordHash
	switch {
	case errors.Is(err, ErrAgentNotFound):
		hash = s.dummyHash
	case err != nil:
		return Session{}, fmt.Errorf("auth: login: %w", err)
	}
	ok, herr := CheckPassword(hash, password)
	if err != nil || !ok || a.Disabled {
		return Session{}, ErrInvalidCredentials
	}
	if herr != nil {
		return Session{}, fmt.Errorf("auth: login %s: %w", a.ID, herr)
	}
	return s.issue(ctx, a, uuid.NewString())
}

// issue stores a new refresh token of family for a.
func (s *Service) issue(ctx context.Context, a Agent, family string) (Session, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return Session{}, fmt.Errorf("auth: refresh token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	exp := time.Now().Add(s.cfg.RefreshTTL).UTC().Truncate(time.Microsecond)
	if err := s.store.CreateRefresh(ctx, RefreshToken{Hash: HashRefresh(tok), Family: family, AgentID: a.ID, ExpiresAt: exp}); err != nil {
		return Session{}, fmt.Errorf("auth: refresh token: %w", err)
	}
	return Session{Agent: a, RefreshToken: tok, RefreshExpiresAt: exp}, nil
}

// HashRefresh is the stored form of a refresh token. A token is 256 random
// bits, so a plain SHA-256 is enough: there is nothing to brute-force.
func HashRefresh(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// Refresh spends token and returns a session with its successor in the same
// family. A token used before revokes its family (ErrRefreshReused); an
// unknown or expired one, or one of a disabled agent, is ErrInvalidRefresh.
func (s *Service) Refresh(ctx context.Context, token string) (Session, error) {
	if token == "" || len(token) > 256 {
		return Session{}, ErrInvalidRefresh
	}
	rt, err := s.store.UseRefresh(ctx, HashRefresh(token))
	switch {
	case errors.Is(err, ErrRefreshNotFound):
		return Session{}, ErrInvalidRefresh
	case err != nil:
		return Session{}, fmt.Errorf("auth: refresh: %w", err)
	case rt.Spent:
		if err := s.store.RevokeFamily(ctx, rt.Family); err != nil {
			return Session{}, fmt.Errorf("auth: refresh: revoke reused family: %w", err)
		}
		return Session{}, ErrRefreshReused
	case !time.Now().Before(rt.ExpiresAt):
		return Session{}, ErrInvalidRefresh
	}
	a, err := s.store.GetAgent(ctx, rt.AgentID)
	switch {
	case errors.Is(err, ErrAgentNotFound) || err == nil && a.Disabled:
		_ = s.store.RevokeFamily(ctx, rt.Family)
		return Session{}, ErrInvalidRefresh
	case err != nil:
		return Session{}, fmt.Errorf("auth: refresh: %w", err)
	}
	return s.issue(ctx, a, rt.Family)
}

// Logout revokes the family of token. An unknown token is no error: the
// client is logged out either way.
func (s *Service) Logout(ctx context.Context, token string) error {
	if token == "" || len(token) > 256 {
		return nil
	}
	rt, err := s.store.UseRefresh(ctx, HashRefresh(token))
	switch {
	case errors.Is(err, ErrRefreshNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("auth: logout: %w", err)
	}
	if err := s.store.RevokeFamily(ctx, rt.Family); err != nil {
		return fmt.Errorf("auth: logout: %w", err)
	}
	return nil
}
