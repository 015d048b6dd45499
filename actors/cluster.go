package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"charla"
	"charla/wire"
)

// Cluster makes the tree one node of a cluster (docs/CLUSTER.md). Without it
// (Dependencies.Cluster nil) every conversation is written here, as on one
// machine.
type Cluster struct {
	// Name prefixes the cluster's subjects, so that several clusters can
	// share one NATS; every node of a cluster has the same.
	Name string
	// Node is this node's id: unique in the cluster and one NATS subject
	// token (letters, digits, '-' and '_').
	Node string
	// Placement says which node writes a conversation (cluster.Leases).
	Placement Placement
	// Bus carries requests and frames between nodes (cluster.Bus, core NATS).
	Bus Bus
	// RequestTimeout bounds how long a request forwarded to another node
	// waits for its answer before the client gets unavailable.
	RequestTimeout time.Duration

	// incarnation tells this process's requests from those of an earlier
	// process of the same node id (newSystem sets it): an answer meant for
	// that one, still on its way, must match nothing here.
	incarnation string
}

func (c *Cluster) validate() error {
	var errs []error
	if err := checkNodeID(c.Node); err != nil {
		errs = append(errs, err)
	}
	if err := checkNodeID(c.Name); err != nil {
		errs = append(errs, fmt.Errorf("cluster name: %w", err))
	}
	if c.Placement == nil || c.Bus == nil {
		errs = append(errs, errors.New("cluster: placement and bus are both required"))
	}
	if c.RequestTimeout <= 0 {
		errs = append(errs, fmt.Errorf("cluster request timeout must be positive, not %s", c.RequestTimeout))
	}
	return errors.Join(errs...)
}

// ClusterStats count a node's traffic with the others and the moves of its
// conversations (/metrics: charla_cluster_*).
type ClusterStats struct {
	Forwarded  atomic.Int64 // requests this node forwarded to the owner of their conversation
	Served     atomic.Int64 // requests other nodes forwarded to this one
	Unanswered atomic.Int64 // forwarded requests the owner did not answer in time (the client got unavailable)
	Fenced     atomic.Int64 // writes the store refused because another node holds their shard now
	Moved      atomic.Int64 // conversation actors and proxies stopped because their shard changed hands
	ShardsHeld atomic.Int64 // shards this node holds now (set by the engine from its leases)
}

// InboxLeader is the node that runs the inbox (the workflow's one writer)
// as this node sees the leases; "" when none holds it now or on one node.
func (s *System) InboxLeader() string {
	if s.deps.cluster == nil {
		return ""
	}
	return s.deps.cluster.inboxLeader()
}

// inboxLeader is the holder of the inbox's shard as this node sees the
// leases now ("" when none): this node while it holds it, not merely while
// the bucket names it.
func (c *Cluster) inboxLeader() string {
	shard := c.Placement.Shard(inboxKey)
	if _, mine := c.Placement.Epoch(shard); mine {
		return c.Node
	}
	owner, _ := c.Placement.Owner(shard)
	return owner
}

// Clustered reports whether the tree is a node of a cluster.
func (s *System) Clustered() bool { return s.deps.cluster != nil }

// Placement is what the tree asks the cluster's leases.
type Placement interface {
	// Shard is the shard of conv.
	Shard(conv charla.ConvID) int
	// Owner is the node that holds shard, as last seen (ok false: none now).
	Owner(shard int) (node string, ok bool)
	// Epoch is this node's lease epoch of shard; ok only while it holds it.
	Epoch(shard int) (epoch uint64, ok bool)
	// Lost tells the leases that the store refused a write of shard under
	// epoch (fenced): another node owns it now.
	Lost(shard int, epoch uint64)
	// Nodes are the live nodes, this one included.
	Nodes() []string
}

// Bus is a publish/subscribe link between nodes. Delivery is at most once
// and in order per publisher and subject: the client's seq check and the
// request timeouts cover what it loses.
type Bus interface {
	Publish(subject string, data []byte) error
	// Subscribe calls handle for every message on subject, one at a time,
	// in order; stop ends the subscription.
	Subscribe(subject string, handle func(data []byte)) (stop func(), err error)
}

// The subjects of a node: requests to the conversations it owns arrive on
// its req subject; the answers and frames of conversations owned elsewhere,
// on its in subject. One subject for all of an owner's answers and frames
// keeps them in the order the owner sent them (a subscribed answer before
// the deliveries that follow it).
func (c *Cluster) reqSubject(node string) string { return c.Name + ".node." + node + ".req" }
func (c *Cluster) inSubject(node string) string  { return c.Name + ".node." + node + ".in" }

// peerKind names a peerEnvelope's content.
type peerKind string

// Requests, from a node with the client to the owner.
const (
	peerSend        peerKind = "send"
	peerSubscribe   peerKind = "sub"
	peerUnsubscribe peerKind = "unsub"
	peerTyping      peerKind = "typing"
	peerRead        peerKind = "read"
	peerStatus      peerKind = "status"
)

// Answers and frames, from the owner to a node with subscribers or senders.
const (
	peerSubscribed peerKind = "subscribed"
	peerAck        peerKind = "ack"
	peerFailed     peerKind = "failed"
	peerReadDone   peerKind = "readdone"
	peerMsg        peerKind = "msg"
	peerRelay      peerKind = "relay"
	peerReset      peerKind = "reset"
)

// peerEnvelope is one message between nodes. Frames travel encoded, as the
// owner's conversation encoded them once for every subscriber.
type peerEnvelope struct {
	Kind peerKind      `json:"k"`
	From string        `json:"from,omitempty"`
	Conv charla.ConvID `json:"conv"`
	// Ref is the asking node's correlation id, echoed by the owner.
	Ref      string          `json:"ref,omitempty"`
	Msg      *charla.Message `json:"msg,omitempty"`
	By       charla.Sender   `json:"by"`
	Since    charla.Seq      `json:"since,omitempty"`
	Seq      charla.Seq      `json:"seq,omitempty"`
	Head     charla.Seq      `json:"head,omitempty"`
	State    string          `json:"state,omitempty"`
	Complete bool            `json:"complete,omitempty"`
	Frame    json.RawMessage `json:"frame,omitempty"`
	Recent   []peerDelivery  `json:"recent,omitempty"`
	Ack      *wire.Ack       `json:"ack,omitempty"`
	Err      *charla.Error   `json:"err,omitempty"`
}

type peerDelivery struct {
	Seq   charla.Seq      `json:"seq"`
	Frame json.RawMessage `json:"frame"`
}

func decodePeer(data []byte) (peerEnvelope, error) {
	var e peerEnvelope
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode peer message: %w", err)
	}
	if err := e.Conv.Validate(); err != nil {
		return e, fmt.Errorf("decode peer message %s: %w", e.Kind, err)
	}
	return e, nil
}

func (e peerEnvelope) encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("encode peer message %s: %v", e.Kind, err)) // every field is plain data
	}
	return b
}

// remoteReq is a request another node forwarded here, to a conversation
// this node owns; its conn is the asking node's relay. It is never
// forwarded again: when this node no longer owns the conversation it is
// refused, and the asking node routes the client's retry afresh.
type remoteReq struct{ req routed }

// ownerFrame is an owner's answer or frame for the proxy of its conversation.
type ownerFrame struct{ env peerEnvelope }

// shardChanged: the owner of shard changed as this node sees it; the
// conversations of that shard are moved where they now belong.
type shardChanged struct{ shard int }

// ShardChanged tells the tree that the owner of shard changed (the leases'
// onChange). It never blocks.
func (s *System) ShardChanged(shard int) {
	if s.deps.cluster != nil {
		s.as.Root.Send(s.deps.conversations, shardChanged{shard: shard})
		s.as.Root.Send(s.deps.inbox, inboxLeaderCheck{})
		s.as.Root.Send(s.deps.store, storeKick{}) // a shard taken may come with spooled messages to drain
	}
}
