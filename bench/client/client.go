// Package client is the bench's protocol v1 client: one gws WebSocket
// connection that authenticates (dev query or JWT), waits for the welcome
// frame, decodes every server object (splitting batched frames) and hands
// it to the scenario, answers server heartbeats, and can be told to fall
// silent or to stop reading, which is how the silent-drop and
// slow-consumer scenarios misbehave on purpose.
//
// It keeps no protocol state of its own (subscriptions, pending sends):
// that belongs to the scenario, which knows what it is measuring.
package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/lxzan/gws"

	"charla"
	"charla/wire"
)

// TypeInvalid is the Type of the synthetic frame a Handler receives when a
// server object is not valid JSON; its Message holds the decode error.
const TypeInvalid = "client.invalid"

// Config is one connection's settings. Zero values pick the defaults noted.
type Config struct {
	// Addr is the engine's host:port.
	Addr string
	// Path is the WebSocket endpoint; default "/v1/ws".
	Path string
	// User and Role authenticate the connection.
	User string
	Role charla.Role
	// Secret, when set, mints an HS256 JWT sent as "Authorization: Bearer";
	// otherwise the dev-mode user/role query parameters are used.
	Secret string
	// TokenTTL is the minted token's lifetime; default 24 h, so that no
	// token expires during a run.
	TokenTTL time.Duration
	// LocalIP is the source address to dial from (nil: the kernel's
	// choice); see Sources.
	LocalIP net.IP
	// HandshakeTimeout bounds dial + upgrade + welcome; default 10 s.
	HandshakeTimeout time.Duration
	// WriteTimeout bounds every write, so a sender never hangs on an engine
	// that stopped reading; default 5 s.
	WriteTimeout time.Duration
	// ReadBufferSize is gws's read buffer; default 2 KiB (bench frames are
	// small and 100k connections multiply every byte).
	ReadBufferSize int
	// RecvBufferBytes, when > 0, sets SO_RCVBUF before connecting: a slow
	// consumer with a small window pushes back on the engine sooner.
	RecvBufferBytes int
	// MaxStall bounds how long a stalled reader blocks; default 10 min.
	MaxStall time.Duration
	// Transport is TransportWS (default) or TransportPoll: a long-polling
	// session (POST /v1/poll, sends over POST /v1/send), which neither
	// stalls nor falls silent.
	Transport string
}

func (c *Config) defaults() {
	if c.Path == "" {
		c.Path = "/v1/ws"
	}
	if c.TokenTTL <= 0 {
		c.TokenTTL = 24 * time.Hour
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.ReadBufferSize <= 0 {
		c.ReadBufferSize = 2048
	}
	if c.MaxStall <= 0 {
		c.MaxStall = 10 * time.Minute
	}
}

// Handler receives what a connection reads. Both functions run on the
// connection's read goroutine, one call at a time, and must not block for
// long: a slow handler is indistinguishable from a slow consumer.
type Handler struct {
	// Frame gets every server object except the welcome, with the time the
	// WebSocket frame carrying it was read. f is not retained by Conn. For
	// msg and ack frames, Sender and TS may be left zero (see decodeHot).
	Frame func(c *Conn, f *wire.Frame, at time.Time)
	// Close gets the reason the connection ended (a *gws.CloseError when the
	// engine sent a close frame) and when the client noticed.
	Close func(c *Conn, err error, at time.Time)
}

// Conn is one client connection.
type Conn struct {
	cfg     Config
	h       Handler
	ws      *gws.Conn
	poll    *poller // a long-polling Conn has no ws
	welcome wire.Frame

	welcomed chan struct{}
	done     chan struct{}
	closeErr error
	closedAt time.Time

	closing atomic.Bool
	silent  atomic.Bool
	pings   atomic.Int64

	stallMu sync.Mutex
	stall   chan struct{}
}

// Token mints the HS256 JWT the engine accepts for user and role
// (Supabase-compatible claims: sub, role, exp).
func Token(secret, user string, role charla.Role, ttl time.Duration) (string, error) {
	now := time.Now()
	t := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"sub":  user,
		"role": string(role),
		"iat":  now.Unix(),
		"exp":  now.Add(ttl).Unix(),
	})
	s, err := t.SignedString([]byte(secret))
	if err != nil {
		return "", fmt.Errorf("sign token for %s: %w", user, err)
	}
	return s, nil
}

// Dial connects, authenticates and waits for the welcome frame. It returns
// only a fully usable connection; every failure is wrapped with the step
// that failed (dial, upgrade with its HTTP status, welcome).
func Dial(ctx context.Context, cfg Config, h Handler) (*Conn, error) {
	cfg.defaults()
	if cfg.Transport == TransportPoll {
		return dialPoll(ctx, cfg, h)
	}
	c := &Conn{cfg: cfg, h: h, welcomed: make(chan struct{}), done: make(chan struct{})}

	q := url.Values{}
	header := http.Header{}
	if cfg.Secret != "" {
		tok, err := Token(cfg.Secret, cfg.User, cfg.Role, cfg.TokenTTL)
		if err != nil {
			return nil, err
		}
		header.Set("Authorization", "Bearer "+tok)
	} else {
		q.Set("user", cfg.User)
		q.Set("role", string(cfg.Role))
	}
	u := url.URL{Scheme: "ws", Host: cfg.Addr, Path: cfg.Path, RawQuery: q.Encode()}

	deadline := time.Now().Add(cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	timeout := time.Until(deadline)
	if timeout <= 0 {
		return nil, fmt.Errorf("dial %s: %w", cfg.Addr, context.DeadlineExceeded)
	}
	opt := &gws.ClientOption{
		Addr:             u.String(),
		RequestHeader:    header,
		HandshakeTimeout: timeout,
		ReadBufferSize:   cfg.ReadBufferSize,
		Recovery:         gws.Recovery,
		NewDialer: func() (gws.Dialer, error) {
			d := &net.Dialer{Timeout: timeout}
			if cfg.LocalIP != nil {
				d.LocalAddr = &net.TCPAddr{IP: cfg.LocalIP}
			}
			if cfg.RecvBufferBytes > 0 {
				n := cfg.RecvBufferBytes
				d.Control = func(_, _ string, rc syscall.RawConn) error {
					var serr error
					err := rc.Control(func(fd uintptr) {
						serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, n)
					})
					return errors.Join(err, serr)
				}
			}
			return d, nil
		},
	}
	ws, resp, err := gws.NewClient(&events{c: c}, opt)
	if err != nil {
		if resp != nil {
			if resp.Body != nil {
				_ = resp.Body.Close()
			}
			return nil, fmt.Errorf("upgrade %s as %s: HTTP %d: %w", cfg.Addr, cfg.User, resp.StatusCode, err)
		}
		return nil, fmt.Errorf("dial %s: %w", cfg.Addr, err)
	}
	c.ws = ws
	go ws.ReadLoop()

	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-c.welcomed:
		return c, nil
	case <-c.done:
		return nil, fmt.Errorf("welcome from %s: connection closed first: %w", cfg.Addr, c.closeErr)
	case <-ctx.Done():
		c.Close()
		return nil, fmt.Errorf("welcome from %s: %w", cfg.Addr, ctx.Err())
	case <-t.C:
		c.Close()
		return nil, fmt.Errorf("welcome from %s: none within %v", cfg.Addr, cfg.HandshakeTimeout)
	}
}

// Welcome is the engine's first frame (heartbeat settings, conn id).
func (c *Conn) Welcome() wire.Frame { return c.welcome }

// User is the user this connection authenticated as.
func (c *Conn) User() string { return c.cfg.User }

// LocalAddr is the connection's source address (for a poller, the one its
// requests are made from, or nil when the kernel chooses).
func (c *Conn) LocalAddr() net.Addr {
	if c.poll != nil {
		if c.cfg.LocalIP == nil {
			return nil
		}
		return &net.TCPAddr{IP: c.cfg.LocalIP}
	}
	return c.ws.LocalAddr()
}

// Done is closed when the connection has ended and its read loop returned.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended; valid after Done.
func (c *Conn) Err() error {
	<-c.done
	return c.closeErr
}

// ClosedAt is when the client noticed the end; valid after Done.
func (c *Conn) ClosedAt() time.Time {
	<-c.done
	return c.closedAt
}

// Heartbeats is how many server WebSocket pings the connection received.
func (c *Conn) Heartbeats() int64 { return c.pings.Load() }

// ClosedByUs reports whether Close was called (as opposed to the engine or
// the network ending the connection).
func (c *Conn) ClosedByUs() bool { return c.closing.Load() }

// CloseCode is the close code the engine sent, or 0 when the connection
// ended without a close frame (reset, EOF, our own close).
func CloseCode(err error) uint16 {
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return 0
}

func (c *Conn) write(kind string, f *wire.Frame) error {
	if c.poll != nil {
		return c.poll.write(kind, f)
	}
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	if err := c.ws.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout)); err != nil {
		return fmt.Errorf("write %s: %w", kind, err)
	}
	if err := c.ws.WriteMessage(gws.OpcodeText, b); err != nil {
		return fmt.Errorf("write %s: %w", kind, err)
	}
	return nil
}

// Subscribe asks for conv's messages with seq > since.
func (c *Conn) Subscribe(conv charla.ConvID, since charla.Seq, ref string) error {
	return c.write("subscribe", &wire.Frame{Type: wire.TypeSubscribe, Ref: ref, Conv: conv, Since: since})
}

// Send sends a message; ref is echoed on an error answering it.
func (c *Conn) Send(conv charla.ConvID, clientMsgID string, body json.RawMessage, ref string) error {
	return c.write("send", &wire.Frame{Type: wire.TypeSend, Ref: ref, Conv: conv, ClientMsgID: clientMsgID, Body: body})
}

// Inventory asks for sku's stock (PROTOCOL.md, "Inventory"); the answer is
// an inventory frame, an error, or job frames, the first carrying ref.
func (c *Conn) Inventory(sku, ref string) error {
	return c.write("inventory", &wire.Frame{Type: wire.TypeInventory, Ref: ref, SKU: sku})
}

// Ping sends an application ping carrying t (echoed in the pong), which is
// how heartbeat round trips are measured from the client side.
func (c *Conn) Ping(t int64, ref string) error {
	return c.write("ping", &wire.Frame{Type: wire.TypePing, Ref: ref, T: json.RawMessage(strconv.FormatInt(t, 10))})
}

// Silence makes the connection stop answering server pings. The caller
// stops sending; reading goes on only so that the moment the engine closes
// the connection is seen: from the engine's side the client is silent.
func (c *Conn) Silence() { c.silent.Store(true) }

// Stall makes the read loop block before handling the next frame, until
// Release, Close or MaxStall: the client stops reading, TCP pushes back,
// and the engine's outbound queue for it fills.
func (c *Conn) Stall() {
	c.stallMu.Lock()
	if c.stall == nil {
		c.stall = make(chan struct{})
	}
	c.stallMu.Unlock()
}

// Release ends a Stall.
func (c *Conn) Release() {
	c.stallMu.Lock()
	if c.stall != nil {
		close(c.stall)
		c.stall = nil
	}
	c.stallMu.Unlock()
}

func (c *Conn) waitStall() {
	c.stallMu.Lock()
	ch := c.stall
	c.stallMu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(c.cfg.MaxStall)
	defer t.Stop()
	select {
	case <-ch:
	case <-t.C:
	}
}

// closeWait bounds how long Close waits for the read loop to end.
const closeWait = 5 * time.Second

// Close ends the connection with a normal close frame and waits (bounded)
// for its read loop to return, so that no goroutine outlives it.
func (c *Conn) Close() {
	c.closing.Store(true)
	if c.poll != nil {
		c.poll.close()
		return
	}
	c.Release()
	_ = c.ws.SetWriteDeadline(time.Now().Add(time.Second))
	_ = c.ws.WriteClose(1000, nil)
	t := time.NewTimer(closeWait)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		_ = c.ws.NetConn().Close()
		<-c.done
	}
}

// events adapts gws callbacks to Conn.
type events struct{ c *Conn }

// OnOpen implements gws.Event; the welcome frame, not the upgrade, is
// what makes a connection usable.
func (e *events) OnOpen(*gws.Conn) {}

// OnClose implements gws.Event: it records why and when, then tells the
// scenario.
func (e *events) OnClose(_ *gws.Conn, err error) { e.c.ended(err) }

// ended records why and when the connection ended, then tells the
// scenario; it runs once per connection.
func (c *Conn) ended(err error) {
	c.closedAt = time.Now()
	c.closeErr = err
	close(c.done)
	if c.h.Close != nil {
		c.h.Close(c, err, c.closedAt)
	}
}

// OnPing implements gws.Event: server heartbeats are answered unless the
// connection was told to fall silent.
func (e *events) OnPing(socket *gws.Conn, payload []byte) {
	c := e.c
	c.pings.Add(1)
	if c.silent.Load() {
		return
	}
	_ = socket.SetWriteDeadline(time.Now().Add(c.cfg.WriteTimeout))
	_ = socket.WritePong(payload)
}

// OnPong implements gws.Event; the bench measures round trips with ping
// frames, whose pongs arrive as messages.
func (e *events) OnPong(*gws.Conn, []byte) {}

// OnMessage implements gws.Event: split batched objects, decode each
// (fast path for msg and ack), and hand them to the scenario.
func (e *events) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	c := e.c
	c.waitStall()
	at := time.Now()
	for _, obj := range wire.Split(m.Bytes()) {
		var f wire.Frame
		if !decodeHot(obj, &f) {
			f = wire.Frame{}
			if err := json.Unmarshal(obj, &f); err != nil {
				f = wire.Frame{Type: TypeInvalid, Message: err.Error()}
			}
		}
		if f.Type == wire.TypeWelcome {
			select {
			case <-c.welcomed:
			default:
				c.welcome = f
				close(c.welcomed)
				continue
			}
		}
		if c.h.Frame != nil {
			c.h.Frame(c, &f, at)
		}
	}
}
