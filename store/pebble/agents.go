package pebble

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"charla"
	"charla/auth"
)

// Key kinds of login (see the package comment). They share no prefix with
// the conversation kinds, so the chat log's scans never step over them.
const (
	kindAgent   byte = 'a' // agent id → agentRecord (JSON)
	kindEmail   byte = 'e' // lower-case e-mail → agent id
	kindRefresh byte = 't' // SHA-256 of a refresh token → refreshRecord (JSON)
	kindFamily  byte = 'f' // refresh family → "" when the family is revoked
)

var _ auth.AgentStore = (*Store)(nil)

func agentKey(id string) []byte      { return append([]byte{kindAgent}, id...) }
func emailKey(email string) []byte   { return append([]byte{kindEmail}, email...) }
func refreshKey(hash []byte) []byte  { return append([]byte{kindRefresh}, hash...) }
func familyKey(family string) []byte { return append([]byte{kindFamily}, family...) }

// agentRecord is an agent as stored: JSON, since agents are few and rarely
// read, and a field added later must not need a migration.
type agentRecord struct {
	ID           string    `json:"id"`
	Email        string    `json:"email"`
	Name         string    `json:"name"`
	PasswordHash string    `json:"password_hash"`
	Role         string    `json:"role"`
	Disabled     bool      `json:"disabled"`
	CreatedAt    time.Time `json:"created_at"`
}

// refreshRecord is a refresh token as stored, under the key of its hash.
type refreshRecord struct {
	Family    string    `json:"family"`
	AgentID   string    `json:"agent_id"`
	ExpiresAt time.Time `json:"expires_at"`
	Used      bool      `json:"used"`
}

// getJSON reads key into v; found is false when key is absent.
func (s *Store) getJSON(key []byte, v any) (found bool, err error) {
	b, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer closer.Close()
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("malformed record under %q: %w", key, err)
	}
	return true, nil
}

// has reports whether key is present.
func (s *Store) has(key []byte) (bool, error) {
	_, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, closer.Close()
}

// AddAgent implements auth.AgentStore: the agent and its e-mail index in one
// synced batch, under authMu so that two adds of one e-mail cannot both pass
// the check.
func (s *Store) AddAgent(ctx context.Context, a auth.Agent) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: add agent: %w", err)
	}
	defer end()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	if taken, err := s.has(emailKey(a.Email)); err != nil {
		return fmt.Errorf("pebble: add agent: %w", err)
	} else if taken {
		return fmt.Errorf("pebble: add agent %s: %w", a.Email, auth.ErrAgentExists)
	}
	rec, err := json.Marshal(agentRecord{ID: a.ID, Email: a.Email, Name: a.Name, PasswordHash: a.PasswordHash,
		Role: string(a.Role), Disabled: a.Disabled, CreatedAt: a.CreatedAt.UTC()})
	if err != nil {
		return fmt.Errorf("pebble: add agent: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(agentKey(a.ID), rec, nil)
	_ = b.Set(emailKey(a.Email), []byte(a.ID), nil)
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: add agent: %w", err)
	}
	return nil
}

func (r agentRecord) agent() auth.Agent {
	return auth.Agent{ID: r.ID, Email: r.Email, Name: r.Name, PasswordHash: r.PasswordHash,
		Role: charla.Role(r.Role), Disabled: r.Disabled, CreatedAt: r.CreatedAt.UTC()}
}

// getAgent reads the agent of id; the caller holds s.mu.
func (s *Store) getAgent(id string) (auth.Agent, error) {
	var r agentRecord
	found, err := s.getJSON(agentKey(id), &r)
	if err != nil {
		return auth.Agent{}, err
	}
	if !found {
		return auth.Agent{}, auth.ErrAgentNotFound
	}
	return r.agent(), nil
}

// getAgentByEmail follows the e-mail index; the caller holds s.mu.
func (s *Store) getAgentByEmail(email string) (auth.Agent, error) {
	id, closer, err := s.db.Get(emailKey(email))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return auth.Agent{}, auth.ErrAgentNotFound
	}
	if err != nil {
		return auth.Agent{}, err
	}
	sid := string(id)
	_ = closer.Close()
	return s.getAgent(sid)
}

// GetAgent implements auth.AgentStore.
func (s *Store) GetAgent(ctx context.Context, id string) (auth.Agent, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return auth.Agent{}, fmt.Errorf("pebble: get agent: %w", err)
	}
	defer end()
	a, err := s.getAgent(id)
	if err != nil {
		return auth.Agent{}, fmt.Errorf("pebble: get agent %s: %w", id, err)
	}
	return a, nil
}

// GetAgentByEmail implements auth.AgentStore.
func (s *Store) GetAgentByEmail(ctx context.Context, email string) (auth.Agent, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return auth.Agent{}, fmt.Errorf("pebble: get agent: %w", err)
	}
	defer end()
	a, err := s.getAgentByEmail(email)
	if err != nil {
		return auth.Agent{}, fmt.Errorf("pebble: get agent %s: %w", email, err)
	}
	return a, nil
}

// ListAgents implements auth.AgentStore: a scan of the e-mail index, which
// is in e-mail order.
func (s *Store) ListAgents(ctx context.Context) ([]auth.Agent, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: list agents: %w", err)
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: []byte{kindEmail}, UpperBound: []byte{kindEmail + 1}})
	if err != nil {
		return nil, fmt.Errorf("pebble: list agents: %w", err)
	}
	defer it.Close()
	var ids []string
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("pebble: list agents: %w", err)
		}
		ids = append(ids, string(v))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble: list agents: %w", err)
	}
	out := make([]auth.Agent, 0, len(ids))
	for _, id := range ids {
		a, err := s.getAgent(id)
		if err != nil {
			return nil, fmt.Errorf("pebble: list agents: %s: %w", id, err)
		}
		out = append(out, a)
	}
	return out, nil
}

// DisableAgent implements auth.AgentStore. The agent's refresh tokens are
// revoked by the flag itself: UseRefresh reports a disabled agent's tokens
// spent, so no index of tokens by agent is needed.
func (s *Store) DisableAgent(ctx context.Context, email string) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: disable agent: %w", err)
	}
	defer end()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	a, err := s.getAgentByEmail(email)
	if err != nil {
		return fmt.Errorf("pebble: disable agent %s: %w", email, err)
	}
	a.Disabled = true
	rec, err := json.Marshal(agentRecord{ID: a.ID, Email: a.Email, Name: a.Name, PasswordHash: a.PasswordHash,
		Role: string(a.Role), Disabled: true, CreatedAt: a.CreatedAt})
	if err != nil {
		return fmt.Errorf("pebble: disable agent: %w", err)
	}
	if err := s.db.Set(agentKey(a.ID), rec, pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: disable agent %s: %w", email, err)
	}
	return nil
}

// CreateRefresh implements auth.AgentStore.
func (s *Store) CreateRefresh(ctx context.Context, t auth.RefreshToken) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: create refresh token: %w", err)
	}
	defer end()
	rec, err := json.Marshal(refreshRecord{Family: t.Family, AgentID: t.AgentID, ExpiresAt: t.ExpiresAt.UTC()})
	if err != nil {
		return fmt.Errorf("pebble: create refresh token: %w", err)
	}
	if err := s.db.Set(refreshKey(t.Hash), rec, pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: create refresh token: %w", err)
	}
	return nil
}

// UseRefresh implements auth.AgentStore: read, mark used and sync under
// authMu, so that of two concurrent uses exactly one finds it unused.
func (s *Store) UseRefresh(ctx context.Context, hash []byte) (auth.RefreshToken, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
	}
	defer end()
	s.authMu.Lock()
	defer s.authMu.Unlock()
	var r refreshRecord
	found, err := s.getJSON(refreshKey(hash), &r)
	if err != nil {
		return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
	}
	if !found {
		return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", auth.ErrRefreshNotFound)
	}
	t := auth.RefreshToken{Hash: hash, Family: r.Family, AgentID: r.AgentID, ExpiresAt: r.ExpiresAt.UTC(), Spent: r.Used}
	if !t.Spent {
		revoked, err := s.has(familyKey(r.Family))
		if err != nil {
			return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
		}
		a, err := s.getAgent(r.AgentID)
		if err != nil && !errors.Is(err, auth.ErrAgentNotFound) {
			return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
		}
		t.Spent = revoked || a.Disabled
	}
	if r.Used {
		return t, nil
	}
	r.Used = true
	rec, err := json.Marshal(r)
	if err != nil {
		return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
	}
	if err := s.db.Set(refreshKey(hash), rec, pebbledb.Sync); err != nil {
		return auth.RefreshToken{}, fmt.Errorf("pebble: use refresh token: %w", err)
	}
	return t, nil
}

// RevokeFamily implements auth.AgentStore: one marker key, which
// UseRefresh checks, rather than a rewrite of every token of the family.
func (s *Store) RevokeFamily(ctx context.Context, family string) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: revoke family: %w", err)
	}
	defer end()
	if err := s.db.Set(familyKey(family), nil, pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: revoke family %s: %w", family, err)
	}
	return nil
}
