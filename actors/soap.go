package actors

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/rs/zerolog"

	"charla"
	"charla/ops"
	"charla/soapbridge"
	"charla/wire"
)

// soapActor is the engine's one path to the inventory service (DESIGN.md,
// "soapbridge"): every GetStock and ReserveItem the engine sends is one this
// actor decided to send. It owns the policy soapbridge.Client leaves out:
//
//   - the cache: a fresh item is answered at once; after a ReserveItem the
//     SKU is invalidated; when the service fails or the breaker is open,
//     the last known value is answered with stale:true and its age;
//   - coalescing: identical requests (one SKU's GetStock, one reservation
//     id's ReserveItem) share one call, running or waiting;
//   - the bulkhead: at most SOAPConfig.MaxInflight calls in flight and at
//     most SOAPConfig.Queue waiting; past that a request is refused at once
//     (unavailable, retry_after_ms), never left to wait unboundedly;
//   - per-operation deadlines, and retries with exponential backoff and full
//     jitter for retryable failures only (soapbridge.Retryable);
//   - a CLOSED/OPEN/HALF_OPEN breaker, as actor state: while open nothing is
//     sent; after the cool-down one probe decides (the actor sends one by
//     itself, so that recovery is noticed without traffic);
//   - jobs: a request the service does not answer within
//     SOAPConfig.AnswerBudget becomes a job whose progress reaches the user's
//     connections as job frames (jobs.go).
//
// Calls run on goroutines tracked by io and report back as callDone. Each
// incarnation of the actor has its own generation: messages of an earlier
// one (its calls' results, its timers) are ignored, its calls are cancelled
// when it stops, and the unfinished jobs it leaves in the jobTable are run
// again by the next one.
//
// Other actors use it through two messages: inventoryReq (a client's request,
// answered to its conn and the user's connections) and stockReq (an actor's,
// answered with one stockReply to replyTo). Both get the same cache,
// coalescing, bulkhead, retries and breaker.
type soapActor struct {
	d       *deps
	cfg     SOAPConfig
	bridge  *soapBridge
	log     zerolog.Logger
	self    *actor.PID
	gateway *actor.PID
	gen     uint64

	life   context.Context // this incarnation's: cancelled when it stops
	cancel context.CancelFunc
	io     sync.WaitGroup

	breaker  breaker
	calls    map[string]*soapCall // by key: running, queued or backing off
	queue    []*soapCall          // waiting for a slot, oldest first
	inflight int
	probe    *time.Timer
	lastSKU  string // a SKU the service knows, for the breaker's own probes
}

// soapBridge is what outlives an incarnation of the soap actor: the client,
// the engine's one cache, the job table, and the generation counter.
type soapBridge struct {
	client *soapbridge.Client // nil: the bridge is off
	cache  *soapbridge.Cache  // nil: the bridge is off
	jobs   *jobTable
	gens   atomic.Uint64
}

// SOAPStats are the bridge's counters (Stats.SOAP).
type SOAPStats struct {
	Breaker   atomic.Int32 // a BreakerState
	Trips     atomic.Int64 // times the breaker opened
	Calls     atomic.Int64 // calls sent to the service (attempts, retries included)
	Retries   atomic.Int64 // attempts after the first
	Timeouts  atomic.Int64 // attempts that ran out of time
	Failures  atomic.Int64 // attempts that failed, timeouts included
	Coalesced atomic.Int64 // requests that joined a call already running or waiting
	Rejected  atomic.Int64 // requests refused at once: queue full, breaker open without fallback, too many jobs
	Stale     atomic.Int64 // answers served from a last known value
	Inflight  atomic.Int64 // calls in flight now
	Queued    atomic.Int64 // calls waiting for a slot now
	Jobs      atomic.Int64 // requests that became jobs (their answer took longer than the budget)
}

// inventoryReq is a client's inventory (op wire.TypeInventory) or reserve
// (op wire.TypeReserve, with qty and resv) request. The answer goes to conn
// as soapFrame: an inventory, reserved or error frame when it comes within
// the answer budget; otherwise a job frame, and the job's later frames, to
// every connection of user (through the gateway).
type inventoryReq struct {
	op   string
	sku  string
	qty  int
	resv string
	user charla.Sender
	conn *actor.PID
	ref  string
}

// stockReq is how an actor of the engine asks for an item (the chatbot
// will): answered with one stockReply to replyTo, whenever that is (the
// caller bounds its own wait; a refusal comes at once).
type stockReq struct {
	sku     string
	replyTo *actor.PID
	// qty > 0 makes it a ReserveItem of qty under the idempotency key resv
	// (answered with the reservation).
	qty  int
	resv string
}

// searchReq is how an actor asks for the products whose SKU or name
// contains query (SearchProducts, its first page): answered with one
// searchReply to replyTo, like stockReq. Identical queries share one call;
// results are not cached (they carry no warehouse, and the items a lookup
// then asks for are).
type searchReq struct {
	query   string
	replyTo *actor.PID
}

// searchReply answers searchReq: the first page of matches, or err.
type searchReply struct {
	query string
	page  soapbridge.Page
	err   *charla.Error
}

// opSearch is a searchReq's job op (jobs of other ops are frame types).
const opSearch = "search"

// stockReply answers stockReq: the item (Stale when it is a last known value
// age old), or err.
type stockReply struct {
	sku   string
	item  soapbridge.Item
	stale bool
	age   time.Duration
	resv  soapbridge.Reservation // a reserve's
	err   *charla.Error
}

// soapFrame is an encoded frame for a client; code is set for error frames,
// for the error counters.
type soapFrame struct {
	frame []byte
	code  charla.Code
}

// Internal messages of the soap actor; gen is the incarnation that sent
// them.
type (
	callDone struct {
		gen  uint64
		key  string
		item soapbridge.Item
		resv soapbridge.Reservation
		page soapbridge.Page
		err  error
		took time.Duration // the attempt, for the SOAP latency histogram
	}
	callRetry struct {
		gen uint64
		key string
	}
	budgetUp     struct{ job string }
	breakerProbe struct{ gen uint64 }
)

// soapCall is one request to the service, however many jobs wait on it.
type soapCall struct {
	key     string
	op      string          // soapbridge.OpGetStock, OpReserveItem or OpSearchProducts
	sku     string          // the query of a search
	page    soapbridge.Page // a search's result, once it succeeded
	qty     int
	resv    string
	attempt int // attempts started
	state   callState
	jobs    []string
	probe   bool // the breaker's own probe: nobody waits on it
}

type callState uint8

const (
	callQueued callState = iota
	callRunning
	callBackoff
)

func newSOAPActor(d *deps, bridge *soapBridge) *soapActor {
	return &soapActor{d: d, cfg: d.cfg.SOAP, bridge: bridge, log: d.log.With().Str("component", "soap").Logger()}
}

func (a *soapActor) Receive(ctx actor.Context) {
	if h := a.d.hooks; h != nil && h.soapReceive != nil {
		h.soapReceive(typeName(ctx.Message()))
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.start(ctx)
	case inventoryReq:
		a.onRequest(ctx, m, nil)
	case stockReq:
		op := wire.TypeInventory
		if m.qty > 0 {
			op = wire.TypeReserve
		}
		a.onRequest(ctx, inventoryReq{op: op, sku: m.sku, qty: m.qty, resv: m.resv}, m.replyTo)
	case searchReq:
		a.onRequest(ctx, inventoryReq{op: opSearch, sku: m.query}, m.replyTo)
	case callDone:
		if m.gen == a.gen {
			a.onDone(ctx, m)
		}
	case callRetry:
		if c := a.calls[m.key]; m.gen == a.gen && c != nil && c.state == callBackoff {
			a.run(ctx, c, true)
		}
	case budgetUp:
		a.announce(ctx, m.job)
	case breakerProbe:
		if m.gen == a.gen {
			a.onProbe(ctx)
		}
	case *actor.Restarting, *actor.Stopping:
		a.stop()
	}
}

// start sets up an incarnation and resumes the jobs an earlier one left.
func (a *soapActor) start(ctx actor.Context) {
	a.self = ctx.Self()
	a.gateway = ctx.ActorSystem().NewLocalPID(gatewayName)
	a.gen = a.bridge.gens.Add(1)
	a.life, a.cancel = context.WithCancel(context.Background())
	a.breaker = newBreaker(a.cfg.Breaker)
	a.calls = map[string]*soapCall{}
	a.queue = nil
	a.inflight = 0
	a.publish()
	if a.bridge.client == nil {
		return
	}
	left := a.bridge.jobs.unfinished()
	if len(left) > 0 {
		a.log.Warn().Int("jobs", len(left)).Uint64("incarnation", a.gen).Msg("soap actor restarted; resuming its unfinished jobs")
	}
	for _, j := range left {
		// An accepted job is never dropped, so the queue bound does not
		// apply here: it bounds what is accepted, and these were.
		c, ok := a.calls[j.key()]
		if !ok {
			c = a.newCall(j.op, j.sku, j.qty, j.resv)
			a.calls[c.key] = c
			a.enqueue(c)
		}
		c.jobs = append(c.jobs, j.id)
		if !j.announced && j.conn != nil {
			sendAfter(a.d.root, a.cfg.AnswerBudget, a.self, budgetUp{job: j.id})
		}
	}
	a.pump(ctx)
}

// stop cancels this incarnation's calls and waits for their goroutines,
// which return at once once cancelled.
func (a *soapActor) stop() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.probe != nil {
		a.probe.Stop()
	}
	a.io.Wait()
	a.d.stats.SOAP.Inflight.Store(0)
	a.d.stats.SOAP.Queued.Store(0)
}

// onRequest answers from the cache, refuses, or accepts the request as a
// job and attaches it to a call.
func (a *soapActor) onRequest(ctx actor.Context, r inventoryReq, replyTo *actor.PID) {
	st := &a.d.stats.SOAP
	if a.bridge.client == nil {
		a.answerNow(ctx, r, replyTo, charla.Errorf(charla.CodeUnavailable, "the inventory service is not configured on this server"), 0)
		return
	}
	if r.op == wire.TypeInventory {
		if item, fresh, age, ok := a.bridge.cache.Get(r.sku); ok && fresh {
			a.answerItem(ctx, r, replyTo, item, false, age)
			return
		}
	}
	j := job{op: r.op, sku: r.sku, qty: r.qty, resv: r.resv, user: r.user, conn: r.conn, ref: r.ref, replyTo: replyTo}
	c, joining := a.calls[j.key()]
	now := time.Now()
	switch {
	case joining:
	case !a.canTry(now):
		st.Rejected.Add(1)
		a.fallback(ctx, r, replyTo, charla.Errorf(charla.CodeUnavailable, "the inventory service is failing; its circuit breaker is open"), a.retryAfter(now))
		return
	case a.inflight >= a.cfg.MaxInflight && len(a.queue) >= a.cfg.Queue:
		st.Rejected.Add(1)
		a.fallback(ctx, r, replyTo, charla.Errorf(charla.CodeUnavailable, "the inventory service is busy (%d calls in flight, %d waiting); try again shortly", a.inflight, len(a.queue)), a.cfg.timeout(opOf(r.op)))
		return
	}
	id, ok := a.bridge.jobs.add(j)
	if !ok {
		st.Rejected.Add(1)
		a.answerNow(ctx, r, replyTo, charla.Errorf(charla.CodeUnavailable, "too many inventory requests are waiting; try again shortly"), a.cfg.timeout(opOf(r.op)))
		return
	}
	if r.op == wire.TypeInventory {
		a.lastSKU = r.sku
	}
	if joining {
		st.Coalesced.Add(1)
	} else {
		c = a.newCall(opOf(r.op), r.sku, r.qty, r.resv)
		a.calls[c.key] = c
		a.enqueue(c)
	}
	c.jobs = append(c.jobs, id)
	if c.state != callQueued {
		state, attempt := wire.JobRunning, c.attempt
		if c.state == callBackoff {
			state, attempt = wire.JobRetrying, c.attempt+1
		}
		a.setJob(ctx, id, func(j *job) { j.state, j.attempt = state, attempt })
	}
	if r.conn != nil {
		sendAfter(a.d.root, a.cfg.AnswerBudget, a.self, budgetUp{job: id})
	}
	a.pump(ctx)
}

func (a *soapActor) newCall(op, sku string, qty int, resv string) *soapCall {
	c := &soapCall{op: op, sku: sku, qty: qty, resv: resv}
	c.key = callKey(op, sku, resv)
	return c
}

func (a *soapActor) enqueue(c *soapCall) {
	c.state = callQueued
	a.queue = append(a.queue, c)
	a.d.stats.SOAP.Queued.Store(int64(len(a.queue)))
}

// pump starts queued calls while slots are free.
func (a *soapActor) pump(ctx actor.Context) {
	for a.inflight < a.cfg.MaxInflight && len(a.queue) > 0 {
		c := a.queue[0]
		a.queue[0] = nil
		a.queue = a.queue[1:]
		a.run(ctx, c, false)
	}
	a.d.stats.SOAP.Queued.Store(int64(len(a.queue)))
}

// run makes the next attempt of c, if the breaker allows it; a retry that
// finds no free slot waits at the head of the queue (it was accepted long
// ago).
func (a *soapActor) run(ctx actor.Context, c *soapCall, retry bool) {
	now := time.Now()
	if retry && a.inflight >= a.cfg.MaxInflight {
		c.state = callQueued
		a.queue = append([]*soapCall{c}, a.queue...)
		a.d.stats.SOAP.Queued.Store(int64(len(a.queue)))
		return
	}
	if !a.breaker.Allow(now) {
		a.publish()
		a.finish(ctx, c, nil, charla.Errorf(charla.CodeUnavailable, "the inventory service is failing; its circuit breaker is open"), a.retryAfter(now), soapbridge.Item{}, soapbridge.Reservation{})
		return
	}
	a.publish()
	c.attempt++
	c.state = callRunning
	a.inflight++
	st := &a.d.stats.SOAP
	st.Inflight.Store(int64(a.inflight))
	st.Calls.Add(1)
	if c.attempt > 1 {
		st.Retries.Add(1)
	} else {
		for _, id := range c.jobs {
			a.setJob(ctx, id, func(j *job) { j.state, j.attempt = wire.JobRunning, 1 })
		}
	}
	client, gen, self, root := a.bridge.client, a.gen, a.self, a.d.root
	op, sku, qty, resv, key := c.op, c.sku, c.qty, c.resv, c.key
	callCtx, cancel := context.WithTimeout(a.life, a.cfg.timeout(op))
	a.io.Add(1)
	go func() {
		defer a.io.Done()
		defer cancel()
		m := callDone{gen: gen, key: key}
		start := time.Now()
		switch op {
		case soapbridge.OpReserveItem:
			m.resv, m.err = client.ReserveItem(callCtx, sku, qty, resv)
		case soapbridge.OpSearchProducts:
			m.page, m.err = client.SearchProducts(callCtx, sku, 1)
		default:
			m.item, m.err = client.GetStock(callCtx, sku)
		}
		m.took = time.Since(start)
		root.Send(self, m)
	}()
}

// onDone settles one attempt: success, a retry after a backoff, or failure.
func (a *soapActor) onDone(ctx actor.Context, m callDone) {
	c := a.calls[m.key]
	if c == nil || c.state != callRunning {
		return
	}
	a.inflight--
	st := &a.d.stats.SOAP
	st.Inflight.Store(int64(a.inflight))
	a.d.stats.hist.SOAPCall.Observe(m.took.Seconds())
	defer a.pump(ctx)
	now := time.Now()
	if m.err == nil {
		a.breaker.Success()
		a.publish()
		switch c.op {
		case soapbridge.OpGetStock:
			a.bridge.cache.Put(m.item)
		case soapbridge.OpReserveItem:
			// The stock changed: the next lookup must ask the service.
			a.bridge.cache.Invalidate(c.sku)
		case soapbridge.OpSearchProducts:
			c.page = m.page
		}
		a.finish(ctx, c, nil, nil, 0, m.item, m.resv)
		return
	}
	var se *soapbridge.Error
	timedOut := errors.As(m.err, &se) && se.Timeout
	st.Failures.Add(1)
	if timedOut {
		st.Timeouts.Add(1)
	}
	switch soapbridge.KindOf(m.err) {
	case soapbridge.KindClientFault:
		// The service answered, and sensibly: it is up.
		a.breaker.Success()
	case soapbridge.KindCanceled:
		// Our own shutdown or restart: says nothing about the service.
	default:
		trips := a.breaker.trips
		a.breaker.Failure(now)
		if a.breaker.trips != trips {
			a.onTrip(ctx, now)
		}
	}
	a.publish()
	a.log.Debug().Err(m.err).Str("op", c.op).Str("sku", c.sku).Int("attempt", c.attempt).Msg("inventory call failed")
	if soapbridge.Retryable(m.err) && c.attempt <= a.cfg.Retries && a.canTry(now) {
		c.state = callBackoff
		next := c.attempt + 1
		for _, id := range c.jobs {
			a.setJob(ctx, id, func(j *job) { j.state, j.attempt = wire.JobRetrying, next })
		}
		sendAfter(a.d.root, a.backoff(c.attempt), a.self, callRetry{gen: a.gen, key: c.key})
		return
	}
	retryAfter := time.Duration(0)
	if a.breaker.state == BreakerOpen {
		retryAfter = a.retryAfter(now)
	}
	a.finish(ctx, c, m.err, problemOf(m.err, c.attempt), retryAfter, soapbridge.Item{}, soapbridge.Reservation{})
}

// onTrip runs when the breaker opens: what waits for a slot would only be
// refused by it, so it is answered now (from the last known values where
// there are some), and a probe is scheduled for the end of the cool-down.
func (a *soapActor) onTrip(ctx actor.Context, now time.Time) {
	a.d.stats.SOAP.Trips.Add(1)
	a.log.Warn().Dur("cooldown", a.cfg.Breaker.Cooldown).Msg("inventory service failing; breaker open")
	queued := a.queue
	a.queue = nil
	a.d.stats.SOAP.Queued.Store(0)
	for _, c := range queued {
		a.finish(ctx, c, nil, charla.Errorf(charla.CodeUnavailable, "the inventory service is failing; its circuit breaker is open"), a.retryAfter(now), soapbridge.Item{}, soapbridge.Reservation{})
	}
	if a.probe != nil {
		a.probe.Stop()
	}
	a.probe = sendAfter(a.d.root, a.cfg.Breaker.Cooldown, a.self, breakerProbe{gen: a.gen})
}

// onProbe sends the breaker's half-open probe, unless a request already
// took it or the breaker closed meanwhile.
func (a *soapActor) onProbe(ctx actor.Context) {
	a.probe = nil
	if a.breaker.state == BreakerClosed || a.lastSKU == "" {
		return
	}
	if _, busy := a.calls[probeKey]; busy || a.inflight >= a.cfg.MaxInflight {
		// No slot now: look again a little later rather than leave the
		// breaker open until a request happens by.
		a.probe = sendAfter(a.d.root, min(a.cfg.Breaker.Cooldown, time.Second), a.self, breakerProbe{gen: a.gen})
		return
	}
	if !a.canTry(time.Now()) {
		return // a request's call is the probe
	}
	c := &soapCall{key: probeKey, op: soapbridge.OpGetStock, sku: a.lastSKU, probe: true}
	a.calls[probeKey] = c
	a.run(ctx, c, false)
}

// probeKey is the breaker's own probe call, never coalesced with requests.
const probeKey = "probe"

// finish ends c: every job waiting on it is done (with the item or the
// reservation) or failed (with problem), and told to whoever asked. A
// failed lookup is answered with the SKU's last known value when there is
// one.
func (a *soapActor) finish(ctx actor.Context, c *soapCall, cause error, problem *charla.Error, retryAfter time.Duration, item soapbridge.Item, resv soapbridge.Reservation) {
	delete(a.calls, c.key)
	if cause != nil {
		a.log.Info().Err(cause).Str("op", c.op).Str("sku", c.sku).Int("attempts", c.attempt).Int("jobs", len(c.jobs)).Msg("inventory call gave up")
	}
	var stale bool
	var age time.Duration
	if problem != nil && c.op == soapbridge.OpGetStock && soapbridge.KindOf(cause) != soapbridge.KindClientFault {
		if last, _, lastAge, ok := a.bridge.cache.Get(c.sku); ok {
			item, stale, age, problem = last, true, lastAge, nil
		}
	}
	for _, id := range c.jobs {
		j, ok := a.setJob(ctx, id, func(j *job) {
			if problem != nil {
				j.state, j.err = wire.JobFailed, &wire.JobError{Code: problem.Code, Message: problem.Message, RetryAfter: retryAfter.Milliseconds()}
				return
			}
			j.state = wire.JobDone
			// The result is the answer frame the request would have had,
			// without its type and ref.
			switch j.op {
			case opSearch:
				j.result = wire.Encode(c.page)
			case wire.TypeReserve:
				j.result = wire.Encode(struct {
					SKU         string                 `json:"sku"`
					Reservation soapbridge.Reservation `json:"reservation"`
				}{c.sku, resv})
			default:
				j.result = wire.Encode(struct {
					SKU   string          `json:"sku"`
					Item  soapbridge.Item `json:"item"`
					Stale bool            `json:"stale"`
					AgeMS int64           `json:"age_ms"`
				}{c.sku, item, stale, age.Milliseconds()})
			}
		})
		if !ok || j.announced {
			continue // setJob told the user's connections
		}
		if j.conn == nil && j.replyTo == nil {
			continue // refused at the budget (refuseJob): nobody waits
		}
		r := inventoryReq{op: j.op, sku: j.sku, conn: j.conn, ref: j.ref}
		switch {
		case problem != nil:
			a.answerNow(ctx, r, j.replyTo, problem, retryAfter)
		case j.op == opSearch:
			ctx.Send(j.replyTo, searchReply{query: c.sku, page: c.page})
		case j.op == wire.TypeReserve && j.replyTo != nil:
			ctx.Send(j.replyTo, stockReply{sku: c.sku, resv: resv})
		case j.op == wire.TypeReserve:
			ctx.Send(j.conn, soapFrame{frame: wire.Encode(wire.Reserved{Type: wire.TypeReserved, Ref: j.ref, SKU: c.sku, Reservation: resv})})
		default:
			a.answerItem(ctx, r, j.replyTo, item, stale, age)
		}
	}
}

// setJob updates a job in the table and, once the client knows the job,
// tells every connection of its user.
func (a *soapActor) setJob(ctx actor.Context, id string, f func(*job)) (job, bool) {
	before, _ := a.bridge.jobs.get(id)
	j, ok := a.bridge.jobs.update(id, f)
	if ok && j.announced && (j.state != before.state || j.attempt != before.attempt) {
		ctx.Send(a.gateway, userFrame{user: j.user.ID, frame: j.frame("")})
	}
	return j, ok
}

// announce turns a request whose answer is late into a visible job: the
// user's connections get its job frame (queued, with the request's ref) and
// its state since, if it moved on.
func (a *soapActor) announce(ctx actor.Context, id string) {
	if a.d.flags != nil && !a.d.flags.Enabled(ops.FlagSOAPJobs) {
		a.refuseJob(ctx, id)
		return
	}
	var fresh bool
	j, ok := a.bridge.jobs.update(id, func(j *job) {
		fresh = !j.announced
		j.announced = true
	})
	if !ok || !fresh || j.conn == nil {
		return
	}
	a.d.stats.SOAP.Jobs.Add(1)
	queued := j
	queued.state, queued.attempt = wire.JobQueued, 0
	ctx.Send(a.gateway, userFrame{user: j.user.ID, frame: queued.frame(j.ref)})
	if j.state != wire.JobQueued {
		ctx.Send(a.gateway, userFrame{user: j.user.ID, frame: j.frame("")})
	}
}

// refuseJob answers a late request unavailable instead of making it a job
// (feature flag soap_jobs off) and detaches it from its client: the call
// still runs and fills the cache, but its outcome is told to nobody.
func (a *soapActor) refuseJob(ctx actor.Context, id string) {
	j, ok := a.bridge.jobs.get(id)
	if !ok || j.announced || j.conn == nil {
		return
	}
	a.answerNow(ctx, inventoryReq{op: j.op, sku: j.sku, conn: j.conn, ref: j.ref}, nil,
		charla.Errorf(charla.CodeUnavailable, "the inventory service did not answer within %s and slow lookups are turned off (feature flag %s); retry later", a.cfg.AnswerBudget, ops.FlagSOAPJobs), a.cfg.AnswerBudget)
	a.bridge.jobs.update(id, func(j *job) { j.conn = nil })
}

// fallback answers a lookup that cannot be tried now with its last known
// value, or refuses it.
func (a *soapActor) fallback(ctx actor.Context, r inventoryReq, replyTo *actor.PID, problem *charla.Error, retryAfter time.Duration) {
	if r.op == wire.TypeInventory {
		if item, _, age, ok := a.bridge.cache.Get(r.sku); ok {
			a.answerItem(ctx, r, replyTo, item, true, age)
			return
		}
	}
	a.answerNow(ctx, r, replyTo, problem, retryAfter)
}

func (a *soapActor) answerItem(ctx actor.Context, r inventoryReq, replyTo *actor.PID, item soapbridge.Item, stale bool, age time.Duration) {
	if stale {
		a.d.stats.SOAP.Stale.Add(1)
	}
	if replyTo != nil {
		ctx.Send(replyTo, stockReply{sku: r.sku, item: item, stale: stale, age: age})
		return
	}
	ctx.Send(r.conn, soapFrame{frame: wire.Encode(wire.Inventory{Type: wire.TypeInventory, Ref: r.ref, SKU: r.sku, Item: item, Stale: stale, AgeMS: age.Milliseconds()})})
}

func (a *soapActor) answerNow(ctx actor.Context, r inventoryReq, replyTo *actor.PID, problem *charla.Error, retryAfter time.Duration) {
	switch {
	case replyTo != nil && r.op == opSearch:
		ctx.Send(replyTo, searchReply{query: r.sku, err: problem})
		return
	case replyTo != nil:
		ctx.Send(replyTo, stockReply{sku: r.sku, err: problem})
		return
	}
	if r.conn == nil {
		return
	}
	e := wire.ErrorFrame(r.ref, problem)
	e.RetryAfter = retryAfter.Milliseconds()
	ctx.Send(r.conn, soapFrame{frame: wire.Encode(e), code: problem.Code})
}

// canTry reports whether the breaker would let a call through now, without
// taking the half-open probe.
func (a *soapActor) canTry(now time.Time) bool {
	switch a.breaker.state {
	case BreakerOpen:
		return !now.Before(a.breaker.RetryAt())
	case BreakerHalfOpen:
		return !a.breaker.probing
	default:
		return true
	}
}

// retryAfter is when asking again may be worth it: the end of the breaker's
// cool-down, at least a second from now.
func (a *soapActor) retryAfter(now time.Time) time.Duration {
	return max(a.breaker.RetryAt().Sub(now), time.Second)
}

// backoff is the wait before the attempt after attempt n (fullJitter).
func (a *soapActor) backoff(n int) time.Duration {
	return fullJitter(a.cfg.BackoffBase, a.cfg.BackoffMax, n)
}

func (a *soapActor) publish() { a.d.stats.SOAP.Breaker.Store(int32(a.breaker.state)) }

// key is the call a job needs: requests with the same key share one call.
func (j job) key() string { return callKey(opOf(j.op), j.sku, j.resv) }

func callKey(op, sku, resv string) string {
	switch op {
	case soapbridge.OpReserveItem:
		return "reserve/" + resv
	case soapbridge.OpSearchProducts:
		return "search/" + strings.ToLower(sku)
	}
	return "stock/" + sku
}

// opOf maps a request's frame type to its operation.
func opOf(frameType string) string {
	switch frameType {
	case wire.TypeReserve:
		return soapbridge.OpReserveItem
	case opSearch:
		return soapbridge.OpSearchProducts
	}
	return soapbridge.OpGetStock
}

// problemOf is what a client is told when a call failed for good: the
// protocol code, and a message that says which way it failed.
func problemOf(err error, attempts int) *charla.Error {
	var se *soapbridge.Error
	if !errors.As(err, &se) {
		return charla.Errorf(charla.CodeInternal, "internal error")
	}
	tries := "after 1 attempt"
	if attempts > 1 {
		tries = fmt.Sprintf("after %d attempts", attempts)
	}
	switch {
	case errors.Is(err, soapbridge.ErrUnknownSKU):
		return charla.Errorf(charla.CodeNotFound, "the inventory service knows no such SKU")
	case errors.Is(err, soapbridge.ErrInsufficientStock):
		return charla.Errorf(charla.CodeBadRequest, "not enough stock: %s", faultText(se))
	case se.Kind == soapbridge.KindClientFault:
		return charla.Errorf(charla.CodeBadRequest, "the inventory service refused the request: %s", faultText(se))
	case se.Timeout:
		return charla.Errorf(charla.CodeUnavailable, "the inventory service did not answer in time (%s)", tries)
	case se.Kind == soapbridge.KindServerFault:
		return charla.Errorf(charla.CodeUnavailable, "the inventory service reported a SOAP fault (%s): %s", tries, faultText(se))
	case se.Kind == soapbridge.KindMalformed:
		return charla.Errorf(charla.CodeUnavailable, "the inventory service sent a malformed answer (not retried)")
	case se.Kind == soapbridge.KindTooLarge:
		return charla.Errorf(charla.CodeUnavailable, "the inventory service's answer was too large (not retried)")
	case se.Kind == soapbridge.KindCanceled:
		return charla.Errorf(charla.CodeUnavailable, "the inventory request was cancelled by a restart; ask again")
	default:
		if se.StatusCode != 0 {
			return charla.Errorf(charla.CodeUnavailable, "the inventory service failed with HTTP %d (%s)", se.StatusCode, tries)
		}
		return charla.Errorf(charla.CodeUnavailable, "the inventory service is unreachable (%s)", tries)
	}
}

// faultText is the fault's own words, for people.
func faultText(se *soapbridge.Error) string {
	if se.Fault == nil {
		return se.Err.Error()
	}
	if se.Fault.Message != "" {
		return se.Fault.Message
	}
	return se.Fault.String
}

// newSOAPBridge builds what the soap actor's incarnations share: with a
// service configured, its client and the engine's one inventory cache.
func newSOAPBridge(cfg SOAPConfig) (*soapBridge, error) {
	b := &soapBridge{jobs: newJobTable(cfg.JobRetention, cfg.MaxJobs)}
	if !cfg.Enabled() {
		return b, nil
	}
	client, err := soapbridge.New(cfg.URL, soapbridge.Options{})
	if err != nil {
		return nil, fmt.Errorf("soap-url: %w", err)
	}
	cache, err := soapbridge.NewCache(soapbridge.CacheOptions{TTL: cfg.CacheTTL, Size: cfg.CacheSize, LastKnownSize: 5 * cfg.CacheSize})
	if err != nil {
		return nil, fmt.Errorf("inventory cache: %w", err)
	}
	b.client, b.cache = client, cache
	return b, nil
}

// InventoryCache returns the engine's inventory cache, for its counters
// (hits, misses, stale answers); nil when the bridge is off.
func (s *System) InventoryCache() *soapbridge.Cache { return s.deps.bridge.cache }

// SOAPState is the inventory bridge's state for /readyz: "off" when no
// service is configured, else its breaker's state (closed, open, half_open).
func (s *System) SOAPState() string {
	if s.deps.bridge.client == nil {
		return "off"
	}
	return BreakerState(s.deps.stats.SOAP.Breaker.Load()).String()
}

// Jobs returns how many inventory jobs are unfinished and how many (finished
// ones included) the engine holds.
func (s *System) Jobs() (active, total int) { return s.deps.bridge.jobs.counts() }
