package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"charla"
	"charla/store"
)

func TestClassify(t *testing.T) {
	pg := func(code string) error { return fmt.Errorf("query: %w", &pgconn.PgError{Code: code}) }
	cases := []struct {
		name      string
		err       error
		timedOut  bool
		kind      Kind
		retryable bool
	}{
		{"serialization", pg("40001"), false, KindUnavailable, true},
		{"deadlock", pg("40P01"), false, KindUnavailable, true},
		{"admin shutdown", pg("57P01"), false, KindUnavailable, true},
		{"crash shutdown", pg("57P02"), false, KindUnavailable, true},
		{"cannot connect now", pg("57P03"), false, KindUnavailable, true},
		{"connection exception", pg("08006"), false, KindUnavailable, true},
		{"too many connections", pg("53300"), false, KindUnavailable, true},
		{"bad password", pg("28P01"), false, KindUnavailable, false},
		{"no database", pg("3D000"), false, KindUnavailable, false},
		{"invalid json", pg("22P02"), false, KindInvalid, false},
		{"check violation", pg("23514"), false, KindInvalid, false},
		{"unique violation", pg("23505"), false, KindInvalid, false},
		{"syntax", pg("42601"), false, KindInternal, false},
		{"undefined table", pg("42P01"), false, KindInternal, false},
		{"append race", retryHint{pg("23505")}, false, KindUnavailable, true},
		{"eof", io.ErrUnexpectedEOF, false, KindUnavailable, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), false, KindUnavailable, true},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, KindUnavailable, true},
		{"conn closed", pgconn.ErrConnClosed, false, KindUnavailable, true},
		{"attempt timeout", errors.New("whatever"), true, KindUnavailable, true},
		{"deadline", context.DeadlineExceeded, false, KindUnavailable, true},
		{"closed", store.ErrClosed, false, KindClosed, false},
		{"scan bug", errors.New("cannot scan"), false, KindInternal, false},
	}
	for _, tc := range cases {
		kind, retryable, _ := classify(tc.err, tc.timedOut)
		if kind != tc.kind || retryable != tc.retryable {
			t.Errorf("%s: classify = %v, %v; want %v, %v", tc.name, kind, retryable, tc.kind, tc.retryable)
		}
	}
}

func TestErrorMatching(t *testing.T) {
	e := fmt.Errorf("store actor: %w", &Error{Op: "append", Kind: KindUnavailable, Retryable: true, Attempts: 6, Err: io.EOF})
	if !errors.Is(e, store.ErrUnavailable) || errors.Is(e, store.ErrInvalid) || !IsRetryable(e) || !IsUnavailable(e) || !errors.Is(e, io.EOF) {
		t.Errorf("matching of %v", e)
	}
	if got, want := errors.Unwrap(e).Error(), "postgres: append: unavailable after 6 attempts: EOF"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	c := &Error{Op: "append_sequenced", Kind: KindConflict, Err: &SeqConflictError{Conflicts: []SeqConflict{{Conv: "c", Seq: 3, ClientMsgID: "a", StoredClientMsgID: "b"}}}}
	if !errors.Is(c, ErrConflict) || IsRetryable(c) {
		t.Errorf("conflict matching of %v", c)
	}
	if IsRetryable(errors.New("plain")) || IsUnavailable(nil) {
		t.Error("foreign errors must not match")
	}
}

func TestBackoff(t *testing.T) {
	s := &Store{opts: Options{RetryBaseDelay: 10 * time.Millisecond, RetryMaxDelay: 80 * time.Millisecond}}
	for attempt := 1; attempt <= 8; attempt++ {
		ceil := min(10*time.Millisecond<<(attempt-1), 80*time.Millisecond)
		var maxSeen time.Duration
		for range 200 {
			d := s.backoff(attempt)
			if d < 0 || d >= ceil {
				t.Fatalf("attempt %d: backoff %v outside [0, %v)", attempt, d, ceil)
			}
			maxSeen = max(maxSeen, d)
		}
		if maxSeen < ceil/2 {
			t.Errorf("attempt %d: largest of 200 backoffs %v, want jitter spread over [0, %v)", attempt, maxSeen, ceil)
		}
	}
}

func TestReclaimOwnWrites(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	t1 := t0.Add(time.Second)
	msgs := []charla.Message{{Conv: "c", ClientMsgID: "a"}, {Conv: "c", ClientMsgID: "b"}, {Conv: "c", ClientMsgID: "a"}}
	sent := []time.Time{t1, t1, t1}
	res := []store.AppendResult{
		{Seq: 5, TS: t1, Duplicate: true}, // written by this call's failed attempt
		{Seq: 2, TS: t0, Duplicate: true}, // a genuine duplicate from earlier
		{Seq: 5, TS: t1, Duplicate: true}, // the repeat inside the call
	}
	reclaimOwnWrites(msgs, sent, res)
	if res[0].Duplicate || !res[1].Duplicate || !res[2].Duplicate {
		t.Errorf("after reclaim: %+v", res)
	}
}
