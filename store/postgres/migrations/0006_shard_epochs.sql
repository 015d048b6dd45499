-- 0006_shard_epochs: cluster fencing (docs/CLUSTER.md §3).
--
-- One row per shard that a node ever claimed: the epoch (the NATS lease
-- revision) of its current owner. A node that wins a shard raises the epoch
-- to its own (ClaimShard); every group commit of a fenced store locks the
-- rows of the shards it touches FOR SHARE and writes nothing unless each
-- holds the node's own epoch. The share lock makes a new owner's claim wait
-- for the old owner's commits in flight, and every later commit of the old
-- owner see the new epoch. Epochs only grow; rows are never deleted. A
-- single-node engine never reads or writes this table.

CREATE TABLE shard_epochs (
    shard int    PRIMARY KEY CHECK (shard >= 0),
    epoch bigint NOT NULL CHECK (epoch >= 0)
);
