package postgres

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"charla"
	"charla/store/spool"
)

// TestDrainSpool plays an outage end to end: the engine sequences on from
// the store's head into the spool, then drains the spool into the store, and
// a drain repeated after a crash (committed but not yet removed) is harmless.
func TestDrainSpool(t *testing.T) {
	s := openTest(t)
	ctx := t.Context()
	mustAppend(t, s, tmsg("c", "a", "1"), tmsg("c", "b", "2"))

	sp, err := spool.Open(ctx, filepath.Join(t.TempDir(), "spool"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	// The outage: the engine's head is max(store, spool).
	next := func(conv charla.ConvID) charla.Seq {
		h, err := s.Head(ctx, conv)
		if err != nil {
			t.Fatal(err)
		}
		if sh, ok, err := sp.Head(conv); err != nil {
			t.Fatal(err)
		} else if ok && sh > h {
			h = sh
		}
		return h + 1
	}
	var spooled []charla.Message
	for _, m := range []charla.Message{tmsg("c", "c", "3"), tmsg("d", "x", "1"), tmsg("c", "d", "4")} {
		m.Seq = next(m.Conv)
		m.TS = time.Now().UTC().Truncate(time.Microsecond)
		if err := sp.Put(ctx, []charla.Message{m}); err != nil {
			t.Fatal(err)
		}
		spooled = append(spooled, m)
	}
	entries, err := sp.Peek(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}

	sink := func(ctx context.Context, msgs []charla.Message) error {
		_, err := s.AppendSequenced(ctx, msgs)
		return err
	}
	n, err := sp.Drain(ctx, 2, sink)
	if err != nil || n != 3 || sp.Len() != 0 {
		t.Fatalf("Drain = %d, %v (Len %d); want 3 drained", n, err, sp.Len())
	}
	got, err := s.Range(ctx, "c", 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 || got[2].ClientMsgID != "c" || got[2].Seq != 3 || got[3].Seq != 4 ||
		!got[3].TS.Equal(spooled[2].TS) {
		t.Errorf("Range(c) after drain = %+v", got)
	}
	// A crash after the commit and before Remove: the same entries drain again.
	res, err := s.AppendSequenced(ctx, []charla.Message{entries[0].Msg, entries[1].Msg, entries[2].Msg})
	if err != nil {
		t.Fatalf("repeated drain: %v", err)
	}
	for i, r := range res {
		if !r.Duplicate || r.Seq != spooled[i].Seq {
			t.Errorf("repeated drain result %d: %+v, want a duplicate at %d", i, r, spooled[i].Seq)
		}
	}
	if r := mustAppend(t, s, tmsg("c", "e", "5"), tmsg("d", "y", "2")); r[0].Seq != 5 || r[1].Seq != 2 {
		t.Errorf("Append after the drain = %+v, want seqs 5 and 2", r)
	}
}
