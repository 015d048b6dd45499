package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// TestSpoolTakenOverIsSealed: the node that takes a shard over adopts what
// its old owner spooled (and answers reads and resends from it), and the
// old owner's next spool write is refused, so it can never ack a message
// the new owner has not seen. The new owner's drain stores everything once,
// in order, and a shard it loses to the store's fence is dropped, not
// retried.
func TestSpoolTakenOverIsSealed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := connect(t)
	name := "t" + uuid.NewString()[:8]
	t.Cleanup(func() { _ = js.DeleteStream(context.Background(), name+"_spool") })
	const shards = 4
	open := func() *Spool {
		s, err := OpenSpool(ctx, js, name, 1, shards)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	old, next := open(), open()
	conv := charla.ConvID("spooled")
	shard := ShardOf(conv, shards)
	given := -1
	old.OnLost(func(s int) { given = s })

	if err := old.Put(ctx, spoolMsgs(conv, 1, 2)); err == nil {
		t.Fatal("a write to a shard not adopted was taken")
	}
	if err := old.Adopt(ctx, shard); err != nil {
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
	if err := next.Adopt(ctx, shard); err != nil {
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
	if old.Len() != 0 || given != shard {
		t.Fatalf("the old owner still counts %d spooled messages of a shard it lost, and gave up shard %d (want %d)", old.Len(), given, shard)
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
	if again := open(); again.Adopt(ctx, shard) != nil || again.Len() < 3 {
		t.Fatalf("after a partial drain the stream holds %d of the 3 messages not stored", again.Len())
	}
	if err := next.Put(ctx, spoolMsgs(conv, 6, 1)); !errors.Is(err, ErrSpoolFenced) {
		t.Fatalf("next wrote after another node adopted the shard: %v", err)
	}
	if err := next.Adopt(ctx, shard); err != nil {
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
	if err := third.Adopt(ctx, shard); err != nil {
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
