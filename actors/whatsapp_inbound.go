package actors

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/media"
	"charla/store"
	"charla/whatsapp"
	"charla/wire"
)

// WebhookStore is what the inbound actor needs of the store (pebble and
// postgres implement it; store/whatsapp.go has the records).
type WebhookStore interface {
	// RecordWebhook stores ev durably, unless an event of its hash is
	// stored already (dup).
	RecordWebhook(ctx context.Context, ev store.WebhookEvent) (dup bool, err error)
	FinishWebhook(ctx context.Context, hash string, processedAt time.Time, problem string) error
	PendingWebhooks(ctx context.Context, limit int) ([]store.WebhookEvent, error)
	UpsertContacts(ctx context.Context, cs []store.Contact) error
}

// MediaSource fetches inbound media from the Graph API (whatsapp.Client).
type MediaSource interface {
	Media(ctx context.Context, mediaID string, limit int64) (whatsapp.MediaInfo, []byte, error)
}

// MediaSink keeps downloaded media (media.Store).
type MediaSink interface {
	Put(conv charla.ConvID, uploader, declared string, r io.Reader) (media.Meta, error)
}

// Inbound are the WhatsApp webhook's dependencies (Dependencies.Inbound);
// without them the webhook answers unavailable.
type Inbound struct {
	Store WebhookStore
	// Graph and Media, when both set, download inbound media into the
	// engine's media storage; otherwise media messages keep the platform's
	// media id and a placeholder.
	Graph MediaSource
	Media MediaSink
	// RecordTimeout bounds the durable record of a webhook, and so its
	// answer: past it the webhook answers 503 and the platform redelivers.
	// Default 2 s.
	RecordTimeout time.Duration
	// PendingPage is how many pending events are read from the store at a
	// time, and the most held in memory. Default 500.
	PendingPage int
}

// Defaults and bounds of the inbound actor.
const (
	defaultRecordTimeout = 2 * time.Second
	// maxRecording bounds the records in flight: past it a webhook is
	// refused at once (503) rather than queued behind a slow store.
	maxRecording = 256
	// inboundParallel bounds the conversations of one event posted at once.
	inboundParallel = 16
	// maxEventsRunning bounds the events processed at once (each in
	// conversations no other running event posts into).
	maxEventsRunning = 32
	// inboundRetryMax caps the backoff of an event that failed for a
	// reason that may pass (the store or a conversation unavailable).
	inboundRetryMax = 30 * time.Second
	// mediaAttempts is how often a retryable media download is tried.
	mediaAttempts = 3
	// defaultPendingPage is Inbound.PendingPage's default.
	defaultPendingPage = 500
)

// waNamespace derives client_msg_ids from wamids (UUIDv5): the same wamid
// is the same client_msg_id forever, so a redelivered message is a
// duplicate by the store's unique key, not by a check-then-insert.
var waNamespace = uuid.MustParse("6f0d9d1e-6c1a-4f53-9a37-0c5b1e9f3a11")

// ClientMsgIDOf returns the client_msg_id of the inbound message wamid.
func ClientMsgIDOf(wamid string) string { return uuid.NewSHA1(waNamespace, []byte(wamid)).String() }

// InboundStats are the webhook's counters.
type InboundStats struct {
	Received     atomic.Int64 // verified webhooks recorded
	Duplicates   atomic.Int64 // verified webhooks already recorded (redeliveries)
	Refused      atomic.Int64 // webhooks answered 503 (record failed, timed out or too many in flight)
	Processed    atomic.Int64 // events processed
	Problems     atomic.Int64 // events with a problem recorded (malformed, items skipped)
	Retries      atomic.Int64 // event processing attempts that failed and were retried
	Messages     atomic.Int64 // messages posted (first time)
	Redelivered  atomic.Int64 // messages that were duplicates of one already posted
	MediaStored  atomic.Int64 // media downloaded into media storage
	MediaRefused atomic.Int64 // media not stored (too large, type not allowed, download failed)
	Statuses     atomic.Int64 // status notifications parsed
	Pending      atomic.Int64 // events recorded and not yet processed
}

// inboundRuntime is what outlives an incarnation of the inbound actor.
type inboundRuntime struct {
	in       Inbound
	post     func(ctx context.Context, msg charla.Message) (wire.Ack, error)
	statuses func(ctx context.Context, statuses []whatsapp.Status) error // System.ApplyWhatsAppStatuses
	stats    InboundStats
}

// inboundActor turns verified webhooks into messages. A webhook is first
// recorded durably (webhookReq, answered once the record is in the store,
// which is when the HTTP answer may be 200); then the events are processed
// one at a time, in arrival order, on an I/O goroutine: parse, contacts
// upserted, each message posted (System.Post) into its conversation in
// platform-timestamp order — conversations of one event in parallel, one
// conversation's messages in sequence — its media downloaded first;
// statuses handed on; the event marked processed. An event whose
// processing fails for a reason that may pass stays pending and is tried
// again with backoff; at start (after a crash, or a restart of the actor)
// every pending event is read back and processed. Reprocessing is safe:
// every message's client_msg_id is derived from its wamid.
type inboundActor struct {
	d    *deps
	rt   *inboundRuntime
	log  zerolog.Logger
	self *actor.PID

	life   context.Context // this incarnation's: cancelled when it stops
	cancel context.CancelFunc
	io     sync.WaitGroup

	recording int
	queue     []*inEvent          // recorded, not yet processed, oldest first
	queued    map[string]*inEvent // by hash
	running   int                 // events of queue being processed
	loaded    bool                // the pending events of the store are in queue
	loading   bool                // a read of the pending events runs
	more      bool                // the store holds pending events beyond the queue
	// recordedWhileLoading holds the events recorded while a read of the
	// pending events ran: that read may have looked before they committed,
	// so it cannot be trusted to include them.
	recordedWhileLoading []store.WebhookEvent
	backoff              time.Duration
	retry                *time.Timer
}

// inEvent is a recorded event parsed, with the conversations it posts
// into: events that share none are processed at once, those that share one
// in arrival order.
type inEvent struct {
	ev      store.WebhookEvent
	batch   whatsapp.Batch
	perr    error // the body is not a payload
	convs   map[charla.ConvID]bool
	running bool
}

// Messages of the inbound actor.
type (
	// webhookReq records body; answered with webhookRecorded to replyTo.
	webhookReq struct {
		body    []byte
		replyTo *actor.PID
	}
	webhookRecorded struct {
		dup bool
		err *charla.Error
	}
	// inboundStop ends processing (Shutdown), answered once the I/O
	// goroutines are done.
	inboundStop struct{}

	recordDone struct {
		ev      store.WebhookEvent
		dup     bool
		err     error
		replyTo *actor.PID
	}
	pendingLoaded struct {
		events []store.WebhookEvent
		err    error
	}
	eventDone struct {
		hash string
		err  error // non-nil: not finished, try again later
	}
	inboundRetry struct{}
)

func newInboundActor(d *deps, rt *inboundRuntime) *inboundActor {
	return &inboundActor{d: d, rt: rt, log: d.log.With().Str("component", "whatsapp_inbound").Logger()}
}

func (a *inboundActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.self = ctx.Self()
		a.life, a.cancel = context.WithCancel(context.Background())
		a.queued = map[string]*inEvent{}
		a.loadPending()
	case *actor.Stopping, *actor.Restarting:
		a.stop()
	case webhookReq:
		a.record(ctx, m)
	case recordDone:
		a.recording--
		a.onRecorded(ctx, m)
	case pendingLoaded:
		a.onPending(m)
	case eventDone:
		a.onEventDone(m)
	case inboundRetry:
		a.retry = nil
		if !a.loaded {
			a.loadPending()
			return
		}
		a.next()
	case inboundStop:
		a.stop()
		ctx.Respond(struct{}{})
	}
}

func (a *inboundActor) stop() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.retry != nil {
		a.retry.Stop()
	}
	a.io.Wait()
}

// spawnIO runs fn on a goroutine of this incarnation and sends what it
// returns to the actor.
func (a *inboundActor) spawnIO(fn func(ctx context.Context) any) {
	a.io.Add(1)
	go func() {
		defer a.io.Done()
		a.d.root.Send(a.self, fn(a.life))
	}()
}

func (a *inboundActor) record(ctx actor.Context, m webhookReq) {
	if a.life.Err() != nil || a.recording >= maxRecording {
		a.rt.stats.Refused.Add(1)
		ctx.Send(m.replyTo, webhookRecorded{err: charla.Errorf(charla.CodeUnavailable, "too many webhooks being recorded; redeliver later")})
		return
	}
	a.recording++
	sum := sha256.Sum256(m.body)
	ev := store.WebhookEvent{Hash: hex.EncodeToString(sum[:]), Body: m.body, ReceivedAt: time.Now().UTC()}
	timeout := a.rt.in.RecordTimeout
	a.spawnIO(func(life context.Context) any {
		rctx, cancel := context.WithTimeout(life, timeout)
		defer cancel()
		dup, err := a.rt.in.Store.RecordWebhook(rctx, ev)
		return recordDone{ev: ev, dup: dup, err: err, replyTo: m.replyTo}
	})
}

func (a *inboundActor) onRecorded(ctx actor.Context, m recordDone) {
	switch {
	case m.err != nil:
		a.rt.stats.Refused.Add(1)
		a.log.Warn().Err(m.err).Str("hash", m.ev.Hash).Msg("webhook not recorded; answered 503 for the platform to redeliver")
		ctx.Send(m.replyTo, webhookRecorded{err: charla.Errorf(charla.CodeUnavailable, "the webhook could not be recorded; redeliver later")})
		// A record that timed out may still have committed: its
		// redelivery is then a duplicate, never queued by this path. Read
		// the pending events again so that it is processed all the same.
		if a.loaded {
			a.loadPending()
		}
		return
	case m.dup:
		a.rt.stats.Duplicates.Add(1)
	default:
		a.rt.stats.Received.Add(1)
		switch {
		case a.loading:
			a.recordedWhileLoading = append(a.recordedWhileLoading, m.ev)
		case a.loaded && !a.more && a.queued[m.ev.Hash] == nil:
			a.enqueue(m.ev)
		}
		// Otherwise the next read of the pending events starts after this
		// record committed, and includes it.
	}
	ctx.Send(m.replyTo, webhookRecorded{dup: m.dup})
	a.next()
}

func (a *inboundActor) enqueue(ev store.WebhookEvent) {
	q := &inEvent{ev: ev, convs: map[charla.ConvID]bool{}}
	q.batch, q.perr = whatsapp.Parse(ev.Body)
	whatsapp.SortInbound(q.batch.Messages)
	for _, in := range q.batch.Messages {
		q.convs[in.Conv()] = true
	}
	a.queue = append(a.queue, q)
	a.queued[ev.Hash] = q
	a.rt.stats.Pending.Store(int64(len(a.queue)))
}

// loadPending reads the oldest pending events, a page at most: the
// queue holds no more, so that a backlog costs the store, not memory. When
// a page is full (more), new records are left to later pages, which keeps
// the arrival order; the next page is read when the queue runs dry.
func (a *inboundActor) loadPending() {
	if a.loading {
		return
	}
	a.loading = true
	a.spawnIO(func(life context.Context) any {
		page, err := a.rt.in.Store.PendingWebhooks(life, a.rt.in.PendingPage)
		return pendingLoaded{events: page, err: err}
	})
}

func (a *inboundActor) onPending(m pendingLoaded) {
	a.loading = false
	// After a failed read, the next one starts after these committed.
	recorded := a.recordedWhileLoading
	a.recordedWhileLoading = nil
	if m.err != nil {
		if a.life.Err() == nil {
			a.log.Warn().Err(m.err).Msg("pending webhooks unreadable; trying again")
			a.scheduleRetry()
		}
		return
	}
	a.loaded = true
	a.more = len(m.events) >= a.rt.in.PendingPage
	for _, ev := range m.events {
		if a.queued[ev.Hash] == nil {
			a.enqueue(ev)
		}
	}
	if !a.more {
		// Newer than every pending event the read saw, so queued after them.
		for _, ev := range recorded {
			if a.queued[ev.Hash] == nil {
				a.enqueue(ev)
			}
		}
	}
	if len(m.events) > 0 {
		a.log.Info().Int("events", len(m.events)).Msg("processing webhooks left pending")
	}
	a.next()
}

// next starts every queued event it may, oldest first: one whose
// conversations no earlier unfinished event posts into (so that each
// conversation gets its messages in arrival order), up to
// maxEventsRunning at once.
func (a *inboundActor) next() {
	if !a.loaded || a.retry != nil || a.life.Err() != nil {
		return
	}
	blocked := map[charla.ConvID]bool{}
	for _, q := range a.queue {
		if a.running >= maxEventsRunning {
			return
		}
		free := !q.running
		for c := range q.convs {
			free = free && !blocked[c]
			blocked[c] = true
		}
		if !free {
			continue
		}
		q.running = true
		a.running++
		a.spawnIO(func(life context.Context) (res any) {
			defer func() {
				if p := recover(); p != nil {
					res = eventDone{hash: q.ev.Hash, err: a.poisoned(life, q, p)}
				}
			}()
			return eventDone{hash: q.ev.Hash, err: a.process(life, q)}
		})
	}
}

func (a *inboundActor) onEventDone(m eventDone) {
	q := a.queued[m.hash]
	if q == nil || !q.running {
		return
	}
	q.running = false
	a.running--
	if m.err != nil {
		if a.life.Err() != nil {
			return
		}
		a.rt.stats.Retries.Add(1)
		a.log.Warn().Err(m.err).Str("hash", m.hash).Msg("webhook processing failed; it stays pending and is tried again")
		if a.retry == nil {
			a.scheduleRetry()
		}
		return
	}
	a.backoff = 0
	delete(a.queued, m.hash)
	for i, e := range a.queue {
		if e == q {
			a.queue = append(a.queue[:i], a.queue[i+1:]...)
			break
		}
	}
	a.rt.stats.Pending.Store(int64(len(a.queue)))
	a.rt.stats.Processed.Add(1)
	if a.more && len(a.queue) == 0 {
		a.loadPending()
		return
	}
	a.next()
}

func (a *inboundActor) scheduleRetry() {
	a.backoff = min(max(2*a.backoff, 100*time.Millisecond), inboundRetryMax)
	a.retry = sendAfter(a.d.root, a.backoff, a.self, inboundRetry{})
}

// errRetry marks a processing failure that may pass: the event stays
// pending.
var errRetry = errors.New("inbound: retry")

// process does all of one event; an error means it is to be tried again
// (it stays pending); what cannot be used is recorded as the event's
// problem and the event finished.
func (a *inboundActor) process(ctx context.Context, q *inEvent) error {
	var problems []string
	ev, b := q.ev, q.batch
	if q.perr != nil {
		// Validly signed garbage: answered 200 already, kept with its
		// problem for someone to look at; redelivering it would not help.
		problems = append(problems, q.perr.Error())
	}
	problems = append(problems, b.Problems...)

	if len(b.Contacts) > 0 {
		cs := make([]store.Contact, len(b.Contacts))
		for i, c := range b.Contacts {
			cs[i] = store.Contact{WaID: c.WaID, Name: c.Name, PhoneNumberID: c.PhoneNumberID, LastInboundAt: c.LastInbound}
		}
		if err := a.rt.in.Store.UpsertContacts(ctx, cs); err != nil {
			return fmt.Errorf("%w: contacts: %w", errRetry, err)
		}
	}

	// One goroutine per conversation, in sequence within it.
	byConv := map[charla.ConvID][]whatsapp.Inbound{}
	var order []charla.ConvID
	for _, in := range b.Messages {
		c := in.Conv()
		if _, ok := byConv[c]; !ok {
			order = append(order, c)
		}
		byConv[c] = append(byConv[c], in)
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		retry    error
		panicked any
		slots    = make(chan struct{}, inboundParallel)
	)
	for _, c := range order {
		wg.Add(1)
		slots <- struct{}{}
		go func(msgs []whatsapp.Inbound) {
			defer func() { <-slots; wg.Done() }()
			// A panic here is the event's (see poisoned), raised again
			// below on the goroutine that recovers it.
			defer func() {
				if p := recover(); p != nil {
					mu.Lock()
					panicked = p
					mu.Unlock()
				}
			}()
			for _, in := range msgs {
				problem, err := a.postOne(ctx, in)
				mu.Lock()
				if problem != "" {
					problems = append(problems, problem)
				}
				if err != nil && retry == nil {
					retry = err
				}
				mu.Unlock()
				if err != nil {
					return // the rest of this conversation waits for the retry, in order
				}
			}
		}(byConv[c])
	}
	wg.Wait()
	if panicked != nil {
		panic(panicked)
	}
	if retry != nil {
		return retry
	}

	if len(b.Statuses) > 0 {
		a.rt.stats.Statuses.Add(int64(len(b.Statuses)))
		if err := a.rt.statuses(ctx, b.Statuses); err != nil {
			return fmt.Errorf("%w: statuses: %w", errRetry, err)
		}
	}

	problem := strings.Join(problems, "; ")
	if err := a.rt.in.Store.FinishWebhook(ctx, ev.Hash, time.Now().UTC(), problem); err != nil {
		return fmt.Errorf("%w: finish: %w", errRetry, err)
	}
	if problem != "" {
		a.rt.stats.Problems.Add(1)
		a.log.Warn().Str("hash", ev.Hash).Str("problem", problem).Msg("webhook processed with problems")
	}
	return nil
}

// poisoned finishes an event whose processing panicked, with the panic as
// its problem: tried again it would panic again, and hold back every later
// event of its conversations. Its messages posted so far stay; the rest
// are in the recorded body for someone to look at.
func (a *inboundActor) poisoned(ctx context.Context, q *inEvent, p any) error {
	a.log.Error().Str("hash", q.ev.Hash).Str("panic", fmt.Sprint(p)).Str("stack", string(debug.Stack())).Msg("webhook processing panicked; the event is set aside")
	a.rt.stats.Problems.Add(1)
	if err := a.rt.in.Store.FinishWebhook(ctx, q.ev.Hash, time.Now().UTC(), fmt.Sprintf("internal error while processing: %v", p)); err != nil {
		return fmt.Errorf("%w: finish a poisoned event: %w", errRetry, err)
	}
	return nil
}

// postOne posts one inbound message. A non-nil error is one that may pass
// (the message is posted again with the event); a problem is one that will
// not, recorded with the event.
func (a *inboundActor) postOne(ctx context.Context, in whatsapp.Inbound) (problem string, err error) {
	conv := in.Conv()
	fields := in.Message.Body()
	fields["wamid"] = in.Message.ID
	fields["wa_timestamp"] = in.Time.Unix()
	if md := in.Message.MediaObject(); md != nil {
		a.attachMedia(ctx, conv, in.WaID, md, fields)
	}
	body, err := json.Marshal(fields)
	if err != nil {
		return fmt.Sprintf("%s: body: %v", in.Message.ID, err), nil
	}
	if max := a.d.cfg.MaxBodyBytes; len(body) > max {
		// Too large to store as it came (a long list of contact cards):
		// the message is still shown, as what it is, never dropped.
		problem = fmt.Sprintf("%s: body of %d bytes over max-body-bytes (%d), stored as a placeholder", in.Message.ID, len(body), max)
		body, _ = json.Marshal(map[string]any{"type": in.Message.Type, "text": fmt.Sprintf("[%s message too large to show]", in.Message.Type),
			"wamid": in.Message.ID, "wa_timestamp": in.Time.Unix(), "truncated": true})
	}
	msg := charla.Message{Conv: conv, ClientMsgID: ClientMsgIDOf(in.Message.ID),
		Sender: charla.Sender{ID: in.WaID, Role: charla.RoleCustomer}, Body: body}
	ack, err := a.rt.post(ctx, msg)
	if err != nil {
		var ce *charla.Error
		if errors.As(err, &ce) && ce.Code != charla.CodeUnavailable && ce.Code != charla.CodeInternal && ce.Code != charla.CodeRateLimited {
			return fmt.Sprintf("%s: refused: %s", in.Message.ID, ce.Message), nil
		}
		return problem, fmt.Errorf("%w: post %s to %s: %w", errRetry, in.Message.ID, conv, err)
	}
	if ack.Duplicate {
		a.rt.stats.Redelivered.Add(1)
	} else {
		a.rt.stats.Messages.Add(1)
	}
	return problem, nil
}

// attachMedia downloads md into media storage and references it from the
// body as "media"; when it cannot, "media_error" says why and the message
// goes on with its placeholder text.
func (a *inboundActor) attachMedia(ctx context.Context, conv charla.ConvID, waID string, md *whatsapp.Media, fields map[string]any) {
	if a.rt.in.Graph == nil || a.rt.in.Media == nil {
		return
	}
	refuse := func(why string) {
		a.rt.stats.MediaRefused.Add(1)
		fields["media_error"] = why
	}
	limit, err := media.Limit(md.MimeType)
	if err != nil {
		refuse(fmt.Sprintf("media type %q is not kept by this server", md.MimeType))
		return
	}
	var info whatsapp.MediaInfo
	var data []byte
	for attempt := 1; ; attempt++ {
		info, data, err = a.rt.in.Graph.Media(ctx, md.ID, limit)
		var ge *whatsapp.GraphError
		if err == nil || errors.Is(err, whatsapp.ErrMediaTooLarge) || errors.As(err, &ge) && !ge.Retryable() || attempt == mediaAttempts || ctx.Err() != nil {
			break
		}
		t := time.NewTimer(time.Duration(attempt) * 200 * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	switch {
	case errors.Is(err, whatsapp.ErrMediaTooLarge):
		refuse(fmt.Sprintf("too large: the limit for %s is %d bytes", media.Normalize(md.MimeType), limit))
		return
	case err != nil:
		a.log.Warn().Err(err).Str("media_id", md.ID).Str("conv", string(conv)).Msg("inbound media not downloaded")
		refuse("download failed: " + err.Error())
		return
	}
	declared := info.MimeType
	if declared == "" {
		declared = md.MimeType
	}
	meta, err := a.rt.in.Media.Put(conv, waID, declared, bytes.NewReader(data))
	if err != nil {
		refuse(strings.TrimPrefix(err.Error(), "media: "))
		return
	}
	a.rt.stats.MediaStored.Add(1)
	fields["media"] = map[string]any{"id": meta.ID, "url": "/v1/media/" + meta.ID, "mime_type": meta.Type, "size": meta.Size}
}

// ReceiveWebhook records a verified webhook body durably and queues it for
// processing; it returns once the record is in the store (dup: it was
// already), which is when the webhook may answer 200. Errors are
// unavailable *charla.Error: answer 503 and let the platform redeliver.
func (s *System) ReceiveWebhook(ctx context.Context, body []byte) (dup bool, err error) {
	if s.inbound == nil {
		return false, charla.Errorf(charla.CodeUnavailable, "the WhatsApp channel is not configured")
	}
	res, err := s.request(ctx, s.inbound, func(reply *actor.PID) any { return webhookReq{body: body, replyTo: reply} })
	if err != nil {
		return false, err
	}
	r := res.(webhookRecorded)
	if r.err != nil {
		return false, r.err
	}
	return r.dup, nil
}

// InboundStats returns the webhook's counters; nil when the channel is off.
func (s *System) InboundStats() *InboundStats {
	if s.inboundRT == nil {
		return nil
	}
	return &s.inboundRT.stats
}

// startInbound spawns the inbound actor, once the conversations it posts
// into exist.
func (s *System) startInbound(in Inbound) error {
	if in.Store == nil {
		return errors.New("whatsapp inbound: a store that keeps webhook events is required")
	}
	if in.RecordTimeout <= 0 {
		in.RecordTimeout = defaultRecordTimeout
	}
	if in.PendingPage <= 0 {
		in.PendingPage = defaultPendingPage
	}
	rt := &inboundRuntime{in: in, post: s.Post, statuses: s.ApplyWhatsAppStatuses}
	pid, err := s.as.Root.SpawnNamed(actor.PropsFromProducer(func() actor.Actor { return newInboundActor(s.deps, rt) }), "whatsapp_inbound")
	if err != nil {
		return fmt.Errorf("spawn whatsapp inbound: %w", err)
	}
	s.inbound, s.inboundRT = pid, rt
	return nil
}
