package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"charla"
	"charla/bench/fleet"
	"charla/bench/stats"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

// Defaults of the webhook scenario.
const (
	defaultWebhookBatch   = 10
	defaultWebhookPosters = 8
	webhookPhone          = "1001"
	// webhookAnswerGoal is the median answer time.
	webhookAnswerGoal = 250 * time.Millisecond
)

// Latency names of the webhook scenario.
const (
	latWebhookAnswer  = "webhook_answer"
	latWebhookDeliver = "webhook_deliver"
)

// whTracker follows every inbound message from its webhook to the agents
// subscribed to its conversation: when it was posted, who got it, and how
// often.
type whTracker struct {
	deliver *stats.Latency

	mu      sync.Mutex
	posted  map[string]time.Time    // message id → when its webhook was posted
	got     map[string]map[int]int  // message id → member index → deliveries
	members map[charla.ConvID][]int // conversation → subscribed member indexes
	foreign atomic.Int64            // msg frames that are not this run's
	errors  atomic.Int64            // error frames
}

func (t *whTracker) frame(m *fleet.Member, f *wire.Frame, at time.Time) bool {
	switch f.Type {
	case wire.TypeMsg:
	case wire.TypeError:
		t.errors.Add(1)
		return false
	default:
		return false
	}
	var b struct {
		Text string `json:"text"`
	}
	if json.Unmarshal(f.Body, &b) != nil {
		t.foreign.Add(1)
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	sent, ok := t.posted[b.Text]
	if !ok {
		t.foreign.Add(1)
		return true
	}
	per := t.got[b.Text]
	if per == nil {
		per = map[int]int{}
		t.got[b.Text] = per
	}
	per[m.Index]++
	if per[m.Index] == 1 {
		t.deliver.Record(at, at.Sub(sent))
	}
	return true
}

// outstanding counts the deliveries still owed, and the duplicates seen.
func (t *whTracker) outstanding() (missing, dups int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id := range t.posted {
		conv := convOfID(id)
		for _, idx := range t.members[conv] {
			switch n := t.got[id][idx]; {
			case n == 0:
				missing++
			case n > 1:
				dups += int64(n - 1)
			}
		}
	}
	return missing, dups
}

// Message ids are "<conv>|<n>": the conversation is in the id, so the
// tracker needs no second map.
func convOfID(id string) charla.ConvID {
	i := bytes.LastIndexByte([]byte(id), '|')
	return charla.ConvID(id[:max(i, 0)])
}

// runWebhook posts signed webhooks as the WhatsApp platform would — batches
// of --webhook-batch messages, --rate messages/s in total, spread over
// --convs customers — while --conns agents are subscribed to those
// customers' conversations over WebSocket: the webhook's answer time, the
// webhook → agent delivery time, and every message delivered exactly once.
func runWebhook(ctx context.Context, o Options, _ Env, r *run) error {
	if o.WebhookSecret == "" {
		return errors.New("--webhook-secret is required: the engine's --whatsapp-app-secret")
	}
	if o.Rate <= 0 {
		return errors.New("--rate must be > 0")
	}
	batch := o.WebhookBatch
	if batch <= 0 {
		batch = defaultWebhookBatch
	}
	url := o.WebhookURL
	if url == "" {
		url = "http://" + o.Addr + "/webhooks/whatsapp"
	}
	// wa_ids are digits: this run's are a number of its own and the
	// customer's index.
	base := time.Now().UnixNano() % 1_000_000
	waID := func(i int) string { return fmt.Sprintf("9%06d%05d", base, i) }
	convs := make([]charla.ConvID, o.Convs)
	for i := range convs {
		convs[i] = charla.WhatsAppConv(webhookPhone, waID(i))
	}

	t := &whTracker{posted: map[string]time.Time{}, got: map[string]map[int]int{}, members: map[charla.ConvID][]int{}}
	r.frame = t.frame
	if err := r.start(false, 0); err != nil {
		return err
	}
	t.deliver = stats.NewLatency(time.Now())
	answer := stats.NewLatency(time.Now())
	ms := make([]*fleet.Member, o.Conns)
	for i := range ms {
		conv := convs[i%len(convs)]
		ms[i] = r.f.NewMember(i, conv)
		t.members[conv] = append(t.members[conv], i)
	}
	r.members = append(r.members, ms...)
	n := r.connect(ctx, ms)
	if err := r.needAll(n, o.Conns); err != nil {
		return err
	}
	if err := r.subscribe(ctx, ms); err != nil {
		return err
	}

	// Post: a ticker makes the batches at the rate; posters send them, so
	// that one slow answer does not hold the rate back.
	hook := fakegraph.Webhook{URL: url, Secret: []byte(o.WebhookSecret), HTTP: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: defaultWebhookPosters}}}
	bodies := make(chan []byte, 1024)
	var refused, failed, skipped atomic.Int64
	var wg sync.WaitGroup
	for range defaultWebhookPosters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for body := range bodies {
				start := time.Now()
				status, err := hook.Post(ctx, body)
				switch {
				case err != nil:
					failed.Add(1)
				case status != http.StatusOK:
					refused.Add(1)
				default:
					answer.Record(start, time.Since(start))
				}
			}
		}()
	}
	r.rep.SetPhase("webhooks")
	period := time.Duration(float64(time.Second) * float64(batch) / o.Rate)
	tick := time.NewTicker(period)
	start := time.Now()
	seq, next := 0, 0
	for time.Since(start) < o.Duration && ctx.Err() == nil {
		all := make([]whatsapp.Message, 0, batch)
		now := time.Now()
		t.mu.Lock()
		for range batch {
			c := next % len(convs)
			next++
			seq++
			id := string(convs[c]) + "|" + strconv.Itoa(seq)
			m := fakegraph.TextMessage(waID(c), "wamid.bench."+strconv.FormatInt(base, 10)+"."+strconv.Itoa(seq), now, id)
			all = append(all, m)
			t.posted[id] = now
		}
		t.mu.Unlock()
		body, err := json.Marshal(fakegraph.Payload(fakegraph.Change(webhookPhone, nil, all, nil)))
		if err != nil {
			return err
		}
		select {
		case bodies <- body:
		default:
			skipped.Add(1) // the posters are behind: the engine answers slower than the rate
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	tick.Stop()
	close(bodies)
	wg.Wait()
	r.measured += time.Since(start)

	r.rep.SetPhase("drain")
	drain := o.Drain
	if drain <= 0 {
		drain = 10 * time.Second
	}
	deadline := time.Now().Add(drain)
	missing, dups := t.outstanding()
	for missing > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		missing, dups = t.outstanding()
	}

	res := r.res
	res.AddLatency(latWebhookAnswer, answer)
	res.AddLatency(latWebhookDeliver, t.deliver)
	res.Details["webhook_messages"] = float64(seq)
	res.Details["webhook_batch"] = float64(batch)
	res.Details["webhooks_refused"] = float64(refused.Load())
	res.Details["webhooks_failed"] = float64(failed.Load())
	res.Details["webhook_batches_skipped_posters_behind"] = float64(skipped.Load())
	res.Details["deliveries_missing"] = float64(missing)
	res.Details["deliveries_duplicated"] = float64(dups)
	res.Details["foreign_msg_frames"] = float64(t.foreign.Load())
	if missing > 0 || dups > 0 {
		res.Fail("webhook messages: %d deliveries missing after the drain, %d duplicated", missing, dups)
	}
	if refused.Load()+failed.Load() > 0 {
		res.Fail("%d webhooks refused and %d failed (the platform would redeliver them; the bench does not)", refused.Load(), failed.Load())
	}
	if e := t.errors.Load(); e > 0 {
		res.Details["error_frames"] = float64(e)
	}
	a := answer.Hist.Summary()
	res.AddGoal("webhook answer p50", "ms", float64(webhookAnswerGoal.Milliseconds()), a.P50, true)
	if a.P99 > 0 {
		res.Details["webhook_answer_p99_ms"] = a.P99
	}
	if d := t.deliver.Hist.Summary(); d.P99 > 0 {
		res.Details["webhook_deliver_p50_ms"], res.Details["webhook_deliver_p99_ms"] = d.P50, d.P99
	}
	return nil
}
