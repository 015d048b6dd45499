package actors

import (
	"log/slog"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/wire"
)

// frameSocket is a Socket that decodes what the conn writes, so a test reads
// the conn's output frame by frame.
type frameSocket struct {
	frames chan wire.Frame
	mu     sync.Mutex
	closed []charla.Disconnect
}

func (s *frameSocket) Async(f func()) { go f() }
func (s *frameSocket) WriteFrame(b []byte) error {
	for _, obj := range wire.Split(b) {
		f, err := wire.Decode(obj)
		if err != nil {
			return err
		}
		s.frames <- f
	}
	return nil
}
func (s *frameSocket) Ping() {}
func (s *frameSocket) Close(d charla.Disconnect) {
	s.mu.Lock()
	s.closed = append(s.closed, d)
	s.mu.Unlock()
}

// connHarness runs one conn actor whose conversations and store actors are
// probes: the test reads what the conn asks of them and answers by hand.
type connHarness struct {
	t     *testing.T
	as    *actor.ActorSystem
	conn  *actor.PID
	sock  *frameSocket
	convs chan any // what the conn sent to the conversations actor
	store chan any // what the conn sent to the store actor
}

func newConnHarness(t *testing.T) *connHarness {
	t.Helper()
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger { return slog.New(slog.DiscardHandler) }))
	h := &connHarness{t: t, as: as, sock: &frameSocket{frames: make(chan wire.Frame, 256)}, convs: make(chan any, 64), store: make(chan any, 64)}
	probe := func(ch chan any) *actor.PID {
		return as.Root.Spawn(actor.PropsFromFunc(func(ctx actor.Context) {
			switch ctx.Message().(type) {
			case *actor.Started, *actor.Stopping, *actor.Stopped, *actor.Restarting:
			default:
				ch <- ctx.Message()
			}
		}))
	}
	inbox := as.Root.Spawn(actor.PropsFromFunc(func(actor.Context) {})) // the conn tells it of staff connections
	d := &deps{cfg: DefaultConfig(), root: as.Root, conversations: probe(h.convs), store: probe(h.store), inbox: inbox, log: zerolog.Nop(), stats: newStats(Histograms{})}
	h.conn = as.Root.Spawn(actor.PropsFromProducer(func() actor.Actor {
		return newConn(d, "c1", charla.Sender{ID: "ana", Role: charla.RoleAgent}, h.sock, time.Time{})
	}))
	t.Cleanup(func() {
		_ = as.Root.StopFuture(h.conn).Wait()
		as.Shutdown()
	})
	if f := h.next(); f.Type != wire.TypeWelcome {
		t.Fatalf("first frame %+v, want welcome", f)
	}
	return h
}

func (h *connHarness) send(msg any) { h.as.Root.Send(h.conn, msg) }

func (h *connHarness) next() wire.Frame {
	h.t.Helper()
	select {
	case f := <-h.sock.frames:
		return f
	case <-time.After(10 * time.Second):
		h.t.Fatal("the conn wrote nothing")
		return wire.Frame{}
	}
}

func receive[T any](t *testing.T, ch chan any) T {
	t.Helper()
	select {
	case m := <-ch:
		v, ok := m.(T)
		if !ok {
			t.Fatalf("got %T %+v, want %T", m, m, v)
		}
		return v
	case <-time.After(10 * time.Second):
		var v T
		t.Fatalf("no %T", v)
		return v
	}
}

// expectMsgs reads msg frames and checks their seqs, then that nothing else
// was written.
func (h *connHarness) expectMsgs(seqs ...charla.Seq) {
	h.t.Helper()
	for _, want := range seqs {
		if f := h.next(); f.Type != wire.TypeMsg || f.Seq != want {
			h.t.Fatalf("got %s seq %d, want msg seq %d", f.Type, f.Seq, want)
		}
	}
	select {
	case f := <-h.sock.frames:
		h.t.Fatalf("unexpected %s seq %d after seqs %v", f.Type, f.Seq, seqs)
	case <-time.After(50 * time.Millisecond):
	}
}

// subscribe asks for conv from since and answers as the conversation would,
// with head, an effective since and what the ring holds.
func (h *connHarness) subscribe(conv charla.ConvID, since charla.Seq, reply subscribeReply) wire.Frame {
	h.t.Helper()
	h.send(inFrame{wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Since: since, Ref: "s"}})
	req := receive[subscribeReq](h.t, h.convs)
	if req.since != since || req.conv != conv {
		h.t.Fatalf("subscribeReq %+v, want since %d", req, since)
	}
	reply.conv, reply.ref = conv, req.ref
	h.send(reply)
	f := h.next()
	if f.Type != wire.TypeSubscribed || f.Head != reply.head || f.Since != reply.since {
		h.t.Fatalf("got %+v, want subscribed head %d since %d", f, reply.head, reply.since)
	}
	return f
}

func deliver(conv charla.ConvID, seq charla.Seq) *delivery {
	return &delivery{conv: conv, seq: seq, frame: encodeMsg(msgAt(conv, seq))}
}

func msgAt(conv charla.ConvID, seq charla.Seq) charla.Message {
	return charla.Message{Conv: conv, Seq: seq, ClientMsgID: "m", Sender: charla.Sender{ID: "x", Role: charla.RoleCustomer}}
}

// The subscription state machine, actor by actor: what the conn delivers,
// drops and asks for, with the conversation and the store played by hand.
func TestConnSubscription(t *testing.T) {
	const conv charla.ConvID = "c"
	t.Run("a duplicate delivery is dropped", func(t *testing.T) {
		h := newConnHarness(t)
		h.subscribe(conv, 0, subscribeReply{complete: true})
		h.send(deliver(conv, 1))
		h.send(deliver(conv, 1))
		h.send(deliver(conv, 2))
		h.expectMsgs(1, 2)
	})
	t.Run("deliveries before the conversation answers are covered by its answer", func(t *testing.T) {
		h := newConnHarness(t)
		h.send(inFrame{wire.Frame{Type: wire.TypeSubscribe, Conv: conv}})
		receive[subscribeReq](t, h.convs)
		h.send(deliver(conv, 1)) // pending: dropped
		h.send(subscribeReply{conv: conv, head: 1, complete: true, recent: []delivery{*deliver(conv, 1)}})
		if f := h.next(); f.Type != wire.TypeSubscribed {
			t.Fatalf("got %+v", f)
		}
		h.expectMsgs(1)
	})
	t.Run("a gap switches to replay, which reads the store and goes live again", func(t *testing.T) {
		h := newConnHarness(t)
		h.subscribe(conv, 0, subscribeReply{complete: true})
		h.send(deliver(conv, 1))
		h.send(deliver(conv, 3)) // 2 is missing
		r := receive[rangeReq](t, h.store)
		if r.after != 1 || r.limit != 2 {
			t.Fatalf("rangeReq %+v, want after 1 limit 2", r)
		}
		h.send(deliver(conv, 4)) // while replaying: raises the target only
		h.send(rangeDone{conv: conv, msgs: []charla.Message{msgAt(conv, 2), msgAt(conv, 3)}})
		r = receive[rangeReq](t, h.store)
		if r.after != 3 || r.limit != 1 {
			t.Fatalf("second rangeReq %+v, want after 3 limit 1", r)
		}
		h.send(rangeDone{conv: conv, msgs: []charla.Message{msgAt(conv, 4)}})
		h.send(deliver(conv, 5)) // live again
		h.expectMsgs(1, 2, 3, 4, 5)
	})
	t.Run("a replay page the store cannot serve is said once and retried", func(t *testing.T) {
		h := newConnHarness(t)
		h.subscribe(conv, 0, subscribeReply{head: 2})
		receive[rangeReq](t, h.store)
		h.send(rangeDone{conv: conv})
		if f := h.next(); f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
			t.Fatalf("got %+v, want unavailable", f)
		}
		r := receive[rangeReq](t, h.store) // the retry, a second later
		if r.after != 0 {
			t.Fatalf("retry %+v", r)
		}
		h.send(rangeDone{conv: conv, msgs: []charla.Message{msgAt(conv, 1), msgAt(conv, 2)}})
		h.expectMsgs(1, 2)
	})
	t.Run("a reset resubscribes from where the client is, without a second subscribed", func(t *testing.T) {
		h := newConnHarness(t)
		h.subscribe(conv, 0, subscribeReply{complete: true})
		h.send(deliver(conv, 1))
		h.send(deliver(conv, 2))
		h.expectMsgs(1, 2)
		h.send(convReset{conv: conv})
		req := receive[subscribeReq](t, h.convs)
		if !req.resume || req.since != 2 {
			t.Fatalf("resubscribe %+v, want resume from 2", req)
		}
		h.send(deliver(conv, 3)) // pending again: dropped, the answer covers it
		h.send(subscribeReply{conv: conv, head: 3, since: 2, resume: true, complete: true, recent: []delivery{*deliver(conv, 3)}})
		h.expectMsgs(3)
	})
	t.Run("a since beyond the head resumes from the head the conversation gives", func(t *testing.T) {
		h := newConnHarness(t)
		h.subscribe(conv, math.MaxUint64, subscribeReply{head: 0, since: 0, complete: true})
		h.send(deliver(conv, 1))
		h.expectMsgs(1)
	})
}
