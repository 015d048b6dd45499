package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
	"charla/store"
)

// inboxRouter is the inbox's address in cluster mode (deps.inbox). The
// workflow has one writer in a cluster, the inbox leader: the node holding
// the lease of inboxShard. On the leader the router runs the inbox as its
// child and hands it what this node's conns, conversations and bots send;
// on every other node it forwards those over the bus to the leader, and
// hands the leader's answers and frames to the conns here. The leader sees
// each remote conn as an inboxStub of its own, so its presence, inbox
// subscriptions and answers work per conn exactly as for local ones.
//
// When the leader changes, the old one stops its inbox and every node tells
// its staff conns to join the inbox again (as after an inbox restart): the
// new leader loads the states from the store and learns presence and
// subscriptions afresh; the clients get an inbox frame with no ref, which
// says frames may have been missed (docs/PROTOCOL.md).
type inboxRouter struct {
	deps  *deps
	st    store.Store // the inbox's while this node leads; a follower's REST reads
	local *actor.PID  // the inbox, while this node leads
	// leader is the node the messages go to ("" none known, Node: this one).
	leader string

	// On the leader: one stub per remote conn, by node+"/"+inc+"/"+id, and
	// the staff users behind them, so that a node gone is taken offline;
	// the one-answer stubs of remote reply-tos, by PID id; and each node's
	// incarnation (process) last heard from: a node restarted under its
	// id reuses PID ids, and its old conns are gone.
	stubs map[string]*actor.PID
	staff map[string]charla.Sender
	once  map[string]*actor.PID
	incOf map[string]string
	// gone are the nodes whose agents the leader took offline: should one
	// be seen alive again (it was only cut off for a while), its agents
	// are asked to join again.
	gone map[string]bool

	// On a follower: the actions forwarded to the leader and not answered
	// yet, by conn+"|"+ref, answered unavailable after the request timeout.
	pending map[string]inboxPending
	// held waits for a leader to be known.
	held []heldInbox

	stop  func()
	timer *time.Timer
	// started: the tree is built, its gateway too. Before, there is no
	// conn to tell anything, and the gateway's name may not be usable yet.
	started bool
}

type inboxPending struct {
	to       *actor.PID
	ref      string
	capacity bool // a capacitySet (answered with inboxAnswer), else a workflowReq
	deadline time.Time
}

type heldInbox struct {
	msg   any
	since time.Time
}

// inboxKey places the inbox leader's lease: the owner of its shard leads.
const inboxKey charla.ConvID = "charla-inbox"

// inboxMaxHeld bounds what waits for a leader (a cluster with no node able
// to hold the shard for long): the oldest go first.
const inboxMaxHeld = 10000

// Messages of the router.
type (
	// inboxIn is an envelope from the bus.
	inboxIn struct{ data []byte }
	// inboxTick expires forwarded actions, retries what is held, and
	// (on the leader) takes the conns of nodes gone offline.
	inboxTick struct{}
	// inboxLeaderCheck: the leases may have changed the leader.
	inboxLeaderCheck struct{}
	// treeStarted: newSystem is done; the gateway runs.
	treeStarted struct{}
)

const inboxTickEvery = 250 * time.Millisecond

// inboxKind names an inboxEnvelope's content.
type inboxKind string

const (
	// To the leader.
	kindAppended  inboxKind = "appended"
	kindRead      inboxKind = "read"
	kindStaff     inboxKind = "staff"
	kindSubscribe inboxKind = "subscribe"
	kindPresence  inboxKind = "presence"
	kindAction    inboxKind = "action"
	kindCapacity  inboxKind = "capacity"
	// From the leader, to one conn or reply-to (Conn) of a node.
	kindFrame  inboxKind = "frame"
	kindDone   inboxKind = "done"
	kindAnswer inboxKind = "answer"
	// From the leader, to a whole node: its staff conns join again.
	kindRejoin inboxKind = "rejoin"
)

// inboxEnvelope is one inbox message between nodes.
type inboxEnvelope struct {
	Kind inboxKind `json:"k"`
	From string    `json:"from"`
	// Inc is the incarnation (process) of the follower node the envelope
	// is from or for: what the leader sends a conn of an earlier process
	// of that node must reach nobody, though a PID id may be reused.
	Inc string `json:"inc,omitempty"`
	// Conn is the PID id, on the asking node, of the conn or reply-to.
	Conn     string           `json:"conn,omitempty"`
	Conv     charla.ConvID    `json:"conv,omitempty"`
	User     charla.Sender    `json:"user"`
	Msgs     []charla.Message `json:"msgs,omitempty"`
	Seq      charla.Seq       `json:"seq,omitempty"`
	Up       bool             `json:"up,omitempty"`
	Away     bool             `json:"away,omitempty"`
	Op       string           `json:"op,omitempty"`
	To       string           `json:"to,omitempty"`
	Tags     []string         `json:"tags,omitempty"`
	Ref      string           `json:"ref,omitempty"`
	Agent    string           `json:"agent,omitempty"`
	Capacity int              `json:"capacity,omitempty"`
	Frame    json.RawMessage  `json:"frame,omitempty"`
	Code     string           `json:"code,omitempty"`
	State    *store.ConvState `json:"state,omitempty"`
	Err      *charla.Error    `json:"err,omitempty"`
}

func (c *Cluster) inboxSubject(node string) string { return c.Name + ".node." + node + ".inbox" }

func newInboxRouter(d *deps, st store.Store) *inboxRouter {
	return &inboxRouter{deps: d, st: st, stubs: map[string]*actor.PID{},
		staff: map[string]charla.Sender{}, once: map[string]*actor.PID{}, incOf: map[string]string{}, gone: map[string]bool{},
		pending: map[string]inboxPending{}}
}

func (r *inboxRouter) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		c, root, self := r.deps.cluster, r.deps.root, ctx.Self()
		stop, err := c.Bus.Subscribe(c.inboxSubject(c.Node), func(data []byte) { root.Send(self, inboxIn{data: data}) })
		if err != nil {
			panic(err) // restarted with backoff by our supervisor
		}
		r.stop = stop
		r.check(ctx)
		r.timer = sendAfter(root, inboxTickEvery, self, inboxTick{})
	case treeStarted:
		r.started = true
	case inboxLeaderCheck:
		r.check(ctx)
	case inboxTick:
		r.check(ctx)
		r.tick(ctx)
		r.timer = sendAfter(r.deps.root, inboxTickEvery, ctx.Self(), inboxTick{})
	case inboxIn:
		r.check(ctx)
		e, err := decodeInbox(m.data)
		if err != nil {
			r.deps.log.Warn().Err(err).Msg("inbox message from the bus dropped")
			return
		}
		r.onEnvelope(ctx, e)
	case inboxRestarted:
		// From our inbox, restarted after a failure: every node's staff
		// conns join its next incarnation.
		r.publishAll(inboxEnvelope{Kind: kindRejoin})
		r.rejoin(ctx)
	case inboxQuery:
		r.query(m)
	case flushReq:
		if r.local != nil {
			ctx.Forward(r.local)
			return
		}
		ctx.Respond(flushed{})
	case *actor.Terminated:
		delete(r.once, m.Who.Id)
		if r.local != nil && m.Who.Id == r.local.Id {
			// Stopped by its supervisor after too many failures: lead no
			// more until the next check, which starts it again.
			r.local, r.leader = nil, ""
		}
	case *actor.Stopping:
		if r.timer != nil {
			r.timer.Stop()
		}
		if r.stop != nil {
			r.stop()
		}
	case *actor.Stopped, *actor.Restarting:
	default:
		r.check(ctx)
		r.route(ctx, m)
	}
}

// check follows the leases: this node starts its inbox when it takes the
// inbox's shard and stops it when it loses it, and the staff conns here
// join again whenever the leader changes. It runs before each message, so
// that a node that has just taken the shard serves the first message sent
// to it even before its own change report arrives.
func (r *inboxRouter) check(ctx actor.Context) {
	leader := r.deps.cluster.inboxLeader()
	if leader == r.leader {
		return
	}
	was := r.leader
	r.leader = leader
	if was == r.deps.cluster.Node {
		r.resign(ctx)
	}
	if leader == r.deps.cluster.Node {
		d, st := r.deps, r.st
		r.local = ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newInbox(d, st) }))
	}
	r.deps.log.Info().Str("leader", leader).Str("was", was).Msg("cluster: inbox leader changed")
	if leader == "" {
		return
	}
	// Even when it is the one we had before the lapse: it may have taken
	// our agents offline meanwhile.
	r.rejoin(ctx)
	if leader == r.deps.cluster.Node {
		// A leader restarted under the same id looks unchanged to a node
		// whose view of the lease lagged: tell every node.
		r.publishAll(inboxEnvelope{Kind: kindRejoin})
	}
	r.flushHeld(ctx)
}

// rejoin has this node's staff conns join the leader's inbox afresh.
func (r *inboxRouter) rejoin(ctx actor.Context) {
	if !r.started {
		return
	}
	ctx.Send(ctx.ActorSystem().NewLocalPID(gatewayName), inboxRestarted{})
}

// resign stops this node's inbox and forgets the remote conns: their nodes
// join the new leader. What the inbox had not saved yet is its activity
// (workflow changes are saved before they are answered), which the next
// leader rebuilds from the log when it loads.
func (r *inboxRouter) resign(ctx actor.Context) {
	if r.local != nil {
		ctx.Stop(r.local)
		r.local = nil
	}
	for _, stubs := range []map[string]*actor.PID{r.stubs, r.once} {
		for key, pid := range stubs {
			ctx.Stop(pid)
			delete(stubs, key)
		}
	}
	clear(r.staff)
	clear(r.gone)
	clear(r.incOf)
}

// route takes a message for the inbox from this node.
func (r *inboxRouter) route(ctx actor.Context, msg any) {
	switch {
	case r.leader == r.deps.cluster.Node:
		ctx.RequestWithCustomSender(r.local, msg, ctx.Sender())
	case r.leader == "":
		if len(r.held) == inboxMaxHeld {
			r.expire(ctx, r.held[0].msg)
			r.held = r.held[1:]
		}
		r.held = append(r.held, heldInbox{msg: msg, since: time.Now()})
	default:
		r.forward(ctx, msg)
	}
}

// forward sends msg to the leader.
func (r *inboxRouter) forward(ctx actor.Context, msg any) {
	var e inboxEnvelope
	switch m := msg.(type) {
	case convAppended:
		e = inboxEnvelope{Kind: kindAppended, Conv: m.conv, Msgs: m.msgs}
	case convRead:
		e = inboxEnvelope{Kind: kindRead, Conv: m.conv, User: m.user, Seq: m.seq}
	case staffConn:
		e = inboxEnvelope{Kind: kindStaff, Conn: m.pid.Id, User: m.user, Up: m.up}
	case inboxSubscribe:
		e = inboxEnvelope{Kind: kindSubscribe, Conn: m.conn.Id, User: m.user, Ref: m.ref}
	case presenceSet:
		e = inboxEnvelope{Kind: kindPresence, User: m.user, Away: m.away}
	case workflowReq:
		e = inboxEnvelope{Kind: kindAction, Op: m.op, Conv: m.conv, User: m.by, To: m.to, Tags: m.tags, Ref: m.ref}
		if m.replyTo != nil {
			e.Conn = m.replyTo.Id
			r.pending[pendingKey(e.Conn, m.ref)] = inboxPending{to: m.replyTo, ref: m.ref, deadline: time.Now().Add(r.deps.cluster.RequestTimeout)}
		}
	case capacitySet:
		e = inboxEnvelope{Kind: kindCapacity, Agent: m.agent, Capacity: m.capacity, Conn: m.replyTo.Id}
		r.pending[pendingKey(e.Conn, "")] = inboxPending{to: m.replyTo, capacity: true, deadline: time.Now().Add(r.deps.cluster.RequestTimeout)}
	default:
		r.deps.log.Warn().Str("type", typeName(msg)).Msg("inbox message not forwarded: unknown")
		return
	}
	e.Inc = r.deps.cluster.incarnation
	sendInbox(r.deps, r.leader, e)
}

// pendingKey names a forwarded action by its asker and ref (a capacity's
// answer has no ref).
func pendingKey(conn, ref string) string { return conn + "|" + ref }

// onEnvelope takes an envelope from the bus: a request from a follower (on
// the leader) or an answer or frame from the leader (on a follower).
func (r *inboxRouter) onEnvelope(ctx actor.Context, e inboxEnvelope) {
	if e.From == "" || e.From == r.deps.cluster.Node {
		return
	}
	switch e.Kind {
	case kindFrame, kindDone, kindAnswer:
		if e.Inc == r.deps.cluster.incarnation {
			r.deliver(ctx, e)
		}
		return
	case kindRejoin:
		if e.From == r.leader {
			r.rejoin(ctx)
		}
		return
	}
	if r.local == nil {
		// The follower's view is behind: it finds the leader by itself and
		// its conns join again. An action waits for its answer there:
		// refuse it now rather than at its timeout.
		refusal := inboxEnvelope{Kind: kindDone, Inc: e.Inc, Conn: e.Conn, Ref: e.Ref, Err: errInboxMoving()}
		switch e.Kind {
		case kindCapacity:
			refusal.Kind = kindAnswer
			fallthrough
		case kindAction:
			sendInbox(r.deps, e.From, refusal)
		}
		return
	}
	if inc := r.incOf[e.From]; inc != e.Inc {
		if inc != "" {
			r.dropNode(ctx, e.From) // restarted: its old conns are gone
		}
		r.incOf[e.From] = e.Inc
	}
	var msg any
	switch e.Kind {
	case kindAppended:
		msg = convAppended{conv: e.Conv, msgs: e.Msgs}
	case kindRead:
		msg = convRead{conv: e.Conv, user: e.User, seq: e.Seq}
	case kindStaff:
		stub := r.stub(ctx, e.From, e.Inc, e.Conn, false)
		key := stubKey(e.From, e.Inc, e.Conn)
		if e.Up {
			r.staff[key] = e.User
		} else {
			delete(r.staff, key)
			delete(r.stubs, key)
			defer ctx.Stop(stub) // after the inbox has the message: it drops the subscription
		}
		msg = staffConn{user: e.User, pid: stub, up: e.Up}
	case kindSubscribe:
		msg = inboxSubscribe{conn: r.stub(ctx, e.From, e.Inc, e.Conn, false), user: e.User, ref: e.Ref}
	case kindPresence:
		msg = presenceSet{user: e.User, away: e.Away}
	case kindAction:
		req := workflowReq{op: e.Op, conv: e.Conv, by: e.User, to: e.To, tags: e.Tags, ref: e.Ref}
		if e.Conn != "" { // a bot's handoff waits for no answer
			req.replyTo = r.stub(ctx, e.From, e.Inc, e.Conn, true)
		}
		msg = req
	case kindCapacity:
		msg = capacitySet{agent: e.Agent, capacity: e.Capacity, replyTo: r.stub(ctx, e.From, e.Inc, e.Conn, true)}
	default:
		r.deps.log.Warn().Str("from", e.From).Str("kind", string(e.Kind)).Msg("unknown inbox message dropped")
		return
	}
	ctx.Send(r.local, msg)
}

// stub is the leader's stand-in for conn id of node: what the inbox sends
// it goes to that conn. once: a reply-to that gets one answer (an action's
// or a REST request's); a conn that asks again gets a fresh one.
func (r *inboxRouter) stub(ctx actor.Context, node, inc, id string, once bool) *actor.PID {
	key := stubKey(node, inc, id)
	if pid, ok := r.stubs[key]; ok {
		return pid
	}
	d := r.deps
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return &inboxStub{deps: d, node: node, inc: inc, id: id, once: once} }))
	if once {
		r.once[pid.Id] = pid
	} else {
		r.stubs[key] = pid
	}
	return pid
}

// deliver hands an answer or frame from the leader to its conn here.
func (r *inboxRouter) deliver(ctx actor.Context, e inboxEnvelope) {
	to := actor.NewPID(ctx.ActorSystem().Address(), e.Conn)
	switch e.Kind {
	case kindFrame:
		ctx.Send(to, soapFrame{frame: e.Frame, code: charla.Code(e.Code)})
	case kindDone:
		delete(r.pending, pendingKey(e.Conn, e.Ref))
		done := workflowDone{ref: e.Ref, err: e.Err}
		if e.State != nil {
			done.state = *e.State
		}
		ctx.Send(to, done)
	case kindAnswer:
		delete(r.pending, pendingKey(e.Conn, ""))
		a := inboxAnswer{}
		if e.Err != nil {
			a.err = e.Err
		}
		ctx.Send(to, a)
	}
}

// tick answers the forwarded actions the leader did not answer in time,
// routes again what waits for a leader, and, on the leader, takes offline
// the staff of nodes that are gone (their conns cannot say so).
func (r *inboxRouter) tick(ctx actor.Context) {
	now := time.Now()
	for key, p := range r.pending {
		if now.After(p.deadline) {
			delete(r.pending, key)
			r.deps.stats.Cluster.Unanswered.Add(1)
			r.fail(ctx, p.to, p.ref, p.capacity, charla.Errorf(charla.CodeUnavailable, "the inbox leader did not answer; retry"))
		}
	}
	if r.leader == "" {
		kept := r.held[:0]
		for _, h := range r.held {
			if now.Sub(h.since) > r.deps.cluster.RequestTimeout && r.expire(ctx, h.msg) {
				continue
			}
			kept = append(kept, h)
		}
		clear(r.held[len(kept):])
		r.held = kept
	}
	if r.local == nil {
		return
	}
	live := map[string]bool{}
	for _, n := range r.deps.cluster.Placement.Nodes() {
		live[n] = true
	}
	for node := range r.gone {
		if live[node] {
			delete(r.gone, node)
			sendInbox(r.deps, node, inboxEnvelope{Kind: kindRejoin})
		}
	}
	for node := range r.incOf {
		if !live[node] {
			r.dropNode(ctx, node)
			r.gone[node] = true
		}
	}
}

func stubKey(node, inc, id string) string { return node + "/" + inc + "/" + id }

// dropNode takes the agents of node's conns offline and forgets them.
func (r *inboxRouter) dropNode(ctx actor.Context, node string) {
	for key, user := range r.staff {
		if n, _, _ := strings.Cut(key, "/"); n != node {
			continue
		}
		pid := r.stubs[key]
		ctx.Send(r.local, staffConn{user: user, pid: pid})
		ctx.Stop(pid)
		delete(r.staff, key)
		delete(r.stubs, key)
	}
	delete(r.incOf, node)
}

// expire answers a held request that waited too long for a leader and
// reports whether it was one (anything else keeps waiting).
func (r *inboxRouter) expire(ctx actor.Context, msg any) bool {
	err := errInboxMoving()
	switch m := msg.(type) {
	case workflowReq:
		if m.replyTo != nil {
			r.fail(ctx, m.replyTo, m.ref, false, err)
		}
		return true
	case capacitySet:
		r.fail(ctx, m.replyTo, "", true, err)
		return true
	}
	return false
}

func (r *inboxRouter) fail(ctx actor.Context, to *actor.PID, ref string, capacity bool, err *charla.Error) {
	if capacity {
		ctx.Send(to, inboxAnswer{err: err})
		return
	}
	ctx.Send(to, workflowDone{ref: ref, err: err})
}

func (r *inboxRouter) flushHeld(ctx actor.Context) {
	held := r.held
	r.held = nil
	for _, h := range held {
		r.route(ctx, h.msg)
	}
}

// query answers a REST read here, against the store: only the leader
// changes the states, and it saves every workflow change before answering
// it (activity within Config.InboxSaveDelay), so a follower's read is at
// most that much behind.
func (r *inboxRouter) query(m inboxQuery) {
	if r.local != nil {
		r.deps.root.Send(r.local, m)
		return
	}
	st, ok := r.st.(workflowStore)
	if !ok {
		r.deps.root.Send(m.replyTo, inboxAnswer{err: charla.Errorf(charla.CodeUnavailable, "this store keeps no conversation lists")})
		return
	}
	root := r.deps.root
	go func() {
		c, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
		defer cancel()
		v, err := m.fn(c, st)
		root.Send(m.replyTo, inboxAnswer{v: v, err: err})
	}()
}

// sendInbox publishes e, from this node, on node's inbox subject. Nothing
// durable rides on it: an action lost is answered at its timeout, and a
// frame lost is what the inbox frame without ref tells clients to expect.
func sendInbox(d *deps, node string, e inboxEnvelope) {
	e.From = d.cluster.Node
	if err := d.cluster.Bus.Publish(d.cluster.inboxSubject(node), e.encode()); err != nil {
		d.log.Warn().Err(err).Str("node", node).Str("kind", string(e.Kind)).Msg("inbox message not sent")
	}
}

func (r *inboxRouter) publishAll(e inboxEnvelope) {
	for _, n := range r.deps.cluster.Placement.Nodes() {
		if n != r.deps.cluster.Node {
			sendInbox(r.deps, n, e)
		}
	}
}

// inboxStub stands, on the leader, for a conn (or a reply-to) of another
// node: the inbox sends it what it sends a local conn, and it passes that
// on to the conn over the bus.
type inboxStub struct {
	deps *deps
	node string
	inc  string // the node's process the conn is in
	id   string
	once bool
}

func (s *inboxStub) Receive(ctx actor.Context) {
	e := inboxEnvelope{Conn: s.id, Inc: s.inc}
	switch m := ctx.Message().(type) {
	case soapFrame:
		e.Kind, e.Frame, e.Code = kindFrame, m.frame, string(m.code)
	case workflowDone:
		e.Kind, e.Ref, e.Err = kindDone, m.ref, m.err
		if m.err == nil {
			state := m.state
			e.State = &state
		}
	case inboxAnswer:
		e.Kind = kindAnswer
		if m.err != nil {
			e.Err = asProtocolError(m.err)
		}
	default:
		return
	}
	sendInbox(s.deps, s.node, e)
	if s.once {
		ctx.Stop(ctx.Self())
	}
}

// asProtocolError is err as a client may be told it (storeAnswerErr's
// answer, without the cause a client must not see).
func asProtocolError(err error) *charla.Error {
	var e *charla.Error
	if errors.As(storeAnswerErr(err), &e) {
		return e
	}
	return charla.Errorf(charla.CodeUnavailable, "the conversation store is unavailable; retry")
}

func errInboxMoving() *charla.Error {
	return charla.Errorf(charla.CodeUnavailable, "the inbox is changing nodes; retry")
}

func decodeInbox(data []byte) (inboxEnvelope, error) {
	var e inboxEnvelope
	if err := json.Unmarshal(data, &e); err != nil {
		return e, fmt.Errorf("decode inbox message: %w", err)
	}
	return e, nil
}

func (e inboxEnvelope) encode() []byte {
	b, err := json.Marshal(e)
	if err != nil {
		panic(fmt.Sprintf("encode inbox message %s: %v", e.Kind, err)) // every field is plain data
	}
	return b
}
