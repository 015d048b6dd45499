package transport

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"charla"
)

// Auth modes.
const (
	AuthJWT = "jwt" // HS256 tokens, Supabase-compatible claims
	AuthDev = "dev" // ?user=&role= trusted as given: development only
)

// ClockSkew is how long after its exp a token is still honoured, at the
// upgrade and during the session alike (one rule): the issuer's clock and
// ours may disagree by a few seconds.
const ClockSkew = 5 * time.Second

// Identity is who a request authenticated as.
type Identity struct {
	User charla.Sender
	// Expires is when the session ends: the token's exp plus ClockSkew, or
	// the authenticator's MaxSession from now if that comes first (always
	// the latter in dev mode). The connection is closed with 4001 then.
	Expires time.Time
}

// Authenticator checks a request's credentials: the Authorization header,
// then the access_token query parameter, then (dev mode only) user and role.
type Authenticator struct {
	Mode   string // auth-mode
	Secret []byte // jwt-secret
	// MaxSession (max-session) bounds a connection's life even when its
	// token's exp is years away: past it the client reconnects with a
	// fresh token. Zero means no bound beyond the token's.
	MaxSession time.Duration
}

// claims are the JWT claims Charla reads: Supabase puts the application
// role in app_metadata.role and "authenticated" in role.
type claims struct {
	jwt.RegisteredClaims
	Role        string `json:"role,omitempty"`
	AppMetadata struct {
		Role string `json:"role,omitempty"`
	} `json:"app_metadata,omitzero"`
}

// Authenticate returns the request's identity or an unauthorized *charla.Error.
func (a Authenticator) Authenticate(r *http.Request) (Identity, error) {
	token := ""
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return Identity{}, charla.Errorf(charla.CodeUnauthorized, "Authorization header must be \"Bearer <token>\"")
		}
		token = tok
	} else {
		token = r.URL.Query().Get("access_token")
	}
	var id Identity
	var err error
	switch {
	case token != "":
		id, err = a.parse(token)
	case a.Mode == AuthDev:
		id, err = devIdentity(r.URL.Query())
	default:
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "missing token: send Authorization: Bearer <JWT> or ?access_token=<JWT>")
	}
	if err != nil {
		return Identity{}, err
	}
	if err := charla.ValidateUserID(id.User.ID); err != nil {
		return Identity{}, err
	}
	if a.MaxSession > 0 {
		if limit := time.Now().Add(a.MaxSession); id.Expires.IsZero() || limit.Before(id.Expires) {
			id.Expires = limit
		}
	}
	return id, nil
}

func (a Authenticator) parse(token string) (Identity, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(ClockSkew))
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "token expired")
	case err != nil:
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "invalid token: %v", err)
	case c.Subject == "":
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "token has no sub")
	}
	role := charla.Role(c.Role)
	if !role.Valid() {
		role = charla.Role(c.AppMetadata.Role)
	}
	if !role.Valid() {
		// A Supabase user with no application role is a customer: the least
		// privilege there is.
		role = charla.RoleCustomer
	}
	return Identity{User: charla.Sender{ID: c.Subject, Role: role}, Expires: c.ExpiresAt.Add(ClockSkew)}, nil
}

func devIdentity(q url.Values) (Identity, error) {
	user, role := q.Get("user"), charla.Role(q.Get("role"))
	if user == "" {
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "dev auth: missing ?user=")
	}
	if role == "" {
		role = charla.RoleCustomer
	}
	if !role.Valid() {
		return Identity{}, charla.Errorf(charla.CodeUnauthorized, "dev auth: role must be agent, customer or admin")
	}
	return Identity{User: charla.Sender{ID: user, Role: role}}, nil
}

// MintToken signs an HS256 token for user with the claims Charla reads. It
// is what `charla token` prints, for development and tests.
func MintToken(secret []byte, user string, role charla.Role, ttl time.Duration) (string, error) {
	now := time.Now()
	c := claims{RegisteredClaims: jwt.RegisteredClaims{
		Subject: user, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
	}, Role: string(role)}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

// OriginPolicy decides which browser origins may open a WebSocket and may
// call the REST endpoints (CORS). Requests without an Origin header
// (non-browser clients) are always allowed; with an empty list only
// same-origin pages are; "*" allows every origin. An entry is an exact
// origin, or "https://*.example.com", which allows every subdomain of
// example.com (not example.com itself) on that scheme.
type OriginPolicy []string

// Allowed reports whether r's Origin may connect.
func (p OriginPolicy) Allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	if listed, _ := p.match(origin); listed {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && len(p) == 0 && strings.EqualFold(u.Host, r.Host)
}
