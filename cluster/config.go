package cluster

import (
	"errors"
	"fmt"
	"regexp"
	"time"
)

// Defaults of Config (docs/CLUSTER.md, section 7).
const (
	DefaultShards      = 64
	DefaultLeaseTTL    = 6 * time.Second
	DefaultBucket      = "charla_leases"
	DefaultNodesBucket = "charla_nodes"
	DefaultReplicas    = 1
)

// MinLeaseTTL is the shortest lease TTL accepted. Renewals run every TTL/3
// and a node fences itself 2*TTL/3 after its last successful renewal: below
// 300 ms a renewal round (one NATS round trip per held shard) or a GC pause
// would eat a large part of that margin and shards would flap between nodes.
const MinLeaseTTL = 300 * time.Millisecond

// MaxReplicas is JetStream's limit on a stream's replicas.
const MaxReplicas = 5

// Config configures a node's leases. Zero values take the defaults above.
type Config struct {
	// NodeID names this node: unique in the cluster, and one NATS subject
	// token made of letters, digits, '-' and '_' (the engine uses it in the
	// node's subjects too, see actors.Cluster).
	NodeID string
	// Shards is the number of shards, fixed for the cluster's life (default
	// 64). Start refuses a count other than the one stored in the bucket.
	Shards int
	// LeaseTTL is how long a lease lives without renewal (default 6 s):
	// the takeover time after a crash. Renewals run every LeaseTTL/3.
	LeaseTTL time.Duration
	// Bucket is the KV bucket of the leases (default "charla_leases").
	Bucket string
	// NodesBucket is the KV bucket of the live nodes (default
	// "charla_nodes"); its keys expire after LeaseTTL.
	NodesBucket string
	// Replicas is the number of replicas of both buckets (default 1; the
	// NATS cluster size, up to 3, in production).
	Replicas int
}

// The shapes NATS accepts: bucket names per nats.go's KV, node ids one
// subject token (so that "node.<id>" is one key and "charla.node.<id>" one
// subject).
var (
	bucketRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
	nodeIDRe = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)
)

// ValidNodeID reports whether id can name a node (or a cluster): one NATS
// subject token and KV key part, letters, digits, '-' and '_' only.
func ValidNodeID(id string) bool { return nodeIDRe.MatchString(id) }

// withDefaults returns c with every zero field set to its default.
func (c Config) withDefaults() Config {
	if c.Shards == 0 {
		c.Shards = DefaultShards
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.NodesBucket == "" {
		c.NodesBucket = DefaultNodesBucket
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	return c
}

// validate reports every problem of c (after defaults) at once, joined with
// errors.Join, so that an operator fixes the configuration in one round.
func (c Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.NodeID == "":
		bad("cluster: node id is required")
	case !ValidNodeID(c.NodeID):
		bad("cluster: node id %q must be letters, digits, '-' and '_' only", c.NodeID)
	}
	if c.Shards < 1 {
		bad("cluster: shards must be at least 1 (got %d)", c.Shards)
	}
	if c.LeaseTTL < MinLeaseTTL {
		bad("cluster: lease ttl must be at least %s (got %s)", MinLeaseTTL, c.LeaseTTL)
	}
	if !bucketRe.MatchString(c.Bucket) {
		bad("cluster: bucket %q must be letters, digits, '-' and '_' only", c.Bucket)
	}
	if !bucketRe.MatchString(c.NodesBucket) {
		bad("cluster: nodes bucket %q must be letters, digits, '-' and '_' only", c.NodesBucket)
	}
	if c.Bucket == c.NodesBucket {
		bad("cluster: bucket and nodes bucket must differ (both %q): the nodes bucket expires its keys", c.Bucket)
	}
	if c.Replicas < 1 || c.Replicas > MaxReplicas {
		bad("cluster: replicas must be between 1 and %d (got %d)", MaxReplicas, c.Replicas)
	}
	return errors.Join(errs...)
}

// tick is the period of renewals and of the take loop: TTL/3, so that a
// lease is renewed twice before the node fences itself (2*TTL/3) and three
// times before another node may take it (TTL).
func (c Config) tick() time.Duration { return c.LeaseTTL / 3 }

// fence is how long after the send of its last successful CAS a node still
// trusts its lease: 2*TTL/3. Others take the lease only a full TTL after
// they saw that CAS land, which is later than its send, so the node stops
// serving at least TTL/3 before anyone else can start.
func (c Config) fence() time.Duration { return 2 * c.LeaseTTL / 3 }
