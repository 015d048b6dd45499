package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Params are argon2id's cost parameters. A hash carries the ones it was
// made with (PHC string), so raising them later only affects new hashes.
type Params struct {
	MemoryKiB uint32 // m
	Time      uint32 // t, passes over the memory
	Threads   uint8  // p
}

// DefaultParams are OWASP's first argon2id recommendation (m = 19 MiB,
// t = 2, p = 1): tens of milliseconds per login on one core, and 19 MiB per
// guess for an attacker's GPU. Logins are rare; a server that must bear a
// burst of them bounds its concurrency, not this cost.
var DefaultParams = Params{MemoryKiB: 19 * 1024, Time: 2, Threads: 1}

const (
	saltBytes = 16
	keyBytes  = 32
)

// MinPasswordBytes is the shortest password HashPassword accepts.
const MinPasswordBytes = 8

// MaxPasswordBytes bounds a password: argon2 hashes any length, and an
// unbounded one is a cheap way to make the server hash megabytes.
const MaxPasswordBytes = 1024

// ErrWeakPassword is HashPassword refusing a password out of bounds.
var ErrWeakPassword = fmt.Errorf("auth: a password must be %d to %d bytes", MinPasswordBytes, MaxPasswordBytes)

// b64 is the PHC string's base64: standard alphabet, no padding.
var b64 = base64.RawStdEncoding

// HashPassword returns the PHC string of password under p:
// $argon2id$v=19$m=<KiB>,t=<passes>,p=<threads>$<salt>$<key>.
func HashPassword(password string, p Params) (string, error) {
	if len(password) < MinPasswordBytes || len(password) > MaxPasswordBytes {
		return "", ErrWeakPassword
	}
	salt := make([]byte, saltBytes)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	return encodeHash(p, salt, argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, keyBytes)), nil
}

func encodeHash(p Params, salt, key []byte) string {
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.MemoryKiB, p.Time, p.Threads, b64.EncodeToString(salt), b64.EncodeToString(key))
}

// errBadHash is a stored hash that is not an argon2id PHC string.
var errBadHash = errors.New("auth: malformed password hash")

// CheckPassword reports whether password matches hash, in time that depends
// on the hash's parameters only, never on where the keys differ.
func CheckPassword(hash, password string) (bool, error) {
	p, salt, key, err := decodeHash(hash)
	if err != nil {
		return false, err
	}
	if len(password) > MaxPasswordBytes {
		// Still hash (a truncated copy) so that the answer takes as long.
		password = password[:MaxPasswordBytes]
		argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
		return false, nil
	}
	got := argon2.IDKey([]byte(password), salt, p.Time, p.MemoryKiB, p.Threads, uint32(len(key)))
	return subtle.ConstantTimeCompare(got, key) == 1, nil
}

func decodeHash(hash string) (Params, []byte, []byte, error) {
	parts := strings.Split(hash, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return Params{}, nil, nil, errBadHash
	}
	var v int
	if _, err := fmt.Sscanf(parts[2], "v=%d", &v); err != nil || v != argon2.Version {
		return Params{}, nil, nil, fmt.Errorf("%w: version %q", errBadHash, parts[2])
	}
	var p Params
	if _, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.MemoryKiB, &p.Time, &p.Threads); err != nil || p.Time == 0 || p.Threads == 0 || p.MemoryKiB < 8*uint32(p.Threads) {
		return Params{}, nil, nil, fmt.Errorf("%w: parameters %q", errBadHash, parts[3])
	}
	salt, err1 := b64.DecodeString(parts[4])
	key, err2 := b64.DecodeString(parts[5])
	if err1 != nil || err2 != nil || len(salt) < 8 || len(key) < 16 {
		return Params{}, nil, nil, fmt.Errorf("%w: salt or key", errBadHash)
	}
	return p, salt, key, nil
}
