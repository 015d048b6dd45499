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
