package actors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"charla"
	"charla/ops"
	"charla/wire"
)

// AlertConfig is the alert actor's settings.
type AlertConfig struct {
	Interval       time.Duration // alert-interval: how often the rules are evaluated
	Rules          ops.Rules     // the rules (ops.DefaultRules unless the settings file says otherwise)
	WebhookURL     string        // alert-webhook-url: POSTed every firing and resolution (empty = none)
	WebhookTimeout time.Duration // alert-webhook-timeout: deadline of one webhook attempt
	WebhookRetries int           // alert-webhook-retries: attempts after the first, with backoff
	WebhookQueue   int           // alert-webhook-queue: events waiting for the webhook; past it they are dropped (logged), never waited for
}

// DefaultAlertConfig returns the defaults README.md lists.
func DefaultAlertConfig() AlertConfig {
	return AlertConfig{Interval: 5 * time.Second, Rules: ops.DefaultRules(), WebhookTimeout: 5 * time.Second, WebhookRetries: 5, WebhookQueue: 256}
}

func (c AlertConfig) problems() []error {
	var errs []error
	if c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("alert-interval must be positive (got %s)", c.Interval))
	}
	if c.WebhookURL != "" {
		if u, err := url.Parse(c.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("alert-webhook-url %q: must be an http or https URL", c.WebhookURL))
		}
	}
	if c.WebhookTimeout <= 0 {
		errs = append(errs, fmt.Errorf("alert-webhook-timeout must be positive (got %s)", c.WebhookTimeout))
	}
	if c.WebhookRetries < 0 {
		errs = append(errs, fmt.Errorf("alert-webhook-retries must not be negative (got %d)", c.WebhookRetries))
	}
	if c.WebhookQueue < 1 {
		errs = append(errs, fmt.Errorf("alert-webhook-queue must be at least 1 (got %d)", c.WebhookQueue))
	}
	if err := c.Rules.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errs
}

// MetricSource is what the alert rules read: every series now (a
// prometheus.Gatherer, such as the metrics package's registry).
type MetricSource interface {
	Gather() ([]*dto.MetricFamily, error)
}

// FlagSwitch turns a feature flag off when an alert rule asks for it
// (ops.Runtime).
type FlagSwitch interface {
	Enabled(flag string) bool
	DisableFlag(flag, by string) error
}

// alertActor evaluates the alert rules every Interval over the engine's
// metrics, and sends each firing and resolution (once each: the evaluator
// keeps an alert quiet while it keeps firing) to the log, to every admin
// connection as an alert frame, and to the webhook; a firing rule with a
// disable_flag turns that feature off.
type alertActor struct {
	d      *deps
	source MetricSource
	flags  FlagSwitch // nil: no rollbacks
	rules  map[string]ops.Rule
	eval   *ops.Evaluator
	hook   *webhook // nil: no webhook
	timer  *time.Timer
	log    zerolog.Logger
}

// Messages of the alert actor.
type (
	alertTick     struct{}
	setAlertRules struct{ rules ops.Rules }
	// firingReq is answered to replyTo with the []ops.Event firing now.
	firingReq struct{ replyTo *actor.PID }
	// adminFrame is a frame for every admin connection (through the
	// gateway); pushFrame is one for a conn to queue as it is.
	adminFrame struct{ frame []byte }
	pushFrame  struct{ frame []byte }
)

func newAlertActor(d *deps, source MetricSource, flags FlagSwitch) *alertActor {
	return &alertActor{d: d, source: source, flags: flags, log: d.log.With().Str("component", "alerts").Logger()}
}

func (a *alertActor) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		a.setRules(a.d.cfg.Alerts.Rules)
		if a.d.cfg.Alerts.WebhookURL != "" {
			a.hook = startWebhook(a.d.cfg.Alerts, a.log)
		}
		a.timer = sendAfter(a.d.root, a.d.cfg.Alerts.Interval, ctx.Self(), alertTick{})
	case alertTick:
		a.evaluate(ctx)
		a.timer.Reset(a.d.cfg.Alerts.Interval)
	case setAlertRules:
		for _, ev := range a.setRules(m.rules) {
			a.notify(ctx, ev)
		}
	case firingReq:
		ctx.Send(m.replyTo, a.eval.Firing())
	case *actor.Stopping, *actor.Restarting:
		if a.timer != nil {
			a.timer.Stop()
		}
		if a.hook != nil {
			a.hook.stop()
		}
	}
}

func (a *alertActor) setRules(rules ops.Rules) []ops.Event {
	a.rules = make(map[string]ops.Rule, len(rules))
	for _, r := range rules {
		a.rules[r.Name] = r
	}
	if a.eval == nil {
		a.eval = ops.NewEvaluator(rules)
		return nil
	}
	return a.eval.SetRules(rules)
}

func (a *alertActor) evaluate(ctx actor.Context) {
	fams, err := a.source.Gather()
	if err != nil && len(fams) == 0 {
		a.log.Warn().Err(err).Msg("alert rules: metrics unreadable")
		return
	}
	for _, ev := range a.eval.Eval(time.Now(), fams) {
		a.notify(ctx, ev)
	}
}

// notify tells everyone of one event, after rolling back its flag.
func (a *alertActor) notify(ctx actor.Context, ev ops.Event) {
	if r := a.rules[ev.Rule]; ev.State == ops.StateFiring && r.DisableFlag != "" && a.flags != nil && a.flags.Enabled(r.DisableFlag) {
		if err := a.flags.DisableFlag(r.DisableFlag, "alert "+ev.Rule); err != nil {
			a.log.Error().Err(err).Str("flag", r.DisableFlag).Msg("alert rule could not turn its flag off")
		} else {
			ev.DisabledFlag = r.DisableFlag
		}
	}
	le := a.log.Info()
	if ev.State == ops.StateFiring {
		le = a.log.Warn()
		if ev.Severity == ops.SeverityCritical {
			le = a.log.Error()
		}
	}
	le.Str("alert", ev.Rule).Str("state", string(ev.State)).Str("severity", string(ev.Severity)).
		Float64("value", ev.Value).Str("op", ev.Op).Float64("threshold", ev.Threshold).Str("disabled_flag", ev.DisabledFlag).Msg(ev.Summary)
	ctx.Send(ctx.ActorSystem().NewLocalPID(gatewayName), adminFrame{frame: wire.Encode(alertFrame(ev))})
	if a.hook != nil {
		a.hook.post(ev)
	}
}

func alertFrame(ev ops.Event) wire.Alert {
	return wire.Alert{Type: wire.TypeAlert, Rule: ev.Rule, Severity: string(ev.Severity), State: string(ev.State),
		Value: ev.Value, Op: ev.Op, Threshold: ev.Threshold, Summary: ev.Summary, Since: ev.Since, At: ev.At, DisabledFlag: ev.DisabledFlag}
}

// SetAlertRules replaces the alert rules the engine evaluates; alerts of
// removed rules resolve. Without alerts (metrics off) there is nothing to
// tell.
func (s *System) SetAlertRules(rules ops.Rules) error {
	if err := rules.Validate(); err != nil {
		return err
	}
	if s.alerts != nil {
		s.as.Root.Send(s.alerts, setAlertRules{rules: rules})
	}
	return nil
}

// FiringAlerts returns the alerts firing now (none when alerts are off).
func (s *System) FiringAlerts(ctx context.Context) ([]ops.Event, error) {
	if s.alerts == nil {
		return nil, nil
	}
	res, err := s.request(ctx, s.alerts, func(reply *actor.PID) any { return firingReq{replyTo: reply} })
	if err != nil {
		return nil, err
	}
	return res.([]ops.Event), nil
}

// webhook POSTs alert events, one at a time and in order, from its own
// goroutine: the alert actor hands them over without ever waiting.
type webhook struct {
	url     string
	client  *http.Client
	retries int
	queue   chan ops.Event
	cancel  context.CancelFunc
	done    chan struct{}
	log     zerolog.Logger
}

func startWebhook(cfg AlertConfig, log zerolog.Logger) *webhook {
	ctx, cancel := context.WithCancel(context.Background())
	w := &webhook{url: cfg.WebhookURL, client: &http.Client{Timeout: cfg.WebhookTimeout}, retries: cfg.WebhookRetries,
		queue: make(chan ops.Event, cfg.WebhookQueue), cancel: cancel, done: make(chan struct{}), log: log}
	go w.run(ctx)
	return w
}

// post queues ev; a full queue drops it (logged): an unreachable webhook
// must never hold the engine up.
func (w *webhook) post(ev ops.Event) {
	select {
	case w.queue <- ev:
	default:
		w.log.Error().Str("alert", ev.Rule).Str("state", string(ev.State)).Msg("alert webhook queue full; event dropped")
	}
}

func (w *webhook) stop() {
	w.cancel()
	<-w.done
}

func (w *webhook) run(ctx context.Context) {
	defer close(w.done)
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-w.queue:
			w.deliver(ctx, ev)
		}
	}
}

// deliver tries ev up to 1+retries times, with exponential backoff and
// full jitter between attempts; a 2xx answer is delivery.
func (w *webhook) deliver(ctx context.Context, ev ops.Event) {
	body, _ := json.Marshal(ev)
	var err error
	for attempt := 0; attempt <= w.retries; attempt++ {
		if attempt > 0 {
			backoff := min(200*time.Millisecond<<(attempt-1), 5*time.Second)
			select {
			case <-ctx.Done():
				return
			case <-time.After(rand.N(backoff) + time.Millisecond):
			}
		}
		if err = w.attempt(ctx, body); err == nil {
			return
		}
	}
	w.log.Error().Err(err).Str("alert", ev.Rule).Str("state", string(ev.State)).Int("attempts", w.retries+1).Msg("alert webhook failed; event dropped")
}

func (w *webhook) attempt(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// broadcastAdmins is the gateway's half of adminFrame.
func broadcastAdmins(ctx actor.Context, admins map[string]*actor.PID, frame []byte) {
	for _, pid := range admins {
		ctx.Send(pid, pushFrame{frame: frame})
	}
}

// isAdmin says whether a new connection joins the admins' broadcast.
func isAdmin(u charla.Sender) bool { return u.Role == charla.RoleAdmin }
