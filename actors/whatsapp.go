package actors

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"charla"
	"charla/store"
	"charla/whatsapp"
	"charla/wire"
)

// GraphSender is what the whatsapp actor needs of a Graph API client
// (whatsapp.Client): send one message, mark a customer's message read.
type GraphSender interface {
	// Send posts payload to /{phoneNumberID}/messages and returns the wamid.
	// A refusal of the API is a *whatsapp.GraphError; any other error means
	// no answer came, and the message may have gone out.
	Send(ctx context.Context, phoneNumberID string, payload any) (string, error)
	MarkRead(ctx context.Context, phoneNumberID, wamid string, typing bool) error
}

// outboxStore is what the whatsapp actor needs of the store (store/outbox.go).
type outboxStore interface {
	OpenOutbox(ctx context.Context) ([]store.OutboxEntry, error)
	SaveOutbox(ctx context.Context, e store.OutboxEntry) (store.DeliveryStatus, error)
	ApplyWhatsAppStatus(ctx context.Context, n store.DeliveryStatus) (store.DeliveryStatus, bool, error)
	LastInbound(ctx context.Context, conv charla.ConvID) (time.Time, error)
	Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error)
}

// WhatsAppStats are the outbound channel's counters (Stats.WhatsApp).
type WhatsAppStats struct {
	Breaker   atomic.Int32 // a BreakerState
	Trips     atomic.Int64 // times the breaker opened
	Calls     atomic.Int64 // Graph API send calls started
	Sent      atomic.Int64 // messages the Graph API accepted
	Throttled atomic.Int64 // calls answered with a throttling code
	Failed    atomic.Int64 // messages failed for good
	Unknown   atomic.Int64 // calls whose outcome is unknown (reconciled by statuses)
	Open      atomic.Int64 // outbox entries not final now
}

// whatsappActor sends the outbox (store/outbox.go) to the Graph API, at
// most once per message:
//
//   - before each call it records the attempt (state sending) in the store,
//     so that a call the engine does not live to see answered is known as
//     one whose outcome is unknown, and is never made again blindly;
//   - one queue per conversation (a customer and a business number), sent
//     in seq order, one message in flight each;
//   - a token bucket per business number (WhatsAppConfig.Rate) and one per
//     recipient (the pair limit), with backoff (full jitter) on throttling
//     codes and 5xx; a throttled number or recipient pauses as a whole;
//   - a breaker around the API as actor state;
//   - the 24-hour window: a free-form message to a customer who has not
//     written for WhatsAppConfig.Window fails at once with 131047, unsent;
//   - statuses from the webhook (applyStatusesReq) are stored forward-only
//     and reach the conversation's subscribers as wa_status frames; one that
//     names (biz_opaque_callback_data) a message whose outcome is unknown
//     settles it as sent.
//
// State that must survive is in the store; at start (and after a restart)
// the actor reads the open entries back. Each incarnation has its own
// generation: answers of an earlier one are ignored.
type whatsappActor struct {
	d     *deps
	cfg   WhatsAppConfig
	st    outboxStore
	graph GraphSender
	log   zerolog.Logger
	self  *actor.PID
	gen   uint64
	gens  *atomic.Uint64
	// conversations is looked up by name: deps.conversations is set after
	// the dependency actors start.
	conversations *actor.PID

	life   context.Context
	cancel context.CancelFunc
	io     sync.WaitGroup

	breaker breaker
	numbers map[string]*waNumber
	queues  map[charla.ConvID]*waQueue
	items   map[outKey]*outItem // every entry this incarnation holds
	done    map[outKey]time.Time
	// shown is the highest status each recent message's frames reached.
	// The send's own record (accepted) and the platform's statuses are
	// stored by two I/O goroutines, so a frame can be ready after a later
	// one went out: it is dropped rather than shown going back.
	shown    map[outKey]shownStatus
	inflight int
	loaded   bool
	wake     *time.Timer
	wakeAt   time.Time
	rescan   *time.Timer

	statusQueue []applyStatusesReq
	applying    bool
	// marked is how far each conversation was marked read (this
	// incarnation): an agent's read frames cost one call per new message.
	marked map[charla.ConvID]charla.Seq
	// recording counts the records (SaveOutbox) in flight; drainWaiters
	// wait for them and the calls to end (waDrain).
	recording    int
	draining     bool
	drainWaiters []*actor.PID
}

type outKey struct {
	conv charla.ConvID
	seq  charla.Seq
}

// outItem is one entry the actor holds. busy: a step of it runs on an I/O
// goroutine. unconfirmed: its last attempt's outcome is unknown; it waits
// out of its queue for a status naming it, until e.NextAttempt.
type outItem struct {
	e           store.OutboxEntry
	waID, phone string
	payload     json.RawMessage
	kind        outboundKind
	busy        bool
	unconfirmed bool
	// refused is the answer a retry being recorded answers: it is logged
	// once the retry is durable, so that the log never announces a retry a
	// crash then forgets.
	refused error
}

// waNumber is one business number's limits. bucket admits sends (in the
// actor, with Burst); pacer spaces the calls themselves (burst 1, waited on
// by the I/O goroutines just before the attempt is recorded), so that the
// varying time of the store's write does not bunch them at the platform.
type waNumber struct {
	bucket      *rate.Limiter
	pacer       *rate.Limiter
	pausedUntil time.Time
}

type waQueue struct {
	items       []*outItem // by seq
	pair        *rate.Limiter
	pausedUntil time.Time
}

// Messages of the whatsapp actor.
type (
	// outboxAdded carries entries the store actor has just committed.
	outboxAdded struct{ entries []store.OutboxEntry }
	// outboxRescan asks for the open entries to be read again (the spool
	// drained into the store).
	outboxRescan struct{}
	// applyStatusesReq stores statuses; answered with statusesApplied to
	// replyTo once they are durable.
	applyStatusesReq struct {
		statuses []inStatus
		replyTo  *actor.PID
	}
	statusesApplied struct{ err error }
	// markReadReq: an agent read WhatsApp conversation conv up to seq.
	markReadReq struct {
		conv charla.ConvID
		seq  charla.Seq
	}

	waLoaded struct {
		gen     uint64
		entries []store.OutboxEntry
		err     error
		rescan  bool
	}
	// waDrain asks the actor to start no call and answer (waDrained) once
	// the calls in flight and their records are done: a graceful shutdown
	// leaves no attempt of unknown outcome behind.
	waDrain   struct{}
	waDrained struct{}
	waWake    struct{ gen uint64 }
	waAttempt struct {
		gen          uint64
		key          outKey
		windowClosed bool
		notAttempted error // the attempt could not start (the store failed)
		wamid        string
		err          error
		at           time.Time
	}
	waRecordAgain struct {
		gen uint64
		key outKey
	}
	waRecorded struct {
		gen    uint64
		key    outKey
		e      store.OutboxEntry
		linked store.DeliveryStatus
		err    error
	}
	waApplied struct {
		gen     uint64
		frames  []wire.WhatsAppStatus
		tried   []outKey // unconfirmed messages a status named
		settled []outKey // of those, the ones recorded as sent
	}
)

// inStatus is one status notification for the actor: the platform's
// status of a wamid and the callback data the send carried.
type inStatus struct {
	store.DeliveryStatus
	callback string
}

func newWhatsAppActor(d *deps, st outboxStore, graph GraphSender, gens *atomic.Uint64) *whatsappActor {
	return &whatsappActor{d: d, cfg: d.cfg.WhatsApp, st: st, graph: graph, gens: gens, log: d.log.With().Str("component", "whatsapp").Logger()}
}

func (a *whatsappActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case outboxAdded:
		a.merge(m.entries, false)
		a.pump(ctx)
	case outboxRescan:
		a.load(true)
	case waLoaded:
		if m.gen == a.gen {
			a.onLoaded(ctx, m)
		}
	case waWake:
		if m.gen == a.gen {
			a.wake, a.wakeAt = nil, time.Time{}
			a.pump(ctx)
		}
	case waAttempt:
		if m.gen == a.gen {
			a.onAttempt(ctx, m)
		}
	case waRecorded:
		if m.gen == a.gen {
			a.onRecorded(ctx, m)
		}
	case waRecordAgain:
		if it := a.items[m.key]; m.gen == a.gen && it != nil {
			a.record(it)
		}
	case applyStatusesReq:
		a.statusQueue = append(a.statusQueue, m)
		a.applyNext()
	case waApplied:
		if m.gen == a.gen {
			a.onApplied(ctx, m)
		}
	case markReadReq:
		a.markRead(m)
	case waDrain:
		a.draining = true
		a.drainWaiters = append(a.drainWaiters, ctx.Sender())
		a.answerDrained(ctx)
	case *actor.Restarting, *actor.Stopping:
		a.stop()
	}
}

func (a *whatsappActor) start(ctx actor.Context) {
	a.self = ctx.Self()
	a.conversations = ctx.ActorSystem().NewLocalPID("conversations")
	a.gen = a.gens.Add(1)
	a.life, a.cancel = context.WithCancel(context.Background())
	a.breaker = newBreaker(a.cfg.Breaker)
	a.numbers = map[string]*waNumber{}
	a.queues = map[charla.ConvID]*waQueue{}
	a.items = map[outKey]*outItem{}
	a.done = map[outKey]time.Time{}
	a.shown = map[outKey]shownStatus{}
	a.marked = map[charla.ConvID]charla.Seq{}
	a.publish()
	a.load(false)
}

// stop cancels this incarnation's calls and waits for their goroutines. A
// call cut short leaves its entry in state sending: the next incarnation
// reconciles it.
func (a *whatsappActor) stop() {
	if a.cancel != nil {
		a.cancel()
	}
	for _, t := range []*time.Timer{a.wake, a.rescan} {
		if t != nil {
			t.Stop()
		}
	}
	a.io.Wait()
	for _, r := range a.statusQueue {
		a.d.root.Send(r.replyTo, statusesApplied{err: errors.New("whatsapp actor restarting")})
	}
	a.statusQueue = nil
}

func (a *whatsappActor) goIO(f func()) {
	a.io.Add(1)
	go func() {
		defer a.io.Done()
		f()
	}()
}

// load reads the open entries; a failure is retried after a backoff.
func (a *whatsappActor) load(rescan bool) {
	gen, self, root, st := a.gen, a.self, a.d.root, a.st
	a.goIO(func() {
		ctx, cancel := context.WithTimeout(a.life, a.cfg.CallTimeout)
		defer cancel()
		entries, err := st.OpenOutbox(ctx)
		root.Send(self, waLoaded{gen: gen, entries: entries, err: err, rescan: rescan})
	})
}

func (a *whatsappActor) onLoaded(ctx actor.Context, m waLoaded) {
	if m.err != nil {
		if a.life.Err() == nil {
			a.log.Warn().Err(m.err).Msg("whatsapp outbox unreadable; trying again")
			sendAfter(a.d.root, fullJitter(a.cfg.BackoffBase, a.cfg.BackoffMax, 2), a.self, outboxRescan{})
		}
		return
	}
	if !m.rescan || !a.loaded {
		unconfirmed := 0
		for _, e := range m.entries {
			if e.State == store.OutboxSending {
				unconfirmed++
			}
		}
		a.log.Info().Int("open", len(m.entries)).Int("outcome_unknown", unconfirmed).Msg("whatsapp outbox loaded")
	}
	a.loaded = true
	a.merge(m.entries, true)
	// Finished entries are remembered only as long as a read begun before
	// they finished can still come back.
	for k, t := range a.done {
		if time.Since(t) > 2*a.cfg.RescanInterval {
			delete(a.done, k)
		}
	}
	for k, s := range a.shown {
		if time.Since(s.at) > 2*a.cfg.RescanInterval {
			delete(a.shown, k)
		}
	}
	if a.rescan != nil {
		a.rescan.Stop()
	}
	a.rescan = sendAfter(a.d.root, a.cfg.RescanInterval, a.self, outboxRescan{})
	a.pump(ctx)
}

// merge takes entries the actor does not hold yet. Those in state sending
// come from an earlier process or incarnation whose call was cut short:
// they are unconfirmed, never queued again. fromStore marks a read of the
// store, which may predate the end of an entry finished since (done).
func (a *whatsappActor) merge(entries []store.OutboxEntry, fromStore bool) {
	for _, e := range entries {
		k := outKey{e.Conv, e.Seq}
		if _, held := a.items[k]; held {
			continue
		}
		if _, finished := a.done[k]; finished && fromStore {
			continue
		}
		waID, phone, ok := e.Conv.WhatsApp()
		if !ok {
			continue // the stores only enqueue WhatsApp conversations
		}
		if !a.owns(e.Conv) {
			continue
		}
		it := &outItem{e: e, waID: waID, phone: phone}
		a.items[k] = it
		if e.State == store.OutboxSending {
			it.unconfirmed = true
			a.d.stats.WhatsApp.Unknown.Add(1)
			continue
		}
		q := a.queue(e.Conv)
		i, _ := slices.BinarySearchFunc(q.items, e.Seq, func(x *outItem, s charla.Seq) int { return cmp.Compare(x.e.Seq, s) })
		q.items = slices.Insert(q.items, i, it)
	}
	a.d.stats.WhatsApp.Open.Store(int64(len(a.items)))
}

func (a *whatsappActor) queue(conv charla.ConvID) *waQueue {
	q := a.queues[conv]
	if q == nil {
		q = &waQueue{pair: rate.NewLimiter(rate.Every(a.cfg.PairInterval), a.cfg.PairBurst)}
		a.queues[conv] = q
	}
	return q
}

func (a *whatsappActor) number(phone string) *waNumber {
	n := a.numbers[phone]
	if n == nil {
		n = &waNumber{bucket: rate.NewLimiter(rate.Limit(a.cfg.Rate), a.cfg.Burst), pacer: rate.NewLimiter(rate.Limit(a.cfg.Rate), 1)}
		a.numbers[phone] = n
	}
	return n
}

// answerDrained answers the drain waiters once nothing is in flight.
func (a *whatsappActor) answerDrained(ctx actor.Context) {
	if a.inflight > 0 || a.recording > 0 {
		return
	}
	for _, w := range a.drainWaiters {
		ctx.Send(w, waDrained{})
	}
	a.drainWaiters = nil
}

// pump starts every head of queue that may go now, and arms one timer for
// the earliest that may go later.
func (a *whatsappActor) pump(ctx actor.Context) {
	if a.draining {
		a.answerDrained(ctx)
		return
	}
	if !a.loaded {
		return
	}
	now := time.Now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for k, it := range a.items {
		if it.unconfirmed && !it.busy {
			if now.Before(it.e.NextAttempt) {
				later(it.e.NextAttempt)
				continue
			}
			a.giveUpUnconfirmed(k, it)
		}
	}
	for conv, q := range a.queues {
		if len(q.items) == 0 {
			// Forgotten only once its pair bucket is full again: a fresh
			// one would grant a new burst to a customer just written to.
			if q.pair.TokensAt(now) >= float64(a.cfg.PairBurst) {
				delete(a.queues, conv)
			}
			continue
		}
		it := q.items[0]
		if it.busy {
			continue
		}
		if it.payload == nil && it.kind.graphType == "" {
			if !a.prepare(it) {
				continue
			}
		}
		n := a.number(it.phone)
		due := it.e.NextAttempt
		for _, t := range []time.Time{q.pausedUntil, n.pausedUntil} {
			if t.After(due) {
				due = t
			}
		}
		if due.After(now) {
			later(due)
			continue
		}
		if a.inflight >= a.cfg.MaxInflight {
			continue // a call's answer pumps again
		}
		if a.breaker.state == BreakerOpen && now.Before(a.breaker.RetryAt()) {
			later(a.breaker.RetryAt())
			continue
		}
		// Both buckets or neither: a token taken from one while the other
		// refuses would be lost.
		pr, nr := q.pair.ReserveN(now, 1), n.bucket.ReserveN(now, 1)
		if wait := max(pr.DelayFrom(now), nr.DelayFrom(now)); wait > 0 {
			nr.CancelAt(now)
			pr.CancelAt(now)
			later(now.Add(wait))
			continue
		}
		if !a.breaker.Allow(now) {
			nr.CancelAt(now)
			pr.CancelAt(now)
			later(a.breaker.RetryAt())
			continue
		}
		a.attempt(it)
	}
	a.publish()
	if !next.IsZero() && (a.wake == nil || next.Before(a.wakeAt)) {
		if a.wake != nil {
			a.wake.Stop()
		}
		a.wakeAt = next
		a.wake = sendAfter(a.d.root, max(time.Until(next), time.Millisecond), a.self, waWake{gen: a.gen})
	}
}

// prepare builds it's Graph API payload once; a body that cannot be sent
// fails the message at once (false).
func (a *whatsappActor) prepare(it *outItem) bool {
	payload, kind, err := graphPayload(it.e, it.waID)
	if err != nil {
		a.fail(it, 0, "not sendable to WhatsApp: "+err.Error())
		return false
	}
	it.payload, it.kind = payload, kind
	return true
}

// attempt runs one send of it: the window check for a free-form message,
// the attempt recorded, the call.
func (a *whatsappActor) attempt(it *outItem) {
	it.busy = true
	a.inflight++
	a.d.stats.WhatsApp.Calls.Add(1)
	it0, e := it.e, it.e
	e.State, e.Attempts = store.OutboxSending, e.Attempts+1
	e.NextAttempt = time.Now().Add(a.cfg.ReconcileWindow).UTC().Truncate(time.Microsecond)
	gen, self, root, st, graph, cfg := a.gen, a.self, a.d.root, a.st, a.graph, a.cfg
	phone, payload, freeForm, pacer := it.phone, it.payload, it.kind.freeForm, a.number(it.phone).pacer
	a.goIO(func() {
		res := waAttempt{gen: gen, key: outKey{e.Conv, e.Seq}}
		defer func() { res.at = time.Now(); root.Send(self, res) }()
		ctx, cancel := context.WithTimeout(a.life, cfg.CallTimeout)
		defer cancel()
		if freeForm {
			last, err := windowStart(ctx, st, e.Conv)
			if err != nil {
				res.notAttempted = fmt.Errorf("read the 24-hour window: %w", err)
				return
			}
			if time.Since(last) > cfg.Window {
				res.windowClosed = true
				return
			}
		}
		if _, err := st.SaveOutbox(ctx, e); err != nil {
			res.notAttempted = fmt.Errorf("record the attempt: %w", err)
			return
		}
		// Paced after the write, whose time varies, so that calls leave
		// evenly spaced. A crash while waiting here leaves an attempt
		// recorded and not made: it fails as unknown (never resent), and the
		// admission bucket keeps such waiters to a handful.
		if err := pacer.Wait(ctx); err != nil {
			res.notAttempted = fmt.Errorf("pace the call: %w", err)
			revert, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.CallTimeout)
			defer cancel()
			if _, err := st.SaveOutbox(revert, it0); err != nil {
				res.notAttempted = fmt.Errorf("%w; the attempt stays recorded: %w", res.notAttempted, err)
			}
			return
		}
		res.wamid, res.err = graph.Send(ctx, phone, payload)
	})
}

// statusReader is the store's side of WhatsAppStatuses.
type statusReader interface {
	OutboxOf(ctx context.Context, conv charla.ConvID) ([]store.OutboxEntry, error)
}

// WhatsAppStatuses returns the latest wa_status of each outgoing message of
// conv that has one, in seq order: what a client missed while it was not
// subscribed (the frames are live only). Statuses are stored before their
// frames go out, so this is never behind a frame already seen. Empty for a
// store without an outbox.
func (s *System) WhatsAppStatuses(ctx context.Context, conv charla.ConvID) ([]wire.WhatsAppStatus, error) {
	out := []wire.WhatsAppStatus{}
	if s.statuses == nil {
		return out, nil
	}
	es, err := s.statuses.OutboxOf(ctx, conv)
	if err != nil {
		s.deps.log.Warn().Err(err).Str("conv", string(conv)).Msg("whatsapp statuses unreadable")
		return nil, charla.Errorf(charla.CodeUnavailable, "the delivery statuses of %s are temporarily unavailable; retry", conv)
	}
	for _, e := range es {
		switch {
		case e.Delivery.Status != "":
			d := e.Delivery
			d.Conv, d.Seq, d.ClientMsgID = e.Conv, e.Seq, e.ClientMsgID
			out = append(out, statusFrame(d))
		case e.State == store.OutboxSent:
			out = append(out, frameOf(e, wire.WAStatusAccepted, e.TS))
		case e.State == store.OutboxFailed:
			out = append(out, frameOf(e, wire.WAStatusFailed, e.TS))
		}
	}
	return out, nil
}

// contactStore is the inbound side's record of customers (store.Contact),
// when the store keeps one.
type contactStore interface {
	Contact(ctx context.Context, waID string) (store.Contact, bool, error)
}

// windowStart is when conv's customer last wrote: the later of the
// platform's time on their contact (when it is for this business number: a
// contact is per customer, the window per customer and number) and the
// acceptance of their last message in the conversation (which a contact
// update not yet written cannot hold back).
func windowStart(ctx context.Context, st outboxStore, conv charla.ConvID) (time.Time, error) {
	last, err := st.LastInbound(ctx, conv)
	if err != nil {
		return time.Time{}, err
	}
	waID, phone, _ := conv.WhatsApp()
	if cs, ok := st.(contactStore); ok {
		c, found, err := cs.Contact(ctx, waID)
		if err != nil {
			return time.Time{}, err
		}
		if found && c.PhoneNumberID == phone && c.LastInboundAt.After(last) {
			last = c.LastInboundAt
		}
	}
	return last, nil
}

// onAttempt settles one attempt.
func (a *whatsappActor) onAttempt(ctx actor.Context, m waAttempt) {
	a.inflight--
	defer a.pump(ctx)
	it := a.items[m.key]
	if it == nil {
		return
	}
	it.busy = false
	st := &a.d.stats.WhatsApp
	switch {
	case m.windowClosed:
		a.breaker.Unused()
		a.fail(it, 131047, fmt.Sprintf("Re-engagement message: more than %s have passed since the customer last wrote; only a template message can be sent now", a.cfg.Window))
		return
	case m.notAttempted != nil:
		a.breaker.Unused()
		a.log.Warn().Err(m.notAttempted).Str("conv", string(m.key.conv)).Uint64("seq", uint64(m.key.seq)).Msg("whatsapp send not attempted; retrying")
		it.e.NextAttempt = m.at.Add(fullJitter(a.cfg.BackoffBase, a.cfg.BackoffMax, it.e.Attempts+1))
		return
	}
	it.e.Attempts++
	if m.err == nil {
		a.breaker.Success()
		st.Sent.Add(1)
		it.e.State, it.e.WAMID, it.e.ErrorCode, it.e.ErrorTitle = store.OutboxSent, m.wamid, 0, ""
		a.record(it)
		return
	}
	var ref *whatsapp.GraphError
	var dial *net.OpError
	switch {
	case errors.As(m.err, &ref) && ref.Throttled():
		a.breaker.Success() // the API answers: it is up, only busy
		st.Throttled.Add(1)
		a.retry(it, m, ref, true)
	case errors.As(m.err, &ref) && ref.Retryable():
		a.breaker.Failure(m.at)
		a.retry(it, m, ref, false)
	case errors.As(m.err, &ref):
		a.breaker.Success()
		a.fail(it, ref.Code, refusalTitle(ref))
	case errors.As(m.err, &dial) && dial.Op == "dial":
		// No connection was made: certainly not sent.
		a.breaker.Failure(m.at)
		a.retry(it, m, nil, false)
	default:
		// No answer to a request that may have reached the API: the
		// message may have gone out. Never sent again; a status naming it
		// settles it (reconcile), else it fails as unknown at NextAttempt.
		a.breaker.Failure(m.at)
		st.Unknown.Add(1)
		a.log.Warn().Err(m.err).Str("conv", string(m.key.conv)).Uint64("seq", uint64(m.key.seq)).
			Msg("whatsapp send outcome unknown; waiting for a status notification instead of resending")
		it.e.State = store.OutboxSending
		it.e.NextAttempt = m.at.Add(a.cfg.ReconcileWindow)
		it.unconfirmed = true
		a.unqueue(it)
	}
}

// retry schedules the next attempt of it after a backoff; a throttled
// number or recipient pauses as a whole. Past MaxAttempts it fails. ref is
// nil when no answer came.
func (a *whatsappActor) retry(it *outItem, m waAttempt, ref *whatsapp.GraphError, throttled bool) {
	if it.e.Attempts >= a.cfg.MaxAttempts {
		code, title := 0, m.err.Error()
		if ref != nil {
			code, title = ref.Code, refusalTitle(ref)
		}
		a.fail(it, code, fmt.Sprintf("gave up after %d attempts: %s", it.e.Attempts, title))
		return
	}
	at := m.at.Add(fullJitter(a.cfg.BackoffBase, a.cfg.BackoffMax, it.e.Attempts))
	it.e.State, it.e.NextAttempt = store.OutboxPending, at
	if throttled {
		if ref.Code == 131056 {
			a.queue(it.e.Conv).pausedUntil = at // the pair limit: this recipient only
		} else {
			a.number(it.phone).pausedUntil = at
		}
	}
	it.refused = m.err
	a.record(it)
}

// refusalTitle is what the agent reads of a refusal: the API's message and
// its most specific details.
func refusalTitle(e *whatsapp.GraphError) string {
	if e.Details != "" && e.Details != e.Message {
		return e.Message + ": " + e.Details
	}
	return e.Message
}

// fail ends it as failed with code and title.
func (a *whatsappActor) fail(it *outItem, code int, title string) {
	it.e.State, it.e.ErrorCode, it.e.ErrorTitle = store.OutboxFailed, code, title
	a.d.stats.WhatsApp.Failed.Add(1)
	a.record(it)
}

// giveUpUnconfirmed fails a message whose outcome stayed unknown past its
// reconciliation deadline.
func (a *whatsappActor) giveUpUnconfirmed(_ outKey, it *outItem) {
	it.unconfirmed = false
	a.fail(it, 0, fmt.Sprintf("outcome unknown: the engine lost the Graph API's answer and WhatsApp reported nothing about this message within %s; it was probably not delivered — send it again if needed", a.cfg.ReconcileWindow))
}

// record saves it as it is now; the item stays busy (its queue waits) until
// the store has it.
func (a *whatsappActor) record(it *outItem) {
	it.busy = true
	a.recording++
	e := it.e
	gen, self, root, st := a.gen, a.self, a.d.root, a.st
	a.goIO(func() {
		ctx, cancel := context.WithTimeout(a.life, a.cfg.CallTimeout)
		defer cancel()
		linked, err := st.SaveOutbox(ctx, e)
		root.Send(self, waRecorded{gen: gen, key: outKey{e.Conv, e.Seq}, e: e, linked: linked, err: err})
	})
}

func (a *whatsappActor) onRecorded(ctx actor.Context, m waRecorded) {
	a.recording--
	defer a.pump(ctx)
	it := a.items[m.key]
	if it == nil {
		return
	}
	if m.err != nil && a.draining {
		return // the next start reads the entry back as it was last stored
	}
	if m.err != nil {
		// The outcome is known but not stored: keep trying, and keep the
		// conversation's later messages waiting behind it.
		a.log.Warn().Err(m.err).Str("conv", string(m.key.conv)).Msg("whatsapp outbox not updated; retrying")
		sendAfter(a.d.root, fullJitter(a.cfg.BackoffBase, a.cfg.BackoffMax, 2), a.self, waRecordAgain{gen: a.gen, key: m.key})
		return
	}
	it.busy = false
	switch m.e.State {
	case store.OutboxPending:
		if it.refused != nil {
			a.log.Info().Err(it.refused).Str("conv", string(m.e.Conv)).Uint64("seq", uint64(m.e.Seq)).Int("attempt", m.e.Attempts).
				Time("retry_at", m.e.NextAttempt).Msg("whatsapp send refused for now; retry recorded")
			it.refused = nil
		}
	case store.OutboxSent:
		a.finish(it)
		a.notify(ctx, frameOf(m.e, wire.WAStatusAccepted, m.e.TS))
		if m.linked.Status != "" {
			a.notify(ctx, statusFrame(m.linked))
		}
	case store.OutboxFailed:
		a.finish(it)
		a.notify(ctx, frameOf(m.e, wire.WAStatusFailed, time.Now()))
	}
}

// finish forgets a final item.
func (a *whatsappActor) finish(it *outItem) {
	k := outKey{it.e.Conv, it.e.Seq}
	a.unqueue(it)
	delete(a.items, k)
	a.done[k] = time.Now()
	a.d.stats.WhatsApp.Open.Store(int64(len(a.items)))
}

func (a *whatsappActor) unqueue(it *outItem) {
	q := a.queues[it.e.Conv]
	if q == nil {
		return
	}
	q.items = slices.DeleteFunc(q.items, func(x *outItem) bool { return x == it })
}

func frameOf(e store.OutboxEntry, status string, ts time.Time) wire.WhatsAppStatus {
	f := wire.WhatsAppStatus{Type: wire.TypeWhatsAppStatus, Conv: e.Conv, Seq: e.Seq, ClientMsgID: e.ClientMsgID,
		Status: status, WAMID: e.WAMID, TS: ts.UTC()}
	if status == wire.WAStatusFailed {
		f.ErrorCode, f.ErrorTitle = e.ErrorCode, e.ErrorTitle
	}
	return f
}

func statusFrame(s store.DeliveryStatus) wire.WhatsAppStatus {
	f := wire.WhatsAppStatus{Type: wire.TypeWhatsAppStatus, Conv: s.Conv, Seq: s.Seq, ClientMsgID: s.ClientMsgID,
		Status: s.Status, WAMID: s.WAMID, TS: s.TS.UTC()}
	if s.Status == wire.WAStatusFailed {
		f.ErrorCode, f.ErrorTitle = s.ErrorCode, s.ErrorTitle
	}
	return f
}

// notify relays f to the conversation's subscribers (nobody when it is not
// loaded: its status is in the store).
func (a *whatsappActor) notify(ctx actor.Context, f wire.WhatsAppStatus) {
	k, rank := outKey{f.Conv, f.Seq}, store.StatusRank(f.Status)
	if s, ok := a.shown[k]; ok && rank <= s.rank {
		return
	}
	a.shown[k] = shownStatus{rank: rank, at: time.Now()}
	ctx.Send(a.conversations, statusNote{conv: f.Conv, frame: wire.Encode(f)})
}

// shownStatus is the rank of the last status frame of a message, and when.
type shownStatus struct {
	rank int
	at   time.Time
}

// applyNext stores the next batch of statuses, one batch at a time so that
// the frames of one message leave in the order they were stored.
func (a *whatsappActor) applyNext() {
	if a.applying || len(a.statusQueue) == 0 {
		return
	}
	r := a.statusQueue[0]
	a.statusQueue = a.statusQueue[1:]
	a.applying = true
	// Statuses that name an unconfirmed message settle it: it went out.
	settle := map[int]store.OutboxEntry{}
	for i, s := range r.statuses {
		if k, ok := parseCallback(s.callback); ok {
			if it := a.items[k]; it != nil && it.unconfirmed && !it.busy {
				e := it.e
				e.State, e.WAMID = store.OutboxSent, s.WAMID
				settle[i] = e
				it.busy = true
			}
		}
	}
	gen, self, root, st := a.gen, a.self, a.d.root, a.st
	a.goIO(func() {
		ctx, cancel := context.WithTimeout(a.life, a.cfg.CallTimeout)
		defer cancel()
		var res waApplied
		res.gen = gen
		var errs []error
		for i, s := range r.statuses {
			if e, ok := settle[i]; ok {
				res.tried = append(res.tried, outKey{e.Conv, e.Seq})
				if _, err := st.SaveOutbox(ctx, e); err != nil {
					errs = append(errs, err)
					continue
				}
				res.settled = append(res.settled, outKey{e.Conv, e.Seq})
				res.frames = append(res.frames, wire.WhatsAppStatus{Type: wire.TypeWhatsAppStatus, Conv: e.Conv, Seq: e.Seq,
					ClientMsgID: e.ClientMsgID, Status: wire.WAStatusAccepted, WAMID: e.WAMID, TS: s.TS.UTC()})
			}
			got, changed, err := st.ApplyWhatsAppStatus(ctx, s.DeliveryStatus)
			if err != nil {
				errs = append(errs, fmt.Errorf("status %s of %s: %w", s.Status, s.WAMID, err))
				continue
			}
			if changed && got.Conv != "" {
				res.frames = append(res.frames, statusFrame(got))
			}
		}
		root.Send(r.replyTo, statusesApplied{err: errors.Join(errs...)})
		root.Send(self, res)
	})
}

func (a *whatsappActor) onApplied(ctx actor.Context, m waApplied) {
	a.applying = false
	for _, k := range m.tried {
		if it := a.items[k]; it != nil {
			it.busy = false // a settle that failed leaves it unconfirmed
		}
	}
	for _, k := range m.settled {
		if it := a.items[k]; it != nil {
			it.unconfirmed = false
			a.finish(it)
			a.log.Info().Str("conv", string(k.conv)).Uint64("seq", uint64(k.seq)).Msg("whatsapp send of unknown outcome confirmed by a status notification")
		}
	}
	for _, f := range m.frames {
		a.notify(ctx, f)
	}
	a.applyNext()
	a.pump(ctx)
}

// parseCallback reverses callbackData.
func parseCallback(s string) (outKey, bool) {
	i := strings.LastIndexByte(s, '#')
	if i < 0 {
		return outKey{}, false
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return outKey{}, false
	}
	return outKey{charla.ConvID(s[:i]), charla.Seq(seq)}, true
}

// markReadScan is how many messages before the read seq are looked through
// for the customer's last one.
const markReadScan = 20

// markRead marks the customer's latest message up to m.seq read, with the
// typing indicator, best effort (a lost mark costs blue ticks, never a
// message). The message's wamid is its body's "wamid" (inbound bodies carry
// it); a conversation read again at or below a marked seq costs nothing.
func (a *whatsappActor) markRead(m markReadReq) {
	_, phone, ok := m.conv.WhatsApp()
	if !ok || m.seq <= a.marked[m.conv] || a.breaker.state == BreakerOpen {
		return
	}
	a.marked[m.conv] = m.seq
	graph, st := a.graph, a.st
	a.goIO(func() {
		ctx, cancel := context.WithTimeout(a.life, a.cfg.CallTimeout)
		defer cancel()
		after := m.seq - min(m.seq, markReadScan)
		msgs, err := st.Range(ctx, m.conv, after, int(m.seq-after))
		if err != nil {
			a.log.Debug().Err(err).Str("conv", string(m.conv)).Msg("whatsapp mark-as-read: history unreadable")
			return
		}
		for i := len(msgs) - 1; i >= 0; i-- {
			var b struct {
				WAMID string `json:"wamid"`
			}
			if msgs[i].Sender.Role != charla.RoleCustomer || json.Unmarshal(msgs[i].Body, &b) != nil || b.WAMID == "" {
				continue
			}
			if err := graph.MarkRead(ctx, phone, b.WAMID, true); err != nil {
				a.log.Debug().Err(err).Str("wamid", b.WAMID).Msg("whatsapp mark-as-read failed")
			}
			return
		}
	})
}

func (a *whatsappActor) publish() {
	st := &a.d.stats.WhatsApp
	st.Breaker.Store(int32(a.breaker.state))
	st.Trips.Store(a.breaker.trips)
}

// ApplyWhatsAppStatuses stores the platform's status notifications of
// outgoing messages, forward-only per message (a late sent never
// overwrites read; failed keeps its code and text), and relays each change
// to the conversation's subscribers as a wa_status frame. It returns once
// they are durable; an error names the statuses that are not (the caller
// may hand them again: applying a status twice changes nothing).
func (s *System) ApplyWhatsAppStatuses(ctx context.Context, statuses []whatsapp.Status) error {
	if len(statuses) == 0 {
		return nil
	}
	if s.deps.whatsapp == nil {
		// No Graph API client: this engine sent nothing these can be about
		// (an error would only make the webhook's event be retried).
		s.deps.log.Warn().Int("statuses", len(statuses)).Msg("whatsapp statuses ignored: no Graph API client is configured")
		return nil
	}
	in := make([]inStatus, len(statuses))
	for i, st := range statuses {
		d := store.DeliveryStatus{WAMID: st.MessageID, Status: string(st.Status), TS: st.Timestamp}
		if st.Error != nil {
			d.ErrorCode, d.ErrorTitle = st.Error.Code, st.Error.Title
			if st.Error.Details != "" && st.Error.Details != st.Error.Title {
				d.ErrorTitle += ": " + st.Error.Details
			}
		}
		in[i] = inStatus{DeliveryStatus: d, callback: st.BizOpaqueCallbackData}
	}
	res, err := s.request(ctx, s.deps.whatsapp, func(reply *actor.PID) any {
		return applyStatusesReq{statuses: in, replyTo: reply}
	})
	if err != nil {
		return err
	}
	return res.(statusesApplied).err
}

// owns reports whether this node sends conv's outbox: every conversation on
// a single node; in a cluster, those whose shard it holds, so that two nodes
// reading one outbox do not both send an entry. A shard that moves is picked
// up by its new owner's next rescan.
func (a *whatsappActor) owns(conv charla.ConvID) bool {
	c := a.d.cluster
	if c == nil {
		return true
	}
	_, mine := c.Placement.Epoch(c.Placement.Shard(conv))
	return mine
}
