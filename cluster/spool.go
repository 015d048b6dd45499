package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"charla"
	"charla/store"
	"charla/store/spool"
)

// Spool is a cluster's outage spool (docs/CLUSTER.md §6): while PostgreSQL
// is down, a shard's owner acks messages once a replicated JetStream stream
// holds them, and whoever owns the shard when the database is back stores
// them there at their seqs.
//
// Each shard has one subject, <name>.spool.<shard>; each record on it is one
// group commit's messages of that shard. A record is published with
// Nats-Expected-Last-Subject-Sequence set to the last record this node saw
// on the subject, so the subject is a log with one writer at a time: a node
// that takes a shard (Adopt, after its claim in the store) reads the
// subject's records and publishes a seal record, and an old owner paused
// past its lease fails its next spool write on the sequence check instead of
// acking a message the new owner has not seen.
//
// What an ack from the spool rests on: the stream's replicas (--cluster-
// replicas) holding the record. A JetStream ack is not an fsync unless the
// NATS servers run with sync_interval: always (by default file storage syncs
// every 2 minutes); with one replica, it is one NATS server's memory until
// then.
//
// The records of the shards this node holds are kept in memory (an outage's
// worth), which answers Head, Range and Acked; drained records are deleted
// from the stream, all but the subject's last (the sequence check's
// reference).
type Spool struct {
	js      jetstream.JetStream
	stream  jetstream.Stream
	name    string
	shardOf func(charla.ConvID) int

	mu     sync.Mutex
	shards map[int]*spoolShard // the adopted shards
	n      atomic.Int64        // messages not drained, in the adopted shards
	dead   atomic.Int64
	// lose gives a shard up (the leases' Lost): see OnLost.
	lose atomic.Pointer[func(shard int)]
}

// OnLost sets what the spool calls when this node must stop writing a
// shard: another node sealed its subject, or a spool write's outcome is
// unknown (the record may be in the stream, at seqs the conversations
// here did not ack and would give to the next messages). Giving the shard
// up has whoever takes it next adopt the subject as it is, and reload its
// conversations from it.
func (s *Spool) OnLost(f func(shard int)) { s.lose.Store(&f) }

// giveUp forgets shard and has the leases give it up.
func (s *Spool) giveUp(shard int) {
	s.Forget(shard)
	if f := s.lose.Load(); f != nil {
		(*f)(shard)
	}
}

// spoolShard is what this node knows of one adopted shard's subject.
type spoolShard struct {
	last    uint64        // the subject's last record, as this node wrote or read it
	records []spoolRecord // not drained yet, oldest first
	// kept is a record left in the stream only as the sequence check's
	// reference (a seal, or the last record once stored): deleted when a
	// newer record takes its place.
	kept uint64
}

type spoolRecord struct {
	seq  uint64
	msgs []charla.Message
}

// ErrSpoolFenced is a spool write refused because another node has sealed
// the shard's subject since this node last wrote it: it owns the shard now.
var ErrSpoolFenced = errors.New("cluster: spool: another node took the shard")

// errNotAdopted refuses a write for a shard whose subject this node has not
// read: its head there is unknown.
var errNotAdopted = errors.New("cluster: spool: shard not adopted by this node")

// OpenSpool creates or binds the spool's stream, <name>_spool.
func OpenSpool(ctx context.Context, js jetstream.JetStream, name string, replicas, shards int) (*Spool, error) {
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        name + "_spool",
		Description: "charla outage spool (docs/CLUSTER.md)",
		Subjects:    []string{name + ".spool.>"},
		Storage:     jetstream.FileStorage,
		Replicas:    replicas,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardNew, // never drop an acked record to make room
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: spool stream %s_spool: %w", name, err)
	}
	return &Spool{js: js, stream: st, name: name, shardOf: func(c charla.ConvID) int { return ShardOf(c, shards) },
		shards: map[int]*spoolShard{}}, nil
}

func (s *Spool) subject(shard int) string { return s.name + ".spool." + strconv.Itoa(shard) }

func (s *Spool) deadSubject() string { return s.name + ".spool.dead" }

// Adopt reads shard's records into this node's view and seals the subject,
// so that no earlier owner can add to it. The engine calls it when it takes
// the shard, after its claim in the store and before serving it.
func (s *Spool) Adopt(ctx context.Context, shard int) error {
	subj := s.subject(shard)
	var records []spoolRecord
	last := uint64(0)
	if m, err := s.stream.GetLastMsgForSubject(ctx, subj); err == nil {
		last = m.Sequence
		records, err = s.read(ctx, subj, last)
		if err != nil {
			return err
		}
	} else if !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("cluster: spool: read %s: %w", subj, err)
	}
	seal, err := s.publish(ctx, subj, last, nil)
	if err != nil {
		return fmt.Errorf("cluster: spool: seal %s: %w", subj, err)
	}
	if len(records) == 0 && last != 0 {
		// The subject's last record was a seal or a record stored already:
		// the seal is the reference now.
		s.delete(ctx, last)
	}
	n := 0
	for _, r := range records {
		n += len(r.msgs)
	}
	s.mu.Lock()
	if old := s.shards[shard]; old != nil {
		s.n.Add(-int64(old.count()))
	}
	s.shards[shard] = &spoolShard{last: seal, records: records, kept: seal}
	s.n.Add(int64(n))
	s.mu.Unlock()
	return nil
}

// read returns subj's records up to seq last. It gets them one by one
// (the next record of the subject at or after a sequence) rather than
// through a consumer: a consumer needs the cluster's meta leader, which a
// NATS server lost can leave unelected for seconds, and a claim has less
// than a lease's TTL.
func (s *Spool) read(ctx context.Context, subj string, last uint64) ([]spoolRecord, error) {
	var out []spoolRecord
	for seq := uint64(1); seq <= last; {
		m, err := s.stream.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(subj))
		if err != nil {
			return nil, fmt.Errorf("cluster: spool: read %s from %d: %w", subj, seq, err)
		}
		var msgs []charla.Message
		if err := json.Unmarshal(m.Data, &msgs); err != nil {
			return nil, fmt.Errorf("cluster: spool: record %d of %s: %w", m.Sequence, subj, err)
		}
		if len(msgs) > 0 {
			out = append(out, spoolRecord{seq: m.Sequence, msgs: msgs})
		}
		seq = m.Sequence + 1
	}
	return out, nil
}

// publish appends a record to subj if its last record is still last; it
// returns the record's sequence.
func (s *Spool) publish(ctx context.Context, subj string, last uint64, msgs []charla.Message) (uint64, error) {
	data, err := json.Marshal(msgs)
	if err != nil {
		return 0, err
	}
	ack, err := s.js.PublishMsg(ctx, &nats.Msg{Subject: subj, Data: data}, jetstream.WithExpectLastSequencePerSubject(last))
	if err != nil {
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			return 0, ErrSpoolFenced
		}
		return 0, err
	}
	return ack.Sequence, nil
}

// Forget drops shard from this node's view: another node owns it now and
// adopts its records.
func (s *Spool) Forget(shard int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.shards[shard]; old != nil {
		s.n.Add(-int64(old.count()))
		delete(s.shards, shard)
	}
}

func (sh *spoolShard) count() int {
	n := 0
	for _, r := range sh.records {
		n += len(r.msgs)
	}
	return n
}

// Len is how many messages wait in the shards this node holds.
func (s *Spool) Len() int { return int(s.n.Load()) }

// DeadLetterCount is how many messages this node set aside since it started.
func (s *Spool) DeadLetterCount() int { return int(s.dead.Load()) }

// Put spools msgs, all of one shard, as one record, published only if this
// node still writes that shard's subject. The caller splits a batch by
// shard (actors' outageSpool): each conversation's write must succeed or
// fail whole, and a record published for one shard before another's
// failed would hold messages never acked, at seqs given again.
func (s *Spool) Put(ctx context.Context, msgs []charla.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	shard := s.shardOf(msgs[0].Conv)
	for _, m := range msgs[1:] {
		if sh := s.shardOf(m.Conv); sh != shard {
			return fmt.Errorf("cluster: spool: one write spans shards %d and %d", shard, sh)
		}
	}
	s.mu.Lock()
	st := s.shards[shard]
	last := uint64(0)
	if st != nil {
		last = st.last
	}
	s.mu.Unlock()
	if st == nil {
		return fmt.Errorf("spool shard %d: %w", shard, errNotAdopted)
	}
	// One group commit at a time reaches here (the store actor's write
	// lane), so last cannot move under us but by another node.
	seq, err := s.publish(ctx, s.subject(shard), last, msgs)
	if err != nil {
		s.giveUp(shard) // sealed by another node, or an outcome unknown
		return fmt.Errorf("spool shard %d: %w", shard, err)
	}
	s.mu.Lock()
	kept := uint64(0)
	if cur := s.shards[shard]; cur == st {
		st.last = seq
		st.records = append(st.records, spoolRecord{seq: seq, msgs: msgs})
		s.n.Add(int64(len(msgs)))
		kept, st.kept = st.kept, 0
	}
	s.mu.Unlock()
	if kept != 0 {
		s.delete(ctx, kept)
	}
	return nil
}

// Drain stores the adopted shards' records with sink, oldest first per
// shard, and purges each from the stream once stored. A shard sink fences
// (another node owns it now) is forgotten, and the drain goes on.
func (s *Spool) Drain(ctx context.Context, batch int, sink func(ctx context.Context, msgs []charla.Message) error) (int, error) {
	moved := 0
	for {
		shard, rec, ok := s.next()
		if !ok {
			return moved, nil
		}
		if err := sink(ctx, rec.msgs); err != nil {
			if errors.Is(err, store.ErrFenced) {
				s.Forget(shard)
				continue
			}
			return moved, fmt.Errorf("spool: drain: %w", err)
		}
		// Stored: out of the stream, unless it is the subject's last
		// record, the sequence check's reference (to whoever adopts it, a
		// duplicate the store recognises).
		drop := uint64(0)
		s.mu.Lock()
		if st := s.shards[shard]; st != nil && len(st.records) > 0 && st.records[0].seq == rec.seq {
			st.records = st.records[1:]
			s.n.Add(-int64(len(rec.msgs)))
			if rec.seq == st.last {
				st.kept = rec.seq
			} else {
				drop = rec.seq
			}
		}
		s.mu.Unlock()
		moved += len(rec.msgs)
		if drop != 0 {
			s.delete(ctx, drop)
		}
	}
}

// delete removes record seq, stored already or a seal, from the stream.
// Failing is harmless, so it is not an error: whoever adopts a record left
// over finds messages the store answers as duplicates. Failing the write
// or drain that called it instead would leave a record in the stream
// whose messages were never acked, at seqs the next messages then take.
func (s *Spool) delete(ctx context.Context, seq uint64) {
	_ = s.stream.DeleteMsg(ctx, seq)
}

// next is the oldest record of the lowest-numbered shard that has one.
func (s *Spool) next() (int, spoolRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := -1
	for shard, st := range s.shards {
		if len(st.records) > 0 && (best < 0 || shard < best) {
			best = shard
		}
	}
	if best < 0 {
		return 0, spoolRecord{}, false
	}
	return best, s.shards[best].records[0], true
}

// Head is conv's highest spooled seq; ok false when none is spooled.
func (s *Spool) Head(conv charla.ConvID) (charla.Seq, bool, error) {
	var head charla.Seq
	found := false
	s.each(conv, func(m charla.Message) {
		head, found = max(head, m.Seq), true
	})
	return head, found, nil
}

// Range returns conv's spooled messages after seq after, at most limit.
func (s *Spool) Range(_ context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	var out []charla.Message
	s.each(conv, func(m charla.Message) {
		if m.Seq > after {
			out = append(out, m)
		}
	})
	slices.SortFunc(out, func(a, b charla.Message) int { return cmp.Compare(a.Seq, b.Seq) })
	return out[:min(len(out), limit)], nil
}

// Acked answers a resend of a spooled message with its seq. The cluster
// spool keeps no index of the acks the store made (the single node's
// spool does): a resend older than the conversation's in-memory window
// during an outage is found only when drained, and stored under a derived
// id (docs/CLUSTER.md §6).
func (s *Spool) Acked(conv charla.ConvID, clientMsgID string) (spool.Ack, bool, error) {
	var a spool.Ack
	found := false
	s.each(conv, func(m charla.Message) {
		if !found && m.ClientMsgID == clientMsgID {
			a, found = spool.Ack{Conv: conv, ClientMsgID: clientMsgID, Seq: m.Seq, TS: m.TS}, true
		}
	})
	return a, found, nil
}

// RecordAcks does nothing: see Acked.
func (s *Spool) RecordAcks(context.Context, []spool.Ack, bool) error { return nil }

// PutDeadLetter keeps a message the store refused on the stream's dead
// subject, for an operator to look at.
func (s *Spool) PutDeadLetter(ctx context.Context, d spool.DeadLetter) error {
	data, err := json.Marshal(d)
	if err != nil {
		return err
	}
	if _, err := s.js.Publish(ctx, s.deadSubject(), data); err != nil {
		return fmt.Errorf("cluster: spool: dead letter: %w", err)
	}
	s.dead.Add(1)
	return nil
}

func (s *Spool) each(conv charla.ConvID, f func(charla.Message)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.shards[s.shardOf(conv)]
	if st == nil {
		return
	}
	for _, r := range st.records {
		for _, m := range r.msgs {
			if m.Conv == conv {
				f(m)
			}
		}
	}
}
