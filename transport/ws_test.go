package transport_test

import (
	"fmt"
	"math"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, transporttest.LeakOptions()...)
}

func TestSendAckDeliver(t *testing.T) {
	e := transporttest.Start(t)
	a := e.Dial(t, "alice", charla.RoleAgent)
	b := e.Dial(t, "bob", charla.RoleAgent)
	a.Subscribe("c1", 0)
	b.Subscribe("c1", 0)

	cmid := uuid.NewString()
	a.Send(transporttest.SendFrame("c1", cmid, "hola", "r1"))
	ack := a.NextOf(wire.TypeAck, transporttest.Wait)
	if ack.Seq != 1 || ack.Ref != "r1" || ack.ClientMsgID != cmid || ack.Duplicate || ack.TS.IsZero() {
		t.Fatalf("ack = %+v, want seq 1 for %s", ack, cmid)
	}
	m := b.NextOf(wire.TypeMsg, transporttest.Wait)
	if m.Seq != 1 || m.ClientMsgID != cmid || m.Sender == nil || m.Sender.ID != "alice" || m.Sender.Role != charla.RoleAgent || string(m.Body) != `{"text":"hola"}` {
		t.Fatalf("msg = %+v", m)
	}
	if !m.TS.Equal(ack.TS) {
		t.Fatalf("msg ts %v != ack ts %v", m.TS, ack.TS)
	}
}

func TestManySendersEveryoneSeesEverySeqOnce(t *testing.T) {
	e := transporttest.Start(t)
	const senders, perSender = 4, 250
	var subs []*transporttest.Client
	for i := range 3 {
		c := e.Dial(t, fmt.Sprintf("watcher%d", i), charla.RoleAgent)
		c.Subscribe("busy", 0)
		subs = append(subs, c)
	}
	acked := make(chan wire.Frame, senders*perSender)
	for s := range senders {
		c := e.Dial(t, fmt.Sprintf("sender%d", s), charla.RoleAgent)
		go func() {
			for i := range perSender {
				c.Send(transporttest.SendFrame("busy", uuid.NewString(), fmt.Sprintf("s%d-%d", s, i), ""))
			}
		}()
		go func() {
			for range perSender {
				select {
				case f := <-c.Frames():
					acked <- f
				case <-time.After(30 * time.Second):
					return
				}
			}
		}()
	}
	seqs := map[charla.Seq]string{}
	for range senders * perSender {
		select {
		case f := <-acked:
			if f.Type != wire.TypeAck {
				t.Fatalf("sender got %+v, want ack", f)
			}
			if prev, dup := seqs[f.Seq]; dup {
				t.Fatalf("seq %d acked for %s and %s", f.Seq, prev, f.ClientMsgID)
			}
			seqs[f.Seq] = f.ClientMsgID
		case <-time.After(30 * time.Second):
			t.Fatalf("only %d acks", len(seqs))
		}
	}
	for _, c := range subs {
		msgs := c.Collect("busy", 0, senders*perSender)
		for _, m := range msgs {
			if seqs[m.Seq] != m.ClientMsgID {
				t.Fatalf("seq %d delivered as %s, acked as %s", m.Seq, m.ClientMsgID, seqs[m.Seq])
			}
		}
		c.NoFrame(wire.TypeMsg, 200*time.Millisecond)
	}
}

func TestResendIsIdempotent(t *testing.T) {
	e := transporttest.Start(t)
	watcher := e.Dial(t, "watcher", charla.RoleAgent)
	watcher.Subscribe("idem", 0)
	a := e.Dial(t, "alice", charla.RoleAgent)
	cmid := uuid.NewString()
	a.Send(transporttest.SendFrame("idem", cmid, "first", "1"))
	first := a.NextOf(wire.TypeAck, transporttest.Wait)
	watcher.Collect("idem", 0, 1)

	checkDup := func(t *testing.T, c *transporttest.Client) {
		t.Helper()
		c.Send(transporttest.SendFrame("idem", cmid, "first", "again"))
		ack := c.NextOf(wire.TypeAck, transporttest.Wait)
		if !ack.Duplicate || ack.Seq != first.Seq || !ack.TS.Equal(first.TS) || ack.Ref != "again" {
			t.Fatalf("resend ack = %+v, want duplicate of %+v", ack, first)
		}
	}
	t.Run("same connection", func(t *testing.T) { checkDup(t, a) })
	t.Run("after reconnect", func(t *testing.T) {
		a.Close()
		checkDup(t, e.Dial(t, "alice", charla.RoleAgent))
	})
	t.Run("concurrent resends", func(t *testing.T) {
		c := e.Dial(t, "alice", charla.RoleAgent)
		for range 5 {
			c.Send(transporttest.SendFrame("idem", cmid, "first", "again"))
		}
		for range 5 {
			if ack := c.NextOf(wire.TypeAck, transporttest.Wait); !ack.Duplicate || ack.Seq != first.Seq {
				t.Fatalf("ack = %+v", ack)
			}
		}
	})
	watcher.NoFrame(wire.TypeMsg, 200*time.Millisecond)
	t.Run("after engine restart", func(t *testing.T) {
		e.Restart()
		checkDup(t, e.Dial(t, "alice", charla.RoleAgent))
		// and the next new message continues the sequence
		c := e.Dial(t, "bob", charla.RoleAgent)
		c.Send(transporttest.SendFrame("idem", uuid.NewString(), "second", ""))
		if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != first.Seq+1 || ack.Duplicate {
			t.Fatalf("next ack = %+v, want seq %d", ack, first.Seq+1)
		}
	})
	t.Run("beyond the in-memory window", func(t *testing.T) {
		// The store's unique key is the final word once the LRU forgot it.
		e2 := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) { c.DedupWindow, c.RecentWindow = 2, 2 }))
		c := e2.Dial(t, "alice", charla.RoleAgent)
		old := uuid.NewString()
		c.Send(transporttest.SendFrame("w", old, "old", ""))
		firstAck := c.NextOf(wire.TypeAck, transporttest.Wait)
		for i := range 5 {
			c.Send(transporttest.SendFrame("w", uuid.NewString(), fmt.Sprint(i), ""))
			c.NextOf(wire.TypeAck, transporttest.Wait)
		}
		c.Send(transporttest.SendFrame("w", old, "old", ""))
		if ack := c.NextOf(wire.TypeAck, transporttest.Wait); !ack.Duplicate || ack.Seq != firstAck.Seq {
			t.Fatalf("old resend ack = %+v, want duplicate seq %d", ack, firstAck.Seq)
		}
		c.Send(transporttest.SendFrame("w", uuid.NewString(), "next", ""))
		if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 7 {
			t.Fatalf("next ack seq = %d, want 7 (no gap after a store-detected duplicate)", ack.Seq)
		}
	})
}

func TestSubscribeSinceWhileSending(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.RecentWindow = 8 // most subscribes must replay from the store, then switch to live
		c.ReplayPage = 16
	}))
	sender := e.Dial(t, "sender", charla.RoleAgent)
	const total = 400
	stop := make(chan struct{})
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range total {
			select {
			case <-stop:
				return
			default:
			}
			sender.Send(transporttest.SendFrame("race", uuid.NewString(), fmt.Sprint(i), ""))
			if i%20 == 0 {
				time.Sleep(2 * time.Millisecond)
			}
		}
	}()
	defer func() { close(stop); <-sent }()
	for round := range 20 {
		since := charla.Seq(round * 7)
		c := e.Dial(t, fmt.Sprintf("sub%d", round), charla.RoleAgent)
		sf := c.Subscribe("race", since)
		// Everything up to the head of the subscribe, then at least 20 live
		// ones: every seq exactly once, in order, across the switch.
		n := int(sf.Head-since) + 20
		if since > sf.Head {
			n = 20
			since = sf.Head
		}
		if n+int(since) > total {
			n = total - int(since)
		}
		c.Collect("race", since, n)
		c.Close()
	}
}

func TestRestartKeepsAckedMessages(t *testing.T) {
	dir := t.TempDir()
	e := transporttest.Start(t, transporttest.WithDataDir(dir))
	c := e.Dial(t, "a", charla.RoleAgent)
	for i := range 50 {
		c.Send(transporttest.SendFrame("r", uuid.NewString(), fmt.Sprint(i), ""))
	}
	for range 50 {
		c.NextOf(wire.TypeAck, transporttest.Wait)
	}
	e.Restart()
	c = e.Dial(t, "a", charla.RoleAgent)
	if f := c.Subscribe("r", 0); f.Head != 50 {
		t.Fatalf("head after restart = %d, want 50", f.Head)
	}
	c.Collect("r", 0, 50)
	c.Send(transporttest.SendFrame("r", uuid.NewString(), "after", ""))
	if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 51 {
		t.Fatalf("seq after restart = %d, want 51", ack.Seq)
	}
}

// A since beyond the head is clamped to it, said in subscribed, and the
// subscription goes live: the next message is delivered (no wrap at 2^64,
// no retry loop, no skipped seqs).
func TestSubscribeSinceBeyondHead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		head  int
		since charla.Seq
	}{
		{"max uint64 on an empty conversation", 0, math.MaxUint64},
		{"5 on an empty conversation", 0, 5},
		{"9 on a conversation at 2", 2, 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := transporttest.Start(t)
			s := e.Dial(t, "s", charla.RoleAgent)
			for i := range tc.head {
				s.Send(transporttest.SendFrame("c", uuid.NewString(), "x", fmt.Sprint(i)))
				s.NextOf(wire.TypeAck, transporttest.Wait)
			}
			w := e.Dial(t, "w", charla.RoleAgent)
			f := w.Subscribe("c", tc.since)
			if f.Head != charla.Seq(tc.head) || f.Since != charla.Seq(tc.head) {
				t.Fatalf("subscribed %+v, want head and since %d", f, tc.head)
			}
			s.Send(transporttest.SendFrame("c", uuid.NewString(), "live", "live"))
			w.Collect("c", charla.Seq(tc.head), 1)
			w.NoFrame(wire.TypeError, 200*time.Millisecond)
		})
	}
}
