package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"charla"
	"charla/auth"
)

var _ auth.AgentStore = (*Store)(nil)

// agentColumns are read in this order by scanAgent.
const agentColumns = `id::text, email, name, password_hash, role, disabled, created_at`

func scanAgent(row pgx.Row) (auth.Agent, error) {
	var a auth.Agent
	var role string
	err := row.Scan(&a.ID, &a.Email, &a.Name, &a.PasswordHash, &role, &a.Disabled, &a.CreatedAt)
	a.Role, a.CreatedAt = charla.Role(role), a.CreatedAt.UTC()
	return a, err
}

// AddAgent implements auth.AgentStore; the unique e-mail constraint decides
// between two adds of one e-mail.
func (s *Store) AddAgent(ctx context.Context, a auth.Agent) error {
	err := s.do(ctx, opAuth, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `INSERT INTO agents (id, email, name, password_hash, role, disabled, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)`, a.ID, a.Email, a.Name, a.PasswordHash, string(a.Role), a.Disabled, a.CreatedAt)
		return err
	})
	var pg *pgconn.PgError
	if errors.As(err, &pg) && pg.Code == "23505" && pg.ConstraintName == "agents_email_key" {
		return fmt.Errorf("postgres: add agent %s: %w", a.Email, auth.ErrAgentExists)
	}
	return err
}

// getAgent runs one single-row agent query.
func (s *Store) getAgent(ctx context.Context, what, query string, arg any) (auth.Agent, error) {
	var a auth.Agent
	found := true
	err := s.do(ctx, opAuth, func(ctx context.Context) error {
		var err error
		a, err = scanAgent(s.pool.QueryRow(ctx, query, arg))
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		return err
	})
	if err != nil {
		return auth.Agent{}, err
	}
	if !found {
		return auth.Agent{}, fmt.Errorf("postgres: get agent %s: %w", what, auth.ErrAgentNotFound)
	}
	return a, nil
}

// GetAgentByEmail implements auth.AgentStore.
func (s *Store) GetAgentByEmail(ctx context.Context, email string) (auth.Agent, error) {
	return s.getAgent(ctx, email, `SELECT `+agentColumns+` FROM agents WHERE email = $1`, email)
}

// GetAgent implements auth.AgentStore. An id that is not a UUID names no
// agent (rather than failing the cast in the database).
func (s *Store) GetAgent(ctx context.Context, id string) (auth.Agent, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return auth.Agent{}, fmt.Errorf("postgres: get agent %q: %w", id, auth.ErrAgentNotFound)
	}
	return s.getAgent(ctx, id, `SELECT `+agentColumns+` FROM agents WHERE id = $1`, u)
}

// ListAgents implements auth.AgentStore.
func (s *Store) ListAgents(ctx context.Context) ([]auth.Agent, error) {
	var out []auth.Agent
	err := s.do(ctx, opAuth, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT `+agentColumns+` FROM agents ORDER BY email`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			a, err := scanAgent(rows)
			if err != nil {
				return err
			}
			out = append(out, a)
		}
		return rows.Err()
	})
	return out, err
}

// DisableAgent implements auth.AgentStore: the flag and the revocation of
// the agent's tokens in one statement.
func (s *Store) DisableAgent(ctx context.Context, email string) error {
	found := false
	err := s.do(ctx, opAuth, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `
WITH a AS (UPDATE agents SET disabled = true WHERE email = $1 RETURNING id),
     t AS (UPDATE refresh_tokens SET revoked = true WHERE agent_id IN (SELECT id FROM a))
SELECT count(*) > 0 FROM a`, email).Scan(&found)
	})
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("postgres: disable agent %s: %w", email, auth.ErrAgentNotFound)
	}
	return nil
}

// CreateRefresh implements auth.AgentStore. A token born into a family
// revoked meanwhile (a reuse racing a rotation) is born revoked.
func (s *Store) CreateRefresh(ctx context.Context, t auth.RefreshToken) error {
	return s.do(ctx, opAuth, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `
INSERT INTO refresh_tokens (hash, family, agent_id, expires_at, revoked)
VALUES ($1, $2, $3, $4, EXISTS (SELECT 1 FROM refresh_tokens WHERE family = $2 AND revoked))`,
			t.Hash, t.Family, t.AgentID, t.ExpiresAt)
		return err
	})
}

// useRefreshSQL marks a token used and returns it with whether it was spent
// before: the row lock of the UPDATE serialises concurrent uses, and the
// second one reads the first one's used_at (READ COMMITTED re-reads the row).
const useRefreshSQL = `
WITH old AS (SELECT hash, used_at IS NOT NULL OR revoked AS spent FROM refresh_tokens WHERE hash = $1 FOR UPDATE)
UPDATE refresh_tokens r SET used_at = coalesce(r.used_at, now())
FROM old WHERE r.hash = old.hash
RETURNING r.family::text, r.agent_id::text, r.expires_at, old.spent`

// UseRefresh implements auth.AgentStore. It is tried once, never retried: a
// retry after a commit whose answer was lost would find the token spent
// and revoke a legitimate session.
func (s *Store) UseRefresh(ctx context.Context, hash []byte) (auth.RefreshToken, error) {
	t := auth.RefreshToken{Hash: hash}
	found := true
	err := s.do(ctx, opAuth, func(ctx context.Context) error {
		err := s.pool.QueryRow(ctx, useRefreshSQL, hash).Scan(&t.Family, &t.AgentID, &t.ExpiresAt, &t.Spent)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			found = false
			return nil
		case err != nil:
			kind, _, code := classify(err, false)
			return &Error{Op: opAuth.String(), Kind: kind, Code: code, Err: err}
		}
		return nil
	})
	if err != nil {
		return auth.RefreshToken{}, err
	}
	if !found {
		return auth.RefreshToken{}, fmt.Errorf("postgres: use refresh token: %w", auth.ErrRefreshNotFound)
	}
	t.ExpiresAt = t.ExpiresAt.UTC()
	return t, nil
}

// RevokeFamily implements auth.AgentStore.
func (s *Store) RevokeFamily(ctx context.Context, family string) error {
	u, err := uuid.Parse(family)
	if err != nil {
		return nil // no token has it: families are UUIDs
	}
	return s.do(ctx, opAuth, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `UPDATE refresh_tokens SET revoked = true WHERE family = $1`, u)
		return err
	})
}
