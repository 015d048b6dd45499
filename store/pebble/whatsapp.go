package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"charla/store"
)

// Key kinds of the WhatsApp channel (see the package comment).
const (
	kindWebhook byte = 'w' // 'e' ‖ hash → webhookRecord; 'p' ‖ received (8 bytes BE nanos) ‖ hash → "" while pending
	kindContact byte = 'c' // wa_id → contactRecord
)

func webhookKey(hash string) []byte { return append([]byte{kindWebhook, 'e'}, hash...) }

// pendingKey orders the pending events by arrival.
func pendingKey(received time.Time, hash string) []byte {
	k := binary.BigEndian.AppendUint64([]byte{kindWebhook, 'p'}, uint64(received.UnixNano()))
	return append(k, hash...)
}

func contactKey(waID string) []byte { return append([]byte{kindContact}, waID...) }

type webhookRecord struct {
	Body        []byte    `json:"body"`
	ReceivedAt  time.Time `json:"received_at"`
	ProcessedAt time.Time `json:"processed_at,omitzero"`
	Problem     string    `json:"problem,omitempty"`
}

type contactRecord struct {
	Name          string    `json:"name,omitempty"`
	PhoneNumberID string    `json:"phone_number_id,omitempty"`
	LastInboundAt time.Time `json:"last_inbound_at,omitzero"`
}

// RecordWebhook stores ev and its pending mark in one synced batch, unless
// an event of the same hash is already stored (dup).
func (s *Store) RecordWebhook(ctx context.Context, ev store.WebhookEvent) (dup bool, err error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return false, fmt.Errorf("pebble: record webhook: %w", err)
	}
	defer end()
	s.waMu.Lock()
	defer s.waMu.Unlock()
	if dup, err = s.has(webhookKey(ev.Hash)); err != nil || dup {
		return dup, wrapErr("record webhook", err)
	}
	rec, err := json.Marshal(webhookRecord{Body: ev.Body, ReceivedAt: ev.ReceivedAt.UTC()})
	if err != nil {
		return false, fmt.Errorf("pebble: record webhook: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(webhookKey(ev.Hash), rec, nil)
	_ = b.Set(pendingKey(ev.ReceivedAt, ev.Hash), nil, nil)
	return false, wrapErr("record webhook", b.Commit(pebbledb.Sync))
}

// FinishWebhook marks event hash processed at processedAt with problem.
func (s *Store) FinishWebhook(ctx context.Context, hash string, processedAt time.Time, problem string) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: finish webhook: %w", err)
	}
	defer end()
	s.waMu.Lock()
	defer s.waMu.Unlock()
	var r webhookRecord
	found, err := s.getJSON(webhookKey(hash), &r)
	if err != nil || !found {
		return wrapErr("finish webhook", err)
	}
	r.ProcessedAt, r.Problem = processedAt.UTC(), problem
	rec, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("pebble: finish webhook: %w", err)
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(webhookKey(hash), rec, nil)
	_ = b.Delete(pendingKey(r.ReceivedAt, hash), nil)
	return wrapErr("finish webhook", b.Commit(pebbledb.Sync))
}

// PendingWebhooks returns up to limit events not yet processed, oldest first.
func (s *Store) PendingWebhooks(ctx context.Context, limit int) ([]store.WebhookEvent, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: pending webhooks: %w", err)
	}
	defer end()
	lo := []byte{kindWebhook, 'p'}
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: lo, UpperBound: prefixEnd(lo)})
	if err != nil {
		return nil, wrapErr("pending webhooks", err)
	}
	var hashes []string
	for ok := it.First(); ok && len(hashes) < limit; ok = it.Next() {
		if k := it.Key(); len(k) > 10 {
			hashes = append(hashes, string(k[10:]))
		}
	}
	if err := it.Close(); err != nil {
		return nil, wrapErr("pending webhooks", err)
	}
	out := make([]store.WebhookEvent, 0, len(hashes))
	for _, h := range hashes {
		var r webhookRecord
		if found, err := s.getJSON(webhookKey(h), &r); err != nil {
			return nil, wrapErr("pending webhooks", err)
		} else if found {
			out = append(out, store.WebhookEvent{Hash: h, Body: r.Body, ReceivedAt: r.ReceivedAt})
		}
	}
	return out, nil
}

// WebhookEvent returns the stored event of hash.
func (s *Store) WebhookEvent(ctx context.Context, hash string) (store.WebhookEvent, bool, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return store.WebhookEvent{}, false, fmt.Errorf("pebble: webhook event: %w", err)
	}
	defer end()
	var r webhookRecord
	found, err := s.getJSON(webhookKey(hash), &r)
	if err != nil || !found {
		return store.WebhookEvent{}, false, wrapErr("webhook event", err)
	}
	return store.WebhookEvent{Hash: hash, Body: r.Body, ReceivedAt: r.ReceivedAt, ProcessedAt: r.ProcessedAt, Problem: r.Problem}, true, nil
}

// UpsertContacts merges cs into the stored contacts in one synced batch: a
// name replaces the stored one only when given, the last inbound time (and
// its business number) only moves forward.
func (s *Store) UpsertContacts(ctx context.Context, cs []store.Contact) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: upsert contacts: %w", err)
	}
	defer end()
	s.waMu.Lock()
	defer s.waMu.Unlock()
	merged := map[string]*contactRecord{}
	b := s.db.NewBatch()
	defer b.Close()
	for _, c := range cs {
		r, ok := merged[c.WaID]
		if !ok {
			r = &contactRecord{}
			if _, err := s.getJSON(contactKey(c.WaID), r); err != nil {
				return wrapErr("upsert contacts", err)
			}
			merged[c.WaID] = r
		}
		mergeContact(r, c)
	}
	for id, r := range merged {
		rec, err := json.Marshal(r)
		if err != nil {
			return fmt.Errorf("pebble: upsert contacts: %w", err)
		}
		_ = b.Set(contactKey(id), rec, nil)
	}
	return wrapErr("upsert contacts", b.Commit(pebbledb.Sync))
}

func mergeContact(r *contactRecord, c store.Contact) {
	if c.Name != "" {
		r.Name = c.Name
	}
	if c.LastInboundAt.After(r.LastInboundAt) {
		r.LastInboundAt, r.PhoneNumberID = c.LastInboundAt.UTC(), c.PhoneNumberID
	}
}

// Contact returns the contact of waID.
func (s *Store) Contact(ctx context.Context, waID string) (store.Contact, bool, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return store.Contact{}, false, fmt.Errorf("pebble: contact: %w", err)
	}
	defer end()
	var r contactRecord
	found, err := s.getJSON(contactKey(waID), &r)
	if err != nil || !found {
		return store.Contact{}, false, wrapErr("contact", err)
	}
	return store.Contact{WaID: waID, Name: r.Name, PhoneNumberID: r.PhoneNumberID, LastInboundAt: r.LastInboundAt}, true, nil
}

// wrapErr wraps a pebble error of op, nil staying nil.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("pebble: %s: %w", op, err)
}
