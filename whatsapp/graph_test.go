package whatsapp_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
)

const token = "graph-token"

// newGraph runs the fake Graph API and a client of it.
func newGraph(t *testing.T, o whatsapp.ClientOptions) (*fakegraph.Server, *whatsapp.Client) {
	t.Helper()
	fake, err := fakegraph.New(fakegraph.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fake.Handler())
	c, err := whatsapp.NewClient(srv.URL+"/v21.0", token, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.CloseIdleConnections()
		srv.Close()
		fake.Close()
	})
	return fake, c
}

func text(to, body string) map[string]any {
	return map[string]any{"messaging_product": "whatsapp", "to": to, "type": "text", "text": map[string]string{"body": body}}
}

func TestSend(t *testing.T) {
	fake, c := newGraph(t, whatsapp.ClientOptions{})
	ctx := context.Background()
	id, err := c.Send(ctx, "1001", text("34600111222", "hola"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(id, "wamid.") {
		t.Fatalf("wamid %q", id)
	}
	sent := fake.Sent()
	if len(sent) != 1 || sent[0].WAMID != id || sent[0].To != "34600111222" || sent[0].PhoneNumberID != "1001" || !bytes.Contains(sent[0].Payload, []byte(`"hola"`)) {
		t.Fatalf("recorded %+v", sent)
	}
	if err := c.MarkRead(ctx, "1001", id, true); err != nil {
		t.Fatal(err)
	}
	reqs := fake.Requests()
	if len(reqs) != 2 || reqs[1].Kind != "read" || !bytes.Contains(reqs[1].Payload, []byte(`"typing_indicator"`)) {
		t.Fatalf("mark read recorded as %+v", reqs)
	}
}

func TestSendErrors(t *testing.T) {
	tests := []struct {
		name      string
		rule      fakegraph.FailRule
		status    int
		throttled bool
		retryable bool
	}{
		{"throughput", fakegraph.FailRule{Code: 130429}, 429, true, true},
		{"application limit", fakegraph.FailRule{Code: 4}, 429, true, true},
		{"waba limit", fakegraph.FailRule{Code: 80007}, 429, true, true},
		{"spam rate", fakegraph.FailRule{Code: 131048}, 429, true, true},
		{"pair rate", fakegraph.FailRule{Code: 131056}, 429, true, true},
		{"server error", fakegraph.FailRule{Code: 131000, HTTPStatus: 500}, 500, false, true},
		{"temporary", fakegraph.FailRule{Code: 2}, 500, false, true},
		{"outside the window", fakegraph.FailRule{Code: 131047, Subcode: 2494010}, 400, false, false},
		{"bad recipient", fakegraph.FailRule{Code: 131026}, 400, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake, c := newGraph(t, whatsapp.ClientOptions{})
			tt.rule.Count = 2
			fake.FailNext(tt.rule)
			for i := 0; i < 2; i++ {
				_, err := c.Send(context.Background(), "1001", text("34600111222", "x"))
				var ge *whatsapp.GraphError
				if !errors.As(err, &ge) {
					t.Fatalf("send %d: %v, want a *GraphError", i, err)
				}
				if ge.HTTPStatus != tt.status || ge.Code != tt.rule.Code || ge.Subcode != tt.rule.Subcode || ge.Throttled() != tt.throttled || ge.Retryable() != tt.retryable {
					t.Fatalf("send %d: %+v throttled %v retryable %v", i, ge, ge.Throttled(), ge.Retryable())
				}
			}
			if _, err := c.Send(context.Background(), "1001", text("34600111222", "x")); err != nil {
				t.Fatalf("third send after two failures: %v", err)
			}
			if n := len(fake.Sent()); n != 1 {
				t.Fatalf("%d accepted sends, want 1", n)
			}
		})
	}
}

func TestClientRefusals(t *testing.T) {
	fake, _ := newGraph(t, whatsapp.ClientOptions{})
	srv := httptest.NewServer(fake.Handler())
	defer srv.Close()
	bad, err := whatsapp.NewClient(srv.URL, "wrong-token", whatsapp.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.CloseIdleConnections()
	_, err = bad.Send(context.Background(), "1001", text("1", "x"))
	var ge *whatsapp.GraphError
	if !errors.As(err, &ge) || ge.Code != 190 || ge.HTTPStatus != 401 || ge.Retryable() {
		t.Fatalf("wrong token: %v, want a permanent code 190", err)
	}
	if _, err := bad.Send(context.Background(), "10/01", text("1", "x")); err == nil || errors.As(err, &ge) && ge.HTTPStatus != 0 {
		t.Fatalf("a phone number id with a slash was sent: %v", err)
	}
	// A payload the Graph API refuses (no messaging_product).
	good, _ := whatsapp.NewClient(srv.URL, token, whatsapp.ClientOptions{})
	defer good.CloseIdleConnections()
	_, err = good.Send(context.Background(), "1001", json.RawMessage(`{"to":"1","type":"text"}`))
	if !errors.As(err, &ge) || ge.Code != 100 || ge.Retryable() {
		t.Fatalf("bad payload: %v, want code 100", err)
	}
	if _, err := whatsapp.NewClient("ftp://x", "", whatsapp.ClientOptions{MaxMediaBytes: -1}); err == nil || strings.Count(err.Error(), "\n") != 2 {
		t.Fatalf("NewClient with three problems: %v, want all three listed", err)
	}
}

func TestMediaDownload(t *testing.T) {
	fake, c := newGraph(t, whatsapp.ClientOptions{MaxMediaBytes: 1000})
	small := bytes.Repeat([]byte("a"), 1000)
	fake.PutMedia("SMALL", "image/jpeg", small)
	fake.PutMedia("BIG", "image/jpeg", bytes.Repeat([]byte("b"), 1001))
	ctx := context.Background()

	mi, data, err := c.Media(ctx, "SMALL", 0)
	if err != nil || !bytes.Equal(data, small) || mi.MimeType != "image/jpeg" || mi.FileSize != 1000 {
		t.Fatalf("small: %+v, %d bytes, %v", mi, len(data), err)
	}
	if _, _, err := c.Media(ctx, "BIG", 0); !errors.Is(err, whatsapp.ErrMediaTooLarge) {
		t.Fatalf("big: %v, want ErrMediaTooLarge", err)
	}
	if _, _, err := c.Media(ctx, "SMALL", 999); !errors.Is(err, whatsapp.ErrMediaTooLarge) {
		t.Fatalf("small under a lower limit: %v, want ErrMediaTooLarge", err)
	}
	// A server that understates the size is cut at the limit.
	liar := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/jpeg")
		_, _ = w.Write(bytes.Repeat([]byte("c"), 5000))
	}))
	defer liar.Close()
	if _, err := c.Download(ctx, whatsapp.MediaInfo{URL: liar.URL, FileSize: 10}, 0); !errors.Is(err, whatsapp.ErrMediaTooLarge) {
		t.Fatalf("understated size: %v, want ErrMediaTooLarge", err)
	}
	var ge *whatsapp.GraphError
	if _, _, err := c.Media(ctx, "NOPE", 0); !errors.As(err, &ge) || ge.HTTPStatus != 404 {
		t.Fatalf("unknown media: %v, want a 404 GraphError", err)
	}
}
