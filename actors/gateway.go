package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
)

// gateway supervises the conn actors: it spawns one per connection, stops
// one that panics (its client reconnects; nobody else notices) and, at
// shutdown, shuts them all down.
type gateway struct {
	deps    *deps
	conns   map[string]*actor.PID
	waiters []*actor.PID // answered with allClosed once conns is empty
}

// spawnConn is answered with the new conn actor's *actor.PID.
type spawnConn struct {
	id      string
	user    charla.Sender
	sock    Socket
	expires time.Time
	opts    []ConnOption
}

// shutdownAll asks every conn to finish its in-flight sends and close with
// 1012; closeAll closes them at once with the given code. Both are answered
// with allClosed when no conn is left.
type (
	shutdownAll struct{}
	closeAll    struct{ d charla.Disconnect }
	allClosed   struct{}
)

func newGateway(d *deps) *gateway {
	return &gateway{deps: d, conns: map[string]*actor.PID{}}
}

func (g *gateway) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case spawnConn:
		d := g.deps
		props := actor.PropsFromProducer(func() actor.Actor { return newConn(d, m.id, m.user, m.sock, m.expires, m.opts...) }, actor.WithDispatcher(d.dispatcher))
		pid := ctx.Spawn(props)
		g.conns[pid.Id] = pid
		ctx.Respond(pid)
	case *actor.Terminated:
		releaseStoppedChild(ctx) // or the stopped conn stays in memory
		delete(g.conns, m.Who.Id)
		g.notify(ctx)
	case shutdownAll:
		for _, pid := range g.conns {
			ctx.Send(pid, shutdownConn{})
		}
		g.waiters = append(g.waiters, ctx.Sender())
		g.notify(ctx)
	case closeAll:
		for _, pid := range g.conns {
			ctx.Send(pid, closeConn(m))
		}
		g.waiters = append(g.waiters, ctx.Sender())
		g.notify(ctx)
	}
}

func (g *gateway) notify(ctx actor.Context) {
	if len(g.conns) > 0 {
		return
	}
	for _, w := range g.waiters {
		ctx.Send(w, allClosed{})
	}
	g.waiters = nil
}
