package soapbridge_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"charla/soapbridge"
	"charla/soapbridge/soapsim"
)

// BenchmarkGetStock is one client round trip to the simulator over
// loopback HTTP (keep-alive), reporting p50/p99 besides ns/op.
func BenchmarkGetStock(b *testing.B) {
	srv, err := soapsim.New(soapsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	s := benchSim(b, srv)
	picker, _ := soapsim.NewZipfPicker(1, soapsim.DefaultCatalogueSize, 1.1)
	lat := make([]time.Duration, 0, b.N)
	ctx := context.Background()
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := s.GetStock(ctx, picker.Next()); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkSearchProducts searches the whole 10,000-item catalogue.
func BenchmarkSearchProducts(b *testing.B) {
	srv, err := soapsim.New(soapsim.Options{})
	if err != nil {
		b.Fatal(err)
	}
	c := benchSim(b, srv)
	ctx := context.Background()
	for i := 0; b.Loop(); i++ {
		if _, err := c.SearchProducts(ctx, "mug", i%5+1); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCacheGet is a fresh hit in a full cache.
func BenchmarkCacheGet(b *testing.B) {
	c, err := soapbridge.NewCache(soapbridge.CacheOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range soapbridge.DefaultCacheSize {
		c.Put(soapbridge.Item{SKU: fmt.Sprintf("SKU-%05d", i+1)})
	}
	picker, _ := soapsim.NewZipfPicker(1, soapbridge.DefaultCacheSize, 1.1)
	skus := make([]string, 1024)
	for i := range skus {
		skus[i] = picker.Next()
	}
	for i := 0; b.Loop(); i++ {
		c.Get(skus[i%len(skus)])
	}
}

func benchSim(b *testing.B, srv *soapsim.Server) *soapbridge.Client {
	ts := httptest.NewServer(srv.Handler())
	b.Cleanup(ts.Close)
	b.Cleanup(srv.Close)
	c, err := soapbridge.New(ts.URL+"/", soapbridge.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.CloseIdleConnections)
	return c
}
