package whatsapp_test

import (
	"errors"
	"strings"
	"testing"

	"charla/whatsapp"
)

func TestVerifySignature(t *testing.T) {
	secret := []byte("app-secret")
	body := []byte(`{"object":"whatsapp_business_account","entry":[]}`)
	good := whatsapp.Sign(secret, body)
	tests := []struct {
		name   string
		secret []byte
		body   []byte
		header string
		want   error
	}{
		{"right", secret, body, good, nil},
		{"upper-case prefix and hex", secret, body, "SHA256=" + strings.ToUpper(good[len("sha256="):]), nil},
		{"missing", secret, body, "", whatsapp.ErrSignatureMissing},
		{"no prefix", secret, body, good[len("sha256="):], whatsapp.ErrSignatureMalformed},
		{"sha1 prefix", secret, body, "sha1=" + good[len("sha256="):], whatsapp.ErrSignatureMalformed},
		{"truncated", secret, body, good[:len(good)-2], whatsapp.ErrSignatureMalformed},
		{"not hex", secret, body, "sha256=" + strings.Repeat("zz", 32), whatsapp.ErrSignatureMalformed},
		{"other secret", []byte("other"), body, good, whatsapp.ErrSignatureMismatch},
		{"body changed by one byte", secret, append([]byte(nil), append(body[:len(body)-1:len(body)-1], ' ')...), good, whatsapp.ErrSignatureMismatch},
		{"body truncated", secret, body[:len(body)-1], good, whatsapp.ErrSignatureMismatch},
		{"no secret configured", nil, body, good, whatsapp.ErrNoSecret},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := whatsapp.VerifySignature(tt.secret, tt.body, tt.header)
			if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("VerifySignature = %v, want %v", err, tt.want)
			}
			if err != nil && strings.Contains(err.Error(), good[len("sha256="):]) {
				t.Fatalf("the error %q gives the expected signature away", err)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	full := whatsapp.Config{AppSecret: "s", VerifyToken: "v", Token: "t", PhoneNumberID: "1001", GraphURL: whatsapp.DefaultGraphURL}
	tests := []struct {
		name string
		edit func(*whatsapp.Config)
		want []string
	}{
		{"off", func(c *whatsapp.Config) { *c = whatsapp.DefaultConfig() }, nil},
		{"full", func(*whatsapp.Config) {}, nil},
		{"token without secret", func(c *whatsapp.Config) { c.AppSecret = "" }, []string{"whatsapp-app-secret is required"}},
		{"secret alone", func(c *whatsapp.Config) { c.VerifyToken, c.Token, c.PhoneNumberID = "", "", "" },
			[]string{"whatsapp-verify-token is required", "whatsapp-token is required"}},
		{"bad number and url", func(c *whatsapp.Config) { c.PhoneNumberID, c.GraphURL = "+1 555", "graph.facebook.com" },
			[]string{"whatsapp-phone-number-id", "whatsapp-graph-url"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := full
			tt.edit(&c)
			err := c.Validate()
			if (err == nil) != (len(tt.want) == 0) {
				t.Fatalf("Validate = %v, want %q", err, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q missing from %v", w, err)
				}
			}
		})
	}
}
