package storetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"testing"

	"charla"
	"charla/store"
)

// op is one Store method called with fixed arguments, so that the context and
// close tests cover every method the same way.
type op struct {
	name string
	call func(ctx context.Context, st store.Store) error
}

// ops lists every method but Close.
var ops = []op{
	{"Append", func(ctx context.Context, st store.Store) error {
		_, err := st.Append(ctx, []charla.Message{msg("a", idFor(1000), "x")})
		return err
	}},
	{"Range", func(ctx context.Context, st store.Store) error {
		_, err := st.Range(ctx, "a", 0, 10)
		return err
	}},
	{"Head", func(ctx context.Context, st store.Store) error {
		_, err := st.Head(ctx, "a")
		return err
	}},
	{"SetReadCursor", func(ctx context.Context, st store.Store) error {
		return st.SetReadCursor(ctx, "a", "zed", 1)
	}},
	{"ReadCursors", func(ctx context.Context, st store.Store) error {
		_, err := st.ReadCursors(ctx, "a")
		return err
	}},
}

// testCanceledContext pins that a caller that gave up (deadline, shutdown)
// gets the context's error, so it can tell it from a store failure, and that
// nothing was written on its behalf.
func (s *suite) testCanceledContext(t *testing.T) {
	st := s.open(t)
	appended(t, st, "a", 2, 2)
	for _, o := range ops {
		t.Run(o.name, func(t *testing.T) {
			if err := o.call(canceled(t), st); !errors.Is(err, context.Canceled) {
				t.Errorf("%s with a canceled context: %v, want an error wrapping context.Canceled", o.name, err)
			}
		})
	}
	if h := mustHead(t, st, "a"); h != 2 {
		t.Errorf("Head after a canceled Append = %d, want 2", h)
	}
	if m := mustCursors(t, st, "a"); len(m) != 0 {
		t.Errorf("cursors after a canceled SetReadCursor = %v, want none", m)
	}
}

// testClose pins that a closed store says so (ErrClosed) on every method, so
// that the store actor can tell shutdown from an outage.
func (s *suite) testClose(t *testing.T) {
	st := s.open(t)
	appended(t, st, "a", 2, 2)
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, o := range ops {
		if err := o.call(t.Context(), st); !errors.Is(err, store.ErrClosed) {
			t.Errorf("%s after Close: %v, want an error wrapping store.ErrClosed", o.name, err)
		}
	}
	if err := st.Close(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("second Close: %v, want an error wrapping store.ErrClosed", err)
	}
}

// testReopen pins durability across a restart: messages, heads, cursors and
// the dedup keys of old messages all survive, and sequencing resumes at
// head+1. It needs Harness.Reopen.
func (s *suite) testReopen(t *testing.T) {
	if s.h.Reopen == nil {
		t.Skip("Harness.Reopen is nil: durability across reopen not tested")
	}
	convs := []charla.ConvID{"a", "b", "a:1"}
	st := s.open(t)
	first := map[string]store.AppendResult{} // conv/id → first acceptance
	for call := range 6 {
		var batch []charla.Message
		for i, conv := range convs {
			if call%len(convs) >= i { // conversations of different lengths
				batch = append(batch, msg(conv, idFor(call+1), fmt.Sprintf("%s %d", conv, call)))
			}
		}
		if call > 0 {
			batch = append(batch, msg("a", idFor(call), "retry")) // a duplicate in most calls
		}
		for i, r := range mustAppend(t, st, batch...) {
			k := fmt.Sprintf("%s/%s", batch[i].Conv, batch[i].ClientMsgID)
			if _, ok := first[k]; !ok {
				first[k] = r
			}
		}
	}
	cursors := map[string]charla.Seq{"alice": 2, "bob": 4}
	for user, seq := range cursors {
		if err := st.SetReadCursor(t.Context(), "a", user, seq); err != nil {
			t.Fatalf("SetReadCursor: %v", err)
		}
	}
	heads := map[charla.ConvID]charla.Seq{}
	logs := map[charla.ConvID][]charla.Message{}
	for _, conv := range convs {
		heads[conv] = mustHead(t, st, conv)
		logs[conv] = mustRange(t, st, conv, 0, 1000)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	st = s.reopen(t, st)
	for _, conv := range convs {
		if h := mustHead(t, st, conv); h != heads[conv] {
			t.Errorf("Head(%q) after reopen = %d, want %d", conv, h, heads[conv])
		}
		checkMessages(t, fmt.Sprintf("Range(%q) after reopen", conv), mustRange(t, st, conv, 0, 1000), logs[conv])
	}
	if got := mustCursors(t, st, "a"); !maps.Equal(got, cursors) {
		t.Errorf("cursors after reopen = %v, want %v", got, cursors)
	}

	// Old client ids are still known; new ones continue at head+1.
	batch := []charla.Message{
		msg("a", idFor(1), "retry after restart"),
		msg("b", idFor(1000), "new after restart"),
		msg("b", idFor(2), "retry after restart"),
		msg("a", idFor(1000), "new after restart"),
	}
	res := mustAppend(t, st, batch...)
	wants := []struct {
		seq charla.Seq
		dup bool
	}{
		{first["a/"+idFor(1)].Seq, true},
		{heads["b"] + 1, false},
		{first["b/"+idFor(2)].Seq, true},
		{heads["a"] + 1, false},
	}
	for i, w := range wants {
		r := res[i]
		if r.Seq != w.seq || r.Duplicate != w.dup {
			t.Errorf("after reopen, message %d (%s %s): seq %d duplicate %v, want seq %d duplicate %v",
				i, batch[i].Conv, batch[i].ClientMsgID, r.Seq, r.Duplicate, w.seq, w.dup)
			continue
		}
		k := fmt.Sprintf("%s/%s", batch[i].Conv, batch[i].ClientMsgID)
		if w.dup && !r.TS.Equal(first[k].TS) {
			t.Errorf("after reopen, duplicate %d: TS %v, want the original %v", i, r.TS, first[k].TS)
		}
	}
	if err := st.SetReadCursor(t.Context(), "a", "bob", 1); err != nil {
		t.Fatalf("SetReadCursor: %v", err)
	}
	if got := mustCursors(t, st, "a"); got["bob"] != 4 {
		t.Errorf("bob's cursor after reopen and a lower read = %d, want 4", got["bob"])
	}

	// What was written after the reopen is as durable as what was before.
	if err := st.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	st = s.reopen(t, st)
	for conv, want := range map[charla.ConvID]charla.Seq{"a": heads["a"] + 1, "b": heads["b"] + 1, "a:1": heads["a:1"]} {
		if h := mustHead(t, st, conv); h != want {
			t.Errorf("Head(%q) after second reopen = %d, want %d", conv, h, want)
		}
	}
}

// reopen reopens old's data through the harness; the result is closed when
// t ends.
func (s *suite) reopen(t *testing.T, old store.Store) store.Store {
	t.Helper()
	st := s.h.Reopen(t, old)
	if st == nil {
		t.Fatal("storetest: Harness.Reopen returned nil")
	}
	closeAtEnd(t, st)
	return st
}
