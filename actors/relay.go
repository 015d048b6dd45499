package actors

import (
	"github.com/asynkron/protoactor-go/actor"

	"charla"
)

// nodeRelay stands, on an owner, for one other node of the cluster: it is
// the conn of every request that node forwards here, and one subscriber of
// each conversation that node has subscribers in. What the conversations
// send it (answers, deliveries, relayed frames) goes to that node's in
// subject, each durable message once per node however many of its conns
// follow the conversation.
type nodeRelay struct {
	deps    *deps
	node    string
	subject string
	// convs are the conversations it follows: unsubscribed when it stops,
	// so that a node gone does not keep them loaded.
	convs map[charla.ConvID]struct{}
}

func newNodeRelay(d *deps, node string) *nodeRelay {
	return &nodeRelay{deps: d, node: node, subject: d.cluster.inSubject(node), convs: map[charla.ConvID]struct{}{}}
}

func (n *nodeRelay) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case subscribeReply:
		e := peerEnvelope{Kind: peerSubscribed, Conv: m.conv, Ref: m.ref, Head: m.head, Since: m.since, Complete: m.complete, Err: m.err}
		if m.err == nil {
			n.convs[m.conv] = struct{}{}
			e.Recent = make([]peerDelivery, len(m.recent))
			for i, d := range m.recent {
				e.Recent[i] = peerDelivery{Seq: d.seq, Frame: d.frame}
			}
		}
		n.publish(e)
	case sendReply:
		e := peerEnvelope{Kind: peerAck, Conv: m.conv, Ref: m.ref, Err: m.err}
		if m.err == nil {
			e.Ack = &m.ack
		}
		n.publish(e)
	case requestFailed:
		n.publish(peerEnvelope{Kind: peerFailed, Conv: m.conv, Ref: m.ref, Err: m.err})
	case readDone:
		n.publish(peerEnvelope{Kind: peerReadDone, Conv: m.conv, Ref: m.ref, Head: m.head})
	case *delivery:
		n.publish(peerEnvelope{Kind: peerMsg, Conv: m.conv, Seq: m.seq, Frame: m.frame})
	case *relay:
		n.publish(peerEnvelope{Kind: peerRelay, Conv: m.conv, Frame: m.frame})
	case convReset:
		delete(n.convs, m.conv) // the conversation forgot us; the node subscribes again
		n.publish(peerEnvelope{Kind: peerReset, Conv: m.conv})
	case unsubscribeReq:
		delete(n.convs, m.conv)
		ctx.Send(n.deps.conversations, unsubscribeReq{conv: m.conv, conn: ctx.Self()})
	case *actor.Stopping:
		// Stopped as its node looked gone (or with the peers actor). Should
		// the node in fact be alive, its subscribers must not wait for frames
		// that will never come: a reset has them subscribe again.
		for conv := range n.convs {
			ctx.Send(n.deps.conversations, unsubscribeReq{conv: conv, conn: ctx.Self()})
			n.publish(peerEnvelope{Kind: peerReset, Conv: conv})
		}
	}
}

func (n *nodeRelay) publish(e peerEnvelope) {
	e.From = n.deps.cluster.Node // the owner: where the node says it no longer follows
	if err := n.deps.cluster.Bus.Publish(n.subject, e.encode()); err != nil {
		// The node's conns find out by their seq check or their request's
		// timeout; nothing durable depends on this publish.
		n.deps.log.Warn().Err(err).Str("node", n.node).Str("kind", string(e.Kind)).Msg("frame to node not sent")
	}
}
