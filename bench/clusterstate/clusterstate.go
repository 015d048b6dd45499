// Package clusterstate is what the bench reads from a Charla cluster besides
// its processes and its protocol: who owns a conversation (the lease in the
// JetStream KV bucket <name>_leases), the buckets to delete after a run,
// and the messages PostgreSQL — the cluster's system of record — holds at
// the end, checked against what the bench was acked.
package clusterstate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"charla"
	"charla/bench/engine"
	"charla/cluster"
)

// Leases reads a cluster's shard leases.
type Leases struct {
	nc     *nats.Conn
	js     jetstream.JetStream
	name   string
	shards int
	kv     jetstream.KeyValue
}

// DialLeases connects to the cluster's NATS. name is its --cluster-name,
// shards its --cluster-shards.
func DialLeases(url, name string, shards int) (*Leases, error) {
	if url == "" || name == "" || shards < 1 {
		return nil, fmt.Errorf("cluster leases: need the NATS URL, the cluster name and the shard count (got %q, %q, %d)", url, name, shards)
	}
	nc, err := nats.Connect(url, nats.Name("charla-bench"), nats.Timeout(3*time.Second), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("cluster leases: connect to %s: %w", url, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster leases: jetstream: %w", err)
	}
	return &Leases{nc: nc, js: js, name: name, shards: shards}, nil
}

// Close closes the NATS connection.
func (l *Leases) Close() { l.nc.Close() }

// Shard is conv's shard in this cluster.
func (l *Leases) Shard(conv charla.ConvID) int { return cluster.ShardOf(conv, l.shards) }

// Owner is the node named in the lease of conv's shard ("" when the
// shard has no lease). A lease of a dead node still names it until
// another node takes the shard.
func (l *Leases) Owner(ctx context.Context, conv charla.ConvID) (string, error) {
	return l.ownerOfShard(ctx, l.Shard(conv))
}

// DeleteBuckets deletes the cluster's KV buckets (<name>_leases,
// <name>_nodes) once its nodes are stopped; a missing bucket is not an
// error.
func DeleteBuckets(ctx context.Context, url, name string) error {
	nc, err := nats.Connect(url, nats.Name("charla-bench"), nats.Timeout(3*time.Second))
	if err != nil {
		return fmt.Errorf("delete buckets: connect to %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("delete buckets: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var errs []error
	for _, b := range []string{name + "_leases", name + "_nodes"} {
		if err := js.DeleteKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
			errs = append(errs, fmt.Errorf("delete bucket %s: %w", b, err))
		}
	}
	return errors.Join(errs...)
}

// Check is the end-of-run verdict of PostgreSQL against the acks.
type Check struct {
	// Stored is the number of rows of the run's conversations.
	Stored int64 `json:"stored"`
	// Acked is the number of acked (conversation, seq) pairs checked.
	Acked int64 `json:"acked"`
	// Lost counts acked messages not in PostgreSQL under their acked seq
	// with their client_msg_id.
	Lost int64 `json:"lost"`
	// Duplicated counts a client_msg_id stored twice in one conversation,
	// plus every missing seq below a conversation's highest (a gap).
	Duplicated int64 `json:"duplicated"`
	// Gaps is the gap part of Duplicated.
	Gaps int64 `json:"gaps"`
	// StoredNotAcked counts stored messages the bench never got an ack for
	// (its sender gave up or the run ended first): not an error.
	StoredNotAcked int64    `json:"stored_not_acked"`
	Samples        []string `json:"samples,omitempty"`
}

// OK reports whether nothing acked was lost and nothing was stored twice.
func (c Check) OK() bool { return c.Lost == 0 && c.Duplicated == 0 }

const maxSamples = 20

func (c *Check) sample(format string, args ...any) {
	if len(c.Samples) < maxSamples {
		c.Samples = append(c.Samples, fmt.Sprintf(format, args...))
	}
}

// Verify reads the messages of convs from PostgreSQL at databaseURL and
// checks them against acked (conversation → seq → client_msg_id).
func Verify(ctx context.Context, databaseURL string, convs []charla.ConvID, acked func(charla.ConvID) map[charla.Seq]string) (Check, error) {
	var c Check
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	// A server at its connection limit (the nodes' pools, other clients)
	// frees one soon: retry for a while before giving up on the verdict.
	var db *pgx.Conn
	var err error
	for attempt := 0; attempt < 20; attempt++ {
		if db, err = pgx.Connect(ctx, databaseURL); err == nil || ctx.Err() != nil {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if err != nil {
		return c, fmt.Errorf("verify: connect to PostgreSQL: %w", err)
	}
	defer db.Close(context.Background())
	for _, conv := range convs {
		rows, err := db.Query(ctx, `SELECT seq, client_msg_id FROM messages WHERE conversation_id = $1 ORDER BY seq`, string(conv))
		if err != nil {
			return c, fmt.Errorf("verify %s: %w", conv, err)
		}
		stored := map[charla.Seq]string{}
		byID := map[string]charla.Seq{}
		var maxSeq charla.Seq
		for rows.Next() {
			var seq int64
			var id string
			if err := rows.Scan(&seq, &id); err != nil {
				rows.Close()
				return c, fmt.Errorf("verify %s: %w", conv, err)
			}
			s := charla.Seq(seq)
			c.Stored++
			stored[s] = id
			maxSeq = max(maxSeq, s)
			if prev, ok := byID[id]; ok {
				c.Duplicated++
				c.sample("conv %s: client_msg_id %s stored twice, seq %d and %d", conv, id, prev, s)
			}
			byID[id] = s
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return c, fmt.Errorf("verify %s: %w", conv, err)
		}
		var gaps []charla.Seq
		for s := charla.Seq(1); s <= maxSeq; s++ {
			if _, ok := stored[s]; !ok {
				c.Gaps++
				gaps = append(gaps, s)
			}
		}
		if len(gaps) > 0 {
			c.sample("conv %s: %d seqs missing below head %d (first %d)", conv, len(gaps), maxSeq, gaps[0])
		}
		a := acked(conv)
		seqs := make([]charla.Seq, 0, len(a))
		for s := range a {
			seqs = append(seqs, s)
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		for _, s := range seqs {
			c.Acked++
			id, ok := stored[s]
			if !ok || id != a[s] {
				c.Lost++
				c.sample("conv %s: acked seq %d (client_msg_id %s) stored as %q", conv, s, a[s], id)
			}
		}
		for s := range stored {
			if _, ok := a[s]; !ok {
				c.StoredNotAcked++
			}
		}
	}
	c.Duplicated += c.Gaps
	return c, nil
}

// Owners is the node named in every shard's lease ("" for a shard
// without one), by shard.
func (l *Leases) Owners(ctx context.Context) ([]string, error) {
	out := make([]string, l.shards)
	for s := range out {
		o, err := l.ownerOfShard(ctx, s)
		if err != nil {
			return nil, err
		}
		out[s] = o
	}
	return out, nil
}

func (l *Leases) ownerOfShard(ctx context.Context, shard int) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if l.kv == nil {
		kv, err := l.js.KeyValue(ctx, l.name+"_leases")
		if err != nil {
			return "", fmt.Errorf("lease bucket %s_leases: %w", l.name, err)
		}
		l.kv = kv
	}
	e, err := l.kv.Get(ctx, "shard."+strconv.Itoa(shard))
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("lease of shard %d: %w", shard, err)
	}
	var v struct {
		Node string `json:"node"`
	}
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		return "", fmt.Errorf("lease of shard %d: %q: %w", shard, e.Value(), err)
	}
	return v.Node, nil
}

// WaitBalanced polls the leases until every shard is held by one of
// nodes, each node holds its share (ceil(shards/nodes), the last what is
// left), and
// nothing changed for a second: the cluster has settled after a start or
// a restart. It returns the shards held by each node.
func (l *Leases) WaitBalanced(ctx context.Context, nodes []string, timeout time.Duration) (map[string]int, error) {
	deadline := time.Now().Add(timeout)
	var last []string
	var stableSince time.Time
	counts := map[string]int{}
	for n := 0; n < 100000; n++ {
		owners, err := l.Owners(ctx)
		if err != nil {
			return nil, err
		}
		counts = map[string]int{}
		for _, o := range owners {
			counts[o]++
		}
		// Each node aims at ceil(shards/nodes): the last one may hold
		// fewer, never fewer than what the others leave it.
		share := (l.shards + len(nodes) - 1) / len(nodes)
		least := max(l.shards-(len(nodes)-1)*share, 0)
		ok := counts[""] == 0
		for _, id := range nodes {
			ok = ok && counts[id] >= least && counts[id] <= share
		}
		if !ok || !slices.Equal(owners, last) {
			stableSince = time.Now()
		} else if time.Since(stableSince) >= time.Second {
			return counts, nil
		}
		last = owners
		if time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	return counts, fmt.Errorf("cluster not balanced over %v within %v (shards held: %v)", nodes, timeout, counts)
}

// Of is what the bench knows of a cluster it started, read from its
// nodes' command lines.
type Of struct {
	Name, NATSURL, DatabaseURL string
	Shards                     int
	// NodeIDs are the nodes' --cluster-node-id, node 1 first.
	NodeIDs []string
}

// Describe reads the cluster settings from the nodes' command lines
// (--cluster-name, default charla; --cluster-shards, default 64;
// --cluster-nats-url; --database-url; each node's --cluster-node-id).
func Describe(cl *engine.Cluster) (Of, error) {
	o := Of{Name: cl.Setting("cluster-name"), NATSURL: cl.Setting("cluster-nats-url"), DatabaseURL: cl.Setting("database-url"), Shards: 64}
	if o.Name == "" {
		o.Name = "charla"
	}
	if s := cl.Setting("cluster-shards"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			return o, fmt.Errorf("--cluster-shards %q in the engine command", s)
		}
		o.Shards = n
	}
	for i := range cl.Nodes {
		id := cl.NodeID(i)
		if id == "" || slices.Contains(o.NodeIDs, id) {
			return o, fmt.Errorf("node %d: give each node its own --cluster-node-id (e.g. n{i}) in the engine command, so that the bench can tell who owns what", i+1)
		}
		o.NodeIDs = append(o.NodeIDs, id)
	}
	return o, nil
}
