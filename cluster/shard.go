// Package cluster places conversations on the nodes of a Charla cluster
// (docs/CLUSTER.md, sections 2 and 3): every conversation belongs to one of a
// fixed number of shards, and every shard is owned by at most one node at a
// time through a lease in a NATS JetStream key-value bucket. The lease's
// revision is its epoch, which PostgreSQL's fence (shard_epochs) checks on
// every commit, so that a node that lost its lease without noticing (paused,
// cut from NATS) can never write again.
//
// The package adds no membership or consensus of its own: the bucket's
// compare-and-set decides who owns a shard, and each node judges expiry only
// by its own monotonic clock while watching the bucket.
package cluster

import (
	"fmt"

	"charla"
)

// The 32-bit FNV-1a parameters (the same as hash/fnv's New32a), written out so
// that ShardOf, called for every request, allocates nothing.
const (
	fnvOffset32 = 2166136261
	fnvPrime32  = 16777619
)

// ShardOf is the shard of a conversation: fnv32a(conv) mod shards.
//
// Every node must compute the same value for the same conversation for the
// life of the cluster, so the function is pinned by a test and must never
// change; the shard count is fixed for the same reason (Start refuses a count
// that differs from the one stored in the bucket). shards must be at least 1.
func ShardOf(conv charla.ConvID, shards int) int {
	if shards < 1 {
		panic(fmt.Sprintf("cluster.ShardOf: shards must be at least 1 (got %d)", shards))
	}
	h := uint32(fnvOffset32)
	for i := 0; i < len(conv); i++ {
		h ^= uint32(conv[i])
		h *= fnvPrime32
	}
	return int(h % uint32(shards))
}
