package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"charla"
	"charla/store"
)

// Fence is what a cluster node knows of the shards it holds
// (docs/CLUSTER.md §3). The store asks it on every Append and
// AppendSequenced; it must be cheap and safe for concurrent use.
type Fence interface {
	// Shards is the cluster's shard count.
	Shards() int
	// Epoch is this node's epoch (lease revision) of shard; ok only while
	// this node holds shard.
	Epoch(shard int) (epoch uint64, ok bool)
}

// Option adjusts Open beyond Options: Options are the settings an operator
// types (flags, environment), an Option is a collaborator the engine hands
// in, such as a cluster node's fence.
type Option func(*openConfig)

type openConfig struct {
	fence   Fence
	shardOf func(conv charla.ConvID, shards int) int
}

// WithFence makes every write of messages (Append, AppendSequenced) fenced:
// in its transaction, before writing, it locks FOR SHARE the shard_epochs
// rows of the shards its conversations belong to (shardOf(conv,
// f.Shards())) and writes nothing unless each holds f's epoch of that
// shard; otherwise it fails with a *store.FencedError (errors.Is
// store.ErrFenced), which is neither unavailable nor retried. shardOf is a
// parameter so that this package need not import the cluster's (the engine
// passes cluster.ShardOf). A nil f leaves the store unfenced, the
// single-node mode; a nil shardOf with a fence makes Open fail.
func WithFence(f Fence, shardOf func(conv charla.ConvID, shards int) int) Option {
	return func(c *openConfig) { c.fence, c.shardOf = f, shardOf }
}

// fencing is a Store's fence, nil on a single node.
type fencing struct {
	Fence
	shardOf func(conv charla.ConvID, shards int) int
}

// newFencing validates what WithFence was given.
func newFencing(c openConfig) (*fencing, error) {
	if c.fence == nil {
		return nil, nil
	}
	if c.shardOf == nil {
		return nil, errors.New("postgres: open: WithFence needs a shardOf function")
	}
	return &fencing{Fence: c.fence, shardOf: c.shardOf}, nil
}

// fenceArgs are the shards a call touches and this node's epoch of each,
// as the arrays the fenced statements take.
type fenceArgs struct {
	shards []int32
	epochs []int64
}

// check computes the shards of convs and this node's epochs for them. A
// shard the node does not hold fails the call with a *store.FencedError
// before the database is asked: nothing to lock, the answer is known.
func (f *fencing) check(convs []string) (fenceArgs, error) {
	n := f.Shards()
	if n <= 0 {
		return fenceArgs{}, fmt.Errorf("fence: %d shards", n)
	}
	seen := make(map[int]bool, min(len(convs), n))
	var a fenceArgs
	var notHeld []store.ShardFence
	for i, conv := range convs {
		if i > 0 && conv == convs[i-1] {
			continue // a group commit often carries runs of one conversation
		}
		sh := f.shardOf(charla.ConvID(conv), n)
		if seen[sh] {
			continue
		}
		seen[sh] = true
		if sh < 0 || sh >= n || sh > math.MaxInt32 {
			return fenceArgs{}, fmt.Errorf("fence: conversation %q maps to shard %d of %d", conv, sh, n)
		}
		epoch, ok := f.Epoch(sh)
		switch {
		case !ok:
			notHeld = append(notHeld, store.ShardFence{Shard: sh})
		case epoch > math.MaxInt64:
			return fenceArgs{}, fmt.Errorf("fence: epoch %d of shard %d does not fit a bigint", epoch, sh)
		default:
			a.shards = append(a.shards, int32(sh))
			a.epochs = append(a.epochs, int64(epoch))
		}
	}
	if len(notHeld) > 0 {
		return fenceArgs{}, newFencedError(notHeld)
	}
	return a, nil
}

// newFencedError sorts fences by shard into a *store.FencedError.
func newFencedError(fences []store.ShardFence) *store.FencedError {
	slices.SortFunc(fences, func(a, b store.ShardFence) int { return a.Shard - b.Shard })
	e := &store.FencedError{Shards: make([]int, len(fences)), Fences: fences}
	for i, f := range fences {
		e.Shards[i] = f.Shard
	}
	return e
}

// fenced wraps a *store.FencedError as the store's *Error: KindFenced, not
// retryable, so doAttempts returns it at once and it never reads as
// store.ErrUnavailable.
func fenced(o op, fe *store.FencedError) *Error {
	return &Error{Op: o.String(), Kind: KindFenced, Err: fe}
}

// fenceGate is the condition the fenced statements put on their input (so
// on every write they make): every shard of the call ($S, distinct) has a
// row in shard_epochs holding this node's epoch for it ($E, parallel). The
// sub-select locks those rows FOR SHARE, in the statement's own
// transaction, before anything is written: a ClaimShard by a new owner (an
// update of the row, FOR NO KEY UPDATE, which conflicts with FOR SHARE)
// waits for this statement's commit; and a claim that committed first is
// seen even if it committed after the statement's snapshot, because a
// locking read in READ COMMITTED returns the row's latest committed
// version. Rows are locked in shard order. A shard without a row (never
// claimed) fails the gate: it cannot be locked, and no node owns it.
//
// The condition is uncorrelated: the planner evaluates it once (an
// InitPlan, a one-time filter) before reading input. A refused call writes
// nothing and answers no row, which is how Append and AppendSequenced tell
// it from success (every other call answers one row per input row).
const fenceGate = `
    WHERE (SELECT count(*)
           FROM (SELECT shard, epoch FROM shard_epochs
                 WHERE shard = ANY($S::int[])
                 ORDER BY shard
                 FOR SHARE) e
           JOIN unnest($S::int[], $E::bigint[]) AS f(shard, epoch)
             ON f.shard = e.shard AND f.epoch = e.epoch
          ) = cardinality($S::int[])`

// withFenceGate puts fenceGate, its shards and epochs being parameters
// $shards and $epochs, at the place of the marker in sql.
func withFenceGate(sql, marker string, shards, epochs int) string {
	gate := strings.NewReplacer("$S", fmt.Sprintf("$%d", shards), "$E", fmt.Sprintf("$%d", epochs)).Replace(fenceGate)
	out := strings.Replace(sql, marker, marker+gate, 1)
	if out == sql {
		panic("postgres: fence gate marker not found")
	}
	return out
}

// fenceStateSQL reads the stored epochs of the shards a fenced call was
// refused for, to say why.
const fenceStateSQL = `SELECT shard, epoch FROM shard_epochs WHERE shard = ANY($1::int[])`

// fencedResult explains a call that the gate refused: a second read of the
// stored epochs, outside the refused statement (the refusal path is rare,
// the success path keeps its single round trip). Epochs only grow, so the
// read normally shows what the gate saw or a later claim; should every
// shard hold the node's epoch by now (it claimed a shard while the call
// was in flight), every shard of the call is reported, with what is stored.
func (s *Store) fencedResult(ctx context.Context, o op, a fenceArgs) error {
	stored := make(map[int]int64, len(a.shards))
	rows, err := s.pool.Query(ctx, fenceStateSQL, a.shards)
	if err != nil {
		return err
	}
	var shard int32
	var epoch int64
	if _, err := pgx.ForEachRow(rows, []any{&shard, &epoch}, func() error {
		stored[int(shard)] = epoch
		return nil
	}); err != nil {
		return err
	}
	var bad, all []store.ShardFence
	for i, sh := range a.shards {
		f := store.ShardFence{Shard: int(sh), Holds: true, Held: uint64(a.epochs[i])}
		if e, ok := stored[int(sh)]; ok {
			f.Claimed, f.Stored = true, uint64(e)
		}
		all = append(all, f)
		if !f.Claimed || f.Stored != f.Held {
			bad = append(bad, f)
		}
	}
	if len(bad) == 0 {
		bad = all
	}
	return fenced(o, newFencedError(bad))
}

// claimShardSQL raises shard's epoch to $2 (creating its row on the first
// claim) unless it is already there or higher. The UPDATE waits for the
// FOR SHARE locks of the old owner's commits in flight.
const claimShardSQL = `
INSERT INTO shard_epochs AS se (shard, epoch) VALUES ($1, $2)
ON CONFLICT (shard) DO UPDATE SET epoch = EXCLUDED.epoch
WHERE se.epoch < EXCLUDED.epoch
RETURNING epoch`

// ClaimShard records that this node owns shard from epoch on
// (docs/CLUSTER.md §3): the node calls it after winning the shard's lease
// with revision epoch, before serving any of its conversations. ok is true
// when the store now holds exactly epoch: the claim raised it, or an
// earlier attempt of the same claim did (so a retried claim is still ok).
// ok is false when the store holds a higher epoch: a newer owner exists,
// and the node must drop the shard. The claim waits for the old owner's
// fenced writes in flight; every later one is refused. It needs no fence
// (WithFence) on this store.
func (s *Store) ClaimShard(ctx context.Context, shard int, epoch uint64) (ok bool, err error) {
	if shard < 0 || shard > math.MaxInt32 || epoch > math.MaxInt64 {
		return false, s.invalid(ctx, opClaimShard, fmt.Errorf("shard %d, epoch %d out of range", shard, epoch))
	}
	err = s.do(ctx, opClaimShard, func(ctx context.Context) error {
		var got int64
		err := s.pool.QueryRow(ctx, claimShardSQL, int32(shard), int64(epoch)).Scan(&got)
		if err == nil {
			ok = true
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		// The row holds epoch or more. Read it in a statement of its own:
		// it sees every claim committed until now, which the upsert's
		// snapshot may not.
		if err := s.pool.QueryRow(ctx, `SELECT epoch FROM shard_epochs WHERE shard = $1`, int32(shard)).Scan(&got); err != nil {
			return err
		}
		ok = got == int64(epoch)
		return nil
	})
	if err != nil {
		return false, err
	}
	return ok, nil
}
