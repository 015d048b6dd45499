package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestPercentFor(t *testing.T) {
	const mib = 1 << 20
	cases := []struct {
		name        string
		floor, live uint64
		base, want  int
	}{
		{"small heap: collect at the floor", 256 * mib, 32 * mib, 100, 700},
		{"heap above half the floor: GOGC's own target", 256 * mib, 200 * mib, 100, 100},
		{"a higher GOGC is kept", 256 * mib, 64 * mib, 400, 400},
		{"nothing measured yet: the floor from Go's minimum heap", 256 * mib, 0, 100, 6300},
		{"tiny heap: the same", 256 * mib, 1024, 100, 6300},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := percentFor(tc.floor, tc.live, tc.base); got != tc.want {
				t.Fatalf("percentFor(%d, %d, %d) = %d, want %d", tc.floor, tc.live, tc.base, got, tc.want)
			}
		})
	}
}

// cycles is how many collections have run.
func cycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

var sink []byte

// churn allocates n bytes of garbage in 4 KiB pieces.
func churn(n int) {
	for range n / 4096 {
		sink = make([]byte, 4096)
	}
}

// Under a floor, garbage well below it triggers no collection; without one,
// the same garbage is collected many times; stop restores GOGC.
func TestKeepDefersCollectionsBelowTheFloor(t *testing.T) {
	before := debug.SetGCPercent(-1)
	debug.SetGCPercent(before)
	const garbage = 64 << 20

	runtime.GC()
	c := cycles()
	churn(garbage)
	without := cycles() - c

	stop := Keep(1 << 30)
	runtime.GC() // the floor follows each collection: tuned from this one's live heap
	c = cycles()
	churn(garbage)
	with := cycles() - c
	stop()

	if with > 1 || without < 3 {
		t.Fatalf("%d MiB of garbage: %d collections under a 1 GiB floor, %d without one; want at most 1, at least 3", garbage>>20, with, without)
	}
	if got := debug.SetGCPercent(before); got != before {
		t.Fatalf("after stop GOGC is %d, want %d", got, before)
	}
}

// Garbage left by a burst is handed back once allocations stop: the heap's
// objects fall back to what is live without waiting for the next cycle.
func TestKeepHandsGarbageBackWhenQuiet(t *testing.T) {
	stop := keep(256<<20, 100*time.Millisecond)
	defer stop()
	runtime.GC()
	churn(128 << 20) // well above an eighth of the floor, below the floor
	sink = nil
	deadline := time.Now().Add(10 * time.Second)
	for read("/memory/classes/heap/objects:bytes") > liveHeap()+32<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("10 s after the burst the heap still holds %d MiB of objects, %d MiB live", read("/memory/classes/heap/objects:bytes")>>20, liveHeap()>>20)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestKeepLeavesTheCollectorAloneWhenOff(t *testing.T) {
	before := debug.SetGCPercent(-1)
	defer debug.SetGCPercent(before)
	stop := Keep(1 << 30) // GOGC=off: nothing to do
	defer stop()
	if got := debug.SetGCPercent(-1); got != -1 {
		t.Fatalf("GOGC=off became %d", got)
	}
}
