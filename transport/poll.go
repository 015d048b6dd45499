package transport

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
	"time"

	"charla"
	"charla/actors"
	"charla/wire"
)

// Long-polling (docs/PROTOCOL.md, "Long-polling"): a poll session is a conn
// actor like a WebSocket's — same subscriptions, seq check, bounded queue and
// heartbeat — whose Socket is a pollSession instead of a gws connection. The
// conn actor's outbox hands its frames to the socket's writer, and for a poll
// session the writer is whichever HTTP handler is answering a poll: frames
// wait in the outbox (bounded, 4008 past the cap) until a poll takes them, so
// a waiting poll costs its HTTP handler and nothing else.

// Long-polling limits.
const (
	// DefaultPollWait is how long a poll waits when it names no wait_ms.
	DefaultPollWait = 25 * time.Second
	// MaxPollWait caps wait_ms: beyond it proxies and load balancers start
	// cutting idle requests.
	MaxPollWait = 30 * time.Second
	// SessionHeader carries the poll session id on /v1/poll and /v1/frames
	// (the poll body's "session" field may carry it instead).
	SessionHeader = "X-Charla-Session"
	// MaxSessionIDLen bounds a client-chosen session id.
	MaxSessionIDLen = 64
	// MaxFramesPerRequest bounds the frames of one POST /v1/frames.
	MaxFramesPerRequest = 100
	// SendAckTimeout is how long POST /v1/send waits for the ack; past it
	// the answer is unavailable and the client resends the same
	// client_msg_id (which answers duplicate if it was stored meanwhile).
	SendAckTimeout = 10 * time.Second

	maxPollBody   = 256 << 10 // cursors of max-subscriptions conversations
	maxFramesBody = 1 << 20
	// cursorRef prefixes the ref of the subscribes a poll's cursors make, so
	// that their subscribed and error frames say which conversation.
	cursorRef = "cursor:"
)

// PollRequest is the body of POST /v1/poll.
type PollRequest struct {
	// Session names the poll session; empty asks for a new one (or takes
	// the SessionHeader).
	Session string `json:"session,omitempty"`
	// Cursors is every conversation the client follows, each with the last
	// seq it has seen: it subscribes those the session does not follow yet
	// (since = cursor), resubscribes one whose cursor is not the last seq
	// the session delivered (a lost answer), and unsubscribes the session
	// from conversations no longer listed.
	Cursors map[charla.ConvID]charla.Seq `json:"cursors"`
	// WaitMS is how long to wait for a frame (0: answer at once; absent:
	// DefaultPollWait; capped at MaxPollWait).
	WaitMS *int64 `json:"wait_ms,omitempty"`
}

// PollResponse answers POST /v1/poll.
type PollResponse struct {
	Session string `json:"session"`
	// Frames are the server frames, exactly as a WebSocket carries them
	// (welcome first in a new session, then subscribed, msg, ack, typing,
	// read, job, error…); an empty list when wait_ms ran out.
	Frames []json.RawMessage `json:"frames"`
	// Closed is set when the session has ended (the WebSocket close code and
	// reason): the next poll starts a new session and resubscribes from its
	// cursors.
	Closed *PollClosed `json:"closed,omitempty"`
}

// PollClosed is why a poll session ended.
type PollClosed struct {
	Code   uint16 `json:"code"`
	Reason string `json:"reason"`
}

// FramesRequest is the body of POST /v1/frames: client frames (any type but
// subscribe and unsubscribe, which a poll's cursors do) for the session's
// conn actor, in order. Their replies come with the next polls.
type FramesRequest struct {
	Session string            `json:"session,omitempty"`
	Frames  []json.RawMessage `json:"frames"`
}

// FramesResponse answers POST /v1/frames (202 Accepted).
type FramesResponse struct {
	Session  string `json:"session"`
	Accepted int    `json:"accepted"`
}

// routePoll adds the long-polling endpoints to mux, and has a shutdown of
// srv end every waiting poll at once (http.Server.Shutdown would otherwise
// wait for them).
func (s *Server) routePoll(mux *http.ServeMux, srv *http.Server) {
	s.polls = &pollRegistry{srv: s, sessions: map[string]*pollSession{}, stopping: make(chan struct{})}
	mux.HandleFunc("POST /v1/poll", s.handlePoll)
	mux.HandleFunc("POST /v1/send", s.handleSend)
	mux.HandleFunc("POST /v1/frames", s.handleFrames)
	srv.RegisterOnShutdown(s.polls.stop)
}

// pollRegistry holds the live poll sessions by (role, user, session id): a
// session is only ever found by the user who made it.
type pollRegistry struct {
	srv      *Server
	mu       sync.Mutex
	sessions map[string]*pollSession
	stopped  bool
	stopping chan struct{} // closed by stop
}

func pollKey(user charla.Sender, id string) string {
	return string(user.Role) + "\x00" + user.ID + "\x00" + id
}

// session finds the caller's session id, or starts it (a new conn actor);
// created tells which.
func (g *pollRegistry) session(ctx context.Context, id Identity, sid string) (s *pollSession, created bool, _ *charla.Error) {
	key := pollKey(id.User, sid)
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return nil, false, charla.Errorf(charla.CodeUnavailable, "server is restarting; poll again shortly")
	}
	s = g.sessions[key]
	if s == nil {
		created = true
		s = &pollSession{reg: g, key: key, id: sid, ready: make(chan struct{}), wake: make(chan struct{}, 1), subs: map[charla.ConvID]*pollSub{}}
		g.sessions[key] = s
		g.mu.Unlock()
		h, err := g.srv.sys.Connect(ctx, newConnID(), id.User, s, id.Expires)
		if err != nil {
			g.srv.log.Error().Err(err).Msg("poll session not started")
			s.failed = true
			g.remove(s)
			close(s.ready)
			return nil, false, charla.Errorf(charla.CodeUnavailable, "session could not be started; retry")
		}
		s.setHandle(h)
		close(s.ready)
	} else {
		g.mu.Unlock()
	}
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, false, charla.Errorf(charla.CodeUnavailable, "session is still starting; retry")
	}
	if s.failed {
		return nil, false, charla.Errorf(charla.CodeUnavailable, "session could not be started; retry")
	}
	return s, created, nil
}

func (g *pollRegistry) isStopping() bool {
	select {
	case <-g.stopping:
		return true
	default:
		return false
	}
}

func (g *pollRegistry) remove(s *pollSession) {
	g.mu.Lock()
	if g.sessions[s.key] == s {
		delete(g.sessions, s.key)
	}
	g.mu.Unlock()
}

// stop ends every waiting poll and refuses new ones; the sessions' frames
// are dropped from then on, so that their conn actors can finish their
// shutdown (1012) without waiting for a poll that will not come.
func (g *pollRegistry) stop() {
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return
	}
	g.stopped = true
	close(g.stopping)
	sessions := make([]*pollSession, 0, len(g.sessions))
	for _, s := range g.sessions {
		sessions = append(sessions, s)
	}
	g.mu.Unlock()
	for _, s := range sessions {
		s.drain()
	}
}

// pollSession is the actors.Socket of a poll session: the writer that the
// conn actor's outbox asks for (Async) runs on the HTTP handler of the next
// poll, which collects what WriteFrame writes into its answer.
type pollSession struct {
	reg    *pollRegistry
	key    string
	id     string
	ready  chan struct{} // closed once the conn actor started (or failed to)
	failed bool          // set before ready is closed

	// pollMu is held by the poll being answered: one at a time per session.
	pollMu sync.Mutex
	// subs is what the session follows, with the seq each conversation's
	// next msg must have; only the poll holding pollMu touches it.
	subs map[charla.ConvID]*pollSub

	mu       sync.Mutex
	h        actors.ConnHandle
	hasH     bool
	fns      []func()      // writer work waiting for a poll, in order
	out      [][]byte      // what the writer wrote (batches, '\n'-separated)
	wake     chan struct{} // cap 1: writer work or a close arrived
	kick     chan struct{} // closed to end the poll waiting now (a newer poll came)
	waiting  bool          // a poll is waiting: a heartbeat ping is answered at once
	closed   *charla.Disconnect
	draining bool // the server is stopping: frames are dropped
}

// pollSub tracks one followed conversation: expect is the seq of the next
// msg the client must get. It drops what the client already has, so that a
// resubscribe after a lost answer delivers nothing twice.
type pollSub struct{ expect charla.Seq }

// Async queues f for the next poll, or runs it now when the server is
// stopping (its frames are dropped).
func (s *pollSession) Async(f func()) {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		f()
		return
	}
	s.fns = append(s.fns, f)
	s.mu.Unlock()
	s.signal()
}

// WriteFrame collects a batch for the poll running the writer (a copy: the
// outbox reuses its buffer); it never blocks.
func (s *pollSession) WriteFrame(frame []byte) error {
	s.mu.Lock()
	if !s.draining {
		s.out = append(s.out, bytes.Clone(frame))
	}
	s.mu.Unlock()
	return nil
}

// Ping answers for the client when a poll is waiting: the poll is the
// client's sign of life, however long it waits.
func (s *pollSession) Ping() {
	s.mu.Lock()
	alive, h := s.waiting && s.hasH, s.h
	s.mu.Unlock()
	if alive {
		h.Alive(false)
	}
}

// Close ends the session: the waiting poll (or the next one) answers the
// last frames with closed, the session is forgotten, and its conn actor
// stops, which frees its subscriptions.
func (s *pollSession) Close(d charla.Disconnect) {
	s.mu.Lock()
	if s.closed != nil {
		s.mu.Unlock()
		return
	}
	s.closed = &d
	h, hasH := s.h, s.hasH
	s.mu.Unlock()
	s.signal()
	s.reg.remove(s)
	if hasH {
		h.Closed(nil)
	}
}

func (s *pollSession) setHandle(h actors.ConnHandle) {
	s.mu.Lock()
	s.h, s.hasH = h, true
	closed := s.closed != nil
	s.mu.Unlock()
	if closed {
		h.Closed(nil) // closed before Connect returned
	}
}

func (s *pollSession) handle() actors.ConnHandle {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.h
}

func (s *pollSession) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *pollSession) drain() {
	s.mu.Lock()
	s.draining = true
	fns := s.fns
	s.fns, s.out = nil, nil
	s.mu.Unlock()
	for _, f := range fns {
		f()
	}
}

// take runs the writer work queued so far (on the calling poll's
// goroutine) and returns what it wrote, and the close if the session ended.
func (s *pollSession) take() ([][]byte, *charla.Disconnect) {
	s.mu.Lock()
	fns := s.fns
	s.fns = nil
	s.mu.Unlock()
	for _, f := range fns {
		f()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.out
	s.out = nil
	return out, s.closed
}

// follow turns a poll's cursors into subscribe and unsubscribe frames for
// the conn actor.
func (s *pollSession) follow(h actors.ConnHandle, cursors map[charla.ConvID]charla.Seq) {
	for conv, cursor := range cursors {
		if sub := s.subs[conv]; sub != nil && sub.expect == cursor+1 {
			continue // the client has exactly what the session delivered
		}
		// New, or the client's cursor differs from what the session
		// delivered (an answer was lost, or the client got more elsewhere):
		// a fresh subscription from the cursor, as a WebSocket resubscribe.
		s.subs[conv] = &pollSub{expect: cursor + 1}
		h.Frame(wire.Frame{Type: wire.TypeSubscribe, Ref: cursorRef + string(conv), Conv: conv, Since: cursor})
	}
	for conv := range s.subs {
		if _, ok := cursors[conv]; !ok {
			delete(s.subs, conv)
			h.Frame(wire.Frame{Type: wire.TypeUnsubscribe, Ref: cursorRef + string(conv), Conv: conv})
		}
	}
}

// peekFrame is what admit reads of a server frame.
type peekFrame struct {
	Type  string        `json:"type"`
	Ref   string        `json:"ref"`
	Conv  charla.ConvID `json:"conv"`
	Seq   charla.Seq    `json:"seq"`
	Since charla.Seq    `json:"since"`
	Head  charla.Seq    `json:"head"`
}

// admit reports whether a server frame goes into the answer: a msg only if
// it is the very seq the client needs next. It keeps subs in step.
func (s *pollSession) admit(obj []byte) bool {
	var p peekFrame
	if err := json.Unmarshal(obj, &p); err != nil {
		return true
	}
	switch p.Type {
	case wire.TypeMsg:
		// Within a subscription the conn actor delivers every seq in order;
		// anything else is left over from the subscription a resubscribe
		// replaced: below expect the client has it, above it the new
		// subscription's replay brings it in order.
		sub := s.subs[p.Conv]
		if sub == nil || p.Seq != sub.expect {
			return false
		}
		sub.expect++
	case wire.TypeSubscribed:
		// Messages of the previous subscription may have gone out already;
		// a since beyond the head is clamped to it (the client drops what it
		// kept above, as over a WebSocket).
		if sub := s.subs[p.Conv]; sub != nil {
			sub.expect = min(max(sub.expect, p.Since+1), p.Head+1)
		}
	case wire.TypeError:
		if len(p.Ref) > len(cursorRef) && p.Ref[:len(cursorRef)] == cursorRef {
			delete(s.subs, charla.ConvID(p.Ref[len(cursorRef):])) // refused: the next poll asks again
		}
	}
	return true
}

func (s *Server) handlePoll(w http.ResponseWriter, r *http.Request) {
	id, ok := s.restIdentity(w, r, "")
	if !ok {
		return
	}
	body, rerr := readBody(w, r, maxPollBody)
	if rerr != nil {
		writeProblem(w, rerr)
		return
	}
	req, wait, derr := decodePollRequest(body, r.Header.Get(SessionHeader), s.sys.Config().MaxSubscriptions)
	if derr != nil {
		writeProblem(w, derr)
		return
	}
	if req.Session == "" {
		req.Session = newConnID()
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	sess, created, serr := s.polls.session(ctx, id, req.Session)
	cancel()
	if serr != nil {
		writeProblem(w, serr)
		return
	}
	if created {
		// The first answer of a session always carries its welcome (the
		// client learns timeout_ms from it), whatever wait_ms says.
		wait = max(wait, requestTimeout)
	}
	// A newer poll ends the one waiting: the client gave up on it.
	sess.mu.Lock()
	if sess.kick != nil {
		close(sess.kick)
		sess.kick = nil
	}
	sess.mu.Unlock()
	sess.pollMu.Lock()
	defer sess.pollMu.Unlock()
	kick := make(chan struct{})
	sess.mu.Lock()
	sess.kick = kick
	sess.mu.Unlock()

	// The answer may take wait; a server-wide write timeout must not cut it.
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + s.cfg.HeartbeatTimeout))
	h := sess.handle()
	h.Alive(false)
	sess.follow(h, req.Cursors)
	resp := PollResponse{Session: req.Session, Frames: []json.RawMessage{}}
	var timer *time.Timer
	if wait > 0 {
		timer = time.NewTimer(wait)
		defer timer.Stop()
	}
	sess.mu.Lock()
	sess.waiting = true
	sess.mu.Unlock()
wait:
	for {
		batches, closed := sess.take()
		for _, b := range batches {
			for _, obj := range wire.Split(b) {
				if sess.admit(obj) {
					resp.Frames = append(resp.Frames, obj)
				}
			}
		}
		if closed != nil {
			resp.Closed = &PollClosed{Code: closed.Code, Reason: closed.Reason}
		}
		if len(resp.Frames) > 0 || closed != nil || timer == nil {
			break
		}
		select {
		case <-sess.wake:
		case <-timer.C:
			break wait
		case <-kick:
			break wait
		case <-r.Context().Done():
			break wait
		case <-s.polls.stopping:
			break wait
		}
	}
	sess.mu.Lock()
	sess.waiting = false
	if sess.kick == kick {
		sess.kick = nil
	}
	sess.mu.Unlock()
	if resp.Closed == nil && s.polls.isStopping() {
		// The server is going away and drops the session's frames from now
		// on: say so, as a WebSocket gets 1012, rather than leave the client
		// to find a refused connection at its next poll.
		d := charla.DisconnectServiceRestart
		resp.Closed = &PollClosed{Code: d.Code, Reason: d.Reason}
	}
	// The client has timeout_ms from this answer to poll again.
	h.Alive(false)
	writeJSON(w, http.StatusOK, resp)
}

func (s *Server) handleFrames(w http.ResponseWriter, r *http.Request) {
	id, ok := s.restIdentity(w, r, "")
	if !ok {
		return
	}
	body, rerr := readBody(w, r, maxFramesBody)
	if rerr != nil {
		writeProblem(w, rerr)
		return
	}
	sid, frames, derr := decodeFramesRequest(body, r.Header.Get(SessionHeader))
	if derr != nil {
		writeProblem(w, derr)
		return
	}
	if sid == "" {
		sid = newConnID()
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	sess, _, serr := s.polls.session(ctx, id, sid)
	cancel()
	if serr != nil {
		writeProblem(w, serr)
		return
	}
	h := sess.handle()
	for _, f := range frames {
		h.Frame(f)
	}
	writeJSON(w, http.StatusAccepted, FramesResponse{Session: sid, Accepted: len(frames)})
}

// handleSend sends one message through a conn actor of its own, started for
// this request (so that the answer never waits for a poll), and answers its
// ack — or its error frame, with the status of its code.
func (s *Server) handleSend(w http.ResponseWriter, r *http.Request) {
	if !s.cfg.Origins.Allowed(r) {
		writeSendError(w, "", charla.Errorf(charla.CodeForbidden, "origin %q is not allowed", r.Header.Get("Origin")))
		return
	}
	id, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		writeSendError(w, "", charla.AsError(err))
		return
	}
	body, rerr := readBody(w, r, int64(s.cfg.MaxFrameBytes))
	if rerr != nil {
		writeSendError(w, "", rerr)
		return
	}
	f, derr := decodeSendRequest(body, s.sys.Config().MaxBodyBytes)
	if derr != nil {
		writeSendError(w, f.Ref, derr)
		return
	}
	if !id.User.CanAccess(f.Conv) {
		writeSendError(w, f.Ref, charla.Errorf(charla.CodeForbidden, "%s may not use conversation %s", id.User.ID, f.Conv))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), SendAckTimeout)
	defer cancel()
	sock := &oneShotSocket{answer: make(chan []byte, 1), closed: make(chan struct{})}
	h, cerr := s.sys.Connect(ctx, newConnID(), id.User, sock, id.Expires, s.connOptions(r)...)
	if cerr != nil {
		s.log.Error().Err(cerr).Msg("send: conn actor not started")
		writeSendError(w, f.Ref, charla.Errorf(charla.CodeUnavailable, "not sent; resend with the same client_msg_id"))
		return
	}
	defer h.Closed(nil)
	h.Frame(f)
	select {
	case answer := <-sock.answer:
		var p peekFrame
		_ = json.Unmarshal(answer, &p)
		if p.Type == wire.TypeAck {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(append(answer, '\n'))
			return
		}
		var e wire.Error
		if json.Unmarshal(answer, &e) != nil || e.Code == "" {
			e = wire.ErrorFrame(f.Ref, charla.Errorf(charla.CodeInternal, "internal error"))
		}
		writeSendError(w, e.Ref, &charla.Error{Code: e.Code, Message: e.Message, RetryAfter: time.Duration(e.RetryAfter) * time.Millisecond})
	case <-sock.closed:
		writeSendError(w, f.Ref, charla.Errorf(charla.CodeUnavailable, "server is restarting; resend with the same client_msg_id"))
	case <-ctx.Done():
		writeSendError(w, f.Ref, charla.Errorf(charla.CodeUnavailable, "not acknowledged within %s; resend with the same client_msg_id", SendAckTimeout))
	}
}

// sendError is POST /v1/send's error answer: the error frame the WebSocket
// would carry, plus the REST error object, so that a client reading either
// shape understands it.
type sendError struct {
	wire.Error
	Problem ProblemDetail `json:"error"`
}

func writeSendError(w http.ResponseWriter, ref string, e *charla.Error) {
	retry := wire.RetryAfterMillis(e.RetryAfter) // rate_limited: the chat bucket's wait
	if retry > 0 {
		w.Header().Set("Retry-After", strconv.FormatInt((retry+999)/1000, 10))
	}
	writeJSON(w, ProblemStatus(e.Code), sendError{Error: wire.ErrorFrame(ref, e), Problem: ProblemDetail{Code: e.Code, Message: e.Message, RetryAfterMS: retry}})
}

// oneShotSocket is the Socket of the conn actor of one POST /v1/send: it
// keeps the first ack or error frame (the welcome goes nowhere).
type oneShotSocket struct {
	answer chan []byte // cap 1
	closed chan struct{}
	once   sync.Once
}

// Async runs f at once: WriteFrame never blocks.
func (o *oneShotSocket) Async(f func()) { f() }

// WriteFrame keeps the first ack or error frame of the batch.
func (o *oneShotSocket) WriteFrame(frame []byte) error {
	for _, obj := range wire.Split(frame) {
		var p peekFrame
		if json.Unmarshal(obj, &p) == nil && (p.Type == wire.TypeAck || p.Type == wire.TypeError) {
			select {
			case o.answer <- bytes.Clone(obj): // the outbox reuses frame's buffer
			default:
			}
		}
	}
	return nil
}

// Ping does nothing: the request is its own life.
func (o *oneShotSocket) Ping() {}

// Close tells the waiting handler that no answer will come.
func (o *oneShotSocket) Close(charla.Disconnect) { o.once.Do(func() { close(o.closed) }) }

// decodePollRequest parses and checks a poll body; the session may come
// from the body or the header (not two different ones). It returns the wait,
// capped.
func decodePollRequest(body []byte, headerSession string, maxSubscriptions int) (PollRequest, time.Duration, *charla.Error) {
	var req PollRequest
	if err := decodeObject(body, &req); err != nil {
		return req, 0, err
	}
	sid, err := pickSession(req.Session, headerSession)
	if err != nil {
		return req, 0, err
	}
	req.Session = sid
	if len(req.Cursors) > maxSubscriptions {
		return req, 0, charla.Errorf(charla.CodeBadRequest, "at most %d cursors per poll (got %d)", maxSubscriptions, len(req.Cursors))
	}
	for conv := range req.Cursors {
		if err := conv.Validate(); err != nil {
			return req, 0, charla.Errorf(charla.CodeBadRequest, "cursor %q: %s", conv, charla.AsError(err).Message)
		}
	}
	wait := DefaultPollWait
	if req.WaitMS != nil {
		if *req.WaitMS < 0 {
			return req, 0, charla.Errorf(charla.CodeBadRequest, "wait_ms must not be negative (got %d)", *req.WaitMS)
		}
		wait = min(time.Duration(min(*req.WaitMS, MaxPollWait.Milliseconds()))*time.Millisecond, MaxPollWait)
	}
	return req, wait, nil
}

// decodeSendRequest parses and checks the body of POST /v1/send: a send
// frame, whose type may be left out.
func decodeSendRequest(body []byte, maxBodyBytes int) (wire.Frame, *charla.Error) {
	var f wire.Frame
	if err := decodeObject(body, &f); err != nil {
		return wire.Frame{}, err
	}
	if f.Type == "" {
		f.Type = wire.TypeSend
	}
	if f.Type != wire.TypeSend {
		return f, charla.Errorf(charla.CodeBadRequest, "/v1/send takes send frames; send %q frames to /v1/frames", f.Type)
	}
	if err := f.Conv.Validate(); err != nil {
		return f, charla.AsError(err)
	}
	if err := charla.ValidateClientMsgID(f.ClientMsgID); err != nil {
		return f, charla.AsError(err)
	}
	if err := charla.ValidateBody(f.Body, maxBodyBytes); err != nil {
		return f, charla.AsError(err)
	}
	return f, nil
}

// decodeFramesRequest parses and checks the body of POST /v1/frames. Every
// frame must be an object with a type, and none may be a subscribe or an
// unsubscribe; otherwise nothing is forwarded.
func decodeFramesRequest(body []byte, headerSession string) (string, []wire.Frame, *charla.Error) {
	var req FramesRequest
	if err := decodeObject(body, &req); err != nil {
		return "", nil, err
	}
	sid, err := pickSession(req.Session, headerSession)
	if err != nil {
		return "", nil, err
	}
	if len(req.Frames) == 0 || len(req.Frames) > MaxFramesPerRequest {
		return "", nil, charla.Errorf(charla.CodeBadRequest, "frames must hold 1 to %d frames (got %d)", MaxFramesPerRequest, len(req.Frames))
	}
	frames := make([]wire.Frame, len(req.Frames))
	for i, raw := range req.Frames {
		f, err := wire.Decode(raw)
		if err != nil {
			return "", nil, charla.Errorf(charla.CodeBadRequest, "frame %d: %s", i, charla.AsError(err).Message)
		}
		if f.Type == wire.TypeSubscribe || f.Type == wire.TypeUnsubscribe {
			return "", nil, charla.Errorf(charla.CodeBadRequest, "frame %d: a poll session follows the cursors of its polls; %s is not sent as a frame", i, f.Type)
		}
		frames[i] = f
	}
	return sid, frames, nil
}

// pickSession returns the session id of a request, from its body or its
// header, checked: 1 to MaxSessionIDLen of A-Z a-z 0-9 - _.
func pickSession(body, header string) (string, *charla.Error) {
	if body != "" && header != "" && body != header {
		return "", charla.Errorf(charla.CodeBadRequest, "session %q in the body and %q in %s differ", body, header, SessionHeader)
	}
	sid := body
	if sid == "" {
		sid = header
	}
	if len(sid) > MaxSessionIDLen {
		return "", charla.Errorf(charla.CodeBadRequest, "session id is longer than %d characters", MaxSessionIDLen)
	}
	for i := 0; i < len(sid); i++ {
		switch b := sid[i]; {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9', b == '-', b == '_':
		default:
			return "", charla.Errorf(charla.CodeBadRequest, "session id may only hold letters, digits, - and _")
		}
	}
	return sid, nil
}
