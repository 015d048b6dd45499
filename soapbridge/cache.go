package soapbridge

import (
	"fmt"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/hashicorp/golang-lru/v2/expirable"
)

// Defaults of CacheOptions.
const (
	// DefaultCacheTTL is how long an item counts as fresh (DESIGN.md: the
	// seed's 300 s down to 60 s).
	DefaultCacheTTL = 60 * time.Second
	// DefaultCacheSize bounds the fresh entries.
	DefaultCacheSize = 10_000
	// DefaultLastKnownSize bounds the last-known values kept for fallback.
	// They cost about the same per entry as fresh ones (~300 B).
	DefaultLastKnownSize = 50_000
)

// CacheOptions configures a Cache. The zero value of each field means its
// default.
type CacheOptions struct {
	// TTL is how long after Put an item is served as fresh.
	TTL time.Duration
	// Size bounds the fresh entries (least recently used evicted first).
	Size int
	// LastKnownSize bounds the last-known values, kept past the TTL and
	// past Invalidate for the stale fallback. At least Size.
	LastKnownSize int
}

// Cache is the engine's inventory cache: items by SKU, fresh for a TTL, and
// behind them the last known value of every recently seen SKU with its age,
// so that a caller can answer with stale data, marked as such, while the
// service is down. It is safe for concurrent use.
//
// Create ONE Cache per engine and keep it: golang-lru's expirable LRU starts
// a goroutine per cache that never exits (v2.0.7 has no Close; see
// LIBRARY-NOTES.md), so a Cache per conversation or per request would leak
// one goroutine (~12 KB) each. Tests that check for leaks with goleak must
// ignore it: goleak.IgnoreAnyFunction(CacheGoroutine).
type Cache struct {
	ttl       time.Duration
	fresh     *expirable.LRU[string, cached]
	lastKnown *lru.Cache[string, cached]

	hits, misses, stale, invalidations atomic.Uint64
}

// CacheGoroutine is the function of the goroutine every Cache starts and
// never stops, for goleak in the tests of packages that create a Cache:
// goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction(soapbridge.CacheGoroutine)).
const CacheGoroutine = "github.com/hashicorp/golang-lru/v2/expirable.NewLRU[...].func1"

// cached is an item and when it was fetched, for its age.
type cached struct {
	item    Item
	fetched time.Time
}

// NewCache returns a Cache, starting the expirable LRU's goroutine.
func NewCache(o CacheOptions) (*Cache, error) {
	if o.TTL < 0 || o.Size < 0 || o.LastKnownSize < 0 {
		return nil, fmt.Errorf("soapbridge: cache options must not be negative: TTL %v, Size %d, LastKnownSize %d", o.TTL, o.Size, o.LastKnownSize)
	}
	if o.TTL == 0 {
		o.TTL = DefaultCacheTTL
	}
	if o.Size == 0 {
		o.Size = DefaultCacheSize
	}
	if o.LastKnownSize == 0 {
		o.LastKnownSize = max(DefaultLastKnownSize, o.Size)
	}
	if o.LastKnownSize < o.Size {
		return nil, fmt.Errorf("soapbridge: cache LastKnownSize (%d) must be at least Size (%d), or a fresh item could have no fallback", o.LastKnownSize, o.Size)
	}
	lastKnown, err := lru.New[string, cached](o.LastKnownSize)
	if err != nil {
		return nil, fmt.Errorf("soapbridge: cache: %w", err)
	}
	return &Cache{
		ttl:       o.TTL,
		fresh:     expirable.NewLRU[string, cached](o.Size, nil, o.TTL),
		lastKnown: lastKnown,
	}, nil
}

// TTL returns how long an item stays fresh.
func (c *Cache) TTL() time.Duration { return c.ttl }

// Put records item (as just fetched from the service) as fresh and as its
// SKU's last known value.
func (c *Cache) Put(item Item) {
	v := cached{item: item, fetched: time.Now()}
	c.fresh.Add(item.SKU, v)
	c.lastKnown.Add(item.SKU, v)
}

// Get looks sku up. With a fresh entry it returns it with fresh true (a hit).
// Without one, it returns the last known value with fresh false (a stale
// answer: the caller should ask the service, and serve this, with its age,
// only if the service fails), or ok false when the SKU was never seen or has
// been evicted (a miss). age is how long ago the value was fetched.
func (c *Cache) Get(sku string) (item Item, fresh bool, age time.Duration, ok bool) {
	if v, ok := c.fresh.Get(sku); ok {
		c.hits.Add(1)
		return v.item, true, time.Since(v.fetched), true
	}
	if v, ok := c.lastKnown.Get(sku); ok {
		c.stale.Add(1)
		return v.item, false, time.Since(v.fetched), true
	}
	c.misses.Add(1)
	return Item{}, false, 0, false
}

// Invalidate drops sku's fresh entry, so that the next Get is not fresh and
// the caller asks the service again (after a reservation changed the stock,
// say). The last known value stays, for the fallback: when the service is
// down, an outdated figure with its age beats none.
func (c *Cache) Invalidate(sku string) {
	if c.fresh.Remove(sku) {
		c.invalidations.Add(1)
	}
}

// CacheStats are a Cache's counters since it was created.
type CacheStats struct {
	// Hits counts Gets answered fresh.
	Hits uint64 `json:"hits"`
	// Stale counts Gets answered with a last known value only.
	Stale uint64 `json:"stale"`
	// Misses counts Gets with nothing to answer.
	Misses uint64 `json:"misses"`
	// Invalidations counts Invalidates that dropped a fresh entry.
	Invalidations uint64 `json:"invalidations"`
	// Fresh is how many entries the fresh LRU holds (expired entries count
	// until its cleanup goroutine removes them, within TTL/100).
	Fresh int `json:"fresh"`
	// LastKnown is how many last known values are kept.
	LastKnown int `json:"last_known"`
}

// HitRatio is Hits over all Gets, 0 before the first Get.
func (s CacheStats) HitRatio() float64 {
	n := s.Hits + s.Stale + s.Misses
	if n == 0 {
		return 0
	}
	return float64(s.Hits) / float64(n)
}

// Stats returns the counters and sizes. Each counter is read atomically; the
// set is not one snapshot.
func (c *Cache) Stats() CacheStats {
	return CacheStats{
		Hits:          c.hits.Load(),
		Stale:         c.stale.Load(),
		Misses:        c.misses.Load(),
		Invalidations: c.invalidations.Load(),
		Fresh:         c.fresh.Len(),
		LastKnown:     c.lastKnown.Len(),
	}
}
