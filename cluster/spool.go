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
	holder atomic.Pointer[Holder] // see Attach
}

// Holder is what the spool needs of the leases (*Leases): which shards
// this node serves, and giving one up.
type Holder interface {
	// Epoch is this node's epoch of shard; ok only while it serves shard.
	Epoch(shard int) (epoch uint64, ok bool)
	// Lost drops shard if this node still holds it with epoch.
	Lost(shard int, epoch uint64)
}

// Attach ties the spool to the leases, which are started after it (they
// adopt through it). Until then nothing is drained.
//
// The leases decide two things here. A shard's records are drained only
// while this node serves the shard with the epoch it adopted them under: a
// shard is adopted during its claim, before the node serves it, and a
// drain in between would be fenced by the store; giving the shard's
// records up then, while the claim goes on to succeed, would leave them in
// the stream with nobody to drain them and their seqs given again. And the
// spool gives a shard up (Lost) when this node must stop writing it:
// another node sealed its subject, or a spool write's outcome is unknown
// (the record may be in the stream, at seqs the conversations here did not
// ack and would give to the next messages), or the store fenced the drain.
// Whoever takes it next adopts the subject as it is.
func (s *Spool) Attach(h Holder) { s.holder.Store(&h) }

// serves reports whether this node serves shard with epoch now.
func (s *Spool) serves(shard int, epoch uint64) bool {
	h := s.holder.Load()
	if h == nil {
		return false
	}
	e, ok := (*h).Epoch(shard)
	return ok && e == epoch
}

// giveUp forgets the view st of shard, if it is still this node's, and has
// the leases drop the shard if they still hold it with st's epoch (a shard
// claimed again since is not given up for its older view's failure).
func (s *Spool) giveUp(shard int, st *spoolShard) {
	s.drop(shard, st)
	if h := s.holder.Load(); h != nil {
		(*h).Lost(shard, st.epoch)
	}
}

// spoolShard is what this node knows of one adopted shard's subject.
type spoolShard struct {
	epoch   uint64        // this node's epoch of the shard when it adopted it
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
// the shard with epoch, after its claim in the store and before serving it;
// the records are drained once the node serves the shard (Attach).
func (s *Spool) Adopt(ctx context.Context, shard int, epoch uint64) error {
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
	s.shards[shard] = &spoolShard{epoch: epoch, last: seal, records: records, kept: seal}
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
func (s *Spool) Forget(shard int) { s.drop(shard, nil) }

// drop forgets shard's view, only if it is still st when st is not nil.
func (s *Spool) drop(shard int, st *spoolShard) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old := s.shards[shard]; old != nil && (st == nil || old == st) {
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
		// Serving a shard whose subject this node has not adopted would
		// sequence from an unknown head: give the shard up, so that whoever
		// takes it next adopts the subject.
		if h := s.holder.Load(); h != nil {
			if e, ok := (*h).Epoch(shard); ok {
				(*h).Lost(shard, e)
			}
		}
		return fmt.Errorf("spool shard %d: %w", shard, errNotAdopted)
	}
	// One group commit at a time reaches here (the store actor's write
	// lane), so last cannot move under us but by another node.
	seq, err := s.publish(ctx, s.subject(shard), last, msgs)
	if err != nil {
		s.giveUp(shard, st) // sealed by another node, or an outcome unknown
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

// Drain stores the records of the shards this node serves with sink,
// oldest first per shard, and purges each from the stream once stored. A
// shard sink fences (another node owns it now) is given up, and the drain
// goes on. When all that is left belongs to shards adopted but not served
// (yet: a claim in progress), Drain returns a *store.FencedError for them,
// which the caller takes as "drain again shortly".
func (s *Spool) Drain(ctx context.Context, batch int, sink func(ctx context.Context, msgs []charla.Message) error) (int, error) {
	moved := 0
	for {
		shard, st, rec, waiting := s.next()
		if st == nil {
			if len(waiting) > 0 {
				fences := make([]store.ShardFence, len(waiting))
				for i, w := range waiting {
					fences[i] = store.ShardFence{Shard: w}
				}
				return moved, fmt.Errorf("spool: drain: records of shards not served yet: %w", &store.FencedError{Shards: waiting, Fences: fences})
			}
			return moved, nil
		}
		if err := sink(ctx, rec.msgs); err != nil {
			if errors.Is(err, store.ErrFenced) {
				s.giveUp(shard, st)
				continue
			}
			return moved, fmt.Errorf("spool: drain: %w", err)
		}
		// Stored: out of the stream, unless it is the subject's last
		// record, the sequence check's reference (to whoever adopts it, a
		// duplicate the store recognises).
		drop := uint64(0)
		s.mu.Lock()
		if s.shards[shard] == st && len(st.records) > 0 && st.records[0].seq == rec.seq {
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

// next is the oldest record of the lowest-numbered shard that has one and
// that this node serves, with that shard's view; st is nil when there is
// none, and waiting lists the shards with records not served.
func (s *Spool) next() (shard int, st *spoolShard, rec spoolRecord, waiting []int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	best := -1
	for i, v := range s.shards {
		switch {
		case len(v.records) == 0:
		case !s.serves(i, v.epoch): // the leases answer from a snapshot, lock-free
			waiting = append(waiting, i)
		case best < 0 || i < best:
			best = i
		}
	}
	if best < 0 {
		slices.Sort(waiting)
		return 0, nil, spoolRecord{}, waiting
	}
	st = s.shards[best]
	return best, st, st.records[0], nil
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
