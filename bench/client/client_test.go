package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"charla"
	"charla/bench/internal/fakeengine"
	"charla/transport/transporttest"
	"charla/wire"
)

// The poll tests run the real engine in process: its actor system leaves
// what transporttest.LeakOptions names.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, transporttest.LeakOptions()...) }

type recorder struct {
	mu     sync.Mutex
	frames []wire.Frame
	got    chan struct{}
}

func newRecorder() *recorder { return &recorder{got: make(chan struct{}, 1)} }

func (r *recorder) handler() Handler {
	return Handler{Frame: func(_ *Conn, f *wire.Frame, _ time.Time) {
		r.mu.Lock()
		r.frames = append(r.frames, *f)
		r.mu.Unlock()
		select {
		case r.got <- struct{}{}:
		default: // the waiter rescans everything anyway
		}
	}}
}

func (r *recorder) wait(t *testing.T, typ string, n int) []wire.Frame {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		var out []wire.Frame
		for _, f := range r.frames {
			if f.Type == typ {
				out = append(out, f)
			}
		}
		r.mu.Unlock()
		if len(out) >= n {
			return out
		}
		select {
		case <-r.got:
		case <-deadline:
			t.Fatalf("waited for %d %q frames, have %d", n, typ, len(out))
		}
	}
}

func startFake(t *testing.T, o fakeengine.Options) *fakeengine.Engine {
	t.Helper()
	e, err := fakeengine.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func TestDialSubscribeSendPing(t *testing.T) {
	e := startFake(t, fakeengine.Options{})
	ra, rb := newRecorder(), newRecorder()
	ctx := context.Background()
	a, err := Dial(ctx, Config{Addr: e.Addr, User: "a", Role: charla.RoleAgent}, ra.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Dial(ctx, Config{Addr: e.Addr, User: "b", Role: charla.RoleAgent, LocalIP: net.IPv4(127, 0, 0, 2)}, rb.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if w := a.Welcome(); w.User != "a" || w.Heartbeat != 5000 || w.Timeout != 10000 {
		t.Fatalf("welcome %+v", w)
	}
	if got := b.LocalAddr().(*net.TCPAddr).IP.String(); got != "127.0.0.2" {
		t.Fatalf("source address %s, want 127.0.0.2", got)
	}
	if err := b.Subscribe("c1", 0, "s1"); err != nil {
		t.Fatal(err)
	}
	rb.wait(t, wire.TypeSubscribed, 1)
	// Ten sends in a row: the fake batches them, Split must undo it.
	for i := range 10 {
		id := "00000000-0000-4000-8000-00000000000" + string(rune('0'+i))
		if err := a.Send("c1", id, []byte(`{"text":"hi"}`), id); err != nil {
			t.Fatal(err)
		}
	}
	acks := ra.wait(t, wire.TypeAck, 10)
	msgs := rb.wait(t, wire.TypeMsg, 10)
	for i := range 10 {
		if acks[i].Seq != charla.Seq(i+1) || msgs[i].Seq != charla.Seq(i+1) || string(msgs[i].Body) != `{"text":"hi"}` {
			t.Fatalf("frame %d: ack %+v msg %+v", i, acks[i], msgs[i])
		}
	}
	if err := a.Ping(12345, "p"); err != nil {
		t.Fatal(err)
	}
	if p := ra.wait(t, wire.TypePong, 1); string(p[0].T) != "12345" {
		t.Fatalf("pong t = %s", p[0].T)
	}
}

func TestUpgradeFailureSaysWhy(t *testing.T) {
	e := startFake(t, fakeengine.Options{})
	_, err := Dial(context.Background(), Config{Addr: e.Addr, User: "", Role: "nobody"}, Handler{})
	if err == nil || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("err = %v, want an HTTP 401", err)
	}
	_, err = Dial(context.Background(), Config{Addr: "127.0.0.1:1", User: "x", Role: charla.RoleAgent}, Handler{})
	if err == nil || !strings.Contains(err.Error(), "dial") {
		t.Fatalf("err = %v, want a dial error", err)
	}
}

func TestSilentClientIsClosedByServer(t *testing.T) {
	e := startFake(t, fakeengine.Options{Heartbeat: 100 * time.Millisecond, Timeout: 300 * time.Millisecond})
	closed := make(chan error, 1)
	c, err := Dial(context.Background(), Config{Addr: e.Addr, User: "s", Role: charla.RoleAgent},
		Handler{Close: func(_ *Conn, err error, _ time.Time) { closed <- err }})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Answering pings keeps it alive past the timeout...
	select {
	case err := <-closed:
		t.Fatalf("closed while answering pings: %v", err)
	case <-time.After(600 * time.Millisecond):
	}
	if c.Heartbeats() == 0 {
		t.Fatal("no server heartbeat seen")
	}
	// ...silence gets it closed with 4008.
	c.Silence()
	start := time.Now()
	select {
	case err := <-closed:
		if CloseCode(err) != 4008 {
			t.Fatalf("close %v, want 4008", err)
		}
		if d := time.Since(start); d > time.Second {
			t.Fatalf("closed after %v", d)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("silent client never closed")
	}
	if c.ClosedByUs() {
		t.Fatal("ClosedByUs after a server close")
	}
}

func TestStalledReaderIsASlowConsumer(t *testing.T) {
	e := startFake(t, fakeengine.Options{QueueFrames: 256})
	ctx := context.Background()
	slow, err := Dial(ctx, Config{Addr: e.Addr, User: "slow", Role: charla.RoleAgent, RecvBufferBytes: 4096}, Handler{})
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	r := newRecorder()
	sender, err := Dial(ctx, Config{Addr: e.Addr, User: "w", Role: charla.RoleAgent}, r.handler())
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	if err := slow.Subscribe("c", 0, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	slow.Stall()
	body := []byte(`{"text":"` + strings.Repeat("x", 2000) + `"}`)
	for i := range 2000 {
		if err := sender.Send("c", uuidN(i), body, ""); err != nil {
			t.Fatal(err)
		}
		if i%100 == 99 {
			time.Sleep(10 * time.Millisecond) // let the sender's own acks drain
		}
		select {
		case <-slow.Done():
		default:
			continue
		}
		break
	}
	// The engine side drops the slow consumer while it is still stalled.
	for n := 0; e.Conns() > 1; n++ {
		if n > 1000 {
			t.Fatal("the engine never dropped the stalled reader")
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow.Release()
	select {
	case <-slow.Done():
		// The fake cannot always write its 4008 past a full socket; an
		// abrupt end is the same verdict from the client's side.
		if slow.ClosedByUs() || slow.Err() == nil {
			t.Fatalf("slow consumer ended with %v", slow.Err())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("slow consumer never closed")
	}
}

func uuidN(i int) string {
	const hex = "0123456789abcdef"
	b := []byte("00000000-0000-4000-8000-000000000000")
	for p := len(b) - 1; i > 0 && p >= 0; p-- {
		if b[p] == '-' {
			continue
		}
		b[p] = hex[i%16]
		i /= 16
	}
	return string(b)
}

func TestToken(t *testing.T) {
	s, err := Token("k", "u1", charla.RoleAgent, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Parse(s, func(*jwt.Token) (any, error) { return []byte("k"), nil }, jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		t.Fatal(err)
	}
	claims := tok.Claims.(jwt.MapClaims)
	if claims["sub"] != "u1" || claims["role"] != "agent" {
		t.Fatalf("claims %v", claims)
	}
}

func TestSources(t *testing.T) {
	s, err := NewSources("127.0.0.1:8080", 1000, 25000, 0)
	if err != nil || s.Count() != 0 || s.For(3) != nil {
		t.Fatalf("small run must not spread: %v %v", s, err)
	}
	s, err = NewSources("127.0.0.1:8080", 100000, 25000, 0)
	if err != nil || s.Count() != 4 || s.For(5).String() != "127.0.0.2" {
		t.Fatalf("100k conns: %v %v", s, err)
	}
	if _, err := NewSources("10.0.0.1:8080", 100000, 25000, 0); err == nil {
		t.Fatal("spreading to a non-loopback target must fail")
	}
	if _, err := NewSources("127.0.0.1:8080", 100, 25000, 3); err != nil {
		t.Fatal(err)
	}
	if PortsPerSource() < 1000 {
		t.Fatalf("ports per source %d", PortsPerSource())
	}
	if CloseCode(errors.New("x")) != 0 {
		t.Fatal("CloseCode of a plain error")
	}
}
