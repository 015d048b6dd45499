package transport

import (
	"context"
	"encoding/binary"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/lxzan/gws"
	"github.com/rs/xid"

	"charla"
	"charla/actors"
	"charla/wire"
)

const sessionKey = "conn"

// closeGrace bounds how long a close may wait behind a write that the
// client is not reading.
const closeGrace = 500 * time.Millisecond

// wsEvents is gws's event handler: it only decodes and forwards to the conn
// actor, whose handle it finds in the socket's session. It must not panic in
// OnOpen/OnClose/OnPing/OnPong (gws does not recover those).
type wsEvents struct{}

func handleOf(c *gws.Conn) (actors.ConnHandle, bool) {
	v, ok := c.Session().Load(sessionKey)
	if !ok {
		return actors.ConnHandle{}, false
	}
	h, ok := v.(actors.ConnHandle)
	return h, ok
}

func (e wsEvents) OnOpen(*gws.Conn) {}

func (e wsEvents) OnClose(c *gws.Conn, err error) {
	if h, ok := handleOf(c); ok {
		h.Closed(err)
	}
}

func (e wsEvents) OnPing(c *gws.Conn, payload []byte) {
	p := append([]byte(nil), payload...) // gws reuses the read buffer
	c.WriteAsync(gws.OpcodePong, p, nil)
	if h, ok := handleOf(c); ok {
		h.Alive(false)
	}
}

func (e wsEvents) OnPong(c *gws.Conn, _ []byte) {
	if h, ok := handleOf(c); ok {
		h.Alive(true)
	}
}

func (e wsEvents) OnMessage(c *gws.Conn, m *gws.Message) {
	defer m.Close()
	h, ok := handleOf(c)
	if !ok {
		return
	}
	if m.Opcode != gws.OpcodeText {
		h.Invalid("", charla.Errorf(charla.CodeBadRequest, "only text frames carry protocol frames"))
		return
	}
	f, err := wire.Decode(m.Bytes())
	if err != nil {
		h.Invalid(f.Ref, err)
		return
	}
	h.Frame(f)
}

// gwsSocket is the conn actor's Socket over a gws connection. Every write
// carries a deadline so that a client that stops reading cannot hold a
// write (and the memory behind it) forever.
type gwsSocket struct {
	c            *gws.Conn
	writeTimeout time.Duration
	// deadline is the write deadline set last, only touched by the
	// socket's writer (Async runs one function at a time): a write moves it
	// only once less than half of writeTimeout is left, because setting it
	// costs a runtime timer update per write (3% of the engine at 100,000
	// deliveries/s). A write therefore waits between half of writeTimeout
	// and all of it before it fails.
	deadline time.Time
	// closing: Close set the short closing deadline, which no write moves.
	closing atomic.Bool
}

func (s *gwsSocket) Async(f func()) { s.c.Async(f) }

func (s *gwsSocket) WriteFrame(frame []byte) error {
	s.armWrite()
	return s.c.WriteMessage(gws.OpcodeText, frame)
}

// armWrite moves the write deadline when less than half of writeTimeout is
// left; only from the socket's writer (Async).
func (s *gwsSocket) armWrite() {
	if s.closing.Load() {
		return
	}
	now := time.Now()
	if s.deadline.Sub(now) > s.writeTimeout/2 {
		return
	}
	s.deadline = now.Add(s.writeTimeout)
	_ = s.c.SetWriteDeadline(s.deadline)
}

func (s *gwsSocket) Ping() {
	s.c.Async(func() {
		s.armWrite()
		_ = s.c.WritePing(nil)
	})
}

func (s *gwsSocket) Close(d charla.Disconnect) {
	// A write stuck behind a client that does not read fails at this
	// deadline, which lets the close through (or ends the connection).
	s.closing.Store(true)
	_ = s.c.SetWriteDeadline(time.Now().Add(closeGrace))
	s.c.Async(func() {
		// The closing handshake by the book: the close frame, then only our
		// half of the TCP connection (FIN). Closing it whole while the client
		// is still sending would answer with a reset, and a reset can destroy
		// the close frame before the client reads it. The read loop ends when
		// the client answers, or at the read deadline.
		payload := binary.BigEndian.AppendUint16(nil, d.Code)
		_ = s.c.WriteMessage(gws.OpcodeCloseConnection, append(payload, d.Reason...))
		if tc, ok := s.c.NetConn().(interface{ CloseWrite() error }); ok {
			_ = tc.CloseWrite()
		}
		_ = s.c.SetReadDeadline(time.Now().Add(closeGrace))
	})
}

func newConnID() string { return xid.New().String() }

// upgrade runs after authentication: it upgrades, starts the conn actor and
// the read loop.
func (s *Server) upgrade(ctx context.Context, w http.ResponseWriter, r *http.Request, id Identity) {
	sock, err := s.upgrader.Upgrade(w, r)
	if err != nil {
		s.log.Debug().Err(err).Msg("websocket upgrade failed")
		return
	}
	connID := newConnID()
	h, err := s.sys.Connect(ctx, connID, id.User, &gwsSocket{c: sock, writeTimeout: s.cfg.HeartbeatTimeout}, id.Expires, s.connOptions(r)...)
	if err != nil {
		s.log.Error().Err(err).Msg("conn actor not started")
		_ = sock.WriteClose(charla.DisconnectInternal.Code, []byte(charla.DisconnectInternal.Reason))
		return
	}
	sock.Session().Store(sessionKey, h)
	go sock.ReadLoop()
}
