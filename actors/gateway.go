package actors

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"charla"
)

// gateway supervises the conn actors: it spawns one per connection, stops
// one that panics (its client reconnects; nobody else notices) and, at
// shutdown, shuts them all down. It also routes frames meant for a user
// rather than a connection (userFrame: inventory job progress) to all of
// that user's connections: it sees every conn start and stop, so its
// user index is never stale, and such frames are few (a handful per job).
// gatewayName is the gateway's name under the root: the actors that talk
// to connections they do not hold (alerts, the inventory bridge, a
// restarting inbox) reach it by name.
const gatewayName = "gateway"

type gateway struct {
	deps    *deps
	conns   map[string]*actor.PID
	users   map[string]map[string]*actor.PID // user id → conn pid id → pid
	userOf  map[string]string                // conn pid id → user id
	admins  map[string]*actor.PID            // conn pid id → pid of admins' conns: alert frames (alerts.go)
	waiters []*actor.PID                     // answered with allClosed once conns is empty
}

// userFrame is a frame for every connection of user.
type userFrame struct {
	user  string
	frame []byte
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
	return &gateway{deps: d, conns: map[string]*actor.PID{}, users: map[string]map[string]*actor.PID{}, userOf: map[string]string{},
		admins: map[string]*actor.PID{}}
}

func (g *gateway) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case spawnConn:
		d := g.deps
		props := actor.PropsFromProducer(func() actor.Actor { return newConn(d, m.id, m.user, m.sock, m.expires, m.opts...) }, actor.WithDispatcher(d.dispatcher))
		pid := ctx.Spawn(props)
		g.conns[pid.Id] = pid
		g.index(m.user.ID, pid)
		if isAdmin(m.user) {
			g.admins[pid.Id] = pid
		}
		ctx.Respond(pid)
	case *actor.Terminated:
		releaseStoppedChild(ctx) // or the stopped conn stays in memory
		delete(g.conns, m.Who.Id)
		delete(g.admins, m.Who.Id)
		g.unindex(m.Who.Id)
		g.notify(ctx)
	case inboxRestarted:
		for _, pid := range g.conns {
			ctx.Send(pid, m)
		}
	case userFrame:
		for _, pid := range g.users[m.user] {
			ctx.Send(pid, soapFrame{frame: m.frame})
		}
	case adminFrame:
		broadcastAdmins(ctx, g.admins, m.frame)
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

func (g *gateway) index(user string, pid *actor.PID) {
	if g.users[user] == nil {
		g.users[user] = map[string]*actor.PID{}
	}
	g.users[user][pid.Id] = pid
	g.userOf[pid.Id] = user
}

func (g *gateway) unindex(id string) {
	user := g.userOf[id]
	delete(g.userOf, id)
	if conns := g.users[user]; conns != nil {
		delete(conns, id)
		if len(conns) == 0 {
			delete(g.users, user)
		}
	}
}
