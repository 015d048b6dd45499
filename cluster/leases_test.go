package cluster

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The lease TTL of most tests: short, so that the suite runs in seconds, yet
// long enough (ticks of 200 ms) for a loaded two-core machine.
const testTTL = 600 * time.Millisecond

// nats.go's Create takes a key whose last entry is a delete marker (it CASes
// on the marker's revision): the graceful hand-over relies on it, so that a
// released shard is taken at once.
func TestCreateTakesDeletedKey(t *testing.T) {
	c := newCluster(t, 1, testTTL)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := c.admin.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: c.cfg.Bucket, History: 1})
	if err != nil {
		t.Fatal(err)
	}
	r1, err := kv.Create(ctx, "shard.0", []byte(`{"node":"a"}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Create(ctx, "shard.0", []byte(`{"node":"b"}`)); !isConflict(err) {
		t.Fatalf("Create of a present key: %v, want a conflict", err)
	}
	if err := kv.Delete(ctx, "shard.0", jetstream.LastRevision(r1)); err != nil {
		t.Fatal(err)
	}
	r2, err := kv.Create(ctx, "shard.0", []byte(`{"node":"b"}`))
	if err != nil {
		t.Fatalf("Create of a deleted key: %v", err)
	}
	if r2 <= r1 {
		t.Fatalf("revision after delete and create = %d, want > %d", r2, r1)
	}
	if _, err := kv.Update(ctx, "shard.0", []byte(`{"node":"a"}`), r1); !isConflict(err) {
		t.Fatalf("Update on a stale revision: %v, want a conflict", err)
	}
	if err := kv.Delete(ctx, "shard.0", jetstream.LastRevision(r1)); !isConflict(err) {
		t.Fatalf("Delete on a stale revision: %v, want a conflict", err)
	}
}

func TestOneNodeTakesAllShards(t *testing.T) {
	c := newCluster(t, 8, testTTL)
	a := c.start("a")
	eventually(t, 10*time.Second, "a holds every shard", func() bool { return len(a.held()) == 8 })

	for s := 0; s < 8; s++ {
		if owner, ok := a.Owner(s); !ok || owner != "a" {
			t.Errorf("Owner(%d) = %q, %v; want a, true", s, owner, ok)
		}
		e, _ := a.Epoch(s)
		if !c.db.commit(s, e) {
			t.Errorf("shard %d: the store does not accept a's epoch %d", s, e)
		}
	}
	eventually(t, 5*time.Second, "a change reported for every shard", func() bool {
		for s := 0; s < 8; s++ {
			if ch, _ := a.changes.lastOf(s); ch != (Change{Shard: s, Owner: "a", Mine: true}) {
				return false
			}
		}
		return true
	})
	if got := a.Nodes(); !slices.Equal(got, []string{"a"}) {
		t.Errorf("Nodes() = %v, want [a]", got)
	}
	for _, s := range []int{-1, 8} {
		if _, ok := a.Epoch(s); ok {
			t.Errorf("Epoch(%d) ok for a shard out of range", s)
		}
		if _, ok := a.Owner(s); ok {
			t.Errorf("Owner(%d) ok for a shard out of range", s)
		}
	}
	// Renewals do not move the epoch: the store's fence is written once
	// per take.
	before := a.held()
	time.Sleep(2 * testTTL)
	if after := a.held(); !maps_equal(before, after) {
		t.Errorf("epochs moved while renewing: %v then %v", before, after)
	}
}

func maps_equal(a, b map[int]uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

func TestTwoNodesStartedTogetherShare(t *testing.T) {
	const shards = 16
	c := newCluster(t, shards, testTTL)
	ids := []string{"a", "b"}
	jss := []jetstream.JetStream{connect(t), connect(t)}
	nodes := make([]*node, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nodes[i], errs[i] = c.tryStart(jss[i], ids[i], c.config(ids[i]))
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	a, b := nodes[0], nodes[1]
	stop := exclusive(t, a, b)

	eventually(t, 15*time.Second, "each node holds ceil(16/2) = 8 shards", func() bool {
		return len(a.held()) == shards/2 && len(b.held()) == shards/2
	})
	// It stays so, and exclusive, for a while.
	time.Sleep(3 * testTTL)
	polls := stop()
	t.Logf("checked exclusivity %d times", polls)
	if polls < 20 {
		t.Errorf("only %d exclusivity checks: the poller did not run", polls)
	}
	if na, nb := len(a.held()), len(b.held()); na != shards/2 || nb != shards/2 {
		t.Errorf("held %d and %d shards, want %d each", na, nb, shards/2)
	}
	eventually(t, 5*time.Second, "both nodes agree on every owner", func() bool {
		for s := 0; s < shards; s++ {
			oa, okA := a.Owner(s)
			ob, okB := b.Owner(s)
			if !okA || !okB || oa != ob {
				return false
			}
		}
		return true
	})
	if got := a.Nodes(); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("a.Nodes() = %v, want [a b]", got)
	}
	c.db.checkMonotonic(t)
}

// A node that joins a node holding everything gets its share: the holder
// hands shards over one by one, reporting each as no longer its own before
// the other can take it.
func TestJoinRebalances(t *testing.T) {
	c := newCluster(t, 8, testTTL)
	a := c.start("a")
	eventually(t, 10*time.Second, "a holds every shard", func() bool { return len(a.held()) == 8 })
	before := a.held()

	b := c.start("b")
	stop := exclusive(t, a, b)
	defer stop()
	eventually(t, 15*time.Second, "4 shards each", func() bool { return len(a.held()) == 4 && len(b.held()) == 4 })
	stop()

	for s, e := range b.held() {
		if e <= before[s] {
			t.Errorf("shard %d: b's epoch %d is not above a's %d", s, e, before[s])
		}
		if ch, _ := a.changes.lastOf(s); ch.Mine {
			t.Errorf("shard %d: a's last change %+v still says mine", s, ch)
		}
		if !c.db.commit(s, e) {
			t.Errorf("shard %d: the store refuses b's epoch", s)
		}
		if c.db.commit(s, before[s]) {
			t.Errorf("shard %d: the store still accepts a's old epoch", s)
		}
	}
	c.db.checkMonotonic(t)
}

func TestCrashedNodeLosesShardsAfterTTL(t *testing.T) {
	const shards = 8
	c := newCluster(t, shards, testTTL)
	a, b := c.start("a"), c.start("b")
	eventually(t, 15*time.Second, "4 shards each", func() bool { return len(a.held()) == 4 && len(b.held()) == 4 })
	stop := exclusive(t, a, b)
	defer stop()

	aHeld := a.held()
	crashed := time.Now()
	a.crash()

	// Nobody told a, yet it stops claiming its shards within 2*TTL/3 of
	// its last renewal, which came before the crash.
	time.Sleep(time.Until(crashed.Add(c.cfg.withDefaults().fence())))
	if h := a.held(); len(h) != 0 {
		t.Fatalf("2*TTL/3 after its crash, a still claims shards %v", sortedShards(h))
	}

	eventually(t, 10*time.Second, "b takes every shard", func() bool { return len(b.held()) == shards })
	took := time.Since(crashed)
	t.Logf("b took a's shards %s after a's crash (TTL %s)", took, testTTL)
	if took < testTTL/3 {
		t.Errorf("b took a's shards %s after the crash: before they could expire", took)
	}
	stop()

	bHeld := b.held()
	ctx := context.Background()
	for s, old := range aHeld {
		if bHeld[s] <= old {
			t.Errorf("shard %d: b's epoch %d is not above dead a's %d", s, bHeld[s], old)
		}
		if c.db.commit(s, old) {
			t.Errorf("shard %d: the store still accepts a's epoch %d", s, old)
		}
		if ok, err := c.db.ClaimShard(ctx, s, old); ok || err != nil {
			t.Errorf("shard %d: a's old epoch %d claimed again: %v, %v", s, old, ok, err)
		}
	}
	c.db.checkMonotonic(t)
	eventually(t, 5*time.Second, "b sees a gone", func() bool { return slices.Equal(b.Nodes(), []string{"b"}) })
}

func TestCloseHandsOverWellUnderTTL(t *testing.T) {
	const shards = 8
	ttl := 1500 * time.Millisecond
	c := newCluster(t, shards, ttl)
	a, b := c.start("a"), c.start("b")
	eventually(t, 20*time.Second, "4 shards each", func() bool { return len(a.held()) == 4 && len(b.held()) == 4 })
	stop := exclusive(t, a, b)
	defer stop()

	aHeld := a.held()
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if h := a.held(); len(h) != 0 {
		t.Errorf("after Close, a still claims %v", sortedShards(h))
	}
	for s := range aHeld {
		if ch, _ := a.changes.lastOf(s); ch != (Change{Shard: s}) {
			t.Errorf("shard %d: a's last change is %+v, want none/not mine", s, ch)
		}
	}
	eventually(t, 10*time.Second, "b takes every shard", func() bool { return len(b.held()) == shards })
	took := time.Since(start)
	t.Logf("hand-over took %s (TTL %s)", took, ttl)
	if took >= ttl {
		t.Errorf("hand-over took %s, not well under the TTL %s", took, ttl)
	}
	stop()

	if err := a.Close(ctx); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if got := a.Nodes(); len(got) != 0 {
		t.Errorf("a.Nodes() after Close = %v", got)
	}
	if _, ok := a.Owner(0); ok {
		t.Error("a.Owner answers after Close")
	}
	eventually(t, 5*time.Second, "b sees a gone", func() bool { return slices.Equal(b.Nodes(), []string{"b"}) })
	for s, old := range aHeld {
		if e, _ := b.Epoch(s); e <= old {
			t.Errorf("shard %d: b's epoch %d is not above a's %d", s, e, old)
		}
	}
	c.db.checkMonotonic(t)
}

func TestLostDropsAtOnce(t *testing.T) {
	c := newCluster(t, 4, testTTL)
	a := c.start("a")
	eventually(t, 10*time.Second, "a holds every shard", func() bool { return len(a.held()) == 4 })
	e, _ := a.Epoch(2)

	// Epochs a does not hold change nothing.
	for _, tt := range []struct {
		shard int
		epoch uint64
	}{{2, e + 1}, {2, e - 1}, {2, 0}, {-1, e}, {4, e}} {
		a.Lost(tt.shard, tt.epoch)
	}
	time.Sleep(50 * time.Millisecond)
	if got, ok := a.Epoch(2); !ok || got != e {
		t.Fatalf("after Lost of other epochs, Epoch(2) = %d, %v; want %d, true", got, ok, e)
	}

	a.Lost(2, e)
	if _, ok := a.Epoch(2); ok {
		t.Fatal("Epoch(2) still ok right after Lost(2, epoch)")
	}
	if owner, ok := a.Owner(2); ok {
		t.Errorf("Owner(2) = %q right after Lost", owner)
	}
	eventually(t, 5*time.Second, "a change for shard 2", func() bool {
		ch, _ := a.changes.lastOf(2)
		return ch == Change{Shard: 2}
	})
	if got := len(a.held()); got != 3 {
		t.Errorf("a holds %d shards after losing one, want 3", got)
	}

	// Nobody renews the lost lease; after a TTL it is free for a taker,
	// here a itself again, with a newer epoch.
	eventually(t, 10*time.Second, "shard 2 taken again with a newer epoch", func() bool {
		got, ok := a.Epoch(2)
		return ok && got > e
	})
	changes := a.changes.of(2)
	want := []Change{{Shard: 2, Owner: "a", Mine: true}, {Shard: 2}, {Shard: 2, Owner: "a", Mine: true}}
	if !slices.Equal(changes, want) {
		t.Errorf("changes of shard 2 = %+v, want %+v", changes, want)
	}
	c.db.checkMonotonic(t)
}

func TestShardCountIsFixed(t *testing.T) {
	c := newCluster(t, 8, testTTL)
	c.start("a")

	cfg := c.config("b")
	cfg.Shards = 16
	_, err := c.tryStart(connect(t), "b", cfg)
	if err == nil {
		t.Fatal("a node with 16 shards joined a cluster of 8")
	}
	for _, want := range []string{"8 shards", "configured with 16"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	// The same count is accepted.
	c.start("c")
}

// A node cut from NATS (its connection closed: every renewal fails) fences
// itself 2*TTL/3 after its last renewal and reports the loss of every shard
// through its manager; the other node takes them after a TTL.
func TestCutFromNATSSelfFences(t *testing.T) {
	const shards = 8
	c := newCluster(t, shards, testTTL)
	a, b := c.start("a"), c.start("b")
	eventually(t, 15*time.Second, "4 shards each", func() bool { return len(a.held()) == 4 && len(b.held()) == 4 })
	stop := exclusive(t, a, b)
	defer stop()

	aHeld := a.held()
	a.closeFails.Store(true)
	cut := time.Now()
	a.js.Conn().Close()

	time.Sleep(time.Until(cut.Add(c.cfg.withDefaults().fence())))
	if h := a.held(); len(h) != 0 {
		t.Fatalf("2*TTL/3 after it was cut from NATS, a still claims shards %v", sortedShards(h))
	}
	eventually(t, 5*time.Second, "a reports the loss of every shard it held", func() bool {
		for s := range aHeld {
			if ch, _ := a.changes.lastOf(s); ch.Mine {
				return false
			}
		}
		return true
	})
	eventually(t, 10*time.Second, "b takes every shard", func() bool { return len(b.held()) == shards })
	stop()
	for s, old := range aHeld {
		if e, _ := b.Epoch(s); e <= old {
			t.Errorf("shard %d: b's epoch %d is not above a's %d", s, e, old)
		}
	}
	c.db.checkMonotonic(t)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Close(ctx); err == nil {
		t.Error("Close without NATS reported no error")
	}
}

// A shard whose claim the store refuses (it has a newer epoch, as after a
// recreated bucket) is never served, and the other shards are.
func TestRefusedClaimIsNotServed(t *testing.T) {
	c := newCluster(t, 4, testTTL)
	c.db.epochs[1] = 1 << 40
	a := c.start("a")
	eventually(t, 10*time.Second, "a holds the other shards", func() bool { return len(a.held()) == 3 })
	deadline := time.Now().Add(2 * testTTL) // retries included
	for time.Now().Before(deadline) {
		if e, ok := a.Epoch(1); ok {
			t.Fatalf("shard 1 served with epoch %d, refused by the store", e)
		}
		time.Sleep(2 * time.Millisecond)
	}
	for _, ch := range a.changes.of(1) {
		if ch.Mine {
			t.Errorf("shard 1 reported as mine: %+v", ch)
		}
	}
	c.db.mu.Lock()
	refused := c.db.refused
	c.db.mu.Unlock()
	if refused == 0 {
		t.Error("the store was never asked for shard 1")
	}
}

// lateClaimer grants claims like the store, but its first claim of shard
// slow ends past the lease's fence; it records what it is told to undo.
type lateClaimer struct {
	*fenceDB
	slow  int
	delay time.Duration
	mu    sync.Mutex
	slept bool
	undo  []int
}

func (l *lateClaimer) ClaimShard(ctx context.Context, shard int, epoch uint64) (bool, error) {
	ok, err := l.fenceDB.ClaimShard(ctx, shard, epoch)
	l.mu.Lock()
	sleep := shard == l.slow && !l.slept
	l.slept = l.slept || sleep
	l.mu.Unlock()
	if sleep {
		time.Sleep(l.delay)
	}
	return ok, err
}

func (l *lateClaimer) Unclaim(shard int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.undo = append(l.undo, shard)
}

func (l *lateClaimer) undone() []int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.undo)
}

// A claim the store granted but that ended past the lease's fence is not
// served, and the claimer is told, so that it undoes what it did for the
// shard (the engine forgets the spool it adopted, whose records would
// otherwise wait forever for a drain this node may not run). The shard is
// claimed again later, and served.
func TestLateClaimIsUnclaimed(t *testing.T) {
	c := newCluster(t, 4, testTTL)
	late := &lateClaimer{fenceDB: c.db, slow: 2, delay: c.cfg.withDefaults().fence() + 20*time.Millisecond}
	c.claim = late
	a := c.start("a")
	eventually(t, 10*time.Second, "a is told to undo its late claim of shard 2", func() bool {
		return slices.Contains(late.undone(), 2)
	})
	eventually(t, 10*time.Second, "a holds every shard", func() bool { return len(a.held()) == 4 })
	if undo := late.undone(); !slices.Equal(undo, []int{2}) {
		t.Errorf("told to undo the claims of shards %v, want [2] (only the late one)", undo)
	}
}
