package transport_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"go.uber.org/goleak"

	"charla"
	"charla/transport/transporttest"
	"charla/transport/wire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const wait = 10 * time.Second

func sendFrame(conv charla.ConvID, cmid, text, ref string) wire.Frame {
	return wire.Frame{Type: wire.TypeSend, Ref: ref, Conv: conv, ClientMsgID: cmid, Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text))}
}

func subscribe(t *testing.T, c *transporttest.Client, conv charla.ConvID, since charla.Seq) wire.Frame {
	t.Helper()
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Since: since, Ref: "sub"})
	f := c.NextOf(wire.TypeSubscribed, wait)
	if f.Conv != conv || f.Ref != "sub" {
		t.Fatalf("subscribed = %+v", f)
	}
	return f
}

func TestSendAckDeliver(t *testing.T) {
	e := transporttest.Start(t)
	a := e.Dial(t, "alice", charla.RoleAgent)
	b := e.Dial(t, "bob", charla.RoleAgent)
	subscribe(t, a, "c1", 0)
	subscribe(t, b, "c1", 0)

	cmid := uuid.NewString()
	a.Send(sendFrame("c1", cmid, "hola", "r1"))
	ack := a.NextOf(wire.TypeAck, wait)
	if ack.Seq != 1 || ack.Ref != "r1" || ack.ClientMsgID != cmid || ack.Duplicate || ack.TS.IsZero() {
		t.Fatalf("ack = %+v, want seq 1 for %s", ack, cmid)
	}
	m := b.NextOf(wire.TypeMsg, wait)
	if m.Seq != 1 || m.ClientMsgID != cmid || m.Sender == nil || m.Sender.ID != "alice" || m.Sender.Role != charla.RoleAgent || string(m.Body) != `{"text":"hola"}` {
		t.Fatalf("msg = %+v", m)
	}
	if !m.TS.Equal(ack.TS) {
		t.Fatalf("msg ts %v != ack ts %v", m.TS, ack.TS)
	}
}
