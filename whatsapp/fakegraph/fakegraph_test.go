package fakegraph_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
)

const secret = "app-secret"

// receiver is an engine's webhook as far as the fake can tell: it checks
// every signature and keeps what it parsed.
type receiver struct {
	mu       sync.Mutex
	batches  []whatsapp.Batch
	rejected int
	got      chan struct{}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if whatsapp.VerifySignature([]byte(secret), body, r.Header.Get(whatsapp.SignatureHeader)) != nil {
		rc.mu.Lock()
		rc.rejected++
		rc.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	b, err := whatsapp.Parse(body)
	if err != nil || len(b.Problems) > 0 {
		http.Error(w, "bad payload", http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.batches = append(rc.batches, b)
	rc.mu.Unlock()
	rc.got <- struct{}{}
}

func (rc *receiver) statuses() []whatsapp.StatusKind {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var out []whatsapp.StatusKind
	for _, b := range rc.batches {
		for _, s := range b.Statuses {
			out = append(out, s.Status)
		}
	}
	return out
}

// setup runs a receiver and the fake posting to it.
func setup(t *testing.T, plan fakegraph.StatusPlan) (*fakegraph.Server, *whatsapp.Client, *receiver, string) {
	t.Helper()
	rc := &receiver{got: make(chan struct{}, 64)}
	hook := httptest.NewServer(rc)
	fake, err := fakegraph.New(fakegraph.Options{Token: "tok", AppSecret: secret, WebhookURL: hook.URL, Statuses: plan})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fake.Handler())
	c, err := whatsapp.NewClient(srv.URL+"/v21.0", "tok", whatsapp.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.CloseIdleConnections()
		fake.Close()
		srv.Close()
		hook.Close()
	})
	return fake, c, rc, srv.URL
}

func TestStatusWebhooks(t *testing.T) {
	S, D, R, F := whatsapp.StatusSent, whatsapp.StatusDelivered, whatsapp.StatusRead, whatsapp.StatusFailed
	tests := []struct {
		name string
		plan fakegraph.StatusPlan
		want []whatsapp.StatusKind
	}{
		{"in order", fakegraph.StatusPlan{DelayMS: 1}, []whatsapp.StatusKind{S, D, R}},
		{"up to delivered", fakegraph.StatusPlan{DelayMS: 1, Last: D}, []whatsapp.StatusKind{S, D}},
		{"reversed", fakegraph.StatusPlan{DelayMS: 1, Reverse: true}, []whatsapp.StatusKind{R, D, S}},
		{"duplicated", fakegraph.StatusPlan{DelayMS: -1, Duplicate: true, Last: D}, []whatsapp.StatusKind{S, S, D, D}},
		{"failed", fakegraph.StatusPlan{DelayMS: 1, FailCode: 131026}, []whatsapp.StatusKind{S, F}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, c, rc, _ := setup(t, tt.plan)
			wamid, err := c.Send(context.Background(), "1001", map[string]any{"messaging_product": "whatsapp", "to": "34600", "type": "text", "text": map[string]string{"body": "x"}})
			if err != nil {
				t.Fatal(err)
			}
			for range tt.want {
				select {
				case <-rc.got:
				case <-time.After(5 * time.Second):
					t.Fatalf("statuses so far %v, want %v", rc.statuses(), tt.want)
				}
			}
			if got := rc.statuses(); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("statuses %v, want %v", got, tt.want)
			}
			for _, b := range rc.batches {
				s := b.Statuses[0]
				if s.MessageID != wamid || s.RecipientID != "34600" || s.PhoneNumberID != "1001" {
					t.Fatalf("status %+v is not of %s", s, wamid)
				}
				if (s.Status == F) != (s.Error != nil) || s.Error != nil && s.Error.Code != 131026 {
					t.Fatalf("status %+v: error %+v", s, s.Error)
				}
			}
		})
	}
}

// Over HTTP, as `make run` and the shell use it: inject a customer
// message, queue failures, read the recorded sends.
func TestAdmin(t *testing.T) {
	fake, c, rc, base := setup(t, fakegraph.StatusPlan{Off: true})
	do := func(method, path, body string, want int) []byte {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %d %s, want %d", method, path, resp.StatusCode, b, want)
		}
		return b
	}
	var inj struct {
		WAMID  string `json:"wamid"`
		Status int    `json:"status"`
	}
	if err := json.Unmarshal(do("POST", "/admin/inbound", `{"phone_number_id":"1001","from":"34600","name":"Ana","text":"hola"}`, 200), &inj); err != nil {
		t.Fatal(err)
	}
	<-rc.got
	b := rc.batches[0]
	if inj.Status != 200 || len(b.Messages) != 1 || b.Messages[0].Message.ID != inj.WAMID || b.Messages[0].Message.Text.Body != "hola" || b.Contacts[0].Name != "Ana" {
		t.Fatalf("injected %+v, received %+v", inj, b)
	}
	do("POST", "/admin/inbound", `{"phone_number_id":"1001","from":"34600","type":"image"}`, 502)
	do("POST", "/admin/fail", `{"count":1,"code":131056}`, 204)
	do("POST", "/admin/fail", `{"count":0,"code":131056}`, 400)
	do("PUT", "/admin/statuses", `{"last":"lost"}`, 400)
	do("PUT", "/admin/media/IMG1", "\xff\xd8\xff\xe0jpeg", 204)
	if _, err := c.Send(context.Background(), "1001", map[string]any{"messaging_product": "whatsapp", "to": "34600", "type": "text", "text": map[string]string{"body": "x"}}); err == nil {
		t.Fatal("the queued failure did not happen")
	}
	if _, data, err := c.Media(context.Background(), "IMG1", 0); err != nil || !bytes.Equal(data, []byte("\xff\xd8\xff\xe0jpeg")) {
		t.Fatalf("media: %q, %v", data, err)
	}
	var reqs []fakegraph.Request
	if err := json.Unmarshal(do("GET", "/admin/sends", "", 200), &reqs); err != nil {
		t.Fatal(err)
	}
	if len(reqs) != 1 || reqs[0].HTTPStatus != 429 || reqs[0].ErrorCode != 131056 {
		t.Fatalf("recorded %+v", reqs)
	}
	do("DELETE", "/admin/sends", "", 204)
	if n := len(fake.Requests()); n != 0 {
		t.Fatalf("%d requests after reset", n)
	}
	if rc.rejected != 0 {
		t.Fatalf("%d webhooks had a bad signature", rc.rejected)
	}
}

func TestNewWAMID(t *testing.T) {
	a, b := fakegraph.NewWAMID("34600111222"), fakegraph.NewWAMID("34600111222")
	if a == b || !strings.HasPrefix(a, "wamid.HBgL") {
		t.Fatalf("wamids %q %q: want distinct, shaped like the platform's", a, b)
	}
}
