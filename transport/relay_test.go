package transport_test

import (
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/transport/transporttest"
	"charla/wire"
)

func TestTypingReadAndUnsubscribe(t *testing.T) {
	e := transporttest.Start(t)
	ana := e.Dial(t, "ana", charla.RoleAgent)
	cus := e.Dial(t, "cus", charla.RoleCustomer)
	other := e.Dial(t, "other", charla.RoleAgent)
	ana.Subscribe("cus", 0)
	cus.Subscribe("cus", 0)
	other.Subscribe("elsewhere", 0)

	cus.Send(transporttest.SendFrame("cus", uuid.NewString(), "hola", ""))
	cus.NextOf(wire.TypeAck, transporttest.Wait)
	ana.NextOf(wire.TypeMsg, transporttest.Wait)
	cus.NextOf(wire.TypeMsg, transporttest.Wait)

	t.Run("typing reaches the other subscribers, not the typist", func(t *testing.T) {
		cus.Send(wire.Frame{Type: wire.TypeTyping, Conv: "cus", State: "on"})
		f := ana.NextOf(wire.TypeTyping, transporttest.Wait)
		if f.Conv != "cus" || f.User != "cus" || f.State != "on" {
			t.Fatalf("typing = %+v", f)
		}
		cus.NoFrame(wire.TypeTyping, 200*time.Millisecond)
		other.NoFrame(wire.TypeTyping, 50*time.Millisecond)
	})
	t.Run("read is relayed and stored as the reader's cursor", func(t *testing.T) {
		ana.Send(wire.Frame{Type: wire.TypeRead, Conv: "cus", Seq: 1})
		f := cus.NextOf(wire.TypeRead, transporttest.Wait)
		if f.Conv != "cus" || f.User != "ana" || f.Seq != 1 {
			t.Fatalf("read = %+v", f)
		}
		ana.NoFrame(wire.TypeRead, 200*time.Millisecond)
		cursors := func() map[string]charla.Seq {
			t.Helper()
			var got map[string]charla.Seq
			deadline := time.Now().Add(transporttest.Wait)
			for time.Now().Before(deadline) {
				var err error
				if got, err = e.Store().ReadCursors(t.Context(), "cus"); err != nil {
					t.Fatal(err)
				}
				if got["ana"] == 1 {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			return got
		}
		if got := cursors(); got["ana"] != 1 {
			t.Fatalf("stored cursors %v, want ana at 1", got)
		}
	})
	t.Run("typing is never stored", func(t *testing.T) {
		msgs, err := e.Store().Range(t.Context(), "cus", 0, 100)
		if err != nil || len(msgs) != 1 {
			t.Fatalf("stored %d messages (%v), want only the one sent", len(msgs), err)
		}
	})
	t.Run("after unsubscribe nothing more arrives", func(t *testing.T) {
		ana.Send(wire.Frame{Type: wire.TypeUnsubscribe, Conv: "cus", Ref: "u"})
		if f := ana.NextOf(wire.TypeUnsubscribed, transporttest.Wait); f.Conv != "cus" || f.Ref != "u" {
			t.Fatalf("unsubscribed = %+v", f)
		}
		cus.Send(transporttest.SendFrame("cus", uuid.NewString(), "¿hay alguien?", ""))
		cus.NextOf(wire.TypeAck, transporttest.Wait)
		cus.Send(wire.Frame{Type: wire.TypeTyping, Conv: "cus", State: "off"})
		ana.NoFrame("", 300*time.Millisecond)
	})
}
