package actors

import (
	"cmp"
	"context"
	"fmt"
	"slices"

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

// outageSpool is the half of the store actor that hides a database outage:
// it sequences and spools writes the store cannot take, drains the spool
// back into the store (the one meaning of "drain" in this package), and
// answers reads from the store and the spool merged.
//
// Its methods run on the store actor's I/O goroutines; the spool file is safe
// for concurrent use, and everything else here is set once at construction.
type outageSpool struct {
	sp       *spool.Spool
	appender sequencedAppender
	st       store.Store
	cfg      Config
	log      zerolog.Logger
	life     context.Context // the tree's: cancelled at shutdown
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
// with one fsync. Duplicates are found in the spool; older ones are found by
// the conversation's in-memory window, and, past it, at drain time.
func (o *outageSpool) appendSpool(ctx context.Context, batch []appendReq, msgs []charla.Message) (results []store.AppendResult, spooled int, err error) {
	results = make([]store.AppendResult, 0, len(msgs))
	var fresh []charla.Message
	i := 0
	for _, r := range batch {
		next := r.head + 1
		for range r.msgs {
			m := msgs[i]
			i++
			if old, ok, err := o.sp.Lookup(m.Conv, m.ClientMsgID); err != nil {
				return nil, 0, fmt.Errorf("spool lookup %s: %w", m.Conv, err)
			} else if ok {
				results = append(results, store.AppendResult{Seq: old.Seq, TS: old.TS, Duplicate: true})
				continue
			}
			m.Seq = next
			next++
			fresh = append(fresh, m)
			results = append(results, store.AppendResult{Seq: m.Seq, TS: m.TS})
		}
	}
	if len(fresh) == 0 {
		return results, 0, nil
	}
	if err := o.sp.Put(ctx, fresh); err != nil {
		return nil, 0, fmt.Errorf("spool %d messages: %w", len(fresh), err)
	}
	return results, len(fresh), nil
}

// drain moves the spool into the store, oldest first, until it is empty or
// the store fails.
func (o *outageSpool) drain(ctx context.Context) spoolDrained {
	n, err := o.sp.Drain(ctx, o.cfg.DrainBatch, o.drainSink)
	return spoolDrained{moved: n, err: err}
}

// drainSink stores one spooled batch with its seqs. A client_msg_id the
// store already holds at another seq (a resend that the engine could not
// recognise while the store was down) keeps its spooled seq under a derived
// id, so that the store has no gap where clients saw a message.
func (o *outageSpool) drainSink(ctx context.Context, msgs []charla.Message) error {
	ctx, cancel := context.WithTimeout(ctx, o.cfg.DrainTimeout)
	defer cancel()
	res, err := o.appender.AppendSequenced(ctx, msgs)
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
