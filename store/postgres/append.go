package postgres

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"charla"
	"charla/store"
)

// appendSQL is the group commit: one statement, so one round trip and one
// implicit transaction (one WAL flush) for any number of messages of any
// number of conversations. The input arrives as parallel arrays ($1..$6).
//
//   - input numbers the rows in call order (WITH ORDINALITY).
//   - existing finds the (conversation, client_msg_id) pairs already stored,
//     one probe of the unique index messages_client_msg_id_key per pair. The
//     LATERAL ... LIMIT 1 is deliberate: as a plain join or IN, a plan made
//     while the table was small (a prepared statement's generic plan) keeps
//     seq-scanning messages on every call as it grows — measured, Append went
//     from 5 ms to 45 ms per 100 messages over 200k rows.
//   - fresh keeps the first occurrence of each new pair and numbers it within
//     its conversation (rn) in call order, with n the conversation's count.
//   - heads bumps conversations.head by n (creating the conversation when
//     needed) and returns the new head; the row lock it takes serializes
//     concurrent appenders of one conversation, and ON CONFLICT DO UPDATE
//     reads the latest committed head even if it changed since the statement's
//     snapshot. The fresh rows take seqs head-n+1 .. head. Rows are locked
//     in conversation id order, so that two calls sharing conversations
//     (which callers avoid anyway) wait for each other instead of deadlocking.
//   - ins writes them. It has no ON CONFLICT: should another writer commit the
//     same pair between our snapshot and our insert, the unique violation
//     aborts the whole statement (no seq is burnt) and the retry reports the
//     pair as a duplicate.
//   - The final select answers one row per input row, in order: duplicates of
//     stored pairs get the stored seq and time, later occurrences of a pair
//     new in this call get the first occurrence's.
const appendSQL = `
WITH input AS (
    SELECT t.conv, t.cmid, t.sender_id, t.sender_role, t.body, t.ts, t.ord
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
         WITH ORDINALITY AS t(conv, cmid, sender_id, sender_role, body, ts, ord)
), existing AS (
    SELECT k.conv AS conversation_id, k.cmid AS client_msg_id, m.seq, m.created_at
    FROM (SELECT DISTINCT conv, cmid FROM input) k
    CROSS JOIN LATERAL (
        SELECT seq, created_at FROM messages
        WHERE conversation_id = k.conv AND client_msg_id = k.cmid
        LIMIT 1
    ) m
), fresh AS (
    SELECT f.*,
           row_number() OVER (PARTITION BY f.conv ORDER BY f.ord) AS rn,
           count(*) OVER (PARTITION BY f.conv) AS n
    FROM (
        SELECT DISTINCT ON (i.conv, i.cmid) i.*
        FROM input i
        WHERE NOT EXISTS (SELECT 1 FROM existing e
                          WHERE e.conversation_id = i.conv AND e.client_msg_id = i.cmid)
        ORDER BY i.conv, i.cmid, i.ord
    ) f
), heads AS (
    INSERT INTO conversations AS c (id, head)
    SELECT conv, count(*) FROM fresh GROUP BY conv ORDER BY conv
    ON CONFLICT (id) DO UPDATE SET head = c.head + EXCLUDED.head, updated_at = now()
    RETURNING c.id, c.head
), ins AS (
    INSERT INTO messages (conversation_id, seq, client_msg_id, sender_id, sender_role, body, created_at)
    SELECT f.conv, h.head - f.n + f.rn, f.cmid, f.sender_id, f.sender_role, f.body::jsonb, f.ts
    FROM fresh f JOIN heads h ON h.id = f.conv
    RETURNING conversation_id, client_msg_id, seq, created_at
)
SELECT i.ord,
       coalesce(e.seq, n.seq) AS seq,
       coalesce(e.created_at, n.created_at) AS created_at,
       (f.ord IS DISTINCT FROM i.ord) AS duplicate
FROM input i
LEFT JOIN existing e ON e.conversation_id = i.conv AND e.client_msg_id = i.cmid
LEFT JOIN fresh f ON f.conv = i.conv AND f.cmid = i.cmid
LEFT JOIN ins n ON n.conversation_id = i.conv AND n.client_msg_id = i.cmid
ORDER BY i.ord`

// appendFencedSQL is appendSQL for a fenced store: fenceGate on its input,
// $7 the shards of the call, $8 this node's epochs of them. Only a fenced
// store sends it, so the single-node statement stays exactly appendSQL.
var appendFencedSQL = withFenceGate(appendSQL, "AS t(conv, cmid, sender_id, sender_role, body, ts, ord)", 7, 8)

// appendArgs are the parallel arrays both append statements take.
type appendArgs struct {
	conv, cmid, senderID, senderRole, body []string
	ts                                     []time.Time
	seq                                    []int64
}

// makeAppendArgs validates msgs and lays them out as arrays. Times are fixed
// here, once per call, so that every attempt of a retried call writes the
// same instant (which lets a retry recognise its own earlier commit).
func makeAppendArgs(msgs []charla.Message, withSeq bool) (appendArgs, error) {
	n := len(msgs)
	a := appendArgs{
		conv: make([]string, n), cmid: make([]string, n), senderID: make([]string, n),
		senderRole: make([]string, n), body: make([]string, n), ts: make([]time.Time, n),
	}
	if withSeq {
		a.seq = make([]int64, n)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	for i, m := range msgs {
		if m.Conv == "" {
			return a, fmt.Errorf("message %d: empty conversation id", i)
		}
		if m.ClientMsgID == "" {
			return a, fmt.Errorf("message %d: empty client_msg_id", i)
		}
		if withSeq {
			if m.Seq == 0 || m.Seq > math.MaxInt64 {
				return a, fmt.Errorf("message %d: seq %d out of range", i, m.Seq)
			}
			a.seq[i] = int64(m.Seq)
		}
		a.conv[i] = string(m.Conv)
		a.cmid[i] = m.ClientMsgID
		a.senderID[i] = m.Sender.ID
		a.senderRole[i] = string(m.Sender.Role)
		a.body[i] = string(m.Body)
		if m.TS.IsZero() {
			a.ts[i] = now
		} else {
			a.ts[i] = m.TS.UTC().Truncate(time.Microsecond)
		}
	}
	return a, nil
}

// Append stores msgs in one statement and returns one result per message;
// see store.Store. On a retry after a failure that may have committed (the
// connection died while the commit was in flight), a pair found stored with
// exactly the time this call wrote is this call's own write and is reported
// as new, not as a duplicate.
//
// On a fenced store (WithFence) the same statement also checks, under a
// share lock and before writing, that this node still holds every shard of
// the call at its epoch; if not, nothing is written and the call fails
// with a *store.FencedError (errors.Is store.ErrFenced), not retried. The
// check adds no round trip: it is part of the statement. (A call whose
// first attempt committed unbeknownst to it, its connection lost, and
// whose retry is fenced reports ErrFenced although its messages are
// stored: the new owner's dedup recognises them when they are resent.)
func (s *Store) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	if len(msgs) == 0 {
		return nil, s.do(ctx, opAppend, func(context.Context) error { return nil })
	}
	args, err := makeAppendArgs(msgs, false)
	if err != nil {
		return nil, s.invalid(ctx, opAppend, err)
	}
	var fa fenceArgs
	if s.fence != nil {
		if fa, err = s.fence.check(args.conv); err != nil {
			return nil, s.refuse(ctx, opAppend, err)
		}
	}
	res := make([]store.AppendResult, len(msgs))
	_, err = s.doAttempts(ctx, opAppend, func(ctx context.Context, attempt int) error {
		var rows pgx.Rows
		var err error
		if s.fence == nil {
			rows, err = s.pool.Query(ctx, appendSQL, args.conv, args.cmid, args.senderID, args.senderRole, args.body, args.ts)
		} else {
			rows, err = s.pool.Query(ctx, appendFencedSQL, args.conv, args.cmid, args.senderID, args.senderRole, args.body, args.ts,
				fa.shards, fa.epochs)
		}
		if err != nil {
			return appendErr(err)
		}
		var (
			ord, seq int64
			ts       time.Time
			dup      bool
			got      int
		)
		_, err = pgx.ForEachRow(rows, []any{&ord, &seq, &ts, &dup}, func() error {
			if ord < 1 || int(ord) > len(res) {
				return fmt.Errorf("result for input row %d of %d", ord, len(res))
			}
			res[ord-1] = store.AppendResult{Seq: charla.Seq(seq), TS: ts.UTC(), Duplicate: dup}
			got++
			return nil
		})
		if err != nil {
			return appendErr(err)
		}
		if got == 0 && s.fence != nil {
			// The fence gate refused the call: nothing was written.
			return s.fencedResult(ctx, opAppend, fa)
		}
		if got != len(res) {
			return fmt.Errorf("got %d results for %d messages", got, len(res))
		}
		if attempt > 1 {
			reclaimOwnWrites(msgs, args.ts, res)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.countResults(res)
	return res, nil
}

// appendErr marks the unique-key race of appendSQL (another writer stored the
// same pair after our snapshot) as retryable: the retry sees the pair and
// reports a duplicate.
func appendErr(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "messages_client_msg_id_key" {
		return retryHint{err}
	}
	return err
}

// reclaimOwnWrites un-marks as duplicates the first occurrence of each pair
// whose stored time is the one this call wrote: an earlier attempt of this
// very call committed it before its connection failed.
func reclaimOwnWrites(msgs []charla.Message, ts []time.Time, res []store.AppendResult) {
	type key struct {
		conv charla.ConvID
		cmid string
	}
	seen := make(map[key]bool, len(msgs))
	for i, m := range msgs {
		k := key{m.Conv, m.ClientMsgID}
		if seen[k] {
			continue
		}
		seen[k] = true
		if res[i].Duplicate && res[i].TS.Equal(ts[i]) {
			res[i].Duplicate = false
		}
	}
}

// countResults adds a call's results to the message counters.
func (s *Store) countResults(res []store.AppendResult) {
	var dups int64
	for _, r := range res {
		if r.Duplicate {
			dups++
		}
	}
	s.appended.Add(int64(len(res)) - dups)
	s.duplicates.Add(dups)
}

// invalid reports a request rejected before it reached the server, counted
// like any other failed call. A closed store still says closed.
func (s *Store) invalid(ctx context.Context, o op, err error) error {
	return s.do(ctx, o, func(context.Context) error {
		return &Error{Op: o.String(), Kind: KindInvalid, Err: err}
	})
}

// refuse reports a write the fence refused before it reached the server (a
// shard this node does not hold: fenced) or could not check (a fence that
// answers nonsense: internal), counted like any other failed call.
func (s *Store) refuse(ctx context.Context, o op, err error) error {
	return s.do(ctx, o, func(context.Context) error {
		var fe *store.FencedError
		if errors.As(err, &fe) {
			return fenced(o, fe)
		}
		return &Error{Op: o.String(), Kind: KindInternal, Err: err}
	})
}

// appendSequencedSQL drains the outage spool: messages that already carry
// the seq the engine gave them. ON CONFLICT on (conversation_id,
// client_msg_id) makes a re-drain a no-op; a seq taken by a different message
// violates messages_pkey and aborts the statement (nothing written). The
// conversation's head moves up to the highest seq written, never down, so
// that Append continues after the drained messages.
const appendSequencedSQL = `
WITH input AS (
    SELECT t.conv, t.seq, t.cmid, t.sender_id, t.sender_role, t.body, t.ts, t.ord
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::timestamptz[])
         WITH ORDINALITY AS t(conv, seq, cmid, sender_id, sender_role, body, ts, ord)
), heads AS (
    INSERT INTO conversations AS c (id, head)
    SELECT conv, max(seq) FROM input GROUP BY conv ORDER BY conv
    ON CONFLICT (id) DO UPDATE SET head = greatest(c.head, EXCLUDED.head), updated_at = now()
    RETURNING c.id
), ins AS (
    INSERT INTO messages (conversation_id, seq, client_msg_id, sender_id, sender_role, body, created_at)
    SELECT i.conv, i.seq, i.cmid, i.sender_id, i.sender_role, i.body::jsonb, i.ts
    FROM input i JOIN heads h ON h.id = i.conv
    ORDER BY i.ord
    ON CONFLICT (conversation_id, client_msg_id) DO NOTHING
    RETURNING conversation_id, client_msg_id
)
SELECT i.ord,
       coalesce(m.seq, i.seq) AS seq,
       coalesce(m.created_at, i.ts) AS created_at,
       (n.client_msg_id IS NULL) AS duplicate
FROM input i
LEFT JOIN ins n ON n.conversation_id = i.conv AND n.client_msg_id = i.cmid
LEFT JOIN LATERAL (
    SELECT seq, created_at FROM messages
    WHERE n.client_msg_id IS NULL AND conversation_id = i.conv AND client_msg_id = i.cmid
    LIMIT 1
) m ON true
ORDER BY i.ord`

// appendSequencedFencedSQL is appendSequencedSQL for a fenced store:
// fenceGate on its input, $8 the shards, $9 this node's epochs.
var appendSequencedFencedSQL = withFenceGate(appendSequencedSQL, "AS t(conv, seq, cmid, sender_id, sender_role, body, ts, ord)", 8, 9)

// SeqConflict is one message AppendSequenced could not store because its seq
// is taken by a different message.
type SeqConflict struct {
	Conv        charla.ConvID
	Seq         charla.Seq
	ClientMsgID string
	// StoredClientMsgID is the message that holds Seq in the database ("" when
	// the clash is between two messages of the same call).
	StoredClientMsgID string
}

// SeqConflictError is AppendSequenced's typed failure for SeqConflicts. It
// matches ErrConflict. Nothing of the call was written.
type SeqConflictError struct {
	Conflicts []SeqConflict
}

// Error names the first conflict (and how many more there are).
func (e *SeqConflictError) Error() string {
	if len(e.Conflicts) == 0 {
		return "sequence conflict"
	}
	c := e.Conflicts[0]
	more := ""
	if len(e.Conflicts) > 1 {
		more = fmt.Sprintf(" (and %d more)", len(e.Conflicts)-1)
	}
	return fmt.Sprintf("seq %d of %s is %q, not %q%s", c.Seq, c.Conv, c.StoredClientMsgID, c.ClientMsgID, more)
}

// Is makes errors.Is(err, ErrConflict) true.
func (e *SeqConflictError) Is(target error) bool { return target == ErrConflict }

// AppendSequenced stores messages that already carry their seq and time, as
// the engine assigned them while the database was down (the spool's drain),
// in one statement. It is idempotent: a (Conv, ClientMsgID) already stored is
// reported as a Duplicate with the stored seq and time — normally equal to
// the message's own; when they differ, the engine's sequence and the
// database's diverged for that message and the result shows the stored one.
// A seq held by a different message fails the whole call with a
// *SeqConflictError (errors.Is ErrConflict) and writes nothing; the engine
// should then Append the conflicting messages (they get new seqs) and
// AppendSequenced the rest. The conversation's head moves up to the highest
// seq drained, so Append continues after it. A fenced store (WithFence)
// checks the call's shards as Append does, in the same statement, and
// fails it whole with a *store.FencedError when this node no longer holds
// one of them.
func (s *Store) AppendSequenced(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	if len(msgs) == 0 {
		return nil, s.do(ctx, opAppendSequenced, func(context.Context) error { return nil })
	}
	if conflicts := inCallConflicts(msgs); len(conflicts) > 0 {
		return nil, s.do(ctx, opAppendSequenced, func(context.Context) error {
			return &Error{Op: opAppendSequenced.String(), Kind: KindConflict, Err: &SeqConflictError{Conflicts: conflicts}}
		})
	}
	// A pair repeated in the call is written once; its later occurrences
	// are duplicates of the first.
	uniq, firstOf := dedupe(msgs)
	args, err := makeAppendArgs(uniq, true)
	if err != nil {
		return nil, s.invalid(ctx, opAppendSequenced, err)
	}
	var fa fenceArgs
	if s.fence != nil {
		if fa, err = s.fence.check(args.conv); err != nil {
			return nil, s.refuse(ctx, opAppendSequenced, err)
		}
	}
	res := make([]store.AppendResult, len(uniq))
	err = s.do(ctx, opAppendSequenced, func(ctx context.Context) error {
		var rows pgx.Rows
		var err error
		if s.fence == nil {
			rows, err = s.pool.Query(ctx, appendSequencedSQL,
				args.conv, args.seq, args.cmid, args.senderID, args.senderRole, args.body, args.ts)
		} else {
			rows, err = s.pool.Query(ctx, appendSequencedFencedSQL,
				args.conv, args.seq, args.cmid, args.senderID, args.senderRole, args.body, args.ts,
				fa.shards, fa.epochs)
		}
		if err != nil {
			return err
		}
		var (
			ord, seq int64
			ts       time.Time
			dup      bool
			got      int
		)
		_, err = pgx.ForEachRow(rows, []any{&ord, &seq, &ts, &dup}, func() error {
			if ord < 1 || int(ord) > len(res) {
				return fmt.Errorf("result for input row %d of %d", ord, len(res))
			}
			res[ord-1] = store.AppendResult{Seq: charla.Seq(seq), TS: ts.UTC(), Duplicate: dup}
			got++
			return nil
		})
		if err == nil && got == 0 && s.fence != nil {
			// The fence gate refused the call: nothing was written.
			return s.fencedResult(ctx, opAppendSequenced, fa)
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "23505" && pgErr.ConstraintName == "messages_pkey" {
			conflicts, qerr := s.storedConflicts(ctx, args)
			if qerr != nil {
				return qerr
			}
			return &Error{Op: opAppendSequenced.String(), Kind: KindConflict, Code: pgErr.Code,
				Err: &SeqConflictError{Conflicts: conflicts}}
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	out := make([]store.AppendResult, len(msgs))
	for i, j := range firstOf {
		out[i] = res[j.idx]
		if !j.first {
			out[i].Duplicate = true
		}
	}
	s.countResults(out)
	return out, nil
}

// uniqRef points a message of a call at its pair's first occurrence.
type uniqRef struct {
	idx   int  // index in the deduplicated slice
	first bool // this message is that first occurrence
}

// dedupe keeps the first message of each (Conv, ClientMsgID) pair.
func dedupe(msgs []charla.Message) ([]charla.Message, []uniqRef) {
	type key struct {
		conv charla.ConvID
		cmid string
	}
	at := make(map[key]int, len(msgs))
	uniq := make([]charla.Message, 0, len(msgs))
	refs := make([]uniqRef, len(msgs))
	for i, m := range msgs {
		k := key{m.Conv, m.ClientMsgID}
		if j, ok := at[k]; ok {
			refs[i] = uniqRef{idx: j}
			continue
		}
		at[k] = len(uniq)
		refs[i] = uniqRef{idx: len(uniq), first: true}
		uniq = append(uniq, m)
	}
	return uniq, refs
}

// inCallConflicts finds two messages of one call that claim the same seq of
// a conversation with different client_msg_ids.
func inCallConflicts(msgs []charla.Message) []SeqConflict {
	type key struct {
		conv charla.ConvID
		seq  charla.Seq
	}
	first := make(map[key]string, len(msgs))
	var out []SeqConflict
	for _, m := range msgs {
		k := key{m.Conv, m.Seq}
		if prev, ok := first[k]; ok && prev != m.ClientMsgID {
			out = append(out, SeqConflict{Conv: m.Conv, Seq: m.Seq, ClientMsgID: m.ClientMsgID})
			continue
		}
		first[k] = m.ClientMsgID
	}
	return out
}

// storedConflictsSQL finds the input messages whose seq a different message
// holds, one primary-key probe each.
const storedConflictsSQL = `
SELECT i.conv, i.seq, i.cmid, m.client_msg_id
FROM unnest($1::text[], $2::bigint[], $3::text[]) AS i(conv, seq, cmid)
CROSS JOIN LATERAL (
    SELECT client_msg_id FROM messages
    WHERE conversation_id = i.conv AND seq = i.seq
    LIMIT 1
) m
WHERE m.client_msg_id <> i.cmid
ORDER BY i.conv, i.seq`

// storedConflicts lists the messages of args whose seq is held in the
// database by a different client_msg_id.
func (s *Store) storedConflicts(ctx context.Context, a appendArgs) ([]SeqConflict, error) {
	rows, err := s.pool.Query(ctx, storedConflictsSQL, a.conv, a.seq, a.cmid)
	if err != nil {
		return nil, err
	}
	var (
		out              []SeqConflict
		conv, cmid, have string
		seq              int64
	)
	_, err = pgx.ForEachRow(rows, []any{&conv, &seq, &cmid, &have}, func() error {
		out = append(out, SeqConflict{Conv: charla.ConvID(conv), Seq: charla.Seq(seq), ClientMsgID: cmid, StoredClientMsgID: have})
		return nil
	})
	return out, err
}

// compactJSON removes the spacing jsonb's output adds ({"a": 1} → {"a":1}),
// so that history reads look like live messages on the wire.
func compactJSON(b []byte) json.RawMessage {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return append(json.RawMessage(nil), b...)
	}
	return buf.Bytes()
}
