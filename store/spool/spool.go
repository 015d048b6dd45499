// Package spool is the engine's local, durable outage buffer. While
// PostgreSQL is unreachable the store actor keeps accepting messages: it
// sequences them itself (continuing from the conversation's head), writes
// them here with fsync, acks and fans them out; when the database is back it
// drains the spool into it, oldest first and idempotently
// (postgres.Store.AppendSequenced), and the spool empties.
//
// Besides the spooled messages it keeps two things the drain and the
// deduplication of sends need when the database cannot be asked:
//
//   - the ack index: every (conv, client_msg_id) the engine acked recently,
//     by the store or by the spool, with the seq and time it was acked with,
//     so that a resend older than the conversation's in-memory dedup window is
//     still answered as a duplicate during an outage (RecordAcks, Acked). It
//     is bounded by age and by count (Options.DedupWindow, DedupMax) and
//     pruned in the background.
//   - dead letters: spooled messages the database refused (a constraint, a
//     value jsonb cannot hold). The drain sets them aside here with their
//     error instead of retrying them forever (PutDeadLetter, DeadLetters).
//
// # Key layout (one Pebble database, schema version 1)
//
// <conv> is the conversation ID prefixed by its uvarint length, as in
// store/pebble: a prefix-free code, so no conversation's keys can fall in
// another's range.
//
//	0x00 "version"                      "1"
//	'l' <key: 8 bytes BE>               the spooled message as JSON (the FIFO, arrival order)
//	's' <conv> <seq: 8 bytes BE>        key ‖ client_msg_id        (Head, Range)
//	'c' <conv> <client_msg_id>          key ‖ seq                  (Lookup, Put's conflicts)
//	'a' <conv> <client_msg_id>          seq ‖ TS µs ‖ acked-at µs  (the ack index)
//	't' <acked-at µs> <conv> <cmid>     empty                      (the ack index by age, for pruning)
//	'd' <conv> <seq: 8 bytes BE>        the dead letter as JSON
//
// The log, 's' and 'c' entries of a message are written in one synced batch
// and removed in one batch when it is drained, so they never disagree.
//
// Pebble rather than bbolt for the same reason as the embedded store: during
// an outage every ack waits for a spool write, and a Pebble commit is one
// sequential WAL append and one fdatasync whatever the number of
// conversations it touches.
package spool

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"

	"charla"
	"charla/store/internal/pebblefile"
)

// Key orders spooled messages by arrival: Peek returns keys, Remove takes the
// last one drained.
type Key uint64

// Entry is a spooled message with its place in the spool.
type Entry struct {
	Key Key
	Msg charla.Message
}

// Ack is what the ack index remembers of one accepted message: the seq and
// time its sender was acked with.
type Ack struct {
	Conv        charla.ConvID
	ClientMsgID string
	Seq         charla.Seq
	TS          time.Time
}

// DeadLetter is a spooled message the store refused, set aside so that the
// drain goes on. Its seq holds a tombstone in the store.
type DeadLetter struct {
	Msg charla.Message `json:"msg"`
	// Err is the store's refusal, as text.
	Err string `json:"error"`
	// At is when the drain set the message aside.
	At time.Time `json:"at"`
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
	// ErrLocked: Open found the directory held by another process (or
	// another Open in this one).
	ErrLocked = errors.New("spool: directory locked by another process")
)

// Options configures Open. Zero fields take DefaultOptions' values.
type Options struct {
	// Logger receives the spool's lines and Pebble's own (at debug level
	// for its informational ones).
	Logger zerolog.Logger
	// DedupWindow is how long an ack stays in the ack index.
	DedupWindow time.Duration
	// DedupMax bounds the ack index: past it the oldest acks are pruned
	// first, whatever their age.
	DedupMax int
	// PruneInterval is how often the ack index is pruned.
	PruneInterval time.Duration
	// SyncInterval is how often acks recorded without fsync (RecordAcks with
	// sync false) are made durable, when nothing else synced them meanwhile.
	SyncInterval time.Duration
	// LockTimeout is how long Open waits for the directory lock.
	LockTimeout time.Duration

	fs vfs.FS // tests: an in-memory file system
}

// DefaultOptions returns the defaults: a day of acks, at most two million.
// At ≈ 150 bytes an entry (both keys, before compression) two million acks
// are ≈ 300 MB; at a busy 20 msg/s a day is 1.7 million, and at the bench's
// 2,000 msg/s the count bound keeps the last ≈ 17 minutes — still far more
// than a reconnecting client needs to resend what it was not acked for.
func DefaultOptions() Options {
	return Options{
		Logger:        zerolog.Nop(),
		DedupWindow:   24 * time.Hour,
		DedupMax:      2_000_000,
		PruneInterval: time.Minute,
		SyncInterval:  time.Second,
		LockTimeout:   time.Second,
	}
}

func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.DedupWindow <= 0 {
		o.DedupWindow = d.DedupWindow
	}
	if o.DedupMax <= 0 {
		o.DedupMax = d.DedupMax
	}
	if o.PruneInterval <= 0 {
		o.PruneInterval = d.PruneInterval
	}
	if o.SyncInterval <= 0 {
		o.SyncInterval = d.SyncInterval
	}
	if o.LockTimeout == 0 {
		o.LockTimeout = d.LockTimeout
	}
	return o
}

// schemaVersion is bumped on any incompatible layout change.
const schemaVersion = "1"

// Key kinds, the first byte of every key.
const (
	kindMeta byte = 0x00
	kindLog  byte = 'l'
	kindSeq  byte = 's'
	kindCmid byte = 'c'
	kindAck  byte = 'a'
	kindAge  byte = 't'
	kindDead byte = 'd'
)

var keyVersion = []byte{kindMeta, 'v', 'e', 'r', 's', 'i', 'o', 'n'}

// Spool is a durable FIFO of sequenced messages, with the ack index and the
// dead letters. It is safe for concurrent use.
type Spool struct {
	dir  string
	db   *pebbledb.DB
	lock *pebbledb.Lock
	opts Options
	log  zerolog.Logger

	// mu is held for reading by every call and for writing by Close, so
	// that Close waits for calls in flight and later calls say ErrClosed.
	mu     sync.RWMutex
	closed bool

	// wmu serializes the read-check-write sequences: Put's conflict checks,
	// Remove's index cleanup, the pruning of acks against their re-recording.
	wmu  sync.Mutex
	next atomic.Uint64 // the next log key
	// first is at or below the oldest log key still spooled: Peek and Remove
	// start there rather than at the start of the log, which would step over
	// the deletion tombstones of everything drained since the last
	// compaction (measured: 15 ms per Peek a few thousand messages into a
	// drain, which then fell behind a 400 msg/s load).
	first    atomic.Uint64
	n        atomic.Int64 // spooled messages
	acks     atomic.Int64 // entries of the ack index (by age keys)
	dead     atomic.Int64 // dead letters
	unsynced atomic.Bool  // acks were recorded without fsync since the last sync

	prune chan struct{} // wakes the pruner early (count bound passed)
	stop  chan struct{}
	done  chan struct{}
}

// Open opens (creating it and its parent directories when needed) the spool
// in directory dir, readable by its owner only. A second Open of the same
// directory fails with ErrLocked after opts.LockTimeout. It starts the
// background pruner of the ack index, which Close stops.
func Open(ctx context.Context, dir string, opts Options) (*Spool, error) {
	opts = opts.withDefaults()
	log := opts.Logger.With().Str("component", "spool").Logger()
	fs := opts.fs
	if fs == nil {
		fs = vfs.Default
	}
	if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	lock, err := pebblefile.LockDir(ctx, dir, fs, opts.LockTimeout, ErrLocked)
	if err != nil {
		return nil, err
	}
	db, err := pebbledb.Open(dir, &pebbledb.Options{
		FormatMajorVersion: pebbledb.FormatTableFormatV6,
		Lock:               lock,
		Logger:             pebbleLogger{log},
		FS:                 fs,
		// The spool is small and short-lived: pebble's defaults (a 4 MiB
		// memtable, 8 MiB cache) are plenty.
	})
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	s := &Spool{dir: dir, db: db, lock: lock, opts: opts, log: log,
		prune: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	if err := s.load(); err != nil {
		_ = db.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("spool: open %s: %w", dir, err)
	}
	go s.background()
	if s.n.Load() > 0 || s.dead.Load() > 0 {
		log.Info().Str("dir", dir).Int64("spooled", s.n.Load()).Int64("dead_letters", s.dead.Load()).
			Int64("acks", s.acks.Load()).Msg("spool open")
	}
	return s, nil
}

// load checks the schema and reads the counters: the next log key and how
// many messages, acks and dead letters there are.
func (s *Spool) load() error {
	v, closer, err := s.db.Get(keyVersion)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		if err := s.db.Set(keyVersion, []byte(schemaVersion), pebbledb.Sync); err != nil {
			return err
		}
		// As in store/pebble: the first WAL of a new database predates the
		// format ratchet; a flush moves on to one with sync offsets.
		if err := s.db.Flush(); err != nil {
			return err
		}
	case err != nil:
		return err
	default:
		ok := string(v) == schemaVersion
		closer.Close()
		if !ok {
			return fmt.Errorf("schema version %q, this binary reads version %q", v, schemaVersion)
		}
	}
	count := func(kind byte, last *[]byte) (int64, error) {
		it, err := s.db.NewIter(kindBounds(kind))
		if err != nil {
			return 0, err
		}
		defer it.Close()
		var n int64
		for ok := it.First(); ok; ok = it.Next() {
			n++
			if last != nil {
				*last = append((*last)[:0], it.Key()...)
			}
		}
		return n, it.Error()
	}
	var lastLog []byte
	n, err := count(kindLog, &lastLog)
	if err != nil {
		return err
	}
	s.n.Store(n)
	s.next.Store(1)
	if len(lastLog) == 9 {
		s.next.Store(binary.BigEndian.Uint64(lastLog[1:]) + 1)
	}
	s.first.Store(0)
	if n, err = count(kindAge, nil); err != nil {
		return err
	}
	s.acks.Store(n)
	if n, err = count(kindDead, nil); err != nil {
		return err
	}
	s.dead.Store(n)
	return nil
}

// Dir is the directory the spool was opened on.
func (s *Spool) Dir() string { return s.dir }

// Close stops the pruner, syncs what was recorded without fsync and closes
// the database. Later calls fail with ErrClosed.
func (s *Spool) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("spool: close: %w", ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	close(s.stop)
	<-s.done
	var err error
	if s.unsynced.Swap(false) {
		err = s.db.LogData(nil, pebbledb.Sync)
	}
	err = errors.Join(err, s.db.Close(), s.lock.Close())
	if err != nil {
		return fmt.Errorf("spool: close %s: %w", s.dir, err)
	}
	return nil
}

// begin starts a call: it fails when ctx is done or the spool is closed, and
// otherwise holds s.mu for reading until the returned func is called.
func (s *Spool) begin(ctx context.Context, op string) (func(), error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("spool: %s: %w", op, err)
	}
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return nil, fmt.Errorf("spool: %s: %w", op, ErrClosed)
	}
	return s.mu.RUnlock, nil
}

// Len is the number of spooled messages: the spool-depth gauge, and zero
// when the drain is complete.
func (s *Spool) Len() int { return int(s.n.Load()) }

// Acks is the number of entries in the ack index.
func (s *Spool) Acks() int { return int(s.acks.Load()) }

// DeadLetterCount is the number of dead letters kept.
func (s *Spool) DeadLetterCount() int { return int(s.dead.Load()) }

// Put appends msgs, in order, in one fsync'd batch: when it returns nil they
// survive a crash, so the engine may ack them. Each message must carry its
// conversation, client_msg_id and the seq the engine gave it (and should
// carry its TS, kept as given). Each is recorded in the ack index in the same
// batch. A message already spooled with the same seq is skipped (a repeated
// Put is harmless); a conflicting one fails the whole call with ErrConflict,
// an incomplete one with ErrInvalid.
func (s *Spool) Put(ctx context.Context, msgs []charla.Message) error {
	end, err := s.begin(ctx, "put")
	if err != nil {
		return err
	}
	defer end()
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
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.db.NewIndexedBatch()
	defer b.Close()
	now := time.Now()
	added, next := 0, s.next.Load()
	for _, m := range msgs {
		sk, ck := seqKey(m.Conv, m.Seq), cmidKey(kindCmid, m.Conv, m.ClientMsgID)
		if v, ok, err := get(b, sk); err != nil {
			return fmt.Errorf("spool: put: %w", err)
		} else if ok {
			if string(v[8:]) == m.ClientMsgID {
				continue // already spooled
			}
			return fmt.Errorf("spool: put: %w: seq %d of %s is spooled for %q, not %q", ErrConflict, m.Seq, m.Conv, v[8:], m.ClientMsgID)
		}
		if v, ok, err := get(b, ck); err != nil {
			return fmt.Errorf("spool: put: %w", err)
		} else if ok {
			return fmt.Errorf("spool: put: %w: %s/%s is spooled at seq %d, not %d", ErrConflict, m.Conv, m.ClientMsgID, binary.BigEndian.Uint64(v[8:]), m.Seq)
		}
		data, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("spool: put: %w", err)
		}
		k := u64(next)
		lk := logKey(Key(next))
		next++
		err = errors.Join(
			b.Set(lk, data, nil),
			b.Set(sk, append(k, m.ClientMsgID...), nil),
			b.Set(ck, append(k, u64(uint64(m.Seq))...), nil),
			s.setAck(b, Ack{Conv: m.Conv, ClientMsgID: m.ClientMsgID, Seq: m.Seq, TS: m.TS}, now),
		)
		if err != nil {
			return fmt.Errorf("spool: put: %w", err)
		}
		added++
	}
	if added == 0 {
		return nil
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("spool: put: commit of %d messages: %w", added, err)
	}
	s.unsynced.Store(false) // the sync covered every earlier WAL record
	s.next.Store(next)
	s.n.Add(int64(added))
	s.acks.Add(int64(added))
	s.kickPrune()
	return nil
}

// get reads key from r, copying the value out.
func get(r pebbledb.Reader, key []byte) ([]byte, bool, error) {
	v, closer, err := r.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer closer.Close()
	return bytes.Clone(v), true, nil
}

// Peek returns up to n of the oldest spooled messages, oldest first, without
// removing them.
func (s *Spool) Peek(ctx context.Context, n int) ([]Entry, error) {
	end, err := s.begin(ctx, "peek")
	if err != nil {
		return nil, err
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: logKey(Key(s.first.Load())), UpperBound: []byte{kindLog + 1}})
	if err != nil {
		return nil, fmt.Errorf("spool: peek: %w", err)
	}
	defer it.Close()
	var out []Entry
	for ok := it.First(); ok && len(out) < n; ok = it.Next() {
		k := Key(binary.BigEndian.Uint64(it.Key()[1:]))
		var m charla.Message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return nil, fmt.Errorf("spool: peek: entry %d: %w", k, err)
		}
		out = append(out, Entry{Key: k, Msg: m})
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("spool: peek: %w", err)
	}
	return out, nil
}

// Remove deletes every entry up to and including upTo, in one fsync'd batch:
// the drain calls it once the database has committed them. Their acks stay
// in the ack index.
func (s *Spool) Remove(ctx context.Context, upTo Key) error {
	end, err := s.begin(ctx, "remove")
	if err != nil {
		return err
	}
	defer end()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: logKey(Key(s.first.Load())), UpperBound: logKey(upTo + 1)})
	if err != nil {
		return fmt.Errorf("spool: remove: %w", err)
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer b.Close()
	removed := 0
	for ok := it.First(); ok; ok = it.Next() {
		var m charla.Message
		if err := json.Unmarshal(it.Value(), &m); err != nil {
			return fmt.Errorf("spool: remove: entry %d: %w", binary.BigEndian.Uint64(it.Key()[1:]), err)
		}
		err := errors.Join(b.Delete(it.Key(), nil), b.Delete(seqKey(m.Conv, m.Seq), nil),
			b.Delete(cmidKey(kindCmid, m.Conv, m.ClientMsgID), nil))
		if err != nil {
			return fmt.Errorf("spool: remove: %w", err)
		}
		removed++
	}
	if err := it.Error(); err != nil {
		return fmt.Errorf("spool: remove: %w", err)
	}
	if removed == 0 {
		return nil
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		return fmt.Errorf("spool: remove: %w", err)
	}
	s.unsynced.Store(false)
	s.n.Add(-int64(removed))
	s.first.Store(max(s.first.Load(), uint64(upTo)+1)) // under wmu: no other writer of first
	return nil
}

// Head returns the highest seq spooled for conv, and false when none is. The
// engine's head for a conversation is the larger of this and the store's, so
// that sequencing goes on without gaps or reuse across an outage.
func (s *Spool) Head(conv charla.ConvID) (charla.Seq, bool, error) {
	end, err := s.begin(context.Background(), "head")
	if err != nil {
		return 0, false, err
	}
	defer end()
	prefix := convPrefix(nil, kindSeq, conv)
	it, err := s.db.NewIter(&pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return 0, false, fmt.Errorf("spool: head: %w", err)
	}
	defer it.Close()
	if !it.Last() {
		if err := it.Error(); err != nil {
			return 0, false, fmt.Errorf("spool: head: %w", err)
		}
		return 0, false, nil
	}
	k := it.Key()
	if len(k) != len(prefix)+8 {
		return 0, false, fmt.Errorf("spool: head: malformed key %x", k)
	}
	return charla.Seq(binary.BigEndian.Uint64(k[len(prefix):])), true, nil
}

// Range returns up to limit spooled messages of conv with seq > after, in
// seq order: history reads while the database is down.
func (s *Spool) Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	end, err := s.begin(ctx, "range")
	if err != nil {
		return nil, err
	}
	defer end()
	var out []charla.Message
	if limit <= 0 || after == ^charla.Seq(0) {
		return out, nil
	}
	prefix := convPrefix(nil, kindSeq, conv)
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: seqKey(conv, after+1), UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, fmt.Errorf("spool: range: %w", err)
	}
	defer it.Close()
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		m, err := s.entry(it.Value()[:8])
		if err != nil {
			return nil, fmt.Errorf("spool: range %s: %w", conv, err)
		}
		out = append(out, m)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("spool: range: %w", err)
	}
	return out, nil
}

// entry reads the log entry an index value points at.
func (s *Spool) entry(k []byte) (charla.Message, error) {
	key := Key(binary.BigEndian.Uint64(k))
	data, ok, err := get(s.db, logKey(key))
	if err != nil {
		return charla.Message{}, err
	}
	if !ok {
		return charla.Message{}, fmt.Errorf("index points at missing entry %d", key)
	}
	var m charla.Message
	if err := json.Unmarshal(data, &m); err != nil {
		return charla.Message{}, fmt.Errorf("entry %d: %w", key, err)
	}
	return m, nil
}

// Lookup returns the spooled message (conv, clientMsgID), if any.
func (s *Spool) Lookup(conv charla.ConvID, clientMsgID string) (charla.Message, bool, error) {
	end, err := s.begin(context.Background(), "lookup")
	if err != nil {
		return charla.Message{}, false, err
	}
	defer end()
	v, ok, err := get(s.db, cmidKey(kindCmid, conv, clientMsgID))
	if err != nil || !ok {
		return charla.Message{}, false, wrapErr("lookup", err)
	}
	m, err := s.entry(v[:8])
	if err != nil {
		return charla.Message{}, false, fmt.Errorf("spool: lookup: %w", err)
	}
	return m, true, nil
}

// Acked returns how (conv, clientMsgID) was acked, if the ack index or the
// spool still knows it: the final word on duplicates while the database
// cannot be asked.
func (s *Spool) Acked(conv charla.ConvID, clientMsgID string) (Ack, bool, error) {
	end, err := s.begin(context.Background(), "acked")
	if err != nil {
		return Ack{}, false, err
	}
	defer end()
	v, ok, err := get(s.db, cmidKey(kindAck, conv, clientMsgID))
	if err != nil {
		return Ack{}, false, fmt.Errorf("spool: acked: %w", err)
	}
	if ok && len(v) == 24 {
		return Ack{Conv: conv, ClientMsgID: clientMsgID, Seq: charla.Seq(binary.BigEndian.Uint64(v)),
			TS: time.UnixMicro(int64(binary.BigEndian.Uint64(v[8:]))).UTC()}, true, nil
	}
	// Pruned by count while still spooled: the spool itself knows.
	v, ok, err = get(s.db, cmidKey(kindCmid, conv, clientMsgID))
	if err != nil || !ok {
		return Ack{}, false, wrapErr("acked", err)
	}
	m, err := s.entry(v[:8])
	if err != nil {
		return Ack{}, false, fmt.Errorf("spool: acked: %w", err)
	}
	return Ack{Conv: conv, ClientMsgID: clientMsgID, Seq: m.Seq, TS: m.TS}, true, nil
}

// RecordAcks adds acks to the ack index in one batch. With sync false the
// batch is not fsync'd: it survives a crash of the process but may be lost
// with the machine until the next synced write (any Put, or the periodic
// sync every Options.SyncInterval). That is for acks the store holds
// durably already (see actors' write lane for why that is enough).
func (s *Spool) RecordAcks(ctx context.Context, acks []Ack, sync bool) error {
	if len(acks) == 0 {
		return nil
	}
	end, err := s.begin(ctx, "record acks")
	if err != nil {
		return err
	}
	defer end()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	b := s.db.NewBatch()
	defer b.Close()
	now := time.Now()
	for _, a := range acks {
		if err := s.setAck(b, a, now); err != nil {
			return fmt.Errorf("spool: record acks: %w", err)
		}
	}
	wo := pebbledb.NoSync
	if sync {
		wo = pebbledb.Sync
	}
	if err := b.Commit(wo); err != nil {
		return fmt.Errorf("spool: record acks: %w", err)
	}
	if sync {
		s.unsynced.Store(false)
	} else {
		s.unsynced.Store(true)
	}
	s.acks.Add(int64(len(acks)))
	s.kickPrune()
	return nil
}

// setAck adds one ack and its age key to b.
func (s *Spool) setAck(b *pebbledb.Batch, a Ack, now time.Time) error {
	at := uint64(now.UnixMicro())
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 24), uint64(a.Seq))
	v = binary.BigEndian.AppendUint64(v, uint64(a.TS.UnixMicro()))
	v = binary.BigEndian.AppendUint64(v, at)
	ak := cmidKey(kindAck, a.Conv, a.ClientMsgID)
	tk := binary.BigEndian.AppendUint64([]byte{kindAge}, at)
	tk = append(tk, ak[1:]...)
	return errors.Join(b.Set(ak, v, nil), b.Set(tk, nil, nil))
}

// kickPrune wakes the pruner when the ack index passed its count bound by a
// tenth, so that a burst does not wait a whole PruneInterval.
func (s *Spool) kickPrune() {
	if s.acks.Load() > int64(s.opts.DedupMax)+int64(s.opts.DedupMax/10) {
		select {
		case s.prune <- struct{}{}:
		default:
		}
	}
}

// background prunes the ack index every PruneInterval (and when kicked) and
// syncs unsynced acks every SyncInterval, until Close.
func (s *Spool) background() {
	defer close(s.done)
	prune := time.NewTicker(s.opts.PruneInterval)
	defer prune.Stop()
	sync := time.NewTicker(s.opts.SyncInterval)
	defer sync.Stop()
	s.pruneLogged()
	for {
		select {
		case <-s.stop:
			return
		case <-sync.C:
			if s.unsynced.Swap(false) {
				if err := s.db.LogData(nil, pebbledb.Sync); err != nil {
					s.unsynced.Store(true)
					s.log.Warn().Err(err).Msg("spool: sync of the ack index failed")
				}
			}
		case <-prune.C:
			s.pruneLogged()
		case <-s.prune:
			s.pruneLogged()
		}
	}
}

func (s *Spool) pruneLogged() {
	n, err := s.Prune(context.Background(), time.Now())
	if err != nil && !errors.Is(err, ErrClosed) {
		s.log.Warn().Err(err).Msg("spool: pruning the ack index failed")
	} else if n > 0 {
		s.log.Debug().Int("pruned", n).Int64("acks", s.acks.Load()).Msg("spool: ack index pruned")
	}
}

// pruneBatch bounds one pruning batch, so that RecordAcks (on the ack path)
// never waits long for the write lock.
const pruneBatch = 1000

// Prune removes from the ack index the acks older than DedupWindow (as of
// now) and, oldest first, those past DedupMax, and returns how many it
// removed. The background pruner calls it; tests call it directly.
func (s *Spool) Prune(ctx context.Context, now time.Time) (int, error) {
	cutoff := uint64(now.Add(-s.opts.DedupWindow).UnixMicro())
	total := 0
	for {
		n, more, err := s.pruneSome(ctx, cutoff)
		total += n
		if err != nil || !more {
			return total, err
		}
	}
}

// pruneSome removes up to pruneBatch acks, and says whether more are due.
func (s *Spool) pruneSome(ctx context.Context, cutoff uint64) (int, bool, error) {
	end, err := s.begin(ctx, "prune")
	if err != nil {
		return 0, false, err
	}
	defer end()
	s.wmu.Lock()
	defer s.wmu.Unlock()
	it, err := s.db.NewIterWithContext(ctx, kindBounds(kindAge))
	if err != nil {
		return 0, false, fmt.Errorf("spool: prune: %w", err)
	}
	defer it.Close()
	b := s.db.NewBatch()
	defer b.Close()
	excess := s.acks.Load() - int64(s.opts.DedupMax)
	n := 0
	ok := it.First()
	for ; ok && n < pruneBatch; ok = it.Next() {
		tk := it.Key()
		at := binary.BigEndian.Uint64(tk[1:9])
		if at >= cutoff && int64(n) >= excess {
			break
		}
		ak := append([]byte{kindAck}, tk[9:]...)
		v, found, err := get(s.db, ak)
		if err != nil {
			return n, false, fmt.Errorf("spool: prune: %w", err)
		}
		// The same id acked again later has a newer age key: keep its ack.
		if found && len(v) == 24 && binary.BigEndian.Uint64(v[16:]) == at {
			if err := b.Delete(ak, nil); err != nil {
				return n, false, fmt.Errorf("spool: prune: %w", err)
			}
		}
		if err := b.Delete(tk, nil); err != nil {
			return n, false, fmt.Errorf("spool: prune: %w", err)
		}
		n++
	}
	if err := it.Error(); err != nil {
		return 0, false, fmt.Errorf("spool: prune: %w", err)
	}
	if n == 0 {
		return 0, false, nil
	}
	// Losing a prune to a crash only keeps acks a little longer.
	if err := b.Commit(pebbledb.NoSync); err != nil {
		return 0, false, fmt.Errorf("spool: prune: %w", err)
	}
	s.acks.Add(-int64(n))
	return n, n == pruneBatch && ok, nil
}

// PutDeadLetter sets d aside, fsync'd. A dead letter for the same
// conversation and seq replaces the earlier one (a drain retried after a
// crash sets the same message aside again).
func (s *Spool) PutDeadLetter(ctx context.Context, d DeadLetter) error {
	end, err := s.begin(ctx, "put dead letter")
	if err != nil {
		return err
	}
	defer end()
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("spool: put dead letter: %w", err)
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	k := deadKey(d.Msg.Conv, d.Msg.Seq)
	_, existed, err := get(s.db, k)
	if err != nil {
		return fmt.Errorf("spool: put dead letter: %w", err)
	}
	if err := s.db.Set(k, data, pebbledb.Sync); err != nil {
		return fmt.Errorf("spool: put dead letter: %w", err)
	}
	s.unsynced.Store(false)
	if !existed {
		s.dead.Add(1)
	}
	return nil
}

// DeadLetters returns every dead letter, by conversation and seq.
func (s *Spool) DeadLetters(ctx context.Context) ([]DeadLetter, error) {
	end, err := s.begin(ctx, "dead letters")
	if err != nil {
		return nil, err
	}
	defer end()
	it, err := s.db.NewIterWithContext(ctx, kindBounds(kindDead))
	if err != nil {
		return nil, fmt.Errorf("spool: dead letters: %w", err)
	}
	defer it.Close()
	var out []DeadLetter
	for ok := it.First(); ok; ok = it.Next() {
		var d DeadLetter
		if err := json.Unmarshal(it.Value(), &d); err != nil {
			return nil, fmt.Errorf("spool: dead letters: %x: %w", it.Key(), err)
		}
		out = append(out, d)
	}
	if err := it.Error(); err != nil {
		return nil, fmt.Errorf("spool: dead letters: %w", err)
	}
	return out, nil
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

// wrapErr adds context to a read error; nil stays nil.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("spool: %s: %w", op, err)
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n) }

// convPrefix appends kind ‖ uvarint(len(conv)) ‖ conv to dst.
func convPrefix(dst []byte, kind byte, conv charla.ConvID) []byte {
	dst = append(dst, kind)
	dst = binary.AppendUvarint(dst, uint64(len(conv)))
	return append(dst, conv...)
}

func logKey(k Key) []byte { return binary.BigEndian.AppendUint64([]byte{kindLog}, uint64(k)) }

func seqKey(conv charla.ConvID, seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(convPrefix(nil, kindSeq, conv), uint64(seq))
}

func deadKey(conv charla.ConvID, seq charla.Seq) []byte {
	return binary.BigEndian.AppendUint64(convPrefix(nil, kindDead, conv), uint64(seq))
}

func cmidKey(kind byte, conv charla.ConvID, cmid string) []byte {
	return append(convPrefix(nil, kind, conv), cmid...)
}

// kindBounds bounds an iterator to the keys of one kind.
func kindBounds(kind byte) *pebbledb.IterOptions {
	return &pebbledb.IterOptions{LowerBound: []byte{kind}, UpperBound: []byte{kind + 1}}
}

// prefixEnd returns the smallest key greater than every key that starts with p.
func prefixEnd(p []byte) []byte {
	end := bytes.Clone(p)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] != 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil
}

// pebbleLogger routes Pebble's log lines through zerolog.
type pebbleLogger struct{ log zerolog.Logger }

// Infof logs Pebble's informational lines (WAL replay at every Open) at
// debug level.
func (l pebbleLogger) Infof(format string, args ...any) { l.log.Debug().Msgf(format, args...) }

// Errorf logs Pebble's background errors.
func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error().Msgf(format, args...) }

// Fatalf logs and panics: Pebble relies on it not returning.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.WithLevel(zerolog.FatalLevel).Msgf(format, args...)
	panic(fmt.Sprintf("spool: pebble: "+format, args...))
}
