package transport_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/store/pebble"
	"charla/transport/transporttest"
	"charla/wire"
)

// gatedStore is the embedded store whose writes wait until the gate opens:
// a store that is slow right now, which keeps sends in flight for as long
// as a test needs.
type gatedStore struct {
	store.Store
	gate chan struct{}
}

func (g *gatedStore) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Store.Append(ctx, msgs)
}

func startGated(t *testing.T, opts ...transporttest.Option) (*transporttest.Engine, *gatedStore) {
	g := &gatedStore{gate: make(chan struct{})}
	opts = append(opts, transporttest.WithStore(func(tb testing.TB) store.Store {
		o := pebble.DefaultOptions()
		o.MemTableSize, o.CacheSize = 4<<20, 8<<20
		st, err := pebble.Open(context.Background(), filepath.Join(tb.TempDir(), "charla.pebble"), o)
		if err != nil {
			tb.Fatal(err)
		}
		g.Store = st
		return g
	}))
	e := transporttest.Start(t, opts...)
	t.Cleanup(func() {
		select {
		case <-g.gate:
		default:
			close(g.gate) // let the engine's shutdown finish its writes
		}
	})
	return e, g
}

// A connection may have --max-sends-in-flight sends awaiting their answer;
// the next ones are refused rate_limited with retry_after_ms, taking
// nothing and closing nothing, and the same client_msg_ids resent once acks
// made room are stored once each.
func TestSendsInFlightAreBounded(t *testing.T) {
	for _, tc := range []struct {
		name     string
		limit    int
		sends    int
		refusals int
	}{
		{name: "under the cap", limit: 8, sends: 8, refusals: 0},
		{name: "over the cap", limit: 4, sends: 10, refusals: 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e, g := startGated(t, transporttest.WithActors(func(c *actors.Config) { c.MaxSendsInFlight = tc.limit }))
			c := e.Dial(t, "ana", charla.RoleAgent)
			ids := make([]string, tc.sends)
			for i := range ids {
				ids[i] = uuid.NewString()
				c.Send(transporttest.SendFrame("pipelined", ids[i], fmt.Sprint(i), ids[i]))
			}
			// The store holds every write: what is answered now is refused.
			var refused []string
			for len(refused) < tc.refusals {
				f := c.NextOf(wire.TypeError, transporttest.Wait)
				if f.Code != charla.CodeRateLimited || f.RetryAfter <= 0 {
					t.Fatalf("refusal %+v, want rate_limited with retry_after_ms", f)
				}
				refused = append(refused, f.Ref)
			}
			for i, ref := range refused {
				if want := ids[tc.limit+i]; ref != want {
					t.Fatalf("refusal %d answers %s, want the send past the cap %s", i, ref, want)
				}
			}
			close(g.gate)
			acked := map[string]charla.Seq{}
			for len(acked) < tc.limit && len(acked) < tc.sends {
				f := c.NextOf(wire.TypeAck, transporttest.Wait)
				acked[f.Ref] = f.Seq
			}
			for _, id := range refused { // as a client does after retry_after_ms
				c.Send(transporttest.SendFrame("pipelined", id, "again", id))
				if f := c.NextOf(wire.TypeAck, transporttest.Wait); f.Ref != id || f.Duplicate {
					t.Fatalf("resend of %s answered %+v, want its first ack", id, f)
				}
			}
			stored, err := e.Store().Range(t.Context(), "pipelined", 0, tc.sends+1)
			if err != nil {
				t.Fatal(err)
			}
			if len(stored) != tc.sends {
				t.Fatalf("%d stored, want each of the %d sends once", len(stored), tc.sends)
			}
			select {
			case <-c.Done():
				t.Fatalf("connection closed (%d)", c.CloseCode())
			default:
			}
		})
	}
}

// The flake of TestShutdownAnswersEverySend: a connection with more sends
// in flight than its outbound queue holds (here the store is slow), and the
// engine shuts down, which answers every send in flight at once. Whether
// those answers then overflow the queue (4008 slow consumer instead of
// 1012) depends on how fast the socket's writer drains it; what makes 1012
// certain is that no more than --max-sends-in-flight answers can come —
// under the queue's size — and that is what this asserts (without the cap,
// all 1,500 sends are in flight and answered together).
func TestShutdownWithASlowStoreCloses1012(t *testing.T) {
	e, g := startGated(t) // the defaults: 1024 frames of queue, 512 sends in flight
	c := e.Dial(t, "a", charla.RoleAgent)
	const n = 1500
	for i := range n {
		id := uuid.NewString()
		if err := c.SendRaw(wire.Encode(transporttest.SendFrame("slow", id, fmt.Sprint(i), id))); err != nil {
			t.Fatal(err)
		}
	}
	refused := 0
	for refused < n-actors.DefaultConfig().MaxSendsInFlight {
		if f := c.NextOf(wire.TypeError, transporttest.Wait); f.Code == charla.CodeRateLimited {
			refused++
		}
	}
	closed := make(chan struct{})
	go func() { e.Close(); close(closed) }()
	time.Sleep(100 * time.Millisecond) // the conns are shutting down, or about to: either way the answers come at once
	close(g.gate)
	acks := 0
	for done := false; !done; {
		select {
		case f := <-c.Frames():
			if f.Type == wire.TypeAck {
				acks++
			}
		case <-c.Done():
			done = true
		case <-time.After(15 * time.Second):
			t.Fatal("connection not closed")
		}
	}
	<-closed
	for len(c.Frames()) > 0 {
		if f := <-c.Frames(); f.Type == wire.TypeAck {
			acks++
		}
	}
	if code := c.CloseCode(); code != 1012 {
		t.Fatalf("close code %d after %d acks, want 1012", code, acks)
	}
	if want := actors.DefaultConfig().MaxSendsInFlight; acks != want {
		t.Fatalf("%d acks, want the %d sends in flight", acks, want)
	}
}
