package transport_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

func TestSlowConsumerIsClosedAndNobodyElseWaits(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.SendQueueFrames = 64
		c.MaxSendsInFlight = 32
		c.SendQueueBytes = 1 << 20
		c.HeartbeatTimeout = time.Minute // the slow one is silent too: it must be the queue that closes it
	}))
	// The slow one subscribes, then never reads again; a 4 KiB receive
	// buffer makes the kernel stop absorbing its backlog early.
	slow := dialRaw(t, e.Addr, "user=slow&role=agent", 4096)
	slow.writeText(t, wire.Encode(wire.Frame{Type: wire.TypeSubscribe, Conv: "feed"}))
	var readers []*transporttest.Client
	for i := range 2 {
		c := e.Dial(t, fmt.Sprintf("reader%d", i), charla.RoleAgent)
		c.Subscribe("feed", 0)
		readers = append(readers, c)
	}
	sender := e.Dial(t, "sender", charla.RoleAgent)
	// More than the kernel's socket buffers can hide (several MiB on loopback).
	text := strings.Repeat("x", 30000)
	const n = 400
	arrivals := make([][]time.Time, len(readers))
	readErr := make(chan error, len(readers))
	for ri, r := range readers {
		arrivals[ri] = make([]time.Time, n+1)
		go func() {
			for i := 1; i <= n; i++ {
				var f wire.Frame
				for f.Type != wire.TypeMsg {
					select {
					case f = <-r.Frames():
					case <-time.After(transporttest.Wait):
						readErr <- fmt.Errorf("reader %d: no msg %d within %s", ri, i, transporttest.Wait)
						return
					}
				}
				if f.Seq != charla.Seq(i) {
					readErr <- fmt.Errorf("reader %d got seq %d, want %d", ri, f.Seq, i)
					return
				}
				arrivals[ri][i] = time.Now()
			}
			readErr <- nil
		}()
	}
	ackAt := make([]time.Time, n+1)
	for i := range n {
		sender.Send(transporttest.SendFrame("feed", uuid.NewString(), fmt.Sprint(i, text), ""))
		if i%5 == 4 { // keep a steady pace rather than one burst
			for range 5 {
				ack := sender.NextOf(wire.TypeAck, transporttest.Wait)
				ackAt[ack.Seq] = time.Now()
			}
		}
	}
	waitDisconnect(t, e, charla.DisconnectSlowConsumer.Label(), 10*time.Second)
	if d := e.Sys.Stats().Disconnects(); len(d) != 1 {
		t.Fatalf("disconnects = %v, want only the slow consumer's", d)
	}
	if closed, _ := slow.closedWithin(5 * time.Second); !closed {
		t.Fatal("slow consumer's TCP connection still open")
	}
	for range readers {
		if err := <-readErr; err != nil {
			t.Fatal(err)
		}
	}
	for ri := range readers {
		worst := time.Duration(0)
		for seq := 1; seq <= n; seq++ {
			worst = max(worst, arrivals[ri][seq].Sub(ackAt[seq]))
		}
		// Not a latency goal (bench/ measures those): a bound that only a
		// reader held up by the slow one would break, even on a loaded machine.
		if worst > 2*time.Second {
			t.Fatalf("reader %d received a message %s after its ack", ri, worst)
		}
		t.Logf("reader %d: worst ack→delivery lag %s", ri, worst)
	}
}
