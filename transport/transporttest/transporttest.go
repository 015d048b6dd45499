// Package transporttest runs a real engine in-process for tests: the embedded
// store in a temporary directory, the actor tree, and the HTTP/WebSocket
// edge on a loopback port, plus a WebSocket client that speaks protocol v1.
// Tests of every package above transport (and the bench) use it, so that
// they talk to the engine over real connections.
package transporttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/lxzan/gws"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"charla"
	"charla/actors"
	"charla/metrics"
	"charla/ops"
	"charla/ratelimit"
	"charla/soapbridge"
	"charla/store"
	"charla/store/pebble"
	"charla/store/spool"
	"charla/transport"
	"charla/wire"
)

// Engine is an engine running in the test process.
type Engine struct {
	// Addr is the engine's host:port on 127.0.0.1.
	Addr string
	// Sys is the actor tree, for its Stats.
	Sys *actors.System
	// Limits is the rate-limit registry the edge and the actors share.
	Limits *ratelimit.Registry
	// Runtime is the runtime settings (WithRuntimeSettings), else nil.
	Runtime *ops.Runtime

	t      testing.TB
	opts   options
	dir    string
	st     store.Store
	sp     *spool.Spool
	srv    *transport.Server
	served chan error
	closed bool
}

type options struct {
	actors    actors.Config
	transport transport.Config
	newSystem func(actors.Config, actors.Dependencies) (*actors.System, error)
	dir       string
	log       zerolog.Logger
	store     func(testing.TB) store.Store
	spool     bool
	clock     func() time.Time
	metrics   *metrics.Metrics
	deps      func(*actors.Dependencies)
	runtime   bool
}

// Option changes how Start builds the engine.
type Option func(*options)

// WithActors edits the actor tree's configuration.
func WithActors(f func(*actors.Config)) Option { return func(o *options) { f(&o.actors) } }

// WithTransport edits the edge's configuration.
func WithTransport(f func(*transport.Config)) Option { return func(o *options) { f(&o.transport) } }

// WithSystem builds the actor tree with f instead of actors.NewSystem (the
// actors package's own tests pass a tree with test hooks).
func WithSystem(f func(actors.Config, actors.Dependencies) (*actors.System, error)) Option {
	return func(o *options) { o.newSystem = f }
}

// WithDataDir keeps the embedded store in dir (to restart on the same data).
func WithDataDir(dir string) Option { return func(o *options) { o.dir = dir } }

// WithStore runs the engine over a store of the caller's (e.g. PostgreSQL);
// the engine closes it on Close.
func WithStore(open func(testing.TB) store.Store) Option {
	return func(o *options) { o.store = open }
}

// WithSpool gives the engine an outage spool in its data directory (the
// store must be able to take the drain, as PostgreSQL can).
func WithSpool() Option { return func(o *options) { o.spool = true } }

// WithRateLimitClock runs the rate limiter on now instead of time.Now, so
// that a test plays minutes of traffic in seconds.
func WithRateLimitClock(now func() time.Time) Option { return func(o *options) { o.clock = now } }

// WithMetrics exports the engine into m as charla serve does: the tree
// observes into its histograms, its collector reads the engine's counters,
// and GET /metrics serves it to admins.
func WithMetrics(m *metrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// WithDependencies edits the actor tree's dependencies once the store is
// open (at every start: a Restart calls it again with the new store), e.g.
// to give it the WhatsApp channel's.
func WithDependencies(f func(*actors.Dependencies)) Option { return func(o *options) { o.deps = f } }

// WithRuntimeSettings gives the engine its runtime settings and feature
// flags as charla serve does (without a file): Engine.Runtime, GET and
// PATCH /v1/admin/settings, flags the alert rules can turn off.
func WithRuntimeSettings() Option { return func(o *options) { o.runtime = true } }

// WithLogger routes the engine's logs (discarded by default).
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// Start runs an engine with dev auth and the engine's defaults
// (actors.DefaultConfig, transport.DefaultConfig) as the options leave them,
// and stops it when the test ends. Loopback is on the rate-limit allow-list,
// so that tests (and the bench) measure the engine, not its limits; a test
// of the limits clears RateLimits.Allow. The configuration is not validated, so
// that a test may set what an operator may not (a tiny send queue).
func Start(t testing.TB, opts ...Option) *Engine {
	t.Helper()
	o := options{actors: actors.DefaultConfig(), transport: transport.DefaultConfig(), log: zerolog.Nop()}
	o.transport.Auth = transport.Authenticator{Mode: transport.AuthDev}
	o.transport.RateLimits.Allow = ratelimit.LoopbackCIDRs
	for _, f := range opts {
		f(&o)
	}
	// One heartbeat timeout for both, as the engine's single flag sets it.
	o.transport.HeartbeatTimeout = o.actors.HeartbeatTimeout
	if o.dir == "" {
		o.dir = t.TempDir()
	}
	e := &Engine{t: t, opts: o, dir: o.dir}
	if err := e.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func (e *Engine) start() error {
	if e.opts.store != nil {
		e.st = e.opts.store(e.t)
	} else {
		// The engine's embedded store, with a small memtable: a test
		// writes little, and many engines may run in one test binary.
		o := pebble.DefaultOptions()
		o.MemTableSize, o.CacheSize = 4<<20, 8<<20
		st, err := pebble.Open(context.Background(), filepath.Join(e.dir, "charla.pebble"), o)
		if err != nil {
			return fmt.Errorf("open store: %w", err)
		}
		e.st = st
	}
	if e.opts.spool {
		sp, err := spool.Open(context.Background(), filepath.Join(e.dir, "spool"), e.opts.actors.SpoolOptions(e.opts.log))
		if err != nil {
			return fmt.Errorf("open spool: %w", err)
		}
		e.sp = sp
	}
	newSystem := actors.NewSystem
	if e.opts.newSystem != nil {
		newSystem = e.opts.newSystem
	}
	var limOpts []ratelimit.Option
	if e.opts.clock != nil {
		limOpts = append(limOpts, ratelimit.WithClock(e.opts.clock))
	}
	lim, err := ratelimit.New(e.opts.transport.RateLimits, limOpts...)
	if err != nil {
		return fmt.Errorf("rate limits: %w", err)
	}
	dep := actors.Dependencies{Store: e.st, Log: e.opts.log, Limiter: lim}
	if e.sp != nil {
		dep.Spool = e.sp // not a nil *spool.Spool in the interface
	}
	var srvOpts []transport.ServerOption
	if m := e.opts.metrics; m != nil {
		dep.Histograms, dep.Metrics = m.Histograms(), m.Gatherer()
	}
	if e.opts.deps != nil {
		e.opts.deps(&dep)
	}
	var sys *actors.System
	if e.opts.runtime {
		rt, err := ops.NewRuntime(ops.InitialSettings("info", e.opts.transport.RateLimits, e.opts.actors.Alerts.Rules),
			ops.Appliers{RateLimits: lim.SetRates, Alerts: func(r ops.Rules) error { return sys.SetAlertRules(r) }}, e.opts.log)
		if err != nil {
			return err
		}
		e.Runtime, dep.Flags = rt, rt
		srvOpts = append(srvOpts, transport.WithSettings(rt))
	}
	sys, err = newSystem(e.opts.actors, dep)
	if err != nil {
		return fmt.Errorf("start actors: %w", err)
	}
	if m := e.opts.metrics; m != nil {
		src := metrics.Sources{System: sys, Limits: lim}
		if pg, ok := e.st.(metrics.StoreStats); ok {
			src.Store = pg
		}
		if err := m.Watch(src); err != nil {
			return err
		}
		srvOpts = append(srvOpts, transport.WithMetrics(m.Handler()))
	}
	addr := "127.0.0.1:0"
	if e.Addr != "" {
		addr = e.Addr // a restart keeps the port, as a real restart would
	}
	var ln net.Listener
	for i := 0; ; i++ {
		if ln, err = net.Listen("tcp", addr); err == nil || i == 50 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	e.Addr, e.Sys, e.Limits, e.closed = ln.Addr().String(), sys, lim, false
	e.srv = transport.NewServer(e.opts.transport, sys, e.opts.log, append(srvOpts, transport.WithLimits(lim))...)
	e.served = make(chan error, 1)
	go func() { e.served <- e.srv.Serve(ln) }()
	return nil
}

// Close shuts the engine down gracefully (clients get 1012) and closes its
// store. It is safe to call twice.
func (e *Engine) Close() {
	if e.closed {
		return
	}
	e.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.srv.Shutdown(ctx); err != nil {
		e.t.Errorf("engine shutdown: %v", err)
	}
	if err := <-e.served; err != nil {
		e.t.Errorf("engine serve: %v", err)
	}
	if err := e.st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
		e.t.Errorf("store close: %v", err)
	}
	if e.sp != nil {
		if err := e.sp.Close(); err != nil {
			e.t.Errorf("spool close: %v", err)
		}
	}
}

// Store is the engine's store, for tests that check what was persisted.
func (e *Engine) Store() store.Store { return e.st }

// Server is the engine's edge (for its readiness from a private listener).
func (e *Engine) Server() *transport.Server { return e.srv }

// Restart closes the engine and starts it again on the same data and port.
func (e *Engine) Restart() {
	e.t.Helper()
	e.Close()
	if err := e.start(); err != nil {
		e.t.Fatal(err)
	}
}

// URL is the WebSocket URL for a dev-auth user.
func (e *Engine) URL(user string, role charla.Role) string {
	return fmt.Sprintf("ws://%s/v1/ws?user=%s&role=%s", e.Addr, url.QueryEscape(user), role)
}

// Client is a protocol v1 WebSocket client that collects every server frame.
type Client struct {
	t      testing.TB
	conn   *gws.Conn
	frames chan wire.Frame
	done   chan struct{}

	mu        sync.Mutex
	closeCode uint16
	closeErr  error
}

// Dial connects user with role over dev auth, and waits for the welcome.
func (e *Engine) Dial(t testing.TB, user string, role charla.Role) *Client {
	t.Helper()
	c, err := DialURL(t, e.URL(user, role), nil)
	if err != nil {
		t.Fatalf("dial %s: %v", user, err)
	}
	if f := c.Next(5 * time.Second); f.Type != wire.TypeWelcome {
		t.Fatalf("first frame = %+v, want welcome", f)
	}
	return c
}

// DialURL connects to a full ws:// URL with optional headers. It returns
// the HTTP status as an error when the upgrade is refused.
func DialURL(t testing.TB, u string, header http.Header) (*Client, error) {
	c := &Client{t: t, frames: make(chan wire.Frame, 1<<16), done: make(chan struct{})}
	conn, resp, err := gws.NewClient(c, &gws.ClientOption{Addr: u, RequestHeader: header, ReadMaxPayloadSize: 64 << 20})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("%w (HTTP %d)", err, resp.StatusCode)
		}
		return nil, err
	}
	c.conn = conn
	go conn.ReadLoop()
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// Send writes one client frame (any JSON-encodable value).
func (c *Client) Send(v any) {
	c.t.Helper()
	if err := c.conn.WriteMessage(gws.OpcodeText, wire.Encode(v)); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// SendRaw writes bytes as one text frame.
func (c *Client) SendRaw(b []byte) error { return c.conn.WriteMessage(gws.OpcodeText, b) }

// Next returns the next server frame, failing the test after timeout.
func (c *Client) Next(timeout time.Duration) wire.Frame {
	c.t.Helper()
	select {
	case f := <-c.frames:
		return f
	case <-time.After(timeout):
		c.t.Fatalf("no frame within %s", timeout)
		return wire.Frame{}
	}
}

// NextOf returns the next frame of type typ, skipping others.
func (c *Client) NextOf(typ string, timeout time.Duration) wire.Frame {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f := c.Next(time.Until(deadline))
		if f.Type == typ {
			return f
		}
	}
}

// Wait is how long the helpers below wait for a frame that must come: long
// enough for a loaded 2-core machine running the race detector.
const Wait = 10 * time.Second

// SendFrame is a send frame with a text body.
func SendFrame(conv charla.ConvID, cmid, text, ref string) wire.Frame {
	return wire.Frame{Type: wire.TypeSend, Ref: ref, Conv: conv, ClientMsgID: cmid, Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text))}
}

// Subscribe subscribes to conv from since and returns the subscribed frame.
func (c *Client) Subscribe(conv charla.ConvID, since charla.Seq) wire.Frame {
	c.t.Helper()
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Since: since, Ref: "sub"})
	f := c.NextOf(wire.TypeSubscribed, Wait)
	if f.Conv != conv || f.Ref != "sub" {
		c.t.Fatalf("subscribed = %+v", f)
	}
	return f
}

// Collect reads the next n messages of conv, failing the test unless they
// are seqs from+1 … from+n in order (a gap, a duplicate or a reorder) or an
// error frame arrives meanwhile. Frames of other types are skipped.
func (c *Client) Collect(conv charla.ConvID, from charla.Seq, n int) []wire.Frame {
	c.t.Helper()
	var got []wire.Frame
	deadline := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case f := <-c.frames:
			if f.Type == wire.TypeError {
				c.t.Fatalf("error frame while collecting: %+v", f)
			}
			if f.Type != wire.TypeMsg || f.Conv != conv {
				continue
			}
			want := from + charla.Seq(len(got)) + 1
			if f.Seq != want {
				c.t.Fatalf("msg seq %d, want %d (gap, duplicate or reorder)", f.Seq, want)
			}
			got = append(got, f)
		case <-deadline:
			c.t.Fatalf("got %d of %d messages", len(got), n)
		}
	}
	return got
}

// NoFrame fails the test if a frame of type typ (any type when "") arrives
// within d.
func (c *Client) NoFrame(typ string, d time.Duration) {
	c.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case f := <-c.frames:
			if typ == "" || f.Type == typ {
				c.t.Fatalf("unexpected %+v", f)
			}
		case <-timeout:
			return
		}
	}
}

// Frames is the channel of received frames, for tests that select on it.
func (c *Client) Frames() <-chan wire.Frame { return c.frames }

// Done is closed when the connection has ended.
func (c *Client) Done() <-chan struct{} { return c.done }

// CloseCode is the close code the server sent (0 when none arrived).
func (c *Client) CloseCode() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closeCode
}

// Close closes the connection (1000).
func (c *Client) Close() {
	_ = c.conn.WriteClose(1000, nil)
	<-c.done
}

// Conn is the underlying gws connection, for tests that misbehave on purpose.
func (c *Client) Conn() *gws.Conn { return c.conn }

// The gws event handler side of Client.

func (c *Client) OnOpen(*gws.Conn) {}
func (c *Client) OnClose(_ *gws.Conn, err error) {
	c.mu.Lock()
	var ce *gws.CloseError
	if errors.As(err, &ce) {
		c.closeCode = ce.Code
	}
	c.closeErr = err
	c.mu.Unlock()
	close(c.done)
}
func (c *Client) OnPing(conn *gws.Conn, p []byte) { _ = conn.WritePong(p) }
func (c *Client) OnPong(*gws.Conn, []byte)        {}
func (c *Client) OnMessage(_ *gws.Conn, m *gws.Message) {
	defer m.Close()
	for _, obj := range wire.Split(m.Bytes()) {
		f, err := wire.Decode(obj)
		if err != nil {
			c.t.Errorf("server sent an invalid frame %q: %v", obj, err)
			continue
		}
		c.frames <- f
	}
}

// LeakOptions are for goleak in packages that run engines: protoactor's
// dead-letter log throttle starts a goroutine that ends by itself one
// throttle interval (1 s) after a dead letter, which a test may catch alive.
// It is not ours to stop. Nor is the goroutine of an engine's inventory
// cache (soapbridge.CacheGoroutine), which golang-lru never stops.
// Everything else must be gone.
func LeakOptions() []goleak.Option {
	return []goleak.Option{goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"),
		goleak.IgnoreAnyFunction(soapbridge.CacheGoroutine)}
}

// LogBuffer collects what an engine (in-process or a child process) writes,
// for a test that reads it meanwhile.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p; it is safe for concurrent use.
func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
