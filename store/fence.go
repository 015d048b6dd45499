package store

import (
	"fmt"
	"strings"
)

// ShardFence says why one shard of a write was fenced: what this node
// believes of the shard against what the store holds (docs/CLUSTER.md §3).
type ShardFence struct {
	// Shard is the shard number.
	Shard int
	// Holds is false when this node does not hold Shard at all; the store
	// was then not asked (Claimed is false, Stored 0).
	Holds bool
	// Held is this node's epoch (lease revision) of Shard, when Holds.
	Held uint64
	// Claimed is false when the store has no epoch for Shard: no node ever
	// claimed it (or the store was not asked).
	Claimed bool
	// Stored is the store's epoch of Shard, when Claimed: the epoch of the
	// node that owns it now.
	Stored uint64
}

// String reads "shard 3: this node holds epoch 5, the store has epoch 7".
func (f ShardFence) String() string {
	switch {
	case !f.Holds:
		return fmt.Sprintf("shard %d: not held by this node", f.Shard)
	case !f.Claimed:
		return fmt.Sprintf("shard %d: this node holds epoch %d, the store has none (never claimed)", f.Shard, f.Held)
	default:
		return fmt.Sprintf("shard %d: this node holds epoch %d, the store has epoch %d", f.Shard, f.Held, f.Stored)
	}
}

// FencedError is the typed form of ErrFenced: the write was refused whole
// (nothing of it was written) because of the shards listed. It lives here,
// not in a store implementation, so that the engine can learn which shards
// to drop with errors.As without importing one.
type FencedError struct {
	// Shards are the fenced shards, ascending.
	Shards []int
	// Fences explain them, one per entry of Shards, in the same order.
	Fences []ShardFence
}

// Error names every fenced shard with both epochs.
func (e *FencedError) Error() string {
	var b strings.Builder
	b.WriteString(ErrFenced.Error())
	for i, f := range e.Fences {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		b.WriteString(f.String())
	}
	if len(e.Fences) == 0 && len(e.Shards) > 0 {
		fmt.Fprintf(&b, ": shards %v", e.Shards)
	}
	return b.String()
}

// Is makes errors.Is(err, ErrFenced) true, and only that: a fenced write is
// neither unavailable nor invalid.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }
