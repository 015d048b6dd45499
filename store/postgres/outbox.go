package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"charla"
	"charla/store"
)

// The WhatsApp outbox (store/outbox.go). Its rows are written by the
// messages_outbox trigger of migration 0004 in the statement that inserts
// the message; here the whatsapp actor reads and updates them.

// outboxColumns are read in this order by scanOutbox.
const outboxColumns = `o.conversation_id, o.seq, o.client_msg_id, o.payload->>'sender_id', o.payload->>'sender_role',
o.payload->'body', o.created_at, o.status, o.attempts, o.next_attempt_at, coalesce(o.wamid, ''), o.error_code, o.error_title`

func scanOutbox(row pgx.Row, extra ...any) (store.OutboxEntry, error) {
	var (
		e          store.OutboxEntry
		conv, role string
		seq        int64
		body       []byte
		state      string
	)
	err := row.Scan(append([]any{&conv, &seq, &e.ClientMsgID, &e.Sender.ID, &role, &body, &e.TS, &state,
		&e.Attempts, &e.NextAttempt, &e.WAMID, &e.ErrorCode, &e.ErrorTitle}, extra...)...)
	e.Conv, e.Seq, e.Sender.Role, e.State = charla.ConvID(conv), charla.Seq(seq), charla.Role(role), store.OutboxState(state)
	e.Body, e.TS, e.NextAttempt = compactJSON(body), e.TS.UTC(), e.NextAttempt.UTC()
	return e, err
}

// OpenOutbox returns the entries that are pending or sending, by
// conversation and seq.
func (s *Store) OpenOutbox(ctx context.Context) ([]store.OutboxEntry, error) {
	var out []store.OutboxEntry
	err := s.do(ctx, opOutbox, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT `+outboxColumns+` FROM outbox o
WHERE o.channel = 'whatsapp' AND o.status IN ('pending', 'sending') ORDER BY o.conversation_id, o.seq`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			e, err := scanOutbox(rows)
			if err != nil {
				return err
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// OutboxOf returns every outbox entry of conv, in seq order, each with the
// delivery status of its wamid.
func (s *Store) OutboxOf(ctx context.Context, conv charla.ConvID) ([]store.OutboxEntry, error) {
	var out []store.OutboxEntry
	err := s.do(ctx, opOutbox, func(ctx context.Context) error {
		out = out[:0]
		rows, err := s.pool.Query(ctx, `SELECT `+outboxColumns+`,
       coalesce(w.status, ''), coalesce(w.error_code, 0), coalesce(w.error_title, ''), w.status_at
FROM outbox o LEFT JOIN whatsapp_statuses w ON w.wamid = o.wamid
WHERE o.conversation_id = $1 AND o.channel = 'whatsapp' ORDER BY o.seq`, string(conv))
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d store.DeliveryStatus
			var at *time.Time
			e, err := scanOutbox(rows, &d.Status, &d.ErrorCode, &d.ErrorTitle, &at)
			if err != nil {
				return err
			}
			if e.WAMID != "" {
				d.WAMID, d.Conv, d.Seq, d.ClientMsgID = e.WAMID, e.Conv, e.Seq, e.ClientMsgID
				if at != nil {
					d.TS = at.UTC()
				}
				e.Delivery = d
			}
			out = append(out, e)
		}
		return rows.Err()
	})
	return out, err
}

// linkStatusSQL records which outbound message a wamid is, creating its
// status row when no notification came yet, and returns what the platform
// said so far. The upsert's row lock orders it with ApplyWhatsAppStatus.
const linkStatusSQL = `
INSERT INTO whatsapp_statuses AS w (wamid, conversation_id, seq, client_msg_id) VALUES ($1, $2, $3, $4)
ON CONFLICT (wamid) DO UPDATE SET conversation_id = EXCLUDED.conversation_id, seq = EXCLUDED.seq,
    client_msg_id = EXCLUDED.client_msg_id, updated_at = now()
RETURNING w.status, w.error_code, w.error_title, w.status_at`

// SaveOutbox records the whatsapp actor's view of an entry (state,
// attempts, next attempt, wamid, error), in one transaction with the link of
// its wamid to the delivery status, which is returned. The entry must exist.
func (s *Store) SaveOutbox(ctx context.Context, e store.OutboxEntry) (store.DeliveryStatus, error) {
	var st store.DeliveryStatus
	var missing bool
	err := s.do(ctx, opOutbox, func(ctx context.Context) error {
		return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if e.WAMID != "" {
				var at *time.Time
				st = store.DeliveryStatus{WAMID: e.WAMID, Conv: e.Conv, Seq: e.Seq, ClientMsgID: e.ClientMsgID}
				if err := tx.QueryRow(ctx, linkStatusSQL, e.WAMID, string(e.Conv), int64(e.Seq), e.ClientMsgID).
					Scan(&st.Status, &st.ErrorCode, &st.ErrorTitle, &at); err != nil {
					return err
				}
				if at != nil {
					st.TS = at.UTC()
				}
			}
			tag, err := tx.Exec(ctx, `UPDATE outbox SET status = $3, attempts = $4, next_attempt_at = $5,
    wamid = nullif($6, ''), error_code = $7, error_title = $8, updated_at = now()
WHERE conversation_id = $1 AND seq = $2 AND channel = 'whatsapp'`,
				string(e.Conv), int64(e.Seq), string(e.State), e.Attempts, e.NextAttempt, e.WAMID, e.ErrorCode, e.ErrorTitle)
			if err != nil {
				return err
			}
			if missing = tag.RowsAffected() == 0; missing {
				return errNoEntry // rolls the link back
			}
			return nil
		})
	})
	if missing {
		return store.DeliveryStatus{}, s.invalid(ctx, opOutbox, fmt.Errorf("save outbox %s seq %d: no such entry", e.Conv, e.Seq))
	}
	return st, err
}

var errNoEntry = errors.New("no such outbox entry")

// applyStatusSQL moves a wamid's status forward only: the update's WHERE
// refuses a status that does not outrank the stored one, and then nothing
// is returned.
const applyStatusSQL = `
INSERT INTO whatsapp_statuses AS w (wamid, status, error_code, error_title, status_at) VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (wamid) DO UPDATE SET status = EXCLUDED.status, error_code = EXCLUDED.error_code,
    error_title = EXCLUDED.error_title, status_at = EXCLUDED.status_at, updated_at = now()
    WHERE whatsapp_status_rank(EXCLUDED.status) > whatsapp_status_rank(w.status)
RETURNING coalesce(w.conversation_id, ''), coalesce(w.seq, 0), coalesce(w.client_msg_id, ''),
    w.status, w.error_code, w.error_title, w.status_at`

// ApplyWhatsAppStatus moves the delivery status of n.WAMID forward to
// n.Status (store.DeliveryStatus.Advance) and returns it as stored, with
// the outbound message it belongs to when that is known; changed is false
// when n was late or repeated (nothing written).
func (s *Store) ApplyWhatsAppStatus(ctx context.Context, n store.DeliveryStatus) (store.DeliveryStatus, bool, error) {
	if n.WAMID == "" || store.StatusRank(n.Status) == 0 {
		return store.DeliveryStatus{}, false, s.invalid(ctx, opOutbox, fmt.Errorf("apply status %q of %q: need a wamid and sent, delivered, read or failed", n.Status, n.WAMID))
	}
	var (
		st      store.DeliveryStatus
		changed bool
	)
	err := s.do(ctx, opOutbox, func(ctx context.Context) error {
		st, changed = store.DeliveryStatus{WAMID: n.WAMID}, true
		scan := func(row pgx.Row) error {
			var conv string
			var seq int64
			var at *time.Time
			err := row.Scan(&conv, &seq, &st.ClientMsgID, &st.Status, &st.ErrorCode, &st.ErrorTitle, &at)
			st.Conv, st.Seq = charla.ConvID(conv), charla.Seq(seq)
			if at != nil {
				st.TS = at.UTC()
			}
			return err
		}
		err := scan(s.pool.QueryRow(ctx, applyStatusSQL, n.WAMID, n.Status, n.ErrorCode, n.ErrorTitle, n.TS))
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		changed = false
		return scan(s.pool.QueryRow(ctx, `SELECT coalesce(conversation_id, ''), coalesce(seq, 0), coalesce(client_msg_id, ''),
    status, error_code, error_title, status_at FROM whatsapp_statuses WHERE wamid = $1`, n.WAMID))
	})
	return st, changed, err
}

// LastInbound returns when the customer of conv last wrote (zero when
// never): the start of WhatsApp's 24-hour customer-service window.
func (s *Store) LastInbound(ctx context.Context, conv charla.ConvID) (time.Time, error) {
	var at *time.Time
	err := s.do(ctx, opOutbox, func(ctx context.Context) error {
		return s.pool.QueryRow(ctx, `SELECT max(created_at) FROM messages
WHERE conversation_id = $1 AND sender_role = 'customer'`, string(conv)).Scan(&at)
	})
	if err != nil || at == nil {
		return time.Time{}, err
	}
	return at.UTC(), nil
}
