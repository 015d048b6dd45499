package cluster

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"regexp"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// natsURL is the NATS server the tests run against (JetStream enabled).
func natsURL() string {
	if u := os.Getenv("CHARLA_TEST_NATS_URL"); u != "" {
		return u
	}
	return "nats://127.0.0.1:4222"
}

// connect opens a NATS connection for the test, closed at its end. Without
// a server the test is skipped, except in CI (CI=true) where it fails: a CI
// that silently skips the cluster tests would prove nothing.
func connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	unreachable := func(err error) {
		t.Helper()
		if os.Getenv("CI") == "true" {
			t.Fatalf("NATS with JetStream at %s is required in CI: %v", natsURL(), err)
		}
		t.Skipf("NATS with JetStream at %s is not reachable (%v); start it with: nats-server -js", natsURL(), err)
	}
	nc, err := nats.Connect(natsURL(), nats.Timeout(2*time.Second), nats.Name(t.Name()))
	if err != nil {
		unreachable(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		unreachable(err)
	}
	return js
}

// fenceDB is the fake system of record: like PostgreSQL's shard_epochs
// (UPDATE ... SET epoch=$r WHERE shard=$s AND epoch<$r), it accepts a claim
// only with an epoch greater than every one before, and it remembers every
// accepted claim so that tests can check that epochs only grew.
type fenceDB struct {
	mu      sync.Mutex
	epochs  map[int]uint64
	history map[int][]uint64
	refused int
}

func newFenceDB() *fenceDB {
	return &fenceDB{epochs: map[int]uint64{}, history: map[int][]uint64{}}
}

func (f *fenceDB) ClaimShard(ctx context.Context, shard int, epoch uint64) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if epoch <= f.epochs[shard] {
		f.refused++
		return false, nil
	}
	f.epochs[shard] = epoch
	f.history[shard] = append(f.history[shard], epoch)
	return true, nil
}

// commit is what the store does at every commit: accepted only with the
// shard's current epoch.
func (f *fenceDB) commit(shard int, epoch uint64) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.epochs[shard] == epoch
}

// checkMonotonic fails t unless every shard's accepted epochs strictly grew.
func (f *fenceDB) checkMonotonic(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for s, h := range f.history {
		for i := 1; i < len(h); i++ {
			if h[i] <= h[i-1] {
				t.Errorf("shard %d: the store accepted epoch %d after %d", s, h[i], h[i-1])
			}
		}
	}
}

// changeLog records a node's Changes and checks, as they come, that each one
// is a change (never the same owner twice in a row for a shard).
type changeLog struct {
	t    *testing.T
	mu   sync.Mutex
	all  []Change
	last map[int]Change
}

func (c *changeLog) record(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if prev, ok := c.last[ch.Shard]; ok && prev == ch {
		c.t.Errorf("change reported twice in a row: %+v", ch)
	}
	if ch.Mine && ch.Owner == "" {
		c.t.Errorf("change is mine without an owner: %+v", ch)
	}
	c.last[ch.Shard] = ch
	c.all = append(c.all, ch)
}

// of is the changes of shard, in order.
func (c *changeLog) of(shard int) []Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Change
	for _, ch := range c.all {
		if ch.Shard == shard {
			out = append(out, ch)
		}
	}
	return out
}

// lastOf is the last change of shard (ok false: none yet).
func (c *changeLog) lastOf(shard int) (Change, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.last[shard]
	return ch, ok
}

// cluster is one test's buckets and store, shared by its nodes.
type cluster struct {
	t     *testing.T
	admin jetstream.JetStream
	cfg   Config // NodeID left empty
	db    *fenceDB
	// claim, when set, is what nodes claim through instead of db.
	claim Claimer
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9_-]+`)

// newCluster makes buckets named after the test plus a random suffix, so
// that tests never see one another's keys, and deletes them at the end.
func newCluster(t *testing.T, shards int, ttl time.Duration) *cluster {
	t.Helper()
	admin := connect(t)
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if len(name) > 40 {
		name = name[:40]
	}
	suffix := fmt.Sprintf("%08x", rand.Uint32())
	c := &cluster{
		t:     t,
		admin: admin,
		cfg: Config{
			Shards:      shards,
			LeaseTTL:    ttl,
			Bucket:      "t_" + name + "_leases_" + suffix,
			NodesBucket: "t_" + name + "_nodes_" + suffix,
		},
		db: newFenceDB(),
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, b := range []string{c.cfg.Bucket, c.cfg.NodesBucket} {
			if err := admin.DeleteKeyValue(ctx, b); err != nil && !errorsIsNotFound(err) {
				t.Errorf("delete bucket %s: %v", b, err)
			}
		}
	})
	return c
}

func errorsIsNotFound(err error) bool {
	return errors.Is(err, jetstream.ErrBucketNotFound) || errors.Is(err, jetstream.ErrStreamNotFound)
}

// node is one node of a test cluster, with its own NATS connection.
type node struct {
	*Leases
	id      string
	js      jetstream.JetStream
	changes *changeLog
	// closeFails is set by tests whose node cannot leave cleanly (cut from
	// NATS): the cleanup's Close then only logs its error.
	closeFails atomic.Bool
}

func (c *cluster) config(id string) Config {
	cfg := c.cfg
	cfg.NodeID = id
	return cfg
}

// start starts a node, closed at the end of the test.
func (c *cluster) start(id string) *node {
	c.t.Helper()
	n, err := c.tryStart(connect(c.t), id, c.config(id))
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	return n
}

// tryStart starts a node on js; it may run on another goroutine than the
// test's (connect may not).
func (c *cluster) tryStart(js jetstream.JetStream, id string, cfg Config) (*node, error) {
	changes := &changeLog{t: c.t, last: map[int]Change{}}
	log := zerolog.New(zerolog.NewTestWriter(c.t)).Level(zerolog.InfoLevel).With().Timestamp().Logger()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var claim Claimer = c.db
	if c.claim != nil {
		claim = c.claim
	}
	l, err := Start(ctx, js, cfg, claim, changes.record, log)
	if err != nil {
		return nil, err
	}
	n := &node{Leases: l, id: id, js: js, changes: changes}
	c.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			if n.closeFails.Load() {
				c.t.Logf("close %s (expected to fail): %v", id, err)
			} else {
				c.t.Errorf("close %s: %v", id, err)
			}
		}
	})
	return n, nil
}

// held is the shards n holds now, with their epochs.
func (n *node) held() map[int]uint64 {
	out := map[int]uint64{}
	for s := 0; s < n.cfg.Shards; s++ {
		if e, ok := n.Epoch(s); ok {
			out[s] = e
		}
	}
	return out
}

func sortedShards(m map[int]uint64) []int {
	out := make([]int, 0, len(m))
	for s := range m {
		out = append(out, s)
	}
	sort.Ints(out)
	return out
}

// eventually polls cond every few milliseconds until it holds, and fails
// the test after timeout. Timeouts are generous: the suite must pass on a
// loaded two-core machine.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// exclusive polls every node's Epoch every few milliseconds until stop is
// closed, and reports the first instant at which two nodes held one shard.
// It returns a function that stops it and returns how many polls it made.
func exclusive(t *testing.T, nodes ...*node) (stop func() int) {
	done := make(chan struct{})
	polls := make(chan int, 1)
	go func() {
		n := 0
		defer func() { polls <- n }()
		shards := nodes[0].cfg.Shards
		for {
			select {
			case <-done:
				return
			default:
			}
			for s := 0; s < shards; s++ {
				var holders []string
				for _, nd := range nodes {
					if _, ok := nd.Epoch(s); ok {
						holders = append(holders, nd.id)
					}
				}
				if len(holders) > 1 {
					t.Errorf("shard %d held by %v at once", s, holders)
					return
				}
			}
			n++
			time.Sleep(2 * time.Millisecond)
		}
	}()
	var once sync.Once
	var n int
	return func() int {
		once.Do(func() {
			close(done)
			n = <-polls
		})
		return n
	}
}
