package transport_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/transport/transporttest"
	"charla/wire"
)

// A graceful shutdown in the middle of a burst: every send is answered —
// acked (and then durable) or refused as unavailable or past the in-flight
// cap (and then not stored) —
// before the connection is closed with 1012. Nothing is left in between.
func TestShutdownAnswersEverySend(t *testing.T) {
	dir := t.TempDir()
	e := transporttest.Start(t, transporttest.WithDataDir(dir))
	c := e.Dial(t, "a", charla.RoleAgent)
	const n = 3000
	ids := make([]string, n)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	go func() {
		for i, id := range ids {
			if err := c.SendRaw(wire.Encode(transporttest.SendFrame("burst", id, fmt.Sprint(i), id))); err != nil {
				return // the engine closed the connection
			}
		}
	}()
	acked := map[string]charla.Seq{}
	refused := map[string]bool{}
	first := c.NextOf(wire.TypeAck, transporttest.Wait) // the burst is under way: shut down now
	acked[first.Ref] = first.Seq
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()

	for done := false; !done; {
		select {
		case f := <-c.Frames():
			switch f.Type {
			case wire.TypeAck:
				acked[f.Ref] = f.Seq
			case wire.TypeError:
				// unavailable: the engine is stopping; rate_limited: past
				// --max-sends-in-flight. Neither is stored.
				if f.Code != charla.CodeUnavailable && f.Code != charla.CodeRateLimited {
					t.Fatalf("unexpected error %+v", f)
				}
				refused[f.Ref] = true
			}
		case <-c.Done():
			done = true
		case <-time.After(15 * time.Second):
			t.Fatal("connection not closed")
		}
	}
	<-closed
	for len(c.Frames()) > 0 { // frames read before the close was seen
		if f := <-c.Frames(); f.Type == wire.TypeAck {
			acked[f.Ref] = f.Seq
		} else if f.Type == wire.TypeError {
			refused[f.Ref] = true
		}
	}
	if code := c.CloseCode(); code != 1012 {
		t.Fatalf("close code %d, want 1012", code)
	}
	if len(acked) == n {
		t.Fatal("everything was acked: the burst did not overlap the shutdown")
	}
	t.Logf("%d acked, %d refused, %d never read by the engine before it closed", len(acked), len(refused), n-len(acked)-len(refused))

	e2 := transporttest.Start(t, transporttest.WithDataDir(dir))
	stored, err := e2.Store().Range(t.Context(), "burst", 0, n+1)
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != len(acked) {
		t.Fatalf("%d stored, %d acked", len(stored), len(acked))
	}
	for _, m := range stored {
		if acked[m.ClientMsgID] != m.Seq {
			t.Fatalf("stored %s at seq %d, acked at %d", m.ClientMsgID, m.Seq, acked[m.ClientMsgID])
		}
		if refused[m.ClientMsgID] {
			t.Fatalf("%s was refused but stored", m.ClientMsgID)
		}
	}
}
