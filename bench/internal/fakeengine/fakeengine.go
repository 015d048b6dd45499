// Package fakeengine is a minimal in-memory protocol v1 server for the
// bench's own tests: welcome, subscribe with replay, send/ack with
// client_msg_id dedup, batched msg fan-out, ping/pong, server heartbeats
// with a silence timeout, a bounded outbound queue (close 4008), and a
// restart that drops every connection but keeps the messages. It can also
// break its promises on purpose (drop or duplicate deliveries), so that
// tests can prove the bench notices.
//
// It is not the engine and makes no claim to performance; it only lets the
// bench be tested without depending on the engine being finished.
package fakeengine

import (
	"bytes"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"

	"charla"
	"charla/actors"
	"charla/transport"
	"charla/wire"
)

// Options tune the fake. Zero values pick the engine's defaults
// (actors.DefaultConfig), so that the fake behaves as the engine would.
type Options struct {
	// Heartbeat is the ping interval (the engine's heartbeat-interval);
	// Timeout the silence that closes a connection (heartbeat-timeout).
	Heartbeat, Timeout time.Duration
	// QueueFrames caps each connection's outbound queue (send-queue-frames).
	QueueFrames int
	// DropEvery > 0 skips delivering every Nth msg frame (a loss).
	DropEvery int
	// DuplicateEvery > 0 delivers every Nth msg frame twice.
	DuplicateEvery int
	// SendBuffer > 0 sets SO_SNDBUF of accepted connections, so that a
	// client that stops reading fills the queue after little traffic.
	SendBuffer int
}

// Engine is a running fake.
type Engine struct {
	// Addr is host:port of the listener.
	Addr string

	opts Options
	ln   net.Listener
	srv  *http.Server
	up   *gws.Upgrader

	mu     sync.Mutex
	convs  map[charla.ConvID]*conv
	conns  map[*conn]struct{}
	down   bool
	nextID int
	msgs   atomic.Int64
	wg     sync.WaitGroup
}

type conv struct {
	mu   sync.Mutex
	msgs []wire.Msg
	ids  map[string]charla.Seq
	subs map[*conn]struct{}
}

type conn struct {
	e        *Engine
	ws       *gws.Conn
	user     string
	role     charla.Role
	out      chan []byte
	quit     chan struct{}
	once     sync.Once
	last     atomic.Int64 // unix nanos of the last inbound frame or pong
	mu       sync.Mutex
	subs     map[charla.ConvID]*conv
	overflow atomic.Bool
}

// Start serves a fake engine on 127.0.0.1 at a free port.
func Start(opts Options) (*Engine, error) {
	def := actors.DefaultConfig()
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = def.HeartbeatInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = def.HeartbeatTimeout
	}
	if opts.QueueFrames <= 0 {
		opts.QueueFrames = def.SendQueueFrames
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	e := &Engine{Addr: ln.Addr().String(), opts: opts, ln: ln,
		convs: map[charla.ConvID]*conv{}, conns: map[*conn]struct{}{}}
	e.up = gws.NewUpgrader(e, &gws.ServerOption{Recovery: gws.Recovery})
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/ws", e.serveWS)
	e.srv = &http.Server{Handler: mux, ReadHeaderTimeout: transport.DefaultConfig().ConnectTimeout}
	e.wg.Go(func() { _ = e.srv.Serve(ln) })
	return e, nil
}

// Messages is how many messages were accepted.
func (e *Engine) Messages() int64 { return e.msgs.Load() }

// Conns is how many connections are open.
func (e *Engine) Conns() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.conns)
}

// Restart closes every connection with 1012 and refuses new ones for
// pause, keeping every message: what a graceful engine restart looks like
// to clients.
func (e *Engine) Restart(pause time.Duration) {
	e.goDown(charla.DisconnectServiceRestart)
	time.Sleep(pause)
	e.mu.Lock()
	e.down = false
	e.mu.Unlock()
}

// goDown refuses new connections and closes every open one with d.
func (e *Engine) goDown(d charla.Disconnect) {
	e.mu.Lock()
	e.down = true
	cs := make([]*conn, 0, len(e.conns))
	for c := range e.conns {
		cs = append(cs, c)
	}
	e.mu.Unlock()
	for _, c := range cs {
		c.close(d)
	}
}

// Close stops the fake and waits for its goroutines.
func (e *Engine) Close() {
	_ = e.srv.Close()
	e.goDown(charla.DisconnectGoingAway)
	e.wg.Wait()
}

func (e *Engine) serveWS(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	down := e.down
	e.mu.Unlock()
	if down {
		http.Error(w, "restarting", http.StatusServiceUnavailable)
		return
	}
	user, role := r.URL.Query().Get("user"), charla.Role(r.URL.Query().Get("role"))
	if user == "" || !role.Valid() {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	ws, err := e.up.Upgrade(w, r)
	if err != nil {
		return
	}
	if tc, ok := ws.NetConn().(*net.TCPConn); ok && e.opts.SendBuffer > 0 {
		_ = tc.SetWriteBuffer(e.opts.SendBuffer)
	}
	c := &conn{e: e, ws: ws, user: user, role: role, out: make(chan []byte, e.opts.QueueFrames),
		quit: make(chan struct{}), subs: map[charla.ConvID]*conv{}}
	c.last.Store(time.Now().UnixNano())
	e.mu.Lock()
	e.conns[c] = struct{}{}
	e.nextID++
	id := e.nextID
	e.mu.Unlock()
	ws.Session().Store("c", c)
	c.enqueue(wire.Encode(wire.Welcome{Type: wire.TypeWelcome, ConnID: string(rune('a'+id%26)) + time.Now().Format("150405.000000"),
		User: user, Role: role, Heartbeat: e.opts.Heartbeat.Milliseconds(), Timeout: e.opts.Timeout.Milliseconds(), ServerTime: time.Now().UTC()}))
	e.wg.Go(c.writeLoop)
	e.wg.Go(ws.ReadLoop)
}

func connOf(s *gws.Conn) *conn {
	v, _ := s.Session().Load("c")
	return v.(*conn)
}

// OnOpen is part of gws.Event.
func (e *Engine) OnOpen(*gws.Conn) {}

// OnClose is part of gws.Event.
func (e *Engine) OnClose(s *gws.Conn, _ error) { connOf(s).close(charla.DisconnectNormal) }

// OnPing is part of gws.Event.
func (e *Engine) OnPing(s *gws.Conn, p []byte) {
	connOf(s).last.Store(time.Now().UnixNano())
	_ = s.WritePong(p)
}

// OnPong is part of gws.Event.
func (e *Engine) OnPong(s *gws.Conn, _ []byte) { connOf(s).last.Store(time.Now().UnixNano()) }

// OnMessage is part of gws.Event.
func (e *Engine) OnMessage(s *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := connOf(s)
	c.last.Store(time.Now().UnixNano())
	f, perr := wire.Decode(m.Bytes())
	if perr != nil {
		c.enqueue(wire.Encode(wire.ErrorFrame(f.Ref, charla.AsError(perr))))
		return
	}
	switch f.Type {
	case wire.TypePing:
		c.enqueue(wire.Encode(wire.Pong{Type: wire.TypePong, Ref: f.Ref, T: f.T, ServerTime: time.Now().UTC()}))
	case wire.TypeSubscribe:
		e.subscribe(c, f)
	case wire.TypeSend:
		e.send(c, f)
	default:
		c.enqueue(wire.Encode(wire.ErrorFrame(f.Ref, charla.Errorf(charla.CodeBadRequest, "unknown type %q", f.Type))))
	}
}

func (e *Engine) conv(id charla.ConvID) *conv {
	e.mu.Lock()
	defer e.mu.Unlock()
	cv := e.convs[id]
	if cv == nil {
		cv = &conv{ids: map[string]charla.Seq{}, subs: map[*conn]struct{}{}}
		e.convs[id] = cv
	}
	return cv
}

func (e *Engine) subscribe(c *conn, f wire.Frame) {
	cv := e.conv(f.Conv)
	cv.mu.Lock()
	defer cv.mu.Unlock()
	c.enqueue(wire.Encode(wire.Subscribed{Type: wire.TypeSubscribed, Ref: f.Ref, Conv: f.Conv, Head: charla.Seq(len(cv.msgs))}))
	for _, m := range cv.msgs[min(int(f.Since), len(cv.msgs)):] {
		c.enqueue(wire.Encode(m))
	}
	cv.subs[c] = struct{}{}
	c.mu.Lock()
	c.subs[f.Conv] = cv
	c.mu.Unlock()
}

func (e *Engine) send(c *conn, f wire.Frame) {
	if err := charla.ValidateClientMsgID(f.ClientMsgID); err != nil {
		c.enqueue(wire.Encode(wire.ErrorFrame(f.Ref, charla.AsError(err))))
		return
	}
	cv := e.conv(f.Conv)
	cv.mu.Lock()
	defer cv.mu.Unlock()
	if seq, ok := cv.ids[f.ClientMsgID]; ok {
		c.enqueue(wire.Encode(wire.Ack{Type: wire.TypeAck, Ref: f.Ref, Conv: f.Conv, ClientMsgID: f.ClientMsgID, Seq: seq, TS: cv.msgs[seq-1].TS, Duplicate: true}))
		return
	}
	m := wire.Msg{Type: wire.TypeMsg, Message: charla.Message{Conv: f.Conv, Seq: charla.Seq(len(cv.msgs) + 1),
		ClientMsgID: f.ClientMsgID, Sender: charla.Sender{ID: c.user, Role: c.role}, Body: append(json.RawMessage(nil), f.Body...), TS: time.Now().UTC()}}
	cv.msgs = append(cv.msgs, m)
	cv.ids[f.ClientMsgID] = m.Seq
	n := e.msgs.Add(1)
	c.enqueue(wire.Encode(wire.Ack{Type: wire.TypeAck, Ref: f.Ref, Conv: f.Conv, ClientMsgID: f.ClientMsgID, Seq: m.Seq, TS: m.TS}))
	b := wire.Encode(m)
	for s := range cv.subs {
		if e.opts.DropEvery > 0 && n%int64(e.opts.DropEvery) == 0 {
			continue
		}
		s.enqueue(b)
		if e.opts.DuplicateEvery > 0 && n%int64(e.opts.DuplicateEvery) == 0 {
			s.enqueue(b)
		}
	}
}

func (c *conn) enqueue(b []byte) {
	select {
	case c.out <- b:
	default:
		if c.overflow.CompareAndSwap(false, true) {
			c.e.wg.Go(func() { c.close(charla.DisconnectSlowConsumer) })
		}
	}
}

// writeLoop batches whatever is queued into one frame, '\n'-separated, as
// the protocol allows, and sends heartbeats.
func (c *conn) writeLoop() {
	tick := time.NewTicker(c.e.opts.Heartbeat / 4)
	defer tick.Stop()
	lastPing := time.Now()
	var buf bytes.Buffer
	for {
		select {
		case <-c.quit:
			return
		case b := <-c.out:
			buf.Reset()
			buf.Write(b)
			for n := 0; n < 64; n++ {
				select {
				case more := <-c.out:
					buf.WriteByte('\n')
					buf.Write(more)
					continue
				default:
				}
				break
			}
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.e.opts.Timeout))
			if err := c.ws.WriteMessage(gws.OpcodeText, buf.Bytes()); err != nil {
				c.close(charla.DisconnectNormal)
				return
			}
		case now := <-tick.C:
			if now.Sub(time.Unix(0, c.last.Load())) > c.e.opts.Timeout {
				c.close(charla.DisconnectHeartbeatTimeout)
				return
			}
			if now.Sub(lastPing) >= c.e.opts.Heartbeat {
				lastPing = now
				_ = c.ws.SetWriteDeadline(now.Add(c.e.opts.Timeout))
				_ = c.ws.WritePing(nil)
			}
		}
	}
}

func (c *conn) close(d charla.Disconnect) {
	c.once.Do(func() {
		close(c.quit)
		c.mu.Lock()
		for _, cv := range c.subs {
			cv.mu.Lock()
			delete(cv.subs, c)
			cv.mu.Unlock()
		}
		c.mu.Unlock()
		c.e.mu.Lock()
		delete(c.e.conns, c)
		c.e.mu.Unlock()
		_ = c.ws.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
		if err := c.ws.WriteClose(d.Code, []byte(d.Reason)); err != nil && !errors.Is(err, gws.ErrConnClosed) {
			_ = c.ws.NetConn().Close()
		}
	})
}
