package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"charla"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

// simulate-customer posts each line as a signed webhook the engine's own
// check accepts.
func TestSimulateCustomer(t *testing.T) {
	var mu sync.Mutex
	var texts []string
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if err := whatsapp.VerifySignature([]byte("s3cret"), body, r.Header.Get(whatsapp.SignatureHeader)); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		b, err := whatsapp.Parse(body)
		if err != nil || len(b.Problems) > 0 || len(b.Messages) != 1 || b.Contacts[0].Name != "Eva" {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		mu.Lock()
		texts = append(texts, string(b.Messages[0].Conv())+" "+b.Messages[0].Message.Text.Body)
		mu.Unlock()
	}))
	defer hook.Close()
	var out, errOut bytes.Buffer
	code := simulateCustomer(context.Background(), []string{"--webhook-url", hook.URL, "--from", "34611", "--name", "Eva", "--phone-number-id", "2002"},
		strings.NewReader("hola\n\n¿hay stock?\n"), &out, &errOut, func(k string) string {
			if k == "CHARLA_WHATSAPP_APP_SECRET" {
				return "s3cret"
			}
			return ""
		})
	if code != 0 || errOut.Len() > 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	if got := strings.Join(texts, "|"); got != "wa.34611:2002 hola|wa.34611:2002 ¿hay stock?" {
		t.Fatalf("the engine got %q", got)
	}
	// A wrong secret is told, not hidden.
	errOut.Reset()
	simulateCustomer(context.Background(), []string{"--webhook-url", hook.URL, "--whatsapp-app-secret", "wrong", "--text", "x"}, nil, &out, &errOut, nil)
	if !strings.Contains(errOut.String(), "answered 401") {
		t.Fatalf("wrong secret: %q", errOut.String())
	}
}

// Both WhatsApp commands and serve list every problem of their settings.
func TestWhatsAppSettingsProblems(t *testing.T) {
	tests := []struct {
		name string
		run  func(stderr io.Writer) int
		want []string
	}{
		{"simulate-customer", func(w io.Writer) int {
			return simulateCustomer(context.Background(), []string{"--from", "+34", "--phone-number-id", "x1"}, nil, io.Discard, w, nil)
		}, []string{"whatsapp-app-secret", `from "+34"`, `phone-number-id "x1"`}},
		{"fakegraph", func(w io.Writer) int {
			return fakegraphCmd(context.Background(), []string{"--addr", "nohost", "--webhook-url", "ftp://x", "--status-delay-ms", "-1"}, io.Discard, w, nil)
		}, []string{`addr "nohost"`, "webhook-url", "whatsapp-app-secret: required with webhook-url", "status-delay-ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errOut bytes.Buffer
			if code := tt.run(&errOut); code != 2 {
				t.Fatalf("exit %d, want 2: %s", code, errOut.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(errOut.String(), w) {
					t.Errorf("%q missing from:\n%s", w, errOut.String())
				}
			}
		})
	}
	_, err := parseConfig([]string{"--auth-mode", "dev", "--whatsapp-token", "t", "--whatsapp-graph-url", "graph"}, func(string) string { return "" }, nil, true)
	for _, w := range []string{"whatsapp-app-secret is required", "whatsapp-graph-url"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("serve: %q missing from %v", w, err)
		}
	}
}

// Every webhook answered 200 is a message after a kill -9, whatever its
// processing had reached: recorded before the answer, processed at start.
func TestKill9WebhooksLoseNothing(t *testing.T) {
	dir, addr := t.TempDir(), freeAddr(t)
	flags := []string{"--whatsapp-app-secret", "k9-secret", "--whatsapp-verify-token", "v", "--whatsapp-token", "t"}
	p := startEngine(t, addr, dir, flags...)
	hook := fakegraph.Webhook{URL: "http://" + addr + "/webhooks/whatsapp", Secret: []byte("k9-secret")}
	const n = 200
	ts := time.Now()
	for i := range n {
		m := fakegraph.TextMessage("34600000099", fmt.Sprintf("wamid.k9.%d", i), ts, fmt.Sprint(i))
		if s, err := hook.PostPayload(context.Background(), fakegraph.Payload(fakegraph.Change("1001", nil, []whatsapp.Message{m}, nil))); err != nil || s != http.StatusOK {
			t.Fatalf("webhook %d: %d, %v", i, s, err)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = p.cmd.Wait()

	startEngine(t, addr, dir, flags...)
	c := dial(t, addr, "agent")
	conv := charla.WhatsAppConv("1001", "34600000099")
	c.Send(wire.Frame{Type: wire.TypeSubscribe, Conv: conv})
	// The chatbot answers too (its replies are interleaved): the customer's
	// messages are each there once, in order, with seqs that never go back.
	var last charla.Seq
	for i := 0; i < n; {
		f := c.NextOf(wire.TypeMsg, 30*time.Second)
		if f.Seq <= last {
			t.Fatalf("after kill -9: seq %d after seq %d", f.Seq, last)
		}
		last = f.Seq
		if f.Sender == nil || f.Sender.Role != charla.RoleCustomer {
			continue
		}
		var b struct {
			Text string `json:"text"`
		}
		_ = json.Unmarshal(f.Body, &b)
		if b.Text != fmt.Sprint(i) {
			t.Fatalf("after kill -9, customer message %d at seq %d is %q", i, f.Seq, b.Text)
		}
		i++
	}
}
