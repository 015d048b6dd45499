// Package auth is agent login: the agents who sign in with an e-mail and a
// password, their argon2id password hashes, and the rotating refresh tokens
// that keep them signed in. It defines AgentStore, the capability it needs of
// a store (store/pebble and store/postgres implement it; authtest is their
// shared conformance suite), and Service, the login logic that the HTTP
// handlers of transport and the `charla agents` command call. Access tokens
// are minted by transport, which holds the JWT secret.
package auth

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"charla"
)

// Agent is a member of staff who signs in with an e-mail and a password. Its
// ID is the sub of the access tokens it gets, so it must be a valid user id
// (charla.ValidateUserID): a UUID is.
type Agent struct {
	ID           string      `json:"id"`
	Email        string      `json:"email"` // lower case: e-mails are matched case-insensitively
	Name         string      `json:"name"`
	PasswordHash string      `json:"-"`    // PHC string, see HashPassword
	Role         charla.Role `json:"role"` // agent or admin: customers do not log in here
	Disabled     bool        `json:"disabled"`
	CreatedAt    time.Time   `json:"created_at"`
}

// RefreshToken is the stored side of a refresh token: only its SHA-256, so
// that a leak of the table signs nobody in.
type RefreshToken struct {
	Hash []byte // SHA-256 of the token the client holds
	// Family is shared by every token rotated from one login: a reused
	// token revokes the whole family, since either the client or a thief
	// holds a newer one.
	Family    string
	AgentID   string
	ExpiresAt time.Time
	// Spent is set by UseRefresh when the token had been used or its family
	// revoked before that call: the caller must revoke the family.
	Spent bool
}

// AgentStore is what login needs of a store. Implementations keep agents
// and refresh tokens durably; every method is safe for concurrent use.
type AgentStore interface {
	// AddAgent stores a new agent; ErrAgentExists when its e-mail is taken.
	AddAgent(ctx context.Context, a Agent) error
	// GetAgentByEmail finds an agent by its lower-case e-mail;
	// ErrAgentNotFound when there is none.
	GetAgentByEmail(ctx context.Context, email string) (Agent, error)
	// GetAgent finds an agent by id; ErrAgentNotFound when there is none.
	GetAgent(ctx context.Context, id string) (Agent, error)
	// ListAgents returns every agent, ordered by e-mail.
	ListAgents(ctx context.Context) ([]Agent, error)
	// DisableAgent marks the agent of email disabled and revokes every
	// refresh token it holds; ErrAgentNotFound when there is none.
	DisableAgent(ctx context.Context, email string) error
	// CreateRefresh stores a new, unused refresh token.
	CreateRefresh(ctx context.Context, t RefreshToken) error
	// UseRefresh marks the token of hash used, atomically: of two calls
	// with the same hash, one gets it with Spent false and the other with
	// Spent true. A token used before, or of a revoked family, comes back
	// with Spent true. ErrRefreshNotFound when no token has that hash.
	UseRefresh(ctx context.Context, hash []byte) (RefreshToken, error)
	// RevokeFamily revokes every token of family, present and future uses.
	RevokeFamily(ctx context.Context, family string) error
}

// Errors an AgentStore returns, for errors.Is.
var (
	ErrAgentExists     = errors.New("auth: an agent with that e-mail exists")
	ErrAgentNotFound   = errors.New("auth: no such agent")
	ErrRefreshNotFound = errors.New("auth: no such refresh token")
)

// NormalizeEmail is the form e-mails are stored and looked up in: trimmed,
// lower case. Stores compare the result byte for byte.
func NormalizeEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// ValidateAgent checks what AddAgent callers must supply.
func ValidateAgent(a Agent) error {
	var errs []error
	if err := charla.ValidateUserID(a.ID); err != nil {
		errs = append(errs, fmt.Errorf("id: %w", err))
	}
	if a.Email == "" || a.Email != NormalizeEmail(a.Email) || !strings.Contains(a.Email, "@") || len(a.Email) > 254 {
		errs = append(errs, fmt.Errorf("email %q: must be a lower-case address of at most 254 bytes", a.Email))
	}
	if a.Role != charla.RoleAgent && a.Role != charla.RoleAdmin {
		errs = append(errs, fmt.Errorf("role %q: must be agent or admin", a.Role))
	}
	if a.PasswordHash == "" {
		errs = append(errs, errors.New("password hash is required"))
	}
	return errors.Join(errs...)
}
