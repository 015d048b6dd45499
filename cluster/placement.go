package cluster

import "charla"

// Shard is conv's shard in this cluster (ShardOf with its shard count).
func (l *Leases) Shard(conv charla.ConvID) int { return ShardOf(conv, l.cfg.Shards) }

// Shards is the cluster's shard count.
func (l *Leases) Shards() int { return l.cfg.Shards }
