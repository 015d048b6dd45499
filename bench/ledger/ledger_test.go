package ledger

import (
	"fmt"
	"sync"
	"testing"

	"charla"
)

func id(conv string, seq int) string { return fmt.Sprintf("%s-%d", conv, seq) }

// ackAll acks seqs 1..n of conv, each under its own client_msg_id.
func ackAll(l *Ledger, conv charla.ConvID, n int) {
	for i := 1; i <= n; i++ {
		l.Acked(conv, charla.Seq(i), id(string(conv), i), false)
	}
}

func deliver(s *Sub, seqs ...int) []Outcome {
	var out []Outcome
	for _, q := range seqs {
		out = append(out, s.Deliver(charla.Seq(q), id(string(s.Conv()), q)))
	}
	return out
}

func TestCleanStreamIsOK(t *testing.T) {
	l := New()
	a := l.Subscribe("c", 0, "a")
	b := l.Subscribe("c", 0, "b")
	ackAll(l, "c", 100)
	for i := 1; i <= 100; i++ {
		deliver(a, i)
		deliver(b, i)
	}
	r := l.Report()
	if !r.OK() || r.Acked != 100 || r.Delivered != 200 || r.Subscriptions != 2 || r.Conversations != 1 {
		t.Fatalf("clean stream: %+v", r)
	}
	if n := l.Outstanding(); n != 0 {
		t.Fatalf("outstanding = %d, want 0", n)
	}
}

// The case the issue names: one fake stream with a gap, a duplicate and a
// reorder must be reported as exactly that.
func TestGapDuplicateReorder(t *testing.T) {
	l := New()
	s := l.Subscribe("c", 0, "sub")
	ackAll(l, "c", 10)
	// 3 is missing (gap), 5 comes twice (duplicate), 8 comes after 9 (reorder).
	got := deliver(s, 1, 2, 4, 5, 5, 6, 7, 9, 8, 10)
	want := []Outcome{Fresh, Fresh, Fresh, Fresh, Duplicate, Fresh, Fresh, Fresh, Late, Fresh}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("outcomes %v, want %v", got, want)
	}
	r := l.Report()
	if r.Lost != 1 || r.Duplicated != 1 || r.Reordered != 1 || r.Mismatched != 0 {
		t.Fatalf("report %+v, want lost 1, duplicated 1, reordered 1", r)
	}
	if r.OK() {
		t.Fatal("a stream with a gap must not be OK")
	}
	if len(r.Samples) == 0 {
		t.Fatal("problems must come with samples")
	}
	if n := l.Outstanding(); n == 0 {
		t.Fatal("a subscription missing seq 3 is still owed something")
	}
}

func TestLateMessageIsNotLost(t *testing.T) {
	l := New()
	s := l.Subscribe("c", 0, "sub")
	ackAll(l, "c", 3)
	deliver(s, 1, 3, 2)
	r := l.Report()
	if r.Lost != 0 || r.Reordered != 1 || r.Duplicated != 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestSinceAndResubscribe(t *testing.T) {
	l := New()
	ackAll(l, "c", 6)
	s := l.Subscribe("c", 3, "sub")
	deliver(s, 4)
	if got := s.Last(); got != 4 {
		t.Fatalf("Last = %d, want 4", got)
	}
	// A reconnect resubscribes with since=Last(); a replay of 4 or of
	// anything up to since is a duplicate, 5 and 6 complete the stream.
	out := deliver(s, 4, 2, 5, 6)
	if fmt.Sprint(out) != fmt.Sprint([]Outcome{Duplicate, Duplicate, Fresh, Fresh}) {
		t.Fatalf("outcomes %v", out)
	}
	r := l.Report()
	if r.Lost != 0 || r.Duplicated != 2 {
		t.Fatalf("report %+v", r)
	}
}

func TestUnackedTailIsNotLost(t *testing.T) {
	l := New()
	s := l.Subscribe("c", 0, "sub")
	ackAll(l, "c", 2)
	deliver(s, 1, 2, 3) // 3 was stored but its ack never reached the bench
	r := l.Report()
	if !r.OK() || r.UnackedDelivered != 1 {
		t.Fatalf("report %+v", r)
	}
}

func TestStoredTwiceIsDuplicated(t *testing.T) {
	l := New()
	l.Acked("c", 1, "same", false)
	l.Acked("c", 2, "same", false) // dedup failed: a resend became a new message
	r := l.Report()
	if r.Duplicated != 1 {
		t.Fatalf("report %+v, want duplicated 1", r)
	}
}

func TestDuplicateAckIsFine(t *testing.T) {
	l := New()
	l.Acked("c", 1, "x", false)
	l.Acked("c", 1, "x", true)
	r := l.Report()
	if !r.OK() || r.Acked != 1 || r.DuplicateAcks != 1 {
		t.Fatalf("report %+v", r)
	}
}

func TestMismatchedID(t *testing.T) {
	l := New()
	s := l.Subscribe("c", 0, "sub")
	l.Acked("c", 1, "x", false)
	s.Deliver(1, "y")
	s.Deliver(0, "z")
	r := l.Report()
	if r.Mismatched != 2 {
		t.Fatalf("report %+v, want mismatched 2", r)
	}
}

func TestBrokenSubscriptionOwesNothing(t *testing.T) {
	l := New()
	s := l.Subscribe("c", 0, "slow")
	ackAll(l, "c", 5)
	deliver(s, 1)
	s.Break("slow consumer closed 4008")
	r := l.Report()
	if !r.OK() || r.BrokenSubscriptions != 1 {
		t.Fatalf("report %+v", r)
	}
	if n := l.Outstanding(); n != 0 {
		t.Fatalf("outstanding %d", n)
	}
}

func TestConcurrentUse(t *testing.T) {
	l := New()
	const convs, subs, msgs = 4, 5, 300
	var wg sync.WaitGroup
	for c := range convs {
		conv := charla.ConvID(fmt.Sprint("c", c))
		var ss []*Sub
		for i := range subs {
			ss = append(ss, l.Subscribe(conv, 0, fmt.Sprint("s", i)))
		}
		wg.Go(func() { ackAll(l, conv, msgs) })
		for _, s := range ss {
			wg.Go(func() {
				for i := 1; i <= msgs; i++ {
					deliver(s, i)
				}
			})
		}
		wg.Go(func() { _ = l.Outstanding() })
	}
	wg.Wait()
	r := l.Report()
	if !r.OK() || r.Acked != convs*msgs || r.Delivered != convs*subs*msgs {
		t.Fatalf("report %+v", r)
	}
}
