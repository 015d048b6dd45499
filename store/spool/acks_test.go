package spool

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"charla"
	"charla/store/internal/boltfile"
)

func openWith(t *testing.T, opts Options) *Spool {
	t.Helper()
	s, err := Open(t.Context(), filepath.Join(t.TempDir(), "spool"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func ack(conv charla.ConvID, id string, seq charla.Seq) Ack {
	return Ack{Conv: conv, ClientMsgID: id, Seq: seq, TS: ts0.Add(time.Duration(seq) * time.Second)}
}

// TestAckIndex: acks recorded by the store path (unsynced) and by Put are
// found by Acked, across conversations that share a prefix, after the spool
// drained them, and after a reopen.
func TestAckIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if err := s.RecordAcks(ctx, []Ack{ack("a", "x", 1), ack("a:1", "y", 7)}, false); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, smsg("a", 2, "z"))
	entries, _ := s.Peek(ctx, 10)
	if err := s.Remove(ctx, entries[len(entries)-1].Key); err != nil {
		t.Fatal(err)
	}
	check := func(s *Spool) {
		t.Helper()
		for _, tc := range []struct {
			conv  charla.ConvID
			id    string
			seq   charla.Seq
			found bool
		}{{"a", "x", 1, true}, {"a:1", "y", 7, true}, {"a", "z", 2, true}, {"a", "y", 0, false}, {"a:1", "x", 0, false}, {"b", "x", 0, false}} {
			a, found, err := s.Acked(tc.conv, tc.id)
			if err != nil || found != tc.found || a.Seq != tc.seq {
				t.Errorf("Acked(%s, %s) = %+v, %v, %v; want seq %d, %v", tc.conv, tc.id, a, found, err, tc.seq, tc.found)
			}
			if found && !a.TS.Equal(ts0.Add(time.Duration(tc.seq)*time.Second)) {
				t.Errorf("Acked(%s, %s) TS = %v", tc.conv, tc.id, a.TS)
			}
		}
	}
	check(s)
	if s.Acks() != 3 {
		t.Errorf("Acks = %d, want 3", s.Acks())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	check(s)
	if s.Acks() != 3 {
		t.Errorf("Acks after reopen = %d, want 3", s.Acks())
	}
}

// TestPrune: the ack index keeps what is younger than the window and no
// more than the count bound, oldest out first; an id acked again keeps its
// newer ack; a spooled message is still found once its ack is pruned.
func TestPrune(t *testing.T) {
	for _, tc := range []struct {
		name   string
		window time.Duration
		max    int
		after  time.Duration // Prune as of now+after
		want   []string      // ids still acked
	}{
		{"Young", time.Hour, 100, 0, []string{"m0", "m1", "m2", "m3", "m4"}},
		{"Aged", time.Hour, 100, 2 * time.Hour, nil},
		{"Count", time.Hour, 2, 0, []string{"m3", "m4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openWith(t, Options{DedupWindow: tc.window, DedupMax: tc.max, PruneInterval: time.Hour})
			for i := range 5 {
				if err := s.RecordAcks(t.Context(), []Ack{ack("c", fmt.Sprintf("m%d", i), charla.Seq(i+1))}, false); err != nil {
					t.Fatal(err)
				}
				time.Sleep(time.Millisecond) // distinct ack times
			}
			if _, err := s.Prune(t.Context(), time.Now().Add(tc.after)); err != nil {
				t.Fatal(err)
			}
			var got []string
			for i := range 5 {
				id := fmt.Sprintf("m%d", i)
				if _, found, err := s.Acked("c", id); err != nil {
					t.Fatal(err)
				} else if found {
					got = append(got, id)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) || s.Acks() != len(tc.want) {
				t.Errorf("after Prune: %v (Acks %d), want %v", got, s.Acks(), tc.want)
			}
		})
	}
	t.Run("Reacked", func(t *testing.T) {
		s := openWith(t, Options{DedupWindow: time.Hour, DedupMax: 1, PruneInterval: time.Hour})
		if err := s.RecordAcks(t.Context(), []Ack{ack("c", "x", 1)}, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		if err := s.RecordAcks(t.Context(), []Ack{ack("c", "x", 1)}, true); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Prune(t.Context(), time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, found, _ := s.Acked("c", "x"); !found || s.Acks() != 1 {
			t.Errorf("an id acked again lost its newer ack (found %v, Acks %d)", found, s.Acks())
		}
	})
	t.Run("StillSpooled", func(t *testing.T) {
		s := openWith(t, Options{DedupWindow: time.Hour, PruneInterval: time.Hour})
		mustPut(t, s, smsg("c", 4, "q"))
		if _, err := s.Prune(t.Context(), time.Now().Add(2*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if a, found, err := s.Acked("c", "q"); err != nil || !found || a.Seq != 4 {
			t.Errorf("Acked of a spooled message whose ack was pruned = %+v, %v, %v", a, found, err)
		}
	})
}

// TestBackgroundPrune: passing the count bound wakes the pruner.
func TestBackgroundPrune(t *testing.T) {
	s := openWith(t, Options{DedupMax: 10, PruneInterval: time.Hour})
	for i := range 20 {
		if err := s.RecordAcks(t.Context(), []Ack{ack("c", fmt.Sprint(i), charla.Seq(i+1))}, false); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Acks() > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("Acks = %d, still over the bound of 10", s.Acks())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDeadLetters(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, err := Open(t.Context(), dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2025, 6, 2, 0, 0, 0, 0, time.UTC)
	for _, d := range []DeadLetter{
		{Msg: smsg("b", 3, "b3"), Err: "refused", At: at},
		{Msg: smsg("a", 9, "a9"), Err: "first", At: at},
		{Msg: smsg("a", 9, "a9"), Err: "again", At: at.Add(time.Second)}, // a re-drain replaces it
	} {
		if err := s.PutDeadLetter(t.Context(), d); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(t.Context(), dir, Options{}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	got, err := s.DeadLetters(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s.DeadLetterCount() != 2 || len(got) != 2 || got[0].Msg.ClientMsgID != "a9" || got[0].Err != "again" ||
		got[1].Msg.ClientMsgID != "b3" || !got[1].At.Equal(at) || string(got[1].Msg.Body) != `{"text":"b3"}` {
		t.Errorf("dead letters after reopen (count %d): %+v", s.DeadLetterCount(), got)
	}
}

// TestImportBolt: the bbolt spool of an earlier engine is moved in, in
// arrival order, once.
func TestImportBolt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "spool.db")
	db, err := boltfile.Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	want := []charla.Message{smsg("a", 5, "a5"), smsg("b", 1, "b1"), smsg("a", 6, "a6")}
	err = db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucket([]byte("log"))
		if err != nil {
			return err
		}
		for i, m := range want {
			data, _ := json.Marshal(m)
			if err := b.Put(binary.BigEndian.AppendUint64(nil, uint64(i+1)), data); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || db.Close() != nil {
		t.Fatal(err)
	}
	s := openWith(t, Options{})
	for range 2 {
		if _, err := ImportBolt(t.Context(), s, path); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Peek(t.Context(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(got)) != "[a5 b1 a6]" || s.Len() != 3 {
		t.Errorf("imported %v (Len %d), want [a5 b1 a6]", ids(got), s.Len())
	}
	if _, err := os.Stat(path + ".imported"); err != nil {
		t.Errorf("the old file was not set aside: %v", err)
	}
	if a, found, err := s.Acked("a", "a6"); err != nil || !found || a.Seq != 6 {
		t.Errorf("Acked of an imported message = %+v, %v, %v", a, found, err)
	}
}
