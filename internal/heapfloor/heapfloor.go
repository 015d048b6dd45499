// Package heapfloor keeps Go's garbage collector from running while the heap
// is below a floor, the way a memory "ballast" did before SetGCPercent could
// be tuned at run time.
//
// Go starts a collection when the heap has grown by GOGC percent (100) over
// what the last one left live. A chat engine keeps little live (tens of MB
// for thousands of connections) and allocates for every frame, so it
// collected about once a second under load. Pinned to one core, each cycle
// then ran its idle mark worker on the engine's second P, which takes half
// the core from the actors for the length of the mark phase: that was the
// tail of the latency (measured at 2,000 msg/s in 100 conversations:
// send→deliver p99 4.6 ms with Go's pacing, 2.0 ms without collections).
// With a floor, a collection starts at the larger of the floor and GOGC's
// target, so a small heap is collected a few times a minute instead, and a
// large one exactly as before. The cost is memory: up to the floor in
// garbage between two collections, which is handed back when the engine
// goes quiet (see watch), so an idle engine's memory is what it holds live.
package heapfloor

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// minLive is what the live heap counts as when it is smaller (or no
// collection has measured it yet): Go's own minimum heap target at GOGC=100.
// It bounds the percent a nearly empty heap gets, so that the first target
// is the floor and not a multiple of it.
const minLive = 4 << 20

// Keep holds the heap's collection target at floor bytes at least, from now
// until stop is called (stop restores the GOGC it found). A floor of 0, or
// collections turned off (GOGC=off), leaves the collector alone. After each
// collection the GOGC percent is set again from the live heap, so the
// target follows the heap: above the floor, GOGC's own target applies.
func Keep(floor uint64) (stop func()) {
	return keep(floor, quietCheck)
}

// quietCheck is how often watch looks for a quiet engine holding garbage.
const quietCheck = 5 * time.Second

func keep(floor uint64, check time.Duration) (stop func()) {
	base := debug.SetGCPercent(-1)
	debug.SetGCPercent(base)
	if floor == 0 || base < 0 {
		return func() {}
	}
	k := &keeper{floor: floor, base: base}
	k.tune()
	k.arm()
	done, watched := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(watched)
		k.watch(check, done)
	}()
	return func() {
		k.stopped.Store(true)
		close(done)
		<-watched
		debug.SetGCPercent(base)
	}
}

type keeper struct {
	floor   uint64
	base    int // the GOGC found at Keep
	set     int // the GOGC set last
	stopped atomic.Bool
}

// sentinel is collected by every cycle; its cleanup retunes. Not a tiny
// allocation (those are batched and may never be collected on their own).
type sentinel [64]byte

// arm retunes after the next collection, and again after each one.
func (k *keeper) arm() {
	runtime.AddCleanup(new(sentinel), func(k *keeper) {
		if !k.stopped.Load() {
			k.tune()
			k.arm()
		}
	}, k)
}

// tune sets GOGC so that the next target is the floor, or base's target
// when that is higher.
func (k *keeper) tune() {
	pct := percentFor(k.floor, liveHeap(), k.base)
	if pct != k.set {
		k.set = pct
		debug.SetGCPercent(pct)
	}
}

// percentFor is the GOGC that puts the next collection at floor bytes for a
// live heap of live bytes, never below base.
func percentFor(floor, live uint64, base int) int {
	live = max(live, minLive)
	return max(int(floor*100/live)-100, base)
}

// watch hands the garbage back when the engine goes quiet: at each check,
// when what was allocated since the last one would take more than a minute
// to fill the floor, and more than an eighth of the floor is garbage, it
// collects and returns the free memory to the OS at once (a burst of
// connections followed by idle ones must not leave their garbage resident
// until Go's two-minute forced collection and its slow scavenger).
func (k *keeper) watch(check time.Duration, done <-chan struct{}) {
	t := time.NewTicker(check)
	defer t.Stop()
	last := read("/gc/heap/allocs:bytes")
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		allocs := read("/gc/heap/allocs:bytes")
		quiet := float64(allocs-last)*float64(time.Minute)/float64(check) < float64(k.floor)
		last = allocs
		if quiet && read("/memory/classes/heap/objects:bytes") > liveHeap()+k.floor/8 {
			debug.FreeOSMemory()
			last = read("/gc/heap/allocs:bytes")
		}
	}
}

// liveHeap reads the heap the last collection left live.
func liveHeap() uint64 { return read("/gc/heap/live:bytes") }

// read reads one uint64 runtime metric (0 when this Go has no such metric).
func read(name string) uint64 {
	s := []metrics.Sample{{Name: name}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}
