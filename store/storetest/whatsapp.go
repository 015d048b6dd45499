package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"charla/store"
)

// WhatsAppStore is the channel's extension of a store (the inbound actor's
// WebhookStore, and Contact for the outbound side).
type WhatsAppStore interface {
	RecordWebhook(ctx context.Context, ev store.WebhookEvent) (dup bool, err error)
	FinishWebhook(ctx context.Context, hash string, processedAt time.Time, problem string) error
	PendingWebhooks(ctx context.Context, limit int) ([]store.WebhookEvent, error)
	WebhookEvent(ctx context.Context, hash string) (store.WebhookEvent, bool, error)
	UpsertContacts(ctx context.Context, cs []store.Contact) error
	Contact(ctx context.Context, waID string) (store.Contact, bool, error)
}

func event(body string, at time.Time) store.WebhookEvent {
	sum := sha256.Sum256([]byte(body))
	return store.WebhookEvent{Hash: hex.EncodeToString(sum[:]), Body: []byte(body), ReceivedAt: at}
}

// WhatsApp runs the conformance suite of the channel's records against the
// stores open returns (a fresh one per subtest).
func WhatsApp(t *testing.T, open func(t *testing.T) WhatsAppStore) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 28, 9, 0, 0, 0, time.UTC)

	t.Run("webhook events", func(t *testing.T) {
		s := open(t)
		a, b, c := event(`{"a":1}`, t0), event(`{"b":2}`, t0.Add(time.Second)), event(`{"c":3}`, t0.Add(2*time.Second))
		for _, ev := range []store.WebhookEvent{b, a, c} {
			if dup, err := s.RecordWebhook(ctx, ev); err != nil || dup {
				t.Fatalf("record %s: dup %v, %v", ev.Body, dup, err)
			}
		}
		if dup, err := s.RecordWebhook(ctx, a); err != nil || !dup {
			t.Fatalf("second record: dup %v, %v; want a duplicate", dup, err)
		}
		pending, err := s.PendingWebhooks(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(pending) != 3 || pending[0].Hash != a.Hash || pending[1].Hash != b.Hash || pending[2].Hash != c.Hash || !bytes.Equal(pending[0].Body, a.Body) || !pending[0].ReceivedAt.Equal(t0) {
			t.Fatalf("pending %+v, want a, b, c in arrival order", pending)
		}
		if p, _ := s.PendingWebhooks(ctx, 2); len(p) != 2 {
			t.Fatalf("limit 2 gave %d", len(p))
		}
		done := t0.Add(time.Minute)
		if err := s.FinishWebhook(ctx, b.Hash, done, "entry[0]: bad"); err != nil {
			t.Fatal(err)
		}
		if pending, _ = s.PendingWebhooks(ctx, 10); len(pending) != 2 || pending[1].Hash != c.Hash {
			t.Fatalf("pending after finishing b: %+v", pending)
		}
		got, found, err := s.WebhookEvent(ctx, b.Hash)
		if err != nil || !found || !got.ProcessedAt.Equal(done) || got.Problem != "entry[0]: bad" || !bytes.Equal(got.Body, b.Body) {
			t.Fatalf("finished event: %+v found %v, %v", got, found, err)
		}
		if dup, _ := s.RecordWebhook(ctx, b); !dup {
			t.Fatal("a processed event recorded again")
		}
		if _, found, err := s.WebhookEvent(ctx, event("nope", t0).Hash); found || err != nil {
			t.Fatalf("unknown event: found %v, %v", found, err)
		}
	})

	t.Run("concurrent redeliveries record once", func(t *testing.T) {
		s := open(t)
		ev := event(`{"same":"payload"}`, t0)
		var wg sync.WaitGroup
		var mu sync.Mutex
		fresh := 0
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dup, err := s.RecordWebhook(ctx, ev)
				if err != nil {
					t.Error(err)
					return
				}
				if !dup {
					mu.Lock()
					fresh++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if fresh != 1 {
			t.Fatalf("%d of 8 concurrent records were new, want 1", fresh)
		}
	})

	t.Run("contacts", func(t *testing.T) {
		s := open(t)
		steps := []struct {
			in   []store.Contact
			want store.Contact
		}{
			{[]store.Contact{{WaID: "346", Name: "Ana", PhoneNumberID: "1001", LastInboundAt: t0}}, store.Contact{WaID: "346", Name: "Ana", PhoneNumberID: "1001", LastInboundAt: t0}},
			// An older message (a late redelivery) does not move the time back;
			// its name still counts.
			{[]store.Contact{{WaID: "346", Name: "Ana M.", PhoneNumberID: "1002", LastInboundAt: t0.Add(-time.Hour)}}, store.Contact{WaID: "346", Name: "Ana M.", PhoneNumberID: "1001", LastInboundAt: t0}},
			// No name keeps the name; a later message moves time and number.
			{[]store.Contact{{WaID: "346", PhoneNumberID: "1002", LastInboundAt: t0.Add(time.Hour)}}, store.Contact{WaID: "346", Name: "Ana M.", PhoneNumberID: "1002", LastInboundAt: t0.Add(time.Hour)}},
			// Two updates of one contact in one call: the later time wins
			// whatever their order.
			{[]store.Contact{{WaID: "346", PhoneNumberID: "1003", LastInboundAt: t0.Add(3 * time.Hour)}, {WaID: "346", PhoneNumberID: "1001", LastInboundAt: t0.Add(2 * time.Hour)}},
				store.Contact{WaID: "346", Name: "Ana M.", PhoneNumberID: "1003", LastInboundAt: t0.Add(3 * time.Hour)}},
			// A name without any message yet.
			{[]store.Contact{{WaID: "999", Name: "Bo"}}, store.Contact{WaID: "999", Name: "Bo"}},
		}
		for i, st := range steps {
			if err := s.UpsertContacts(ctx, st.in); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			got, found, err := s.Contact(ctx, st.want.WaID)
			if err != nil || !found || got.Name != st.want.Name || got.PhoneNumberID != st.want.PhoneNumberID || !got.LastInboundAt.Equal(st.want.LastInboundAt) {
				t.Fatalf("step %d: %+v found %v, %v; want %+v", i, got, found, err, st.want)
			}
		}
		if _, found, err := s.Contact(ctx, "nobody"); found || err != nil {
			t.Fatalf("unknown contact: found %v, %v", found, err)
		}
	})
}
