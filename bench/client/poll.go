package client

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/lxzan/gws"

	"charla"
	"charla/wire"
)

// Transports a Config may name.
const (
	TransportWS   = "ws"
	TransportPoll = "poll"
)

// The long-polling client (docs/PROTOCOL.md, "Long-polling"): a Conn whose
// frames come from POST /v1/poll answers and whose sends go over
// POST /v1/send, so that the fleet's bookkeeping (acks, ledger, latencies)
// is the same for both transports. The session follows the conversations
// subscribed with their cursors: the last seq this client handed to its
// Handler, which is what makes the engine deliver each message exactly once.

const (
	// pollWait is each poll's wait_ms: under the engine's cap (30 s), and
	// polls answer as soon as a frame is there anyway.
	pollWait = 25 * time.Second
	// pollSlack is how much longer than its wait a poll may take.
	pollSlack = 15 * time.Second
	// sendAckSlack bounds POST /v1/send beyond the engine's own 10 s.
	sendAckSlack = 15 * time.Second
	// maxSendsInFlight bounds one poller's concurrent POST /v1/send.
	maxSendsInFlight = 16
	// cursorRef prefixes the refs of the subscriptions a poll's cursors
	// make (transport.cursorRef).
	cursorRef = "cursor:"
)

// poller is a Conn's long-polling side.
type poller struct {
	c      *Conn
	hc     *http.Client
	base   string      // http://addr
	query  url.Values  // dev auth, or empty
	header http.Header // Authorization, or empty
	sid    string

	ctx    context.Context // ends every request on close
	cancel context.CancelFunc
	wake   chan struct{} // cap 1: the cursors changed
	wg     sync.WaitGroup
	sends  chan struct{} // semaphore of in-flight sends

	// hmu serialises Handler calls (the poll loop and the sends' answers),
	// as a WebSocket's single read goroutine does.
	hmu sync.Mutex

	mu      sync.Mutex
	cursors map[charla.ConvID]charla.Seq
	refs    map[charla.ConvID]string // the ref the caller's subscribe used
}

// pollAnswer is a POST /v1/poll answer, or why there is none.
type pollAnswer struct {
	at      time.Time
	frames  []json.RawMessage
	closed  *gws.CloseError
	cursors bool // the poll listed cursors
	err     error
}

func newSessionID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "bench-" + hex.EncodeToString(b[:])
}

// dialPoll opens a poll session and waits for its welcome, then starts the
// poll loop.
func dialPoll(ctx context.Context, cfg Config, h Handler) (*Conn, error) {
	c := &Conn{cfg: cfg, h: h, welcomed: make(chan struct{}), done: make(chan struct{})}
	d := &net.Dialer{Timeout: cfg.HandshakeTimeout}
	if cfg.LocalIP != nil {
		d.LocalAddr = &net.TCPAddr{IP: cfg.LocalIP}
	}
	p := &poller{
		c: c, base: "http://" + cfg.Addr, query: url.Values{}, header: http.Header{}, sid: newSessionID(),
		hc: &http.Client{Transport: &http.Transport{
			DialContext: d.DialContext, MaxIdleConnsPerHost: maxSendsInFlight + 1,
			IdleConnTimeout: time.Minute, DisableCompression: true,
		}},
		wake: make(chan struct{}, 1), sends: make(chan struct{}, maxSendsInFlight),
		cursors: map[charla.ConvID]charla.Seq{}, refs: map[charla.ConvID]string{},
	}
	if cfg.Secret != "" {
		tok, err := Token(cfg.Secret, cfg.User, cfg.Role, cfg.TokenTTL)
		if err != nil {
			return nil, err
		}
		p.header.Set("Authorization", "Bearer "+tok)
	} else {
		p.query.Set("user", cfg.User)
		p.query.Set("role", string(cfg.Role))
	}
	p.ctx, p.cancel = context.WithCancel(context.Background())
	c.poll = p

	hctx, cancel := context.WithTimeout(ctx, cfg.HandshakeTimeout)
	defer cancel()
	a := p.poll(hctx, 0)
	if a.err == nil && a.closed != nil {
		a.err = a.closed
	}
	if a.err != nil {
		p.cancel()
		p.hc.CloseIdleConnections()
		return nil, fmt.Errorf("first poll at %s as %s: %w", cfg.Addr, cfg.User, a.err)
	}
	rest := a.frames
	for i, obj := range a.frames {
		var f wire.Frame
		if json.Unmarshal(obj, &f) == nil && f.Type == wire.TypeWelcome {
			c.welcome = f
			close(c.welcomed)
			rest = append(append([]json.RawMessage(nil), a.frames[:i]...), a.frames[i+1:]...)
			break
		}
	}
	if c.welcome.Type == "" {
		p.cancel()
		p.hc.CloseIdleConnections()
		return nil, fmt.Errorf("first poll at %s as %s: no welcome in %d frames", cfg.Addr, cfg.User, len(a.frames))
	}
	a.frames = rest
	p.handle(a)
	p.wg.Go(p.loop)
	return c, nil
}

// do posts body to path and returns the answer's status and body.
func (p *poller) do(ctx context.Context, path string, body any) (int, []byte, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, nil, fmt.Errorf("encode %s: %w", path, err)
	}
	u := p.base + path
	if len(p.query) > 0 {
		u += "?" + p.query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.hc.Do(req)
	if err != nil {
		return 0, nil, fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return resp.StatusCode, nil, fmt.Errorf("%s: read answer: %w", path, err)
	}
	return resp.StatusCode, rb, nil
}

// poll makes one POST /v1/poll with the current cursors.
func (p *poller) poll(ctx context.Context, wait time.Duration) pollAnswer {
	p.mu.Lock()
	cursors := make(map[charla.ConvID]charla.Seq, len(p.cursors))
	for k, v := range p.cursors {
		cursors[k] = v
	}
	p.mu.Unlock()
	ms := wait.Milliseconds()
	ctx, cancel := context.WithTimeout(ctx, wait+pollSlack)
	defer cancel()
	req := struct {
		Session string                       `json:"session"`
		Cursors map[charla.ConvID]charla.Seq `json:"cursors"`
		WaitMS  *int64                       `json:"wait_ms"`
	}{p.sid, cursors, &ms}
	status, body, err := p.do(ctx, "/v1/poll", req)
	a := pollAnswer{at: time.Now(), cursors: len(cursors) > 0}
	if err != nil {
		a.err = err
		return a
	}
	if status != http.StatusOK {
		a.err = fmt.Errorf("/v1/poll: HTTP %d: %s", status, strings.TrimSpace(string(body)))
		return a
	}
	var resp struct {
		Frames []json.RawMessage `json:"frames"`
		Closed *struct {
			Code   uint16 `json:"code"`
			Reason string `json:"reason"`
		} `json:"closed"`
	}
	if err := json.Unmarshal(body, &resp); err != nil {
		a.err = fmt.Errorf("/v1/poll: answer: %w", err)
		return a
	}
	a.frames = resp.Frames
	if resp.Closed != nil {
		a.closed = &gws.CloseError{Code: resp.Closed.Code, Reason: []byte(resp.Closed.Reason)}
	}
	return a
}

// loop polls until the session closes, a poll fails or Close. A poll with
// no cursors is joined by a second one when a subscribe comes, so that the
// subscription starts at once: the engine ends the waiting poll, and its
// answer (which holds no msg, having followed nothing) is handled first.
// A poll that follows conversations is never joined — its answer may hold
// messages the next poll's cursors would not count yet — so further
// subscriptions start with the next poll.
func (p *poller) loop() {
	var queue []chan pollAnswer
	var listed []bool
	issue := func() {
		ch := make(chan pollAnswer, 1)
		p.mu.Lock()
		listed = append(listed, len(p.cursors) > 0)
		p.mu.Unlock()
		queue = append(queue, ch)
		p.wg.Go(func() { ch <- p.poll(p.ctx, pollWait) })
	}
	for {
		if len(queue) == 0 {
			issue()
		}
		select {
		case a := <-queue[0]:
			queue, listed = queue[1:], listed[1:]
			if p.ctx.Err() != nil {
				for _, ch := range queue {
					<-ch
				}
				p.c.ended(nil)
				return
			}
			if end := p.handle(a); end != nil {
				p.cancel()
				for _, ch := range queue {
					<-ch
				}
				p.c.ended(end)
				return
			}
		case <-p.wake:
			if len(queue) == 1 && !listed[0] {
				issue()
			}
		}
	}
}

// handle hands an answer's frames to the Handler, keeping the cursors, and
// returns why the session ended (nil while it goes on).
func (p *poller) handle(a pollAnswer) error {
	if a.err != nil {
		return a.err
	}
	p.hmu.Lock()
	defer p.hmu.Unlock()
	for _, obj := range a.frames {
		var f wire.Frame
		if !decodeHot(obj, &f) {
			f = wire.Frame{}
			if err := json.Unmarshal(obj, &f); err != nil {
				f = wire.Frame{Type: TypeInvalid, Message: err.Error()}
			}
		}
		p.track(&f)
		if p.c.h.Frame != nil {
			p.c.h.Frame(p.c, &f, a.at)
		}
	}
	if a.closed != nil {
		return a.closed
	}
	return nil
}

// track moves the cursors with what the client got, and gives the
// subscriptions' answers the caller's ref back.
func (p *poller) track(f *wire.Frame) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch f.Type {
	case wire.TypeMsg:
		if cur, ok := p.cursors[f.Conv]; ok && f.Seq > cur {
			p.cursors[f.Conv] = f.Seq
		}
	case wire.TypeSubscribed:
		if cur, ok := p.cursors[f.Conv]; ok && f.Since < cur {
			p.cursors[f.Conv] = f.Since // a cursor beyond the head: drop what is above it
		}
		fallthrough
	case wire.TypeError:
		if conv, ok := strings.CutPrefix(f.Ref, cursorRef); ok {
			if ref, ok := p.refs[charla.ConvID(conv)]; ok {
				f.Ref = ref
			}
		}
	}
}

// write carries a client frame: subscribe and unsubscribe change the
// cursors, send goes over POST /v1/send, the rest over POST /v1/frames.
func (p *poller) write(kind string, f *wire.Frame) error {
	if p.ctx.Err() != nil {
		return fmt.Errorf("write %s: poll session closed", kind)
	}
	switch f.Type {
	case wire.TypeSubscribe:
		p.mu.Lock()
		p.cursors[f.Conv], p.refs[f.Conv] = f.Since, f.Ref
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
		return nil
	case wire.TypeSend:
		select {
		case p.sends <- struct{}{}:
		case <-p.ctx.Done():
			return fmt.Errorf("write %s: poll session closed", kind)
		}
		p.wg.Go(func() {
			defer func() { <-p.sends }()
			p.send(*f)
		})
		return nil
	default:
		ctx, cancel := context.WithTimeout(p.ctx, p.c.cfg.WriteTimeout)
		defer cancel()
		status, body, err := p.do(ctx, "/v1/frames", struct {
			Session string        `json:"session"`
			Frames  []*wire.Frame `json:"frames"`
		}{p.sid, []*wire.Frame{f}})
		if err == nil && status != http.StatusAccepted {
			err = fmt.Errorf("HTTP %d: %s", status, strings.TrimSpace(string(body)))
		}
		if err != nil {
			return fmt.Errorf("write %s: %w", kind, err)
		}
		return nil
	}
}

// send posts one send frame and hands its answer (the ack, or the error
// frame) to the Handler; a request that failed becomes an unavailable
// error frame, which is what it means for the sender: resend.
func (p *poller) send(f wire.Frame) {
	ctx, cancel := context.WithTimeout(p.ctx, sendAckSlack)
	defer cancel()
	status, body, err := p.do(ctx, "/v1/send", &f)
	at := time.Now()
	var answer wire.Frame
	switch {
	case err != nil:
		if p.ctx.Err() != nil {
			return // closing: the answer no longer matters
		}
		answer = wire.Frame{Type: wire.TypeError, Ref: f.Ref, Code: charla.CodeUnavailable, Message: err.Error()}
	case !decodeHot(body, &answer):
		answer = wire.Frame{}
		if json.Unmarshal(body, &answer) != nil || (answer.Type != wire.TypeAck && answer.Type != wire.TypeError) {
			answer = wire.Frame{Type: TypeInvalid, Message: fmt.Sprintf("/v1/send: HTTP %d: %s", status, strings.TrimSpace(string(body)))}
		}
	}
	p.hmu.Lock()
	defer p.hmu.Unlock()
	if p.c.h.Frame != nil {
		p.c.h.Frame(p.c, &answer, at)
	}
}

// close ends every request and waits for the loop and the sends.
func (p *poller) close() {
	p.cancel()
	p.wg.Wait()
	p.hc.CloseIdleConnections()
}
