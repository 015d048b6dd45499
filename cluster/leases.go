package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/xid"
	"github.com/rs/zerolog"

	"charla"
)

// Claimer records a new epoch of a shard in the system of record before the
// node serves it (PostgreSQL's fence: UPDATE shard_epochs SET epoch=$r WHERE
// shard=$s AND epoch<$r). ok=false means a newer epoch exists there: the node
// must not serve the shard.
//
// The lease alone cannot stop a node that was paused past its TTL from
// writing once it wakes up; the fence can, because every commit checks the
// epoch and the claim raised it before the new owner served anything.
type Claimer interface {
	ClaimShard(ctx context.Context, shard int, epoch uint64) (ok bool, err error)
}

// An Unclaimer is a Claimer told when a claim it granted is not served
// after all (it ended past the lease's fence), so that it can undo what it
// did for the shard beyond the store's epoch (an adopted spool).
type Unclaimer interface {
	Unclaim(shard int)
}

// Change is reported once per shard whose owner (as this node sees it)
// changed, including this node gaining or losing it. Owner is "" when no
// owner is known (free, expired, or being handed over); Mine is true when
// this node now serves the shard.
type Change struct {
	Shard int
	Owner string
	Mine  bool
}

// Key names in the buckets.
const (
	shardKeyPrefix = "shard."
	nodeKeyPrefix  = "node."
	metaShardsKey  = "meta.shards"
)

func shardKey(shard int) string { return shardKeyPrefix + strconv.Itoa(shard) }

// leaseValue is the value of a lease key and of a node key.
type leaseValue struct {
	Node string `json:"node"`
	// Inc is the holder's incarnation: a node restarted under the same id
	// is another holder, whose conversations know nothing of the old
	// one's subscribers, so its take must be reported as a change even
	// when a watch that lagged never saw the lease in between.
	Inc string `json:"inc,omitempty"`
}

// Leases holds this node's shard leases and watches everyone else's.
//
// One goroutine (the manager) owns all mutable state and does every NATS
// call, every claim and every onChange call, so that changes are reported in
// order and no lock is ever held while calling out. Readers (Owner, Epoch,
// Nodes) load an immutable snapshot through an atomic pointer and judge the
// time-dependent parts (expiry, self-fencing) against the clock at the call,
// so that a node whose manager is stuck or dead still stops claiming its
// shards on time.
type Leases struct {
	cfg      Config
	claim    Claimer
	onChange func(Change)
	log      zerolog.Logger
	leases   jetstream.KeyValue
	nodes    jetstream.KeyValue
	value    []byte // this node's leaseValue, encoded
	inc      string // this process's incarnation (leaseValue.Inc)
	first    int    // the shard this node tries first (spreads simultaneous starters)

	// base is the origin of this node's monotonic clock (now): every time
	// here is a duration since base, so wall-clock jumps never matter.
	base time.Time

	view atomic.Pointer[view]
	// lost[s] is the highest epoch of shard s that the store refused (Lost)
	// while this node held it; Epoch checks it directly so that Lost takes
	// effect before the manager gets to it.
	lost []atomic.Uint64
	kick chan struct{} // wakes the manager after Lost; capacity 1

	// ctx is the manager's lifetime: cancelled by Close when its context ends
	// before the graceful leave is done, and by crash in tests.
	ctx    context.Context
	cancel context.CancelFunc
	leave  chan context.Context // Close → manager; capacity 1
	once   sync.Once
	done   chan struct{} // closed when the manager has returned
	// closeErr is what the graceful leave failed at; written before done
	// is closed, read after.
	closeErr error

	// Owned by the manager goroutine (and by Start before it begins).
	shards   []shard
	nodeSeen map[string]time.Duration // other nodes' keys → when we saw them
	dirty    bool                     // the snapshot is behind the state
	leaseW   jetstream.KeyWatcher
	nodeW    jetstream.KeyWatcher
}

// shard is the manager's state of one shard.
type shard struct {
	// The key as last seen in the bucket (watch, or this node's own CAS).
	exists bool          // its last entry is a value, not absent/deleted/purged
	owner  string        // the value's node ("" if absent or unreadable)
	inc    string        // the value's incarnation of that node
	rev    uint64        // revision of its last entry (0: never seen)
	seenAt time.Duration // when we saw rev (our Start for keys found present)

	// The lease as held by this node.
	held      bool          // claimed and served
	releasing bool          // handed over: not served, still renewed until deleted
	releaseAt time.Duration // when a releasing shard's key is deleted
	epoch     uint64        // the revision claimed in the store: the fence's epoch
	curRev    uint64        // revision of our last successful CAS: the next CAS expects it
	fenceAt   time.Duration // served only before this: last CAS's send + 2*TTL/3
	retryAt   time.Duration // do not try to take it before (after a failed claim)

	// What onChange was last told.
	repOwner string
	repInc   string
	repMine  bool
}

// view is an immutable snapshot of the state for the readers.
type view struct {
	shards []shardView
	nodes  []nodeView
	closed bool
}

type shardView struct {
	owner   string
	seenAt  time.Duration
	epoch   uint64 // 0: not held by this node
	fenceAt time.Duration
}

type nodeView struct {
	id     string
	seenAt time.Duration
}

// Start joins the cluster: it creates or binds both buckets, checks the shard
// count against the one stored in the bucket, loads the current leases,
// registers this node and starts the manager, which takes this node's share
// of the shards from the first tick (LeaseTTL/3) on, so that nodes started
// together see one another before they take anything.
//
// ctx bounds the start-up only; the leases live until Close. claim is called
// for every shard won before it is served; onChange (may be nil) is called
// from the manager goroutine, in order per shard, and must not block for
// long.
func Start(ctx context.Context, js jetstream.JetStream, cfg Config, claim Claimer, onChange func(Change), log zerolog.Logger) (*Leases, error) {
	cfg = cfg.withDefaults()
	var errs []error
	if js == nil {
		errs = append(errs, errors.New("cluster: a JetStream context is required"))
	}
	if claim == nil {
		errs = append(errs, errors.New("cluster: a Claimer is required"))
	}
	if err := cfg.validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if onChange == nil {
		onChange = func(Change) {}
	}
	inc := xid.New().String()
	value, err := json.Marshal(leaseValue{Node: cfg.NodeID, Inc: inc})
	if err != nil {
		return nil, err
	}

	leases, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.Bucket,
		Description: "charla shard leases (docs/CLUSTER.md)",
		History:     1,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: leases bucket %q: %w", cfg.Bucket, err)
	}
	// The nodes bucket expires its keys after a TTL: a node that stops
	// renewing disappears from it even if nobody watched it go.
	nodes, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      cfg.NodesBucket,
		Description: "charla live nodes (docs/CLUSTER.md)",
		History:     1,
		TTL:         cfg.LeaseTTL,
		Storage:     jetstream.FileStorage,
		Replicas:    cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: nodes bucket %q: %w", cfg.NodesBucket, err)
	}
	if err := checkShards(ctx, leases, cfg); err != nil {
		return nil, err
	}

	lctx, cancel := context.WithCancel(context.Background())
	l := &Leases{
		cfg:      cfg,
		claim:    claim,
		onChange: onChange,
		log:      log.With().Str("component", "cluster").Str("node", cfg.NodeID).Logger(),
		leases:   leases,
		nodes:    nodes,
		value:    value,
		inc:      inc,
		first:    ShardOf(charla.ConvID(cfg.NodeID), cfg.Shards),
		base:     time.Now(),
		lost:     make([]atomic.Uint64, cfg.Shards),
		kick:     make(chan struct{}, 1),
		ctx:      lctx,
		cancel:   cancel,
		leave:    make(chan context.Context, 1),
		done:     make(chan struct{}),
		shards:   make([]shard, cfg.Shards),
		nodeSeen: make(map[string]time.Duration),
	}
	if err := l.load(ctx); err != nil {
		l.stopWatchers()
		cancel()
		return nil, err
	}
	// Register this node: the others count it from now on (their share of
	// the shards shrinks); the manager renews the key every tick.
	if _, err := nodes.Put(ctx, nodeKeyPrefix+cfg.NodeID, value); err != nil {
		l.stopWatchers()
		cancel()
		return nil, fmt.Errorf("cluster: register node %q: %w", cfg.NodeID, err)
	}
	l.publish()
	l.log.Info().Int("shards", cfg.Shards).Dur("lease_ttl", cfg.LeaseTTL).
		Int("live_nodes", len(l.liveNodes(l.now()))).Msg("cluster: joined")
	go l.run()
	return l, nil
}

// checkShards stores the shard count in the leases bucket on first use and
// refuses any other count afterwards: conversations would move to other
// shards, and two owners of one conversation could write at once.
func checkShards(ctx context.Context, kv jetstream.KeyValue, cfg Config) error {
	want := strconv.Itoa(cfg.Shards)
	_, err := kv.Create(ctx, metaShardsKey, []byte(want))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrKeyExists) {
		return fmt.Errorf("cluster: store shard count in bucket %q: %w", cfg.Bucket, err)
	}
	e, err := kv.Get(ctx, metaShardsKey)
	if err != nil {
		return fmt.Errorf("cluster: read shard count of bucket %q: %w", cfg.Bucket, err)
	}
	if got := string(e.Value()); got != want {
		return fmt.Errorf("cluster: bucket %q is for %s shards but this node is configured with %d: "+
			"the shard count is fixed for the life of a cluster (changing it is a stop-the-world migration)",
			cfg.Bucket, got, cfg.Shards)
	}
	return nil
}

// load starts both watchers and applies their initial values. Keys found
// present count as seen now: expiry is judged from what this node saw, never
// from a timestamp written by another machine.
func (l *Leases) load(ctx context.Context) error {
	var err error
	// The watchers live as long as the manager (l.ctx), not as Start's ctx.
	if l.leaseW, err = l.leases.Watch(l.ctx, shardKeyPrefix+"*"); err != nil {
		return fmt.Errorf("cluster: watch bucket %q: %w", l.cfg.Bucket, err)
	}
	if l.nodeW, err = l.nodes.WatchAll(l.ctx); err != nil {
		return fmt.Errorf("cluster: watch bucket %q: %w", l.cfg.NodesBucket, err)
	}
	for _, w := range []struct {
		w      jetstream.KeyWatcher
		apply  func(jetstream.KeyValueEntry)
		bucket string
	}{{l.leaseW, l.onLease, l.cfg.Bucket}, {l.nodeW, l.onNode, l.cfg.NodesBucket}} {
		for loaded := false; !loaded; {
			select {
			case e, ok := <-w.w.Updates():
				if !ok {
					return fmt.Errorf("cluster: watch of bucket %q ended during start", w.bucket)
				}
				if e == nil { // the end of the initial values
					loaded = true
				} else {
					w.apply(e)
				}
			case <-ctx.Done():
				return fmt.Errorf("cluster: load bucket %q: %w", w.bucket, ctx.Err())
			}
		}
	}
	return nil
}

// now is this node's monotonic clock.
func (l *Leases) now() time.Duration { return time.Since(l.base) }

// Owner is the current owner of shard as last seen in the bucket; ok=false
// when there is none, its lease expired (no renewal seen for a full TTL), or
// the key names this node but this node does not hold the shard (Epoch).
func (l *Leases) Owner(shard int) (node string, ok bool) {
	v := l.view.Load()
	if shard < 0 || shard >= len(v.shards) {
		return "", false
	}
	return l.ownerOf(&v.shards[shard], shard, l.now())
}

// Epoch is this node's epoch of shard (the revision it claimed in the store
// when it took the shard; renewals do not change it, so the store's fence is
// written once per take, not once per renewal). ok only while this node holds
// the shard: claimed, not lost, and its last successful CAS on the key sent
// less than 2*TTL/3 ago. The last condition is judged here, at the call, so
// that a node cut from NATS or paused stops serving before any other node can
// take the shard, even if it was never told.
func (l *Leases) Epoch(shard int) (epoch uint64, ok bool) {
	v := l.view.Load()
	if shard < 0 || shard >= len(v.shards) {
		return 0, false
	}
	sv := &v.shards[shard]
	if !l.holds(sv, shard, l.now()) {
		return 0, false
	}
	return sv.epoch, true
}

// Lost tells the leases that the store refused a commit of shard with epoch
// (fenced): another node has claimed a newer epoch. If this node still holds
// the shard with that epoch, Epoch says so no more from the moment Lost
// returns, and the manager drops the shard (stops renewing it) and reports
// the Change. Any other epoch (a stale one: the shard was retaken since)
// changes nothing.
func (l *Leases) Lost(shard int, epoch uint64) {
	v := l.view.Load()
	if shard < 0 || shard >= len(v.shards) || epoch == 0 || v.shards[shard].epoch != epoch {
		return
	}
	// Keep the highest epoch lost: a late Lost of an older epoch must not
	// hide a newer one. Epochs of a shard only grow, so every held epoch up
	// to it is dead.
	for {
		old := l.lost[shard].Load()
		if epoch <= old || l.lost[shard].CompareAndSwap(old, epoch) {
			break
		}
	}
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// Nodes are the live nodes' ids, sorted: those whose key in the nodes bucket
// this node saw written less than a TTL ago, and this node until Close.
func (l *Leases) Nodes() []string {
	v := l.view.Load()
	if v.closed {
		return nil
	}
	now := l.now()
	out := []string{l.cfg.NodeID}
	for _, n := range v.nodes {
		if now-n.seenAt < l.cfg.LeaseTTL {
			out = append(out, n.id)
		}
	}
	sort.Strings(out)
	return out
}

// Close leaves the cluster gracefully: it stops taking shards, reports every
// held shard as no longer this node's, deletes their keys (so that other
// nodes take them at once instead of after a TTL), deletes this node's key
// and stops the goroutines. The engine should have stopped writing its
// shards first if it wants no fenced commit; the fence keeps it safe either
// way. If ctx ends first, Close stops at once and returns ctx's error (the
// remaining leases then expire after a TTL). Calling it again returns the
// first call's result.
func (l *Leases) Close(ctx context.Context) error {
	l.once.Do(func() { l.leave <- ctx })
	select {
	case <-l.done: // already stopped (a second Close): no race with ctx below
		return l.closeErr
	default:
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		l.cancel()
		<-l.done
		if l.closeErr == nil {
			return ctx.Err()
		}
	}
	return l.closeErr
}

// halt stops the manager without leaving: nothing is deleted, so to the
// other nodes this node looks dead (used by tests to simulate a crash).
func (l *Leases) halt() {
	l.cancel()
	<-l.done
}

// holds reports whether this node serves shard according to sv, at now.
func (l *Leases) holds(sv *shardView, shard int, now time.Duration) bool {
	return sv.epoch != 0 && now < sv.fenceAt && sv.epoch > l.lost[shard].Load()
}

// ownerOf is Owner's answer from sv, at now; the manager reports Changes
// from the same function, so that what it reports is what Owner says.
func (l *Leases) ownerOf(sv *shardView, shard int, now time.Duration) (string, bool) {
	if l.holds(sv, shard, now) {
		return l.cfg.NodeID, true
	}
	if sv.owner == "" || sv.owner == l.cfg.NodeID || now-sv.seenAt >= l.cfg.LeaseTTL {
		return "", false
	}
	return sv.owner, true
}

// shardView is the readers' view of s.
func (s *shard) view() shardView {
	sv := shardView{seenAt: s.seenAt}
	if s.exists {
		sv.owner = s.owner
	}
	if s.held {
		sv.epoch, sv.fenceAt = s.epoch, s.fenceAt
	}
	return sv
}

// publish stores a new snapshot of the state for the readers.
func (l *Leases) publish() {
	v := &view{shards: make([]shardView, len(l.shards)), nodes: make([]nodeView, 0, len(l.nodeSeen))}
	for i := range l.shards {
		v.shards[i] = l.shards[i].view()
	}
	for id, at := range l.nodeSeen {
		v.nodes = append(v.nodes, nodeView{id: id, seenAt: at})
	}
	l.view.Store(v)
	l.dirty = false
}

// run is the manager: it applies the watches, renews and takes every tick
// (TTL/3), and re-judges the time-dependent state (self-fencing, expiry,
// hand-over grace) several times per tick, so that a Change follows the
// moment Owner or Epoch changed their answer closely.
func (l *Leases) run() {
	defer close(l.done)
	// The manager's end ends everything tied to its context: nats.go keeps
	// a goroutine per watcher until that context is done when the
	// connection closed under the watcher.
	defer l.cancel()
	tick := time.NewTicker(l.cfg.tick())
	defer tick.Stop()
	sweep := time.NewTicker(max(l.cfg.LeaseTTL/12, 5*time.Millisecond))
	defer sweep.Stop()
	leaseUpd, nodeUpd := l.leaseW.Updates(), l.nodeW.Updates()
	for {
		select {
		case <-l.ctx.Done():
			l.stopWatchers()
			return
		case ctx := <-l.leave:
			if l.ctx.Err() != nil { // halted: leave nothing
				l.stopWatchers()
				return
			}
			l.closeErr = l.leaveCluster(ctx)
			return
		case e, ok := <-leaseUpd:
			if !ok {
				l.log.Warn().Str("bucket", l.cfg.Bucket).Msg("cluster: lease watch ended; other nodes' leases will look expired")
				leaseUpd = nil
				break
			}
			l.apply(e, leaseUpd, l.onLease)
		case e, ok := <-nodeUpd:
			if !ok {
				l.log.Warn().Str("bucket", l.cfg.NodesBucket).Msg("cluster: node watch ended")
				nodeUpd = nil
				break
			}
			l.apply(e, nodeUpd, l.onNode)
		case <-l.kick:
		case <-tick.C:
			l.round()
		case <-sweep.C:
		}
		l.maintain()
		if l.dirty {
			l.publish()
		}
		l.report()
	}
}

// apply applies e and whatever else is already waiting on its channel, so
// that a burst of renewals by other nodes costs one snapshot, not one each.
func (l *Leases) apply(e jetstream.KeyValueEntry, ch <-chan jetstream.KeyValueEntry, f func(jetstream.KeyValueEntry)) {
	for i := 0; ; i++ {
		if e != nil {
			f(e)
		}
		if i == 256 {
			return
		}
		select {
		case next, ok := <-ch:
			if !ok {
				return // seen closed by run's next receive
			}
			e = next
		default:
			return
		}
	}
}

// onLease applies a watched entry of the leases bucket.
func (l *Leases) onLease(e jetstream.KeyValueEntry) {
	n, err := strconv.Atoi(strings.TrimPrefix(e.Key(), shardKeyPrefix))
	if err != nil || n < 0 || n >= len(l.shards) {
		return
	}
	s := &l.shards[n]
	if e.Revision() <= s.rev { // our own CAS, already applied, or older
		return
	}
	s.rev, s.seenAt, s.exists, s.owner, s.inc = e.Revision(), l.now(), false, "", ""
	if e.Operation() == jetstream.KeyValuePut {
		s.exists = true
		var v leaseValue
		if json.Unmarshal(e.Value(), &v) == nil {
			s.owner, s.inc = v.Node, v.Inc
		}
	}
	l.dirty = true
	if (s.held || s.releasing) && s.rev > s.curRev {
		// Someone wrote the key after our last CAS: the lease is not ours.
		l.drop(n, "the lease key moved", s.owner)
	}
}

// onNode applies a watched entry of the nodes bucket.
func (l *Leases) onNode(e jetstream.KeyValueEntry) {
	id, ok := strings.CutPrefix(e.Key(), nodeKeyPrefix)
	if !ok || id == l.cfg.NodeID {
		return
	}
	if e.Operation() == jetstream.KeyValuePut {
		l.nodeSeen[id] = l.now()
	} else {
		delete(l.nodeSeen, id)
	}
	l.dirty = true
}

// liveNodes counts the nodes seen alive, this node included, and forgets
// the others.
func (l *Leases) liveNodes(now time.Duration) []string {
	live := []string{l.cfg.NodeID}
	for id, at := range l.nodeSeen {
		if now-at < l.cfg.LeaseTTL {
			live = append(live, id)
		} else {
			delete(l.nodeSeen, id)
			l.dirty = true
		}
	}
	return live
}

// share is the number of shards this node aims at: ceil(shards / live nodes).
// A wrong count of live nodes only unbalances load; the CAS and the fence
// decide ownership.
func (l *Leases) share(now time.Duration) int {
	n := len(l.liveNodes(now))
	return (l.cfg.Shards + n - 1) / n
}

// maintain re-judges the time-dependent state: held shards past their fence
// or lost in the store are dropped, and handed-over shards whose grace is
// over are deleted.
func (l *Leases) maintain() {
	now := l.now()
	for i := range l.shards {
		s := &l.shards[i]
		switch {
		case s.held && s.epoch <= l.lost[i].Load():
			l.drop(i, "the store fenced the epoch (another node claimed a newer one)", "")
		case s.held && now >= s.fenceAt:
			l.drop(i, "no successful renewal for 2*TTL/3 (self-fenced)", "")
		case s.releasing && now >= s.releaseAt:
			l.finishRelease(i)
		}
	}
}

// drop stops serving and renewing shard i. The key is left as it is: the
// reason may be that NATS is unreachable, and other nodes take the lease
// after a TTL anyway.
func (l *Leases) drop(i int, why, by string) {
	s := &l.shards[i]
	l.log.Info().Int("shard", i).Uint64("epoch", s.epoch).Str("by", by).Str("reason", why).Msg("cluster: shard lost")
	s.held, s.releasing, s.epoch = false, false, 0
	l.dirty = true
}

// round is one tick: renew this node's key and held leases, then hand a
// shard over if above share, or take shards if below it.
func (l *Leases) round() {
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.tick())
	defer cancel()
	l.renew(ctx)
	// Judge fences after the renewals, so that a shard whose renewal just
	// failed for good is not counted as held.
	l.maintain()

	now := l.now()
	share := l.share(now)
	held := 0
	for i := range l.shards {
		if l.shards[i].held {
			held++
		}
	}
	switch {
	case held > share:
		l.startRelease(now)
	case held < share:
		l.take(ctx, share-held)
	}
}

// renew CASes every held or releasing lease with its current revision, and
// puts this node's key. The writes run concurrently, so that a round costs
// one NATS round trip rather than one per shard: with a slow NATS (a
// replicated bucket, a loaded server) sequential renewals of 64 shards could
// outlast the tick and let fences pass.
//
// A success moves the fence forward, from the send, not the answer: the
// others measure their TTL from when they saw the write land, which is
// later. A revision mismatch means another node took the lease: it is
// dropped at once. Any other error leaves the shard held until its fence
// passes, as the next tick may succeed. (An error whose write did land, a
// timeout, makes the next renewal mismatch and drops the shard: a needless
// hand-over, never two writers.)
func (l *Leases) renew(ctx context.Context) {
	type result struct {
		shard int
		rev   uint64
		err   error
	}
	var results []result
	for i := range l.shards {
		if s := &l.shards[i]; s.held || s.releasing {
			results = append(results, result{shard: i, rev: s.curRev})
		}
	}
	var wg sync.WaitGroup
	var nodeErr error
	sent := l.now()
	wg.Go(func() {
		_, nodeErr = l.nodes.Put(ctx, nodeKeyPrefix+l.cfg.NodeID, l.value)
	})
	for k := range results {
		r := &results[k] // each goroutine writes its own element only
		wg.Go(func() {
			r.rev, r.err = l.leases.Update(ctx, shardKey(r.shard), l.value, r.rev)
		})
	}
	wg.Wait()

	if nodeErr != nil {
		l.log.Warn().Err(nodeErr).Msg("cluster: renew node key")
	}
	for _, r := range results {
		s := &l.shards[r.shard]
		switch {
		case r.err == nil:
			l.noteOwnWrite(r.shard, r.rev)
			if s.held {
				s.fenceAt = sent + l.cfg.fence()
			}
			l.dirty = true
		case isConflict(r.err):
			l.drop(r.shard, "renewal refused: the lease key moved", "")
		default:
			l.log.Warn().Err(r.err).Int("shard", r.shard).Msg("cluster: renew lease")
		}
	}
}

// noteOwnWrite records this node's successful CAS of shard i at rev.
func (l *Leases) noteOwnWrite(i int, rev uint64) {
	s := &l.shards[i]
	s.curRev = rev
	if rev > s.rev {
		s.rev, s.seenAt, s.exists, s.owner, s.inc = rev, l.now(), true, l.cfg.NodeID, l.inc
	}
}

// take tries to take up to want shards, starting at this node's first shard
// so that nodes starting together do not all fight for the same ones: free
// keys with Create, keys nobody renewed for a full TTL (as we watched them)
// with a CAS on the revision we saw. Of two nodes racing, one CAS wins; the
// loser moves on to the next shard.
func (l *Leases) take(ctx context.Context, want int) {
	now := l.now()
	for k := 0; k < len(l.shards) && want > 0 && ctx.Err() == nil; k++ {
		i := (l.first + k) % len(l.shards)
		s := &l.shards[i]
		if s.held || s.releasing || now < s.retryAt {
			continue
		}
		var (
			rev  uint64
			err  error
			sent = l.now()
		)
		switch {
		case !s.exists:
			// Create also takes a key whose last entry is a delete marker
			// (nats.go CASes on the marker's revision).
			rev, err = l.leases.Create(ctx, shardKey(i), l.value)
		case now-s.seenAt >= l.cfg.LeaseTTL:
			rev, err = l.leases.Update(ctx, shardKey(i), l.value, s.rev)
		default:
			continue
		}
		if err != nil {
			if isConflict(err) {
				l.log.Debug().Int("shard", i).Msg("cluster: another node took the shard first")
				l.refresh(ctx, i)
			} else {
				l.log.Warn().Err(err).Int("shard", i).Msg("cluster: take lease")
			}
			continue
		}
		l.noteOwnWrite(i, rev)
		l.dirty = true
		if l.claimShard(i, rev, sent) {
			want--
		}
	}
}

// refresh reads shard i's key itself after a CAS on it failed. The watch
// may be behind: after NATS restarts, nats.go takes many seconds to
// recreate a watcher, and until then every take would CAS on a stale
// revision and fail. What is read counts as seen now, so the expiry clock
// restarts: a lease renewed meanwhile is not taken.
func (l *Leases) refresh(ctx context.Context, i int) {
	e, err := l.leases.Get(ctx, shardKey(i))
	switch {
	case err == nil:
		l.onLease(e)
	case errors.Is(err, jetstream.ErrKeyNotFound), errors.Is(err, jetstream.ErrKeyDeleted):
		s := &l.shards[i]
		s.exists, s.owner, s.seenAt = false, "", l.now()
		l.dirty = true
	default:
		l.log.Warn().Err(err).Int("shard", i).Msg("cluster: read lease")
	}
}

// claimShard records epoch rev of shard i in the store (the fence) and, if
// the store agrees in time, holds the shard. Otherwise the node must not
// serve it: the key is deleted if still ours, so that another node can try,
// and this node leaves the shard alone for a TTL.
func (l *Leases) claimShard(i int, rev uint64, sent time.Duration) bool {
	s := &l.shards[i]
	fenceAt := sent + l.cfg.fence()
	ctx, cancel := context.WithTimeout(l.ctx, fenceAt-l.now())
	ok, err := l.claim.ClaimShard(ctx, i, rev)
	cancel()
	var why string
	switch {
	case err != nil:
		why = "claim failed: " + err.Error()
	case !ok:
		why = "the store has a newer epoch (was the leases bucket recreated?)"
	case l.now() >= fenceAt:
		why = "the claim took longer than the lease's fence"
	default:
		s.held, s.epoch, s.curRev, s.fenceAt = true, rev, rev, fenceAt
		l.dirty = true
		l.log.Info().Int("shard", i).Uint64("epoch", rev).Msg("cluster: shard taken")
		return true
	}
	l.log.Warn().Int("shard", i).Uint64("epoch", rev).Str("reason", why).Msg("cluster: shard not served")
	if u, isU := l.claim.(Unclaimer); isU && err == nil && ok {
		u.Unclaim(i)
	}
	s.retryAt = l.now() + l.cfg.LeaseTTL
	dctx, dcancel := context.WithTimeout(l.ctx, l.cfg.tick())
	defer dcancel()
	if err := l.leases.Delete(dctx, shardKey(i), jetstream.LastRevision(rev)); err != nil && !isConflict(err) {
		l.log.Warn().Err(err).Int("shard", i).Msg("cluster: delete unserved lease")
	}
	return false
}

// startRelease hands one shard over when this node holds more than its
// share (a node joined): the shard is reported as no longer ours at once, so
// that the engine stops taking requests for it and finishes its batch in
// flight during a grace of one tick; the key, still renewed meanwhile, is
// then deleted so that a node below its share Creates it at once. One shard
// per tick keeps the hand-over gentle; a node that joins takes its share
// over a few ticks, never through two writers (the CAS and the fence).
//
// The shard released is the last in this node's order of preference, so
// that each node keeps the shards it would take first and the placement
// settles.
func (l *Leases) startRelease(now time.Duration) {
	for k := len(l.shards) - 1; k >= 0; k-- {
		i := (l.first + k) % len(l.shards)
		s := &l.shards[i]
		if !s.held {
			continue
		}
		l.log.Info().Int("shard", i).Uint64("epoch", s.epoch).Msg("cluster: releasing shard (above share)")
		s.held, s.releasing, s.releaseAt, s.epoch = false, true, now+l.cfg.tick(), 0
		l.dirty = true
		return
	}
}

// finishRelease deletes the key of a released shard, on the revision of our
// last renewal: if someone took it meanwhile, the delete fails and there is
// nothing to do.
func (l *Leases) finishRelease(i int) {
	s := &l.shards[i]
	ctx, cancel := context.WithTimeout(l.ctx, l.cfg.tick())
	defer cancel()
	err := l.leases.Delete(ctx, shardKey(i), jetstream.LastRevision(s.curRev))
	switch {
	case err == nil:
		l.log.Info().Int("shard", i).Msg("cluster: shard released")
	case isConflict(err):
		l.log.Info().Int("shard", i).Msg("cluster: released shard was taken meanwhile")
	default:
		l.log.Warn().Err(err).Int("shard", i).Msg("cluster: delete released lease; retrying next tick")
		s.releaseAt = l.now() + l.cfg.tick()
		return
	}
	s.releasing = false
	l.dirty = true
}

// report calls onChange for every shard whose owner, as Owner says now,
// differs from what was last reported.
func (l *Leases) report() {
	now := l.now()
	for i := range l.shards {
		s := &l.shards[i]
		sv := s.view()
		owner, _ := l.ownerOf(&sv, i, now)
		mine := owner == l.cfg.NodeID
		inc := ""
		if owner != "" {
			inc = s.inc
		}
		if owner == s.repOwner && inc == s.repInc && mine == s.repMine {
			continue
		}
		s.repOwner, s.repInc, s.repMine = owner, inc, mine
		l.onChange(Change{Shard: i, Owner: owner, Mine: mine})
	}
}

// leaveCluster is Close's work, in the manager: no more takes (the manager
// does nothing else from here), every held or releasing shard reported as
// not ours and its key deleted on our revision, this node's key deleted.
func (l *Leases) leaveCluster(ctx context.Context) error {
	defer l.stopWatchers()
	type gone struct {
		shard int
		rev   uint64
	}
	var keys []gone
	for i := range l.shards {
		s := &l.shards[i]
		if s.held || s.releasing {
			keys = append(keys, gone{i, s.curRev})
			l.log.Info().Int("shard", i).Uint64("epoch", s.epoch).Msg("cluster: shard released (leaving)")
			s.held, s.releasing, s.epoch = false, false, 0
		}
	}
	l.publish()
	l.report()

	var errs []error
	for _, k := range keys {
		cctx, cancel := context.WithTimeout(ctx, l.cfg.tick())
		err := l.leases.Delete(cctx, shardKey(k.shard), jetstream.LastRevision(k.rev))
		cancel()
		if err != nil && !isConflict(err) {
			l.log.Warn().Err(err).Int("shard", k.shard).Msg("cluster: delete lease on leave")
			errs = append(errs, fmt.Errorf("cluster: delete lease of shard %d: %w", k.shard, err))
		}
	}
	cctx, cancel := context.WithTimeout(ctx, l.cfg.tick())
	err := l.nodes.Delete(cctx, nodeKeyPrefix+l.cfg.NodeID)
	cancel()
	if err != nil {
		l.log.Warn().Err(err).Msg("cluster: delete node key on leave")
		errs = append(errs, fmt.Errorf("cluster: delete node key: %w", err))
	}
	l.view.Store(&view{shards: make([]shardView, len(l.shards)), closed: true})
	l.log.Info().Int("released", len(keys)).Msg("cluster: left")
	return errors.Join(errs...)
}

// stopWatchers stops both watchers and drains their channels until nats.go
// closes them: a watcher's delivery goroutine blocks on a full channel, and
// would never exit if nobody read it.
func (l *Leases) stopWatchers() {
	for _, w := range []jetstream.KeyWatcher{l.leaseW, l.nodeW} {
		if w == nil {
			continue
		}
		_ = w.Stop() // fails only if the connection is closed, which closed the channel already
		timeout := time.NewTimer(5 * time.Second)
	drain:
		for {
			select {
			case _, ok := <-w.Updates():
				if !ok {
					break drain
				}
			case <-timeout.C:
				l.log.Warn().Msg("cluster: watcher did not stop")
				break drain
			}
		}
		timeout.Stop()
	}
	l.leaseW, l.nodeW = nil, nil
}

// isConflict reports whether err is a compare-and-set conflict: the key's
// revision was not the one expected (10071 on a single server, 10164 on
// replicated streams), or Create found the key present.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
