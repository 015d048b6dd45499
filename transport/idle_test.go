package transport_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

// An idle conversation with no subscriber is unloaded, and the next request
// loads it again from the store: the sequence and the dedup go on.
func TestIdleConversationIsUnloadedAndReloaded(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.IdleTimeout = 300 * time.Millisecond
		c.SweepInterval = 100 * time.Millisecond
	}))
	c := e.Dial(t, "a", charla.RoleAgent)
	first := uuid.NewString()
	c.Send(transporttest.SendFrame("sleepy", first, "one", ""))
	c.NextOf(wire.TypeAck, transporttest.Wait)
	c.Subscribe("watched", 0) // a conversation with a subscriber stays
	st := e.Sys.Stats()
	if st.ConversationsActive.Load() != 2 {
		t.Fatalf("%d conversations alive, want 2", st.ConversationsActive.Load())
	}
	deadline := time.Now().Add(5 * time.Second)
	for st.ConversationsActive.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("idle conversation not unloaded: %d alive", st.ConversationsActive.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.ConversationsIdled.Load() != 1 {
		t.Fatalf("%d unloaded, want only the idle one", st.ConversationsIdled.Load())
	}
	c.Send(transporttest.SendFrame("sleepy", first, "one", ""))
	if ack := c.NextOf(wire.TypeAck, transporttest.Wait); !ack.Duplicate || ack.Seq != 1 {
		t.Fatalf("resend after reload: %+v, want duplicate seq 1", ack)
	}
	c.Send(transporttest.SendFrame("sleepy", uuid.NewString(), "two", ""))
	if ack := c.NextOf(wire.TypeAck, transporttest.Wait); ack.Seq != 2 {
		t.Fatalf("after reload: %+v, want seq 2", ack)
	}
}
