package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/store/storetest"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

const waPhone = "15550001111"

// outRig is an engine with the WhatsApp channel on both ways: its whatsapp
// actor sends to the fake Graph API over real HTTP, and the fake posts its
// signed status webhooks to the engine's /webhooks/whatsapp, whose inbound
// actor hands them to System.ApplyWhatsAppStatuses.
type outRig struct {
	fake   *fakegraph.Server
	engine *transporttest.Engine
}

// graphFunc wraps the client, so that a test can lose answers.
type graphFunc struct {
	actors.GraphSender
	send func(ctx context.Context, phone string, payload any) (string, error)
}

func (g graphFunc) Send(ctx context.Context, phone string, payload any) (string, error) {
	return g.send(ctx, phone, payload)
}

type outOptions struct {
	cfg   func(*actors.WhatsAppConfig)
	graph func(actors.GraphSender) actors.GraphSender
	// engine: more options for the engine (the chatbot, for example).
	engine []transporttest.Option
}

func startOutbound(t *testing.T, storeKind string, o outOptions) *outRig {
	t.Helper()
	fake, err := fakegraph.New(fakegraph.Options{Token: waToken, AppSecret: waSecret, Statuses: fakegraph.StatusPlan{DelayMS: 5}})
	if err != nil {
		t.Fatal(err)
	}
	fs := httptest.NewServer(fake.Handler())
	t.Cleanup(fs.Close)
	client, err := whatsapp.NewClient(fs.URL+"/v21.0", waToken, whatsapp.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	var graph actors.GraphSender = client
	if o.graph != nil {
		graph = o.graph(client)
	}
	opts := []transporttest.Option{
		transporttest.WithWhatsApp(whatsapp.Config{AppSecret: waSecret, VerifyToken: waVerify, Token: waToken, GraphURL: fs.URL + "/v21.0"}, client, graph),
		transporttest.WithActors(func(c *actors.Config) {
			c.WhatsApp.BackoffBase, c.WhatsApp.BackoffMax = 50*time.Millisecond, 300*time.Millisecond
			c.WhatsApp.PairInterval = 10 * time.Millisecond
			if o.cfg != nil {
				o.cfg(&c.WhatsApp)
			}
		}),
	}
	opts = append(opts, o.engine...)
	var e *transporttest.Engine
	if storeKind == "postgres" {
		e = engineOverPG(t, migrated(t), opts...)
	} else {
		e = transporttest.Start(t, opts...)
	}
	fake.SetWebhookURL("http://" + e.Addr + "/webhooks/whatsapp")
	// Cleanups run last first: the fake stops posting before the engine
	// stops answering.
	t.Cleanup(fake.Close)
	return &outRig{fake: fake, engine: e}
}

// customerWrites posts an inbound message from waID as the webhook does,
// opening the 24-hour window.
func (r *outRig) customerWrites(t *testing.T, waID, text string) charla.ConvID {
	t.Helper()
	conv := charla.WhatsAppConv(waPhone, waID)
	body, _ := json.Marshal(map[string]string{"text": text, "wamid": fakegraph.NewWAMID(waID)})
	if _, err := r.engine.Sys.Post(t.Context(), charla.Message{Conv: conv, ClientMsgID: uuid.NewString(),
		Sender: charla.Sender{ID: waID, Role: charla.RoleCustomer}, Body: body}); err != nil {
		t.Fatal(err)
	}
	return conv
}

// sendsOf returns the fake's requests for the message conv/seq (by its
// callback data), accepted or not.
func (r *outRig) sendsOf(conv charla.ConvID, seq charla.Seq) (accepted, refused []fakegraph.Request) {
	want := fmt.Sprintf("%s#%d", conv, seq)
	for _, q := range r.fake.Requests() {
		var p struct {
			Callback string `json:"biz_opaque_callback_data"`
		}
		if q.Kind != "send" || json.Unmarshal(q.Payload, &p) != nil || p.Callback != want {
			continue
		}
		if q.HTTPStatus == http.StatusOK {
			accepted = append(accepted, q)
		} else {
			refused = append(refused, q)
		}
	}
	return accepted, refused
}

// statusesUntil reads the wa_status frames of seq until one with status
// last, failing on a status lower than one already seen.
func statusesUntil(t *testing.T, c *transporttest.Client, seq charla.Seq, last string) []wire.Frame {
	t.Helper()
	rank := map[string]int{wire.WAStatusAccepted: 0, wire.WAStatusSent: 1, wire.WAStatusDelivered: 2, wire.WAStatusRead: 3, wire.WAStatusFailed: 3}
	var got []wire.Frame
	deadline := time.Now().Add(2 * transporttest.Wait)
	for {
		f := c.NextOf(wire.TypeWhatsAppStatus, time.Until(deadline))
		if f.Seq != seq {
			continue
		}
		if n := len(got); n > 0 && rank[f.Status] <= rank[got[n-1].Status] {
			t.Fatalf("wa_status %q after %q for seq %d: statuses went back or repeated", f.Status, got[n-1].Status, seq)
		}
		got = append(got, f)
		if f.Status == last {
			return got
		}
	}
}

func outboxOf(t *testing.T, e *transporttest.Engine, conv charla.ConvID) []store.OutboxEntry {
	t.Helper()
	es, err := e.Store().(storetest.OutboxStore).OutboxOf(t.Context(), conv)
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestWhatsAppReplyThroughThrottling: an agent's reply goes out exactly once
// although the Graph API throttles it (130429) twice first; the agent sees
// it accepted and then sent, delivered, read.
func TestWhatsAppReplyThroughThrottling(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			r := startOutbound(t, kind, outOptions{})
			conv := r.customerWrites(t, "34600000001", "hola")
			agent := r.engine.Dial(t, "alice", charla.RoleAgent)
			agent.Subscribe(conv, 0)
			r.fake.FailNext(fakegraph.FailRule{Count: 2, Code: 130429})
			agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "¿en qué le ayudo?", "r1"))
			ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
			frames := statusesUntil(t, agent, ack.Seq, wire.WAStatusRead)
			if frames[0].Status != wire.WAStatusAccepted || frames[0].WAMID == "" {
				t.Errorf("first wa_status = %+v, want accepted with a wamid", frames[0])
			}
			accepted, refused := r.sendsOf(conv, ack.Seq)
			if len(accepted) != 1 || len(refused) != 2 || refused[0].ErrorCode != 130429 {
				t.Fatalf("Graph API saw %d accepted and %d refused sends, want 1 and 2 (130429)", len(accepted), len(refused))
			}
			var p struct {
				To   string `json:"to"`
				Text struct {
					Body string `json:"body"`
				} `json:"text"`
			}
			if err := json.Unmarshal(accepted[0].Payload, &p); err != nil || p.To != "34600000001" || p.Text.Body != "¿en qué le ayudo?" {
				t.Errorf("payload %s: to %q text %q", accepted[0].Payload, p.To, p.Text.Body)
			}
			es := outboxOf(t, r.engine, conv)
			if len(es) != 1 || es[0].State != store.OutboxSent || es[0].Attempts != 3 || es[0].WAMID != accepted[0].WAMID || es[0].Delivery.Status != "read" {
				t.Errorf("outbox = %+v, want one sent entry, 3 attempts, read", es)
			}
		})
	}
}

// TestWhatsAppStatuses: statuses that arrive out of order and repeated end
// as read, each change reaching the agent once; a failed one reaches the
// agent with its error, and stays.
func TestWhatsAppStatuses(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			r := startOutbound(t, kind, outOptions{})
			conv := r.customerWrites(t, "34600000002", "hola")
			agent := r.engine.Dial(t, "alice", charla.RoleAgent)
			agent.Subscribe(conv, 0)

			if err := r.fake.SetStatuses(fakegraph.StatusPlan{Reverse: true, Duplicate: true, DelayMS: 5}); err != nil {
				t.Fatal(err)
			}
			agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "uno", "r1"))
			first := agent.NextOf(wire.TypeAck, transporttest.Wait)
			statusesUntil(t, agent, first.Seq, wire.WAStatusRead)
			// Read came first: the late delivered and sent (twice each)
			// change nothing and send nothing.
			agent.NoFrame(wire.TypeWhatsAppStatus, 300*time.Millisecond)

			if err := r.fake.SetStatuses(fakegraph.StatusPlan{FailCode: 131026, DelayMS: 5}); err != nil {
				t.Fatal(err)
			}
			agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "dos", "r2"))
			second := agent.NextOf(wire.TypeAck, transporttest.Wait)
			frames := statusesUntil(t, agent, second.Seq, wire.WAStatusFailed)
			f := frames[len(frames)-1]
			if f.ErrorCode != 131026 || !strings.Contains(f.ErrorTitle, "Message failed") {
				t.Errorf("failed frame = %+v, want error 131026 with its title", f)
			}
			es := outboxOf(t, r.engine, conv)
			if len(es) != 2 || es[0].Delivery.Status != "read" || es[1].Delivery.Status != "failed" || es[1].Delivery.ErrorCode != 131026 {
				t.Errorf("stored statuses: %+v", es)
			}

			// A client that was away catches up: the latest status of each.
			st, body := transporttest.Do(t, http.MethodGet, r.engine.HTTPURL("/v1/conversations/"+string(conv)+"/statuses", "bob", charla.RoleAgent), nil, nil)
			var list transport.StatusList
			if err := json.Unmarshal(body, &list); st != http.StatusOK || err != nil {
				t.Fatalf("statuses: %d %s", st, body)
			}
			if len(list.Statuses) != 2 || list.Statuses[0].Seq != first.Seq || list.Statuses[0].Status != wire.WAStatusRead || list.Statuses[0].WAMID == "" ||
				list.Statuses[1].Seq != second.Seq || list.Statuses[1].Status != wire.WAStatusFailed || list.Statuses[1].ErrorCode != 131026 {
				t.Errorf("statuses after the fact: %s", body)
			}
		})
	}
}

// TestWhatsAppWindow: outside the 24-hour window (1 s here) a free-form
// reply fails at once with 131047 and is never sent; a template still goes.
func TestWhatsAppWindow(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			r := startOutbound(t, kind, outOptions{cfg: func(c *actors.WhatsAppConfig) { c.Window = time.Second }})
			conv := r.customerWrites(t, "34600000003", "hola")
			agent := r.engine.Dial(t, "alice", charla.RoleAgent)
			agent.Subscribe(conv, 0)
			time.Sleep(1200 * time.Millisecond)

			agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "too late", "r1"))
			late := agent.NextOf(wire.TypeAck, transporttest.Wait)
			f := statusesUntil(t, agent, late.Seq, wire.WAStatusFailed)[0]
			if f.ErrorCode != 131047 || !strings.Contains(f.ErrorTitle, "template") {
				t.Errorf("failed frame = %+v, want 131047 asking for a template", f)
			}
			if acc, ref := r.sendsOf(conv, late.Seq); len(acc)+len(ref) != 0 {
				t.Errorf("a free-form message outside the window reached the Graph API (%d calls)", len(acc)+len(ref))
			}

			tmpl := json.RawMessage(`{"type":"template","template":{"name":"follow_up","language":{"code":"es"}},"text":"[template follow_up]"}`)
			agent.Send(wire.Frame{Type: wire.TypeSend, Ref: "r2", Conv: conv, ClientMsgID: uuid.NewString(), Body: tmpl})
			tack := agent.NextOf(wire.TypeAck, transporttest.Wait)
			statusesUntil(t, agent, tack.Seq, wire.WAStatusAccepted)
			acc, _ := r.sendsOf(conv, tack.Seq)
			if len(acc) != 1 || acc[0].Type != "template" {
				t.Fatalf("template sends: %+v", acc)
			}

			// A customer who never wrote: no window at all.
			never := charla.WhatsAppConv(waPhone, "34600000033")
			agent.Subscribe(never, 0)
			agent.Send(transporttest.SendFrame(never, uuid.NewString(), "hello?", "r3"))
			nack := agent.NextOf(wire.TypeAck, transporttest.Wait)
			if f := statusesUntil(t, agent, nack.Seq, wire.WAStatusFailed)[0]; f.ErrorCode != 131047 {
				t.Errorf("first message to a silent customer: %+v", f)
			}
		})
	}
}

// TestWhatsAppUnknownOutcome: when the answer of an accepted send is lost,
// the message is never sent again: a status naming it settles it as sent,
// and without one it fails as "outcome unknown" after the reconcile window.
func TestWhatsAppUnknownOutcome(t *testing.T) {
	lose := outOptions{
		cfg: func(c *actors.WhatsAppConfig) { c.ReconcileWindow = 1500 * time.Millisecond },
		graph: func(g actors.GraphSender) actors.GraphSender {
			return graphFunc{GraphSender: g, send: func(ctx context.Context, phone string, payload any) (string, error) {
				if _, err := g.Send(ctx, phone, payload); err != nil {
					return "", err
				}
				return "", errors.New("connection reset by peer (the answer was lost)")
			}}
		},
	}
	r := startOutbound(t, "pebble", lose)
	conv := r.customerWrites(t, "34600000004", "hola")
	agent := r.engine.Dial(t, "alice", charla.RoleAgent)
	agent.Subscribe(conv, 0)

	agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "settled by a status", "r1"))
	ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
	frames := statusesUntil(t, agent, ack.Seq, wire.WAStatusRead)
	if frames[0].Status != wire.WAStatusAccepted {
		t.Errorf("first frame %+v, want accepted (settled by the status)", frames[0])
	}

	if err := r.fake.SetStatuses(fakegraph.StatusPlan{Off: true}); err != nil {
		t.Fatal(err)
	}
	agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "never confirmed", "r2"))
	ack2 := agent.NextOf(wire.TypeAck, transporttest.Wait)
	f := statusesUntil(t, agent, ack2.Seq, wire.WAStatusFailed)[0]
	if f.ErrorCode != 0 || !strings.Contains(f.ErrorTitle, "outcome unknown") {
		t.Errorf("unconfirmed send ended as %+v, want failed with outcome unknown", f)
	}
	for _, seq := range []charla.Seq{ack.Seq, ack2.Seq} {
		if acc, ref := r.sendsOf(conv, seq); len(acc) != 1 || len(ref) != 0 {
			t.Errorf("seq %d reached the Graph API %d times (%d accepted), want once", seq, len(acc)+len(ref), len(acc))
		}
	}
}

// TestWhatsAppRestartMidBackoff: a reply throttled, then the engine
// restarted while it waits, goes out once after the restart.
func TestWhatsAppRestartMidBackoff(t *testing.T) {
	r := startOutbound(t, "pebble", outOptions{cfg: func(c *actors.WhatsAppConfig) {
		c.BackoffBase, c.BackoffMax = time.Second, time.Second
	}})
	conv := r.customerWrites(t, "34600000005", "hola")
	agent := r.engine.Dial(t, "alice", charla.RoleAgent)
	r.fake.FailNext(fakegraph.FailRule{Count: 1, Code: 130429})
	agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "across a restart", "r1"))
	ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
	waitFor(t, "the throttled attempt", 2*transporttest.Wait, func() bool { _, ref := r.sendsOf(conv, ack.Seq); return len(ref) == 1 })
	r.engine.Restart()
	waitFor(t, "the send after the restart", 2*transporttest.Wait, func() bool { acc, _ := r.sendsOf(conv, ack.Seq); return len(acc) == 1 })
	time.Sleep(500 * time.Millisecond)
	if acc, ref := r.sendsOf(conv, ack.Seq); len(acc) != 1 || len(ref) != 1 {
		t.Fatalf("after a restart the Graph API saw %d accepted and %d refused sends, want 1 and 1", len(acc), len(ref))
	}
}

// TestWhatsAppThroughputHeldAtLimit: 400 replies to 400 customers leave at
// the business number's rate (the defaults: 80/s, burst 1), never faster,
// and none is throttled. The Graph API sees arrivals, which a loaded
// machine's scheduling may bunch by a few (jitter); the engine's pacing is
// exact. The steady rate is logged: the figure of the outbound throughput.
func TestWhatsAppThroughputHeldAtLimit(t *testing.T) {
	const n, jitter = 400, 4
	def := actors.DefaultWhatsAppConfig()
	rate, burst := int(def.Rate), def.Burst
	r := startOutbound(t, "pebble", outOptions{cfg: func(c *actors.WhatsAppConfig) {
		c.Rate, c.Burst = def.Rate, def.Burst
	}})
	if err := r.fake.SetStatuses(fakegraph.StatusPlan{Off: true}); err != nil {
		t.Fatal(err)
	}
	convs := make([]charla.ConvID, n)
	for i := range convs {
		convs[i] = r.customerWrites(t, fmt.Sprintf("3460100%04d", i), "hola")
	}
	for i, conv := range convs {
		if _, err := r.engine.Sys.Post(t.Context(), charla.Message{Conv: conv, ClientMsgID: uuid.NewString(),
			Sender: charla.Sender{ID: "alice", Role: charla.RoleAgent}, Body: json.RawMessage(fmt.Sprintf(`{"text":"reply %d"}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "every reply sent", 30*time.Second, func() bool { return len(r.fake.Requests()) >= n })
	reqs := r.fake.Requests()
	for _, q := range reqs {
		if q.HTTPStatus != http.StatusOK {
			t.Fatalf("the Graph API refused a send (code %d)", q.ErrorCode)
		}
	}
	// The most sends in any one second (a window starting at each send).
	most := 0
	for i := range reqs {
		j := i
		for j < len(reqs) && reqs[j].At.Sub(reqs[i].At) < time.Second {
			j++
		}
		most = max(most, j-i)
	}
	if most > rate+burst+jitter {
		t.Errorf("%d sends within one second, the limit is %d (+%d burst, +%d arrival jitter)", most, rate, burst, jitter)
	}
	span := reqs[len(reqs)-1].At.Sub(reqs[0].At)
	steady := float64(len(reqs)-burst) / span.Seconds()
	t.Logf("outbound: %d sends in %s: %.1f msg/s after the burst, at most %d in any second, 0 throttled (limit %d/s)", len(reqs), span.Round(time.Millisecond), steady, most, rate)
}

// TestWhatsAppShutdownFinishesCalls: a graceful stop waits for a call in
// flight and records its outcome, so that the next start has nothing of
// unknown outcome and sends nothing twice.
func TestWhatsAppShutdownFinishesCalls(t *testing.T) {
	release := make(chan struct{})
	r := startOutbound(t, "pebble", outOptions{graph: func(g actors.GraphSender) actors.GraphSender {
		return graphFunc{GraphSender: g, send: func(ctx context.Context, phone string, payload any) (string, error) {
			<-release
			return g.Send(ctx, phone, payload)
		}}
	}})
	conv := r.customerWrites(t, "34600000006", "hola")
	agent := r.engine.Dial(t, "alice", charla.RoleAgent)
	agent.Send(transporttest.SendFrame(conv, uuid.NewString(), "in flight at shutdown", "r1"))
	ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
	waitFor(t, "the call in flight", transporttest.Wait, func() bool { return r.engine.Sys.Stats().WhatsApp.Calls.Load() == 1 })
	time.AfterFunc(300*time.Millisecond, func() { close(release) })
	r.engine.Restart()
	es := outboxOf(t, r.engine, conv)
	if len(es) != 1 || es[0].State != store.OutboxSent || es[0].WAMID == "" {
		t.Fatalf("after a graceful restart the entry is %+v, want sent with its wamid", es)
	}
	if u := r.engine.Sys.Stats().WhatsApp.Unknown.Load(); u != 0 {
		t.Errorf("%d sends of unknown outcome after a graceful restart", u)
	}
	time.Sleep(300 * time.Millisecond)
	if acc, ref := r.sendsOf(conv, ack.Seq); len(acc) != 1 || len(ref) != 0 {
		t.Fatalf("the Graph API saw the message %d times", len(acc)+len(ref))
	}
}

// TestWhatsAppPairLimit: messages to one customer leave in seq order, the
// burst at once and the rest one per pair interval.
func TestWhatsAppPairLimit(t *testing.T) {
	const interval = 400 * time.Millisecond
	r := startOutbound(t, "pebble", outOptions{cfg: func(c *actors.WhatsAppConfig) {
		c.PairInterval, c.PairBurst = interval, 2
	}})
	if err := r.fake.SetStatuses(fakegraph.StatusPlan{Off: true}); err != nil {
		t.Fatal(err)
	}
	conv := r.customerWrites(t, "34600000007", "hola")
	agent := r.engine.Dial(t, "alice", charla.RoleAgent)
	start := time.Now()
	for i := range 4 {
		agent.Send(transporttest.SendFrame(conv, uuid.NewString(), fmt.Sprintf("part %d", i), fmt.Sprint(i)))
	}
	waitFor(t, "four sends", 2*transporttest.Wait, func() bool { return len(r.fake.Sent()) == 4 })
	sent := r.fake.Sent()
	for i, q := range sent {
		var p struct {
			Text struct {
				Body string `json:"body"`
			} `json:"text"`
		}
		if err := json.Unmarshal(q.Payload, &p); err != nil || p.Text.Body != fmt.Sprintf("part %d", i) {
			t.Errorf("send %d is %q: out of order", i, p.Text.Body)
		}
	}
	// Lower bounds only, from before the first send (the bucket is full
	// then): a loaded machine can make sends later, never sooner.
	for i := 2; i < 4; i++ {
		if gap := sent[i].At.Sub(start); gap < time.Duration(i-1)*interval {
			t.Errorf("send %d arrived %s after the sends began; the pair limit allows it after %s", i, gap, time.Duration(i-1)*interval)
		}
	}
}

// TestWhatsAppMarkRead: an agent reading a WhatsApp conversation marks the
// customer's last message read on WhatsApp, with the typing indicator,
// once per new message read.
func TestWhatsAppMarkRead(t *testing.T) {
	r := startOutbound(t, "pebble", outOptions{})
	conv := charla.WhatsAppConv(waPhone, "34600000008")
	wamid := fakegraph.NewWAMID("34600000008")
	body, _ := json.Marshal(map[string]string{"text": "¿hay alguien?", "wamid": wamid})
	ack, err := r.engine.Sys.Post(t.Context(), charla.Message{Conv: conv, ClientMsgID: uuid.NewString(),
		Sender: charla.Sender{ID: "34600000008", Role: charla.RoleCustomer}, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	agent := r.engine.Dial(t, "alice", charla.RoleAgent)
	agent.Subscribe(conv, 0)
	for range 2 { // the second read of the same seq costs nothing
		agent.Send(wire.Frame{Type: wire.TypeRead, Conv: conv, Seq: ack.Seq})
	}
	reads := func() []fakegraph.Request {
		var out []fakegraph.Request
		for _, q := range r.fake.Requests() {
			if q.Kind == "read" {
				out = append(out, q)
			}
		}
		return out
	}
	waitFor(t, "the mark-as-read", transporttest.Wait, func() bool { return len(reads()) > 0 })
	time.Sleep(300 * time.Millisecond)
	got := reads()
	var p struct {
		MessageID string            `json:"message_id"`
		Typing    map[string]string `json:"typing_indicator"`
	}
	if len(got) != 1 || json.Unmarshal(got[0].Payload, &p) != nil || p.MessageID != wamid || p.Typing["type"] != "text" || got[0].PhoneNumberID != waPhone {
		t.Fatalf("mark-as-read calls: %+v, want one for %s with the typing indicator", got, wamid)
	}
}
