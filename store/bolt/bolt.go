// Package bolt is the embedded store.Store: one bbolt file under the data
// dir. It exists so that the engine runs on a fresh machine with no database
// server (`make run`), with the same guarantees as postgres for a single
// process: one transaction and one fsync per Append call, whatever the number
// of messages and conversations in it. (The outage spool in front of
// PostgreSQL is another package, store/spool.)
//
// Layout (schema version 1):
//
//	meta/version                 "1"
//	convs/<conv>/msgs/<seq>      a message record (JSON); seq as 8 bytes big-endian,
//	                             so that keys sort in seq order; the bucket's
//	                             sequence is the conversation's head
//	convs/<conv>/ids/<client id> seq (8 bytes) ‖ TS (8 bytes, unix µs), so that a
//	                             duplicate is answered without decoding its message
//	convs/<conv>/reads/<user>    seq (8 bytes)
package bolt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"charla"
	"charla/store"
	"charla/store/internal/boltfile"
)

// schemaVersion is bumped on any incompatible layout change, so that an old
// binary refuses a newer file instead of misreading it.
const schemaVersion = "1"

var (
	bucketMeta  = []byte("meta")
	bucketConvs = []byte("convs")
	bucketMsgs  = []byte("msgs")
	bucketIDs   = []byte("ids")
	bucketReads = []byte("reads")
	keyVersion  = []byte("version")
)

// DefaultLockTimeout is how long Open waits for the file lock. bbolt's own
// default is to wait forever, which turns a second engine started on the same
// data dir into a silent hang; a short wait turns it into ErrLocked.
const DefaultLockTimeout = boltfile.DefaultLockTimeout

// ErrLocked is returned by Open when another process (or another Open in this
// one) holds the file, so that the caller can say "is charla already
// running?" rather than print a bare timeout. It is the same sentinel as
// spool.ErrLocked: both files are opened by store/internal/boltfile.
var ErrLocked = boltfile.ErrLocked

// Option adjusts Open; options exist so that tests and tools can change the
// rare knob without Open growing parameters.
type Option func(*options)

type options struct {
	lockTimeout time.Duration
}

// WithLockTimeout sets how long Open waits for the file lock before failing
// with ErrLocked (DefaultLockTimeout otherwise). Zero or less means wait
// forever, which only a tool that knows the holder will exit should use.
func WithLockTimeout(d time.Duration) Option {
	return func(o *options) { o.lockTimeout = d }
}

// Store is the bbolt implementation of store.Store. It is safe for
// concurrent use; bbolt serialises the writers, readers never wait for them.
type Store struct {
	path string

	// mu is held for reading by every call and for writing by Close, so
	// that Close waits for calls in flight and every later call reports
	// store.ErrClosed rather than a bbolt internal error.
	gate store.Gate
	db   *bbolt.DB
}

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its parent directories when needed) the store
// file at path, readable by its owner only since it holds every
// conversation. Only one Store may have a file open at a time: a second Open
// fails with ErrLocked after the lock timeout.
func Open(path string, opts ...Option) (*Store, error) {
	o := options{lockTimeout: DefaultLockTimeout}
	for _, opt := range opts {
		opt(&o)
	}
	db, err := boltfile.Open(path, o.lockTimeout)
	if err != nil {
		return nil, fmt.Errorf("bolt: %w", err)
	}
	if err := db.Update(initSchema); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("bolt: open %s: %w", path, err)
	}
	return &Store{path: path, db: db}, nil
}

// initSchema creates the top-level buckets of a new file and refuses a file
// of another schema version.
func initSchema(tx *bbolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	switch v := meta.Get(keyVersion); {
	case v == nil:
		if err := meta.Put(keyVersion, []byte(schemaVersion)); err != nil {
			return err
		}
	case string(v) != schemaVersion:
		return fmt.Errorf("schema version %q, this binary reads version %q", v, schemaVersion)
	}
	_, err = tx.CreateBucketIfNotExists(bucketConvs)
	return err
}

// Path is the file the store was opened on, so that a caller (or a test) can
// reopen the same data after Close.
func (s *Store) Path() string { return s.path }

// record is a message as stored; Conv and Seq are implied by its key.
type record struct {
	ClientMsgID string          `json:"client_msg_id"`
	Sender      charla.Sender   `json:"sender"`
	Body        json.RawMessage `json:"body"`
	TS          int64           `json:"ts_us"` // unix microseconds
}

// encode validates m and returns its stored form and its TS as stored.
func encode(m charla.Message, now time.Time) ([]byte, time.Time, error) {
	if m.Conv == "" {
		return nil, time.Time{}, errors.New("message without conv")
	}
	if m.ClientMsgID == "" {
		return nil, time.Time{}, errors.New("message without client_msg_id")
	}
	ts := now
	if !m.TS.IsZero() {
		ts = m.TS.UTC().Truncate(time.Microsecond)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // bodies are relayed to clients, keep them as sent
	if err := enc.Encode(record{ClientMsgID: m.ClientMsgID, Sender: m.Sender, Body: m.Body, TS: ts.UnixMicro()}); err != nil {
		return nil, time.Time{}, fmt.Errorf("client_msg_id %s: %w", m.ClientMsgID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), ts, nil
}

// decode turns a stored record back into the message it was.
func decode(conv charla.ConvID, key, val []byte) (charla.Message, error) {
	var r record
	if err := json.Unmarshal(val, &r); err != nil { // copies Body out of bbolt's memory
		return charla.Message{}, fmt.Errorf("seq %d: %w", binary.BigEndian.Uint64(key), err)
	}
	return charla.Message{
		Conv:        conv,
		Seq:         charla.Seq(binary.BigEndian.Uint64(key)),
		ClientMsgID: r.ClientMsgID,
		Sender:      r.Sender,
		Body:        r.Body,
		TS:          time.UnixMicro(r.TS).UTC(),
	}, nil
}

// u64 is the 8-byte big-endian form used for seqs in keys and values.
func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// conv is one conversation's buckets within a transaction.
type conv struct {
	msgs, ids, reads *bbolt.Bucket
}

// openConv returns conv's buckets, or nil when the conversation has none yet.
func openConv(tx *bbolt.Tx, id charla.ConvID) *conv {
	b := tx.Bucket(bucketConvs).Bucket([]byte(id))
	if b == nil {
		return nil
	}
	return &conv{msgs: b.Bucket(bucketMsgs), ids: b.Bucket(bucketIDs), reads: b.Bucket(bucketReads)}
}

// createConv returns conv's buckets, creating them when needed; tx must be
// writable.
func createConv(tx *bbolt.Tx, id charla.ConvID) (*conv, error) {
	if c := openConv(tx, id); c != nil {
		return c, nil
	}
	b, err := tx.Bucket(bucketConvs).CreateBucket([]byte(id))
	if err != nil {
		return nil, err
	}
	c := &conv{}
	if c.msgs, err = b.CreateBucket(bucketMsgs); err != nil {
		return nil, err
	}
	if c.ids, err = b.CreateBucket(bucketIDs); err != nil {
		return nil, err
	}
	if c.reads, err = b.CreateBucket(bucketReads); err != nil {
		return nil, err
	}
	return c, nil
}

// Append implements store.Store. Messages are validated and encoded before
// the write transaction, since bbolt has one writer at a time and the time
// spent inside it bounds the store's throughput.
func (s *Store) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("bolt: append: %w", err)
	}
	defer end()
	if len(msgs) == 0 {
		return []store.AppendResult{}, nil
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	recs := make([][]byte, len(msgs))
	res := make([]store.AppendResult, len(msgs))
	for i, m := range msgs {
		if recs[i], res[i].TS, err = encode(m, now); err != nil {
			return nil, fmt.Errorf("bolt: append %s: %w", m.Conv, err)
		}
	}
	// failed keeps the error of the message that failed, which names its
	// conversation; any other error of Update is the commit's.
	var failed error
	fail := func(m charla.Message, err error) error {
		failed = fmt.Errorf("bolt: append %s: %w", m.Conv, err)
		return failed
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		convs := make(map[charla.ConvID]*conv)
		for i, m := range msgs {
			c, ok := convs[m.Conv]
			if !ok {
				var err error
				if c, err = createConv(tx, m.Conv); err != nil {
					return fail(m, err)
				}
				// Seqs only grow: pack the pages instead of splitting
				// them half-empty.
				c.msgs.FillPercent = 0.95
				convs[m.Conv] = c
			}
			id := []byte(m.ClientMsgID)
			if v := c.ids.Get(id); v != nil {
				res[i] = store.AppendResult{
					Seq:       charla.Seq(binary.BigEndian.Uint64(v[:8])),
					TS:        time.UnixMicro(int64(binary.BigEndian.Uint64(v[8:]))).UTC(),
					Duplicate: true,
				}
				continue
			}
			seq, err := c.msgs.NextSequence()
			if err != nil {
				return fail(m, err)
			}
			key := u64(seq)
			if err := c.msgs.Put(key, recs[i]); err != nil {
				return fail(m, fmt.Errorf("seq %d: %w", seq, err))
			}
			if err := c.ids.Put(id, binary.BigEndian.AppendUint64(key, uint64(res[i].TS.UnixMicro()))); err != nil {
				return fail(m, fmt.Errorf("client_msg_id %s: %w", m.ClientMsgID, err))
			}
			res[i].Seq = charla.Seq(seq)
		}
		return nil
	})
	switch {
	case failed != nil:
		return nil, failed
	case err != nil:
		return nil, fmt.Errorf("bolt: append: commit of %d messages: %w", len(msgs), err)
	}
	return res, nil
}

// Range implements store.Store.
func (s *Store) Range(ctx context.Context, id charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("bolt: range %s: %w", id, err)
	}
	defer end()
	var out []charla.Message
	err = s.db.View(func(tx *bbolt.Tx) error {
		c := openConv(tx, id)
		if c == nil || limit <= 0 {
			return nil
		}
		head := charla.Seq(c.msgs.Sequence())
		if after >= head {
			return nil
		}
		out = make([]charla.Message, 0, min(uint64(limit), uint64(head-after)))
		cur := c.msgs.Cursor()
		for k, v := cur.Seek(u64(uint64(after) + 1)); k != nil && len(out) < limit; k, v = cur.Next() {
			m, err := decode(id, k, v)
			if err != nil {
				return err
			}
			out = append(out, m)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: range %s: %w", id, err)
	}
	return out, nil
}

// Head implements store.Store.
func (s *Store) Head(ctx context.Context, id charla.ConvID) (charla.Seq, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return 0, fmt.Errorf("bolt: head %s: %w", id, err)
	}
	defer end()
	var head charla.Seq
	err = s.db.View(func(tx *bbolt.Tx) error {
		if c := openConv(tx, id); c != nil {
			head = charla.Seq(c.msgs.Sequence())
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("bolt: head %s: %w", id, err)
	}
	return head, nil
}

// Conversations lists every conversation the store holds (with messages, or
// with read cursors only), in byte order of their IDs, so that a tool can
// walk the whole store through the Store API: the pebble store's importer
// does.
func (s *Store) Conversations(ctx context.Context) ([]charla.ConvID, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("bolt: conversations: %w", err)
	}
	defer end()
	out := []charla.ConvID{}
	err = s.db.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketConvs).ForEachBucket(func(k []byte) error {
			out = append(out, charla.ConvID(k))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: conversations: %w", err)
	}
	return out, nil
}

// errUnchanged rolls back a cursor update that would not move the cursor, so
// that a repeated or late read frame costs no fsync.
var errUnchanged = errors.New("unchanged")

// SetReadCursor implements store.Store. A cursor may be set in a
// conversation without messages (and beyond its head): the conversation actor
// decides what a valid read is, the store only keeps the highest one.
func (s *Store) SetReadCursor(ctx context.Context, id charla.ConvID, user string, seq charla.Seq) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("bolt: set read cursor %s: %w", id, err)
	}
	defer end()
	if id == "" || user == "" {
		return fmt.Errorf("bolt: set read cursor %q user %q: conv and user are required", id, user)
	}
	err = s.db.Update(func(tx *bbolt.Tx) error {
		c := openConv(tx, id)
		if c != nil {
			if v := c.reads.Get([]byte(user)); v != nil && binary.BigEndian.Uint64(v) >= uint64(seq) {
				return errUnchanged
			}
		} else {
			var err error
			if c, err = createConv(tx, id); err != nil {
				return err
			}
		}
		return c.reads.Put([]byte(user), u64(uint64(seq)))
	})
	if err != nil && !errors.Is(err, errUnchanged) {
		return fmt.Errorf("bolt: set read cursor %s: %w", id, err)
	}
	return nil
}

// ReadCursors implements store.Store.
func (s *Store) ReadCursors(ctx context.Context, id charla.ConvID) (map[string]charla.Seq, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("bolt: read cursors %s: %w", id, err)
	}
	defer end()
	out := map[string]charla.Seq{}
	err = s.db.View(func(tx *bbolt.Tx) error {
		c := openConv(tx, id)
		if c == nil {
			return nil
		}
		return c.reads.ForEach(func(k, v []byte) error {
			out[string(k)] = charla.Seq(binary.BigEndian.Uint64(v))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("bolt: read cursors %s: %w", id, err)
	}
	return out, nil
}

// Close implements store.Store: it waits for calls in flight, then releases
// the file (and its lock) so that another Open may proceed.
func (s *Store) Close() error {
	if !s.gate.Shut() {
		return fmt.Errorf("bolt: close %s: %w", s.path, store.ErrClosed)
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("bolt: close %s: %w", s.path, err)
	}
	return nil
}
