package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/store/bolt"
)

// TestUnloadedConversationsFreeTheirMemory is issue 8, item 3: once idle
// conversations are unloaded, the memory they held must come back. It loads
// 100,000 conversations with one message each (straight to the
// conversations actor, as conn actors would; a probe actor stands in for the
// conns), lets them go idle, and checks that the live heap after a forced GC
// is back within 10 % of the baseline taken after a small warm-up batch.
//
// protoactor's process registry is 1,024 x 32 small maps, each of which
// keeps its first bucket once an actor has been registered in it (~9 MB
// when all have): a fixed cost of any process that has run a few hundred
// thousand actors, not memory held per conversation. Likewise the Go
// runtime never frees a goroutine descriptor (~0.5 KB): a burst like this
// one peaks at a few thousand short-lived goroutines (store loads, timer
// callbacks, dispatcher overflow), and that many descriptors stay. The
// warm-up puts both in the baseline: it registers and removes one name in
// every registry shard, and runs 20,000 goroutines at once (more than
// this test peaks at).
func TestUnloadedConversationsFreeTheirMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 100,000 conversations")
	}
	// bbolt, not the default pebble: this test measures the actors' memory,
	// and pebble's own (table readers, filters) follows its compactions,
	// which lag on a loaded machine. The pebble store bounds its share
	// separately (its head cache).
	st, err := bolt.Open(filepath.Join(t.TempDir(), "charla.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cfg := DefaultConfig()
	cfg.IdleTimeout = 2 * time.Second
	cfg.SweepInterval = 5 * time.Second
	sys, err := NewSystem(cfg, Dependencies{Store: st, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	}()

	// The probe stands in for the conn actors: it counts the acks.
	var acked, failed atomic.Int64
	root := sys.as.Root
	probe := root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
		if r, ok := ctx.Message().(sendReply); ok {
			if r.err != nil {
				if failed.Add(1) <= 5 {
					t.Logf("send %s failed: %v", r.ref, r.err)
				}
			}
			acked.Add(1)
		}
	}))
	defer root.Stop(probe)

	stats := sys.Stats()
	sender := charla.Sender{ID: "agent", Role: charla.RoleAgent}
	body := json.RawMessage(`{"text":"hello"}`)
	next := 0
	// batch creates n conversations with one message each and waits for
	// every ack; window bounds the sends in flight.
	peak := int64(0)
	batch := func(n int) {
		t.Helper()
		const window = 2000
		want := acked.Load() + int64(n)
		for i := range n {
			for int64(i)-(acked.Load()-(want-int64(n))) >= window {
				time.Sleep(time.Millisecond)
			}
			peak = max(peak, stats.ConversationsActive.Load())
			id := fmt.Sprintf("%08d", next)
			next++
			root.Send(sys.deps.conversations, sendReq{conn: probe, ref: id, msg: charla.Message{
				Conv: charla.ConvID("c" + id), ClientMsgID: id, Sender: sender, Body: body,
			}})
		}
		waitFor(t, 2*time.Minute, func() bool { return acked.Load() >= want }, "acks")
	}
	unloaded := func() {
		t.Helper()
		waitFor(t, 2*time.Minute, func() bool { return stats.ConversationsActive.Load() == 0 }, "conversations unloaded")
	}

	batch(2000)
	unloaded()
	touchRegistry(sys.as)
	runGoroutines(20_000)
	base := liveHeap()

	start := time.Now()
	peak = 0
	batch(100_000)
	loaded := liveHeap()
	t.Logf("100,000 conversations loaded in %v, at most %d at once; %d sends failed (resent by real clients)",
		time.Since(start).Round(time.Millisecond), peak, failed.Load())
	unloaded()
	after := liveHeap()
	t.Logf("live heap: baseline %.1f MB, loaded %.1f MB, unloaded %.1f MB (%+.1f %%)",
		mb(base), mb(loaded), mb(after), 100*(float64(after)/float64(base)-1))
	if after > base+base/10 {
		t.Errorf("live heap after unloading is %.1f MB, more than 10 %% over the %.1f MB baseline", mb(after), mb(base))
	}
}

// touchRegistry registers and removes a name in every shard of the actor
// system's process registry, so that each shard's map has its bucket.
func touchRegistry(as *actor.ActorSystem) {
	reg := as.ProcessRegistry.LocalPIDs
	touched := map[any]bool{}
	for i := 0; len(touched) < len(reg.LocalPIDs)*32; i++ { // concurrent-map's 32 shards
		key := fmt.Sprintf("warm-up$%d", i)
		bucket := reg.GetBucket(key)
		touched[bucket.GetShard(key)] = true
		bucket.Set(key, nil)
		bucket.Remove(key)
	}
}

// runGoroutines has n goroutines alive at once, then lets them end.
func runGoroutines(n int) {
	var wg sync.WaitGroup
	release := make(chan struct{})
	wg.Add(n)
	for range n {
		go func() {
			defer wg.Done()
			<-release
		}()
	}
	close(release)
	wg.Wait()
}

// liveHeap is the heap still reachable after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func mb(b uint64) float64 { return float64(b) / (1 << 20) }

func waitFor(t *testing.T, d time.Duration, ok func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
