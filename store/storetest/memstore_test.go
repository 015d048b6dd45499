package storetest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"charla"
	"charla/store"
	"charla/store/storetest"
)

// TestSuiteAgainstReference runs the suite against the smallest store that
// follows the documented semantics, so that the suite itself is checked to
// demand nothing beyond them (nothing bolt- or postgres-specific).
func TestSuiteAgainstReference(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store { return newMemStore() },
		Reopen: func(t *testing.T, old store.Store) store.Store {
			m := old.(*memStore)
			m.mu.Lock()
			defer m.mu.Unlock()
			return &memStore{convs: m.convs}
		},
	})
}

// memConv is one conversation of memStore.
type memConv struct {
	msgs  []charla.Message
	ids   map[string]charla.Seq
	reads map[string]charla.Seq
}

// memStore is a reference store.Store kept in memory.
type memStore struct {
	mu     sync.Mutex
	convs  map[charla.ConvID]*memConv
	closed bool
}

func newMemStore() *memStore { return &memStore{convs: map[charla.ConvID]*memConv{}} }

func (s *memStore) check(ctx context.Context) error {
	if s.closed {
		return store.ErrClosed
	}
	return ctx.Err()
}

func (s *memStore) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	for _, m := range msgs {
		if m.Conv == "" || m.ClientMsgID == "" || !json.Valid(m.Body) {
			return nil, fmt.Errorf("mem: invalid message %+v", m)
		}
	}
	// Work on copies so that nothing is visible unless the call succeeds.
	staged := map[charla.ConvID]*memConv{}
	get := func(id charla.ConvID) *memConv {
		if c, ok := staged[id]; ok {
			return c
		}
		c := &memConv{ids: map[string]charla.Seq{}, reads: map[string]charla.Seq{}}
		if old, ok := s.convs[id]; ok {
			c.msgs, c.ids, c.reads = old.msgs[:len(old.msgs):len(old.msgs)], maps.Clone(old.ids), old.reads
		}
		staged[id] = c
		return c
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	res := make([]store.AppendResult, len(msgs))
	for i, m := range msgs {
		c := get(m.Conv)
		if seq, ok := c.ids[m.ClientMsgID]; ok {
			res[i] = store.AppendResult{Seq: seq, TS: c.msgs[seq-1].TS, Duplicate: true}
			continue
		}
		m.Seq = charla.Seq(len(c.msgs) + 1)
		if m.TS.IsZero() {
			m.TS = now
		} else {
			m.TS = m.TS.UTC().Truncate(time.Microsecond)
		}
		c.msgs = append(c.msgs, m)
		c.ids[m.ClientMsgID] = m.Seq
		res[i] = store.AppendResult{Seq: m.Seq, TS: m.TS}
	}
	maps.Copy(s.convs, staged)
	return res, nil
}

func (s *memStore) Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	c, ok := s.convs[conv]
	if !ok || limit <= 0 || after >= charla.Seq(len(c.msgs)) {
		return nil, nil
	}
	return append([]charla.Message(nil), c.msgs[after:min(len(c.msgs), int(after)+limit)]...), nil
}

func (s *memStore) Head(ctx context.Context, conv charla.ConvID) (charla.Seq, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return 0, err
	}
	if c, ok := s.convs[conv]; ok {
		return charla.Seq(len(c.msgs)), nil
	}
	return 0, nil
}

func (s *memStore) SetReadCursor(ctx context.Context, conv charla.ConvID, user string, seq charla.Seq) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return err
	}
	c, ok := s.convs[conv]
	if !ok {
		c = &memConv{ids: map[string]charla.Seq{}, reads: map[string]charla.Seq{}}
		s.convs[conv] = c
	}
	c.reads[user] = max(c.reads[user], seq)
	return nil
}

func (s *memStore) ReadCursors(ctx context.Context, conv charla.ConvID) (map[string]charla.Seq, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.check(ctx); err != nil {
		return nil, err
	}
	if c, ok := s.convs[conv]; ok {
		return maps.Clone(c.reads), nil
	}
	return map[string]charla.Seq{}, nil
}

func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.Join(store.ErrClosed)
	}
	s.closed = true
	return nil
}
