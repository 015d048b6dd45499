package soapsim

import (
	"fmt"
	"math/rand/v2"
)

// ZipfPicker picks generated SKUs (SKU(1) to SKU(n)) with Zipf-distributed
// popularity, SKU(1) the most asked for, as shoppers ask about a catalogue:
// a benchmark driving GetStock through the cache with it sees a realistic
// hit ratio instead of the uniform worst case. It is deterministic for a
// seed and not safe for concurrent use (one per load-generating goroutine).
type ZipfPicker struct {
	z *rand.Zipf
}

// NewZipfPicker returns a picker over n SKUs with exponent s (> 1; 1.1 is a
// common choice, larger is more skewed).
func NewZipfPicker(seed uint64, n int, s float64) (*ZipfPicker, error) {
	if n < 1 || n > 99_999 {
		return nil, fmt.Errorf("soapsim: zipf: n must be 1 to 99999, got %d", n)
	}
	if !(s > 1) {
		return nil, fmt.Errorf("soapsim: zipf: exponent must be greater than 1, got %v", s)
	}
	r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	return &ZipfPicker{z: rand.NewZipf(r, s, 1, uint64(n-1))}, nil
}

// Next returns the next SKU.
func (p *ZipfPicker) Next() string { return SKU(int(p.z.Uint64()) + 1) }
