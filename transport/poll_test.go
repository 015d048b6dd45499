package transport_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/transport/transporttest"
	"charla/wire"
)

// A client whose WebSocket is cut switches to long-polling with its
// cursors, while another client sends fast: it receives every message
// exactly once, in order, across the switch (and across a poll answer it
// lost), and its sends retried over HTTP answer duplicate with their seq.
func TestFallbackFromWebSocketToPolling(t *testing.T) {
	e := transporttest.Start(t)
	const conv, fast = charla.ConvID("cus:fb"), 600
	rx := e.Dial(t, "cus", charla.RoleCustomer)

	// Three sends over the WebSocket, acked.
	wsAcks := map[string]wire.Frame{}
	var cmids []string
	for i := range 3 {
		cmid := uuid.NewString()
		cmids = append(cmids, cmid)
		rx.Send(transporttest.SendFrame(conv, cmid, "ws"+string(rune('a'+i)), ""))
	}
	for range 3 {
		a := rx.NextOf(wire.TypeAck, transporttest.Wait)
		wsAcks[a.ClientMsgID] = a
	}
	rx.Subscribe(conv, 0)

	tx := e.Dial(t, "ana", charla.RoleAgent)
	go func() {
		for i := range fast {
			if tx.SendRaw(wire.Encode(transporttest.SendFrame(conv, uuid.NewString(), "fast", ""))) != nil {
				return
			}
			if i%50 == 0 {
				time.Sleep(5 * time.Millisecond) // spread over the switch
			}
		}
	}()

	var last charla.Seq
	seen := func(f wire.Frame, via string) {
		t.Helper()
		if f.Type == wire.TypeError {
			t.Fatalf("error frame over %s: %+v", via, f)
		}
		if f.Type != wire.TypeMsg || f.Conv != conv {
			return
		}
		if f.Seq != last+1 {
			t.Fatalf("over %s: msg seq %d after %d (gap, duplicate or reorder)", via, f.Seq, last)
		}
		last = f.Seq
	}
	for last < 100 {
		seen(rx.Next(transporttest.Wait), "websocket")
	}
	// Cut the WebSocket under the client's feet, as a broken network does,
	// and keep what it had read before the cut.
	_ = rx.Conn().NetConn().Close()
	<-rx.Done()
	for drained := false; !drained; {
		select {
		case f := <-rx.Frames():
			seen(f, "websocket")
		default:
			drained = true
		}
	}
	viaWS := last
	t.Logf("websocket delivered seqs 1..%d before the cut", viaWS)

	p := e.PollClient(t, "cus", charla.RoleCustomer)
	p.Cursors[conv] = last
	a := p.Poll(0)
	if a.Session == "" || len(a.Frames) == 0 || a.Frames[0].Type != wire.TypeWelcome {
		t.Fatalf("first poll = %+v, want the welcome of a new session", a)
	}
	// The welcome's answer may already carry the first messages (the
	// poll client moved its cursor past them).
	for _, f := range a.Frames[1:] {
		seen(f, "poll")
	}
	// Retries over HTTP of what was sent over the WebSocket: same seq, same
	// ts, duplicate.
	for _, cmid := range cmids {
		status, ack := p.Send(transporttest.SendFrame(conv, cmid, "retry", "r-"+cmid[:4]))
		want := wsAcks[cmid]
		if status != http.StatusOK || ack.Type != wire.TypeAck || !ack.Duplicate || ack.Seq != want.Seq || !ack.TS.Equal(want.TS) || ack.Ref != "r-"+cmid[:4] {
			t.Fatalf("retry of %s over HTTP = %d %+v, want duplicate of %+v", cmid, status, ack, want)
		}
	}
	status, own := p.Send(transporttest.SendFrame(conv, uuid.NewString(), "over http", ""))
	if status != http.StatusOK || own.Type != wire.TypeAck || own.Duplicate {
		t.Fatalf("new send over HTTP = %d %+v", status, own)
	}

	total := charla.Seq(3 + fast + 1)
	lost := false
	polls := 0
	deadline := time.Now().Add(60 * time.Second)
	for last < total && time.Now().Before(deadline) {
		before := map[charla.ConvID]charla.Seq{conv: p.Cursors[conv]}
		a := p.Poll(2 * time.Second)
		polls++
		if a.Closed != nil {
			t.Fatalf("session closed: %+v", a.Closed)
		}
		if !lost && len(a.Frames) > 3 {
			// This answer never reaches the client (a proxy dropped it):
			// it polls again with the cursors it had.
			lost = true
			p.Cursors = before
			continue
		}
		for _, f := range a.Frames {
			seen(f, "poll")
		}
	}
	if last != total {
		t.Fatalf("received up to seq %d of %d", last, total)
	}
	if !lost {
		t.Fatal("no poll answer was dropped; the test did not cover a lost answer")
	}
	t.Logf("seqs %d..%d over %d polls (one answer lost on purpose), none twice, none missing", viaWS+1, total, polls)
	// Nothing more: no duplicate trails behind.
	if a := p.Poll(300 * time.Millisecond); len(a.Frames) != 0 {
		t.Fatalf("trailing frames %+v", a.Frames)
	}
}

// Typing, read and the replies to other client frames travel over polling:
// relays come with polls, client frames go to /v1/frames.
func TestPollCarriesTypingReadAndReplies(t *testing.T) {
	e := transporttest.Start(t)
	ana := e.Dial(t, "ana", charla.RoleAgent)
	ana.Subscribe("cus", 0)
	p := e.PollClient(t, "cus", charla.RoleCustomer)
	p.Cursors["cus"] = 0
	// The welcome, and the subscribed with it or in the next answer,
	// depending on how fast the subscribe was.
	f := p.Poll(0).Frames
	if len(f) == 1 {
		f = append(f, p.Poll(transporttest.Wait).Frames...)
	}
	if len(f) != 2 || f[0].Type != wire.TypeWelcome || f[1].Type != wire.TypeSubscribed || f[1].Ref != "cursor:cus" {
		t.Fatalf("first polls = %+v, want welcome, subscribed", f)
	}

	ana.Send(wire.Frame{Type: wire.TypeTyping, Conv: "cus", State: "on"})
	if f := p.Poll(transporttest.Wait).Frames; len(f) != 1 || f[0].Type != wire.TypeTyping || f[0].User != "ana" || f[0].State != "on" {
		t.Fatalf("poll = %+v, want ana's typing", f)
	}
	if s := p.Frames(wire.Frame{Type: wire.TypeTyping, Conv: "cus", State: "on"}); s != http.StatusAccepted {
		t.Fatalf("/v1/frames = %d", s)
	}
	if f := ana.NextOf(wire.TypeTyping, transporttest.Wait); f.User != "cus" {
		t.Fatalf("typing = %+v", f)
	}
	ana.Send(transporttest.SendFrame("cus", uuid.NewString(), "hola", ""))
	ana.NextOf(wire.TypeAck, transporttest.Wait)
	if f := p.Poll(transporttest.Wait).Frames; len(f) != 1 || f[0].Type != wire.TypeMsg || f[0].Seq != 1 {
		t.Fatalf("poll = %+v, want msg 1", f)
	}
	if s := p.Frames(wire.Frame{Type: wire.TypeRead, Conv: "cus", Seq: 1},
		wire.Frame{Type: wire.TypePing, Ref: "p1", T: []byte("7")},
		wire.Frame{Type: wire.TypeInventory, Ref: "inv", SKU: "x"}); s != http.StatusAccepted {
		t.Fatalf("/v1/frames = %d", s)
	}
	if f := ana.NextOf(wire.TypeRead, transporttest.Wait); f.User != "cus" || f.Seq != 1 {
		t.Fatalf("read = %+v", f)
	}
	var got []wire.Frame
	for deadline := time.Now().Add(transporttest.Wait); len(got) < 2 && time.Now().Before(deadline); {
		got = append(got, p.Poll(transporttest.Wait).Frames...)
	}
	if len(got) != 2 || got[0].Type != wire.TypePong || got[0].Ref != "p1" || string(got[0].T) != "7" ||
		got[1].Type != wire.TypeError || got[1].Ref != "inv" || got[1].Code != charla.CodeUnavailable {
		t.Fatalf("replies = %+v, want pong p1 then error inv", got)
	}
	// Conversations follow the cursors, not frames.
	if s := p.Frames(wire.Frame{Type: wire.TypeSubscribe, Conv: "cus"}); s != http.StatusBadRequest {
		t.Fatalf("subscribe over /v1/frames = %d, want 400", s)
	}
	// A conversation the customer may not use is refused in the stream, and
	// asked for again at every poll that lists it.
	p.Cursors["eve"] = 0
	a := p.Poll(transporttest.Wait)
	if len(a.Frames) != 1 || a.Frames[0].Type != wire.TypeError || a.Frames[0].Code != charla.CodeForbidden || a.Frames[0].Ref != "cursor:eve" {
		t.Fatalf("poll with a forbidden cursor = %+v", a.Frames)
	}
	// Dropping a cursor unsubscribes.
	delete(p.Cursors, "eve")
	delete(p.Cursors, "cus")
	if f := p.Poll(transporttest.Wait).Frames; len(f) != 1 || f[0].Type != wire.TypeUnsubscribed || f[0].Conv != "cus" {
		t.Fatalf("poll without the cursor = %+v, want unsubscribed", f)
	}
}

// An idle poller is released after the heartbeat timeout and its
// subscriptions freed; a waiting poll, however long, is not idle.
func TestIdlePollerIsReleased(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.HeartbeatInterval = 100 * time.Millisecond
		c.HeartbeatTimeout = 300 * time.Millisecond
		c.IdleTimeout = 200 * time.Millisecond
		c.SweepInterval = 50 * time.Millisecond
	}))
	st := e.Sys.Stats()
	p := e.PollClient(t, "cus", charla.RoleCustomer)
	p.Cursors["cus"] = 0
	welcome := p.Poll(0).Frames[0]
	if welcome.Type != wire.TypeWelcome || welcome.Timeout != 300 {
		t.Fatalf("welcome = %+v", welcome)
	}
	p.Poll(transporttest.Wait) // subscribed
	// A poll that waits three heartbeat timeouts keeps the session, and its
	// subscription keeps the conversation loaded.
	if a := p.Poll(time.Second); a.Closed != nil || len(a.Frames) != 0 {
		t.Fatalf("waiting poll = %+v", a)
	}
	if n, c := st.ConnsActive.Load(), st.ConversationsActive.Load(); n != 1 || c != 1 {
		t.Fatalf("after a long poll: %d conns, %d conversations; want 1, 1", n, c)
	}
	// No poll for longer than the timeout: released, subscription freed.
	waitFor(t, "the poller's release", func() bool { return st.ConnsActive.Load() == 0 })
	if st.Disconnects()["heartbeat_timeout"] != 1 {
		t.Fatalf("disconnects = %v", st.Disconnects())
	}
	waitFor(t, "the unsubscribed conversation's unload", func() bool { return st.ConversationsActive.Load() == 0 })
	// The same session id polls again: a new session, resubscribed from the
	// cursors.
	a := p.Poll(0)
	if a.Session != p.Session || len(a.Frames) == 0 || a.Frames[0].Type != wire.TypeWelcome || a.Frames[0].ConnID == welcome.ConnID {
		t.Fatalf("poll after release = %+v, want a new session's welcome", a)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(transporttest.Wait); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestSendOverHTTPErrors(t *testing.T) {
	e := transporttest.Start(t)
	p := e.PollClient(t, "cus", charla.RoleCustomer)
	valid := uuid.NewString()
	tests := []struct {
		name   string
		body   string
		status int
		code   charla.Code
	}{
		{"another customer's conversation", `{"conv":"eve","client_msg_id":"` + valid + `","body":{"text":"x"}}`, 403, charla.CodeForbidden},
		{"no client_msg_id", `{"conv":"cus","body":{"text":"x"}}`, 400, charla.CodeBadRequest},
		{"not a frame", `[1,2]`, 400, charla.CodeBadRequest},
		{"another frame type", `{"type":"typing","conv":"cus","state":"on"}`, 400, charla.CodeBadRequest},
		{"body too large", `{"conv":"cus","client_msg_id":"` + valid + `","body":{"text":"` + strings.Repeat("x", 40<<10) + `"}}`, 413, charla.CodeTooLarge},
		{"frame too large", `{"conv":"cus","client_msg_id":"` + valid + `","body":{"text":"` + strings.Repeat("x", 70<<10) + `"}}`, 413, charla.CodeTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := transporttest.Do(t, http.MethodPost, e.HTTPURL("/v1/send", "cus", charla.RoleCustomer), tt.body, nil)
			f, _ := wire.Decode(body)
			if status != tt.status || f.Type != wire.TypeError || f.Code != tt.code || !strings.Contains(string(body), `"error":{"code":"`+string(tt.code)) {
				t.Fatalf("%d %s, want %d %s", status, body, tt.status, tt.code)
			}
		})
	}
	t.Run("unauthenticated", func(t *testing.T) {
		status, _ := transporttest.Do(t, http.MethodPost, "http://"+e.Addr+"/v1/send", `{}`, nil)
		if status != 401 {
			t.Fatalf("status %d", status)
		}
	})
	t.Run("ok with type", func(t *testing.T) {
		status, ack := p.Send(transporttest.SendFrame("cus", valid, "x", "r"))
		if status != 200 || ack.Type != wire.TypeAck || ack.Seq != 1 || ack.Ref != "r" {
			t.Fatalf("%d %+v", status, ack)
		}
	})
}

// A poll waiting when the engine shuts down answers at once, and says the
// session ended with 1012 service restart — what a WebSocket is told — so
// that the client starts over (a new session from its cursors, resending
// unacked sends) instead of meeting a refused connection.
func TestShutdownEndsAWaitingPollWith1012(t *testing.T) {
	e := transporttest.Start(t)
	p := e.PollClient(t, "cus", charla.RoleCustomer)
	p.Cursors["cus"] = 0
	p.Poll(0)                  // welcome
	p.Poll(transporttest.Wait) // subscribed
	answer := make(chan transporttest.PollAnswer, 1)
	go func() { answer <- p.Poll(transporttest.Wait) }()
	time.Sleep(200 * time.Millisecond) // the poll is waiting
	start := time.Now()
	e.Close()
	select {
	case a := <-answer:
		if a.Closed == nil || a.Closed.Code != 1012 {
			t.Fatalf("waiting poll at shutdown = %+v, want closed 1012", a)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("answered after %v: the shutdown waited for the poll", d)
		}
	case <-time.After(transporttest.Wait):
		t.Fatal("the waiting poll was not answered")
	}
}
