package actors

import (
	"fmt"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// peers is this node's end of the cluster's bus (cluster mode only). It
// takes the requests other nodes forward to the conversations owned here
// and hands them to the conversations actor with that node's relay as their
// conn; it hands the owners' answers and frames for conversations owned
// elsewhere to their proxies (remoteConv) here.
type peers struct {
	deps   *deps
	relays map[string]*actor.PID // by node
	stops  []func()
	sweep  *time.Timer
}

// relaySweep stops the relays of nodes that are no longer live.
type relaySweep struct{}

// relaySweepEvery is how often relays of nodes gone are looked for: a dead
// node's relay only costs its subscriptions, which keep conversations
// loaded here, so a slow sweep is enough.
const relaySweepEvery = 10 * time.Second

// peerIn is one message from the bus; req tells the subject it came on.
type peerIn struct {
	data []byte
	req  bool
}

func newPeers(d *deps) *peers { return &peers{deps: d, relays: map[string]*actor.PID{}} }

func (p *peers) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		p.subscribe(ctx)
		p.sweep = sendAfter(p.deps.root, relaySweepEvery, ctx.Self(), relaySweep{})
	case relaySweep:
		live := map[string]bool{}
		for _, n := range p.deps.cluster.Placement.Nodes() {
			live[n] = true
		}
		for node, pid := range p.relays {
			if !live[node] {
				ctx.Stop(pid) // it unsubscribes from every conversation it followed
				delete(p.relays, node)
			}
		}
		p.sweep = sendAfter(p.deps.root, relaySweepEvery, ctx.Self(), relaySweep{})
	case peerIn:
		e, err := decodePeer(m.data)
		if err != nil {
			p.deps.log.Warn().Err(err).Msg("peer message dropped")
			return
		}
		if !m.req {
			ctx.Send(p.deps.conversations, ownerFrame{env: e})
			return
		}
		p.onRequest(ctx, e)
	case *actor.Stopping, *actor.Restarting:
		if p.sweep != nil {
			p.sweep.Stop()
		}
		for _, stop := range p.stops {
			stop()
		}
		p.stops = nil
	}
}

// subscribe listens on this node's two subjects. The handlers only hand the
// bytes over: decoding and routing happen in the actor, in arrival order.
func (p *peers) subscribe(ctx actor.Context) {
	c, root, self := p.deps.cluster, p.deps.root, ctx.Self()
	for _, req := range []bool{true, false} {
		subject := c.inSubject(c.Node)
		if req {
			subject = c.reqSubject(c.Node)
		}
		stop, err := c.Bus.Subscribe(subject, func(data []byte) { root.Send(self, peerIn{data: data, req: req}) })
		if err != nil {
			panic(err) // restarted with backoff by our supervisor, as for any actor that cannot start
		}
		p.stops = append(p.stops, stop)
	}
}

func (p *peers) onRequest(ctx actor.Context, e peerEnvelope) {
	if e.From == "" || e.From == p.deps.cluster.Node {
		p.deps.log.Warn().Str("from", e.From).Str("kind", string(e.Kind)).Msg("peer request without a valid sender node dropped")
		return
	}
	relay := p.relay(ctx, e.From)
	var req routed
	switch e.Kind {
	case peerSend:
		if e.Msg == nil || e.Msg.Conv != e.Conv {
			p.deps.log.Warn().Str("from", e.From).Msg("peer send without its message dropped")
			return
		}
		req = sendReq{conn: relay, ref: e.Ref, msg: *e.Msg}
	case peerSubscribe:
		// Never a resume here, even for a conn's re-subscription: a refused
		// resume is answered with a reset, which the relay would pass on
		// to the asking node as a reset of the whole conversation, making
		// every subscriber there ask again (and each refusal of those
		// again: a storm while two nodes disagree on the owner). As a
		// plain subscribe, a refusal is an answer to its one request, and
		// the asking node's proxy spaces that conn's retries.
		req = subscribeReq{conv: e.Conv, conn: relay, by: e.By, ref: e.Ref, since: e.Since}
	case peerUnsubscribe:
		ctx.Send(relay, unsubscribeReq{conv: e.Conv, conn: relay})
		return
	case peerTyping:
		req = typingReq{conv: e.Conv, conn: relay, by: e.By, state: e.State}
	case peerRead:
		// Always confirmed: the asking node answers its conn and relays the
		// read frame to its other subscribers only once it is accepted.
		req = readReq{conv: e.Conv, conn: relay, ref: e.Ref, by: e.By, seq: e.Seq, confirm: true}
	case peerStatus:
		req = statusNote{conv: e.Conv, frame: e.Frame}
	default:
		p.deps.log.Warn().Str("from", e.From).Str("kind", string(e.Kind)).Msg("unknown peer request dropped")
		return
	}
	p.deps.stats.Cluster.Served.Add(1)
	ctx.Send(p.deps.conversations, remoteReq{req: req})
}

// relay is the stand-in of node here, started on its first request.
func (p *peers) relay(ctx actor.Context, node string) *actor.PID {
	if pid, ok := p.relays[node]; ok {
		return pid
	}
	d := p.deps
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return newNodeRelay(d, node) }))
	p.relays[node] = pid
	return pid
}

// checkNodeID reports whether id can be a node's subject token.
func checkNodeID(id string) error {
	if id == "" {
		return fmt.Errorf("cluster node id is empty")
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("cluster node id %q: only letters, digits, '-' and '_' (it is a NATS subject token)", id)
		}
	}
	return nil
}
