package actors

import (
	"context"
	"sync"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
)

// storeActor is the only path from conversations to the store. It turns the
// appends of many conversations into one Store.Append (group commit: one
// transaction, one fsync, many acks) and keeps at most one such write in
// flight, so everything that arrives meanwhile forms the next batch. Store
// calls run on a goroutine of their own; the actor only keeps the books.
type storeActor struct {
	st       store.Store
	root     *actor.RootContext // for replies sent from store goroutines
	log      zerolog.Logger
	batchMax int

	ctx    context.Context // cancelled when the tree shuts down
	queue  []appendReq
	queued int // messages in queue
	busy   bool
	// pending counts the messages of each conversation that are queued or
	// being written; a load of that conversation waits until it is zero so
	// that a restarted conversation actor never reads a head that a write in
	// flight is about to move.
	pending      map[charla.ConvID]int
	waitingLoads map[charla.ConvID][]loadReq
	cursors      map[cursorKey]charla.Seq
	drainers     []*actor.PID
	io           sync.WaitGroup
}

// appendReq asks for msgs (all of conv, in order) to be made durable; the
// answer is an appendDone sent to replyTo.
type appendReq struct {
	conv    charla.ConvID
	msgs    []charla.Message
	replyTo *actor.PID
}

// appendDone answers an appendReq: one result per message, or err for all.
type appendDone struct {
	results []store.AppendResult
	err     error
}

// loadReq asks for what a conversation actor needs to start: its head and
// its most recent messages (the dedup window and the replay ring).
type loadReq struct {
	conv    charla.ConvID
	recent  int
	replyTo *actor.PID
}

// loaded answers loadReq.
type loaded struct {
	head   charla.Seq
	recent []charla.Message
	err    error
}

// rangeReq asks for a page of history; the answer is a rangeDone to replyTo.
type rangeReq struct {
	conv    charla.ConvID
	after   charla.Seq
	limit   int
	replyTo *actor.PID
}

// rangeDone answers rangeReq.
type rangeDone struct {
	conv charla.ConvID
	msgs []charla.Message
	err  error
}

// readCursorReq records a read cursor; cursors are coalesced and written
// after the next group commit, best effort (a lost cursor costs an unread
// badge, never a message).
type readCursorReq struct {
	conv charla.ConvID
	user string
	seq  charla.Seq
}

type cursorKey struct {
	conv charla.ConvID
	user string
}

// flushDone is the store goroutine's report back to the actor.
type flushDone struct {
	batch   []appendReq
	results []store.AppendResult
	err     error
}

// drainReq is answered (drained{}) once nothing is queued or in flight.
type drainReq struct{}
type drained struct{}

func newStoreActor(ctx context.Context, root *actor.RootContext, st store.Store, batchMax int, log zerolog.Logger) *storeActor {
	return &storeActor{
		st: st, root: root, log: log, batchMax: batchMax, ctx: ctx,
		pending:      map[charla.ConvID]int{},
		waitingLoads: map[charla.ConvID][]loadReq{},
		cursors:      map[cursorKey]charla.Seq{},
	}
}

func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case appendReq:
		a.queue = append(a.queue, m)
		a.queued += len(m.msgs)
		a.pending[m.conv] += len(m.msgs)
		a.flush(ctx)
	case flushDone:
		a.busy = false
		a.finish(ctx, m)
		a.flush(ctx)
		a.maybeDrained(ctx)
	case loadReq:
		if a.pending[m.conv] > 0 {
			a.waitingLoads[m.conv] = append(a.waitingLoads[m.conv], m)
			return
		}
		a.load(m)
	case rangeReq:
		a.goIO(func() {
			msgs, err := a.st.Range(a.ctx, m.conv, m.after, m.limit)
			a.root.Send(m.replyTo, rangeDone{conv: m.conv, msgs: msgs, err: err})
		})
	case readCursorReq:
		k := cursorKey{m.conv, m.user}
		if m.seq > a.cursors[k] {
			a.cursors[k] = m.seq
		}
		a.flush(ctx)
	case drainReq:
		a.drainers = append(a.drainers, ctx.Sender())
		a.maybeDrained(ctx)
	case *actor.Stopping:
		a.io.Wait()
	}
}

// flush starts the next group commit when none is in flight.
func (a *storeActor) flush(ctx actor.Context) {
	if a.busy || (len(a.queue) == 0 && len(a.cursors) == 0) {
		return
	}
	var batch []appendReq
	n := 0
	for len(a.queue) > 0 && (n == 0 || n+len(a.queue[0].msgs) <= a.batchMax) {
		batch = append(batch, a.queue[0])
		n += len(a.queue[0].msgs)
		a.queue[0] = appendReq{}
		a.queue = a.queue[1:]
	}
	a.queued -= n
	msgs := make([]charla.Message, 0, n)
	for _, r := range batch {
		msgs = append(msgs, r.msgs...)
	}
	cursors := a.cursors
	a.cursors = map[cursorKey]charla.Seq{}
	a.busy = true
	self := ctx.Self()
	a.goIO(func() {
		var d flushDone
		d.batch = batch
		if len(msgs) > 0 {
			d.results, d.err = a.st.Append(a.ctx, msgs)
		}
		for k, seq := range cursors {
			if err := a.st.SetReadCursor(a.ctx, k.conv, k.user, seq); err != nil {
				a.log.Warn().Err(err).Str("conv", string(k.conv)).Msg("read cursor not stored")
			}
		}
		a.root.Send(self, d)
	})
}

// finish hands every conversation its part of a group commit's results and
// lets the loads that were waiting on those writes run.
func (a *storeActor) finish(ctx actor.Context, d flushDone) {
	if d.err != nil {
		a.log.Error().Err(d.err).Int("conversations", len(d.batch)).Msg("group commit failed")
	}
	off := 0
	for _, r := range d.batch {
		reply := appendDone{err: d.err}
		if d.err == nil {
			reply.results = d.results[off : off+len(r.msgs)]
		}
		off += len(r.msgs)
		ctx.Send(r.replyTo, reply)
		if a.pending[r.conv] -= len(r.msgs); a.pending[r.conv] <= 0 {
			delete(a.pending, r.conv)
			for _, l := range a.waitingLoads[r.conv] {
				a.load(l)
			}
			delete(a.waitingLoads, r.conv)
		}
	}
}

func (a *storeActor) load(m loadReq) {
	a.goIO(func() {
		var l loaded
		l.head, l.err = a.st.Head(a.ctx, m.conv)
		if l.err == nil && l.head > 0 && m.recent > 0 {
			after := charla.Seq(0)
			if l.head > charla.Seq(m.recent) {
				after = l.head - charla.Seq(m.recent)
			}
			l.recent, l.err = a.st.Range(a.ctx, m.conv, after, m.recent)
		}
		a.root.Send(m.replyTo, l)
	})
}

func (a *storeActor) maybeDrained(ctx actor.Context) {
	if a.busy || len(a.queue) > 0 || len(a.drainers) == 0 {
		return
	}
	for _, d := range a.drainers {
		ctx.Send(d, drained{})
	}
	a.drainers = nil
}

// goIO runs blocking store work off the actor, tracked so that shutdown can
// wait for it.
func (a *storeActor) goIO(f func()) {
	a.io.Add(1)
	go func() {
		defer a.io.Done()
		f()
	}()
}
