package transport_test

import (
	"testing"
	"time"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

func fastHeartbeat(c *actors.Config) {
	c.HeartbeatInterval = 200 * time.Millisecond
	c.HeartbeatTimeout = 600 * time.Millisecond
}

// disconnects waits for the engine to count a close for label and returns
// how long that took.
func waitDisconnect(t *testing.T, e *transporttest.Engine, label string, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for time.Since(start) < within {
		if e.Sys.Stats().Disconnects()[label] > 0 {
			return time.Since(start)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %q disconnect within %s; disconnects: %v", label, within, e.Sys.Stats().Disconnects())
	return 0
}

func TestHeartbeat(t *testing.T) {
	t.Run("silent client is closed within timeout+1s", func(t *testing.T) {
		e := transporttest.Start(t, transporttest.WithActors(fastHeartbeat))
		start := time.Now()
		raw := dialRaw(t, e.Addr, "user=mute&role=agent", 0) // never reads, never answers pings
		label := charla.DisconnectHeartbeatTimeout.Label()
		waitDisconnect(t, e, label, e.Sys.Config().HeartbeatTimeout+time.Second)
		if took := time.Since(start); took < e.Sys.Config().HeartbeatTimeout {
			t.Fatalf("closed after %s, before the %s timeout", took, e.Sys.Config().HeartbeatTimeout)
		}
		closed, code := raw.closedWithin(2 * time.Second)
		if !closed {
			t.Fatal("TCP connection still open after the heartbeat close")
		}
		if code != 4008 {
			t.Fatalf("close code %d, want 4008", code)
		}
		// Freed once the client answers the close, or after the close grace.
		for deadline := time.Now().Add(2 * time.Second); e.Sys.Stats().ConnsActive.Load() != 0; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections still active", e.Sys.Stats().ConnsActive.Load())
			}
		}
	})
	t.Run("client that only answers pings stays", func(t *testing.T) {
		e := transporttest.Start(t, transporttest.WithActors(fastHeartbeat))
		c := e.Dial(t, "quiet", charla.RoleAgent) // answers pings with pongs, sends nothing else
		select {
		case <-c.Done():
			t.Fatalf("closed (code %d) although it answered every ping", c.CloseCode())
		case <-time.After(5 * e.Sys.Config().HeartbeatTimeout):
		}
		if e.Sys.Stats().RTTCount.Load() == 0 {
			t.Fatal("no heartbeat round trip measured")
		}
		c.Send(wire.Frame{Type: wire.TypePing, T: []byte("42"), Ref: "p"})
		if f := c.NextOf(wire.TypePong, transporttest.Wait); string(f.T) != "42" || f.Ref != "p" || f.ServerTime.IsZero() {
			t.Fatalf("pong = %+v", f)
		}
	})
}
