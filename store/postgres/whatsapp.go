package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/jackc/pgx/v5"

	"charla/store"
)

// RecordWebhook inserts ev unless an event of the same hash is stored
// (dup): the primary key decides, so concurrent redeliveries record once.
func (s *Store) RecordWebhook(ctx context.Context, ev store.WebhookEvent) (dup bool, err error) {
	err = s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		tag, err := s.pool.Exec(ctx, `INSERT INTO whatsapp_webhook_events (hash, body, received_at) VALUES ($1, $2, $3)
ON CONFLICT (hash) DO NOTHING`, ev.Hash, ev.Body, ev.ReceivedAt)
		dup = err == nil && tag.RowsAffected() == 0
		return err
	})
	return dup, err
}

// FinishWebhook marks event hash processed at processedAt with problem.
func (s *Store) FinishWebhook(ctx context.Context, hash string, processedAt time.Time, problem string) error {
	return s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		_, err := s.pool.Exec(ctx, `UPDATE whatsapp_webhook_events SET processed_at = $2, problem = $3 WHERE hash = $1`, hash, processedAt, problem)
		return err
	})
}

// PendingWebhooks returns up to limit events not yet processed, oldest first.
func (s *Store) PendingWebhooks(ctx context.Context, limit int) ([]store.WebhookEvent, error) {
	var out []store.WebhookEvent
	err := s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		rows, err := s.pool.Query(ctx, `SELECT hash, body, received_at FROM whatsapp_webhook_events
WHERE processed_at IS NULL ORDER BY received_at, hash LIMIT $1`, limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.WebhookEvent, error) {
			var ev store.WebhookEvent
			err := r.Scan(&ev.Hash, &ev.Body, &ev.ReceivedAt)
			ev.ReceivedAt = ev.ReceivedAt.UTC()
			return ev, err
		})
		return err
	})
	return out, err
}

// WebhookEvent returns the stored event of hash.
func (s *Store) WebhookEvent(ctx context.Context, hash string) (store.WebhookEvent, bool, error) {
	ev := store.WebhookEvent{Hash: hash}
	found := true
	err := s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		var processed *time.Time
		err := s.pool.QueryRow(ctx, `SELECT body, received_at, processed_at, problem FROM whatsapp_webhook_events WHERE hash = $1`, hash).
			Scan(&ev.Body, &ev.ReceivedAt, &processed, &ev.Problem)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		ev.ReceivedAt = ev.ReceivedAt.UTC()
		if processed != nil {
			ev.ProcessedAt = processed.UTC()
		}
		return err
	})
	return ev, found && err == nil, err
}

// UpsertContacts merges cs into the stored contacts in one transaction: a
// name replaces the stored one only when given, the last inbound time (and
// its business number) only moves forward, whatever order concurrent
// upserts commit in.
func (s *Store) UpsertContacts(ctx context.Context, cs []store.Contact) error {
	if len(cs) == 0 {
		return nil
	}
	return s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		var b pgx.Batch
		for _, c := range cs {
			var last *time.Time
			if !c.LastInboundAt.IsZero() {
				last = &c.LastInboundAt
			}
			b.Queue(`INSERT INTO whatsapp_contacts AS c (wa_id, name, phone_number_id, last_inbound_at) VALUES ($1, $2, $3, $4)
ON CONFLICT (wa_id) DO UPDATE SET
    name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE c.name END,
    phone_number_id = CASE WHEN excluded.last_inbound_at > c.last_inbound_at OR c.last_inbound_at IS NULL AND excluded.last_inbound_at IS NOT NULL
                           THEN excluded.phone_number_id ELSE c.phone_number_id END,
    last_inbound_at = GREATEST(c.last_inbound_at, excluded.last_inbound_at),
    updated_at = now()`, c.WaID, c.Name, c.PhoneNumberID, last)
		}
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return tx.SendBatch(ctx, &b).Close() })
	})
}

// Contact returns the contact of waID.
func (s *Store) Contact(ctx context.Context, waID string) (store.Contact, bool, error) {
	c := store.Contact{WaID: waID}
	found := true
	err := s.do(ctx, opWhatsApp, func(ctx context.Context) error {
		var last *time.Time
		err := s.pool.QueryRow(ctx, `SELECT name, phone_number_id, last_inbound_at FROM whatsapp_contacts WHERE wa_id = $1`, waID).
			Scan(&c.Name, &c.PhoneNumberID, &last)
		if errors.Is(err, pgx.ErrNoRows) {
			found = false
			return nil
		}
		if last != nil {
			c.LastInboundAt = last.UTC()
		}
		return err
	})
	return c, found && err == nil, err
}
