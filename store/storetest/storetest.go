// Package storetest is the conformance suite every store.Store implementation
// runs. The engine swaps the embedded store for postgres (and back) by
// configuration, so the semantics callers rely on (sequencing, dedup,
// durability, paging, cursors, errors) are pinned here once, as tests, rather
// than re-derived from prose by each implementation.
//
// An implementation's test calls Run from a normal test function:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, storetest.Harness{
//			Open:   func(t *testing.T) store.Store { return openFresh(t) },
//			Reopen: func(t *testing.T, old store.Store) store.Store { return openSame(t, old) },
//		})
//	}
//
// Semantics the suite decides where the store.Store doc comments are silent
// (implementations must agree on them):
//   - TS: a non-zero Message.TS given to Append is kept (in UTC, truncated to
//     microseconds); a zero one is set to the store's clock at Append. Append
//     results and Range return the same, UTC, microsecond-truncated instant.
//   - Bodies are compared as JSON values, not bytes (jsonb may normalise
//     spacing and key order); a body that is not valid JSON fails the call.
//   - An empty Conv or ClientMsgID fails the whole Append call and nothing of
//     it is written; so does a canceled context.
//   - A repeated (Conv, ClientMsgID) inside one call is a Duplicate of the
//     first occurrence in that call.
//   - Append of no messages returns no results and no error.
//   - Range with limit <= 0 returns no messages and no error.
//   - ReadCursors of a conversation without cursors is an empty, non-nil map.
//   - After Close every method, Close included, fails with an error wrapping
//     store.ErrClosed.
//   - A canceled context makes every method (but Close) fail with an error
//     wrapping the context's error.
package storetest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"charla"
	"charla/store"
)

// Harness tells Run how to obtain stores of the implementation under test.
// It is a struct rather than a bare func so that optional capabilities (such
// as durability across reopen) can be added without breaking callers.
type Harness struct {
	// Open returns a fresh, empty store, isolated from every other store Open
	// returned. Run closes it through t.Cleanup; Open must not.
	Open func(t *testing.T) store.Store

	// Reopen, when set, opens again the data behind old, which Run has
	// already closed, the way a restarted process would. Run closes the
	// returned store too. Nil skips the durability subtests, for
	// implementations that cannot reopen (e.g. an in-memory fake).
	Reopen func(t *testing.T, old store.Store) store.Store
}

// Run runs the whole suite against the implementation h describes, as
// subtests of t. It takes a few seconds at most, so implementations can afford
// to run it on every `go test`.
func Run(t *testing.T, h Harness) {
	t.Helper()
	if h.Open == nil {
		t.Fatal("storetest: Harness.Open is required")
	}
	s := &suite{h: h}
	t.Run("Append", func(t *testing.T) {
		t.Run("Sequencing", s.testSequencing)
		t.Run("DuplicateManyCallsLater", s.testDuplicateManyCallsLater)
		t.Run("IgnoresInputSeq", s.testIgnoresInputSeq)
		t.Run("Empty", s.testAppendEmpty)
		t.Run("InvalidIsAtomic", s.testInvalidIsAtomic)
		t.Run("RoundTrip", s.testRoundTrip)
		t.Run("StoreAssignsTS", s.testStoreAssignsTS)
	})
	t.Run("Range", func(t *testing.T) {
		t.Run("Window", s.testRangeWindow)
		t.Run("Paging", s.testRangePaging)
		t.Run("UnknownConversation", s.testUnknownConversation)
		t.Run("ConversationIsolation", s.testConversationIsolation)
	})
	t.Run("ReadCursors", func(t *testing.T) {
		t.Run("ForwardOnly", s.testCursorsForwardOnly)
		t.Run("PerConversation", s.testCursorsPerConversation)
	})
	t.Run("Concurrency", func(t *testing.T) {
		t.Run("AppendsAndReads", s.testConcurrentAppendsAndReads)
		t.Run("Cursors", s.testConcurrentCursors)
	})
	t.Run("Context", s.testCanceledContext)
	t.Run("Close", s.testClose)
	t.Run("Reopen", s.testReopen)
}

// suite carries the harness to the subtests.
type suite struct {
	h Harness
}

// open returns a fresh store that is closed when t ends.
func (s *suite) open(t *testing.T) store.Store {
	t.Helper()
	st := s.h.Open(t)
	if st == nil {
		t.Fatal("storetest: Harness.Open returned nil")
	}
	closeAtEnd(t, st)
	return st
}

// closeAtEnd closes st when t ends, tolerating a test that closed it already.
func closeAtEnd(t *testing.T, st store.Store) {
	t.Cleanup(func() {
		if err := st.Close(); err != nil && !errors.Is(err, store.ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
}

// idFor returns a client_msg_id in the canonical UUID form the engine
// accepts, distinct for distinct n, so that the keys look like production
// ones (and a store that validated them would still pass).
func idFor(n int) string {
	return fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n)
}

// msg builds a message the way a conversation actor would hand it over.
func msg(conv charla.ConvID, clientMsgID, text string) charla.Message {
	body, _ := json.Marshal(map[string]string{"text": text})
	return charla.Message{
		Conv:        conv,
		ClientMsgID: clientMsgID,
		Sender:      charla.Sender{ID: "user-1", Role: charla.RoleCustomer},
		Body:        body,
	}
}

// mustAppend appends msgs and fails the test on error or on a result count
// that does not match.
func mustAppend(t *testing.T, st store.Store, msgs ...charla.Message) []store.AppendResult {
	t.Helper()
	res, err := st.Append(t.Context(), msgs)
	if err != nil {
		t.Fatalf("Append(%d messages): %v", len(msgs), err)
	}
	if len(res) != len(msgs) {
		t.Fatalf("Append(%d messages) returned %d results", len(msgs), len(res))
	}
	return res
}

// mustRange returns every message of conv after after, failing on error.
func mustRange(t *testing.T, st store.Store, conv charla.ConvID, after charla.Seq, limit int) []charla.Message {
	t.Helper()
	got, err := st.Range(t.Context(), conv, after, limit)
	if err != nil {
		t.Fatalf("Range(%q, %d, %d): %v", conv, after, limit, err)
	}
	return got
}

// mustHead returns conv's head, failing on error.
func mustHead(t *testing.T, st store.Store, conv charla.ConvID) charla.Seq {
	t.Helper()
	h, err := st.Head(t.Context(), conv)
	if err != nil {
		t.Fatalf("Head(%q): %v", conv, err)
	}
	return h
}

// mustCursors returns conv's read cursors, failing on error.
func mustCursors(t *testing.T, st store.Store, conv charla.ConvID) map[string]charla.Seq {
	t.Helper()
	m, err := st.ReadCursors(t.Context(), conv)
	if err != nil {
		t.Fatalf("ReadCursors(%q): %v", conv, err)
	}
	if m == nil {
		t.Fatalf("ReadCursors(%q) returned a nil map, want a non-nil one", conv)
	}
	return m
}

// seqs lists the seqs of msgs, for readable failure messages.
func seqs(msgs []charla.Message) []charla.Seq {
	out := make([]charla.Seq, len(msgs))
	for i, m := range msgs {
		out[i] = m.Seq
	}
	return out
}

// wantTS is the instant a store must report for a caller-supplied TS.
func wantTS(ts time.Time) time.Time { return ts.UTC().Truncate(time.Microsecond) }

// checkTS reports whether got is a UTC, microsecond-truncated time; stores
// must be consistent about both so that Append results, Range and the wire
// agree to the byte.
func checkTS(t *testing.T, what string, got time.Time) {
	t.Helper()
	if got.IsZero() {
		t.Errorf("%s: TS is zero", what)
		return
	}
	if got.Location() != time.UTC {
		t.Errorf("%s: TS %v is in %v, want UTC", what, got, got.Location())
	}
	if got.Nanosecond()%1000 != 0 {
		t.Errorf("%s: TS %v has sub-microsecond digits, want it truncated to µs", what, got)
	}
}

// jsonEqual reports whether a and b encode the same JSON value.
func jsonEqual(a, b []byte) bool {
	if bytes.Equal(a, b) {
		return true
	}
	var va, vb any
	if json.Unmarshal(a, &va) != nil || json.Unmarshal(b, &vb) != nil {
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// diffMessage describes how got differs from want (empty when they agree on
// everything a caller can observe). TS is compared with time.Equal.
func diffMessage(got, want charla.Message) string {
	var d []string
	if got.Conv != want.Conv {
		d = append(d, fmt.Sprintf("Conv %q, want %q", got.Conv, want.Conv))
	}
	if got.Seq != want.Seq {
		d = append(d, fmt.Sprintf("Seq %d, want %d", got.Seq, want.Seq))
	}
	if got.ClientMsgID != want.ClientMsgID {
		d = append(d, fmt.Sprintf("ClientMsgID %q, want %q", got.ClientMsgID, want.ClientMsgID))
	}
	if got.Sender != want.Sender {
		d = append(d, fmt.Sprintf("Sender %v, want %v", got.Sender, want.Sender))
	}
	if !jsonEqual(got.Body, want.Body) {
		d = append(d, fmt.Sprintf("Body %s, want %s", got.Body, want.Body))
	}
	if !got.TS.Equal(want.TS) {
		d = append(d, fmt.Sprintf("TS %v, want %v", got.TS, want.TS))
	}
	if len(d) == 0 {
		return ""
	}
	return fmt.Sprint(d)
}

// checkMessages compares a Range result with the messages expected, in order.
func checkMessages(t *testing.T, what string, got, want []charla.Message) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: got %d messages (seqs %v), want %d (seqs %v)", what, len(got), seqs(got), len(want), seqs(want))
		return
	}
	for i := range got {
		if d := diffMessage(got[i], want[i]); d != "" {
			t.Errorf("%s: message %d: %s", what, i, d)
		}
		checkTS(t, fmt.Sprintf("%s: message %d", what, i), got[i].TS)
	}
}

// canceled returns a context that is already canceled.
func canceled(t *testing.T) context.Context {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return ctx
}
