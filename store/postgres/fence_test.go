package postgres

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"charla"
	"charla/store"
	"charla/store/storetest"
)

// testFence is a node's view of its shards, changed by the test as leases
// would be.
type testFence struct {
	mu     sync.Mutex
	shards int
	epochs map[int]uint64
}

func newTestFence(shards int, held map[int]uint64) *testFence {
	return &testFence{shards: shards, epochs: held}
}

func (f *testFence) Shards() int { return f.shards }

func (f *testFence) Epoch(shard int) (uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.epochs[shard]
	return e, ok
}

// testShardOf puts a conversation named "s<N>-..." in shard N, so that the
// tests say which shard they write, and hashes any other name.
func testShardOf(conv charla.ConvID, shards int) int {
	if rest, ok := strings.CutPrefix(string(conv), "s"); ok {
		if num, _, ok := strings.Cut(rest, "-"); ok {
			if n, err := strconv.Atoi(num); err == nil {
				return n % shards
			}
		}
	}
	h := fnv.New32a()
	h.Write([]byte(conv))
	return int(h.Sum32() % uint32(shards))
}

// openFenced opens a store on url fenced by f; app names its connections in
// pg_stat_activity.
func openFenced(t *testing.T, url string, f Fence, app string) *Store {
	t.Helper()
	o := testOptions(url)
	o.ApplicationName = app
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	s, err := Open(ctx, o, testLogger(t), WithFence(f, testShardOf))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func mustClaim(t *testing.T, s *Store, shard int, epoch uint64) {
	t.Helper()
	ok, err := s.ClaimShard(t.Context(), shard, epoch)
	if err != nil || !ok {
		t.Fatalf("ClaimShard(%d, %d) = %v, %v; want ok", shard, epoch, ok, err)
	}
}

// wantFenced checks that err is a fenced refusal, of nothing else, for
// exactly fences, made in one attempt.
func wantFenced(t *testing.T, err error, fences ...store.ShardFence) {
	t.Helper()
	if !errors.Is(err, store.ErrFenced) {
		t.Fatalf("err = %v, want store.ErrFenced", err)
	}
	if errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrInvalid) || IsRetryable(err) {
		t.Errorf("fenced error %v also reads as unavailable, invalid or retryable", err)
	}
	var pe *Error
	if !errors.As(err, &pe) || pe.Kind != KindFenced || pe.Attempts > 1 {
		t.Errorf("err = %#v, want an *Error of KindFenced after one attempt", err)
	}
	var fe *store.FencedError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %v, not a *store.FencedError", err)
	}
	var shards []int
	for _, f := range fences {
		shards = append(shards, f.Shard)
	}
	if !slices.Equal(fe.Shards, shards) || !slices.Equal(fe.Fences, fences) {
		t.Errorf("fenced %v %+v, want %v %+v", fe.Shards, fe.Fences, shards, fences)
	}
	for _, f := range fences {
		if !strings.Contains(err.Error(), f.String()) {
			t.Errorf("error %q does not say %q", err, f.String())
		}
	}
}

// writer is one of the two writes of messages a fence guards.
type writer struct {
	name  string
	write func(t *testing.T, s *Store, msgs ...charla.Message) ([]store.AppendResult, error)
}

var fencedWriters = []writer{
	{"Append", func(t *testing.T, s *Store, msgs ...charla.Message) ([]store.AppendResult, error) {
		return s.Append(t.Context(), msgs)
	}},
	// AppendSequenced gets the seqs the engine would have given, unless
	// the test set them: the next ones after the stored head (read through
	// the fenced store: reads are not fenced).
	{"AppendSequenced", func(t *testing.T, s *Store, msgs ...charla.Message) ([]store.AppendResult, error) {
		next := map[charla.ConvID]charla.Seq{}
		for i, m := range msgs {
			if m.Seq != 0 {
				continue
			}
			if _, ok := next[m.Conv]; !ok {
				h, err := s.Head(t.Context(), m.Conv)
				if err != nil {
					t.Fatalf("Head: %v", err)
				}
				next[m.Conv] = h
			}
			next[m.Conv]++
			msgs[i].Seq = next[m.Conv]
			msgs[i].TS = time.Now()
		}
		return s.AppendSequenced(t.Context(), msgs)
	}},
}

// TestFenceTakeover is the take-over of docs/CLUSTER.md §3: node A holds
// shards 1 and 2 at epoch 5 and shard 3 without a claim; node B (a second
// store on the same database, with its own fence) claims shard 1 at epoch 7.
// From then on A's writes touching shard 1 are refused whole, B's continue
// A's seqs, and A's writes elsewhere go on.
func TestFenceTakeover(t *testing.T) {
	needDB(t)
	for _, mode := range []string{"", "simple_protocol"} {
		for _, w := range fencedWriters {
			name := w.name
			var params []string
			if mode != "" {
				name += "/" + mode
				params = []string{"default_query_exec_mode", mode}
			}
			t.Run(name, func(t *testing.T) {
				url := schemaURL(t, params...)
				fa := newTestFence(8, map[int]uint64{1: 5, 2: 5, 3: 5})
				fb := newTestFence(8, map[int]uint64{1: 7})
				a := openFenced(t, url, fa, "fence-a")
				b := openFenced(t, url, fb, "fence-b")
				mustClaim(t, a, 1, 5)
				mustClaim(t, a, 2, 5)
				ctx := t.Context()

				head := func(conv charla.ConvID) charla.Seq {
					t.Helper()
					h, err := a.Head(ctx, conv)
					if err != nil {
						t.Fatalf("Head(%s): %v", conv, err)
					}
					return h
				}
				mustWrite := func(s *Store, wantSeqs []charla.Seq, msgs ...charla.Message) {
					t.Helper()
					res, err := w.write(t, s, msgs...)
					if err != nil {
						t.Fatalf("%s: %v", w.name, err)
					}
					for i, r := range res {
						if r.Duplicate || r.Seq != wantSeqs[i] {
							t.Errorf("result %d = %+v, want new at seq %d", i, r, wantSeqs[i])
						}
					}
				}

				// A owns shards 1 and 2: its writes pass.
				mustWrite(a, []charla.Seq{1, 2, 1}, tmsg("s1-a", "a1", "x"), tmsg("s1-a", "a2", "x"), tmsg("s2-b", "b1", "x"))

				// B takes shard 1 over.
				mustClaim(t, b, 1, 7)

				steps := []struct {
					name   string
					node   *Store
					msgs   []charla.Message
					fenced []store.ShardFence // nil: the write passes
					seqs   []charla.Seq
				}{
					{name: "OldOwnerFenced", node: a, msgs: []charla.Message{tmsg("s1-a", "a3", "x")},
						fenced: []store.ShardFence{{Shard: 1, Holds: true, Held: 5, Claimed: true, Stored: 7}}},
					{name: "NewOwnerContinuesSeqs", node: b, msgs: []charla.Message{tmsg("s1-a", "a3", "x")},
						seqs: []charla.Seq{3}},
					{name: "OldOwnerKeepsOtherShard", node: a, msgs: []charla.Message{tmsg("s2-b", "b2", "x")},
						seqs: []charla.Seq{2}},
					{name: "MixedBatchFailsWhole", node: a,
						msgs:   []charla.Message{tmsg("s2-b", "b3", "x"), tmsg("s1-a", "a4", "x"), tmsg("s2-c", "c1", "x")},
						fenced: []store.ShardFence{{Shard: 1, Holds: true, Held: 5, Claimed: true, Stored: 7}}},
					{name: "NeverClaimed", node: a,
						msgs:   []charla.Message{tmsg("s2-b", "b3", "x"), tmsg("s3-d", "d1", "x")},
						fenced: []store.ShardFence{{Shard: 3, Holds: true, Held: 5}}},
					{name: "NotHeld", node: a, msgs: []charla.Message{tmsg("s2-b", "b3", "x"), tmsg("s4-e", "e1", "x"), tmsg("s1-a", "a4", "x")},
						fenced: []store.ShardFence{{Shard: 4}}}, // held shards are not even asked about
					{name: "StillWorksAfterRefusals", node: a, msgs: []charla.Message{tmsg("s2-b", "b3", "x")},
						seqs: []charla.Seq{3}},
				}
				for _, st := range steps {
					convs := map[charla.ConvID]charla.Seq{}
					for _, m := range st.msgs {
						convs[m.Conv] = head(m.Conv)
					}
					res, err := w.write(t, st.node, st.msgs...)
					if st.fenced == nil {
						if err != nil {
							t.Fatalf("%s: %v", st.name, err)
						}
						for i, r := range res {
							if r.Duplicate || r.Seq != st.seqs[i] {
								t.Errorf("%s: result %d = %+v, want new at seq %d", st.name, i, r, st.seqs[i])
							}
						}
						continue
					}
					t.Logf("%s: %v", st.name, err)
					wantFenced(t, err, st.fenced...)
					for conv, before := range convs {
						if h := head(conv); h != before {
							t.Errorf("%s: head of %s moved from %d to %d: a refused write wrote", st.name, conv, before, h)
						}
					}
				}

				// No gap, no reuse: shard 1's conversation holds a1, a2
				// (A) and a3 (B) at 1, 2, 3.
				got, err := b.Range(ctx, "s1-a", 0, 10)
				if err != nil {
					t.Fatal(err)
				}
				var ids []string
				for i, m := range got {
					if m.Seq != charla.Seq(i+1) {
						t.Errorf("message %d at seq %d", i, m.Seq)
					}
					ids = append(ids, m.ClientMsgID)
				}
				if !slices.Equal(ids, []string{"a1", "a2", "a3"}) {
					t.Errorf("s1-a holds %v, want [a1 a2 a3]", ids)
				}
				if h := head("s2-c"); h != 0 {
					t.Errorf("s2-c has head %d: the mixed batch wrote part of itself", h)
				}
			})
		}
	}
}

// TestConformanceFenced runs the shared suite on a store fenced as a node
// that holds every shard: a fence that passes changes nothing of what the
// store does.
func TestConformanceFenced(t *testing.T) {
	needDB(t)
	const shards = 16
	held := map[int]uint64{}
	for i := range shards {
		held[i] = 3
	}
	f := newTestFence(shards, held)
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			s, err := Open(t.Context(), testOptions(schemaURL(t)), testLogger(t), WithFence(f, testShardOf))
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			for i := range shards {
				mustClaim(t, s, i, 3)
			}
			return s
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			s, err := Open(t.Context(), old.(*Store).opts, testLogger(t), WithFence(f, testShardOf))
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			return s
		},
	})
}

// TestFenceNotHeldNeedsNoDatabase: a write to a shard the node does not hold
// is refused before the database is asked. The store here points at a port
// where nothing listens; any query would fail as unavailable.
func TestFenceNotHeldNeedsNoDatabase(t *testing.T) {
	o := testOptions("postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	o.Lazy = true
	o.RetryAttempts = 0
	f := newTestFence(8, map[int]uint64{2: 5})
	s, err := Open(t.Context(), o, testLogger(t), WithFence(f, testShardOf))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer s.Close()
	for _, w := range fencedWriters {
		t.Run(w.name, func(t *testing.T) {
			msgs := []charla.Message{tmsg("s2-a", "a", "x"), tmsg("s5-b", "b", "x"), tmsg("s3-c", "c", "x")}
			for i := range msgs {
				msgs[i].Seq = 1 // AppendSequenced's writer would ask the database for heads
			}
			_, err := w.write(t, s, msgs...)
			wantFenced(t, err, store.ShardFence{Shard: 3}, store.ShardFence{Shard: 5})
		})
	}
	// The same store on a shard it holds does ask the database.
	if _, err := s.Append(t.Context(), []charla.Message{tmsg("s2-a", "a", "x")}); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Append on a held shard = %v, want unavailable (no database)", err)
	}
}

func TestClaimShard(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	claims := []struct {
		shard  int
		epoch  uint64
		ok     bool
		stored uint64
	}{
		{shard: 3, epoch: 5, ok: true, stored: 5},  // first claim creates the row
		{shard: 3, epoch: 5, ok: true, stored: 5},  // the same claim again (a retry) is still ok
		{shard: 3, epoch: 4, ok: false, stored: 5}, // a stale owner loses
		{shard: 3, epoch: 7, ok: true, stored: 7},  // a newer owner takes over
		{shard: 3, epoch: 5, ok: false, stored: 7}, // the old owner cannot take it back
		{shard: 4, epoch: 0, ok: true, stored: 0},  // shards are independent
	}
	for i, c := range claims {
		ok, err := s.ClaimShard(ctx, c.shard, c.epoch)
		if err != nil || ok != c.ok {
			t.Fatalf("claim %d: ClaimShard(%d, %d) = %v, %v; want %v", i, c.shard, c.epoch, ok, err, c.ok)
		}
		var stored int64
		if err := s.pool.QueryRow(ctx, `SELECT epoch FROM shard_epochs WHERE shard = $1`, c.shard).Scan(&stored); err != nil {
			t.Fatal(err)
		}
		if uint64(stored) != c.stored {
			t.Errorf("claim %d: stored epoch %d, want %d", i, stored, c.stored)
		}
	}
	for _, bad := range []struct {
		shard int
		epoch uint64
	}{{-1, 1}, {1, 1 << 63}} {
		if _, err := s.ClaimShard(ctx, bad.shard, bad.epoch); !errors.Is(err, store.ErrInvalid) {
			t.Errorf("ClaimShard(%d, %d) = %v, want ErrInvalid", bad.shard, bad.epoch, err)
		}
	}
}

// TestFenceClaimWaitsForCommitInFlight: a new owner's claim waits for the
// old owner's write in flight (which holds its shard row FOR SHARE), that
// write commits, and the old owner's next write is refused. A's write is
// held in flight by a lock the test takes on its conversation's row, which
// the write needs after the fence check.
func TestFenceClaimWaitsForCommitInFlight(t *testing.T) {
	url := schemaURL(t)
	appA, appB := "fence-a-"+randHex(4), "fence-b-"+randHex(4)
	a := openFenced(t, url, newTestFence(8, map[int]uint64{1: 5}), appA)
	b := openFenced(t, url, newTestFence(8, map[int]uint64{1: 7}), appB)
	mustClaim(t, a, 1, 5)
	mustAppend(t, a, tmsg("s1-a", "a1", "x"))

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p := poolFor(t, url)
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT 1 FROM conversations WHERE id = 's1-a' FOR UPDATE`); err != nil {
		t.Fatal(err)
	}

	type appended struct {
		res []store.AppendResult
		err error
	}
	aDone := make(chan appended, 1)
	go func() {
		res, err := a.Append(ctx, []charla.Message{tmsg("s1-a", "a2", "x")})
		aDone <- appended{res, err}
	}()
	aPID := waitLocked(t, ctx, p, appA, 0)

	type claimed struct {
		ok  bool
		err error
	}
	bDone := make(chan claimed, 1)
	go func() {
		ok, err := b.ClaimShard(ctx, 1, 7)
		bDone <- claimed{ok, err}
	}()
	// B's claim waits, and on A's write (its share lock), not on the test.
	waitLocked(t, ctx, p, appB, aPID)
	select {
	case c := <-bDone:
		t.Fatalf("ClaimShard returned %v, %v while A's write was in flight", c.ok, c.err)
	default:
	}

	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// A's write was checked before the claim: it commits.
	r := <-aDone
	if r.err != nil || r.res[0].Seq != 2 {
		t.Fatalf("in-flight Append = %+v, %v; want seq 2", r.res, r.err)
	}
	if c := <-bDone; c.err != nil || !c.ok {
		t.Fatalf("ClaimShard after the write = %v, %v; want ok", c.ok, c.err)
	}
	// Every later write of A is refused; B continues the seqs.
	_, err = a.Append(ctx, []charla.Message{tmsg("s1-a", "a3", "x")})
	wantFenced(t, err, store.ShardFence{Shard: 1, Holds: true, Held: 5, Claimed: true, Stored: 7})
	if res := mustAppend(t, b, tmsg("s1-a", "a3", "x")); res[0].Seq != 3 {
		t.Errorf("B's Append got seq %d, want 3", res[0].Seq)
	}
}

// TestFenceWriteWaitsForClaimInFlight is the other order: a claim in
// flight (the test's transaction raising the epoch, uncommitted) when the
// old owner's write starts. The write's share lock waits for the claim;
// when the claim commits, the write sees the new epoch although its
// statement began before (a locking read returns the latest committed
// version), and writes nothing.
func TestFenceWriteWaitsForClaimInFlight(t *testing.T) {
	url := schemaURL(t)
	appA := "fence-a-" + randHex(4)
	a := openFenced(t, url, newTestFence(8, map[int]uint64{1: 5}), appA)
	mustClaim(t, a, 1, 5)
	mustAppend(t, a, tmsg("s1-a", "a1", "x"))

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	p := poolFor(t, url)
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	var claimPID int32
	if err := tx.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&claimPID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, claimShardSQL, 1, 7); err != nil {
		t.Fatal(err)
	}

	aDone := make(chan error, 1)
	go func() {
		_, err := a.Append(ctx, []charla.Message{tmsg("s1-a", "a2", "x")})
		aDone <- err
	}()
	waitLocked(t, ctx, p, appA, claimPID)
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	wantFenced(t, <-aDone, store.ShardFence{Shard: 1, Holds: true, Held: 5, Claimed: true, Stored: 7})
	if h, err := a.Head(ctx, "s1-a"); err != nil || h != 1 {
		t.Errorf("Head = %d, %v; want 1: the write raced past the claim", h, err)
	}
}

// waitLocked waits until a backend of application app waits for a lock
// (held by blocker's backend, unless 0) and returns its pid.
func waitLocked(t *testing.T, ctx context.Context, p *pgxpool.Pool, app string, blocker int32) int32 {
	t.Helper()
	for {
		var pid int32
		var blockers []int32
		err := p.QueryRow(ctx, `
SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity
WHERE application_name = $1 AND wait_event_type = 'Lock'`, app).Scan(&pid, &blockers)
		if err == nil && (blocker == 0 || slices.Contains(blockers, blocker)) {
			return pid
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no backend of %s waits for a lock (held by %d): %v", app, blocker, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

func TestWithFenceNeedsShardOf(t *testing.T) {
	o := testOptions("postgres://postgres@127.0.0.1:1/none?sslmode=disable")
	o.Lazy = true
	_, err := Open(t.Context(), o, testLogger(t), WithFence(newTestFence(1, nil), nil))
	if err == nil || !strings.Contains(err.Error(), "shardOf") {
		t.Errorf("Open with a fence and no shardOf = %v, want an error", err)
	}
	// A nil fence is the single-node store.
	s, err := Open(t.Context(), o, testLogger(t), WithFence(nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.fence != nil {
		t.Error("WithFence(nil, nil) fenced the store")
	}
}
