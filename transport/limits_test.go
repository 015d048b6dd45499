package transport_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

// One customer can hold only so many conversations loaded at once; staff
// are not bound, and a customer's unloaded conversations free their slots.
func TestConversationsPerCustomer(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.MaxCustomerConversations = 3
		c.IdleTimeout, c.SweepInterval = time.Second, 200*time.Millisecond
	}))
	send := func(c *transporttest.Client, conv charla.ConvID) wire.Frame {
		t.Helper()
		ref := uuid.NewString()
		c.Send(transporttest.SendFrame(conv, ref, "x", ref))
		for {
			if f := c.Next(transporttest.Wait); f.Ref == ref {
				return f
			}
		}
	}
	bob := e.Dial(t, "bob", charla.RoleCustomer)
	for i := range 3 {
		if f := send(bob, charla.ConvID(fmt.Sprintf("bob:%d", i))); f.Type != wire.TypeAck {
			t.Fatalf("conversation %d: %+v", i, f)
		}
	}
	f := send(bob, "bob:3")
	if f.Type != wire.TypeError || f.Code != charla.CodeRateLimited {
		t.Fatalf("fourth conversation: %+v, want rate_limited", f)
	}
	t.Logf("refused: %s", f.Message)
	if f := send(bob, "bob:0"); f.Type != wire.TypeAck {
		t.Fatalf("an open conversation stays usable: %+v", f)
	}
	agent := e.Dial(t, "ana", charla.RoleAgent)
	if f := send(agent, "bob:4"); f.Type != wire.TypeAck {
		t.Fatalf("agents are not bound: %+v", f)
	}
	// Once bob's conversations idle out, he may open new ones.
	deadline := time.Now().Add(20 * time.Second)
	for {
		f := send(bob, "bob:3")
		if f.Type == wire.TypeAck {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the idle timeout: %+v", f)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
