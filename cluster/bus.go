package cluster

import (
	"fmt"

	"github.com/nats-io/nats.go"
)

// Bus is the link between the nodes of a cluster on core NATS: requests to
// a conversation's owner and the owner's answers and frames. Core NATS is
// at most once and keeps each publisher's order per subscriber, which is
// what the engine's protocol between nodes is built on (actors.Bus).
type Bus struct{ nc *nats.Conn }

// NewBus is a Bus over nc, which the caller closes.
func NewBus(nc *nats.Conn) *Bus { return &Bus{nc: nc} }

// Publish sends data on subject; nil means NATS took it, not that anyone
// received it.
func (b *Bus) Publish(subject string, data []byte) error {
	if err := b.nc.Publish(subject, data); err != nil {
		return fmt.Errorf("publish %s: %w", subject, err)
	}
	return nil
}

// Subscribe calls handle with each message on subject, one at a time and in
// order, on a goroutine of the subscription's own.
func (b *Bus) Subscribe(subject string, handle func(data []byte)) (stop func(), err error) {
	sub, err := b.nc.Subscribe(subject, func(m *nats.Msg) { handle(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	// A burst to a busy node must queue rather than be dropped as a slow
	// consumer: the default 512 KiB of pending data is a few hundred frames.
	if err := sub.SetPendingLimits(1<<20, 256<<20); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe %s: %w", subject, err)
	}
	return func() { _ = sub.Unsubscribe() }, nil
}
