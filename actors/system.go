// Package actors is the engine's actor tree (DESIGN.md): a gateway with one
// conn actor per client, a conversations supervisor with one conversation
// actor per active conversation, and the dependency actors (the store actor
// and the soap actor today; WhatsApp next). Each actor owns its state; they
// talk only by messages.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/xid"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/wire"
)

// hooks let tests reach inside the tree (export_test.go); production trees
// have none.
type hooks struct {
	// conversationReceive runs before a conversation actor handles each
	// message; a test panics in it to prove one-for-one isolation.
	conversationReceive func(conv charla.ConvID, msg any)
	// soapReceive runs before the soap actor handles each message, with the
	// message's type name ("actors.callDone"); a test panics in it to prove
	// that a restart loses no accepted job.
	soapReceive func(msgType string)
	// inboxReceive runs before the inbox actor handles each message, with
	// the message's type name; a test panics in it to prove that its
	// subscribers are not lost to a restart.
	inboxReceive func(msgType string)
}

// deps is what every actor of the tree is built with. Its fields are set
// before the first actor starts and never change.
type deps struct {
	cfg           Config
	dispatcher    actor.Dispatcher
	root          *actor.RootContext
	conversations *actor.PID
	store         *actor.PID
	soap          *actor.PID
	whatsapp      *actor.PID // nil: no Graph API configured
	inbox         *actor.PID // the conversation workflow (inbox.go)
	bots          *actor.PID // the chatbot's sessions (bots.go); nil when the bot is off
	bridge        *soapBridge
	log           zerolog.Logger
	hooks         *hooks
	stats         *Stats
	limiter       SendLimiter // nil: sends are not limited
	flags         FlagSwitch  // nil: every feature on
	cluster       *Cluster    // nil: a single node
}

// Dependencies are what the tree is built over.
type Dependencies struct {
	// Store is the system of record; the caller closes it after Shutdown.
	Store store.Store
	// Spool, when set, keeps chat going while Store is unavailable; Store
	// must then also be able to take the drain (AppendSequenced).
	Spool Spool
	Log   zerolog.Logger
	// Limiter, when set, limits every user's sends across all their
	// connections; the HTTP edge shares it for POST /v1/send.
	Limiter SendLimiter
	// Histograms, when set, receive the tree's latency and size
	// distributions (the metrics package makes them); unset ones cost
	// nothing.
	Histograms Histograms
	// Metrics, when set, is what the alert rules read (the metrics
	// package's registry); without it there is no alert actor.
	Metrics MetricSource
	// Flags, when set, is turned off by alert rules with a disable_flag
	// (ops.Runtime).
	Flags FlagSwitch
	// Inbound, when set, runs the WhatsApp webhook's inbound actor
	// (whatsapp_inbound.go).
	Inbound *Inbound
	// Graph, when set, sends the WhatsApp outbox (whatsapp.go); Store must
	// then have the outbox (store/outbox.go). Unset, outbound WhatsApp
	// messages wait in the outbox.
	Graph GraphSender
	// Cluster, when set, makes the tree one node of a cluster
	// (docs/CLUSTER.md): it writes only the conversations whose shards it
	// holds and forwards the others' requests to their owners.
	Cluster *Cluster
}

// System is a running actor tree.
type System struct {
	as     *actor.ActorSystem
	deps   *deps
	cancel context.CancelFunc

	gateway *actor.PID
	depsSup *actor.PID
	opsSup  *actor.PID // nil without alerts
	alerts  *actor.PID // nil without alerts
	pool    *poolDispatcher

	peers     *actor.PID // nil: a single node
	inbound   *actor.PID // nil: the WhatsApp channel is off
	inboundRT *inboundRuntime
	statuses  statusReader // nil: the store keeps no outbox
}

// NewSystem builds and starts the tree.
func NewSystem(cfg Config, dep Dependencies) (*System, error) { return newSystem(cfg, dep, nil) }

func newSystem(cfg Config, dep Dependencies, hooks *hooks) (*System, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("actors config: %w", err)
	}
	st, log := dep.Store, dep.Log
	if _, ok := st.(sequencedAppender); dep.Spool != nil && !ok {
		return nil, fmt.Errorf("a spool needs a store that can take its drain; %T cannot", st)
	}
	if c := dep.Cluster; c != nil {
		if err := c.validate(); err != nil {
			return nil, err
		}
		cc := *c
		cc.incarnation = xid.New().String()
		dep.Cluster = &cc
	}
	var err error
	as := actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return slog.New(zerolog.NewSlogHandler(log.With().Str("component", "protoactor").Logger()))
	}))
	ctx, cancel := context.WithCancel(context.Background())
	pool := newPoolDispatcher(4*runtime.GOMAXPROCS(0), 300)
	d := &deps{cfg: cfg, dispatcher: pool, root: as.Root, log: log, hooks: hooks, stats: newStats(dep.Histograms), limiter: dep.Limiter, flags: dep.Flags, cluster: dep.Cluster}
	s := &System{as: as, deps: d, cancel: cancel, pool: pool}
	s.statuses, _ = dep.Store.(statusReader)
	if d.bridge, err = newSOAPBridge(cfg.SOAP); err != nil {
		cancel()
		return nil, err
	}
	soapProps := actor.PropsFromProducer(func() actor.Actor { return newSOAPActor(d, d.bridge) })

	var whatsapp *actor.PID // the name depsSupervisor gives it
	if dep.Graph != nil {
		whatsapp = actor.NewPID(as.Address(), "deps/whatsapp")
	}
	storeProps := actor.PropsFromProducer(func() actor.Actor {
		a := newStoreActor(ctx, as.Root, st, dep.Spool, cfg, d.stats, log.With().Str("component", "store").Logger())
		a.whatsapp = whatsapp
		if c := dep.Cluster; c != nil {
			a.lane.shardOf = c.Placement.Shard
			if a.outage != nil {
				a.outage.shardOf = c.Placement.Shard
			}
		}
		return a
	})
	children := map[string]*actor.Props{"store": storeProps, "soap": soapProps}
	if dep.Graph != nil {
		ob, ok := st.(outboxStore)
		if !ok {
			cancel()
			return nil, fmt.Errorf("a WhatsApp Graph API client needs a store with the outbox; %T has none", st)
		}
		gens := &atomic.Uint64{}
		children["whatsapp"] = actor.PropsFromProducer(func() actor.Actor { return newWhatsAppActor(d, ob, dep.Graph, gens) })
	}
	restart := backoffStrategy{maxFailures: 10, window: time.Minute, base: 100 * time.Millisecond, cap: 5 * time.Second, log: log, stats: d.stats}
	if s.depsSup, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
		return &depsSupervisor{children: children}
	}, actor.WithSupervisor(restart)), "deps"); err != nil {
		cancel()
		return nil, fmt.Errorf("spawn deps: %w", err)
	}
	res, err := as.Root.RequestFuture(s.depsSup, childReq{name: "store"}, 5*time.Second).Result()
	if err != nil {
		cancel()
		return nil, fmt.Errorf("start store actor: %w", err)
	}
	d.store = res.(*actor.PID)
	if res, err = as.Root.RequestFuture(s.depsSup, childReq{name: "soap"}, 5*time.Second).Result(); err != nil {
		cancel()
		return nil, fmt.Errorf("start soap actor: %w", err)
	}
	d.soap = res.(*actor.PID)
	if dep.Graph != nil {
		if res, err = as.Root.RequestFuture(s.depsSup, childReq{name: "whatsapp"}, 5*time.Second).Result(); err != nil {
			cancel()
			return nil, fmt.Errorf("start whatsapp actor: %w", err)
		}
		d.whatsapp = res.(*actor.PID)
	}
	inbox := func() actor.Actor { return newInbox(d, st) }
	if dep.Cluster != nil {
		inbox = func() actor.Actor { return newInboxRouter(d, st) } // it runs the inbox while this node leads
	}
	if d.inbox, err = as.Root.SpawnNamed(actor.PropsFromProducer(inbox, actor.WithSupervisor(restart)), "inbox"); err != nil {
		cancel()
		return nil, fmt.Errorf("spawn inbox: %w", err)
	}
	if cfg.Bot.Flow != nil {
		if d.bots, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newBots(d, st) },
			actor.WithSupervisor(restart)), "bots"); err != nil {
			cancel()
			return nil, fmt.Errorf("spawn bots: %w", err)
		}
	}
	if d.conversations, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newConversations(d) },
		actor.WithSupervisor(restart)), "conversations"); err != nil {
		cancel()
		return nil, fmt.Errorf("spawn conversations: %w", err)
	}
	if dep.Cluster != nil {
		if s.peers, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newPeers(d) },
			actor.WithSupervisor(restart)), "peers"); err != nil {
			cancel()
			return nil, fmt.Errorf("spawn peers: %w", err)
		}
	}
	if dep.Inbound != nil {
		if err = s.startInbound(*dep.Inbound); err != nil {
			cancel()
			return nil, err
		}
	}
	if s.gateway, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newGateway(d) },
		actor.WithSupervisor(stopStrategy{log: log})), gatewayName); err != nil {
		cancel()
		return nil, fmt.Errorf("spawn gateway: %w", err)
	}
	if dep.Cluster != nil {
		as.Root.Send(d.inbox, treeStarted{}) // its router may tell conns to join a new leader from now on
	}
	if dep.Metrics != nil {
		// ops: what watches the engine, restarted on its own like deps.
		alertProps := actor.PropsFromProducer(func() actor.Actor { return newAlertActor(d, dep.Metrics, dep.Flags) })
		if s.opsSup, err = as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor {
			return &depsSupervisor{children: map[string]*actor.Props{"alerts": alertProps}}
		}, actor.WithSupervisor(restart)), "ops"); err != nil {
			cancel()
			return nil, fmt.Errorf("spawn ops: %w", err)
		}
		if res, err = as.Root.RequestFuture(s.opsSup, childReq{name: "alerts"}, 5*time.Second).Result(); err != nil {
			cancel()
			return nil, fmt.Errorf("start alert actor: %w", err)
		}
		s.alerts = res.(*actor.PID)
	}
	return s, nil
}

// Stats returns the live counters of the tree.
func (s *System) Stats() *Stats { return s.deps.stats }

// Config returns the configuration the tree runs with.
func (s *System) Config() Config { return s.deps.cfg }

// ConnHandle is the transport's end of a conn actor: it forwards what the
// socket reads. Methods never block.
type ConnHandle struct {
	pid  *actor.PID
	root *actor.RootContext
}

// Frame forwards a decoded client frame.
func (h ConnHandle) Frame(f wire.Frame) { h.root.Send(h.pid, inFrame{f}) }

// Invalid reports a frame that could not be decoded; ref answers it when known.
func (h ConnHandle) Invalid(ref string, err error) {
	h.root.Send(h.pid, inInvalid{ref: ref, err: err})
}

// Alive reports a ping or pong from the client: life, and for a pong the end
// of a heartbeat round trip.
func (h ConnHandle) Alive(pong bool) { h.root.Send(h.pid, inAlive{pong: pong}) }

// Closed reports that the socket is gone, whoever closed it.
func (h ConnHandle) Closed(err error) { h.root.Send(h.pid, sockClosed{err: err}) }

// Connect starts the conn actor of a new client. expires is the token's
// expiry (zero for none).
func (s *System) Connect(ctx context.Context, id string, user charla.Sender, sock Socket, expires time.Time, opts ...ConnOption) (ConnHandle, error) {
	timeout := 5 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	res, err := s.as.Root.RequestFuture(s.gateway, spawnConn{id: id, user: user, sock: sock, expires: expires, opts: opts}, timeout).Result()
	if err != nil {
		return ConnHandle{}, fmt.Errorf("connect %s: %w", id, err)
	}
	return ConnHandle{pid: res.(*actor.PID), root: s.as.Root}, nil
}

// ErrShutdownTimeout is returned by Shutdown when something did not finish
// within the context's deadline; what did finish is still durable.
var ErrShutdownTimeout = errors.New("actors: shutdown timed out")

// Shutdown stops the tree in dependency order: conns finish their in-flight
// sends and close with 1012, conversations finish their writes and stop,
// the store actor flushes; then the actor system stops.
func (s *System) Shutdown(ctx context.Context) error {
	var errs []error
	wait := func(pid *actor.PID, msg any) {
		timeout := s.deps.cfg.ShutdownGrace
		if dl, ok := ctx.Deadline(); ok {
			timeout = max(time.Until(dl), time.Millisecond)
		}
		if _, err := s.as.Root.RequestFuture(pid, msg, timeout).Result(); err != nil {
			errs = append(errs, fmt.Errorf("%w: %T: %v", ErrShutdownTimeout, msg, err))
		}
	}
	if s.opsSup != nil {
		// First, so that the drain's own figures raise no alert.
		if err := s.as.Root.StopFuture(s.opsSup).Wait(); err != nil {
			errs = append(errs, fmt.Errorf("stop ops: %w", err))
		}
	}
	if s.inbound != nil {
		wait(s.inbound, inboundStop{}) // no new message from the webhook while the rest drains
	}
	wait(s.gateway, shutdownAll{})
	if len(errs) > 0 {
		wait(s.gateway, closeAll{charla.DisconnectServiceRestart})
	}
	if s.deps.bots != nil {
		wait(s.deps.bots, stopAll{}) // sessions save their state
	}
	wait(s.deps.conversations, stopAll{})
	wait(s.deps.inbox, flushReq{})
	wait(s.deps.store, flushReq{})
	if s.deps.whatsapp != nil {
		wait(s.deps.whatsapp, waDrain{}) // calls in flight end known, not unknown
	}
	for _, pid := range []*actor.PID{s.gateway, s.deps.bots, s.deps.conversations, s.peers, s.deps.inbox} {
		if pid == nil {
			continue // no bot, a single node
		}
		if err := s.as.Root.StopFuture(pid).Wait(); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", pid.Id, err))
		}
	}
	// Every write is answered by now; what still runs (a spool drain, a
	// replay read) is cut short rather than waited for: the spool drains
	// again at the next start.
	s.cancel()
	if err := s.as.Root.StopFuture(s.depsSup).Wait(); err != nil {
		errs = append(errs, fmt.Errorf("stop deps: %w", err))
	}
	s.as.Shutdown()
	s.pool.close()
	st := s.deps.stats
	s.deps.log.Info().Int64("messages", st.MessagesIn.Load()).Int64("group_commits", st.StoreWrites.Load()).
		Int64("duplicates", st.Duplicates.Load()).Int64("spooled", st.Spooled.Load()).Int64("connects", st.Connects.Load()).
		Msg("actor tree stopped")
	return errors.Join(errs...)
}

// depsSupervisor is the parent of the dependency actors, each restarted on
// its own (a bulkhead: the store failing never touches the sockets).
type depsSupervisor struct {
	children map[string]*actor.Props
	pids     map[string]*actor.PID
}

// childReq is answered with the named child's *actor.PID.
type childReq struct{ name string }

func (d *depsSupervisor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.pids = map[string]*actor.PID{}
		for name, props := range d.children {
			pid, err := ctx.SpawnNamed(props, name)
			if err != nil {
				panic(fmt.Sprintf("spawn %s: %v", name, err))
			}
			d.pids[name] = pid
		}
	case childReq:
		ctx.Respond(d.pids[m.name])
	}
}

// sendAfter delivers msg to pid after d, from outside any actor: the one way
// actors here schedule their own timers (a time.AfterFunc per timer, no
// goroutine while waiting).
func sendAfter(root *actor.RootContext, d time.Duration, pid *actor.PID, msg any) *time.Timer {
	return time.AfterFunc(d, func() { root.Send(pid, msg) })
}
