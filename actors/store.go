package actors

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/spool"
)

// sequencedAppender is what draining the spool needs of the store: storing
// messages with the seq the engine already gave them (postgres has it).
type sequencedAppender interface {
	AppendSequenced(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error)
}

// storeActor is the only path from conversations to the store.
//
// It turns the appends of many conversations into one Store.Append (group
// commit: one transaction, one fsync, many acks), with at most one write in
// flight, so everything that arrives meanwhile forms the next batch.
//
// With a spool it also hides outages: a write that fails because the store
// is unavailable (or that the open breaker does not even try) goes to the
// local spool, sequenced here from the conversation's head, and is acked from
// there. A second lane drains the spool into the store, oldest first, while
// the first keeps writing; as long as anything is spooled every new write is
// spooled too, so that the store's sequencer never races the spool's.
//
// Store calls run on goroutines; the actor only keeps the books.
type storeActor struct {
	st      store.Store
	seq     sequencedAppender // nil when the store cannot take a drain
	sp      *spool.Spool      // nil: no outage protection
	root    *actor.RootContext
	log     zerolog.Logger
	cfg     Config
	stats   *Stats
	ctx     context.Context // cancelled when the tree shuts down
	breaker breaker
	selfPID *actor.PID

	queue    []appendReq
	writing  bool
	draining bool
	kick     *time.Timer
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

type cursorKey struct {
	conv charla.ConvID
	user string
}

// storeWritten is the write lane's report.
type storeWritten struct {
	batch   []appendReq
	cursors map[cursorKey]charla.Seq // not written: kept for the next time
	reply   []appendDone
	dbErr   error // outcome of the store attempt, when one was made
	tried   bool
	spooled int
}

// spoolDrained is the drain lane's report.
type spoolDrained struct {
	moved int
	err   error
}

type storeKick struct{}

// drainReq is answered (drained{}) once nothing is queued or being written.
type drainReq struct{}
type drained struct{}

func newStoreActor(ctx context.Context, root *actor.RootContext, st store.Store, sp *spool.Spool, cfg Config, stats *Stats, log zerolog.Logger) *storeActor {
	a := &storeActor{
		st: st, sp: sp, root: root, log: log, cfg: cfg, stats: stats, ctx: ctx,
		breaker:      newBreaker(cfg.StoreBreaker),
		pending:      map[charla.ConvID]int{},
		waitingLoads: map[charla.ConvID][]loadReq{},
		cursors:      map[cursorKey]charla.Seq{},
	}
	a.seq, _ = st.(sequencedAppender)
	return a
}

func (a *storeActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.selfPID = ctx.Self()
		a.publish()
		a.flush(ctx) // a spool left by a previous run drains now
	case appendReq:
		a.queue = append(a.queue, m)
		a.pending[m.conv] += len(m.msgs)
		a.flush(ctx)
	case storeWritten:
		a.writing = false
		a.onWritten(ctx, m)
		a.flush(ctx)
		a.maybeDrained(ctx)
	case spoolDrained:
		a.draining = false
		a.onDrained(m)
		a.flush(ctx)
	case storeKick:
		a.kick = nil
		a.flush(ctx)
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
		a.flush(ctx)
	case drainReq:
		a.drainers = append(a.drainers, ctx.Sender())
		a.maybeDrained(ctx)
	case *actor.Stopping:
		if a.kick != nil {
			a.kick.Stop()
		}
		a.io.Wait()
	}
}

func (a *storeActor) spooled() bool { return a.sp != nil && a.sp.Len() > 0 }

// flush starts whatever each lane can do now.
func (a *storeActor) flush(ctx actor.Context) {
	now := time.Now()
	if !a.draining && a.spooled() && a.seq != nil {
		if a.breaker.Allow(now) {
			a.startDrain()
		} else {
			a.kickAt(a.breaker.RetryAt())
		}
	}
	if a.writing {
		return
	}
	var useStore bool
	if len(a.queue) == 0 {
		// Cursors alone never probe a store that is down: they wait.
		if len(a.cursors) == 0 || (a.sp != nil && (a.spooled() || a.breaker.state != BreakerClosed)) {
			return
		}
		useStore = true
	} else {
		// Straight to the store only when nothing is spooled (or the store's
		// sequencer would race the spool's) and the breaker lets us.
		useStore = a.sp == nil || (!a.spooled() && !a.draining && a.breaker.Allow(now))
	}
	var batch []appendReq
	n := 0
	for len(a.queue) > 0 && (n == 0 || n+len(a.queue[0].msgs) <= a.cfg.StoreBatchMax) {
		batch = append(batch, a.queue[0])
		n += len(a.queue[0].msgs)
		a.queue[0] = appendReq{}
		a.queue = a.queue[1:]
	}
	// The engine, not the store, gives the time: the same TS then holds in
	// the ack, in the spool and in the store, whichever path the batch takes.
	ts := time.Now().UTC().Truncate(time.Microsecond)
	msgs := make([]charla.Message, 0, n)
	for _, r := range batch {
		for i := range r.msgs {
			r.msgs[i].TS = ts
		}
		msgs = append(msgs, r.msgs...)
	}
	var cursors map[cursorKey]charla.Seq
	if useStore {
		cursors, a.cursors = a.cursors, map[cursorKey]charla.Seq{}
	}
	a.writing = true
	self := ctx.Self()
	a.goIO(func() { a.root.Send(self, a.write(batch, msgs, cursors, useStore)) })
}

// write runs on the write lane.
func (a *storeActor) write(batch []appendReq, msgs []charla.Message, cursors map[cursorKey]charla.Seq, useStore bool) storeWritten {
	d := storeWritten{batch: batch}
	var results []store.AppendResult
	var err error
	if len(msgs) > 0 {
		if useStore {
			d.tried = true
			results, err = a.appendStore(msgs)
			d.dbErr = err
		}
		if a.sp != nil && (!useStore || a.outage(err)) {
			results, d.spooled, err = a.appendSpool(batch, msgs)
		}
	}
	var errs []error
	if err != nil && errors.Is(err, store.ErrInvalid) && len(msgs) > 1 {
		// One message the store refuses must not fail everyone's: store them
		// one by one and refuse only that one.
		results, errs, err = a.appendEach(msgs)
	}
	d.reply = split(batch, results, errs, err)
	if useStore && !a.outage(d.dbErr) {
		for k, seq := range cursors {
			if cerr := a.st.SetReadCursor(a.ctx, k.conv, k.user, seq); cerr != nil {
				a.log.Warn().Err(cerr).Str("conv", string(k.conv)).Msg("read cursor not stored")
			}
		}
	} else {
		d.cursors = cursors
	}
	return d
}

func (a *storeActor) appendStore(msgs []charla.Message) ([]store.AppendResult, error) {
	ctx, cancel := a.writeContext()
	defer cancel()
	return a.st.Append(ctx, msgs)
}

func (a *storeActor) appendEach(msgs []charla.Message) ([]store.AppendResult, []error, error) {
	results := make([]store.AppendResult, len(msgs))
	errs := make([]error, len(msgs))
	for i := range msgs {
		r, err := a.appendStore(msgs[i : i+1])
		if err != nil {
			if a.outage(err) {
				return nil, nil, err
			}
			errs[i] = err
			continue
		}
		results[i] = r[0]
	}
	return results, errs, nil
}

// appendSpool sequences msgs from each conversation's head and spools them
// with one fsync. Duplicates are found in the spool; older ones are found by
// the conversation's in-memory window, and, past it, at drain time.
func (a *storeActor) appendSpool(batch []appendReq, msgs []charla.Message) (results []store.AppendResult, spooled int, err error) {
	results = make([]store.AppendResult, 0, len(msgs))
	var fresh []charla.Message
	i := 0
	for _, r := range batch {
		next := r.head + 1
		for range r.msgs {
			m := msgs[i]
			i++
			if old, ok, err := a.sp.Lookup(m.Conv, m.ClientMsgID); err != nil {
				return nil, 0, fmt.Errorf("spool lookup %s: %w", m.Conv, err)
			} else if ok {
				results = append(results, store.AppendResult{Seq: old.Seq, TS: old.TS, Duplicate: true})
				continue
			}
			m.Seq = next
			next++
			fresh = append(fresh, m)
			results = append(results, store.AppendResult{Seq: m.Seq, TS: m.TS})
		}
	}
	if len(fresh) == 0 {
		return results, 0, nil
	}
	if err := a.sp.Put(a.ctx, fresh); err != nil {
		return nil, 0, fmt.Errorf("spool %d messages: %w", len(fresh), err)
	}
	return results, len(fresh), nil
}

// onWritten hands every conversation its part of a write and lets the loads
// that were waiting on it run.
func (a *storeActor) onWritten(ctx actor.Context, d storeWritten) {
	if d.tried {
		switch {
		case d.dbErr == nil:
			a.breaker.Success()
		case a.outage(d.dbErr):
			a.breaker.Failure(time.Now())
			a.log.Warn().Err(d.dbErr).Int("spooled", d.spooled).Str("breaker", a.breaker.state.String()).Msg("store unavailable")
		}
	}
	for k, seq := range d.cursors {
		if seq > a.cursors[k] {
			a.cursors[k] = seq
		}
	}
	a.stats.Spooled.Add(int64(d.spooled))
	if len(d.batch) > 0 {
		a.stats.StoreWrites.Add(1)
	}
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

func (a *storeActor) startDrain() {
	a.draining = true
	self := a.selfPID
	a.goIO(func() {
		ctx, cancel := context.WithCancel(a.ctx)
		defer cancel()
		n, err := a.sp.Drain(ctx, a.cfg.DrainBatch, a.drainSink)
		a.root.Send(self, spoolDrained{moved: n, err: err})
	})
}

// drainSink stores one spooled batch with its seqs. A client_msg_id the
// store already holds at another seq (a resend that the engine could not
// recognise while the store was down) keeps its spooled seq under a derived
// id, so that the store has no gap where clients saw a message.
func (a *storeActor) drainSink(ctx context.Context, msgs []charla.Message) error {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DrainTimeout)
	defer cancel()
	res, err := a.seq.AppendSequenced(ctx, msgs)
	if err != nil {
		return err
	}
	var moved []charla.Message
	for i, r := range res {
		if r.Duplicate && r.Seq != msgs[i].Seq {
			m := msgs[i]
			a.log.Warn().Str("conv", string(m.Conv)).Str("client_msg_id", m.ClientMsgID).Uint64("seq", uint64(m.Seq)).Uint64("stored_seq", uint64(r.Seq)).
				Msg("a message resent during an outage was accepted twice; the second copy is stored under a derived id")
			m.ClientMsgID = fmt.Sprintf("%s#%d", m.ClientMsgID, m.Seq)
			moved = append(moved, m)
		}
	}
	if len(moved) > 0 {
		if _, err := a.seq.AppendSequenced(ctx, moved); err != nil {
			return err
		}
	}
	return nil
}

func (a *storeActor) onDrained(d spoolDrained) {
	a.stats.Drained.Add(int64(d.moved))
	switch {
	case d.err == nil:
		a.breaker.Success()
		a.log.Info().Int("moved", d.moved).Msg("spool drained into the store")
	case a.outage(d.err):
		a.breaker.Failure(time.Now())
		a.kickAt(a.breaker.RetryAt())
	default:
		// Not an outage: a conflict or a refused message. Retrying cannot
		// help, and clients are served from the spool meanwhile; say it loud.
		a.breaker.Failure(time.Now())
		a.kickAt(a.breaker.RetryAt())
		a.log.Error().Err(d.err).Int("spool_depth", a.sp.Len()).Msg("spool drain refused by the store; the spool keeps growing")
	}
	a.publish()
}

// kickAt makes sure the actor looks again at t, when nothing else would
// wake it (no traffic during an outage).
func (a *storeActor) kickAt(t time.Time) {
	if a.kick != nil {
		return
	}
	self := a.selfPID
	a.kick = time.AfterFunc(max(time.Until(t), time.Millisecond), func() { a.root.Send(self, storeKick{}) })
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

// head is the store's head, or the spool's when that is higher (messages
// not yet drained) or the store is down.
func (a *storeActor) head(conv charla.ConvID) (charla.Seq, error) {
	ctx, cancel := a.writeContext()
	defer cancel()
	h, err := a.st.Head(ctx, conv)
	if a.sp == nil || a.sp.Len() == 0 {
		return h, err
	}
	sh, ok, serr := a.sp.Head(conv)
	if serr != nil {
		return 0, serr
	}
	if err != nil {
		if ok && a.outage(err) {
			return sh, nil // everything after the store's head is in the spool
		}
		return 0, err
	}
	return max(h, sh), nil
}

// readRange reads history from the store and the spool together; while the
// store is down it returns what the spool has, which the caller checks for
// completeness (it must start at after+1).
func (a *storeActor) readRange(conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	ctx, cancel := a.writeContext()
	defer cancel()
	msgs, err := a.st.Range(ctx, conv, after, limit)
	if a.sp == nil || a.sp.Len() == 0 || (err != nil && !a.outage(err)) {
		return msgs, err
	}
	extra, serr := a.sp.Range(a.ctx, conv, after, limit)
	if serr != nil {
		return nil, serr
	}
	if err != nil && len(extra) == 0 {
		return nil, err
	}
	all := append(msgs, extra...)
	slices.SortFunc(all, func(x, y charla.Message) int { return cmp.Compare(x.Seq, y.Seq) })
	all = slices.CompactFunc(all, func(x, y charla.Message) bool { return x.Seq == y.Seq })
	return all[:min(len(all), limit)], nil
}

func (a *storeActor) writeContext() (context.Context, context.CancelFunc) {
	if a.sp == nil {
		return context.WithCancel(a.ctx) // no spool to fall back to: wait for the store
	}
	return context.WithTimeout(a.ctx, a.cfg.StoreWriteTimeout)
}

// outage reports whether err means "the store is down" (spool, trip the
// breaker) rather than "the store refuses this".
func (a *storeActor) outage(err error) bool {
	if err == nil || a.ctx.Err() != nil {
		return false
	}
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

func (a *storeActor) maybeDrained(ctx actor.Context) {
	if a.writing || len(a.queue) > 0 || len(a.drainers) == 0 {
		return
	}
	for _, d := range a.drainers {
		ctx.Send(d, drained{})
	}
	a.drainers = nil
}

func (a *storeActor) publish() {
	a.stats.StoreBreaker.Store(int32(a.breaker.state))
	a.stats.BreakerTrips.Store(a.breaker.trips)
	if a.sp != nil {
		a.stats.SpoolDepth.Store(int64(a.sp.Len()))
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

// split cuts a write's results into each request's reply.
func split(batch []appendReq, results []store.AppendResult, errs []error, err error) []appendDone {
	out := make([]appendDone, len(batch))
	off := 0
	for i, r := range batch {
		n := len(r.msgs)
		switch {
		case err != nil:
			out[i].err = err
		default:
			out[i].results = results[off : off+n]
			if errs != nil {
				out[i].errs = errs[off : off+n]
			}
		}
		off += n
	}
	return out
}
