package ratelimit_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla/ratelimit"
	"charla/ratelimit/ratelimittest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newRegistry(t testing.TB, c ratelimit.Config, clock *ratelimittest.Clock) *ratelimit.Registry {
	t.Helper()
	r, err := ratelimit.New(c, ratelimit.WithClock(clock.Now))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Burst is the per-minute figure and refills continuously: the 11th login
// inside a minute is refused, with the time until a token is back, and the
// token is back after that time (6 s at 10 per minute), not after a window.
func TestBurstAndContinuousRefill(t *testing.T) {
	clock := ratelimittest.NewClock()
	r := newRegistry(t, ratelimit.DefaultConfig(), clock)
	key := ratelimit.IPKey(netip.MustParseAddr("203.0.113.7"))
	for i := range 10 {
		if ok, _ := r.Allow(ratelimit.Auth, key); !ok {
			t.Fatalf("login %d refused", i+1)
		}
	}
	ok, wait := r.Allow(ratelimit.Auth, key)
	if ok || wait != 6*time.Second {
		t.Fatalf("11th login: ok=%v wait=%s, want refused with 6s", ok, wait)
	}
	clock.Advance(wait - time.Millisecond)
	if ok, _ := r.Allow(ratelimit.Auth, key); ok {
		t.Fatal("a token came back early")
	}
	clock.Advance(time.Millisecond)
	if ok, _ := r.Allow(ratelimit.Auth, key); !ok {
		t.Fatal("no token after Retry-After")
	}
	if got := r.Refused(ratelimit.Auth); got != 2 {
		t.Fatalf("refused %d, want 2", got)
	}
	// Other keys and other classes have their own buckets.
	if ok, _ := r.Allow(ratelimit.Auth, ratelimit.IPKey(netip.MustParseAddr("203.0.113.8"))); !ok {
		t.Fatal("another IP was limited")
	}
	if ok, _ := r.Allow(ratelimit.API, key); !ok {
		t.Fatal("another class was limited")
	}
}

func TestZeroTurnsAClassOff(t *testing.T) {
	c := ratelimit.DefaultConfig()
	c.Chat = 0
	r := newRegistry(t, c, ratelimittest.NewClock())
	for range 10_000 {
		if ok, _ := r.AllowSend("ana"); !ok {
			t.Fatal("chat limited with rate-limit-chat 0")
		}
	}
	if r.Len() != 0 {
		t.Fatalf("%d buckets for a class that is off", r.Len())
	}
	if n, _ := r.FloodLimit(); n != 0 {
		t.Fatalf("flood limit %d with chat off", n)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*ratelimit.Config)
		want []string
	}{
		{"defaults", func(*ratelimit.Config) {}, nil},
		{"negative", func(c *ratelimit.Config) { c.Chat, c.Upgrade = -1, -2 }, []string{"rate-limit-chat must not be negative", "rate-limit-ws must not be negative"}},
		{"bad allow", func(c *ratelimit.Config) { c.Allow = []string{"10.0.0.0/8", "nope"} }, []string{`rate-limit-allow: "nope" is neither a CIDR nor an IP address`}},
		{"bare IPs", func(c *ratelimit.Config) {
			c.Allow, c.TrustedProxies = []string{"10.1.2.3", "::1"}, []string{"192.0.2.1"}
		}, nil},
		{"bad proxies", func(c *ratelimit.Config) { c.TrustedProxies = []string{"10.0.0.0/33"} }, []string{"trusted-proxies:"}},
		{"empty deny", func(c *ratelimit.Config) { c.DenyUserAgents = []string{" "} }, []string{"would deny every request"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ratelimit.DefaultConfig()
			tc.edit(&c)
			err := c.Validate()
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			for _, w := range tc.want {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}
}

// X-Forwarded-For is read only from a trusted proxy, from the right, and
// stops at the first address that is not a trusted proxy: what a client
// writes into the header itself cannot choose the IP it is limited as.
func TestClientIP(t *testing.T) {
	c := ratelimit.DefaultConfig()
	c.TrustedProxies = []string{"10.0.0.0/8"}
	r := newRegistry(t, c, ratelimittest.NewClock())
	for _, tc := range []struct {
		name, peer string
		xff        []string
		want       string
	}{
		{"no proxy", "198.51.100.1:4000", nil, "198.51.100.1"},
		{"untrusted peer's header ignored", "198.51.100.1:4000", []string{"203.0.113.9"}, "198.51.100.1"},
		{"trusted proxy", "10.0.0.2:4000", []string{"203.0.113.9"}, "203.0.113.9"},
		{"client-written entries ignored", "10.0.0.2:4000", []string{"1.2.3.4, 203.0.113.9"}, "203.0.113.9"},
		{"chain of proxies", "10.0.0.2:4000", []string{"203.0.113.9, 10.0.0.7", "10.0.0.3"}, "203.0.113.9"},
		{"garbled hop stops", "10.0.0.2:4000", []string{"203.0.113.9, junk, 10.0.0.7"}, "10.0.0.7"},
		{"proxy without header", "10.0.0.2:4000", nil, "10.0.0.2"},
		{"ipv6 peer", "[2001:db8::1]:4000", nil, "2001:db8::1"},
		{"mapped ipv4", "[::ffff:198.51.100.1]:4000", nil, "198.51.100.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/", nil)
			req.RemoteAddr = tc.peer
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			got, ok := r.ClientIP(req)
			if !ok || got.String() != tc.want {
				t.Fatalf("ClientIP = %s, %v; want %s", got, ok, tc.want)
			}
		})
	}
}

func TestAllowListAndDenyRules(t *testing.T) {
	c := ratelimit.DefaultConfig()
	c.Allow = []string{"127.0.0.0/8", "2001:db8::/32", "192.0.2.5"}
	c.DenyUserAgents = []string{"BadBot", "sqlmap"}
	r := newRegistry(t, c, ratelimittest.NewClock())
	for addr, want := range map[string]bool{"127.0.0.1": true, "::ffff:127.0.0.1": true, "2001:db8::9": true, "192.0.2.5": true, "192.0.2.6": false, "::1": false} {
		if got := r.Exempt(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Exempt(%s) = %v, want %v", addr, got, want)
		}
	}
	for ua, want := range map[string]bool{"Mozilla/5.0 (compatible; badbot/2.1)": true, "sqlmap/1.7": true, "Mozilla/5.0 Firefox": false, "": false} {
		if got := r.Denied(ua); got != want {
			t.Errorf("Denied(%q) = %v, want %v", ua, got, want)
		}
	}
}

// Memory stays bounded under millions of keys: a bucket that is full again
// is evicted (it is the same as a new one, so no decision changes), and
// the maps are rebuilt so that their memory goes back too.
func TestMillionKeysStayBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("allocates a million buckets")
	}
	keys := 1_000_000
	if raceEnabled {
		keys = 100_000
	}
	const boundPerKey = 256 // bytes, the figure docs/PROTOCOL.md and the README state
	clock := ratelimittest.NewClock()
	r := newRegistry(t, ratelimit.DefaultConfig(), clock)
	before := heap()
	for i := range keys {
		r.Allow(ratelimit.Chat, ratelimit.UserKey("user-"+strconv.Itoa(i)))
	}
	held := heap() - before
	perKey := held / int64(keys)
	t.Logf("%d keys: %d buckets, %.1f MiB of heap, %d B per key", keys, r.Len(), float64(held)/(1<<20), perKey)
	if r.Len() != keys || perKey > boundPerKey {
		t.Fatalf("%d buckets, %d B per key; want %d buckets within %d B each", r.Len(), perKey, keys, boundPerKey)
	}
	// Each bucket gave one token, which takes 0.6 s to come back: 0.1 s on,
	// none is full, and none may be evicted.
	clock.Advance(100 * time.Millisecond)
	r.Sweep()
	if r.Len() != keys {
		t.Fatalf("%d buckets after a sweep of partly empty buckets, want %d", r.Len(), keys)
	}
	clock.Advance(ratelimit.Window)
	r.Sweep()
	after := heap() - before
	t.Logf("after a minute idle and a sweep: %d buckets, %.1f MiB of heap", r.Len(), float64(after)/(1<<20))
	if r.Len() != 0 || after > 4<<20 {
		t.Fatalf("%d buckets and %d B held after eviction", r.Len(), after)
	}
	runtime.KeepAlive(r)
}

func heap() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// Allow sweeps a shard by itself once a Window has passed, so a registry
// that nobody calls Sweep on still forgets its idle keys.
func TestAllowSweepsByItself(t *testing.T) {
	clock := ratelimittest.NewClock()
	r := newRegistry(t, ratelimit.DefaultConfig(), clock)
	for i := range 10_000 {
		r.Allow(ratelimit.API, ratelimit.UserKey(fmt.Sprint("u", i)))
	}
	clock.Advance(2 * ratelimit.Window)
	for i := range 10_000 {
		r.Allow(ratelimit.API, ratelimit.UserKey(fmt.Sprint("v", i)))
	}
	if n := r.Len(); n != 10_000 {
		t.Fatalf("%d buckets, want only the 10000 fresh ones", n)
	}
}

// The cost of one decision, which every send and HTTP request pays.
func BenchmarkAllow(b *testing.B) {
	b.Run("one-key", func(b *testing.B) {
		r, _ := ratelimit.New(ratelimit.Config{Chat: 1 << 30})
		for b.Loop() {
			r.AllowSend("ana")
		}
	})
	b.Run("100k-keys", func(b *testing.B) {
		r, _ := ratelimit.New(ratelimit.Config{Chat: 100})
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = fmt.Sprint("user-", i)
		}
		i := 0
		for b.Loop() {
			r.AllowSend(keys[i%len(keys)])
			i++
		}
	})
	b.Run("100k-keys-parallel", func(b *testing.B) {
		r, _ := ratelimit.New(ratelimit.Config{Chat: 100})
		keys := make([]string, 100_000)
		for i := range keys {
			keys[i] = fmt.Sprint("user-", i)
		}
		var seq sync.Mutex
		next := 0
		b.RunParallel(func(pb *testing.PB) {
			seq.Lock()
			i := next * 7919
			next++
			seq.Unlock()
			for pb.Next() {
				r.AllowSend(keys[i%len(keys)])
				i++
			}
		})
	})
}

// The limiter's whole share of one HTTP request, as the transport's guard
// pays it: the client address (the peer, or X-Forwarded-For read from the
// right behind a trusted proxy), the allow-list, the bucket key and the
// decision. Authentication, which picks a user key over the IP key, is not
// the limiter's and is left out.
func BenchmarkRequest(b *testing.B) {
	for _, tc := range []struct {
		name    string
		trusted []string
		xff     string
		user    string
	}{
		{name: "anonymous-direct"},
		{name: "user-direct", user: "ana"},
		{name: "anonymous-behind-proxy", trusted: []string{"10.0.0.0/8"}, xff: "203.0.113.7, 10.0.0.2"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			r, err := ratelimit.New(ratelimit.Config{API: 1 << 30, TrustedProxies: tc.trusted, Allow: []string{"192.168.0.0/16"}})
			if err != nil {
				b.Fatal(err)
			}
			req := httptest.NewRequest(http.MethodGet, "/v1/conversations", nil)
			req.RemoteAddr = "10.0.0.1:40000"
			if tc.xff != "" {
				req.Header.Set("X-Forwarded-For", tc.xff)
			}
			b.ReportAllocs()
			for b.Loop() {
				ip, ok := r.ClientIP(req)
				if !ok || r.Exempt(ip) {
					b.Fatal("client address unreadable or exempt")
				}
				key := ratelimit.IPKey(ip)
				if tc.user != "" {
					key = ratelimit.UserKey(tc.user)
				}
				if allowed, _ := r.Allow(ratelimit.API, key); !allowed {
					b.Fatal("refused under a limit it cannot reach")
				}
			}
		})
	}
}
