package postgres

import (
	"sync/atomic"
	"time"
)

// op names a Store operation for statistics and errors.
type op uint8

const (
	opAppend op = iota
	opAppendSequenced
	opRange
	opHead
	opSetReadCursor
	opReadCursors
	opPing
	opMigrate
	opAuth       // agents and refresh tokens (agents.go)
	opWhatsApp   // webhook events and contacts (whatsapp.go)
	opOutbox     // the WhatsApp outbox and delivery statuses (outbox.go)
	opWorkflow   // conversation states, bot sessions, canned replies, search (workflow.go)
	opClaimShard // cluster fencing (fence.go)
	numOps
)

var opNames = [numOps]string{
	opAppend:          "append",
	opAppendSequenced: "append_sequenced",
	opRange:           "range",
	opHead:            "head",
	opSetReadCursor:   "set_read_cursor",
	opReadCursors:     "read_cursors",
	opPing:            "ping",
	opMigrate:         "migrate",
	opAuth:            "auth",
	opWhatsApp:        "whatsapp",
	opOutbox:          "outbox",
	opWorkflow:        "workflow",
	opClaimShard:      "claim_shard",
}

func (o op) String() string { return opNames[o] }

// opCounters are one operation's running totals, updated lock-free.
type opCounters struct {
	calls, errors, attempts, retries atomic.Int64
	latencyNanos, maxLatencyNanos    atomic.Int64
}

func (c *opCounters) record(d time.Duration, attempts int, failed bool) {
	c.calls.Add(1)
	c.attempts.Add(int64(attempts))
	if attempts > 1 {
		c.retries.Add(int64(attempts - 1))
	}
	if failed {
		c.errors.Add(1)
	}
	n := int64(d)
	c.latencyNanos.Add(n)
	for {
		old := c.maxLatencyNanos.Load()
		if n <= old || c.maxLatencyNanos.CompareAndSwap(old, n) {
			break
		}
	}
}

// Stats is a snapshot of the store's figures, as plain values so that the
// /metrics exporter (or a test) can read them without knowing pgx.
type Stats struct {
	// Pool describes the connection pool.
	Pool PoolStats
	// Ops has one entry per operation name ("append", "range", ...).
	Ops map[string]OpStats
	// AppendedMessages counts messages Append and AppendSequenced wrote.
	AppendedMessages int64
	// DuplicateMessages counts messages they reported as duplicates.
	DuplicateMessages int64
}

// PoolStats are pgxpool's figures: a pool that is often empty on acquire, or
// whose acquire wait grows, is the seed's "starved pool" made visible.
type PoolStats struct {
	AcquiredConns        int32
	IdleConns            int32
	TotalConns           int32
	ConstructingConns    int32
	MaxConns             int32
	AcquireCount         int64
	EmptyAcquireCount    int64
	CanceledAcquireCount int64
	// AcquireDuration is the total time spent acquiring connections.
	AcquireDuration time.Duration
	// EmptyAcquireWaitTime is the part of it spent waiting on an empty pool.
	EmptyAcquireWaitTime    time.Duration
	NewConnsCount           int64
	MaxLifetimeDestroyCount int64
	MaxIdleDestroyCount     int64
}

// OpStats are one operation's totals since Open. Latency covers whole calls,
// retries and backoff included; mean latency is LatencySum / Calls.
type OpStats struct {
	Calls    int64
	Errors   int64
	Attempts int64
	Retries  int64
	// LatencySum is the summed duration of all calls.
	LatencySum time.Duration
	// MaxLatency is the slowest call.
	MaxLatency time.Duration
}

// Stats returns the current figures. It is cheap (atomic loads and one pool
// stat) and safe to call at any time, even after Close.
func (s *Store) Stats() Stats {
	st := Stats{
		Ops:               make(map[string]OpStats, numOps),
		AppendedMessages:  s.appended.Load(),
		DuplicateMessages: s.duplicates.Load(),
	}
	for i := range s.ops {
		c := &s.ops[i]
		st.Ops[op(i).String()] = OpStats{
			Calls:      c.calls.Load(),
			Errors:     c.errors.Load(),
			Attempts:   c.attempts.Load(),
			Retries:    c.retries.Load(),
			LatencySum: time.Duration(c.latencyNanos.Load()),
			MaxLatency: time.Duration(c.maxLatencyNanos.Load()),
		}
	}
	p := s.pool.Stat()
	st.Pool = PoolStats{
		AcquiredConns:           p.AcquiredConns(),
		IdleConns:               p.IdleConns(),
		TotalConns:              p.TotalConns(),
		ConstructingConns:       p.ConstructingConns(),
		MaxConns:                p.MaxConns(),
		AcquireCount:            p.AcquireCount(),
		EmptyAcquireCount:       p.EmptyAcquireCount(),
		CanceledAcquireCount:    p.CanceledAcquireCount(),
		AcquireDuration:         p.AcquireDuration(),
		EmptyAcquireWaitTime:    p.EmptyAcquireWaitTime(),
		NewConnsCount:           p.NewConnsCount(),
		MaxLifetimeDestroyCount: p.MaxLifetimeDestroyCount(),
		MaxIdleDestroyCount:     p.MaxIdleDestroyCount(),
	}
	return st
}
