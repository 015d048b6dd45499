package soapsim

import "testing"

func TestZipfPicker(t *testing.T) {
	if _, err := NewZipfPicker(1, 0, 1.1); err == nil {
		t.Error("n 0 accepted")
	}
	if _, err := NewZipfPicker(1, 10, 1); err == nil {
		t.Error("exponent 1 accepted")
	}
	a, _ := NewZipfPicker(7, 10_000, 1.1)
	b, _ := NewZipfPicker(7, 10_000, 1.1)
	counts := map[string]int{}
	for range 10_000 {
		sku := a.Next()
		if sku != b.Next() {
			t.Fatal("same seed, different picks")
		}
		if sku < SKU(1) || sku > SKU(10_000) {
			t.Fatalf("picked %s", sku)
		}
		counts[sku]++
	}
	if counts[SKU(1)] < counts[SKU(100)] || counts[SKU(1)] < 1000 {
		t.Errorf("SKU(1) picked %d times, SKU(100) %d: not skewed", counts[SKU(1)], counts[SKU(100)])
	}
	t.Logf("10,000 picks: %d distinct SKUs, SKU(1) %d times", len(counts), counts[SKU(1)])
}
