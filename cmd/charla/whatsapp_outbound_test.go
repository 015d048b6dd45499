package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/pebble"
	"charla/store/postgres"
	"charla/store/postgres/pgtest"
	"charla/transport/transporttest"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

const (
	waPhone  = "15550001111"
	waSecret = "kill-test-app-secret"
	waToken  = "kill-test-graph-token"
)

// waProc runs the real binary with the WhatsApp channel on, its Graph API
// the fake, which posts its status webhooks back to the engine.
type waProc struct {
	t       *testing.T
	fake    *fakegraph.Server
	addr    string
	dir     string
	dbURL   string // "": the embedded store
	flags   []string
	proc    *engineProc
	slowFor atomic.Int64 // nanoseconds each send waits before the fake sees it
}

// startWAProc starts the engine over storeKind; extra flags come last and win.
func startWAProc(t *testing.T, storeKind string, extra ...string) *waProc {
	t.Helper()
	w := &waProc{t: t, addr: freeAddr(t), dir: t.TempDir()}
	fake, err := fakegraph.New(fakegraph.Options{Token: waToken, AppSecret: waSecret,
		WebhookURL: "http://" + w.addr + "/webhooks/whatsapp", Statuses: fakegraph.StatusPlan{DelayMS: 20}})
	if err != nil {
		t.Fatal(err)
	}
	// A send may be held before the fake sees it: the engine is killed
	// while its call is in flight, and the fake still takes the message.
	fs := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(w.slowFor.Load()))
		fake.Handler().ServeHTTP(rw, r)
	}))
	t.Cleanup(func() { fake.Close(); fs.Close() })
	w.fake = fake
	// The chatbot is off: these tests count the sends of one agent reply,
	// and the bot's greeting would be one more (and take the throttling).
	w.flags = []string{"--bot-flow", "off", "--whatsapp-app-secret", waSecret, "--whatsapp-verify-token", "verify", "--whatsapp-token", waToken,
		"--whatsapp-graph-url", fs.URL + "/v21.0", "--whatsapp-backoff-base", "1s", "--whatsapp-backoff-max", "1s",
		"--whatsapp-reconcile-window", "1m"}
	if storeKind == "postgres" {
		u := pgtest.SchemaURL(t)
		if _, err := postgres.MigrateURL(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		w.flags = append(w.flags, "--database-url", u)
		w.dbURL = u
	}
	w.flags = append(w.flags, extra...)
	w.proc = startEngine(t, w.addr, w.dir, w.flags...)
	return w
}

// stopAndReadOutbox stops the engine (SIGTERM) and reads conv's outbox
// from its store.
func (w *waProc) stopAndReadOutbox(conv charla.ConvID) []store.OutboxEntry {
	w.t.Helper()
	if err := w.proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		w.t.Fatal(err)
	}
	if err := w.proc.cmd.Wait(); err != nil {
		w.t.Fatalf("engine exit: %v\n%s", err, w.proc.logs.String())
	}
	ctx := context.Background()
	var st interface {
		OutboxOf(ctx context.Context, conv charla.ConvID) ([]store.OutboxEntry, error)
		Close() error
	}
	var err error
	if w.dbURL != "" {
		o := postgres.DefaultOptions()
		o.URL = w.dbURL
		st, err = postgres.Open(ctx, o, zerolog.Nop())
	} else {
		st, err = pebble.Open(ctx, filepath.Join(w.dir, embeddedDir), pebble.Options{})
	}
	if err != nil {
		w.t.Fatal(err)
	}
	defer st.Close()
	es, err := st.OutboxOf(ctx, conv)
	if err != nil {
		w.t.Fatal(err)
	}
	return es
}

func (w *waProc) kill9AndRestart() {
	w.t.Helper()
	if err := w.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		w.t.Fatal(err)
	}
	_ = w.proc.cmd.Wait()
	w.proc = startEngine(w.t, w.addr, w.dir, w.flags...)
}

// sendsOf counts the fake's calls for message conv/seq.
func (w *waProc) sendsOf(conv charla.ConvID, seq charla.Seq) (accepted, throttled int) {
	want := fmt.Sprintf("%s#%d", conv, seq)
	for _, q := range w.fake.Requests() {
		var p struct {
			Callback string `json:"biz_opaque_callback_data"`
		}
		if q.Kind != "send" || json.Unmarshal(q.Payload, &p) != nil || p.Callback != want {
			continue
		}
		switch {
		case q.HTTPStatus == http.StatusOK:
			accepted++
		case q.ErrorCode == 130429:
			throttled++
		}
	}
	return accepted, throttled
}

func (w *waProc) eventually(what string, cond func() bool) {
	w.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			w.t.Fatalf("%s: not within 30 s\n%s", what, w.proc.logs.String())
		}
	}
}

// customerWrites has the fake post a customer's message to the engine's
// webhook, opening the 24-hour window, and returns the conversation once an
// agent sees the message.
func (w *waProc) customerWrites(waID string) (charla.ConvID, *transporttest.Client) {
	w.t.Helper()
	conv := charla.WhatsAppConv(waPhone, waID)
	agent := dial(w.t, w.addr, "alice")
	agent.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv})
	agent.NextOf(wire.TypeSubscribed, transporttest.Wait)
	if _, status, err := w.fake.Inject(context.Background(), fakegraph.Inbound{PhoneNumberID: waPhone, From: waID, Text: "hola"}); err != nil || status != http.StatusOK {
		w.t.Fatalf("inject: %d %v", status, err)
	}
	if f := agent.NextOf(wire.TypeMsg, transporttest.Wait); f.Sender.Role != charla.RoleCustomer {
		w.t.Fatalf("first message %+v", f)
	}
	return conv, agent
}

// TestKill9WhatsAppReplyOnce: an agent's reply goes out exactly once,
// although the Graph API throttles it (130429) twice and the engine is
// killed (SIGKILL) and restarted between the two, on both stores.
func TestKill9WhatsAppReplyOnce(t *testing.T) {
	for _, kind := range []string{"pebble", "postgres"} {
		t.Run(kind, func(t *testing.T) {
			// A retry waits up to 4 s, so that the kill (a few ms after the
			// first retry is recorded) almost never lands during the second
			// attempt: that would rightly leave an attempt of unknown outcome,
			// never made again (TestKill9WhatsAppMidCall's case).
			w := startWAProc(t, kind, "--whatsapp-backoff-base", "4s", "--whatsapp-backoff-max", "4s")
			conv, agent := w.customerWrites("34600000011")
			w.fake.FailNext(fakegraph.FailRule{Count: 2, Code: 130429})
			agent.Send(wire.Frame{Type: wire.TypeSend, Conv: conv, ClientMsgID: uuid.NewString(), Body: json.RawMessage(`{"text":"en camino"}`)})
			ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
			w.eventually("the first throttled attempt", func() bool { _, th := w.sendsOf(conv, ack.Seq); return th >= 1 })
			// Killed once its retry is durable: killed before, the engine
			// rightly takes the attempt for one of unknown outcome and
			// never makes it again.
			for deadline := time.Now().Add(30 * time.Second); !strings.Contains(w.proc.logs.String(), "whatsapp send refused for now; retry recorded"); time.Sleep(2 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("the retry not recorded within 30 s:\n%s", w.proc.logs.String())
				}
			}
			w.kill9AndRestart()
			// Subscribed again, most likely before the retry goes out.
			agent = dial(t, w.addr, "alice")
			agent.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv, Since: ack.Seq})
			agent.NextOf(wire.TypeSubscribed, transporttest.Wait)

			w.eventually("the reply sent after the restart", func() bool { acc, _ := w.sendsOf(conv, ack.Seq); return acc >= 1 })
			time.Sleep(time.Second) // the status webhooks (20 ms apart) come in
			if acc, th := w.sendsOf(conv, ack.Seq); acc != 1 || th != 2 {
				t.Fatalf("the Graph API saw %d accepted and %d throttled sends of the reply, want 1 and 2", acc, th)
			}
			// The restarted engine stored the statuses of the send it made.
			es := w.stopAndReadOutbox(conv)
			if len(es) != 1 || es[0].State != store.OutboxSent || es[0].Attempts != 3 || es[0].Delivery.Status != "read" {
				t.Fatalf("outbox after the kill and restart: %+v, want one sent entry, 3 attempts, read", es)
			}
		})
	}
}

// TestKill9WhatsAppMidCall: the engine is killed while its call to the
// Graph API is in flight and the platform takes the message; the restarted
// engine does not send it again: the status webhooks that name it settle it
// as sent.
func TestKill9WhatsAppMidCall(t *testing.T) {
	w := startWAProc(t, "pebble")
	conv, agent := w.customerWrites("34600000012")
	w.slowFor.Store(int64(2 * time.Second))
	agent.Send(wire.Frame{Type: wire.TypeSend, Conv: conv, ClientMsgID: uuid.NewString(), Body: json.RawMessage(`{"text":"mid-call"}`)})
	ack := agent.NextOf(wire.TypeAck, transporttest.Wait)
	time.Sleep(500 * time.Millisecond) // the call is on its way, held 2 s
	w.kill9AndRestart()
	w.slowFor.Store(0)

	// The restarted engine found the attempt of unknown outcome and waits;
	// the status webhooks (naming it by its callback data) settle it. Its
	// frames may come before anyone subscribes again: the log says it.
	w.eventually("the send settled by a status webhook", func() bool {
		return strings.Contains(w.proc.logs.String(), "whatsapp send of unknown outcome confirmed by a status notification")
	})
	if !strings.Contains(w.proc.logs.String(), `"outcome_unknown":1`) {
		t.Errorf("the restarted engine did not load one attempt of unknown outcome:\n%s", w.proc.logs.String())
	}
	time.Sleep(time.Second)
	if acc, _ := w.sendsOf(conv, ack.Seq); acc != 1 {
		t.Fatalf("the Graph API took the message %d times, want once", acc)
	}
}
