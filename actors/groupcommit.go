package actors

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/store"
)

// groupCommit is the store actor's write lane. Appends queue up while a
// write is in flight and leave together as the next one: many
// conversations, one transaction, one fsync, many acks. Its queue is actor
// state; write runs on an I/O goroutine and only reads what it is given.
type groupCommit struct {
	st       store.Store
	outage   *outageSpool // nil: no outage protection
	maxBatch int
	timeout  time.Duration // of one store call; 0 waits for the store
	// delay is the commit delay under load (see linger); 0 turns it off.
	delay time.Duration
	// shardOf is a cluster node's placement (nil on a single node): a
	// batch fenced on some shards is stored again without their messages.
	shardOf func(charla.ConvID) int
	life    context.Context
	log     zerolog.Logger

	queue   []appendReq
	queued  int // messages in queue
	writing bool
	// started is when the last write started.
	started time.Time
	// busy: messages arrived at busyPerDelay or more per delay over the
	// last full rate window (from windowStart, windowMsgs so far).
	busy        bool
	windowStart time.Time
	windowMsgs  int
}

// busyPerDelay is the arrival rate, in messages per commit delay, from
// which the lane counts as loaded and lingers (see linger): with the 1 ms
// default, 4,000 msg/s. Below it, writes carry one or two messages and a
// delay would only add latency.
const busyPerDelay = 4

// rateWindow is how long arrivals are counted before busy is decided anew:
// long enough to smooth a burst, short enough to follow the load.
const rateWindow = 100 * time.Millisecond

// push queues an append that arrived at now.
func (g *groupCommit) push(now time.Time, r appendReq) {
	g.queue = append(g.queue, r)
	g.queued += len(r.msgs)
	g.windowMsgs += len(r.msgs)
	if elapsed := now.Sub(g.windowStart); elapsed >= rateWindow {
		g.busy = g.delay > 0 && float64(g.windowMsgs)*float64(g.delay) >= busyPerDelay*float64(elapsed)
		g.windowStart, g.windowMsgs = now, 0
	}
}

// linger reports until when the next write should wait, and whether it
// should. Every write costs an fsync whatever its size (on this project's
// machine about 70 µs of the core's time and 130 µs of the disk's), and one
// write is in flight at a time, so at 10,000 msg/s a core spends a fifth of
// itself syncing batches of three or four. While messages arrive at
// busyPerDelay or more per delay, a write starts no sooner than delay after
// the one before (PostgreSQL's commit_delay, applied only under load),
// unless a full batch is already waiting: fewer, larger fsyncs, the same
// durability. At lower rates every write starts at once, so the delay costs
// nothing where latency matters most.
func (g *groupCommit) linger(now time.Time) (time.Time, bool) {
	if !g.busy || g.queued >= g.maxBatch {
		return time.Time{}, false
	}
	at := g.started.Add(g.delay)
	return at, now.Before(at)
}

// storeWritten is the write lane's report.
type storeWritten struct {
	batch   []appendReq
	cursors map[cursorKey]charla.Seq // not written: kept for the next time
	reply   []appendDone
	dbErr   error // outcome of the store attempt, when one was made
	tried   bool
	spooled int
	msgs    int           // messages written (the group commit's size)
	took    time.Duration // the write's duration, store and spool together
	// err is why the batch (or part of it) was not stored anywhere: the
	// store's refusal when there is no spool, or the spool's own failure.
	err error
}

// cut takes the next batch off the queue (at most maxBatch messages, but
// never splitting a request) and stamps it with the engine's time: the same
// TS then holds in the ack, in the spool and in the store, whichever path
// the batch takes.
func (g *groupCommit) cut(now time.Time) ([]appendReq, []charla.Message) {
	var batch []appendReq
	n := 0
	for len(g.queue) > 0 && (n == 0 || n+len(g.queue[0].msgs) <= g.maxBatch) {
		batch = append(batch, g.queue[0])
		n += len(g.queue[0].msgs)
		g.queue[0] = appendReq{}
		g.queue = g.queue[1:]
	}
	g.queued -= n
	if n > 0 {
		g.started = now
	}
	ts := now.UTC().Truncate(time.Microsecond)
	msgs := make([]charla.Message, 0, n)
	for _, r := range batch {
		for i := range r.msgs {
			r.msgs[i].TS = ts
		}
		msgs = append(msgs, r.msgs...)
	}
	return batch, msgs
}

// write stores one batch: in the store when useStore, in the spool when the
// store is bypassed or down. Cursors ride along when the store is used.
func (g *groupCommit) write(batch []appendReq, msgs []charla.Message, cursors map[cursorKey]charla.Seq, useStore bool) (d storeWritten) {
	start := time.Now()
	d = storeWritten{batch: batch, msgs: len(msgs)}
	// d is the named result, so that this lands in what the caller gets
	// (charla_group_commit_seconds read 0 while it set a local copy).
	defer func() { d.took = time.Since(start) }()
	var results []store.AppendResult
	var errs []error
	var err error
	if len(msgs) > 0 {
		if useStore {
			d.tried = true
			results, err = g.append(msgs)
			d.dbErr = err
		}
		if g.outage != nil && (!useStore || isOutage(g.life, err)) {
			results, errs, d.spooled, err = g.outage.appendSpool(g.life, batch, msgs)
		}
	}
	if err != nil && errors.Is(err, store.ErrInvalid) && len(msgs) > 1 {
		// One message the store refuses must not fail everyone's: store them
		// one by one and refuse only that one.
		results, errs, err = g.appendEach(msgs)
	}
	var fenced *store.FencedError
	if g.shardOf != nil && errors.As(err, &fenced) && len(msgs) > 1 {
		results, errs, err = g.appendUnfenced(msgs, fenced)
	}
	d.err = err
	if g.outage != nil && useStore && err == nil && !isOutage(g.life, d.dbErr) {
		// Acked by the store: remember them in the spool's ack index in this
		// same cycle, before the acks leave, so that a resend during a later
		// outage is still found (see outageSpool.recordAcks).
		g.outage.recordAcks(g.life, msgs, results, errs)
	}
	d.reply = split(batch, results, errs, err)
	if useStore && !isOutage(g.life, d.dbErr) {
		for k, seq := range cursors {
			if cerr := g.st.SetReadCursor(g.life, k.conv, k.user, seq); cerr != nil {
				g.log.Warn().Err(cerr).Str("conv", string(k.conv)).Msg("read cursor not stored")
			}
		}
	} else {
		d.cursors = cursors
	}
	return d
}

func (g *groupCommit) append(msgs []charla.Message) ([]store.AppendResult, error) {
	ctx, cancel := callContext(g.life, g.timeout)
	defer cancel()
	return g.st.Append(ctx, msgs)
}

func (g *groupCommit) appendEach(msgs []charla.Message) ([]store.AppendResult, []error, error) {
	results := make([]store.AppendResult, len(msgs))
	errs := make([]error, len(msgs))
	for i := range msgs {
		r, err := g.append(msgs[i : i+1])
		if err != nil {
			if isOutage(g.life, err) {
				return nil, nil, err
			}
			errs[i] = err
			continue
		}
		results[i] = r[0]
	}
	return results, errs, nil
}

// appendUnfenced stores again, in one call, the messages of a batch that
// the store fenced on some of its shards, all but those shards': during a
// fail-over, the conversations this node still owns must not fail with the
// one it lost. The fenced ones get the fence's error (the conversation
// drops their shard and the senders resend to the new owner).
func (g *groupCommit) appendUnfenced(msgs []charla.Message, fe *store.FencedError) ([]store.AppendResult, []error, error) {
	results := make([]store.AppendResult, len(msgs))
	errs := make([]error, len(msgs))
	var rest []charla.Message
	var at []int
	for i, m := range msgs {
		if slices.Contains(fe.Shards, g.shardOf(m.Conv)) {
			errs[i] = fe
			continue
		}
		rest = append(rest, m)
		at = append(at, i)
	}
	if len(rest) > 0 {
		r, err := g.append(rest)
		if err != nil {
			return nil, nil, err // fenced again, or down: the batch fails whole, as before
		}
		for j, i := range at {
			results[i] = r[j]
		}
	}
	return results, errs, nil
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

// callContext bounds one store call: with a spool to fall back to, a call
// waits timeout at most (past it a write is spooled); without one (timeout
// 0) it waits for the store.
func callContext(life context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	if timeout <= 0 {
		return context.WithCancel(life)
	}
	return context.WithTimeout(life, timeout)
}

// isOutage reports whether err means "the store is down" (spool, trip the
// breaker) rather than "the store refuses this". Nothing is an outage once
// the tree is shutting down (life is done): calls cut short then are not the
// store's fault.
func isOutage(life context.Context, err error) bool {
	if err == nil || life.Err() != nil {
		return false
	}
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}
