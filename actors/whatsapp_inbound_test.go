package actors_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"charla"
	"charla/actors"
	"charla/media"
	"charla/store"
	"charla/store/pebble"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

const (
	waSecret = "test-app-secret"
	waVerify = "test-verify-token"
	waToken  = "test-graph-token"
)

// waStore is what these tests read back of a store.
type waStore interface {
	actors.WebhookStore
	WebhookEvent(ctx context.Context, hash string) (store.WebhookEvent, bool, error)
	Contact(ctx context.Context, waID string) (store.Contact, bool, error)
}

// waEngine is an engine with the WhatsApp channel on, its Graph API the
// fake, over the store kind given.
type waEngine struct {
	*transporttest.Engine
	fake  *fakegraph.Server
	hook  fakegraph.Webhook
	media *media.Store
}

type waOptions struct {
	maxMedia int64
	inbound  func(*actors.Inbound)        // edits the inbound dependencies
	store    func(testing.TB) store.Store // nil: pebble, or PostgreSQL for kind "postgres"
}

func startWA(t *testing.T, kind string, o waOptions) *waEngine {
	t.Helper()
	fake, err := fakegraph.New(fakegraph.Options{Token: waToken, AppSecret: waSecret, Statuses: fakegraph.StatusPlan{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	graphSrv := httptest.NewServer(fake.Handler())
	graph, err := whatsapp.NewClient(graphSrv.URL+"/v21.0", waToken, whatsapp.ClientOptions{MaxMediaBytes: o.maxMedia})
	if err != nil {
		t.Fatal(err)
	}
	ms, err := media.Open(filepath.Join(t.TempDir(), "media"))
	if err != nil {
		t.Fatal(err)
	}
	opts := []transporttest.Option{
		transporttest.WithTransport(func(c *transport.Config) {
			c.Media = ms
			c.WhatsApp = whatsapp.Config{AppSecret: waSecret, VerifyToken: waVerify, Token: waToken, GraphURL: graphSrv.URL + "/v21.0"}
		}),
		transporttest.WithDependencies(func(d *actors.Dependencies) {
			d.Inbound = &actors.Inbound{Store: d.Store.(actors.WebhookStore), Graph: graph, Media: ms}
			if o.inbound != nil {
				o.inbound(d.Inbound)
			}
		}),
	}
	if o.store != nil {
		opts = append(opts, transporttest.WithStore(o.store))
	}
	var e *transporttest.Engine
	if kind == "postgres" && o.store == nil {
		e = engineOverPG(t, migrated(t), opts...)
	} else {
		e = transporttest.Start(t, opts...)
	}
	// Cleanups run last first: the engine stops before the fake does.
	t.Cleanup(func() {
		graph.CloseIdleConnections()
		graphSrv.Close()
		fake.Close()
	})
	return &waEngine{Engine: e, fake: fake, media: ms,
		hook: fakegraph.Webhook{URL: "http://" + e.Addr + "/webhooks/whatsapp", Secret: []byte(waSecret)}}
}

func (w *waEngine) store() waStore { return w.Store().(waStore) }

func (w *waEngine) post(t *testing.T, body []byte) int {
	t.Helper()
	status, err := w.hook.Post(context.Background(), body)
	if err != nil {
		t.Fatal(err)
	}
	return status
}

// waitProcessed waits until n events are processed.
func (w *waEngine) waitProcessed(t *testing.T, n int64) {
	t.Helper()
	st := w.Sys.InboundStats()
	deadline := time.Now().Add(transporttest.Wait)
	for st.Processed.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d events processed (pending %d, retries %d)", st.Processed.Load(), n, st.Pending.Load(), st.Retries.Load())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var bothStores = []string{"pebble", "postgres"}

type bodyView struct {
	Text      string          `json:"text"`
	Type      string          `json:"type"`
	WAMID     string          `json:"wamid"`
	Media     *mediaRef       `json:"media"`
	MediaErr  string          `json:"media_error"`
	Image     json.RawMessage `json:"image"`
	Timestamp int64           `json:"wa_timestamp"`
}

type mediaRef struct {
	ID   string `json:"id"`
	URL  string `json:"url"`
	Size int64  `json:"size"`
}

func body(t *testing.T, f wire.Frame) bodyView {
	t.Helper()
	var b bodyView
	if err := json.Unmarshal(f.Body, &b); err != nil {
		t.Fatalf("body %s: %v", f.Body, err)
	}
	return b
}

// What must be shown 1: a signed batch of 3 entries × 2 messages is 6
// messages in their conversations, in platform order; the same payload
// again, concurrently from 5 goroutines, and the same messages in another
// payload change nothing; a subscribed agent gets each exactly once.
func TestWebhookBatchExactlyOnce(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			w := startWA(t, kind, waOptions{})
			t0 := time.Unix(1_790_000_000, 0)
			msg := func(from, id string, dt int, text string) whatsapp.Message {
				return fakegraph.TextMessage(from, "wamid."+id, t0.Add(time.Duration(dt)*time.Second), text)
			}
			// Each entry's messages come newest first: the engine orders
			// them by platform timestamp.
			changes := []whatsapp.Change{
				fakegraph.Change("1001", []whatsapp.Contact{fakegraph.Contact("34600000001", "Ana")}, []whatsapp.Message{msg("34600000001", "a2", 2, "ana two"), msg("34600000001", "a1", 1, "ana one")}, nil),
				fakegraph.Change("1001", []whatsapp.Contact{fakegraph.Contact("34600000002", "Bo")}, []whatsapp.Message{msg("34600000002", "b1", 1, "bo one"), msg("34600000002", "b2", 1, "bo two")}, nil),
				fakegraph.Change("1002", nil, []whatsapp.Message{msg("34600000001", "c2", 5, "ana on 1002 two"), msg("34600000001", "c1", 3, "ana on 1002 one")}, nil),
			}
			payload, err := json.Marshal(fakegraph.Payload(changes...))
			if err != nil {
				t.Fatal(err)
			}
			want := map[charla.ConvID][]string{
				charla.WhatsAppConv("1001", "34600000001"): {"ana one", "ana two"},
				charla.WhatsAppConv("1001", "34600000002"): {"bo one", "bo two"},
				charla.WhatsAppConv("1002", "34600000001"): {"ana on 1002 one", "ana on 1002 two"},
			}
			agent := w.Dial(t, "agent-1", charla.RoleAgent)
			for conv := range want {
				agent.Subscribe(conv, 0)
			}

			if s := w.post(t, payload); s != http.StatusOK {
				t.Fatalf("webhook answered %d", s)
			}
			if s := w.post(t, payload); s != http.StatusOK {
				t.Fatalf("redelivery answered %d", s)
			}
			var wg sync.WaitGroup
			statuses := make(chan int, 5)
			for range 5 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s, err := w.hook.Post(context.Background(), payload)
					if err != nil {
						t.Error(err)
					}
					statuses <- s
				}()
			}
			wg.Wait()
			close(statuses)
			for s := range statuses {
				if s != http.StatusOK {
					t.Fatalf("a concurrent redelivery answered %d", s)
				}
			}
			// The same messages in another payload (entries reversed): a
			// new event, the same wamids.
			reordered := fakegraph.Payload(changes[2], changes[1], changes[0])
			if s, err := w.hook.PostPayload(context.Background(), reordered); err != nil || s != http.StatusOK {
				t.Fatalf("reordered payload: %d, %v", s, err)
			}
			w.waitProcessed(t, 2)

			got := map[charla.ConvID][]string{}
			deadline := time.After(transporttest.Wait)
			for n := 0; n < 6; {
				select {
				case f := <-agent.Frames():
					if f.Type != wire.TypeMsg {
						continue
					}
					b := body(t, f)
					if f.Sender == nil || f.Sender.Role != charla.RoleCustomer || "wa."+f.Sender.ID != f.Conv.Owner() {
						t.Fatalf("msg sender %+v in %s", f.Sender, f.Conv)
					}
					if f.ClientMsgID != actors.ClientMsgIDOf(b.WAMID) {
						t.Fatalf("client_msg_id %s of %s is not derived from its wamid", f.ClientMsgID, b.WAMID)
					}
					if int(f.Seq) != len(got[f.Conv])+1 {
						t.Fatalf("%s: seq %d after %d messages", f.Conv, f.Seq, len(got[f.Conv]))
					}
					got[f.Conv] = append(got[f.Conv], b.Text)
					n++
				case <-deadline:
					t.Fatalf("agent got %v, want %v", got, want)
				}
			}
			agent.NoFrame(wire.TypeMsg, 500*time.Millisecond)
			for conv, texts := range want {
				if strings.Join(got[conv], "|") != strings.Join(texts, "|") {
					t.Errorf("%s: agent got %q, want %q", conv, got[conv], texts)
				}
				stored, err := w.Store().Range(context.Background(), conv, 0, 10)
				if err != nil || len(stored) != 2 {
					t.Errorf("%s: %d stored messages (%v), want 2", conv, len(stored), err)
				}
			}
			st := w.Sys.InboundStats()
			if st.Received.Load() != 2 || st.Duplicates.Load() != 6 || st.Messages.Load() != 6 || st.Redelivered.Load() != 6 {
				t.Errorf("recorded %d, duplicate webhooks %d, messages %d, redelivered %d; want 2, 6, 6, 6",
					st.Received.Load(), st.Duplicates.Load(), st.Messages.Load(), st.Redelivered.Load())
			}
			c, found, err := w.store().Contact(context.Background(), "34600000001")
			if err != nil || !found || c.Name != "Ana" || !c.LastInboundAt.Equal(t0.Add(5*time.Second)) || c.PhoneNumberID != "1002" {
				t.Errorf("contact %+v found %v, %v", c, found, err)
			}
		})
	}
}

// What must be shown 2: wrong, missing and truncated signatures are 401 and
// store nothing; the verification handshake answers the right token only.
func TestWebhookSignaturesAndHandshake(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			w := startWA(t, kind, waOptions{})
			payload, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil,
				[]whatsapp.Message{fakegraph.TextMessage("34600000009", "wamid.sig", time.Now(), "hola")}, nil)))
			good := whatsapp.Sign([]byte(waSecret), payload)
			tests := []struct {
				name      string
				body      []byte
				signature string
			}{
				{"missing", payload, ""},
				{"other secret", payload, whatsapp.Sign([]byte("not-the-secret"), payload)},
				{"truncated signature", payload, good[:len(good)-1]},
				{"no prefix", payload, good[len("sha256="):]},
				{"body truncated", payload[:len(payload)-1], good},
				{"body altered", bytes.Replace(payload, []byte("hola"), []byte("HOLA"), 1), good},
			}
			for _, tt := range tests {
				s, err := w.hook.PostSigned(context.Background(), tt.body, tt.signature)
				if err != nil || s != http.StatusUnauthorized {
					t.Errorf("%s: %d, %v; want 401", tt.name, s, err)
				}
			}
			st := w.Sys.InboundStats()
			if st.Received.Load()+st.Duplicates.Load() != 0 {
				t.Fatalf("%d webhooks recorded after bad signatures", st.Received.Load()+st.Duplicates.Load())
			}
			if p, err := w.store().PendingWebhooks(context.Background(), 10); err != nil || len(p) != 0 {
				t.Fatalf("pending events after bad signatures: %d, %v", len(p), err)
			}
			sum := sha256.Sum256(payload)
			if _, found, _ := w.store().WebhookEvent(context.Background(), hex.EncodeToString(sum[:])); found {
				t.Fatal("an unsigned body was stored")
			}
			if h, _ := w.Store().Head(context.Background(), charla.WhatsAppConv("1001", "34600000009")); h != 0 {
				t.Fatalf("head %d after bad signatures", h)
			}

			base := "http://" + w.Addr + "/webhooks/whatsapp"
			handshakes := []struct {
				name   string
				query  string
				status int
				body   string
			}{
				{"right token", "hub.mode=subscribe&hub.verify_token=" + waVerify + "&hub.challenge=1158201444", 200, "1158201444"},
				{"wrong token", "hub.mode=subscribe&hub.verify_token=guess&hub.challenge=1", 403, ""},
				{"token prefix", "hub.mode=subscribe&hub.verify_token=" + waVerify[:4] + "&hub.challenge=1", 403, ""},
				{"wrong mode", "hub.mode=unsubscribe&hub.verify_token=" + waVerify + "&hub.challenge=1", 403, ""},
				{"no token", "hub.mode=subscribe&hub.challenge=1", 403, ""},
			}
			for _, h := range handshakes {
				resp, err := http.Get(base + "?" + h.query)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != h.status || h.body != "" && string(b) != h.body {
					t.Errorf("%s: %d %q, want %d %q", h.name, resp.StatusCode, b, h.status, h.body)
				}
			}
			// And the good signature is accepted.
			if s := w.post(t, payload); s != http.StatusOK {
				t.Fatalf("signed webhook: %d", s)
			}
		})
	}
}

// Without an app secret the webhook answers 503 and /readyz says the
// channel is off.
func TestWebhookChannelOff(t *testing.T) {
	e := transporttest.Start(t)
	for method, body := range map[string]io.Reader{http.MethodGet: nil, http.MethodPost: strings.NewReader(`{}`)} {
		req, _ := http.NewRequest(method, "http://"+e.Addr+"/webhooks/whatsapp?hub.mode=subscribe", body)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("%s: %d, want 503", method, resp.StatusCode)
		}
	}
	resp, err := http.Get("http://" + e.Addr + "/readyz?user=root&role=admin")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r transport.Readiness
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || r.ReadinessDetails == nil || r.WhatsApp != "off" {
		t.Fatalf("readyz %+v, %v; want whatsapp off", r.ReadinessDetails, err)
	}
}

func pngOf(t *testing.T, side int) []byte {
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, side, side))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// What must be shown 6: inbound media lands in media storage and an agent
// gets it from the engine; a media over the limit is refused and its
// message still stored, with a placeholder.
func TestWebhookMedia(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			w := startWA(t, kind, waOptions{maxMedia: 4 << 10})
			small, big := pngOf(t, 8), append(pngOf(t, 8), make([]byte, 8<<10)...)
			w.fake.PutMedia("MEDIA-SMALL", "image/png", small)
			w.fake.PutMedia("MEDIA-BIG", "image/png", big)
			conv := charla.WhatsAppConv("1001", "34600000003")
			agent := w.Dial(t, "agent-2", charla.RoleAgent)
			agent.Subscribe(conv, 0)
			now := time.Now()
			payload := fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{
				fakegraph.NewMessage("34600000003", "wamid.img1", now, "image", map[string]string{"id": "MEDIA-SMALL", "mime_type": "image/png", "caption": "my receipt"}),
				fakegraph.NewMessage("34600000003", "wamid.img2", now.Add(time.Second), "image", map[string]string{"id": "MEDIA-BIG", "mime_type": "image/png"}),
			}, nil))
			if s, err := w.hook.PostPayload(context.Background(), payload); err != nil || s != 200 {
				t.Fatalf("webhook: %d, %v", s, err)
			}
			msgs := agent.Collect(conv, 0, 2)
			first, second := body(t, msgs[0]), body(t, msgs[1])
			if first.Type != "image" || first.Text != "my receipt" || first.Media == nil || first.Media.Size != int64(len(small)) || len(first.Image) == 0 {
				t.Fatalf("first body %s", msgs[0].Body)
			}
			req, _ := http.NewRequest(http.MethodGet, "http://"+w.Addr+first.Media.URL+"?user=agent-2&role=agent", nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Equal(got, small) || resp.Header.Get("Content-Type") != "image/png" {
				t.Fatalf("media from the engine: %d %s, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
			}
			if second.Type != "image" || second.Text != "[image]" || second.Media != nil || !strings.Contains(second.MediaErr, "too large") {
				t.Fatalf("oversize body %s", msgs[1].Body)
			}
			if st := w.Sys.InboundStats(); st.MediaStored.Load() != 1 || st.MediaRefused.Load() != 1 {
				t.Fatalf("media stored %d refused %d", st.MediaStored.Load(), st.MediaRefused.Load())
			}
		})
	}
}

// What must be shown 7 (the engine's half; FuzzParse is the parser's): a
// validly signed malformed body is answered 200 and kept as an error; the
// good part of a half-bad batch is processed.
func TestWebhookMalformedSigned(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			w := startWA(t, kind, waOptions{})
			bodies := [][]byte{
				[]byte(`{"object":"whatsapp_business_account","entry":[{"changes":[`),
				[]byte(`not json at all`),
				[]byte(`{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"1001"},
"messages":[{"from":"34600000004","id":"wamid.ok","timestamp":"1790000000","type":"text","text":{"body":"fine"}},{"from":"34600000004","timestamp":"x","type":"text"}]}}]}]}`),
			}
			for i, b := range bodies {
				if s := w.post(t, b); s != http.StatusOK {
					t.Fatalf("body %d answered %d, want 200", i, s)
				}
			}
			w.waitProcessed(t, 3)
			for i, b := range bodies {
				sum := sha256.Sum256(b)
				ev, found, err := w.store().WebhookEvent(context.Background(), hex.EncodeToString(sum[:]))
				if err != nil || !found || ev.ProcessedAt.IsZero() || ev.Problem == "" {
					t.Errorf("body %d: event %+v found %v, %v; want processed with a problem", i, ev, found, err)
				}
			}
			if st := w.Sys.InboundStats(); st.Problems.Load() != 3 || st.Messages.Load() != 1 {
				t.Fatalf("problems %d messages %d, want 3 and 1", st.Problems.Load(), st.Messages.Load())
			}
			if h, _ := w.Store().Head(context.Background(), charla.WhatsAppConv("1001", "34600000004")); h != 1 {
				t.Fatalf("head %d, want the good message stored", h)
			}
		})
	}
}

// An event recorded (and answered 200) but not processed when the engine
// died is processed at the next start.
func TestWebhookPendingAtStartIsProcessed(t *testing.T) {
	dir := t.TempDir()
	payload, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil,
		[]whatsapp.Message{fakegraph.TextMessage("34600000005", "wamid.crash", time.Now(), "before the crash")}, nil)))
	sum := sha256.Sum256(payload)
	w := startWA(t, "pebble", waOptions{store: func(tb testing.TB) store.Store {
		st, err := pebble.Open(context.Background(), filepath.Join(dir, "charla.pebble"), pebble.Options{})
		if err != nil {
			tb.Fatal(err)
		}
		if _, err := st.RecordWebhook(context.Background(), store.WebhookEvent{Hash: hex.EncodeToString(sum[:]), Body: payload, ReceivedAt: time.Now()}); err != nil {
			tb.Fatal(err)
		}
		return st
	}})
	w.waitProcessed(t, 1)
	msgs, err := w.Store().Range(context.Background(), charla.WhatsAppConv("1001", "34600000005"), 0, 10)
	if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0].Body), "before the crash") {
		t.Fatalf("after start: %v, %v", msgs, err)
	}
	if s := w.post(t, payload); s != http.StatusOK {
		t.Fatalf("redelivery: %d", s)
	}
	if st := w.Sys.InboundStats(); st.Duplicates.Load() != 1 {
		t.Fatalf("the redelivery was not a duplicate: %d", st.Duplicates.Load())
	}

}

// A webhook recorded while the pending events are being read, after the
// read looked, is processed all the same: the read's page, which lacks it,
// is no proof that nothing else is pending.
func TestWebhookRecordedDuringPendingRead(t *testing.T) {
	release := make(chan struct{})
	w := startWA(t, "pebble", waOptions{inbound: func(in *actors.Inbound) {
		in.Store = &staleRead{WebhookStore: in.Store, release: release}
	}})
	payload, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil,
		[]whatsapp.Message{fakegraph.TextMessage("34600000006", "wamid.during", time.Now(), "during the read")}, nil)))
	if s := w.post(t, payload); s != http.StatusOK {
		t.Fatalf("webhook: %d", s)
	}
	close(release)
	w.waitProcessed(t, 1)
	if h, _ := w.Store().Head(context.Background(), charla.WhatsAppConv("1001", "34600000006")); h != 1 {
		t.Fatalf("head %d, want 1", h)
	}
}

// staleRead answers the first read of the pending events with what it saw
// before release was closed.
type staleRead struct {
	actors.WebhookStore
	release chan struct{}
	once    sync.Once
}

func (s *staleRead) PendingWebhooks(ctx context.Context, limit int) ([]store.WebhookEvent, error) {
	page, err := s.WebhookStore.PendingWebhooks(ctx, limit)
	first := false
	s.once.Do(func() { first = true })
	if first {
		select {
		case <-s.release:
		case <-ctx.Done():
		}
	}
	return page, err
}

// Webhooks processed at once keep each conversation in arrival order:
// events of one customer wait for the earlier ones, others' go meanwhile.
func TestWebhookEventsKeepArrivalOrder(t *testing.T) {
	w := startWA(t, "pebble", waOptions{})
	customers := []string{"34600000011", "34600000012", "34600000013"}
	agent := w.Dial(t, "agent-3", charla.RoleAgent)
	for _, c := range customers {
		agent.Subscribe(charla.WhatsAppConv("1001", c), 0)
	}
	const per = 15
	ts := time.Now()
	for i := range per {
		for _, c := range customers {
			// The same platform second for all: arrival decides.
			m := fakegraph.TextMessage(c, fmt.Sprintf("wamid.order.%s.%d", c, i), ts, fmt.Sprintf("%d", i))
			if s, err := w.hook.PostPayload(context.Background(), fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{m}, nil))); err != nil || s != 200 {
				t.Fatalf("webhook: %d, %v", s, err)
			}
		}
	}
	next := map[charla.ConvID]int{}
	deadline := time.After(transporttest.Wait)
	for n := 0; n < per*len(customers); {
		select {
		case f := <-agent.Frames():
			if f.Type != wire.TypeMsg {
				continue
			}
			if got, want := body(t, f).Text, fmt.Sprint(next[f.Conv]); got != want {
				t.Fatalf("%s: message %q at seq %d, want %q", f.Conv, got, f.Seq, want)
			}
			next[f.Conv]++
			n++
		case <-deadline:
			t.Fatalf("got %v", next)
		}
	}
}

// A store too slow to record a webhook makes it answer 503 within the
// record timeout — the platform redelivers — never hang; a redelivery once
// the store is quick again goes through, once.
func TestWebhookSlowStoreAnswersBounded(t *testing.T) {
	for _, late := range []bool{false, true} {
		t.Run(fmt.Sprintf("committed %v", late), func(t *testing.T) { testSlowStore(t, late) })
	}
}

func testSlowStore(t *testing.T, late bool) {
	var slow atomic.Bool
	slow.Store(true)
	delay := func() time.Duration {
		if slow.Load() {
			return 2 * time.Second
		}
		return 0
	}
	w := startWA(t, "pebble", waOptions{inbound: func(in *actors.Inbound) {
		in.RecordTimeout = 200 * time.Millisecond
		in.Store = &switchable{WebhookStore: in.Store, delay: delay, late: late}
	}})
	payload, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil,
		[]whatsapp.Message{fakegraph.TextMessage("34600000021", "wamid.slow", time.Now(), "slow store")}, nil)))
	start := time.Now()
	if s := w.post(t, payload); s != http.StatusServiceUnavailable {
		t.Fatalf("slow store: %d, want 503", s)
	}
	if took := time.Since(start); took > time.Second {
		t.Fatalf("answered after %v with a 200 ms record timeout", took)
	}
	slow.Store(false)
	if s := w.post(t, payload); s != http.StatusOK {
		t.Fatalf("redelivery: %d", s)
	}
	w.waitProcessed(t, 1)
	if h, _ := w.Store().Head(context.Background(), charla.WhatsAppConv("1001", "34600000021")); h != 1 {
		t.Fatalf("head %d, want 1", h)
	}
}

// switchable delays webhook records by what delay says; with late set, it
// records first and then delays (the commit made, its answer too late).
type switchable struct {
	actors.WebhookStore
	delay func() time.Duration
	late  bool
}

func (s *switchable) RecordWebhook(ctx context.Context, ev store.WebhookEvent) (bool, error) {
	if d := s.delay(); d > 0 && s.late {
		dup, err := s.WebhookStore.RecordWebhook(context.Background(), ev)
		select {
		case <-time.After(d):
			return dup, err
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	if d := s.delay(); d > 0 {
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
	return s.WebhookStore.RecordWebhook(ctx, ev)
}

// A backlog larger than a page is processed page by page, and webhooks
// arriving meanwhile wait their turn: every message once, each
// conversation in arrival order.
func TestWebhookBacklogInPages(t *testing.T) {
	dir := t.TempDir()
	const backlog = 10
	conv := charla.WhatsAppConv("1001", "34600000031")
	t0 := time.Now()
	w := startWA(t, "pebble", waOptions{
		inbound: func(in *actors.Inbound) { in.PendingPage = 3 },
		store: func(tb testing.TB) store.Store {
			st, err := pebble.Open(context.Background(), filepath.Join(dir, "charla.pebble"), pebble.Options{})
			if err != nil {
				tb.Fatal(err)
			}
			for i := range backlog {
				body, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil,
					[]whatsapp.Message{fakegraph.TextMessage("34600000031", fmt.Sprintf("wamid.backlog.%d", i), t0, fmt.Sprint(i))}, nil)))
				sum := sha256.Sum256(body)
				if _, err := st.RecordWebhook(context.Background(), store.WebhookEvent{Hash: hex.EncodeToString(sum[:]), Body: body, ReceivedAt: t0.Add(time.Duration(i) * time.Millisecond)}); err != nil {
					tb.Fatal(err)
				}
			}
			return st
		}})
	for i := backlog; i < backlog+3; i++ {
		m := fakegraph.TextMessage("34600000031", fmt.Sprintf("wamid.backlog.%d", i), t0, fmt.Sprint(i))
		if s, err := w.hook.PostPayload(context.Background(), fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{m}, nil))); err != nil || s != 200 {
			t.Fatalf("webhook: %d, %v", s, err)
		}
	}
	w.waitProcessed(t, backlog+3)
	msgs, err := w.Store().Range(context.Background(), conv, 0, 100)
	if err != nil || len(msgs) != backlog+3 {
		t.Fatalf("%d messages stored, want %d (%v)", len(msgs), backlog+3, err)
	}
	for i, m := range msgs {
		var b bodyView
		_ = json.Unmarshal(m.Body, &b)
		if b.Text != fmt.Sprint(i) {
			t.Fatalf("seq %d is %q, want %q (arrival order)", m.Seq, b.Text, fmt.Sprint(i))
		}
	}
}

// panickySink fails every media put with a panic.
type panickySink struct{}

func (panickySink) Put(charla.ConvID, string, string, io.Reader) (media.Meta, error) {
	panic("media storage exploded")
}

// An event whose processing panics is set aside with the panic as its
// problem; the engine lives on and the customer's next message goes
// through.
func TestWebhookPoisonedEventSetAside(t *testing.T) {
	w := startWA(t, "pebble", waOptions{inbound: func(in *actors.Inbound) { in.Media = panickySink{} }})
	w.fake.PutMedia("M1", "image/png", pngOf(t, 4))
	now := time.Now()
	poison, _ := json.Marshal(fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{
		fakegraph.NewMessage("34600000041", "wamid.poison", now, "image", map[string]string{"id": "M1", "mime_type": "image/png"})}, nil)))
	if s := w.post(t, poison); s != http.StatusOK {
		t.Fatalf("webhook: %d", s)
	}
	next := fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{fakegraph.TextMessage("34600000041", "wamid.after", now, "after")}, nil))
	if s, err := w.hook.PostPayload(context.Background(), next); err != nil || s != http.StatusOK {
		t.Fatalf("webhook: %d, %v", s, err)
	}
	w.waitProcessed(t, 2)
	sum := sha256.Sum256(poison)
	ev, found, err := w.store().WebhookEvent(context.Background(), hex.EncodeToString(sum[:]))
	if err != nil || !found || !strings.Contains(ev.Problem, "media storage exploded") {
		t.Fatalf("poisoned event %+v found %v, %v", ev, found, err)
	}
	msgs, err := w.Store().Range(context.Background(), charla.WhatsAppConv("1001", "34600000041"), 0, 10)
	if err != nil || len(msgs) != 1 || !strings.Contains(string(msgs[0].Body), "after") {
		t.Fatalf("conversation after the poisoned event: %v, %v", msgs, err)
	}
}
