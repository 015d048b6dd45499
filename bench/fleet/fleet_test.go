package fleet

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"go.uber.org/goleak"

	"charla/bench/internal/fakeengine"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBodyCarriesItsSendTime(t *testing.T) {
	start := time.Now()
	f := New(Config{BodySize: 100}, start)
	at := start.Add(1234567 * time.Microsecond)
	b := f.body(at, 0)
	var v struct{ Text string }
	if err := json.Unmarshal(b, &v); err != nil || len(v.Text) != 100 {
		t.Fatalf("body %s: %v", b, err)
	}
	got, ok := Stamp(start, b)
	if !ok || !got.Equal(at) {
		t.Fatalf("stamp %v %v, want %v", got, ok, at)
	}
	if _, ok := Stamp(start, []byte(`{"text":"hello"}`)); ok {
		t.Fatal("a foreign body has no stamp")
	}
}

func TestPaceHoldsTheRate(t *testing.T) {
	e, err := fakeengine.Start(fakeengine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	f := New(Config{Addr: e.Addr}, time.Now())
	ms := []*Member{f.NewMember(0, "c"), f.NewMember(1, "c"), f.NewMember(2, "c")}
	ctx := context.Background()
	if n := f.ConnectAll(ctx, ms); n != 3 {
		t.Fatalf("connected %d: %s", n, f.Describe())
	}
	if n := f.SubscribeAll(ctx, ms); n != 3 {
		t.Fatalf("subscribed %d: %s", n, f.Describe())
	}
	f.Pace(ctx, ms, 500, time.Second, 2)
	unacked, owed := f.Drain(ctx, ms, 5*time.Second)
	f.Close(ms)
	st := f.Stats()
	sent := st.Sent
	// Never above the rate; below it only by what a starved sender skipped
	// (counted as behind) or had no time left for: on a loaded machine the
	// pacing goroutine can lose a good part of its one second.
	if sent+st.Behind > 510 || sent < 250 {
		t.Fatalf("sent %d (behind %d) in 1 s at 500/s", sent, st.Behind)
	}
	r := f.Ledger.Report()
	if unacked != 0 || owed != 0 || !r.OK() || r.Acked != sent || r.Delivered != 3*sent {
		t.Fatalf("unacked %d owed %d report %+v", unacked, owed, r)
	}
	if f.SendAck.Hist.Count() != sent || f.SendDeliver.Hist.Count() != 3*sent {
		t.Fatal("latencies not recorded for every ack and delivery")
	}
}

// In a cluster run the body also names the sender's node, and the stamp
// still parses.
func TestBodyNamesTheSendersNode(t *testing.T) {
	start := time.Now()
	f := New(Config{BodySize: 60, Addrs: []string{"a:1", "b:2", "c:3"}}, start)
	at := start.Add(42 * time.Millisecond)
	b := f.body(at, 2)
	if n, ok := SenderNode(b); !ok || n != 2 {
		t.Fatalf("sender node %d %v in %s", n, ok, b)
	}
	if got, ok := Stamp(start, b); !ok || !got.Equal(at) {
		t.Fatalf("stamp %v %v", got, ok)
	}
	if _, ok := SenderNode(New(Config{}, start).body(at, 0)); ok {
		t.Fatal("a one-node body names no node")
	}
	if m := f.NewMember(4, "c"); m.Node != 1 || m.Addr() != "b:2" {
		t.Fatalf("member 4 on node %d at %s, want 1 at b:2", m.Node, m.Addr())
	}
}
