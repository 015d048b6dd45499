package spool

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func open(t *testing.T) (*Spool, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data", "spool")
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

var ts0 = time.Date(2025, 6, 1, 10, 0, 0, 123456000, time.UTC)

func smsg(conv charla.ConvID, seq charla.Seq, id string) charla.Message {
	return charla.Message{
		Conv: conv, Seq: seq, ClientMsgID: id,
		Sender: charla.Sender{ID: "u", Role: charla.RoleCustomer},
		Body:   json.RawMessage(fmt.Sprintf(`{"text":%q}`, id)),
		TS:     ts0.Add(time.Duration(seq) * time.Second),
	}
}

func mustPut(t *testing.T, s *Spool, msgs ...charla.Message) {
	t.Helper()
	if err := s.Put(t.Context(), msgs); err != nil {
		t.Fatalf("Put: %v", err)
	}
}

func ids(entries []Entry) []string {
	out := make([]string, len(entries))
	for i, e := range entries {
		out[i] = e.Msg.ClientMsgID
	}
	return out
}

func TestFIFOAndDurability(t *testing.T) {
	s, path := open(t)
	ctx := t.Context()
	mustPut(t, s, smsg("a", 5, "a5"), smsg("b", 1, "b1"))
	mustPut(t, s, smsg("a", 6, "a6"))
	if s.Len() != 3 {
		t.Fatalf("Len = %d, want 3", s.Len())
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(t.Context(), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if s.Len() != 3 {
		t.Fatalf("Len after reopen = %d, want 3", s.Len())
	}
	got, err := s.Peek(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids(got)) != "[a5 b1 a6]" {
		t.Fatalf("Peek = %v, want arrival order [a5 b1 a6]", ids(got))
	}
	want := smsg("a", 5, "a5")
	if m := got[0].Msg; m.Conv != want.Conv || m.Seq != want.Seq || m.Sender != want.Sender ||
		string(m.Body) != string(want.Body) || !m.TS.Equal(want.TS) {
		t.Errorf("round trip: got %+v, want %+v", m, want)
	}
	if err := s.Remove(ctx, got[1].Key); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Peek(ctx, 10)
	if fmt.Sprint(ids(got)) != "[a6]" || s.Len() != 1 {
		t.Fatalf("after Remove: %v (Len %d), want [a6]", ids(got), s.Len())
	}
	if _, found, _ := s.Lookup("a", "a5"); found {
		t.Error("Lookup finds a removed message")
	}
}

func TestHeadRangeLookup(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	// "a" and "a:x" share a prefix: the separator keeps them apart.
	mustPut(t, s, smsg("a", 3, "a3"), smsg("a:x", 9, "ax9"), smsg("a", 4, "a4"), smsg("a", 5, "a5"), smsg("b", 1, "b1"))
	for _, tc := range []struct {
		conv  charla.ConvID
		head  charla.Seq
		found bool
	}{{"a", 5, true}, {"a:x", 9, true}, {"b", 1, true}, {"c", 0, false}, {"", 0, false}, {"zzz", 0, false}} {
		h, found, err := s.Head(tc.conv)
		if err != nil || h != tc.head || found != tc.found {
			t.Errorf("Head(%q) = %d, %v, %v; want %d, %v", tc.conv, h, found, err, tc.head, tc.found)
		}
	}
	for _, tc := range []struct {
		after charla.Seq
		limit int
		want  string
	}{{0, 10, "[3 4 5]"}, {3, 10, "[4 5]"}, {3, 1, "[4]"}, {5, 10, "[]"}, {0, 0, "[]"}, {^charla.Seq(0), 5, "[]"}} {
		got, err := s.Range(ctx, "a", tc.after, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		seqs := make([]charla.Seq, len(got))
		for i, m := range got {
			seqs[i] = m.Seq
		}
		if fmt.Sprint(seqs) != tc.want {
			t.Errorf("Range(a, %d, %d) = %v, want %s", tc.after, tc.limit, seqs, tc.want)
		}
	}
	m, found, err := s.Lookup("a", "a4")
	if err != nil || !found || m.Seq != 4 {
		t.Errorf("Lookup(a, a4) = %+v, %v, %v", m, found, err)
	}
	if _, found, _ := s.Lookup("b", "a4"); found {
		t.Error("Lookup crosses conversations")
	}
	// Draining the lower seqs of "a" keeps its head.
	entries, _ := s.Peek(ctx, 1)
	if err := s.Remove(ctx, entries[0].Key); err != nil {
		t.Fatal(err)
	}
	if h, found, _ := s.Head("a"); h != 5 || !found {
		t.Errorf("Head(a) after a partial drain = %d, %v; want 5", h, found)
	}
}

func TestPutRules(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	mustPut(t, s, smsg("a", 1, "x"))
	mustPut(t, s, smsg("a", 1, "x"), smsg("a", 2, "y")) // repeat is skipped
	if s.Len() != 2 {
		t.Fatalf("Len = %d, want 2", s.Len())
	}
	for name, msgs := range map[string][]charla.Message{
		"SeqTaken":       {smsg("a", 3, "z"), smsg("a", 2, "other")},
		"IDAtAnotherSeq": {smsg("a", 3, "z"), smsg("a", 7, "x")},
		"SeqTakenInCall": {smsg("a", 3, "z"), smsg("a", 3, "w")},
		"IDTwiceInCall":  {smsg("a", 3, "z"), smsg("a", 4, "z")},
	} {
		if err := s.Put(ctx, msgs); !errors.Is(err, ErrConflict) {
			t.Errorf("%s: Put = %v, want ErrConflict", name, err)
		}
	}
	for name, m := range map[string]charla.Message{
		"NoConv": smsg("", 1, "q"), "NULInConv": smsg("a\x00b", 1, "q"), "NoID": smsg("a", 9, ""), "NoSeq": smsg("a", 0, "q"),
	} {
		if err := s.Put(ctx, []charla.Message{smsg("a", 3, "z"), m}); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Put = %v, want ErrInvalid", name, err)
		}
	}
	if s.Len() != 2 {
		t.Errorf("Len = %d after rejected Puts, want 2 (atomic)", s.Len())
	}
	if h, _, _ := s.Head("a"); h != 2 {
		t.Errorf("Head = %d after rejected Puts, want 2", h)
	}
}

func TestDrain(t *testing.T) {
	s, _ := open(t)
	ctx := t.Context()
	for i := 1; i <= 7; i++ {
		mustPut(t, s, smsg(charla.ConvID(fmt.Sprintf("c%d", i%2)), charla.Seq(i), fmt.Sprintf("m%d", i)))
	}
	var delivered []string
	calls := 0
	sink := func(ctx context.Context, msgs []charla.Message) error {
		calls++
		if calls == 2 {
			return errors.New("database down again")
		}
		for _, m := range msgs {
			delivered = append(delivered, m.ClientMsgID)
		}
		return nil
	}
	n, err := s.Drain(ctx, 3, sink)
	if err == nil || n != 3 || s.Len() != 4 {
		t.Fatalf("Drain with a failing sink = %d, %v (Len %d); want 3 moved, an error, 4 left", n, err, s.Len())
	}
	n, err = s.Drain(ctx, 3, sink)
	if err != nil || n != 4 || s.Len() != 0 {
		t.Fatalf("second Drain = %d, %v (Len %d); want 4 moved, empty", n, err, s.Len())
	}
	if fmt.Sprint(delivered) != "[m1 m2 m3 m4 m5 m6 m7]" {
		t.Errorf("delivered %v, want every message once, in order", delivered)
	}
	if _, found, _ := s.Head("c1"); found {
		t.Error("Head finds a conversation in an empty spool")
	}
	if n, err := s.Drain(ctx, 3, sink); n != 0 || err != nil {
		t.Errorf("Drain of an empty spool = %d, %v", n, err)
	}
}

func TestClosedAndCanceled(t *testing.T) {
	s, _ := open(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Put(ctx, []charla.Message{smsg("a", 1, "x")}); !errors.Is(err, context.Canceled) {
		t.Errorf("Put with a canceled context = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) {
		t.Errorf("second Close = %v", err)
	}
	if err := s.Put(t.Context(), []charla.Message{smsg("a", 1, "x")}); !errors.Is(err, ErrClosed) {
		t.Errorf("Put after Close = %v", err)
	}
	if _, err := s.Peek(t.Context(), 1); !errors.Is(err, ErrClosed) {
		t.Errorf("Peek after Close = %v", err)
	}
	if _, _, err := s.Head("a"); !errors.Is(err, ErrClosed) {
		t.Errorf("Head after Close = %v", err)
	}
}

func TestSecondOpenFails(t *testing.T) {
	_, path := open(t)
	start := time.Now()
	s2, err := Open(t.Context(), path, Options{})
	if err == nil {
		s2.Close()
		t.Fatal("a second Open of a spool in use succeeded")
	}
	if !errors.Is(err, ErrLocked) {
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second Open took %v to fail", d)
	}
}

// BenchmarkPut measures the outage path: one fsync'd Put per group commit.
func BenchmarkPut(b *testing.B) {
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			s, err := Open(b.Context(), filepath.Join(b.TempDir(), "spool"), Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			seq := charla.Seq(0)
			start := time.Now()
			for b.Loop() {
				msgs := make([]charla.Message, size)
				for i := range msgs {
					seq++
					msgs[i] = smsg(charla.ConvID(fmt.Sprintf("c%d", i%50)), seq, fmt.Sprintf("id-%d", seq))
				}
				if err := s.Put(b.Context(), msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*size)/time.Since(start).Seconds(), "msgs/s")
		})
	}
}
