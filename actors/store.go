package actors

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
)

// storeActor is the only path from conversations to the store. It keeps the
// books of two lanes that run on I/O goroutines:
//
//   - the write lane (groupCommit): the appends of many conversations become
//     one Store.Append, with at most one write in flight, so everything that
//     arrives meanwhile forms the next batch;
//   - with a spool, the drain lane (outageSpool): a write that fails because
//     the store is unavailable (or that the open breaker does not even try)
//     is spooled, sequenced from the conversation's head, and acked from
//     there; the spool drains into the store, oldest first, while the write
//     lane goes on. As long as anything is spooled every new write is
//     spooled too, so that the store's sequencer never races the spool's.
//
// Besides, it gates loads (a conversation never reads a head that a write in
// flight is about to move) and coalesces read cursors into the next write.
type storeActor struct {
	st      store.Store
	lane    groupCommit
	outage  *outageSpool // nil: no outage protection
	root    *actor.RootContext
	log     zerolog.Logger
	cfg     Config
	stats   *Stats
	life    context.Context // cancelled when the tree shuts down
	timeout time.Duration   // of one store call; see callContext
	breaker breaker
	selfPID *actor.PID
	// whatsapp, when set, hears of every outbound WhatsApp message the
	// store has just committed with its outbox entry (store/outbox.go), and
	// of every drain of the spool, which commits entries too.
	whatsapp *actor.PID

	draining bool
	// failedWrites counts the writes of the current episode of write
	// failures (0: writes succeed), so that a full disk is logged once when
	// it starts and once when it ends, not once per message.
	failedWrites int
	kick         *time.Timer
	kickDue      time.Time
	// pending counts the messages of each conversation that are queued or
	// being written; a load of that conversation waits until it is zero so
	// that a restarted conversation actor never reads a head that a write in
	// flight is about to move.
	pending      map[charla.ConvID]int
	waitingLoads map[charla.ConvID][]loadReq
	cursors      map[cursorKey]charla.Seq
	// writingCursors are the cursors of the write in flight: a read of the
	// cursors meanwhile must see them, committed or not.
	writingCursors map[cursorKey]charla.Seq
	flushWaiters   []*actor.PID
	io             sync.WaitGroup
}

// appendReq asks for msgs (all of conv, in order) to be made durable; head
// is the conversation's durable head, from which the spool sequences. The
// answer is an appendDone sent to replyTo.
type appendReq struct {
	conv    charla.ConvID
	head    charla.Seq
	msgs    []charla.Message
	replyTo *actor.PID
}

// appendDone answers an appendReq: one result per message, or err for all,
// or (when the store refused some messages) errs[i] for message i.
type appendDone struct {
	results []store.AppendResult
	errs    []error
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

// rangeDone answers rangeReq. When the store is down the page comes from the
// spool and may not start at after+1; the reader must check.
type rangeDone struct {
	conv charla.ConvID
	msgs []charla.Message
	err  error
}

// readCursorReq records a read cursor; cursors are coalesced and written
// with the next group commit, best effort (a lost cursor costs an unread
// badge, never a message).
type readCursorReq struct {
	conv charla.ConvID
	user string
	seq  charla.Seq
}

// readCursorsReq asks for every user's read cursor in conv, the ones not
// yet written included; the answer is a cursorsRead to replyTo.
type readCursorsReq struct {
	conv    charla.ConvID
	replyTo *actor.PID
}

// cursorsRead answers readCursorsReq.
type cursorsRead struct {
	cursors map[string]charla.Seq
	err     error
}

type cursorKey struct {
	conv charla.ConvID
	user string
}

type storeKick struct{}

// flushReq is answered (flushed{}) once nothing is queued or being written:
// shutdown's last step before the store closes.
type (
	flushReq struct{}
	flushed  struct{}
)

func newStoreActor(life context.Context, root *actor.RootContext, st store.Store, sp Spool, cfg Config, stats *Stats, log zerolog.Logger) *storeActor {
	a := &storeActor{
		st: st, root: root, log: log, cfg: cfg, stats: stats, life: life,
		breaker:      newBreaker(cfg.StoreBreaker),
		pending:      map[charla.ConvID]int{},
		waitingLoads: map[charla.ConvID][]loadReq{},
		cursors:      map[cursorKey]charla.Seq{},
	}
	if sp != nil {
		appender, _ := st.(sequencedAppender) // NewSystem checked it
		a.outage = &outageSpool{sp: sp, appender: appender, st: st, cfg: cfg, log: log, life: life}
		a.timeout = cfg.StoreWriteTimeout
	}
	a.lane = groupCommit{st: st, outage: a.outage, maxBatch: cfg.StoreBatchMax, delay: cfg.CommitDelay, timeout: a.timeout, life: life, log: log}
	return a
}

func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.selfPID = ctx.Self()
		a.publish()
		a.schedule(ctx) // a spool left by a previous run drains now
	case appendReq:
		a.lane.push(time.Now(), m)
		a.pending[m.conv] += len(m.msgs)
		a.schedule(ctx)
	case storeWritten:
		a.lane.writing = false
		a.onWritten(ctx, m)
		a.schedule(ctx)
		a.answerFlushed(ctx)
	case spoolDrained:
		a.draining = false
		a.onDrained(m)
		a.schedule(ctx)
	case storeKick:
		a.kick = nil
		a.schedule(ctx)
	case loadReq:
		if a.pending[m.conv] > 0 {
			a.waitingLoads[m.conv] = append(a.waitingLoads[m.conv], m)
			return
		}
		a.load(m)
	case rangeReq:
		a.goIO(func() {
			msgs, err := a.readRange(m.conv, m.after, m.limit)
			a.root.Send(m.replyTo, rangeDone{conv: m.conv, msgs: msgs, err: err})
		})
	case readCursorReq:
		k := cursorKey{m.conv, m.user}
		if m.seq > a.cursors[k] {
			a.cursors[k] = m.seq
		}
		a.schedule(ctx)
	case readCursorsReq:
		a.readCursors(m)
	case flushReq:
		a.flushWaiters = append(a.flushWaiters, ctx.Sender())
		a.answerFlushed(ctx)
	case *actor.Stopping:
		if a.kick != nil {
			a.kick.Stop()
		}
		a.io.Wait()
	}
}

func (a *storeActor) spooled() bool { return a.outage != nil && a.outage.depth() > 0 }

// schedule starts whatever each lane can do now.
func (a *storeActor) schedule(ctx actor.Context) {
	now := time.Now()
	if !a.draining && a.spooled() {
		if a.breaker.Allow(now) {
			a.startDrain()
		} else {
			a.kickAt(a.breaker.RetryAt())
		}
	}
	if a.lane.writing {
		return
	}
	var useStore bool
	if len(a.lane.queue) == 0 {
		// Cursors alone never probe a store that is down: they wait.
		if len(a.cursors) == 0 || (a.outage != nil && (a.spooled() || a.breaker.state != BreakerClosed)) {
			return
		}
		useStore = true
	} else {
		// Straight to the store only when nothing is spooled (or the store's
		// sequencer would race the spool's) and the breaker lets us.
		useStore = a.outage == nil || (!a.spooled() && !a.draining && a.breaker.Allow(now))
	}
	if at, wait := a.lane.linger(now); wait && useStore {
		a.kickIn(at.Sub(now))
		return
	}
	batch, msgs := a.lane.cut(now)
	var cursors map[cursorKey]charla.Seq
	if useStore {
		cursors, a.cursors = a.cursors, map[cursorKey]charla.Seq{}
		a.writingCursors = cursors
	}
	a.lane.writing = true
	self := ctx.Self()
	a.goIO(func() { a.root.Send(self, a.lane.write(batch, msgs, cursors, useStore)) })
}

// onWritten hands every conversation its part of a write and lets the loads
// that were waiting on it run.
func (a *storeActor) onWritten(ctx actor.Context, d storeWritten) {
	if d.tried {
		switch {
		case d.dbErr == nil:
			a.breaker.Success()
		case isOutage(a.life, d.dbErr):
			a.breaker.Failure(time.Now())
			a.log.Warn().Err(d.dbErr).Int("spooled", d.spooled).Str("breaker", a.breaker.state.String()).Msg("store unavailable")
		}
	}
	a.trackFailures(d)
	a.writingCursors = nil
	for k, seq := range d.cursors {
		if seq > a.cursors[k] {
			a.cursors[k] = seq
		}
	}
	a.stats.Spooled.Add(int64(d.spooled))
	if len(d.batch) > 0 {
		a.stats.StoreWrites.Add(1)
		a.stats.hist.CommitSize.Observe(float64(d.msgs))
		a.stats.hist.CommitLatency.Observe(d.took.Seconds())
		// A refused message is its sender's problem, not the store's.
		failed := func(err error) bool { return err != nil && !errors.Is(err, store.ErrInvalid) }
		if failed(d.dbErr) || failed(d.err) {
			a.stats.StoreErrors.Add(1)
		}
	}
	a.tellWhatsApp(ctx, d)
	for i, r := range d.batch {
		ctx.Send(r.replyTo, d.reply[i])
		if a.pending[r.conv] -= len(r.msgs); a.pending[r.conv] <= 0 {
			delete(a.pending, r.conv)
			for _, l := range a.waitingLoads[r.conv] {
				a.load(l)
			}
			delete(a.waitingLoads, r.conv)
		}
	}
	a.publish()
}

// trackFailures logs write failures once per episode, with the cause: a
// full disk or a refusing database answers every send "unavailable", and the
// operator must hear of it without reading one line per message.
func (a *storeActor) trackFailures(d storeWritten) {
	switch {
	case len(d.batch) == 0 || isOutage(a.life, d.err) && a.outage != nil:
		// nothing written, or an outage the spool covers (logged there)
	case d.err != nil && !errors.Is(d.err, store.ErrInvalid):
		if a.failedWrites == 0 {
			a.log.Error().Err(d.err).Int("messages", len(d.reply)).Msg("store writes are failing; senders are answered unavailable until they succeed")
		}
		a.failedWrites++
	case a.failedWrites > 0:
		a.log.Warn().Int("failed_writes", a.failedWrites).Msg("store writes succeed again")
		a.failedWrites = 0
	}
}

// tellWhatsApp hands the whatsapp actor the outbox entries a write has
// just committed to the store (a spooled write commits none: the drain
// does, and onDrained says so).
func (a *storeActor) tellWhatsApp(ctx actor.Context, d storeWritten) {
	if a.whatsapp == nil || !d.tried || d.spooled > 0 || d.err != nil {
		return
	}
	var entries []store.OutboxEntry
	for i, r := range d.batch {
		for j, m := range r.msgs {
			rep := d.reply[i]
			if rep.err != nil || rep.errs != nil && rep.errs[j] != nil || rep.results[j].Duplicate || !store.Outbound(m) {
				continue
			}
			m.Seq, m.TS = rep.results[j].Seq, rep.results[j].TS
			entries = append(entries, store.NewOutboxEntry(m))
		}
	}
	if len(entries) > 0 {
		ctx.Send(a.whatsapp, outboxAdded{entries: entries})
	}
}

func (a *storeActor) startDrain() {
	a.draining = true
	self := a.selfPID
	a.goIO(func() { a.root.Send(self, a.outage.drain(a.life)) })
}

// unservedDrainRetry is how soon a drain that stopped at shards still
// being claimed looks again: a claim takes a few store round trips.
const unservedDrainRetry = 10 * time.Millisecond

func (a *storeActor) onDrained(d spoolDrained) {
	a.stats.Drained.Add(int64(d.moved))
	if d.moved > 0 && a.whatsapp != nil {
		a.root.Send(a.whatsapp, outboxRescan{})
	}
	switch {
	case d.err == nil:
		a.breaker.Success()
		a.log.Info().Int("moved", d.moved).Msg("spool drained into the store")
	case errors.Is(d.err, store.ErrFenced):
		// What is left belongs to cluster shards this node adopted and is
		// still claiming: nothing is wrong with the store, look again soon.
		// The breaker learns nothing from it: a half-open probe not made.
		if d.moved > 0 {
			a.breaker.Success()
		} else {
			a.breaker.Unused()
		}
		a.kickIn(unservedDrainRetry)
	case isOutage(a.life, d.err):
		a.breaker.Failure(time.Now())
		a.kickAt(a.breaker.RetryAt())
	default:
		// Not an outage: a seq conflict (a refused message is set aside by
		// the drain itself, see drainEach). Retrying cannot help, and
		// clients are served from the spool meanwhile; say it loud.
		a.breaker.Failure(time.Now())
		a.kickAt(a.breaker.RetryAt())
		a.log.Error().Err(d.err).Int("spool_depth", a.outage.depth()).Msg("spool drain refused by the store; the spool keeps growing")
	}
	a.publish()
}

// kickAt makes sure the actor looks again at t, when nothing else would
// wake it (no traffic during an outage): a millisecond from now at the
// earliest, since a breaker's retry time may have passed already.
func (a *storeActor) kickAt(t time.Time) { a.kickIn(max(time.Until(t), time.Millisecond)) }

// kickIn schedules a storeKick in d, unless one is due sooner already.
func (a *storeActor) kickIn(d time.Duration) {
	at := time.Now().Add(d)
	if a.kick != nil {
		if !a.kickDue.After(at) {
			return
		}
		a.kick.Stop() // a kick already sent meanwhile only schedules once more
	}
	a.kick, a.kickDue = sendAfter(a.root, d, a.selfPID, storeKick{}), at
}

func (a *storeActor) load(m loadReq) {
	a.goIO(func() {
		var l loaded
		l.head, l.err = a.head(m.conv)
		if l.err == nil && l.head > 0 && m.recent > 0 {
			after := l.head - min(l.head, charla.Seq(m.recent))
			l.recent, l.err = a.readRange(m.conv, after, m.recent)
			if l.err == nil && (len(l.recent) == 0 || l.recent[0].Seq != after+1) {
				l.err = fmt.Errorf("recent messages of %s: %w", m.conv, store.ErrUnavailable)
			}
		}
		a.root.Send(m.replyTo, l)
	})
}

// head and readRange read through the spool when there is one, so that
// messages acked from it are seen before they are drained.
func (a *storeActor) head(conv charla.ConvID) (charla.Seq, error) {
	ctx, cancel := callContext(a.life, a.timeout)
	defer cancel()
	if a.outage != nil {
		return a.outage.head(ctx, conv)
	}
	return a.st.Head(ctx, conv)
}

func (a *storeActor) readRange(conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	ctx, cancel := callContext(a.life, a.timeout)
	defer cancel()
	if a.outage != nil {
		return a.outage.readRange(ctx, conv, after, limit)
	}
	return a.st.Range(ctx, conv, after, limit)
}

// readCursors reads conv's cursors from the store and raises them to the
// ones still queued or being written, so that a cursor is visible as soon
// as it is set, as the protocol's read frame promises to the others.
func (a *storeActor) readCursors(m readCursorsReq) {
	unwritten := map[string]charla.Seq{}
	for _, pending := range []map[cursorKey]charla.Seq{a.writingCursors, a.cursors} {
		for k, seq := range pending {
			if k.conv == m.conv && seq > unwritten[k.user] {
				unwritten[k.user] = seq
			}
		}
	}
	a.goIO(func() {
		ctx, cancel := callContext(a.life, a.timeout)
		defer cancel()
		cursors, err := a.st.ReadCursors(ctx, m.conv)
		if err != nil {
			err = fmt.Errorf("read cursors of %s: %w", m.conv, err)
		}
		if cursors == nil {
			cursors = map[string]charla.Seq{}
		}
		for user, seq := range unwritten {
			if seq > cursors[user] {
				cursors[user] = seq
			}
		}
		a.root.Send(m.replyTo, cursorsRead{cursors: cursors, err: err})
	})
}

func (a *storeActor) answerFlushed(ctx actor.Context) {
	if a.lane.writing || len(a.lane.queue) > 0 || len(a.flushWaiters) == 0 {
		return
	}
	for _, w := range a.flushWaiters {
		ctx.Send(w, flushed{})
	}
	a.flushWaiters = nil
}

func (a *storeActor) publish() {
	a.stats.StoreBreaker.Store(int32(a.breaker.state))
	a.stats.BreakerTrips.Store(a.breaker.trips)
	if a.outage != nil {
		a.stats.SpoolDepth.Store(int64(a.outage.depth()))
		a.stats.DeadLetters.Store(int64(a.outage.sp.DeadLetterCount()))
	}
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
