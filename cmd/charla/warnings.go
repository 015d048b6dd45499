package main

import (
	"fmt"
	"math"
	"net"
	"net/netip"

	"charla/transport"
)

// warnings lists settings that are valid but dangerous: check-config and
// serve say them loudly and go on, since each has a legitimate use (a
// container's 0.0.0.0 behind a private network, a demo box).
func (c config) warnings() []string {
	var out []string
	if c.Transport.Auth.Mode == transport.AuthDev && !loopback(c.Addr) {
		out = append(out, fmt.Sprintf("auth-mode dev on %s: anyone who reaches it can connect as any user and role; use it on a loopback address only", c.Addr))
	}
	if c.DebugAddr != "" && !loopback(c.DebugAddr) {
		out = append(out, fmt.Sprintf("debug-addr %s is not a loopback address: pprof and the detailed /readyz are open to whoever reaches it", c.DebugAddr))
	}
	if c.Transport.Auth.Mode == transport.AuthJWT && len(c.Transport.Auth.Secret) > 0 {
		if bits := entropyBits(c.Transport.Auth.Secret); bits < 128 {
			out = append(out, fmt.Sprintf("jwt-secret looks guessable (about %.0f bits of entropy, want 128 or more): use a random secret, e.g. Supabase's generated one or `openssl rand -base64 48`", bits))
		}
	}
	return out
}

// loopback reports whether a listen address only accepts local clients. An
// empty host listens on every interface, and a name other than localhost
// may resolve anywhere: neither is loopback.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// entropyBits estimates a secret's entropy from its own byte frequencies
// (Shannon entropy per byte times its length): all one character scores 0,
// a random 32-byte base64 string about 150. It cannot see a dictionary word
// or a pattern, so it catches only the grossest secrets.
func entropyBits(secret []byte) float64 {
	var counts [256]int
	for _, b := range secret {
		counts[b]++
	}
	n := float64(len(secret))
	perByte := 0.0
	for _, k := range counts {
		if k > 0 {
			p := float64(k) / n
			perByte -= p * math.Log2(p)
		}
	}
	return perByte * n
}
