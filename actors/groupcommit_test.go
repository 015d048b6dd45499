package actors

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
)

// testFence holds the shards of epochs.
type testFence map[int]uint64

func (f testFence) Shards() int { return 2 }
func (f testFence) Epoch(shard int) (uint64, bool) {
	e, ok := f[shard]
	return e, ok
}

// During a fail-over a group commit can carry a conversation whose shard
// this node just lost: the fence refuses the whole statement, and the
// conversations it still owns are stored by a second call rather than
// failed with it.
func TestGroupCommitStoresWhatIsNotFenced(t *testing.T) {
	url := pgtest.SchemaURL(t)
	if _, err := postgres.MigrateURL(t.Context(), url); err != nil {
		t.Fatal(err)
	}
	shardOf := func(conv charla.ConvID, _ int) int {
		if conv == "lost" {
			return 0
		}
		return 1
	}
	opts := postgres.DefaultOptions()
	opts.URL = url
	st, err := postgres.Open(t.Context(), opts, zerolog.Nop(), postgres.WithFence(testFence{1: 7}, shardOf))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if ok, err := st.ClaimShard(t.Context(), 1, 7); !ok || err != nil {
		t.Fatalf("claim: %v %v", ok, err)
	}
	msg := func(conv charla.ConvID, id string) charla.Message {
		return charla.Message{Conv: conv, ClientMsgID: id, Sender: charla.Sender{ID: "u", Role: charla.RoleAgent}, Body: []byte(`{"text":"hi"}`)}
	}
	batch := []appendReq{
		{conv: "kept", msgs: []charla.Message{msg("kept", "00000000-0000-4000-8000-000000000001")}},
		{conv: "lost", msgs: []charla.Message{msg("lost", "00000000-0000-4000-8000-000000000002")}},
		{conv: "kept", msgs: []charla.Message{msg("kept", "00000000-0000-4000-8000-000000000003")}},
	}
	cases := []struct {
		name    string
		shardOf func(charla.ConvID) int
		stored  bool // kept's messages stored
	}{
		{"lane without placement: the batch fails whole", nil, false},
		{"cluster node's lane: the rest is stored", func(c charla.ConvID) int { return shardOf(c, 2) }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := groupCommit{st: st, maxBatch: 100, life: context.Background(), log: zerolog.Nop(), shardOf: tc.shardOf}
			for _, r := range batch {
				g.push(time.Now(), r)
			}
			b, msgs := g.cut(time.Now())
			w := g.write(b, msgs, nil, true)
			if w.took <= 0 {
				t.Errorf("the write reports it took %v (charla_group_commit_seconds)", w.took)
			}
			done := w.reply
			if !errors.Is(firstErr(done[1]), store.ErrFenced) {
				t.Fatalf("lost's reply %+v, want fenced", done[1])
			}
			for _, i := range []int{0, 2} {
				if err := firstErr(done[i]); (err == nil) != tc.stored {
					t.Errorf("kept's reply %d: %+v", i, done[i])
				}
			}
			head, err := st.Head(t.Context(), "kept")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]charla.Seq{true: 2, false: 0}[tc.stored]; head != want {
				t.Errorf("kept's head %d, want %d", head, want)
			}
		})
	}
}

func firstErr(d appendDone) error {
	if d.err != nil {
		return d.err
	}
	for _, err := range d.errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// The commit delay applies only under load: at a low rate every write
// starts at once, at a high one a write waits for the delay since the last
// one started (fewer fsyncs), a full batch never waits, and the delay ends
// with the load.
func TestGroupCommitLingersOnlyUnderLoad(t *testing.T) {
	start := time.Unix(1000, 0)
	req := func(n int) appendReq { return appendReq{conv: "c", msgs: make([]charla.Message, n)} }
	cases := []struct {
		name   string
		delay  time.Duration
		rates  []int // msg/s over consecutive rate windows, before the write
		queued int
		after  time.Duration // since the last write started
		wait   bool
	}{
		{"2,000 msg/s: at once", time.Millisecond, []int{2000, 2000}, 1, 300 * time.Microsecond, false},
		{"10,000 msg/s: waits for the delay", time.Millisecond, []int{10000, 10000}, 2, 300 * time.Microsecond, true},
		{"10,000 msg/s, the delay passed: at once", time.Millisecond, []int{10000, 10000}, 2, 1200 * time.Microsecond, false},
		{"10,000 msg/s, a full batch waiting: at once", time.Millisecond, []int{10000, 10000}, 10, 300 * time.Microsecond, false},
		{"10,000 msg/s, delay off: at once", 0, []int{10000, 10000}, 2, 300 * time.Microsecond, false},
		{"10,000 then 1,000 msg/s: at once", time.Millisecond, []int{10000, 10000, 1000, 1000}, 1, 300 * time.Microsecond, false},
		{"20,000 msg/s with a 100µs delay: at once", 100 * time.Microsecond, []int{20000, 20000}, 1, 50 * time.Microsecond, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			g := groupCommit{maxBatch: 10, delay: tc.delay}
			now := start
			for _, rate := range tc.rates {
				// One message at a time at this rate for one rate window,
				// each written as it comes.
				n := rate * int(rateWindow) / int(time.Second)
				for range n {
					g.push(now, req(1))
					g.cut(now)
					now = now.Add(rateWindow / time.Duration(n))
				}
			}
			g.push(now, req(1))
			g.cut(now) // the last write
			last := now
			for range tc.queued {
				g.push(last, req(1))
			}
			at, wait := g.linger(last.Add(tc.after))
			if wait != tc.wait || (wait && !at.Equal(last.Add(tc.delay))) {
				t.Fatalf("linger = %v after the last write, %v; want %v (delay %v)", at.Sub(last), wait, tc.wait, tc.delay)
			}
			if b, msgs := g.cut(now); len(msgs) != tc.queued || len(b) != tc.queued || g.queued != 0 {
				t.Fatalf("cut %d messages, %d left; want %d, 0", len(msgs), g.queued, tc.queued)
			}
		})
	}
}
