package transport

import (
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"charla/ratelimit"
)

// ipConns caps the concurrent TCP connections of one peer address
// (Config.MaxConnsPerIP), counted from accept to close, so hijacked
// WebSockets and keep-alive connections alike. It counts the TCP peer, the
// only address known at accept: a trusted proxy carries many clients and is
// exempt, as are allow-listed addresses.
type ipConns struct {
	max     int
	limits  *ratelimit.Registry
	mu      sync.Mutex
	n       map[netip.Addr]int
	refused atomic.Int64
}

// wrap returns ln with the cap applied (ln itself when there is none).
func (c *ipConns) wrap(ln net.Listener) net.Listener {
	if c.max <= 0 {
		return ln
	}
	return &capListener{Listener: ln, c: c}
}

func (c *ipConns) acquire(a netip.Addr) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a] >= c.max {
		return false
	}
	c.n[a]++
	return true
}

func (c *ipConns) release(a netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n[a] <= 1 {
		delete(c.n, a) // the map holds only addresses with open connections
		return
	}
	c.n[a]--
}

type capListener struct {
	net.Listener
	c *ipConns
}

// refusal is the whole answer to a connection over the cap: it is written
// before the request is read, which HTTP/1.1 clients accept.
var refusal = func() []byte {
	body := `{"code":"rate_limited","message":"too many connections from this address"}`
	return fmt.Appendf(nil, "HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}()

// Accept returns the next connection under the cap; one over it is
// answered 429 and closed off the accept loop.
func (l *capListener) Accept() (net.Conn, error) {
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ap, perr := netip.ParseAddrPort(conn.RemoteAddr().String())
		if perr != nil {
			return conn, nil // not an IP peer (a test's pipe): nothing to count
		}
		a := ap.Addr().Unmap()
		if l.c.limits.Exempt(a) || l.c.limits.Trusted(a) {
			return conn, nil
		}
		if l.c.acquire(a) {
			return &countedConn{Conn: conn, release: func() { l.c.release(a) }}, nil
		}
		l.c.refused.Add(1)
		go refuse(conn)
	}
}

// refuse answers 429, then closes our half and waits briefly for the
// client's: closing at once with its request unread would reset the
// connection and could destroy the answer before the client reads it.
func refuse(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	_, _ = conn.Write(refusal)
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
		var buf [512]byte
		for {
			if _, err := conn.Read(buf[:]); err != nil {
				break
			}
		}
	}
	_ = conn.Close()
}

// countedConn gives its slot back when closed, once, whoever closes it
// (http.Server, or gws for a hijacked WebSocket).
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// CloseWrite passes a half-close through: http.Server and the WebSocket
// closing handshake use it when the connection offers it.
func (c *countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
