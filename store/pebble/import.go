package pebble

import (
	"context"
	"errors"
	"fmt"

	pebbledb "github.com/cockroachdb/pebble/v2"

	"charla"
	"charla/store"
	"charla/store/bolt"
)

// ErrDiverged is returned by ImportBolt when the pebble store holds, for
// some conversation, messages the bolt store does not (more of them, or a
// different one at the same seq): it was written to by something other than
// the import, and merging the two would renumber acked messages.
var ErrDiverged = errors.New("pebble: import: the store has messages the bolt store does not")

// ImportStats counts what one ImportBolt run did.
type ImportStats struct {
	// Conversations is how many conversations were visited.
	Conversations int
	// Messages is how many messages this run wrote.
	Messages int
	// Present is how many messages were already in the store, written by an
	// earlier run (interrupted or complete).
	Present int
	// Cursors is how many read cursors this run moved forward.
	Cursors int
}

// ImportProgress is what ImportBolt reports after each conversation.
type ImportProgress struct {
	// Conv is the conversation just imported.
	Conv charla.ConvID
	// Done counts the conversations imported so far, Conv included, out of
	// Total.
	Done, Total int
	// ImportStats are the totals so far.
	ImportStats
}

const (
	// importPage is how many messages are read from bolt and written as one
	// batch: large enough that a batch's overhead vanishes, small enough
	// that a long conversation does not sit in memory whole.
	importPage = 1000
	// importSyncBytes is how much the import writes between two syncs of
	// the WAL. Batches are committed without waiting for their own fsync: a
	// crash loses at most the unsynced tail, which the next run writes
	// again, since the WAL keeps batches in order.
	importSyncBytes = 16 << 20
)

// ImportBolt copies every conversation of the bolt store src into dst:
// messages with their seqs, timestamps, client ids, senders and bodies, the
// dedup entries of their client ids, and read cursors. It only reads src.
//
// It is idempotent and resumable: each conversation continues after the
// highest seq dst already has for it (checking that the last message in
// common is the same, else ErrDiverged), and cursors only move forward. A run
// interrupted at any point (crash, kill, canceled ctx) and run again leaves
// no gap and no duplicate, and a run after a complete one writes nothing.
// ImportBolt returns after an fsync that covers everything it wrote.
//
// progress, when not nil, is called after each conversation, from the
// calling goroutine. ImportBolt is safe to run while dst serves other
// conversations, but is meant to run before the engine starts serving:
//
//	src, err := bolt.Open(filepath.Join(dataDir, "charla.db"))
//	...
//	dst, err := pebble.Open(ctx, filepath.Join(dataDir, "charla.pebble"), opts)
//	...
//	stats, err := pebble.ImportBolt(ctx, src, dst, func(p pebble.ImportProgress) {
//		if p.Done%1000 == 0 || p.Done == p.Total {
//			log.Info().Int("done", p.Done).Int("total", p.Total).Msg("importing charla.db")
//		}
//	})
//	if err != nil { /* leave charla.db in place: the next start resumes */ }
//	src.Close()
//	os.Rename(filepath.Join(dataDir, "charla.db"), filepath.Join(dataDir, "charla.db.imported"))
//
// The rename is what marks the import done: start it whenever charla.db
// exists, not only when dst is empty, since a store left half-imported by a
// crash is not empty and must be resumed.
func ImportBolt(ctx context.Context, src *bolt.Store, dst *Store, progress func(ImportProgress)) (ImportStats, error) {
	var stats ImportStats
	end, err := dst.gate.Enter(ctx)
	if err != nil {
		return stats, fmt.Errorf("pebble: import: %w", err)
	}
	defer end()
	convs, err := src.Conversations(ctx)
	if err != nil {
		return stats, fmt.Errorf("pebble: import: %w", err)
	}
	var unsynced int
	for i, conv := range convs {
		if err := dst.importConv(ctx, src, conv, &stats, &unsynced); err != nil {
			return stats, fmt.Errorf("pebble: import %s: %w", conv, err)
		}
		stats.Conversations++
		if progress != nil {
			progress(ImportProgress{Conv: conv, Done: i + 1, Total: len(convs), ImportStats: stats})
		}
	}
	if err := dst.syncWAL(); err != nil {
		return stats, fmt.Errorf("pebble: import: %w", err)
	}
	return stats, nil
}

// syncWAL makes every write so far durable: a sync of the WAL covers every
// record before it.
func (s *Store) syncWAL() error {
	if err := s.db.LogData(nil, pebbledb.Sync); err != nil {
		return fmt.Errorf("sync: %w: %w", store.ErrUnavailable, err)
	}
	return nil
}

// importConv imports one conversation; the caller is inside s.gate.
func (s *Store) importConv(ctx context.Context, src *bolt.Store, conv charla.ConvID, stats *ImportStats, unsynced *int) error {
	states, unlock, err := s.lockConvs([]charla.ConvID{conv})
	if err != nil {
		return err
	}
	defer unlock()
	c := states[conv]
	head := c.head
	srcHead, err := src.Head(ctx, conv)
	if err != nil {
		return err
	}
	if head > srcHead {
		return fmt.Errorf("%w: head %d here, %d in bolt", ErrDiverged, head, srcHead)
	}
	if head > 0 {
		if err := s.checkCommon(ctx, src, conv, head); err != nil {
			return err
		}
	}
	stats.Present += int(head)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		page, err := src.Range(ctx, conv, head, importPage)
		if err != nil {
			return err
		}
		if len(page) == 0 {
			break
		}
		b := s.db.NewBatch()
		for _, m := range page {
			if m.Seq != head+1 {
				b.Close()
				return fmt.Errorf("bolt store has seq %d after %d", m.Seq, head)
			}
			rec, ts, err := encodeRecord(m, m.TS)
			if err == nil {
				err = b.Set(msgKey(conv, m.Seq), rec, nil)
			}
			if err == nil {
				err = b.Set(idKey(conv, m.ClientMsgID), idValue(m.Seq, ts), nil)
			}
			if err != nil {
				b.Close()
				return fmt.Errorf("seq %d: %w", m.Seq, err)
			}
			head = m.Seq
		}
		*unsynced += b.Len()
		err = b.Commit(pebbledb.NoSync)
		b.Close()
		if err != nil {
			c.loaded = false // reload the head from the log before the next write
			return fmt.Errorf("commit: %w: %w", store.ErrUnavailable, err)
		}
		c.head = head
		stats.Messages += len(page)
		if *unsynced >= importSyncBytes {
			if err := s.syncWAL(); err != nil {
				return err
			}
			*unsynced = 0
		}
	}
	cursors, err := src.ReadCursors(ctx, conv)
	if err != nil {
		return err
	}
	for user, seq := range cursors {
		moved, err := s.raiseCursor(conv, user, seq, pebbledb.NoSync)
		if err != nil {
			return err
		}
		if moved {
			stats.Cursors++
			*unsynced += 64
		}
	}
	return nil
}

// checkCommon checks that message seq of conv is the same here and in src.
func (s *Store) checkCommon(ctx context.Context, src *bolt.Store, conv charla.ConvID, seq charla.Seq) error {
	theirs, err := src.Range(ctx, conv, seq-1, 1)
	if err != nil {
		return err
	}
	ours, err := s.rangeMsgs(ctx, conv, seq-1, 1)
	if err != nil {
		return err
	}
	if len(theirs) != 1 || len(ours) != 1 || theirs[0].ClientMsgID != ours[0].ClientMsgID || !theirs[0].TS.Equal(ours[0].TS) {
		return fmt.Errorf("%w: seq %d differs", ErrDiverged, seq)
	}
	return nil
}
