package actors

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/spool"
)

// sequencedAppender is what draining the spool needs of the store: storing
// messages with the seq the engine already gave them (postgres has it).
type sequencedAppender interface {
	AppendSequenced(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error)
}

// Spool is where the store actor keeps writes while the store is down
// (Dependencies.Spool): a single node's file (*spool.Spool) or a cluster's
// replicated stream (*cluster.Spool).
type Spool interface {
	// Len is how many messages wait to be drained.
	Len() int
	// Put keeps msgs, with their seqs, durably before it returns. A
	// cluster's takes one shard's messages a call (outageSpool.shardOf).
	Put(ctx context.Context, msgs []charla.Message) error
	// Drain hands the waiting messages to sink, oldest first, and drops
	// those it took; it stops at sink's first error. A cluster's answers a
	// *store.FencedError when all that is left belongs to shards the node
	// adopted but does not serve yet (their claim goes on): drain again
	// shortly.
	Drain(ctx context.Context, batch int, sink func(ctx context.Context, msgs []charla.Message) error) (int, error)
	// Head and Range read the waiting messages of conv.
	Head(conv charla.ConvID) (charla.Seq, bool, error)
	Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error)
	// Acked finds the ack of a message by its client id, for resends;
	// RecordAcks adds the store's acks to what Acked knows.
	Acked(conv charla.ConvID, clientMsgID string) (spool.Ack, bool, error)
	RecordAcks(ctx context.Context, acks []spool.Ack, sync bool) error
	// PutDeadLetter sets aside a message the store refused.
	PutDeadLetter(ctx context.Context, d spool.DeadLetter) error
	DeadLetterCount() int
}

// outageSpool is the half of the store actor that hides a database outage:
// it sequences and spools writes the store cannot take, drains the spool
// back into the store (the one meaning of "drain" in this package), and
// answers reads from the store and the spool merged.
//
// Its methods run on the store actor's I/O goroutines; the spool file is safe
// for concurrent use, and everything else here is set once at construction.
type outageSpool struct {
	sp       Spool
	appender sequencedAppender
	st       store.Store
	cfg      Config
	log      zerolog.Logger
	life     context.Context // the tree's: cancelled at shutdown
	// shardOf, in a cluster, is the placement: the spool there is one log
	// per shard, each written only by its owner, and a shard lost meanwhile
	// fails only its own conversations' writes.
	shardOf func(charla.ConvID) int
}

// spoolDrained is the drain lane's report.
type spoolDrained struct {
	moved int
	err   error
}

// depth is how many messages wait in the spool; while it is non-zero every
// new write is spooled too, so that the store's sequencer never races the
// spool's.
func (o *outageSpool) depth() int { return o.sp.Len() }

// appendSpool sequences msgs from each conversation's head and spools them
// with one fsync. Duplicates are found in the spool's ack index, which holds
// every ack of the last Config.SpoolDedupWindow (store-path acks recorded by
// recordAcks, spool-path ones by Put), so that a resend older than the
// conversation's in-memory window is answered with its original seq instead
// of being accepted twice. Past the index's bounds a resend is still caught
// at drain time (drainSink), only later.
//
// errs, when not nil, holds the failure of each message whose shard's log
// refused it (cluster mode); err fails the whole batch.
func (o *outageSpool) appendSpool(ctx context.Context, batch []appendReq, msgs []charla.Message) (results []store.AppendResult, errs []error, spooled int, err error) {
	results = make([]store.AppendResult, 0, len(msgs))
	var fresh []charla.Message
	var at []int // fresh[k] is results[at[k]]
	i := 0
	for _, r := range batch {
		next := r.head + 1
		for range r.msgs {
			m := msgs[i]
			i++
			if old, ok, err := o.sp.Acked(m.Conv, m.ClientMsgID); err != nil {
				return nil, nil, 0, fmt.Errorf("spool lookup %s: %w", m.Conv, err)
			} else if ok {
				results = append(results, store.AppendResult{Seq: old.Seq, TS: old.TS, Duplicate: true})
				continue
			}
			m.Seq = next
			next++
			fresh = append(fresh, m)
			at = append(at, len(results))
			results = append(results, store.AppendResult{Seq: m.Seq, TS: m.TS})
		}
	}
	if len(fresh) == 0 {
		return results, nil, 0, nil
	}
	if o.shardOf == nil {
		if err := o.sp.Put(ctx, fresh); err != nil {
			return nil, nil, 0, fmt.Errorf("spool %d messages: %w", len(fresh), err)
		}
		return results, nil, len(fresh), nil
	}
	// One Put per shard: a conversation's messages are all in one shard, so
	// each conversation's write succeeds or fails whole, as it must (its
	// head advances only with an ack).
	byShard := map[int][]int{} // shard → indexes in fresh
	var order []int
	for k, m := range fresh {
		sh := o.shardOf(m.Conv)
		if _, ok := byShard[sh]; !ok {
			order = append(order, sh)
		}
		byShard[sh] = append(byShard[sh], k)
	}
	for _, sh := range order {
		group := make([]charla.Message, len(byShard[sh]))
		for j, k := range byShard[sh] {
			group[j] = fresh[k]
		}
		if err := o.sp.Put(ctx, group); err != nil {
			if errs == nil {
				errs = make([]error, len(results))
			}
			for _, k := range byShard[sh] {
				errs[at[k]] = fmt.Errorf("spool %d messages of shard %d: %w", len(group), sh, err)
			}
			continue
		}
		spooled += len(group)
	}
	return results, errs, spooled, nil
}

// recordAcks adds the messages the store just acked (results, errs as the
// write lane has them) to the spool's ack index, in one Pebble batch without
// fsync. Failing to record is logged, never fails the acks: the store holds
// the messages, and the index only serves resends during an outage.
//
// Why no fsync is enough: these messages are durable in the store already;
// the index matters only for a resend that arrives while the store is
// unreachable. An unsynced batch survives a crash of the process (it is in
// Pebble's WAL file, in the kernel's page cache, once written; Pebble writes
// it right behind the commit); it is lost only with the machine, and only
// if no synced write followed it: the spool syncs its WAL every second
// (spool.Options.SyncInterval), and the first spooled write of an outage
// (Put, fsync'd) syncs every ack recorded before it. What is left is a
// machine crash within a second of the ack, followed by a database that is
// down after the restart, followed by a resend of exactly that message; even
// then nothing is lost: the drain finds the copy and stores it under a
// derived id (drainSink), a visible duplicate. An fsync per group commit, on
// the other hand, would be paid by every ack of a healthy engine (≈ 0.2 ms
// at p50 and 0.6 ms at p99 here, as much as the whole ack budget).
func (o *outageSpool) recordAcks(ctx context.Context, msgs []charla.Message, results []store.AppendResult, errs []error) {
	acks := make([]spool.Ack, 0, len(msgs))
	for i, r := range results {
		if r.Duplicate || (errs != nil && errs[i] != nil) || i >= len(msgs) {
			continue
		}
		acks = append(acks, spool.Ack{Conv: msgs[i].Conv, ClientMsgID: msgs[i].ClientMsgID, Seq: r.Seq, TS: r.TS})
	}
	if err := o.sp.RecordAcks(ctx, acks, false); err != nil {
		o.log.Warn().Err(err).Int("acks", len(acks)).Msg("acks not recorded in the spool's ack index; their resends during an outage would be stored twice")
	}
}

// drain moves the spool into the store, oldest first, until it is empty or
// the store fails.
func (o *outageSpool) drain(ctx context.Context) spoolDrained {
	n, err := o.sp.Drain(ctx, o.cfg.DrainBatch, o.drainSink)
	return spoolDrained{moved: n, err: err}
}

// drainSink stores one spooled batch with its seqs. When the store refuses
// the batch (store.ErrInvalid: a constraint, a value it cannot hold) the
// messages are stored one by one and each refused one becomes a dead letter
// with a tombstone at its seq (drainEach), so that the drain goes on. A
// client_msg_id the store already holds at another seq (a resend that the
// engine could not recognise while the store was down) keeps its spooled
// seq under a derived id, so that the store has no gap where clients saw a
// message.
func (o *outageSpool) drainSink(ctx context.Context, msgs []charla.Message) error {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.DrainTimeout)
	defer cancel()
	res, err := o.appender.AppendSequenced(ctx, msgs)
	if errors.Is(err, store.ErrInvalid) {
		msgs, res, err = o.drainEach(ctx, msgs)
	}
	if err != nil {
		return err
	}
	var moved []charla.Message
	for i, r := range res {
		if r.Duplicate && r.Seq != msgs[i].Seq {
			m := msgs[i]
			o.log.Warn().Str("conv", string(m.Conv)).Str("client_msg_id", m.ClientMsgID).Uint64("seq", uint64(m.Seq)).Uint64("stored_seq", uint64(r.Seq)).
				Msg("a message resent during an outage was accepted twice; the second copy is stored under a derived id")
			m.ClientMsgID = fmt.Sprintf("%s#%d", m.ClientMsgID, m.Seq)
			moved = append(moved, m)
		}
	}
	if len(moved) > 0 {
		if _, err := o.appender.AppendSequenced(ctx, moved); err != nil {
			return err
		}
	}
	return nil
}

// tombstoneBody is what the store holds, and clients read, at the seq of a
// message that was acked from the spool but that the store refused
// (docs/PROTOCOL.md): still a body with a "text" string, so that a client
// that only reads text shows an empty message rather than failing.
var tombstoneBody = json.RawMessage(`{"text":"","deleted":true}`)

// drainEach stores msgs one at a time, after the store refused them as a
// batch, and returns them as stored (a refused message replaced by its
// tombstone) with their results. A refused message is set aside in the
// spool as a dead letter with its error, logged at error level, and its seq
// gets a tombstone: the same conversation, seq, client_msg_id (so that a
// resend is still answered duplicate with the seq it was acked with),
// sender and time, and tombstoneBody. Any other failure ends the call: the
// batch stays spooled and is drained again (dead letters are keyed by seq,
// so setting one aside twice is harmless).
func (o *outageSpool) drainEach(ctx context.Context, msgs []charla.Message) ([]charla.Message, []store.AppendResult, error) {
	stored := slices.Clone(msgs)
	res := make([]store.AppendResult, len(msgs))
	for i, m := range msgs {
		r, err := o.appender.AppendSequenced(ctx, []charla.Message{m})
		if errors.Is(err, store.ErrInvalid) {
			stored[i], r, err = o.deadLetter(ctx, m, err)
		}
		if err != nil {
			return nil, nil, err
		}
		res[i] = r[0]
	}
	return stored, res, nil
}

// deadLetter sets m aside with the store's refusal and stores a tombstone
// at its seq in its place. Should the store refuse even the tombstone (the
// refusal was about the sender or the id, not the body), a bare one with a
// derived id and no sender takes the seq.
func (o *outageSpool) deadLetter(ctx context.Context, m charla.Message, refusal error) (charla.Message, []store.AppendResult, error) {
	if err := o.sp.PutDeadLetter(ctx, spool.DeadLetter{Msg: m, Err: refusal.Error(), At: time.Now().UTC()}); err != nil {
		return m, nil, fmt.Errorf("set aside %s seq %d: %w", m.Conv, m.Seq, err)
	}
	o.log.Error().Err(refusal).Str("conv", string(m.Conv)).Uint64("seq", uint64(m.Seq)).Str("client_msg_id", m.ClientMsgID).
		Msg("the store refused a message acked from the spool; it is kept as a dead letter in the spool and its seq holds a tombstone")
	t := m
	t.Body = tombstoneBody
	r, err := o.appender.AppendSequenced(ctx, []charla.Message{t})
	if errors.Is(err, store.ErrInvalid) {
		t = charla.Message{Conv: m.Conv, Seq: m.Seq, ClientMsgID: fmt.Sprintf("%s#deleted", m.ClientMsgID), Body: tombstoneBody, TS: m.TS}
		r, err = o.appender.AppendSequenced(ctx, []charla.Message{t})
	}
	if err != nil {
		return m, nil, fmt.Errorf("tombstone at %s seq %d: %w", m.Conv, m.Seq, err)
	}
	return t, r, nil
}

// head is the store's head, or the spool's when that is higher (messages
// not yet drained) or the store is down.
func (o *outageSpool) head(ctx context.Context, conv charla.ConvID) (charla.Seq, error) {
	h, err := o.st.Head(ctx, conv)
	if o.depth() == 0 {
		return h, err
	}
	sh, ok, serr := o.sp.Head(conv)
	if serr != nil {
		return 0, serr
	}
	if err != nil {
		if ok && isOutage(o.life, err) {
			return sh, nil // everything after the store's head is in the spool
		}
		return 0, err
	}
	return max(h, sh), nil
}

// readRange reads history from the store and the spool together; while the
// store is down it returns what the spool has, which the caller checks for
// completeness (it must start at after+1).
func (o *outageSpool) readRange(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	msgs, err := o.st.Range(ctx, conv, after, limit)
	if o.depth() == 0 || (err != nil && !isOutage(o.life, err)) {
		return msgs, err
	}
	extra, serr := o.sp.Range(ctx, conv, after, limit)
	if serr != nil {
		return nil, serr
	}
	if err != nil && len(extra) == 0 {
		return nil, err
	}
	all := append(msgs, extra...)
	slices.SortFunc(all, func(x, y charla.Message) int { return cmp.Compare(x.Seq, y.Seq) })
	all = slices.CompactFunc(all, func(x, y charla.Message) bool { return x.Seq == y.Seq })
	return all[:min(len(all), limit)], nil
}
