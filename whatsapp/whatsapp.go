// Package whatsapp speaks the WhatsApp Business Cloud API: the webhook
// payloads the platform posts (types, signature check, a parser that
// flattens a batch into messages, contacts and statuses) and a client of the
// Graph API (send a message, look up and download media) with typed errors.
// It holds no state and starts no goroutine: the engine's actors decide what
// to do with what it parses, and when to call the Graph API.
//
// Sub-package fakegraph is a fake Graph API for tests and `make run`.
package whatsapp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// SignatureHeader carries the platform's signature of a webhook body.
const SignatureHeader = "X-Hub-Signature-256"

// signaturePrefix starts every X-Hub-Signature-256 value.
const signaturePrefix = "sha256="

// Errors of VerifySignature, for errors.Is. Their messages are safe to log:
// none includes the expected signature.
var (
	ErrSignatureMissing   = errors.New("whatsapp: signature missing")
	ErrSignatureMalformed = errors.New("whatsapp: signature malformed")
	ErrSignatureMismatch  = errors.New("whatsapp: signature does not match the body")
	ErrNoSecret           = errors.New("whatsapp: no app secret configured")
)

// Sign returns the X-Hub-Signature-256 value of body under secret:
// "sha256=" and the hex HMAC-SHA256 of the raw bytes. The fake Graph API
// and the customer simulator sign with it.
func Sign(secret, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write(body)
	return signaturePrefix + hex.EncodeToString(m.Sum(nil))
}

// VerifySignature checks header (the X-Hub-Signature-256 value) against the
// HMAC-SHA256 of rawBody, the bytes exactly as received, under secret. The
// comparison takes the same time whatever bytes differ. It must run before
// the body is parsed or stored.
func VerifySignature(secret, rawBody []byte, header string) error {
	if len(secret) == 0 {
		return ErrNoSecret
	}
	if header == "" {
		return ErrSignatureMissing
	}
	// The platform sends the prefix in lower case; hex digits may come in
	// either case from other signers (hex.DecodeString accepts both).
	if len(header) < len(signaturePrefix) || !strings.EqualFold(header[:len(signaturePrefix)], signaturePrefix) {
		return fmt.Errorf("%w: want %q and hex", ErrSignatureMalformed, signaturePrefix)
	}
	got, err := hex.DecodeString(header[len(signaturePrefix):])
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: want %d hex bytes", ErrSignatureMalformed, sha256.Size)
	}
	m := hmac.New(sha256.New, secret)
	m.Write(rawBody)
	if !hmac.Equal(got, m.Sum(nil)) {
		return ErrSignatureMismatch
	}
	return nil
}
