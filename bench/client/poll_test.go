package client

import (
	"context"
	"fmt"
	"testing"
	"time"

	"charla"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// The long-polling Conn against the real engine: the same frames a
// WebSocket Conn hands its Handler (welcome kept, subscribed with the
// caller's ref, acks of sends made over POST /v1/send, every msg once and
// in order, pongs), and the session's end as its close code (here the
// engine's --max-session ends it: 4001).
func TestPollConn(t *testing.T) {
	const maxSession = 5 * time.Second
	e := transporttest.Start(t, transporttest.WithTransport(func(c *transport.Config) {
		c.Auth = transport.Authenticator{Mode: transport.AuthJWT, Secret: transporttest.Secret, MaxSession: maxSession}
	}))
	ctx := context.Background()
	secret := string(transporttest.Secret)
	ra, rb := newRecorder(), newRecorder()
	closed := make(chan error, 1)
	hb := rb.handler()
	hb.Close = func(_ *Conn, err error, _ time.Time) { closed <- err }
	a, err := Dial(ctx, Config{Addr: e.Addr, User: "a", Role: charla.RoleAgent, Secret: secret, Transport: TransportPoll}, ra.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Dial(ctx, Config{Addr: e.Addr, User: "b", Role: charla.RoleAgent, Secret: secret, Transport: TransportPoll}, hb)
	if err != nil {
		t.Fatal(err)
	}
	if w := b.Welcome(); w.Type != wire.TypeWelcome || w.User != "b" || w.Timeout <= 0 {
		t.Fatalf("welcome %+v", w)
	}
	if err := b.Subscribe("pc", 0, "s1"); err != nil {
		t.Fatal(err)
	}
	if s := rb.wait(t, wire.TypeSubscribed, 1); s[0].Ref != "s1" || s[0].Conv != "pc" {
		t.Fatalf("subscribed %+v, want the subscribe's ref s1", s[0])
	}
	const n = 20
	for i := range n {
		id := fmt.Sprintf("00000000-0000-4000-8000-%012d", i)
		if err := a.Send("pc", id, []byte(`{"text":"hi"}`), id); err != nil {
			t.Fatal(err)
		}
	}
	if acks := ra.wait(t, wire.TypeAck, n); len(acks) != n {
		t.Fatalf("%d acks", len(acks))
	}
	msgs := rb.wait(t, wire.TypeMsg, n)
	for i, m := range msgs {
		if m.Seq != charla.Seq(i+1) {
			t.Fatalf("msg %d has seq %d: not every seq once and in order", i, m.Seq)
		}
	}
	if err := b.Ping(777, "p"); err != nil {
		t.Fatal(err)
	}
	if p := rb.wait(t, wire.TypePong, 1); string(p[0].T) != "777" {
		t.Fatalf("pong t = %s", p[0].T)
	}
	rb.mu.Lock()
	extra := len(rb.frames) - 1 - n - 1 // subscribed, the msgs, the pong
	rb.mu.Unlock()
	if extra != 0 {
		t.Fatalf("%d frames beyond subscribed, %d msgs and the pong", extra, n)
	}

	select {
	case err := <-closed:
		if code := CloseCode(err); code != 4001 {
			t.Fatalf("session ended with %v (code %d), want 4001", err, code)
		}
	case <-time.After(maxSession + 10*time.Second):
		t.Fatal("the session's end was not seen")
	}
	b.Close()
}
