// Package spool is the engine's local, durable outage buffer. While
// PostgreSQL is unreachable the store actor keeps accepting messages: it
// sequences them itself (continuing from the conversation's head), writes
// them here with fsync, acks and fans them out; when the database is back it
// drains the spool into it, oldest first and idempotently
// (postgres.Store.AppendSequenced), and the spool empties.
//
// The spool is one bbolt file with three buckets:
//
//	log   8-byte big-endian Key (arrival order) → the message as JSON
//	seq   conv 0x00 seq(8 bytes, big-endian)   → Key, client_msg_id
//	cmid  conv 0x00 client_msg_id              → Key, seq
//
// log is the FIFO the drain reads; seq serves Head and Range (history reads
// during the outage); cmid serves Lookup (deduplication during the outage,
// when the database cannot be the final word). Conversation ids never contain
// a 0x00 byte (charla.ConvID.Validate), which keeps the composite keys
// unambiguous.
package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"charla"
	"charla/store/internal/boltfile"
)

// Key orders spooled messages by arrival: Peek returns keys, Remove takes the
// last one drained.
type Key uint64

// Entry is a spooled message with its place in the spool.
type Entry struct {
	Key Key
	Msg charla.Message
}

// Errors of the spool, for errors.Is.
var (
	// ErrClosed: the spool was closed.
	ErrClosed = errors.New("spool: closed")
	// ErrInvalid: a message without conversation, client_msg_id or seq.
	ErrInvalid = errors.New("spool: invalid message")
	// ErrConflict: a message claims a seq already spooled for another
	// message of its conversation, or a client_msg_id already spooled at
	// another seq. Nothing of the Put was written.
	ErrConflict = errors.New("spool: conflict")
	// ErrLocked: Open found the file held by another process (or another
	// Open in this one). It is the same sentinel as bolt.ErrLocked.
	ErrLocked = boltfile.ErrLocked
)

var (
	bucketLog  = []byte("log")
	bucketSeq  = []byte("seq")
	bucketCmid = []byte("cmid")
)

// Spool is a durable FIFO of sequenced messages. It is safe for concurrent
// use; bbolt serializes writers.
type Spool struct {
	db     *bolt.DB
	n      atomic.Int64
	closed atomic.Bool
}

// Open opens (creating if needed) the spool file at path, and its directory.
// A second process opening the same file waits up to a second for the file
// lock and then fails with ErrLocked, rather than hanging.
func Open(path string) (*Spool, error) {
	db, err := boltfile.Open(path, boltfile.DefaultLockTimeout)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	s := &Spool{db: db}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketLog, bucketSeq, bucketCmid} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		s.n.Store(int64(tx.Bucket(bucketLog).Stats().KeyN))
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("spool: open %s: %w", path, err)
	}
	return s, nil
}

// Close closes the file. Later calls fail with ErrClosed.
func (s *Spool) Close() error {
	if s.closed.Swap(true) {
		return fmt.Errorf("spool: close: %w", ErrClosed)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}

// Len is the number of spooled messages: the spool-depth gauge, and zero
// when the drain is complete.
func (s *Spool) Len() int { return int(s.n.Load()) }

// Put appends msgs, in order, in one fsync'd transaction: when it returns nil
// they survive a crash, so the engine may ack them. Each message must carry
// its conversation, client_msg_id and the seq the engine gave it (and should
// carry its TS, kept as given). A message already spooled with the same seq
// is skipped (a repeated Put is harmless); a conflicting one fails the whole
// call with ErrConflict, an incomplete one with ErrInvalid.
func (s *Spool) Put(ctx context.Context, msgs []charla.Message) error {
	if err := s.check(ctx, "put"); err != nil {
		return err
	}
	for i, m := range msgs {
		switch {
		case m.Conv == "" || strings.IndexByte(string(m.Conv), 0) >= 0:
			return fmt.Errorf("spool: put: message %d: %w: bad conversation id %q", i, ErrInvalid, m.Conv)
		case m.ClientMsgID == "":
			return fmt.Errorf("spool: put: message %d: %w: empty client_msg_id", i, ErrInvalid)
		case m.Seq == 0:
			return fmt.Errorf("spool: put: message %d: %w: seq 0", i, ErrInvalid)
		}
	}
	added := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		added = 0
		log, seqs, cmids := tx.Bucket(bucketLog), tx.Bucket(bucketSeq), tx.Bucket(bucketCmid)
		for _, m := range msgs {
			sk, ck := seqKey(m.Conv, m.Seq), cmidKey(m.Conv, m.ClientMsgID)
			if v := seqs.Get(sk); v != nil {
				if string(v[8:]) == m.ClientMsgID {
					continue // already spooled
				}
				return fmt.Errorf("%w: seq %d of %s is spooled for %q, not %q", ErrConflict, m.Seq, m.Conv, v[8:], m.ClientMsgID)
			}
			if v := cmids.Get(ck); v != nil {
				return fmt.Errorf("%w: %s/%s is spooled at seq %d, not %d", ErrConflict, m.Conv, m.ClientMsgID, binary.BigEndian.Uint64(v[8:]), m.Seq)
			}
			n, err := log.NextSequence()
			if err != nil {
				return err
			}
			data, err := json.Marshal(m)
			if err != nil {
				return err
			}
			k := u64(n)
			if err := log.Put(k, data); err != nil {
				return err
			}
			if err := seqs.Put(sk, append(u64(n), m.ClientMsgID...)); err != nil {
				return err
			}
			if err := cmids.Put(ck, append(u64(n), u64(uint64(m.Seq))...)); err != nil {
				return err
			}
			added++
		}
		return nil
	})
	if err != nil {
		return s.wrap("put", err)
	}
	s.n.Add(int64(added))
	return nil
}

// Peek returns up to n of the oldest spooled messages, oldest first, without
// removing them.
func (s *Spool) Peek(ctx context.Context, n int) ([]Entry, error) {
	if err := s.check(ctx, "peek"); err != nil {
		return nil, err
	}
	var out []Entry
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketLog).Cursor()
		for k, v := c.First(); k != nil && len(out) < n; k, v = c.Next() {
			var m charla.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			out = append(out, Entry{Key: Key(binary.BigEndian.Uint64(k)), Msg: m})
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("peek", err)
	}
	return out, nil
}

// Remove deletes every entry up to and including upTo, in one fsync'd
// transaction: the drain calls it once the database has committed them.
func (s *Spool) Remove(ctx context.Context, upTo Key) error {
	if err := s.check(ctx, "remove"); err != nil {
		return err
	}
	removed := 0
	err := s.db.Update(func(tx *bolt.Tx) error {
		removed = 0
		log, seqs, cmids := tx.Bucket(bucketLog), tx.Bucket(bucketSeq), tx.Bucket(bucketCmid)
		c := log.Cursor()
		for k, v := c.First(); k != nil && binary.BigEndian.Uint64(k) <= uint64(upTo); k, v = c.First() {
			var m charla.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			if err := seqs.Delete(seqKey(m.Conv, m.Seq)); err != nil {
				return err
			}
			if err := cmids.Delete(cmidKey(m.Conv, m.ClientMsgID)); err != nil {
				return err
			}
			if err := c.Delete(); err != nil {
				return err
			}
			removed++
		}
		return nil
	})
	if err != nil {
		return s.wrap("remove", err)
	}
	s.n.Add(-int64(removed))
	return nil
}

// Head returns the highest seq spooled for conv, and false when none is. The
// engine's head for a conversation is the larger of this and the store's, so
// that sequencing goes on without gaps or reuse across an outage.
func (s *Spool) Head(conv charla.ConvID) (charla.Seq, bool, error) {
	if err := s.check(context.Background(), "head"); err != nil {
		return 0, false, err
	}
	var (
		head  charla.Seq
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketSeq).Cursor()
		prefix := convPrefix(conv)
		// Every key of conv sorts before conv 0x01; the one just before it
		// is conv's highest seq, if it has the prefix.
		end := append([]byte(string(conv)), 1)
		k, _ := c.Seek(end)
		if k == nil {
			k, _ = c.Last()
		} else {
			k, _ = c.Prev()
		}
		if k != nil && bytes.HasPrefix(k, prefix) && len(k) == len(prefix)+8 {
			head, found = charla.Seq(binary.BigEndian.Uint64(k[len(prefix):])), true
		}
		return nil
	})
	if err != nil {
		return 0, false, s.wrap("head", err)
	}
	return head, found, nil
}

// Range returns up to limit spooled messages of conv with seq > after, in
// seq order: history reads while the database is down.
func (s *Spool) Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	if err := s.check(ctx, "range"); err != nil {
		return nil, err
	}
	var out []charla.Message
	if limit <= 0 || after == ^charla.Seq(0) {
		return out, nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		log := tx.Bucket(bucketLog)
		c := tx.Bucket(bucketSeq).Cursor()
		prefix := convPrefix(conv)
		for k, v := c.Seek(seqKey(conv, after+1)); k != nil && bytes.HasPrefix(k, prefix) && len(out) < limit; k, v = c.Next() {
			data := log.Get(v[:8])
			if data == nil {
				return fmt.Errorf("index points at missing entry %d", binary.BigEndian.Uint64(v[:8]))
			}
			var m charla.Message
			if err := json.Unmarshal(data, &m); err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("range", err)
	}
	return out, nil
}

// Lookup returns the spooled message (conv, clientMsgID), if any: the final
// word on duplicates while the database cannot be asked.
func (s *Spool) Lookup(conv charla.ConvID, clientMsgID string) (charla.Message, bool, error) {
	if err := s.check(context.Background(), "lookup"); err != nil {
		return charla.Message{}, false, err
	}
	var (
		m     charla.Message
		found bool
	)
	err := s.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(bucketCmid).Get(cmidKey(conv, clientMsgID))
		if v == nil {
			return nil
		}
		data := tx.Bucket(bucketLog).Get(v[:8])
		if data == nil {
			return fmt.Errorf("index points at missing entry %d", binary.BigEndian.Uint64(v[:8]))
		}
		found = true
		return json.Unmarshal(data, &m)
	})
	if err != nil {
		return charla.Message{}, false, s.wrap("lookup", err)
	}
	return m, found, nil
}

// Drain moves the whole spool into sink, oldest first, in batches of up to
// batch messages, and returns how many it moved. A batch is removed only
// after sink returned nil, so a crash or an error in between delivers it
// again: sink must be idempotent (postgres.Store.AppendSequenced is).
// Messages Put while Drain runs are drained too; Drain returns when the spool
// is empty or on the first error (the failed batch stays spooled).
func (s *Spool) Drain(ctx context.Context, batch int, sink func(ctx context.Context, msgs []charla.Message) error) (int, error) {
	if batch <= 0 {
		batch = 500
	}
	moved := 0
	for {
		entries, err := s.Peek(ctx, batch)
		if err != nil {
			return moved, err
		}
		if len(entries) == 0 {
			return moved, nil
		}
		msgs := make([]charla.Message, len(entries))
		for i, e := range entries {
			msgs[i] = e.Msg
		}
		if err := sink(ctx, msgs); err != nil {
			return moved, fmt.Errorf("spool: drain: %w", err)
		}
		if err := s.Remove(ctx, entries[len(entries)-1].Key); err != nil {
			return moved, err
		}
		moved += len(entries)
	}
}

// check refuses work on a closed spool or an ended context.
func (s *Spool) check(ctx context.Context, op string) error {
	if s.closed.Load() {
		return fmt.Errorf("spool: %s: %w", op, ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("spool: %s: %w", op, err)
	}
	return nil
}

// wrap adds context to an error of a bbolt transaction.
func (s *Spool) wrap(op string, err error) error {
	if errors.Is(err, bolterrors.ErrDatabaseNotOpen) {
		err = fmt.Errorf("%w: %w", ErrClosed, err)
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

func u64(n uint64) []byte {
	return binary.BigEndian.AppendUint64(nil, n)
}

func convPrefix(conv charla.ConvID) []byte {
	return append([]byte(string(conv)), 0)
}

func seqKey(conv charla.ConvID, seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(convPrefix(conv), uint64(seq))
}

func cmidKey(conv charla.ConvID, cmid string) []byte {
	return append(convPrefix(conv), cmid...)
}
