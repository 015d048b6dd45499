package actors_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/transport/transporttest"
	"charla/wire"
)

// A panic in one conversation actor restarts that actor alone: its clients
// see at most an error for the request in flight and lose nothing acked;
// other conversations see nothing at all.
func TestPanicInOneConversationIsIsolated(t *testing.T) {
	var armed atomic.Bool
	var panics atomic.Int32
	hook := func(conv charla.ConvID, _ any) {
		if conv == "boom" && armed.CompareAndSwap(true, false) {
			panics.Add(1)
			panic("injected by test")
		}
	}
	e := transporttest.Start(t, transporttest.WithSystem(actors.NewSystemWithConversationHook(hook)))
	boomWatcher := e.Dial(t, "w1", charla.RoleAgent)
	boomWatcher.Subscribe("boom", 0)
	calmWatcher := e.Dial(t, "w2", charla.RoleAgent)
	calmWatcher.Subscribe("calm", 0)
	sender := e.Dial(t, "s", charla.RoleAgent)

	send := func(conv charla.ConvID, cmid string) wire.Frame {
		t.Helper()
		sender.Send(transporttest.SendFrame(conv, cmid, "x", cmid))
		for {
			f := sender.Next(transporttest.Wait)
			if (f.Type == wire.TypeAck || f.Type == wire.TypeError) && f.Ref == cmid {
				return f
			}
		}
	}
	for i := range 5 {
		if f := send("boom", uuid.NewString()); f.Type != wire.TypeAck || f.Seq != charla.Seq(i+1) {
			t.Fatalf("before: %+v", f)
		}
		if f := send("calm", uuid.NewString()); f.Type != wire.TypeAck {
			t.Fatalf("calm: %+v", f)
		}
	}

	armed.Store(true)
	victim := uuid.NewString()
	f := send("boom", victim)
	if panics.Load() != 1 {
		t.Fatal("the hook did not panic")
	}
	if f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
		t.Fatalf("request in flight during the panic got %+v, want an unavailable error", f)
	}
	// The client retries with the same client_msg_id, as the protocol says.
	if f := send("boom", victim); f.Type != wire.TypeAck || f.Seq != 6 {
		t.Fatalf("retry after the panic: %+v, want ack seq 6", f)
	}
	for i := range 5 {
		if f := send("boom", uuid.NewString()); f.Type != wire.TypeAck || f.Seq != charla.Seq(7+i) {
			t.Fatalf("after: %+v", f)
		}
		if f := send("calm", uuid.NewString()); f.Type != wire.TypeAck || f.Seq != charla.Seq(6+i) {
			t.Fatalf("calm after: %+v", f)
		}
	}
	// The boom subscriber stayed subscribed across the restart and got every
	// seq once; the calm one never saw an error.
	boomWatcher.Collect("boom", 0, 11)
	calmWatcher.Collect("calm", 0, 10)
	for _, c := range []*transporttest.Client{boomWatcher, calmWatcher} {
		timeout := time.After(300 * time.Millisecond)
	drain:
		for {
			select {
			case f := <-c.Frames():
				if f.Type == wire.TypeError || f.Type == wire.TypeMsg {
					t.Fatalf("unexpected %+v", f)
				}
			case <-timeout:
				break drain
			}
		}
	}
	if n := e.Sys.Stats().Errors(); len(n) != 1 || n[charla.CodeUnavailable] != 1 {
		t.Fatalf("error frames sent: %v, want exactly the one unavailable", n)
	}
}

// A panic while the conversation handles the store's answer (the batch is
// durable, nobody has been acked or told): the senders get an error, their
// resend is answered as a duplicate with the stored seq, and subscribers get
// every message exactly once all the same.
func TestPanicWithABatchInFlight(t *testing.T) {
	var armed atomic.Bool
	hook := func(conv charla.ConvID, msg any) {
		if conv == "inflight" && fmt.Sprintf("%T", msg) == "actors.appendDone" && armed.CompareAndSwap(true, false) {
			panic("injected by test: after the store, before the acks")
		}
	}
	e := transporttest.Start(t, transporttest.WithSystem(actors.NewSystemWithConversationHook(hook)))
	watcher := e.Dial(t, "w", charla.RoleAgent)
	watcher.Subscribe("inflight", 0)
	sender := e.Dial(t, "s", charla.RoleAgent)

	armed.Store(true)
	cmid := uuid.NewString()
	sender.Send(transporttest.SendFrame("inflight", cmid, "x", "r1"))
	f := sender.Next(transporttest.Wait)
	if f.Type != wire.TypeError || f.Code != charla.CodeUnavailable || f.Ref != "r1" {
		t.Fatalf("in-flight send got %+v, want unavailable", f)
	}
	sender.Send(transporttest.SendFrame("inflight", cmid, "x", "r2"))
	ack := sender.NextOf(wire.TypeAck, transporttest.Wait)
	if ack.Seq != 1 || !ack.Duplicate || ack.Ref != "r2" {
		t.Fatalf("resend: %+v, want duplicate of seq 1 (it was stored)", ack)
	}
	sender.Send(transporttest.SendFrame("inflight", uuid.NewString(), "y", "r3"))
	if ack := sender.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 2 {
		t.Fatalf("next: %+v, want seq 2", ack)
	}
	watcher.Collect("inflight", 0, 2)
	watcher.NoFrame(wire.TypeMsg, 300*time.Millisecond)
}

// A request routed to a conversation whose load has just failed — it
// arrives after the failure, before the conversations actor stops that
// incarnation — is answered with a retriable error, and the engine still
// shuts down: such a request used to wait in the failed incarnation
// forever, and the shutdown with it.
func TestRequestAfterFailedLoadIsAnswered(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	entered, gate := make(chan struct{}), make(chan struct{})
	var once sync.Once
	hook := func(conv charla.ConvID, msg any) {
		if conv == "cold" && fmt.Sprintf("%T", msg) == "actors.loaded" {
			once.Do(func() { close(entered); <-gate })
		}
	}
	e := transporttest.Start(t, transporttest.WithSystem(actors.NewSystemWithConversationHook(hook)),
		transporttest.WithStore(func(tb testing.TB) store.Store {
			return &headFails{Store: openPebbleAt(tb, tb.TempDir()), failing: &failing}
		}))
	a, b := e.Dial(t, "a", charla.RoleAgent), e.Dial(t, "b", charla.RoleAgent)
	cmid := uuid.NewString()
	a.Send(transporttest.SendFrame("cold", cmid, "x", cmid))
	select {
	case <-entered: // the load failed; its answer is held
	case <-time.After(transporttest.Wait):
		t.Fatal("the conversation's load did not come back")
	}
	b.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "cold", Ref: "sub"})
	time.Sleep(200 * time.Millisecond) // routed to the held incarnation, behind the failed load
	close(gate)

	answer := func(c *transporttest.Client, ref string) wire.Frame {
		t.Helper()
		for {
			f := c.Next(transporttest.Wait)
			if f.Ref == ref && (f.Type == wire.TypeError || f.Type == wire.TypeAck || f.Type == wire.TypeSubscribed) {
				return f
			}
		}
	}
	if f := answer(a, cmid); f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
		t.Fatalf("the send during the failed load: %+v", f)
	}
	if f := answer(b, "sub"); f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
		t.Fatalf("the subscribe after the failed load: %+v", f)
	}
	// Nothing was kept by the failed incarnation: the store back, the
	// conversation loads again.
	failing.Store(false)
	b.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: "cold", Ref: "sub2"})
	if f := answer(b, "sub2"); f.Type != wire.TypeSubscribed {
		t.Fatalf("the subscribe with the store back: %+v", f)
	}
}

// headFails is a store whose Head fails while failing is set.
type headFails struct {
	store.Store
	failing *atomic.Bool
}

func (h *headFails) Head(ctx context.Context, conv charla.ConvID) (charla.Seq, error) {
	if h.failing.Load() {
		return 0, fmt.Errorf("head %s: %w", conv, store.ErrUnavailable)
	}
	return h.Store.Head(ctx, conv)
}
