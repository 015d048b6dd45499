package actors_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/transport/transporttest"
	"charla/wire"
)

// memBus is the cluster's bus inside one test process: ordered, at most once
// per subscriber, as core NATS is. The real bus, leases and store fence are
// exercised with three engine processes in cmd/charla's cluster tests; this
// one lets a test hold a node's view of the leases where it wants it.
type memBus struct {
	mu   sync.Mutex
	subs map[string][]chan []byte
}

func newMemBus() *memBus { return &memBus{subs: map[string][]chan []byte{}} }

func (b *memBus) Publish(subject string, data []byte) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.subs[subject] {
		select {
		case ch <- data:
		default: // a slow subscriber loses messages, as on core NATS
		}
	}
	return nil
}

func (b *memBus) Subscribe(subject string, handle func([]byte)) (func(), error) {
	ch := make(chan []byte, 1<<16)
	done := make(chan struct{})
	b.mu.Lock()
	b.subs[subject] = append(b.subs[subject], ch)
	b.mu.Unlock()
	go func() {
		defer close(done)
		for data := range ch {
			handle(data)
		}
	}()
	return func() {
		b.mu.Lock()
		subs := b.subs[subject]
		for i, c := range subs {
			if c == ch {
				b.subs[subject] = append(subs[:i:i], subs[i+1:]...)
				close(ch)
				break
			}
		}
		b.mu.Unlock()
		<-done
	}, nil
}

// viewOf is one node's view of the leases of a one-shard cluster: the test
// sets who owns the shard as that node sees it.
type viewOf struct {
	node  string
	mu    sync.Mutex
	owner string
	epoch uint64   // of node's lease when it is the owner
	gone  []string // nodes this one does not see alive
}

// lose has node see others as gone (none: all alive again).
func (v *viewOf) lose(others ...string) { v.mu.Lock(); v.gone = others; v.mu.Unlock() }

func (v *viewOf) set(owner string) { v.mu.Lock(); v.owner = owner; v.mu.Unlock() }

// retake has node take the shard again, under a new epoch.
func (v *viewOf) retake() { v.mu.Lock(); v.owner = v.node; v.epoch++; v.mu.Unlock() }

func (v *viewOf) Shard(charla.ConvID) int { return 0 }

func (v *viewOf) Owner(int) (string, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.owner, v.owner != ""
}

func (v *viewOf) Epoch(int) (uint64, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.epoch + 1, v.owner == v.node
}

func (v *viewOf) Lost(int, uint64) {}

func (v *viewOf) Nodes() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	var live []string
	for _, n := range []string{"a", "b"} {
		if !slices.Contains(v.gone, n) {
			live = append(live, n)
		}
	}
	return live
}

// startNode starts an engine that is node id of a cluster on bus, seeing
// the leases as view says.
func startNode(t *testing.T, bus *memBus, view *viewOf, opts ...transporttest.Option) *transporttest.Engine {
	e := transporttest.Start(t, append(opts, transporttest.WithDependencies(func(d *actors.Dependencies) {
		d.Cluster = &actors.Cluster{Name: "t", Node: view.node, Placement: view, Bus: bus, RequestTimeout: 2 * time.Second}
	}))...)
	// The node listens once its actors have started: a test's first
	// request must not be answered before (lost, as on NATS, and retried
	// only after the request timeout).
	waitFor(t, "node "+view.node+" on the bus", transporttest.Wait, func() bool {
		bus.mu.Lock()
		defer bus.mu.Unlock()
		return len(bus.subs["t.node."+view.node+".in"]) > 0 && len(bus.subs["t.node."+view.node+".req"]) > 0 &&
			len(bus.subs["t.node."+view.node+".inbox"]) > 0
	})
	return e
}

// TestClusterRefusedResubscriptionsDoNotMultiply: while two nodes disagree
// on who owns a conversation (one has let it go, the other has not seen that
// yet), the subscribers on the second re-subscribe and are refused until the
// views agree. Each refusal must reach only the conn that asked: answered as
// a reset of the conversation, it made every subscriber of the node ask
// again, each of those refusals as well, and the requests multiplied until
// the views agreed (a storm of re-subscriptions seen after repeated node
// kills). And once the views agree, every subscriber is live again.
func TestClusterRefusedResubscriptionsDoNotMultiply(t *testing.T) {
	const conv, subscribers = charla.ConvID("storm"), 8
	bus := newMemBus()
	va, vb := &viewOf{node: "a", owner: "a"}, &viewOf{node: "b", owner: "a"}
	a, b := startNode(t, bus, va), startNode(t, bus, vb)

	clients := make([]*transporttest.Client, subscribers)
	for i := range clients {
		clients[i] = b.Dial(t, fmt.Sprintf("agent%d", i), charla.RoleAgent)
		clients[i].Subscribe(conv, 0)
	}
	served := a.Sys.Stats().Cluster.Served.Load()

	// a lets the shard go; b still sees a as its owner. a's conversation
	// stops and tells b's subscribers to subscribe again: they ask a, which
	// refuses, until b sees the new owner.
	va.set("b")
	a.Sys.ShardChanged(0)
	const disagree = 2 * time.Second
	time.Sleep(disagree)
	asked := a.Sys.Stats().Cluster.Served.Load() - served
	t.Logf("%d re-subscriptions reached the old owner in %s from %d subscribers", asked, disagree, subscribers)
	// Each subscriber asks again every 300 ms while refused: about 7 times in
	// 2 s. Multiplying, the requests run to thousands in that time.
	if limit := int64(subscribers * 15); asked > limit {
		t.Errorf("%d requests reached the old owner in %s of disagreement from %d subscribers, want at most %d", asked, disagree, subscribers, limit)
	}
	if asked < subscribers {
		t.Errorf("%d requests reached the old owner, want every subscriber's re-subscription (%d) at least", asked, subscribers)
	}

	// b sees itself as the owner: its subscribers follow the conversation here.
	vb.set("b")
	b.Sys.ShardChanged(0)
	sender := b.Dial(t, "sender", charla.RoleAgent)
	sender.Send(transporttest.SendFrame(conv, "6f1c2e0a-8d3b-4c7e-9a51-2b4d6e8f0a13", "after the move", "s"))
	if f := sender.Next(transporttest.Wait); f.Type != wire.TypeAck {
		t.Fatalf("send after the move: %+v, want its ack", f)
	}
	for i, c := range clients {
		f := c.NextOf(wire.TypeMsg, transporttest.Wait)
		if f.Conv != conv {
			t.Errorf("subscriber %d: %+v, want a message of %s", i, f, conv)
		}
	}
}

// TestClusterForwardedRequestIsNeverForwardedOn: a request another node
// forwarded, held here while its conversation stops for a change of hands,
// is refused when the conversation turns out to be owned elsewhere by then,
// at once and without a hop to the new owner: forwarded on, it could bounce
// between nodes whose views of the leases differ.
func TestClusterForwardedRequestIsNeverForwardedOn(t *testing.T) {
	const conv = charla.ConvID("hop")
	bus := newMemBus()
	va, vb := &viewOf{node: "a", owner: "a"}, &viewOf{node: "b", owner: "a"}
	stopping, release := make(chan struct{}, 1), make(chan struct{})
	var first sync.Once // the move's passivation; the engine's close passivates again
	hold := func(c charla.ConvID, msg any) {
		if c == conv && fmt.Sprintf("%T", msg) == "actors.passivate" {
			first.Do(func() {
				stopping <- struct{}{}
				<-release
			})
		}
	}
	a := startNode(t, bus, va, transporttest.WithSystem(actors.NewSystemWithConversationHook(hold)))
	b := startNode(t, bus, vb)
	var released sync.Once
	unhold := func() { released.Do(func() { close(release) }) }
	t.Cleanup(unhold) // before the engines close, should the test stop early
	client := b.Dial(t, "agent", charla.RoleAgent)
	client.Subscribe(conv, 0)

	// a takes the shard again under a new epoch: its conversation of the
	// old epoch stops (held there), and the send b forwards meanwhile waits
	// for the next incarnation.
	va.retake()
	a.Sys.ShardChanged(0)
	<-stopping
	client.Send(transporttest.SendFrame(conv, "0b8e4f2c-5a1d-4e3b-8c7f-6d9a2e1b4c50", "held", "s"))
	waitFor(t, "the send forwarded to a", transporttest.Wait, func() bool { return a.Sys.Stats().Cluster.Served.Load() >= 2 })
	// Before that incarnation starts, the shard moves to a third node.
	va.set("c")
	unhold()

	f := client.NextOf(wire.TypeError, transporttest.Wait)
	if f.Ref != "s" || f.Code != charla.CodeUnavailable {
		t.Fatalf("answer to the send = %+v, want unavailable", f)
	}
	if n := a.Sys.Stats().Cluster.Forwarded.Load(); n != 0 {
		t.Errorf("a forwarded %d requests on, want none", n)
	}
}

// conversationFrame waits for c's next conversation frame of conv.
func conversationFrame(t *testing.T, c *transporttest.Client, conv charla.ConvID, ok func(wire.Frame) bool) wire.Frame {
	t.Helper()
	deadline := time.Now().Add(transporttest.Wait)
	for {
		f := c.NextOf(wire.TypeConversation, time.Until(deadline))
		if f.Conv == conv && ok(f) {
			return f
		}
	}
}

// TestClusterInboxOnEveryNode: the workflow has one writer in a cluster,
// the inbox leader, and agents on every node work it: an agent on another
// node sees the leader's conversation frames and presence, and acts with
// answers as on one node; when the leader moves, every agent is told to
// join again (an inbox frame without ref) and goes on with the new leader,
// which has the state the old one saved.
func TestClusterInboxOnEveryNode(t *testing.T) {
	const conv = charla.ConvID("c9")
	shared := openPebbleAt(t, t.TempDir())
	st := transporttest.WithStore(func(testing.TB) store.Store { return shared })
	bus := newMemBus()
	va, vb := &viewOf{node: "a", owner: "a"}, &viewOf{node: "b", owner: "a"}
	a, b := startNode(t, bus, va, st), startNode(t, bus, vb, st)

	yolanda := a.Dial(t, "yolanda", charla.RoleAdmin) // on the leader; sees every conversation
	yolanda.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	yolanda.NextOf(wire.TypeInbox, transporttest.Wait)
	xavier := b.Dial(t, "xavier", charla.RoleAgent)
	xavier.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	if f := xavier.NextOf(wire.TypeInbox, transporttest.Wait); f.Ref != "in" {
		t.Fatalf("inbox answer on the follower = %+v", f)
	}
	for f := yolanda.NextOf(wire.TypePresence, transporttest.Wait); f.User != "xavier"; f = yolanda.NextOf(wire.TypePresence, transporttest.Wait) {
	}

	customer := b.Dial(t, "c9", charla.RoleCustomer)
	customer.Send(transporttest.SendFrame(conv, uuid.NewString(), "hola", "s"))
	customer.NextOf(wire.TypeAck, transporttest.Wait)
	conversationFrame(t, xavier, conv, func(wire.Frame) bool { return true })

	xavier.Send(wire.Frame{Type: wire.TypeTake, Conv: conv, Ref: "take"})
	if f := conversationFrame(t, xavier, conv, func(f wire.Frame) bool { return f.Ref == "take" }); f.Assignee != "xavier" {
		t.Fatalf("take answered %+v, want xavier assigned", f)
	}
	conversationFrame(t, yolanda, conv, func(f wire.Frame) bool { return f.Assignee == "xavier" })

	// The leader moves to b: both agents join it again.
	va.set("b")
	vb.set("b")
	a.Sys.ShardChanged(0)
	b.Sys.ShardChanged(0)
	for _, c := range []*transporttest.Client{xavier, yolanda} {
		if f := c.NextOf(wire.TypeInbox, transporttest.Wait); f.Ref != "" {
			t.Fatalf("after the move: %+v, want an inbox frame without ref", f)
		}
	}
	yolanda.Send(wire.Frame{Type: wire.TypeResolve, Conv: conv, Ref: "done"})
	f := conversationFrame(t, yolanda, conv, func(f wire.Frame) bool { return f.Ref == "done" })
	if f.Status != store.StatusResolved || f.Assignee != "xavier" {
		t.Fatalf("resolve on the new leader answered %+v, want resolved, still xavier's", f)
	}
	conversationFrame(t, xavier, conv, func(f wire.Frame) bool { return f.Status == store.StatusResolved })
}

// TestClusterInboxTakesOfflineTheAgentsOfANodeGone: the leader takes the
// agents of a node it no longer sees alive offline (their conns cannot say
// so), and asks that node's agents to join again should it see it alive
// again (it was only cut off for a while).
func TestClusterInboxTakesOfflineTheAgentsOfANodeGone(t *testing.T) {
	bus := newMemBus()
	va, vb := &viewOf{node: "a", owner: "a"}, &viewOf{node: "b", owner: "a"}
	grace := transporttest.WithActors(func(c *actors.Config) { c.PresenceGrace = 50 * time.Millisecond })
	a, b := startNode(t, bus, va, grace), startNode(t, bus, vb, grace)
	yolanda := a.Dial(t, "yolanda", charla.RoleAdmin)
	yolanda.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	xavier := b.Dial(t, "xavier", charla.RoleAgent)
	xavier.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	xavier.NextOf(wire.TypeInbox, transporttest.Wait)
	presence := func(state string) {
		t.Helper()
		for f := yolanda.NextOf(wire.TypePresence, transporttest.Wait); f.User != "xavier" || f.State != state; f = yolanda.NextOf(wire.TypePresence, transporttest.Wait) {
		}
	}
	presence(wire.PresenceOnline)

	va.lose("b")
	presence(wire.PresenceOffline)
	va.lose()
	if f := xavier.NextOf(wire.TypeInbox, transporttest.Wait); f.Ref != "" {
		t.Fatalf("when b is seen again: %+v, want an inbox frame without ref", f)
	}
	presence(wire.PresenceOnline)
}

// TestClusterInboxSavesOnlyWhileLeading: an inbox whose node has lost the
// lease (paused past it, say) saves nothing more, even before its router
// has seen the change and stopped it: the next leader's states are not
// overwritten, and the agent is told the change is not stored.
func TestClusterInboxSavesOnlyWhileLeading(t *testing.T) {
	const conv = charla.ConvID("c7")
	shared := openPebbleAt(t, t.TempDir())
	va := &viewOf{node: "a", owner: "a"}
	var armed atomic.Bool
	// The lease goes while the inbox handles the action: after the router
	// checked it, before the save.
	hook := func(msgType string) {
		if msgType == "actors.workflowReq" && armed.CompareAndSwap(true, false) {
			va.set("b")
		}
	}
	a := startNode(t, newMemBus(), va, transporttest.WithStore(func(testing.TB) store.Store { return shared }),
		transporttest.WithSystem(actors.NewSystemWithInboxHook(hook)))
	yolanda := a.Dial(t, "yolanda", charla.RoleAdmin)
	yolanda.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	customer := a.Dial(t, "c7", charla.RoleCustomer)
	customer.Send(transporttest.SendFrame(conv, uuid.NewString(), "hola", "s"))
	conversationFrame(t, yolanda, conv, func(wire.Frame) bool { return true })

	armed.Store(true)
	yolanda.Send(wire.Frame{Type: wire.TypeTake, Conv: conv, Ref: "take"})
	for f := yolanda.Next(transporttest.Wait); f.Ref != "take"; f = yolanda.Next(transporttest.Wait) {
		if f.Type == wire.TypeConversation && f.Assignee == "yolanda" && f.Ref == "take" {
			t.Fatalf("the take was answered as stored: %+v", f)
		}
	}
	st, found, err := shared.LoadConvState(context.Background(), conv)
	if err != nil || (found && st.Assignee != "") {
		t.Fatalf("stored state %+v (found %v, err %v), want no assignee: the old leader saved after losing the lease", st, found, err)
	}
}
