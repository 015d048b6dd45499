// Package fleet drives many protocol clients at once and does the
// bookkeeping every scenario shares: connecting with bounded concurrency
// over the chosen source addresses, subscribing with a ledger
// subscription, sending paced messages whose send time travels in the
// body, recording send→ack, send→deliver, ping round trips and connect
// times, counting errors by kind, resending unacked messages after a
// reconnect (as charla.js does), and draining at the end so that the
// ledger's verdict covers every acked message.
//
// Scenarios decide who connects, subscribes, sends or misbehaves; the fleet
// makes each of those one call.
package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/bench/client"
	"charla/bench/ledger"
	"charla/bench/progress"
	"charla/bench/stats"
	"charla/wire"
)

// Config is what every connection of a fleet shares.
type Config struct {
	// Addr, Path, Secret: see client.Config.
	Addr, Path, Secret string
	// Addrs, when set, are the nodes of a cluster: member i connects to
	// Addrs[i % len(Addrs)] unless its Node says otherwise, and with more
	// than one, each message carries its sender's node so that
	// send→deliver is also split into same-node and cross-node.
	Addrs []string
	// Sources spreads source addresses (nil: kernel's choice).
	Sources *client.Sources
	// HandshakeTimeout, WriteTimeout, ReadBufferSize: see client.Config.
	HandshakeTimeout, WriteTimeout time.Duration
	ReadBufferSize                 int
	// BodySize is the length of the text of each message (at least the
	// timestamp; padded with 'x' up to it).
	BodySize int
	// UserPrefix prefixes every user id, so that runs do not share users.
	UserPrefix string
	// Reconnect makes members reconnect after a close they did not ask
	// for, with exponential backoff and full jitter between BackoffBase and
	// BackoffCap, giving up after ReconnectWindow.
	Reconnect               bool
	BackoffBase, BackoffCap time.Duration
	ReconnectWindow         time.Duration
	SubscribeTimeout        time.Duration
	ConnectConcurrency      int
	// Transport is every member's transport unless it names its own:
	// client.TransportWS (default) or client.TransportPoll.
	Transport string
	// Frame, when set, sees every frame a member reads before the fleet
	// does, on the member's read goroutine; returning true consumes it.
	// Scenarios that speak more of the protocol than chat (inventory) take
	// their frames here, so that the fleet does not count them as errors.
	Frame func(m *Member, f *wire.Frame, at time.Time) bool
	// Resend keeps a send refused as unavailable pending without
	// reconnecting, for ResendLoop to send again with the same
	// client_msg_id (a cluster refuses while a shard changes owner).
	Resend bool
	// Ack, when set, sees every first ack of a member's message with the
	// time the message was first sent, on the member's read goroutine.
	Ack func(m *Member, f *wire.Frame, firstSent, at time.Time)
}

func (c *Config) defaults() {
	if c.BackoffBase <= 0 {
		c.BackoffBase = 250 * time.Millisecond
	}
	if c.BackoffCap <= 0 {
		c.BackoffCap = 5 * time.Second
	}
	if c.ReconnectWindow <= 0 {
		c.ReconnectWindow = 60 * time.Second
	}
	if c.SubscribeTimeout <= 0 {
		c.SubscribeTimeout = 10 * time.Second
	}
	if c.ConnectConcurrency <= 0 {
		c.ConnectConcurrency = 64
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 15 * time.Second
	}
}

// Fleet is a set of members sharing counters, latency recorders and a ledger.
type Fleet struct {
	cfg  Config
	base time.Time
	stop chan struct{}
	goMu sync.Mutex // orders spawning reconnects against Close
	wg   sync.WaitGroup

	// Ledger checks delivery; Counters feed the progress line.
	Ledger   *ledger.Ledger
	Counters *progress.Counters

	// The latencies the fleet records.
	SendAck, SendDeliver, RTT, Connect, Reconnect *stats.Latency
	// SendDeliverSameNode and SendDeliverCrossNode split send→deliver by
	// whether sender and receiver are connected to the same node (only
	// with more than one address in Config.Addrs).
	SendDeliverSameNode, SendDeliverCrossNode *stats.Latency
	// ByTransport splits send→ack by the sender's transport and
	// send→deliver by the receiver's (client.TransportWS, TransportPoll).
	ByTransport map[string]*TransportLatency

	phase atomic.Pointer[Phase]

	errMu    sync.Mutex
	errCount map[string]int64
	errFirst map[string]string

	welcomeOnce sync.Once
	welcome     wire.Frame

	sent, rateLimited, behind, skipped atomic.Int64
	resent                             atomic.Int64
	unexpected, reconnects             atomic.Int64

	codesMu sync.Mutex
	codes   map[uint16]int64 // close codes of unexpected closes (0: none)
}

// TransportLatency is the send latencies of the members of one transport.
type TransportLatency struct {
	SendAck, SendDeliver *stats.Latency
}

// Phase holds extra histograms that also receive samples while set; a
// scenario compares phases of one run with them (slow-consumer).
type Phase struct {
	SendAck, SendDeliver *stats.Histogram
}

// New returns an empty fleet; start is second 0 of the latency series.
func New(cfg Config, start time.Time) *Fleet {
	cfg.defaults()
	return &Fleet{
		cfg: cfg, base: start, stop: make(chan struct{}),
		Ledger: ledger.New(), Counters: &progress.Counters{},
		SendAck: stats.NewLatency(start), SendDeliver: stats.NewLatency(start), RTT: stats.NewLatency(start),
		Connect: stats.NewLatency(start), Reconnect: stats.NewLatency(start),
		SendDeliverSameNode: stats.NewLatency(start), SendDeliverCrossNode: stats.NewLatency(start),
		errCount: map[string]int64{}, errFirst: map[string]string{}, codes: map[uint16]int64{},
		ByTransport: map[string]*TransportLatency{
			client.TransportWS:   {SendAck: stats.NewLatency(start), SendDeliver: stats.NewLatency(start)},
			client.TransportPoll: {SendAck: stats.NewLatency(start), SendDeliver: stats.NewLatency(start)},
		},
	}
}

// SetPhase makes p also receive latency samples until the next SetPhase
// (nil ends it).
func (f *Fleet) SetPhase(p *Phase) { f.phase.Store(p) }

// Error counts an error of a kind; the first message of each kind is kept.
func (f *Fleet) Error(kind string, err error) {
	f.Counters.Errors.Add(1)
	f.errMu.Lock()
	defer f.errMu.Unlock()
	f.errCount[kind]++
	if _, ok := f.errFirst[kind]; !ok && err != nil {
		f.errFirst[kind] = err.Error()
	}
}

// Errors returns "kind: first message" → count.
func (f *Fleet) Errors() map[string]int64 {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	out := map[string]int64{}
	for k, n := range f.errCount {
		key := k
		if m := f.errFirst[k]; m != "" {
			key += ": " + m
		}
		out[key] = n
	}
	return out
}

// ErrorCount returns how many errors of kind were counted.
func (f *Fleet) ErrorCount(kind string) int64 {
	f.errMu.Lock()
	defer f.errMu.Unlock()
	return f.errCount[kind]
}

// Welcome is the first welcome frame any member received (the engine's
// heartbeat settings).
func (f *Fleet) Welcome() wire.Frame { return f.welcome }

// Stats are the fleet's send-side counts.
type Stats struct {
	Sent, RateLimited, Behind, Skipped, UnexpectedCloses, Reconnects int64
	// Resent counts messages ResendLoop sent again.
	Resent int64
}

// CloseCodes counts the unexpected closes by the engine's close code (0:
// the connection ended without a close frame).
func (f *Fleet) CloseCodes() map[uint16]int64 {
	f.codesMu.Lock()
	defer f.codesMu.Unlock()
	out := make(map[uint16]int64, len(f.codes))
	for k, v := range f.codes {
		out[k] = v
	}
	return out
}

// Stats returns the send-side counts so far.
func (f *Fleet) Stats() Stats {
	return Stats{Sent: f.sent.Load(), RateLimited: f.rateLimited.Load(), Behind: f.behind.Load(),
		Skipped: f.skipped.Load(), UnexpectedCloses: f.unexpected.Load(), Reconnects: f.reconnects.Load(),
		Resent: f.resent.Load()}
}

// Member is one simulated client: a user, the conversation it works in,
// and (while connected) its connection.
type Member struct {
	f *Fleet
	// Index is the member's position in its scenario (also picks its
	// source address).
	Index int
	// User is the authenticated user id.
	User string
	// Conv is the conversation it subscribes to and sends into.
	Conv charla.ConvID
	// RecvBufferBytes, when > 0, shrinks the socket receive buffer (slow
	// consumers).
	RecvBufferBytes int
	// Transport overrides the fleet's (set before Dial).
	Transport string
	// Node is the index in Config.Addrs of the node it connects to (set
	// before Dial; NewMember spreads members round-robin).
	Node int
	// OnClose, when set, is called for every close the member did not ask
	// for (after the fleet's own handling).
	OnClose func(m *Member, err error, at time.Time)

	conn         atomic.Pointer[client.Conn]
	expectClose  atomic.Bool
	reconnecting atomic.Bool
	resumes      []time.Time // completed reconnects, oldest first (bounded); under mu
	sub          *ledger.Sub

	mu       sync.Mutex
	pending  map[string]*pendingMsg
	order    uint64
	subRef   string
	subDone  chan struct{}
	subNo    chan struct{} // closed when the subscribe is refused unavailable
	subCount int
}

type pendingMsg struct {
	body   json.RawMessage
	sentAt time.Time
	order  uint64
	// lastSent is the latest (re)send; refused says the engine answered
	// it unavailable.
	lastSent time.Time
	refused  bool
}

// NewMember creates member i working in conv (may be empty).
func (f *Fleet) NewMember(i int, conv charla.ConvID) *Member {
	m := &Member{f: f, Index: i, Conv: conv, User: fmt.Sprintf("%su%d", f.cfg.UserPrefix, i)}
	if n := len(f.cfg.Addrs); n > 0 {
		m.Node = i % n
	}
	return m
}

// Addr is the address the member connects to.
func (m *Member) Addr() string {
	if n := len(m.f.cfg.Addrs); n > 0 {
		return m.f.cfg.Addrs[m.Node%n]
	}
	return m.f.cfg.Addr
}

// tagged reports whether messages carry their sender's node.
func (f *Fleet) tagged() bool { return len(f.cfg.Addrs) > 1 }

// Conn is the current connection (nil when not connected).
func (m *Member) Conn() *client.Conn { return m.conn.Load() }

// Connected reports whether the member has an open connection.
func (m *Member) Connected() bool {
	c := m.conn.Load()
	if c == nil {
		return false
	}
	select {
	case <-c.Done():
		return false
	default:
		return true
	}
}

// ExpectClose marks the member as one whose connection is meant to be
// closed by the engine (silent, slow): its close is not an error and it
// does not reconnect.
func (m *Member) ExpectClose() { m.expectClose.Store(true) }

// Pending is how many of its messages await an ack.
func (m *Member) Pending() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.pending)
}

// maxResumes bounds a member's resume history.
const maxResumes = 64

// FirstResumeAfter is the first completed reconnect after t (zero if
// none): the moment a client was back after a given restart, even if it
// was dropped and came back again later.
func (m *Member) FirstResumeAfter(t time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range m.resumes {
		if r.After(t) {
			return r
		}
	}
	return time.Time{}
}

// Sub is the member's ledger subscription (nil before Subscribe).
func (m *Member) Sub() *ledger.Sub { return m.sub }

func (m *Member) handler() client.Handler {
	return client.Handler{
		Frame: func(c *client.Conn, fr *wire.Frame, at time.Time) { m.f.onFrame(m, fr, at) },
		Close: func(c *client.Conn, err error, at time.Time) { m.f.onClose(m, c, err, at) },
	}
}

func (m *Member) clientConfig() client.Config {
	f := m.f
	return client.Config{
		Addr: m.Addr(), Path: f.cfg.Path, User: m.User, Role: charla.RoleAgent, Secret: f.cfg.Secret,
		LocalIP: f.cfg.Sources.For(m.Index), HandshakeTimeout: f.cfg.HandshakeTimeout,
		WriteTimeout: f.cfg.WriteTimeout, ReadBufferSize: f.cfg.ReadBufferSize, RecvBufferBytes: m.RecvBufferBytes,
		Transport: m.transport(),
	}
}

// transport is the member's transport: its own, else the fleet's; a
// WebSocket unless one of them says poll.
func (m *Member) transport() string {
	t := m.Transport
	if t == "" {
		t = m.f.cfg.Transport
	}
	if t == client.TransportPoll {
		return t
	}
	return client.TransportWS
}

// Dial connects the member (one attempt) and records the connect latency.
func (m *Member) Dial(ctx context.Context) error {
	start := time.Now()
	c, err := client.Dial(ctx, m.clientConfig(), m.handler())
	if err != nil {
		return err
	}
	now := time.Now()
	m.f.Connect.Record(now, now.Sub(start))
	m.f.welcomeOnce.Do(func() { m.f.welcome = c.Welcome() })
	m.conn.Store(c)
	m.f.Counters.Conns.Add(1)
	return nil
}

// ConnectAll dials every member with the fleet's connect concurrency and
// returns how many connected; failures are counted as "connect" errors.
// progress, when not nil, is called after each attempt.
func (f *Fleet) ConnectAll(ctx context.Context, members []*Member) (connected int64) {
	var ok atomic.Int64
	f.parallel(ctx, members, f.cfg.ConnectConcurrency, func(m *Member) {
		if err := m.Dial(ctx); err != nil {
			f.Error("connect", err)
			return
		}
		ok.Add(1)
	})
	return ok.Load()
}

// parallel runs fn over members with at most n at a time; it stops
// handing out work when ctx ends or the fleet stops.
func (f *Fleet) parallel(ctx context.Context, members []*Member, n int, fn func(*Member)) {
	work := make(chan *Member)
	var wg sync.WaitGroup
	for range min(n, len(members)) {
		wg.Go(func() {
			for m := range work {
				fn(m)
			}
		})
	}
feed:
	for _, m := range members {
		select {
		case work <- m:
		case <-ctx.Done():
			break feed
		case <-f.stop:
			break feed
		}
	}
	close(work)
	wg.Wait()
}

// SubscribeAll subscribes every connected member with a Conv to it, in
// parallel, and returns how many were confirmed by a subscribed frame.
func (f *Fleet) SubscribeAll(ctx context.Context, members []*Member) int64 {
	var ok atomic.Int64
	f.parallel(ctx, members, f.cfg.ConnectConcurrency, func(m *Member) {
		if m.Conv == "" || !m.Connected() {
			return
		}
		if err := m.Subscribe(ctx); err != nil {
			f.Error("subscribe", err)
			return
		}
		ok.Add(1)
	})
	return ok.Load()
}

// Subscribe subscribes the member to its Conv (since = the last seq its
// ledger subscription has, 0 the first time) and waits for subscribed.
func (m *Member) Subscribe(ctx context.Context) error {
	c := m.conn.Load()
	if c == nil {
		return errors.New("subscribe: not connected")
	}
	t := time.NewTimer(m.f.cfg.SubscribeTimeout)
	defer t.Stop()
	// A subscribe refused as unavailable (a cluster moving the
	// conversation's shard) is sent again after a pause, as a client
	// would, until the timeout.
	for attempt := 0; attempt < 1000; attempt++ {
		m.mu.Lock()
		if m.sub == nil {
			m.sub = m.f.Ledger.Subscribe(m.Conv, 0, m.User)
		}
		m.subCount++
		ref := "s" + strconv.Itoa(m.subCount)
		done, refused := make(chan struct{}), make(chan struct{})
		m.subRef, m.subDone, m.subNo = ref, done, refused
		m.mu.Unlock()
		if err := c.Subscribe(m.Conv, m.sub.Last(), ref); err != nil {
			return fmt.Errorf("subscribe %s to %s: %w", m.User, m.Conv, err)
		}
		select {
		case <-done:
			return nil
		case <-refused:
			select {
			case <-time.After(subscribeRetry):
				continue
			case <-ctx.Done():
				return fmt.Errorf("subscribe %s to %s: %w", m.User, m.Conv, ctx.Err())
			case <-t.C:
			}
		case <-c.Done():
			return fmt.Errorf("subscribe %s to %s: connection closed: %w", m.User, m.Conv, c.Err())
		case <-ctx.Done():
			return fmt.Errorf("subscribe %s to %s: %w", m.User, m.Conv, ctx.Err())
		case <-t.C:
		}
		break
	}
	return fmt.Errorf("subscribe %s to %s: no subscribed within %v", m.User, m.Conv, m.f.cfg.SubscribeTimeout)
}

// subscribeRetry is the pause before a subscribe refused unavailable is
// sent again.
const subscribeRetry = 200 * time.Millisecond

// errNotConnected is what Send returns while the member is disconnected.
var errNotConnected = errors.New("not connected")

// stampPrefix starts every message text; the number after it is the send
// time in nanoseconds since the fleet's start (monotonic clock), which is
// how a subscriber of the same bench computes send→deliver.
const stampPrefix = "charla-bench t="

// nodePrefix follows the stamp in a cluster run: the sender's node index.
const nodePrefix = "n="

func (f *Fleet) body(sentAt time.Time, node int) json.RawMessage {
	b := make([]byte, 0, 24+len(stampPrefix)+20+f.cfg.BodySize)
	b = append(b, `{"text":"`...)
	start := len(b)
	b = append(b, stampPrefix...)
	b = strconv.AppendInt(b, int64(sentAt.Sub(f.base)), 10)
	b = append(b, ' ')
	if f.tagged() {
		b = append(b, nodePrefix...)
		b = strconv.AppendInt(b, int64(node), 10)
		b = append(b, ' ')
	}
	for len(b)-start < f.cfg.BodySize {
		b = append(b, 'x')
	}
	return append(b, `"}`...)
}

// Stamp extracts the send time from a message body made by a fleet with
// the given start, or reports false for a body it did not make.
func Stamp(base time.Time, body []byte) (time.Time, bool) {
	i := bytes.Index(body, []byte(stampPrefix))
	if i < 0 {
		return time.Time{}, false
	}
	var ns int64
	j := i + len(stampPrefix)
	k := j
	for ; k < len(body) && k-j < 19 && body[k] >= '0' && body[k] <= '9'; k++ {
		ns = ns*10 + int64(body[k]-'0')
	}
	if k == j {
		return time.Time{}, false
	}
	return base.Add(time.Duration(ns)), true
}

// SenderNode extracts the sender's node index from a message body made
// by a fleet with several addresses, or reports false.
func SenderNode(body []byte) (int, bool) {
	i := bytes.Index(body, []byte(stampPrefix))
	if i < 0 {
		return 0, false
	}
	rest := body[i+len(stampPrefix):]
	j := bytes.IndexByte(rest, ' ')
	if j < 0 || !bytes.HasPrefix(rest[j+1:], []byte(nodePrefix)) {
		return 0, false
	}
	rest = rest[j+1+len(nodePrefix):]
	n, k := 0, 0
	for ; k < len(rest) && k < 6 && rest[k] >= '0' && rest[k] <= '9'; k++ {
		n = n*10 + int(rest[k]-'0')
	}
	return n, k > 0
}

// Send sends one new message into the member's conversation.
func (m *Member) Send() error {
	c := m.conn.Load()
	if c == nil || !m.Connected() {
		return errNotConnected
	}
	id := uuid.NewString()
	now := time.Now()
	p := &pendingMsg{body: m.f.body(now, m.Node), sentAt: now, lastSent: now}
	m.mu.Lock()
	if m.pending == nil {
		m.pending = map[string]*pendingMsg{}
	}
	m.order++
	p.order = m.order
	m.pending[id] = p
	m.mu.Unlock()
	if err := c.Send(m.Conv, id, p.body, id); err != nil {
		if !m.f.cfg.Reconnect {
			m.mu.Lock()
			delete(m.pending, id)
			m.mu.Unlock()
			return err
		}
		// It stays pending and is resent after the reconnect: it counts as
		// sent, as it would for a charla.js user.
		m.f.sent.Add(1)
		m.f.Counters.Sent.Add(1)
		return err
	}
	m.f.sent.Add(1)
	m.f.Counters.Sent.Add(1)
	return nil
}

// resendPending resends every unacked message with its original
// client_msg_id, oldest first, as a reconnecting charla.js client does;
// the engine must answer each with its original seq (duplicate:true) when
// it had already stored it.
func (m *Member) resendPending(c *client.Conn) error {
	type item struct {
		id string
		p  *pendingMsg
	}
	m.mu.Lock()
	items := make([]item, 0, len(m.pending))
	for id, p := range m.pending {
		items = append(items, item{id, p})
	}
	m.mu.Unlock()
	sort.Slice(items, func(i, j int) bool { return items[i].p.order < items[j].p.order })
	for _, it := range items {
		if err := c.Send(m.Conv, it.id, it.p.body, it.id); err != nil {
			return fmt.Errorf("resend %s: %w", it.id, err)
		}
	}
	return nil
}

func (f *Fleet) onFrame(m *Member, fr *wire.Frame, at time.Time) {
	if f.cfg.Frame != nil && f.cfg.Frame(m, fr, at) {
		return
	}
	switch fr.Type {
	case wire.TypeAck:
		m.mu.Lock()
		p := m.pending[fr.ClientMsgID]
		delete(m.pending, fr.ClientMsgID)
		m.mu.Unlock()
		f.Ledger.Acked(fr.Conv, fr.Seq, fr.ClientMsgID, fr.Duplicate)
		if p != nil {
			if f.cfg.Ack != nil {
				f.cfg.Ack(m, fr, p.sentAt, at)
			}
			d := at.Sub(p.sentAt)
			f.SendAck.Record(at, d)
			f.ByTransport[m.transport()].SendAck.Record(at, d)
			if ph := f.phase.Load(); ph != nil && ph.SendAck != nil {
				ph.SendAck.Record(d)
			}
			f.Counters.Acked.Add(1)
		}
	case wire.TypeMsg:
		if m.sub == nil || fr.Conv != m.sub.Conv() || m.expectClose.Load() {
			// A member meant to be dropped (slow, silent) reads stale
			// backlog when released: neither a delivery nor a latency.
			return
		}
		f.Counters.Delivered.Add(1)
		if out := m.sub.Deliver(fr.Seq, fr.ClientMsgID); out == ledger.Duplicate || out == ledger.Invalid {
			return
		}
		if sentAt, ok := Stamp(f.base, fr.Body); ok {
			d := at.Sub(sentAt)
			f.SendDeliver.Record(at, d)
			f.ByTransport[m.transport()].SendDeliver.Record(at, d)
			if f.tagged() {
				if n, ok := SenderNode(fr.Body); ok && n == m.Node {
					f.SendDeliverSameNode.Record(at, d)
				} else if ok {
					f.SendDeliverCrossNode.Record(at, d)
				}
			}
			if ph := f.phase.Load(); ph != nil && ph.SendDeliver != nil {
				ph.SendDeliver.Record(d)
			}
		}
	case wire.TypeSubscribed:
		m.mu.Lock()
		if fr.Ref == m.subRef && m.subDone != nil {
			close(m.subDone)
			m.subDone = nil
		}
		m.mu.Unlock()
	case wire.TypePong:
		if ns, err := strconv.ParseInt(string(fr.T), 10, 64); err == nil {
			f.RTT.Record(at, at.Sub(f.base.Add(time.Duration(ns))))
		}
	case wire.TypeError:
		// A send refused as unavailable (the engine is restarting) stays
		// pending when the fleet reconnects: it is resent with the same
		// client_msg_id after the reconnect, as the error asks.
		m.mu.Lock()
		if fr.Ref != "" && fr.Ref == m.subRef && m.subNo != nil && fr.Code == charla.CodeUnavailable {
			close(m.subNo)
			m.subNo = nil
			m.mu.Unlock()
			f.Error("subscribe deferred (unavailable)", fmt.Errorf("%s: %s", fr.Code, fr.Message))
			return
		}
		m.mu.Unlock()
		keep := fr.Code == charla.CodeUnavailable && (f.cfg.Reconnect || f.cfg.Resend)
		m.mu.Lock()
		p, wasSend := m.pending[fr.Ref]
		if !keep {
			delete(m.pending, fr.Ref)
		} else if wasSend {
			p.refused = true
		}
		m.mu.Unlock()
		err := fmt.Errorf("%s: %s", fr.Code, fr.Message)
		switch {
		case keep && wasSend:
			f.Error("send deferred (unavailable)", err)
		case fr.Code == charla.CodeRateLimited:
			f.rateLimited.Add(1)
			f.Error("rate_limited", err)
		case wasSend:
			f.Error("send rejected ("+string(fr.Code)+")", err)
		default:
			f.Error("error frame ("+string(fr.Code)+")", err)
		}
	case client.TypeInvalid:
		f.Error("invalid server frame", errors.New(fr.Message))
	}
}

func (f *Fleet) onClose(m *Member, c *client.Conn, err error, at time.Time) {
	f.Counters.Conns.Add(-1)
	if c.ClosedByUs() {
		return
	}
	if m.expectClose.Load() {
		if m.OnClose != nil {
			m.OnClose(m, err, at)
		}
		return
	}
	if f.Stopping() {
		return // the run is ending; closes now are the engine going away
	}
	f.unexpected.Add(1)
	f.codesMu.Lock()
	f.codes[client.CloseCode(err)]++
	f.codesMu.Unlock()
	if m.OnClose != nil {
		m.OnClose(m, err, at)
	}
	if f.cfg.Reconnect {
		// One reconnect loop per member: a close during a reconnect is the
		// running loop's business.
		if m.reconnecting.CompareAndSwap(false, true) {
			f.spawn(func() { m.reconnect(at) })
		}
		return
	}
	f.Error(closeKind(err), err)
	if m.sub != nil {
		m.sub.Break("connection closed by the engine: " + errString(err))
	}
}

func closeKind(err error) string {
	if code := client.CloseCode(err); code != 0 {
		return fmt.Sprintf("closed by engine (%d)", code)
	}
	return "connection lost"
}

func errString(err error) string {
	if err == nil {
		return "no reason"
	}
	return err.Error()
}

// spawn runs fn on a goroutine Close waits for, unless Close has begun.
func (f *Fleet) spawn(fn func()) {
	f.goMu.Lock()
	defer f.goMu.Unlock()
	if f.Stopping() {
		return
	}
	f.wg.Go(fn)
}

// maxReconnectAttempts bounds a member's reconnect loop besides its window.
const maxReconnectAttempts = 1000

// reconnect brings a member back: backoff with full jitter, dial,
// resubscribe with since, resend unacked messages. The reconnect latency
// runs from the moment the close was noticed to the resubscription.
func (m *Member) reconnect(closedAt time.Time) {
	f := m.f
	deadline := closedAt.Add(f.cfg.ReconnectWindow)
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	var lastErr error
	for attempt := 0; attempt < maxReconnectAttempts; attempt++ {
		limit := min(f.cfg.BackoffCap, f.cfg.BackoffBase<<min(attempt, 20))
		t := time.NewTimer(rand.N(limit + 1))
		select {
		case <-f.stop:
			t.Stop()
			m.reconnecting.Store(false)
			return
		case <-ctx.Done():
			t.Stop()
			attempt = maxReconnectAttempts
			continue
		case <-t.C:
		}
		if err := m.Dial(ctx); err != nil {
			lastErr = err
			continue
		}
		c := m.conn.Load()
		if m.Conv != "" && m.sub != nil {
			if err := m.Subscribe(ctx); err != nil {
				lastErr = err
				c.Close()
				continue
			}
		}
		if err := m.resendPending(c); err != nil {
			lastErr = err
			c.Close()
			continue
		}
		now := time.Now()
		f.Reconnect.Record(now, now.Sub(closedAt))
		f.reconnects.Add(1)
		m.mu.Lock()
		if len(m.resumes) < maxResumes {
			m.resumes = append(m.resumes, now)
		}
		m.mu.Unlock()
		m.reconnecting.Store(false)
		// A close between the resubscription and here found the flag set
		// and left it to this loop: take it back, or end.
		if m.Connected() || !m.reconnecting.CompareAndSwap(false, true) {
			return
		}
		closedAt = time.Now()
	}
	m.reconnecting.Store(false)
	f.Error("reconnect gave up", lastErr)
	if m.sub != nil {
		m.sub.Break("gave up reconnecting: " + errString(lastErr))
	}
}

// Pace sends rate messages per second in total, spread over senders
// round-robin by `workers` goroutines, for d (or until ctx ends). It is
// open-loop: a worker that falls behind sends its backlog at once, up to a
// quarter second's worth; the rest is counted as behind and skipped, so an
// overloaded run shows a lower achieved rate instead of an ever-growing
// queue inside the bench. Members that are not connected are skipped.
func (f *Fleet) Pace(ctx context.Context, senders []*Member, rate float64, d time.Duration, workers int) {
	if rate <= 0 || len(senders) == 0 || d <= 0 {
		return
	}
	workers = max(1, min(workers, len(senders)))
	var wg sync.WaitGroup
	start := time.Now()
	end := start.Add(d)
	for w := range workers {
		var mine []*Member
		for i := w; i < len(senders); i += workers {
			mine = append(mine, senders[i])
		}
		wg.Go(func() { f.paceWorker(ctx, mine, rate/float64(workers), start, end) })
	}
	wg.Wait()
}

func (f *Fleet) paceWorker(ctx context.Context, mine []*Member, rate float64, start, end time.Time) {
	burst := int64(rate/4) + 1
	var done int64 // sends attempted or skipped so far
	next := 0
	maxIter := int(end.Sub(start)/(100*time.Microsecond)) + 1000
	for iter := 0; iter < maxIter; iter++ {
		now := time.Now()
		if !now.Before(end) || ctx.Err() != nil {
			return
		}
		select {
		case <-f.stop:
			return
		default:
		}
		due := int64(rate*now.Sub(start).Seconds()) - done
		if due > burst {
			f.behind.Add(due - burst)
			done += due - burst
			due = burst
		}
		for ; due > 0; due-- {
			done++
			sent := false
			for try := 0; try < len(mine) && !sent; try++ {
				m := mine[next%len(mine)]
				next++
				err := m.Send()
				if errors.Is(err, errNotConnected) {
					continue
				}
				sent = true
				if err != nil {
					f.Error("send", err)
				}
			}
			if !sent {
				f.skipped.Add(1)
			}
		}
		wait := time.Until(start.Add(time.Duration(float64(done+1) / rate * float64(time.Second))))
		wait = min(max(wait, 50*time.Microsecond), 10*time.Millisecond)
		if !f.sleep(ctx, wait) {
			return
		}
	}
}

// sleep waits d, and reports false if the fleet stops or ctx ends first.
func (f *Fleet) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-f.stop:
		return false
	}
}

// PingLoop sends application pings from members, one every
// interval/len(members), until d passes or ctx ends; the pongs feed RTT.
func (f *Fleet) PingLoop(ctx context.Context, members []*Member, interval, d time.Duration) {
	if len(members) == 0 || interval <= 0 {
		return
	}
	step := max(interval/time.Duration(len(members)), 100*time.Microsecond)
	end := time.Now().Add(d)
	maxIter := int(d/step) + 1
	for i := 0; i < maxIter && time.Now().Before(end); i++ {
		m := members[i%len(members)]
		if c := m.conn.Load(); c != nil && m.Connected() {
			if err := c.Ping(int64(time.Since(f.base)), ""); err != nil {
				f.Error("ping", err)
			}
		}
		if !f.sleep(ctx, step) {
			return
		}
	}
}

// Drain waits, up to timeout, until no member awaits an ack and every
// live ledger subscription has every acked message. It returns the unacked
// count and the deliveries still owed when it stopped.
func (f *Fleet) Drain(ctx context.Context, members []*Member, timeout time.Duration) (unacked int, owed int64) {
	deadline := time.Now().Add(timeout)
	for n := 0; n < 100000; n++ {
		unacked = 0
		for _, m := range members {
			unacked += m.Pending()
		}
		owed = f.Ledger.Outstanding()
		if (unacked == 0 && owed == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			return unacked, owed
		}
		time.Sleep(50 * time.Millisecond)
	}
	return unacked, owed
}

// Close stops reconnects and pacing, waits for them, then closes every
// member's connection (in parallel, bounded).
func (f *Fleet) Close(members []*Member) {
	f.goMu.Lock()
	if !f.Stopping() {
		close(f.stop)
	}
	f.goMu.Unlock()
	f.wg.Wait()
	work := make(chan *Member)
	var wg sync.WaitGroup
	for range min(64, len(members)) {
		wg.Go(func() {
			for m := range work {
				if c := m.conn.Load(); c != nil {
					c.Close()
				}
			}
		})
	}
	for _, m := range members {
		work <- m
	}
	close(work)
	wg.Wait()
}

// Stopping reports whether Close has begun.
func (f *Fleet) Stopping() bool {
	select {
	case <-f.stop:
		return true
	default:
		return false
	}
}

// Describe summarises the error kinds in one line, for logs.
func (f *Fleet) Describe() string {
	errs := f.Errors()
	keys := make([]string, 0, len(errs))
	for k := range errs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%d× %s; ", errs[k], k)
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// ResendLoop sends members' unacked messages again, with their original
// client_msg_id, as a client does when a cluster answers unavailable or
// does not answer: a refused message after refusedWait since its last
// send, an unanswered one after noAnswer. It checks every 20 ms until ctx
// ends, the fleet stops, or d passes. The engine dedups, so a resend of a
// message that had in fact been stored is acked duplicate:true with its
// seq.
func (f *Fleet) ResendLoop(ctx context.Context, members []*Member, refusedWait, noAnswer, d time.Duration) {
	const tick = 20 * time.Millisecond
	end := time.Now().Add(d)
	type item struct {
		id   string
		body json.RawMessage
	}
	for n := 0; n < int(d/tick)+1 && time.Now().Before(end); n++ {
		if !f.sleep(ctx, tick) {
			return
		}
		now := time.Now()
		for _, m := range members {
			c := m.conn.Load()
			if c == nil || !m.Connected() {
				continue
			}
			var due []item
			m.mu.Lock()
			for id, p := range m.pending {
				if p.refused && now.Sub(p.lastSent) >= refusedWait || now.Sub(p.lastSent) >= noAnswer {
					p.refused, p.lastSent = false, now
					due = append(due, item{id, p.body})
				}
			}
			m.mu.Unlock()
			for _, it := range due {
				if err := c.Send(m.Conv, it.id, it.body, it.id); err != nil {
					f.Error("resend", err)
					break
				}
				f.resent.Add(1)
			}
		}
	}
}
