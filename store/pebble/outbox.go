package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"charla"
	"charla/store"
)

// Key kinds of the WhatsApp outbox (see store/outbox.go):
//
//	'o' <conv> <seq: 8 bytes BE>   outboxRecord (JSON), written by Append with its message
//	'q' <conv> <seq: 8 bytes BE>   "" while the entry is open (pending or sending)
//	's' <wamid>                    statusRecord (JSON): the platform's last word on a sent message
//
// 'q' is a small index of the open entries, so that the whatsapp actor's
// scan at start reads only what is left to do, never the whole history.
const (
	kindOutbox byte = 'o'
	kindOpen   byte = 'q'
	kindStatus byte = 's'
)

func outboxKey(conv charla.ConvID, seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(convPrefix(nil, kindOutbox, conv), uint64(seq))
}

func openKey(conv charla.ConvID, seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(convPrefix(nil, kindOpen, conv), uint64(seq))
}

func statusKey(wamid string) []byte { return append([]byte{kindStatus}, wamid...) }

// parseConvSeqKey reverses outboxKey and openKey.
func parseConvSeqKey(k []byte) (charla.ConvID, charla.Seq, error) {
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)) != 1+uint64(w)+n+8 {
		return "", 0, fmt.Errorf("malformed outbox key %x", k)
	}
	conv := charla.ConvID(k[1+w : 1+w+int(n)])
	return conv, charla.Seq(binary.BigEndian.Uint64(k[len(k)-8:])), nil
}

// outboxRecord is an entry as stored (conv and seq are in the key).
type outboxRecord struct {
	ClientMsgID string            `json:"client_msg_id"`
	Sender      charla.Sender     `json:"sender"`
	Body        json.RawMessage   `json:"body"`
	TS          time.Time         `json:"ts"`
	State       store.OutboxState `json:"state"`
	Attempts    int               `json:"attempts,omitempty"`
	NextAttempt time.Time         `json:"next_attempt"`
	WAMID       string            `json:"wamid,omitempty"`
	ErrorCode   int               `json:"error_code,omitempty"`
	ErrorTitle  string            `json:"error_title,omitempty"`
}

func recordOf(e store.OutboxEntry) outboxRecord {
	return outboxRecord{ClientMsgID: e.ClientMsgID, Sender: e.Sender, Body: e.Body, TS: e.TS, State: e.State,
		Attempts: e.Attempts, NextAttempt: e.NextAttempt, WAMID: e.WAMID, ErrorCode: e.ErrorCode, ErrorTitle: e.ErrorTitle}
}

func (r outboxRecord) entry(conv charla.ConvID, seq charla.Seq) store.OutboxEntry {
	return store.OutboxEntry{Conv: conv, Seq: seq, ClientMsgID: r.ClientMsgID, Sender: r.Sender, Body: r.Body, TS: r.TS,
		State: r.State, Attempts: r.Attempts, NextAttempt: r.NextAttempt, WAMID: r.WAMID, ErrorCode: r.ErrorCode, ErrorTitle: r.ErrorTitle}
}

// statusRecord is a DeliveryStatus as stored (the wamid is the key).
type statusRecord struct {
	Conv        charla.ConvID `json:"conv,omitempty"`
	Seq         charla.Seq    `json:"seq,omitempty"`
	ClientMsgID string        `json:"client_msg_id,omitempty"`
	Status      string        `json:"status,omitempty"`
	ErrorCode   int           `json:"error_code,omitempty"`
	ErrorTitle  string        `json:"error_title,omitempty"`
	TS          time.Time     `json:"ts"`
}

func (r statusRecord) status(wamid string) store.DeliveryStatus {
	return store.DeliveryStatus{WAMID: wamid, Conv: r.Conv, Seq: r.Seq, ClientMsgID: r.ClientMsgID,
		Status: r.Status, ErrorCode: r.ErrorCode, ErrorTitle: r.ErrorTitle, TS: r.TS}
}

// enqueueOutbound adds m's outbox entry to Append's batch when m is
// outbound: the entry commits with the message or not at all.
func enqueueOutbound(b *pebbledb.Batch, m charla.Message, seq charla.Seq, ts time.Time) error {
	if !store.Outbound(m) {
		return nil
	}
	m.Seq, m.TS = seq, ts
	rec, err := json.Marshal(recordOf(store.NewOutboxEntry(m)))
	if err != nil {
		return fmt.Errorf("outbox entry: %w", err)
	}
	if err := b.Set(outboxKey(m.Conv, seq), rec, nil); err != nil {
		return fmt.Errorf("outbox entry: %w", err)
	}
	return b.Set(openKey(m.Conv, seq), nil, nil)
}

// OpenOutbox returns the entries that are pending or sending, by
// conversation and seq.
func (s *Store) OpenOutbox(ctx context.Context) ([]store.OutboxEntry, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: open outbox: %w", err)
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: []byte{kindOpen}, UpperBound: []byte{kindOpen + 1}})
	if err != nil {
		return nil, fmt.Errorf("pebble: open outbox: %w", err)
	}
	defer it.Close()
	var out []store.OutboxEntry
	for ok := it.First(); ok; ok = it.Next() {
		conv, seq, err := parseConvSeqKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("pebble: open outbox: %w", err)
		}
		var r outboxRecord
		found, err := s.getJSON(outboxKey(conv, seq), &r)
		if err != nil || !found {
			return nil, fmt.Errorf("pebble: open outbox: %s seq %d: entry missing (%v)", conv, seq, err)
		}
		out = append(out, r.entry(conv, seq))
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("pebble: open outbox: %w", err)
	}
	return out, nil
}

// OutboxOf returns every outbox entry of conv, in seq order, each with the
// delivery status of its wamid.
func (s *Store) OutboxOf(ctx context.Context, conv charla.ConvID) ([]store.OutboxEntry, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: outbox of %s: %w", conv, err)
	}
	defer end()
	prefix := convPrefix(nil, kindOutbox, conv)
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("pebble: outbox of %s: %w", conv, err)
	}
	defer it.Close()
	var out []store.OutboxEntry
	for ok := it.First(); ok; ok = it.Next() {
		_, seq, err := parseConvSeqKey(it.Key())
		if err != nil {
			return nil, fmt.Errorf("pebble: outbox of %s: %w", conv, err)
		}
		var r outboxRecord
		if err := json.Unmarshal(it.Value(), &r); err != nil {
			return nil, fmt.Errorf("pebble: outbox of %s: seq %d: %w", conv, seq, err)
		}
		e := r.entry(conv, seq)
		if e.WAMID != "" {
			var st statusRecord
			if _, err := s.getJSON(statusKey(e.WAMID), &st); err != nil {
				return nil, fmt.Errorf("pebble: outbox of %s: status of %s: %w", conv, e.WAMID, err)
			}
			e.Delivery = st.status(e.WAMID)
		}
		out = append(out, e)
	}
	return out, it.Error()
}

// SaveOutbox records the whatsapp actor's view of an entry (state,
// attempts, next attempt, wamid, error); a final entry leaves the open
// index. When the entry has a wamid, it is linked to that wamid's delivery
// status, which is returned: notifications that arrived before the Graph
// API's answer are not lost. The entry must exist (Append wrote it).
func (s *Store) SaveOutbox(ctx context.Context, e store.OutboxEntry) (store.DeliveryStatus, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return store.DeliveryStatus{}, fmt.Errorf("pebble: save outbox %s seq %d: %w", e.Conv, e.Seq, err)
	}
	defer end()
	s.outboxMu.Lock()
	defer s.outboxMu.Unlock()
	fail := func(err error) (store.DeliveryStatus, error) {
		return store.DeliveryStatus{}, fmt.Errorf("pebble: save outbox %s seq %d: %w", e.Conv, e.Seq, err)
	}
	var r outboxRecord
	found, err := s.getJSON(outboxKey(e.Conv, e.Seq), &r)
	switch {
	case err != nil:
		return fail(fmt.Errorf("%w: %w", store.ErrUnavailable, err))
	case !found:
		return fail(fmt.Errorf("%w: no such entry", store.ErrInvalid))
	}
	b := s.db.NewBatch()
	defer b.Close()
	rec, _ := json.Marshal(recordOf(e)) // a record of plain fields always marshals
	if err := b.Set(outboxKey(e.Conv, e.Seq), rec, nil); err != nil {
		return fail(err)
	}
	if e.State == store.OutboxSent || e.State == store.OutboxFailed {
		if err := b.Delete(openKey(e.Conv, e.Seq), nil); err != nil {
			return fail(err)
		}
	}
	var st statusRecord
	if e.WAMID != "" {
		if _, err := s.getJSON(statusKey(e.WAMID), &st); err != nil {
			return fail(fmt.Errorf("%w: %w", store.ErrUnavailable, err))
		}
		st.Conv, st.Seq, st.ClientMsgID = e.Conv, e.Seq, e.ClientMsgID
		v, _ := json.Marshal(st)
		if err := b.Set(statusKey(e.WAMID), v, nil); err != nil {
			return fail(err)
		}
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fail(fmt.Errorf("%w: %w", store.ErrUnavailable, err))
	}
	if e.WAMID == "" {
		return store.DeliveryStatus{}, nil
	}
	return st.status(e.WAMID), nil
}

// ApplyWhatsAppStatus moves the delivery status of n.WAMID forward to
// n.Status (store.DeliveryStatus.Advance) and returns it as stored, with
// the outbound message it belongs to when that is known; changed is false
// when n was late or repeated (nothing written).
func (s *Store) ApplyWhatsAppStatus(ctx context.Context, n store.DeliveryStatus) (store.DeliveryStatus, bool, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return store.DeliveryStatus{}, false, fmt.Errorf("pebble: apply status of %s: %w", n.WAMID, err)
	}
	defer end()
	if n.WAMID == "" || store.StatusRank(n.Status) == 0 {
		return store.DeliveryStatus{}, false, fmt.Errorf("pebble: apply status %q of %q: %w: need a wamid and sent, delivered, read or failed", n.Status, n.WAMID, store.ErrInvalid)
	}
	s.outboxMu.Lock()
	defer s.outboxMu.Unlock()
	var r statusRecord
	if _, err := s.getJSON(statusKey(n.WAMID), &r); err != nil {
		return store.DeliveryStatus{}, false, fmt.Errorf("pebble: apply status of %s: %w: %w", n.WAMID, store.ErrUnavailable, err)
	}
	st := r.status(n.WAMID)
	if !st.Advance(n) {
		return st, false, nil
	}
	r.Status, r.ErrorCode, r.ErrorTitle, r.TS = st.Status, st.ErrorCode, st.ErrorTitle, st.TS
	v, _ := json.Marshal(r)
	if err := s.db.Set(statusKey(n.WAMID), v, pebbledb.Sync); err != nil {
		return store.DeliveryStatus{}, false, fmt.Errorf("pebble: apply status of %s: %w: %w", n.WAMID, store.ErrUnavailable, err)
	}
	return st, true, nil
}

// lastInboundScan bounds LastInbound's walk back through a conversation.
const lastInboundScan = 10_000

// LastInbound returns when the customer of conv last wrote (zero when not
// among its last lastInboundScan messages): the start of WhatsApp's
// 24-hour customer-service window.
func (s *Store) LastInbound(ctx context.Context, conv charla.ConvID) (time.Time, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return time.Time{}, fmt.Errorf("pebble: last inbound of %s: %w", conv, err)
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, msgBounds(conv, 0))
	if err != nil {
		return time.Time{}, fmt.Errorf("pebble: last inbound of %s: %w", conv, err)
	}
	defer it.Close()
	prefix := convPrefix(nil, kindMsg, conv)
	n := 0
	for ok := it.Last(); ok && n < lastInboundScan; ok, n = it.Prev(), n+1 {
		seq, err := seqOf(prefix, it.Key())
		if err != nil {
			return time.Time{}, fmt.Errorf("pebble: last inbound of %s: %w", conv, err)
		}
		m, err := decodeRecord(conv, seq, it.Value())
		if err != nil {
			return time.Time{}, fmt.Errorf("pebble: last inbound of %s: %w", conv, err)
		}
		if m.Sender.Role == charla.RoleCustomer {
			return m.TS, nil
		}
	}
	if err := it.Error(); err != nil {
		return time.Time{}, fmt.Errorf("pebble: last inbound of %s: %w", conv, err)
	}
	return time.Time{}, nil
}
