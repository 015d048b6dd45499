package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/lxzan/gws"

	"charla"
	"charla/wire"
)

// chat is a line-oriented client for a first session and for poking at a
// running engine: it subscribes to one conversation, prints every frame it
// receives, and sends each line of standard input as a message.
func chat(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	var addr, user, role, tok, conv string
	fs := flagSet{
		{name: "addr", usage: "the engine's address (host:port)", value: strVar(&addr, defaultAddr)},
		{name: "user", usage: "who to chat as (dev auth)", value: strVar(&user, "alice")},
		{name: "role", usage: "agent, customer or admin (dev auth)", value: strVar(&role, string(charla.RoleAgent))},
		{name: "token", usage: "a JWT to connect with instead of dev auth", value: strVar(&tok, ""), secret: true},
		{name: "conv", usage: "the conversation to subscribe and send to", value: strVar(&conv, "demo")},
	}
	err := fs.parse(args, nil, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "charla chat:\n%s\n", indent(err))
		return 2
	}
	u := url.URL{Scheme: "ws", Host: addr, Path: "/v1/ws"}
	header := http.Header{}
	if tok != "" {
		header.Set("Authorization", "Bearer "+tok)
	} else {
		u.RawQuery = url.Values{"user": {user}, "role": {role}}.Encode()
	}
	printer := &framePrinter{out: stdout, done: make(chan struct{})}
	conn, resp, err := gws.NewClient(printer, &gws.ClientOption{Addr: u.String(), RequestHeader: header})
	if err != nil {
		if resp != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			fmt.Fprintf(stderr, "charla chat: HTTP %d: %s\n", resp.StatusCode, strings.TrimSpace(string(body)))
		} else {
			fmt.Fprintf(stderr, "charla chat: %v\n", err)
		}
		return 1
	}
	go conn.ReadLoop()
	send := func(f wire.Frame) error { return conn.WriteMessage(gws.OpcodeText, wire.Encode(f)) }
	if err := send(wire.Frame{Type: wire.TypeSubscribe, Conv: charla.ConvID(conv)}); err != nil {
		fmt.Fprintf(stderr, "charla chat: %v\n", err)
		return 1
	}
	fmt.Fprintf(stderr, "connected to %s as %s; every line you type is sent to %q (Ctrl-D quits)\n", addr, user, conv)
	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		body, _ := json.Marshal(map[string]string{"text": lines.Text()})
		if err := send(wire.Frame{Type: wire.TypeSend, Conv: charla.ConvID(conv), ClientMsgID: uuid.NewString(), Body: body}); err != nil {
			fmt.Fprintf(stderr, "charla chat: %v\n", err)
			return 1
		}
	}
	// Give the last acks a moment, then leave politely.
	select {
	case <-printer.done:
	case <-time.After(500 * time.Millisecond):
	}
	_ = conn.WriteClose(1000, nil)
	<-printer.done
	if printer.err != nil {
		var ce *gws.CloseError
		if errors.As(printer.err, &ce) && ce.Code != 1000 {
			fmt.Fprintf(stderr, "charla chat: closed by the server: %d %s\n", ce.Code, ce.Reason)
			return 1
		}
	}
	return 0
}

type framePrinter struct {
	out  io.Writer
	done chan struct{}
	err  error
}

func (p *framePrinter) OnOpen(*gws.Conn) {}
func (p *framePrinter) OnClose(_ *gws.Conn, err error) {
	p.err = err
	close(p.done)
}
func (p *framePrinter) OnPing(c *gws.Conn, b []byte) { _ = c.WritePong(b) }
func (p *framePrinter) OnPong(*gws.Conn, []byte)     {}
func (p *framePrinter) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	for _, obj := range wire.Split(m.Bytes()) {
		fmt.Fprintln(p.out, string(obj))
	}
}
