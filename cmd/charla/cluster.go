package main

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"charla/actors"
	"charla/cluster"
	"charla/store"
	"charla/store/postgres"
)

// clusterConfig is how this engine joins a cluster (docs/CLUSTER.md).
type clusterConfig struct {
	NATSURL        string
	Name           string
	NodeID         string
	Shards         int
	LeaseTTL       time.Duration
	Replicas       int
	RequestTimeout time.Duration
}

// defaultClusterRequestTimeout is --cluster-request-timeout's default; the
// leases' settings take the cluster package's defaults and bounds.
const defaultClusterRequestTimeout = 3 * time.Second

func (c config) clusterProblems() []error {
	cl := c.Cluster
	if cl.NATSURL == "" {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DB.URL == "" {
		bad("cluster-nats-url needs database-url: the embedded store is one process's, and a cluster's system of record is PostgreSQL")
	}
	if !cluster.ValidNodeID(cl.Name) {
		bad("cluster-name %q: only letters, digits, '-' and '_' (it names the NATS buckets and subjects)", cl.Name)
	}
	if cl.NodeID != "" && !cluster.ValidNodeID(cl.NodeID) {
		bad("cluster-node-id %q: only letters, digits, '-' and '_' (it is a NATS subject token)", cl.NodeID)
	}
	if cl.Shards < 1 {
		bad("cluster-shards must be at least 1 (got %d)", cl.Shards)
	}
	if cl.LeaseTTL < cluster.MinLeaseTTL {
		bad("cluster-lease-ttl must be at least %s (got %s)", cluster.MinLeaseTTL, cl.LeaseTTL)
	}
	if cl.Replicas < 1 || cl.Replicas > cluster.MaxReplicas {
		bad("cluster-replicas must be between 1 and %d (got %d)", cluster.MaxReplicas, cl.Replicas)
	}
	if cl.RequestTimeout <= 0 {
		bad("cluster-request-timeout must be positive (got %s)", cl.RequestTimeout)
	}
	return errs
}

// nodeID is the configured id, or one made of the host name and the
// process id, unique on one machine and across machines with distinct names.
func (cl clusterConfig) nodeID() string {
	if cl.NodeID != "" {
		return cl.NodeID
	}
	host, _ := os.Hostname()
	host = strings.Map(func(r rune) rune {
		if cluster.ValidNodeID(string(r)) {
			return r
		}
		return '_'
	}, host)
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// clusterNode is this engine's place in a cluster: its NATS connection, its
// leases, and the fence its store checks on every write.
type clusterNode struct {
	cfg    clusterConfig
	id     string
	nc     *nats.Conn
	fence  *lateFence
	leases *cluster.Leases
	// spool keeps sends acked during a database outage (docs/CLUSTER.md §6).
	spool *cluster.Spool
	// tree hears of ownership changes once it runs; before, it has no
	// conversation to move.
	tree atomic.Pointer[actors.System]
	left atomic.Bool
}

func newClusterNode(cfg clusterConfig) *clusterNode {
	if cfg.NATSURL == "" {
		return nil
	}
	return &clusterNode{cfg: cfg, id: cfg.nodeID(), fence: &lateFence{shards: cfg.Shards}}
}

// storeOption fences the store's writes with this node's leases.
func (n *clusterNode) storeOption() postgres.Option {
	return postgres.WithFence(n.fence, cluster.ShardOf)
}

// join connects to NATS and starts the leases, which claim the shards they
// win in st before this node serves them.
func (n *clusterNode) join(ctx context.Context, st store.Store, log zerolog.Logger) (*actors.Cluster, error) {
	claimer, ok := st.(cluster.Claimer)
	if !ok {
		return nil, fmt.Errorf("a cluster node needs a store that claims shards; %T does not", st)
	}
	nc, err := nats.Connect(n.cfg.NATSURL, nats.Name("charla "+n.id), nats.MaxReconnects(-1))
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to NATS at %s: %w (start it with `nats-server -js`)", redactedURL(n.cfg.NATSURL), err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("cluster: JetStream: %w", err)
	}
	sp, err := cluster.OpenSpool(ctx, js, n.cfg.Name, n.cfg.Replicas, n.cfg.Shards)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if n.cfg.Replicas < 3 {
		log.Warn().Int("replicas", n.cfg.Replicas).Msg("cluster: the outage spool has fewer than 3 replicas: a message acked from it " +
			"during a database outage rests on one NATS server's storage, synced to disk only every sync_interval (docs/CLUSTER.md §6)")
	}
	n.spool = sp
	lcfg := cluster.Config{NodeID: n.id, Shards: n.cfg.Shards, LeaseTTL: n.cfg.LeaseTTL,
		Bucket: n.cfg.Name + "_leases", NodesBucket: n.cfg.Name + "_nodes", Replicas: n.cfg.Replicas}
	leases, err := cluster.Start(ctx, js, lcfg, adoptingClaimer{claimer, sp}, n.changed, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	n.nc, n.leases = nc, leases
	sp.Attach(leases)
	n.fence.leases.Store(leases)
	log.Info().Str("node", n.id).Str("cluster", n.cfg.Name).Int("shards", n.cfg.Shards).Dur("lease_ttl", n.cfg.LeaseTTL).Msg("joined the cluster")
	return &actors.Cluster{Name: n.cfg.Name, Node: n.id, Placement: leases, Bus: cluster.NewBus(nc), RequestTimeout: n.cfg.RequestTimeout}, nil
}

// adoptingClaimer takes a shard's outage spool with the shard: once the
// store has the new epoch, the shard's spooled messages are this node's to
// drain, and its subject is sealed against the old owner.
type adoptingClaimer struct {
	cluster.Claimer
	spool *cluster.Spool
}

func (a adoptingClaimer) ClaimShard(ctx context.Context, shard int, epoch uint64) (bool, error) {
	ok, err := a.Claimer.ClaimShard(ctx, shard, epoch)
	if err != nil || !ok {
		return ok, err
	}
	if err := a.spool.Adopt(ctx, shard, epoch); err != nil {
		return false, err
	}
	return true, nil
}

// Unclaim forgets the spool adopted for a claim that ended too late to be
// served: nothing of it may be drained here, and what it holds waits in
// the stream for the shard's next owner.
func (a adoptingClaimer) Unclaim(shard int) { a.spool.Forget(shard) }

func (n *clusterNode) changed(c cluster.Change) {
	if !c.Mine {
		n.spool.Forget(c.Shard) // its next owner adopts what is spooled
	}
	if t := n.tree.Load(); t != nil {
		t.ShardChanged(c.Shard)
		t.Stats().Cluster.ShardsHeld.Store(int64(n.held()))
	}
}

// held counts the shards this node holds now.
func (n *clusterNode) held() int {
	held := 0
	for s := range n.cfg.Shards {
		if _, ok := n.leases.Epoch(s); ok {
			held++
		}
	}
	return held
}

// handOver gives this node's shards up (their keys deleted, so that the
// others take them at once rather than after a lease's TTL). Its
// conversations stop as their shards go; what they still commit is fenced
// once a new owner has claimed the shard. On SIGTERM it runs before the
// connections are closed, so that they follow their conversations to the
// new owners first.
func (n *clusterNode) handOver(log zerolog.Logger) {
	if n.leases == nil || n.left.Swap(true) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := n.leases.Close(ctx); err != nil {
		log.Warn().Err(err).Msg("cluster: shards not handed over; the others take them when the leases expire")
	}
}

// close leaves the cluster, once the tree has stopped: the answers it sent
// other nodes until then went over this connection.
func (n *clusterNode) close(log zerolog.Logger) {
	n.handOver(log)
	if n.nc != nil {
		n.nc.Close()
	}
}

// clusterReadiness is /readyz's "cluster" detail.
type clusterReadiness struct {
	Name string `json:"name"`
	Node string `json:"node"`
	// Shards is how many shards this node holds (writes) now, of Of.
	Shards int      `json:"shards"`
	Of     int      `json:"of"`
	Nodes  []string `json:"nodes"` // the live nodes, this one included
	// InboxLeader is the node running the agents' inbox, as this node
	// sees the leases ("" while it changes hands).
	InboxLeader string `json:"inbox_leader"`
}

func (n *clusterNode) readiness() any {
	r := clusterReadiness{Name: n.cfg.Name, Node: n.id, Shards: n.held(), Of: n.cfg.Shards, Nodes: n.leases.Nodes()}
	if sys := n.tree.Load(); sys != nil {
		r.InboxLeader = sys.InboxLeader()
	}
	return r
}

// lateFence is the store's view of the leases. The store opens first (the
// leases claim shards in it), so until the leases start it holds nothing,
// and a write then is fenced, which is right: this node owns nothing yet.
type lateFence struct {
	shards int
	leases atomic.Pointer[cluster.Leases]
}

func (f *lateFence) Shards() int { return f.shards }

func (f *lateFence) Epoch(shard int) (uint64, bool) {
	if l := f.leases.Load(); l != nil {
		return l.Epoch(shard)
	}
	return 0, false
}
