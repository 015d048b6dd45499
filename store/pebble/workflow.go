package pebble

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"charla"
	"charla/store"
)

// Key kinds of the conversation workflow (issue 13). Lists and searches of
// the embedded store are scans of one kind: it serves one process and its
// conversations number in the thousands, where a scan of small JSON records
// costs milliseconds; PostgreSQL has the indexes for more.
const (
	kindConvState byte = 'v' // conv → store.ConvState (JSON)
	kindBot       byte = 'b' // conv → botRecord (JSON)
	kindCanned    byte = 'k' // code → store.CannedReply (JSON)
	kindCapacity  byte = 'g' // agent id → capacity (8 bytes big-endian)
)

func stateKey(conv charla.ConvID) []byte { return append([]byte{kindConvState}, conv...) }
func botKey(conv charla.ConvID) []byte   { return append([]byte{kindBot}, conv...) }
func cannedKey(code string) []byte       { return append([]byte{kindCanned}, code...) }
func capacityKey(agent string) []byte    { return append([]byte{kindCapacity}, agent...) }

// kindBounds bounds a scan of every key of kind.
func kindBounds(kind byte) *pebbledb.IterOptions {
	return &pebbledb.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}}
}

// scanJSON decodes every value of kind into a fresh T and hands it to fn.
func scanJSON[T any](ctx context.Context, s *Store, kind byte, fn func(T)) error {
	it, err := s.db.NewIterWithContext(ctx, kindBounds(kind))
	if err != nil {
		return err
	}
	defer it.Close()
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return err
		}
		var rec T
		if err := json.Unmarshal(v, &rec); err != nil {
			return fmt.Errorf("malformed record under %q: %w", it.Key(), err)
		}
		fn(rec)
	}
	return it.Error()
}

// setJSON writes key → JSON of v in one synced batch.
func (s *Store) setJSON(ctx context.Context, what string, kvs func(b *pebbledb.Batch) error) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	defer end()
	b := s.db.NewBatch()
	defer b.Close()
	if err := kvs(b); err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: %s: %w", what, err)
	}
	return nil
}

func setRecord(b *pebbledb.Batch, key []byte, v any) error {
	rec, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Set(key, rec, nil)
}

// SaveConvStates writes the states in one synced batch; a state older than
// the stored one (a lower Version) is skipped.
func (s *Store) SaveConvStates(ctx context.Context, states []store.ConvState) error {
	s.workflowMu.Lock()
	defer s.workflowMu.Unlock()
	return s.setJSON(ctx, "save conversation states", func(b *pebbledb.Batch) error {
		for _, c := range states {
			// Only the stored version matters here: decoding the whole
			// state (tags, reads, last message) cost the inbox's every save
			// as much as the write itself.
			var old struct {
				Version uint64 `json:"version"`
			}
			if found, err := s.getJSON(stateKey(c.ID), &old); err != nil {
				return err
			} else if found && old.Version > c.Version {
				continue
			}
			if err := setRecord(b, stateKey(c.ID), c); err != nil {
				return err
			}
		}
		return nil
	})
}

// LoadConvState reads one conversation's state; found is false for a
// conversation that has none yet.
func (s *Store) LoadConvState(ctx context.Context, conv charla.ConvID) (c store.ConvState, found bool, err error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return c, false, fmt.Errorf("pebble: load conversation state: %w", err)
	}
	defer end()
	found, err = s.getJSON(stateKey(conv), &c)
	return c, found, err
}

// LoadInbox returns every conversation that is not resolved, and the
// highest Version of any.
func (s *Store) LoadInbox(ctx context.Context) ([]store.ConvState, uint64, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("pebble: load inbox: %w", err)
	}
	defer end()
	var out []store.ConvState
	var top uint64
	err = scanJSON(ctx, s, kindConvState, func(c store.ConvState) {
		top = max(top, c.Version)
		if c.Status != store.StatusResolved {
			out = append(out, c)
		}
	})
	return out, top, err
}

// ListConvStates is a scan of every state, filtered, sorted and paged.
func (s *Store) ListConvStates(ctx context.Context, f store.ConvFilter) ([]store.ConvState, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: list conversations: %w", err)
	}
	defer end()
	var out []store.ConvState
	err = scanJSON(ctx, s, kindConvState, func(c store.ConvState) {
		if f.Matches(c) && (f.After == nil || f.Before(*f.After, c)) {
			out = append(out, c)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("pebble: list conversations: %w", err)
	}
	slices.SortFunc(out, func(a, b store.ConvState) int {
		if f.Before(a, b) {
			return -1
		}
		return 1
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// botRecord is a chatbot session as stored.
type botRecord struct {
	Customer  string          `json:"customer"`
	State     json.RawMessage `json:"state"`
	ExpiresAt time.Time       `json:"expires_at"`
	UpdatedAt time.Time       `json:"updated_at"`
}

// SaveBotSession writes a chatbot session.
func (s *Store) SaveBotSession(ctx context.Context, b store.BotSession) error {
	return s.setJSON(ctx, "save bot session", func(batch *pebbledb.Batch) error {
		return setRecord(batch, botKey(b.Conv), botRecord{Customer: b.Customer, State: b.State, ExpiresAt: b.ExpiresAt.UTC(), UpdatedAt: b.UpdatedAt.UTC()})
	})
}

// LoadBotSession reads a chatbot session; found is false when none is saved.
func (s *Store) LoadBotSession(ctx context.Context, conv charla.ConvID) (store.BotSession, bool, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return store.BotSession{}, false, fmt.Errorf("pebble: load bot session: %w", err)
	}
	defer end()
	var r botRecord
	found, err := s.getJSON(botKey(conv), &r)
	if err != nil || !found {
		return store.BotSession{}, false, err
	}
	return store.BotSession{Conv: conv, Customer: r.Customer, State: r.State, ExpiresAt: r.ExpiresAt, UpdatedAt: r.UpdatedAt}, true, nil
}

// PutCanned creates or replaces a canned reply.
func (s *Store) PutCanned(ctx context.Context, c store.CannedReply) error {
	return s.setJSON(ctx, "put canned reply", func(b *pebbledb.Batch) error { return setRecord(b, cannedKey(c.Code), c) })
}

// DeleteCanned removes a canned reply; found is false when there was none.
func (s *Store) DeleteCanned(ctx context.Context, code string) (bool, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return false, fmt.Errorf("pebble: delete canned reply: %w", err)
	}
	defer end()
	s.workflowMu.Lock()
	defer s.workflowMu.Unlock()
	found, err := s.has(cannedKey(code))
	if err != nil || !found {
		return false, err
	}
	return true, s.db.Delete(cannedKey(code), pebbledb.Sync)
}

// ListCanned returns every canned reply, by code.
func (s *Store) ListCanned(ctx context.Context) ([]store.CannedReply, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: list canned replies: %w", err)
	}
	defer end()
	out := []store.CannedReply{}
	err = scanJSON(ctx, s, kindCanned, func(c store.CannedReply) { out = append(out, c) })
	return out, err
}

// SetAgentCapacity sets how many open conversations an agent may be
// assigned at once; a negative capacity returns the agent to the default.
func (s *Store) SetAgentCapacity(ctx context.Context, agent string, capacity int) error {
	return s.setJSON(ctx, "set agent capacity", func(b *pebbledb.Batch) error {
		if capacity < 0 {
			return b.Delete(capacityKey(agent), nil)
		}
		return b.Set(capacityKey(agent), binary.BigEndian.AppendUint64(nil, uint64(capacity)), nil)
	})
}

// AgentCapacities returns the agents' own capacities (the others have the
// default).
func (s *Store) AgentCapacities(ctx context.Context) (map[string]int, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: agent capacities: %w", err)
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, kindBounds(kindCapacity))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[string]int{}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		if len(v) == 8 {
			out[string(it.Key()[1:])] = int(beUint64(v))
		}
	}
	return out, it.Error()
}

// SearchMessages is a scan of every message for the words of query
// (case-insensitive, every word must appear in the body's text), newest
// matches of each conversation first, at most limit. The embedded store has
// no text index: this costs a read of the whole log, fine for one process's
// history, and PostgreSQL's index serves the rest.
func (s *Store) SearchMessages(ctx context.Context, query string, limit int) ([]charla.Message, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: search: %w", err)
	}
	defer end()
	words := strings.Fields(strings.ToLower(query))
	if len(words) == 0 {
		return nil, nil
	}
	it, err := s.db.NewIterWithContext(ctx, kindBounds(kindMsg))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []charla.Message
	for ok := it.First(); ok; ok = it.Next() {
		conv, seq, ok := splitMsgKey(it.Key())
		if !ok {
			continue
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		m, err := decodeRecord(conv, seq, v)
		if err != nil {
			continue
		}
		var b struct{ Text string }
		_ = json.Unmarshal(m.Body, &b)
		text := strings.ToLower(b.Text)
		if !containsAll(text, words) {
			continue
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, err
	}
	slices.SortFunc(out, func(a, b charla.Message) int { return b.TS.Compare(a.TS) })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func containsAll(text string, words []string) bool {
	for _, w := range words {
		if !strings.Contains(text, w) {
			return false
		}
	}
	return true
}

// splitMsgKey reverses msgKey.
func splitMsgKey(k []byte) (charla.ConvID, charla.Seq, bool) {
	if len(k) < 1+1+8 || k[0] != kindMsg {
		return "", 0, false
	}
	n, w := binary.Uvarint(k[1:])
	if w <= 0 || uint64(len(k)-1-w) != n+8 {
		return "", 0, false
	}
	conv := charla.ConvID(k[1+w : 1+w+int(n)])
	return conv, charla.Seq(binary.BigEndian.Uint64(k[len(k)-8:])), true
}
