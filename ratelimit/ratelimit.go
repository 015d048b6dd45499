// Package ratelimit is the engine's rate limiter: token buckets
// (golang.org/x/time/rate) per class and per key, the key being the
// authenticated user, or the client's IP address for anonymous requests. One
// Registry serves the HTTP edge and every conn actor, so that a user's chat
// bucket is one bucket across all their connections and transports.
//
// A Registry is shared mutable state, which the actor model otherwise
// avoids. It is acceptable here because it is a leaf: it calls nothing, holds
// each lock for a map lookup and a bucket update (a few hundred nanoseconds,
// see BenchmarkAllow), never across I/O, and no caller waits on another
// through it. Routing every send through one limiter actor instead would add
// a message round trip to each send and make that actor a bottleneck of
// the whole engine; sharding the maps behind 64 mutexes keeps contention
// negligible on any core count.
//
// Memory: a bucket costs about 180 bytes of heap (measured: 1,000,000 keys
// hold 171 MiB; TestMillionKeysStayBounded enforces 256 B), and a bucket is
// evicted as soon as it has refilled, which is never more than one Window
// after its last use, so memory follows the keys active in the last minute.
package ratelimit

import (
	"errors"
	"fmt"
	"hash/maphash"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Class is a family of requests that share one limit.
type Class uint8

// The classes. Each key (user or IP) has one bucket per class.
const (
	// Auth is logins and token exchanges: few, and guessing passwords is
	// what a limit must stop.
	Auth Class = iota
	// Chat is sending messages: WebSocket send frames and POST /v1/send
	// draw from the same bucket.
	Chat
	// Media is uploads and downloads of attachments.
	Media
	// API is every other HTTP request.
	API
	// Upgrade is WebSocket upgrades, per client IP only: a guard against
	// connection floods, so a generous bucket.
	Upgrade
	numClasses
)

var classNames = [numClasses]string{"auth", "chat", "media", "api", "upgrade"}

func (c Class) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// Window is what the per-minute figures are per: a bucket holds that many
// tokens (its burst) and refills them continuously over one Window, so the
// 11th login attempt inside a minute is refused and a limited user has a
// token back within Window/limit.
const Window = time.Minute

// FloodFactor sets when a WebSocket client is flooding rather than merely
// over its limit: a connection whose refused sends within one Window exceed
// FloodFactor times its chat limit is closed with 4029. An honest client
// that backs off on rate_limited never comes near it; one that ignores the
// refusals at twice its rate or more reaches it within the Window.
const FloodFactor = 2

// Config is the limiter's settings. The comment of each field starts with
// the setting's name, the engine's flag.
type Config struct {
	Auth    int // rate-limit-auth: logins per minute per client (0 = off)
	Chat    int // rate-limit-chat: messages sent per minute per user, over every connection and transport (0 = off)
	Media   int // rate-limit-media: media requests per minute per user (0 = off)
	API     int // rate-limit-api: other HTTP requests per minute per user (0 = off)
	Upgrade int // rate-limit-ws: WebSocket upgrades per minute per client IP (0 = off)
	// rate-limit-allow: client addresses (CIDR, or a bare IP) that no limit
	// applies to, nor the per-IP connection cap.
	Allow []string
	// rate-limit-deny-user-agents: requests whose User-Agent contains one of
	// these (case-insensitively) are refused with 403.
	DenyUserAgents []string
	// trusted-proxies: peers (CIDR or IP) whose X-Forwarded-For is believed;
	// from anyone else the header is ignored, or any client could pick the
	// IP it is limited as.
	TrustedProxies []string
}

// DefaultConfig returns the engine's defaults (README.md's configuration
// table): the seed's 10 / 100 / 50 per minute for auth, chat and media, 600
// for the rest of the API and for WebSocket upgrades from one IP.
func DefaultConfig() Config {
	return Config{Auth: 10, Chat: 100, Media: 50, API: 600, Upgrade: 600}
}

// LoopbackCIDRs are the loopback ranges, which tests and load runs allow-list
// so that they measure the engine, not its limits.
var LoopbackCIDRs = []string{"127.0.0.0/8", "::1/128"}

// Validate reports every problem of c at once (joined with errors.Join).
func (c Config) Validate() error {
	var errs []error
	for _, l := range []struct {
		name string
		v    int
	}{{"rate-limit-auth", c.Auth}, {"rate-limit-chat", c.Chat}, {"rate-limit-media", c.Media}, {"rate-limit-api", c.API}, {"rate-limit-ws", c.Upgrade}} {
		if l.v < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative (got %d; 0 turns it off)", l.name, l.v))
		}
	}
	if _, err := parsePrefixes(c.Allow); err != nil {
		errs = append(errs, fmt.Errorf("rate-limit-allow: %w", err))
	}
	if _, err := parsePrefixes(c.TrustedProxies); err != nil {
		errs = append(errs, fmt.Errorf("trusted-proxies: %w", err))
	}
	for _, ua := range c.DenyUserAgents {
		if strings.TrimSpace(ua) == "" {
			errs = append(errs, errors.New("rate-limit-deny-user-agents: an empty entry would deny every request"))
		}
	}
	return errors.Join(errs...)
}

// parsePrefixes reads CIDRs, taking a bare IP as its own /32 or /128.
func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("%q is neither a CIDR nor an IP address", s))
			continue
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, errors.Join(errs...)
}

// numShards spreads the buckets over this many maps, each behind its own
// mutex, so that concurrent callers rarely meet.
const numShards = 64

// Registry holds every bucket. It is safe for concurrent use.
type Registry struct {
	rates   atomic.Pointer[rates] // replaced whole by SetRates (rates.go)
	allow   []netip.Prefix
	trusted []netip.Prefix
	denyUA  []string
	now     func() time.Time
	seed    maphash.Seed
	shards  [numShards]shard
	refused [numClasses]atomic.Int64
}

type bucketKey struct {
	class Class
	key   string
}

type shard struct {
	mu      sync.Mutex
	buckets map[bucketKey]*rate.Limiter
	// peak is the most buckets the map has held since it was last rebuilt:
	// a Go map never gives back the memory of deleted entries, so a sweep
	// that leaves it far below its peak copies it into a new one.
	peak      int
	lastSweep time.Time
}

// Option adjusts a Registry.
type Option func(*Registry)

// WithClock makes the registry read time from now instead of time.Now, so
// that a test can run minutes of traffic in a moment.
func WithClock(now func() time.Time) Option { return func(r *Registry) { r.now = now } }

// New builds a registry from c, which must be valid (Validate).
func New(c Config, opts ...Option) (*Registry, error) {
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("rate limits: %w", err)
	}
	r := &Registry{now: time.Now, seed: maphash.MakeSeed()}
	r.allow, _ = parsePrefixes(c.Allow)
	r.trusted, _ = parsePrefixes(c.TrustedProxies)
	for _, ua := range c.DenyUserAgents {
		r.denyUA = append(r.denyUA, strings.ToLower(ua))
	}
	r.rates.Store(newRates(c))
	for _, opt := range opts {
		opt(r)
	}
	start := r.now()
	for i := range r.shards {
		r.shards[i].buckets = map[bucketKey]*rate.Limiter{}
		r.shards[i].lastSweep = start
	}
	return r, nil
}

// UserKey is the key of an authenticated user.
func UserKey(id string) string { return "u:" + id }

// IPKey is the key of an anonymous client.
func IPKey(a netip.Addr) string { return "ip:" + a.String() }

// Allow takes one token from key's bucket of class c. When the bucket is
// empty it returns false and how long until a token is back. A class whose
// limit is 0 always allows. It never waits.
func (r *Registry) Allow(c Class, key string) (ok bool, retryAfter time.Duration) {
	rt := r.rates.Load()
	if rt.bursts[c] == 0 {
		return true, 0
	}
	now := r.now()
	k := bucketKey{class: c, key: key}
	sh := &r.shards[maphash.String(r.seed, key)%numShards]
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if now.Sub(sh.lastSweep) >= Window {
		r.sweepLocked(sh, now)
	}
	lim := sh.buckets[k]
	if lim == nil {
		// Read again under the lock: SetRates stores the new rates before
		// it adjusts each shard's buckets, so a bucket made now is either
		// made with them or adjusted by it.
		rt = r.rates.Load()
		if rt.bursts[c] == 0 {
			return true, 0
		}
		lim = rate.NewLimiter(rt.limits[c], rt.bursts[c])
		lim.SetLimitAt(now, rt.limits[c]) // start its clock at ours, not at time zero
		sh.buckets[k] = lim
		sh.peak = max(sh.peak, len(sh.buckets))
	}
	// TokensAt, then AllowN under the shard's lock: the refusal can say
	// exactly when the next token comes, and nothing is reserved for it.
	tokens := lim.TokensAt(now)
	if tokens >= 1 {
		lim.AllowN(now, 1)
		return true, 0
	}
	r.refused[c].Add(1)
	// The wait in whole milliseconds (retry_after_ms), rounded up, and
	// checked against the bucket itself: float arithmetic may leave it a
	// hair short of a token at the exact instant, and a client that waits
	// what it was told must find one.
	wait := time.Duration((1 - tokens) / float64(lim.Limit()) * float64(time.Second))
	wait = (wait + time.Millisecond - 1).Truncate(time.Millisecond)
	for lim.TokensAt(now.Add(wait)) < 1 {
		wait += time.Millisecond
	}
	return false, wait
}

// sweepLocked evicts the buckets that are full again: a full bucket is the
// same as one never created, so eviction changes no decision, and memory
// follows the keys active within the last Window, not every key ever seen.
func (r *Registry) sweepLocked(sh *shard, now time.Time) {
	for k, lim := range sh.buckets {
		if lim.TokensAt(now) >= float64(lim.Burst()) {
			delete(sh.buckets, k)
		}
	}
	if n := len(sh.buckets); sh.peak > 1024 && n < sh.peak/4 {
		fresh := make(map[bucketKey]*rate.Limiter, n)
		for k, lim := range sh.buckets {
			fresh[k] = lim
		}
		sh.buckets, sh.peak = fresh, n
	}
	sh.lastSweep = now
}

// Sweep evicts every idle bucket now. Allow sweeps each shard by itself at
// most once per Window, which is enough to bound memory; Sweep is for tests
// and for an operator's memory figures.
func (r *Registry) Sweep() {
	now := r.now()
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		r.sweepLocked(sh, now)
		sh.mu.Unlock()
	}
}

// Len is the number of buckets held.
func (r *Registry) Len() int {
	n := 0
	for i := range r.shards {
		sh := &r.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

// Refused is how many requests of class c were refused so far.
func (r *Registry) Refused(c Class) int64 { return r.refused[c].Load() }

// AllowSend takes one token of user's chat bucket (actors.SendLimiter).
func (r *Registry) AllowSend(user string) (ok bool, retryAfter time.Duration) {
	return r.Allow(Chat, UserKey(user))
}

// FloodLimit is the refused sends a connection may collect within window
// before it is closed with 4029 (actors.SendLimiter): FloodFactor times the
// chat limit per Window; 0 when chat is not limited.
func (r *Registry) FloodLimit() (refusals int, window time.Duration) {
	return FloodFactor * r.rates.Load().bursts[Chat], Window
}

// Now is the registry's clock (time.Now unless WithClock).
func (r *Registry) Now() time.Time { return r.now() }

// Limit is the per-minute limit of class c (0 when off).
func (r *Registry) Limit(c Class) int { return r.rates.Load().bursts[c] }

// Exempt reports whether a is on the allow-list.
func (r *Registry) Exempt(a netip.Addr) bool { return contains(r.allow, a) }

// Trusted reports whether a is a trusted proxy.
func (r *Registry) Trusted(a netip.Addr) bool { return contains(r.trusted, a) }

func contains(list []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range list {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Denied reports whether a User-Agent matches a deny rule.
func (r *Registry) Denied(userAgent string) bool {
	if len(r.denyUA) == 0 {
		return false
	}
	ua := strings.ToLower(userAgent)
	for _, d := range r.denyUA {
		if strings.Contains(ua, d) {
			return true
		}
	}
	return false
}

// ClientIP is the address a request is limited as: its TCP peer, unless the
// peer is a trusted proxy; then X-Forwarded-For is read from the right (the
// entries a proxy appended last) and the first address that is not itself
// a trusted proxy is the client. Entries further left were written by the
// client and prove nothing. ok is false when the peer address is unreadable.
func (r *Registry) ClientIP(req *http.Request) (addr netip.Addr, ok bool) {
	peer, err := netip.ParseAddrPort(req.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr = peer.Addr().Unmap()
	if !r.Trusted(addr) {
		return addr, true
	}
	hops := req.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			a, err := netip.ParseAddr(strings.TrimSpace(parts[j]))
			if err != nil {
				return addr, true // a garbled hop: stop at the last one we can vouch for
			}
			addr = a.Unmap()
			if !r.Trusted(addr) {
				return addr, true
			}
		}
	}
	return addr, true
}
