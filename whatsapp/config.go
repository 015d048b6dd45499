package whatsapp

import (
	"errors"
	"fmt"
)

// Config is the channel's settings; cmd/charla fills it from flags
// (whatsapp-*) and checks it with Validate. The channel is off (webhook 503,
// /readyz "whatsapp":"off") until AppSecret is set.
type Config struct {
	AppSecret     string // whatsapp-app-secret: the Meta app's secret, which signs every webhook
	VerifyToken   string // whatsapp-verify-token: the token of the webhook's verification handshake
	Token         string // whatsapp-token: the Graph API bearer token (system user access token)
	PhoneNumberID string // whatsapp-phone-number-id: the business number replies go out from by default
	GraphURL      string // whatsapp-graph-url: the Graph API base, with its version
}

// DefaultConfig is the channel off, aimed at the real Graph API.
func DefaultConfig() Config { return Config{GraphURL: DefaultGraphURL} }

// Enabled reports whether the channel is configured.
func (c Config) Enabled() bool { return c.AppSecret != "" }

// Validate reports every problem at once, each naming its setting. The
// channel is all or nothing: once one of the secrets is given, the others
// it cannot work without are required too.
func (c Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := CheckGraphURL(c.GraphURL); err != nil {
		bad("whatsapp-graph-url: %v", err)
	}
	if c.PhoneNumberID != "" && !digits(c.PhoneNumberID) {
		bad("whatsapp-phone-number-id %q: must be the number's id, digits only", c.PhoneNumberID)
	}
	if c.AppSecret == "" {
		if c.VerifyToken != "" || c.Token != "" || c.PhoneNumberID != "" {
			bad("whatsapp-app-secret is required once any whatsapp-* setting is given: without it no webhook can be trusted")
		}
		return errors.Join(errs...)
	}
	if c.VerifyToken == "" {
		bad("whatsapp-verify-token is required with whatsapp-app-secret (the platform's verification handshake)")
	}
	if c.Token == "" {
		bad("whatsapp-token is required with whatsapp-app-secret (media downloads and replies use the Graph API)")
	}
	return errors.Join(errs...)
}
