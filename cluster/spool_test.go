package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/store"
)

func spoolMsgs(conv charla.ConvID, from charla.Seq, n int) []charla.Message {
	out := make([]charla.Message, n)
	for i := range out {
		out[i] = charla.Message{Conv: conv, Seq: from + charla.Seq(i), ClientMsgID: uuid.NewString(),
			Body: []byte(fmt.Sprintf(`{"text":"m%d"}`, int(from)+i)), TS: time.Now().UTC()}
	}
	return out
}

// spoolOpener returns a function that opens, as one more node, the spool
// of a cluster named for the test (its stream deleted at the end).
func spoolOpener(ctx context.Context, t *testing.T, shards int) func() *Spool {
	js := connect(t)
	name := "t" + uuid.NewString()[:8]
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name+"_spool") })
	return func() *Spool {
		s, err := OpenSpool(ctx, js, name, 1, shards)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
}

// holder stands in for the leases: the shards a node serves, with their
// epochs, and those the spool gave up.
type holder struct {
	mu     sync.Mutex
	epochs map[int]uint64
	lost   []int
}

func newHolder(epochs map[int]uint64) *holder { return &holder{epochs: epochs} }

func (h *holder) Epoch(shard int) (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.epochs[shard]
	return e, ok
}

func (h *holder) Lost(shard int, epoch uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.epochs[shard]; ok && e == epoch {
		delete(h.epochs, shard)
		h.lost = append(h.lost, shard)
	}
}

func (h *holder) serve(shard int, epoch uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.epochs[shard] = epoch
}

func (h *holder) given() []int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.lost)
}

// TestSpoolTakenOverIsSealed: the node that takes a shard over adopts what
// its old owner spooled (and answers reads and resends from it), and the
// old owner's next spool write is refused, so it can never ack a message
// the new owner has not seen. The new owner's drain stores everything once,
// in order, and a shard it loses to the store's fence is dropped, not
// retried.
func TestSpoolTakenOverIsSealed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const shards = 4
	open := spoolOpener(ctx, t, shards)
	old, next := open(), open()
	conv := charla.ConvID("spooled")
	shard := ShardOf(conv, shards)
	oldLeases := newHolder(map[int]uint64{shard: 1})
	old.Attach(oldLeases)

	if err := old.Put(ctx, spoolMsgs(conv, 1, 2)); err == nil {
		t.Fatal("a write to a shard not adopted was taken")
	}
	if err := old.Adopt(ctx, shard, 1); err != nil {
		t.Fatal(err)
	}
	other := charla.ConvID("elsewhere")
	for i := 0; ShardOf(other, shards) == shard; i++ {
		other = charla.ConvID(fmt.Sprintf("elsewhere-%d", i))
	}
	if err := old.Put(ctx, append(spoolMsgs(conv, 1, 1), spoolMsgs(other, 1, 1)...)); err == nil {
		t.Fatal("one write spanning two shards was taken: its shards' records could not fail apart")
	}
	first := spoolMsgs(conv, 1, 3)
	if err := old.Put(ctx, first[:2]); err != nil {
		t.Fatal(err)
	}
	if err := old.Put(ctx, first[2:]); err != nil {
		t.Fatal(err)
	}

	// The shard changes hands: next adopts the old owner's records.
	nextLeases := newHolder(map[int]uint64{shard: 2})
	next.Attach(nextLeases)
	if err := next.Adopt(ctx, shard, 2); err != nil {
		t.Fatal(err)
	}
	if next.Len() != 3 {
		t.Fatalf("adopted %d messages, want 3", next.Len())
	}
	if h, ok, _ := next.Head(conv); !ok || h != 3 {
		t.Fatalf("head of the adopted spool = %d, %v; want 3", h, ok)
	}
	if a, ok, _ := next.Acked(conv, first[1].ClientMsgID); !ok || a.Seq != 2 {
		t.Fatalf("a resend of seq 2 is found as %+v, %v", a, ok)
	}
	// The old owner, paused past its lease, wakes up and writes: refused.
	if err := old.Put(ctx, spoolMsgs(conv, 4, 1)); !errors.Is(err, ErrSpoolFenced) {
		t.Fatalf("the old owner's write after the take-over: %v, want ErrSpoolFenced", err)
	}
	if given := oldLeases.given(); old.Len() != 0 || !slices.Equal(given, []int{shard}) {
		t.Fatalf("the old owner still counts %d spooled messages of a shard it lost, and gave up shards %v (want %d)", old.Len(), given, shard)
	}
	more := spoolMsgs(conv, 4, 2)
	if err := next.Put(ctx, more); err != nil {
		t.Fatal(err)
	}
	if got, _ := next.Range(ctx, conv, 2, 10); len(got) != 3 || got[0].Seq != 3 || got[2].Seq != 5 {
		t.Fatalf("range after 2 = %v", got)
	}

	// The database fails after the first record is stored: what is not
	// stored stays in the stream for whoever owns the shard next.
	down := errors.New("database down")
	calls := 0
	if n, err := next.Drain(ctx, 100, func(context.Context, []charla.Message) error {
		if calls++; calls > 1 {
			return down
		}
		return nil
	}); !errors.Is(err, down) || n != 2 {
		t.Fatalf("drain with the database failing after one record: %d, %v", n, err)
	}
	if again := open(); again.Adopt(ctx, shard, 3) != nil || again.Len() < 3 {
		t.Fatalf("after a partial drain the stream holds %d of the 3 messages not stored", again.Len())
	}
	if err := next.Put(ctx, spoolMsgs(conv, 6, 1)); !errors.Is(err, ErrSpoolFenced) {
		t.Fatalf("next wrote after another node adopted the shard: %v", err)
	}
	nextLeases.serve(shard, 5) // next claims the shard again
	if err := next.Adopt(ctx, shard, 5); err != nil {
		t.Fatal(err)
	}

	var stored []charla.Seq
	n, err := next.Drain(ctx, 100, func(_ context.Context, msgs []charla.Message) error {
		for _, m := range msgs {
			stored = append(stored, m.Seq)
		}
		return nil
	})
	if err != nil || n < 3 {
		t.Fatalf("drained %d (%v), want the 3 not stored at least", n, err)
	}
	// The first record may come again (kept as the reference): stored
	// already, the store answers it as duplicates.
	if stored[len(stored)-1] != 5 || !slices.IsSorted(stored) {
		t.Fatalf("drained in the order %v, want ascending to 5", stored)
	}
	if next.Len() != 0 {
		t.Fatalf("%d left after the drain", next.Len())
	}

	// A third owner adopts what is left: at most the last record (kept as
	// the sequence check's reference), already stored, which the store
	// answers as duplicates; its drain loses the shard to the fence.
	third := open()
	third.Attach(newHolder(map[int]uint64{shard: 4}))
	if err := third.Adopt(ctx, shard, 4); err != nil {
		t.Fatal(err)
	}
	if third.Len() > 2 {
		t.Fatalf("%d messages left in the stream after the drain, want the last record at most", third.Len())
	}
	if err := third.Put(ctx, spoolMsgs(conv, 6, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := third.Drain(ctx, 100, func(context.Context, []charla.Message) error {
		return &store.FencedError{Shards: []int{shard}}
	}); err != nil {
		t.Fatalf("a fenced drain: %v, want the shard dropped and no error", err)
	}
	if third.Len() != 0 {
		t.Fatalf("a shard lost to the fence still counts %d messages", third.Len())
	}
}

// A shard is adopted during its claim, before the node serves it. A drain
// meanwhile must leave its records alone (the store would fence them, and
// giving them up then, while the claim goes on to succeed, left acked
// messages in the stream with nobody to drain them); it answers that it
// must come back, and drains them once the shard is served. A fenced drain
// of a served shard gives it up with the epoch it was adopted under.
func TestSpoolDrainsOnlyServedShards(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const shards = 4
	open := spoolOpener(ctx, t, shards)
	old, next := open(), open()
	conv := charla.ConvID("claimed")
	shard := ShardOf(conv, shards)
	if err := old.Adopt(ctx, shard, 1); err != nil {
		t.Fatal(err)
	}
	if err := old.Put(ctx, spoolMsgs(conv, 1, 3)); err != nil {
		t.Fatal(err)
	}

	leases := newHolder(map[int]uint64{})
	next.Attach(leases)
	if err := next.Adopt(ctx, shard, 7); err != nil { // the claim goes on
		t.Fatal(err)
	}
	calls := 0
	sink := func(context.Context, []charla.Message) error { calls++; return nil }
	n, err := next.Drain(ctx, 100, sink)
	var fe *store.FencedError
	if !errors.As(err, &fe) || !slices.Equal(fe.Shards, []int{shard}) || n != 0 || calls != 0 {
		t.Fatalf("drain during the claim: moved %d, sink called %d times, %v; want nothing moved and shard %d fenced", n, calls, err, shard)
	}
	if next.Len() != 3 {
		t.Fatalf("%d messages kept after a drain during the claim, want 3", next.Len())
	}

	leases.serve(shard, 7) // the claim succeeded
	if n, err := next.Drain(ctx, 100, sink); err != nil || n != 3 || next.Len() != 0 {
		t.Fatalf("drain once served: moved %d (%v), %d left; want 3 moved", n, err, next.Len())
	}

	if err := next.Put(ctx, spoolMsgs(conv, 4, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := next.Drain(ctx, 100, func(context.Context, []charla.Message) error {
		return &store.FencedError{Shards: []int{shard}}
	}); err != nil {
		t.Fatalf("a fenced drain: %v, want the shard given up and no error", err)
	}
	if next.Len() != 0 || !slices.Equal(leases.given(), []int{shard}) {
		t.Fatalf("after a fenced drain: %d messages counted, shards given up %v; want 0 and [%d]", next.Len(), leases.given(), shard)
	}
}
