package transport_test

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"
)

// rawClient is a WebSocket client made by hand on a TCP socket, for the
// misbehaviours a real library will not do: stop reading, never answer
// pings, hold a tiny receive buffer.
type rawClient struct {
	conn net.Conn
	br   *bufio.Reader
}

func dialRaw(t *testing.T, addr, query string, rcvbuf int) *rawClient {
	t.Helper()
	d := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		if rcvbuf <= 0 {
			return nil
		}
		var serr error
		err := c.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf) })
		if err != nil {
			return err
		}
		return serr
	}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "GET /v1/ws?%s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", query, addr)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("handshake: %s", resp.Status)
	}
	return &rawClient{conn: conn, br: br}
}

// writeText sends one masked text frame (the mask key is zero, which is
// valid and leaves the payload as is).
func (c *rawClient) writeText(t *testing.T, payload []byte) {
	t.Helper()
	hdr := []byte{0x81}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = binary.BigEndian.AppendUint64(hdr, uint64(n))
	}
	hdr = append(hdr, 0, 0, 0, 0)
	if _, err := c.conn.Write(append(hdr, payload...)); err != nil {
		t.Fatal(err)
	}
}

// closedWithin drains the socket until the server closes it, and reports
// whether that happened before d. It returns the close code seen, if any.
func (c *rawClient) closedWithin(d time.Duration) (closed bool, code uint16) {
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	for {
		b0, err := c.br.ReadByte()
		if err != nil {
			return !isTimeout(err), code
		}
		b1, err := c.br.ReadByte()
		if err != nil {
			return !isTimeout(err), code
		}
		n := int(b1 & 0x7f)
		switch n {
		case 126:
			var l [2]byte
			if _, err := c.br.Read(l[:]); err != nil {
				return !isTimeout(err), code
			}
			n = int(binary.BigEndian.Uint16(l[:]))
		case 127:
			var l [8]byte
			if _, err := c.br.Read(l[:]); err != nil {
				return !isTimeout(err), code
			}
			n = int(binary.BigEndian.Uint64(l[:]))
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(c.br, payload); err != nil {
			return !isTimeout(err), code
		}
		if b0&0x0f == 0x8 && n >= 2 {
			code = binary.BigEndian.Uint16(payload)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
