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

// Identity is who a request authenticated as.
type Identity struct {
	User charla.Sender
	// Expires is the token's expiry; a connection is closed with 4001 then.
	// Zero in dev mode.
	Expires time.Time
}

// Authenticator checks a request's credentials: the Authorization header,
// then the access_token query parameter, then (dev mode only) user and role.
type Authenticator struct {
	Mode   string
	Secret []byte
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
	if token != "" {
		return a.parse(token)
	}
	if a.Mode == AuthDev {
		return devIdentity(r.URL.Query())
	}
	return Identity{}, charla.Errorf(charla.CodeUnauthorized, "missing token: send Authorization: Bearer <JWT> or ?access_token=<JWT>")
}

func (a Authenticator) parse(token string) (Identity, error) {
	var c claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.Secret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(5*time.Second))
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
	return Identity{User: charla.Sender{ID: c.Subject, Role: role}, Expires: c.ExpiresAt.Time}, nil
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

// OriginPolicy decides which browser origins may open a WebSocket. Requests
// without an Origin header (non-browser clients) are always allowed; with an
// empty list only same-origin pages are; "*" allows every origin.
type OriginPolicy []string

// Allowed reports whether r's Origin may connect.
func (p OriginPolicy) Allowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range p {
		if o == "*" || strings.EqualFold(strings.TrimSuffix(o, "/"), origin) {
			return true
		}
	}
	u, err := url.Parse(origin)
	return err == nil && len(p) == 0 && strings.EqualFold(u.Host, r.Host)
}
