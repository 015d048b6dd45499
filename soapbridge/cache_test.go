package soapbridge

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestCacheFreshStaleMiss(t *testing.T) {
	c, err := NewCache(CacheOptions{TTL: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	item := Item{SKU: "A", Name: "Mug", Quantity: 3}

	steps := []struct {
		name      string
		do        func()
		sku       string
		ok, fresh bool
		minAge    time.Duration
		stats     CacheStats // counters only
	}{
		{name: "miss before put", sku: "A", stats: CacheStats{Misses: 1}},
		{name: "hit after put", do: func() { c.Put(item) }, sku: "A", ok: true, fresh: true, stats: CacheStats{Misses: 1, Hits: 1}},
		{name: "stale after TTL", do: func() { time.Sleep(400 * time.Millisecond) }, sku: "A", ok: true, minAge: 400 * time.Millisecond,
			stats: CacheStats{Misses: 1, Hits: 1, Stale: 1}},
		{name: "fresh again after put", do: func() { c.Put(item) }, sku: "A", ok: true, fresh: true, stats: CacheStats{Misses: 1, Hits: 2, Stale: 1}},
		{name: "stale after invalidate", do: func() { c.Invalidate("A") }, sku: "A", ok: true, stats: CacheStats{Misses: 1, Hits: 2, Stale: 2, Invalidations: 1}},
		{name: "invalidate twice counts once", do: func() { c.Invalidate("A") }, sku: "A", ok: true, stats: CacheStats{Misses: 1, Hits: 2, Stale: 3, Invalidations: 1}},
		{name: "other sku misses", sku: "B", stats: CacheStats{Misses: 2, Hits: 2, Stale: 3, Invalidations: 1}},
	}
	for _, s := range steps {
		if s.do != nil {
			s.do()
		}
		got, fresh, age, ok := c.Get(s.sku)
		if ok != s.ok || fresh != s.fresh || (ok && got != item) || age < s.minAge {
			t.Errorf("%s: Get = %+v, fresh %v, age %v, ok %v; want fresh %v, age >= %v, ok %v", s.name, got, fresh, age, ok, s.fresh, s.minAge, s.ok)
		}
		st := c.Stats()
		st.Fresh, st.LastKnown = 0, 0
		if st != s.stats {
			t.Errorf("%s: Stats = %+v, want %+v", s.name, st, s.stats)
		}
	}
	if r := c.Stats().HitRatio(); r != 2.0/7 {
		t.Errorf("HitRatio = %v", r)
	}
}

func TestCacheBounds(t *testing.T) {
	c, err := NewCache(CacheOptions{TTL: time.Minute, Size: 2, LastKnownSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		c.Put(Item{SKU: fmt.Sprint(i)})
	}
	st := c.Stats()
	if st.Fresh != 2 || st.LastKnown != 3 {
		t.Errorf("sizes fresh %d last known %d, want 2 and 3", st.Fresh, st.LastKnown)
	}
	for sku, want := range map[string]string{"0": "miss", "1": "stale", "2": "fresh", "3": "fresh"} {
		_, fresh, _, ok := c.Get(sku)
		got := map[bool]string{true: "fresh", false: "stale"}[fresh]
		if !ok {
			got = "miss"
		}
		if got != want {
			t.Errorf("Get(%s): %s, want %s", sku, got, want)
		}
	}
}

func TestCacheOptions(t *testing.T) {
	cases := []struct {
		o  CacheOptions
		ok bool
	}{
		{CacheOptions{}, true},
		{CacheOptions{TTL: time.Second, Size: 10, LastKnownSize: 10}, true},
		{CacheOptions{TTL: -1}, false},
		{CacheOptions{Size: -1}, false},
		{CacheOptions{Size: 10, LastKnownSize: 5}, false},
	}
	for _, tc := range cases {
		c, err := NewCache(tc.o)
		if (err == nil) != tc.ok {
			t.Errorf("NewCache(%+v) = %v", tc.o, err)
		}
		if c != nil && tc.o.TTL == 0 && c.TTL() != DefaultCacheTTL {
			t.Errorf("default TTL = %v", c.TTL())
		}
	}
}

// TestCacheConcurrent is for the race detector.
func TestCacheConcurrent(t *testing.T) {
	c, err := NewCache(CacheOptions{TTL: 5 * time.Millisecond, Size: 50})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 2000 {
				sku := fmt.Sprint((g*7 + i) % 100)
				switch i % 3 {
				case 0:
					c.Put(Item{SKU: sku})
				case 1:
					c.Get(sku)
				default:
					c.Invalidate(sku)
				}
			}
		}()
	}
	wg.Wait()
	st := c.Stats()
	if st.Hits+st.Stale+st.Misses != 4*667 {
		t.Errorf("gets counted %d, want %d", st.Hits+st.Stale+st.Misses, 4*667)
	}
}
