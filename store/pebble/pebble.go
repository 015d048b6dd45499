// Package pebble is the embedded store.Store on Pebble (CockroachDB's
// log-structured merge tree): a directory under the data dir, the default
// when no DATABASE_URL is set. It replaces store/bolt because a chat log is
// append-only: a group commit here costs one sequential append to the
// write-ahead log and one fdatasync, whatever the number of conversations it
// touches, where bbolt rewrites (and syncs) the B-tree pages of every
// conversation in the batch.
//
// The package is named after the engine like its siblings (store/bolt,
// store/postgres); it imports github.com/cockroachdb/pebble/v2 as pebbledb, and
// callers that need both name one of them.
//
// # Key layout (schema version 1)
//
// Every key starts with a kind byte and, but for the metadata, with the
// conversation ID prefixed by its uvarint length, <conv> below. A uvarint is a
// prefix-free code, so no conversation's keys can interleave with another's,
// whatever bytes the IDs hold ("a" and "a:1" are disjoint ranges).
//
//	0x00 "version"                 "1"
//	'i' <conv> <client_msg_id>     seq (8 bytes BE) ‖ TS (8 bytes BE, unix µs)
//	'm' <conv> <seq: 8 bytes BE>   the message record (see encodeRecord)
//	'r' <conv> <user>              seq (8 bytes BE)
//
// Login (agents.go) adds four kinds without a conversation, which schema
// version 1 did not have and older binaries never read:
//
//	'a' <agent id>                 the agent (JSON: email, name, password_hash, role, disabled, created_at)
//	'e' <lower-case e-mail>        agent id
//	't' <SHA-256 of refresh token> the token (JSON: family, agent_id, expires_at, used)
//	'f' <refresh family>           "" once the family is revoked
//
// The WhatsApp channel (whatsapp.go) adds two more:
//
//	'w' 'e' <body hash, hex>       a webhook event (JSON: body, received_at, processed_at, problem)
//	'w' 'p' <received: 8 bytes BE nanos> <hash>   "" while that event is pending
//	'c' <wa_id>                    a contact (JSON: name, phone_number_id, last_inbound_at)
//
// The WhatsApp outbox (outbox.go) adds 'o' and 'q' per conversation (an
// outbound message's entry, written in its message's batch, and the index of
// the open entries) and 's' <wamid> (delivery statuses).
//
// Messages sorted by (conv, seq) make Range one bounded forward scan and Head
// one reverse seek to the end of the conversation's range (Last within
// bounds): no separate head key, so a head can never disagree with the log,
// and the write of a message is exactly its two keys. The dedup entry is
// written in the same batch as its message, so after any crash both are
// present or both absent.
//
// # Write amplification
//
// A new message costs two keys in one WAL record shared by the whole Append
// call: about the message record (≈ 60 bytes of envelope + body, compacted
// JSON) plus ≈ 60 bytes for the two keys and the dedup value, plus a 12-byte
// batch header per call. That sequential append, and one fdatasync, is all an
// ack waits for. Later, off the ack path, a memtable flush writes each key
// once more into an L0 table (block-compressed), and leveled compaction
// rewrites it as it sinks through the levels (about one rewrite per level
// reached, more when a level's files overlap). A conversation's messages are
// contiguous and only ever appended, so compactions mostly move whole,
// non-overlapping blocks of old history. For comparison, a bbolt commit of the
// same batch rewrites at least a leaf and a branch page (4 KiB each) of the
// msgs and ids buckets of every conversation it touches, plus the meta page,
// at random offsets, and syncs twice.
//
// # Heads
//
// Append keeps each conversation's head in memory, loaded lazily from the
// log the first time the conversation is written after Open, so that
// sequencing costs no read. Head and Range read the database itself (one
// seek), never that cache: they see exactly what is committed, so a reader
// never sees a head that goes back or that Range cannot reach.
package pebble

import (
	"context"
	"errors"
	"fmt"
	lru "github.com/hashicorp/golang-lru/v2"
	"hash/maphash"
	"io"
	"os"
	"slices"
	"sync"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/internal/pebblefile"
)

// schemaVersion is bumped on any incompatible layout change, so that an old
// binary refuses a newer store instead of misreading it.
const schemaVersion = "1"

// formatVersion pins pebble's on-disk format: the newest that needs no
// experimental feature. It has WAL sync chunks (replay tells a torn tail,
// which it drops, from corruption before synced data, which it refuses) and
// checksummed table footers. Pinned rather than FormatNewest so that a pebble
// upgrade never ratchets the format, which would lock out a rollback of the
// binary, without a deliberate code change.
const formatVersion = pebbledb.FormatTableFormatV6

// DefaultLockTimeout is how long Open waits for the directory lock, as
// bolt.DefaultLockTimeout: a second engine on the same data dir fails fast
// with ErrLocked instead of hanging or corrupting.
const DefaultLockTimeout = time.Second

// ErrLocked is returned by Open when another process (or another Open in this
// one) holds the store, so that the caller can say "is charla already
// running?" rather than print a bare lock error.
var ErrLocked = errors.New("pebble: store directory locked by another process")

// Options configures Open. The zero value is usable (every zero field takes
// the default of DefaultOptions) but logs nothing.
type Options struct {
	// Logger receives the store's log lines and pebble's own (WAL replay,
	// background errors), under component=pebble. Pebble's informational
	// lines ("Found 0 WALs", replay offsets) are logged at debug level;
	// its errors at error level.
	Logger zerolog.Logger

	// LockTimeout is how long Open waits for the directory lock before
	// failing with ErrLocked. Negative means wait until ctx is done.
	LockTimeout time.Duration

	// CacheSize is the block cache, in bytes. History paging and
	// reconnecting clients read the recent end of conversations, which
	// mostly lives in the memtable; the cache keeps the tables just below it
	// (and their bloom filters and indexes) in memory.
	CacheSize int64

	// MemTableSize is the size of a memtable, in bytes. Larger than pebble's
	// 4 MiB default: at 2,000 msg/s of ≈ 400 bytes a 32 MiB memtable holds
	// about 40 s of traffic, so recent history is read from memory, flushes
	// are rarer and L0 gets fewer, larger tables (less compaction work). Up
	// to two memtables exist at once, and a restart replays up to one from
	// the WAL.
	MemTableSize uint64

	// WALBytesPerSync makes pebble sync the WAL in the background every that
	// many bytes. Every Append already waits for its own fdatasync, so this
	// only matters for unsynced writes (ImportBolt's); 0 (the default)
	// leaves them to the sync that ends each import step.
	WALBytesPerSync int

	// fs replaces the real file system; tests use pebble's crashable memory
	// file system to drop unsynced writes.
	fs vfs.FS
}

// DefaultOptions returns the options Open uses for zero fields; the logger
// discards everything.
func DefaultOptions() Options {
	return Options{
		Logger:       zerolog.Nop(),
		LockTimeout:  DefaultLockTimeout,
		CacheSize:    64 << 20,
		MemTableSize: 32 << 20,
	}
}

// withDefaults fills zero fields from DefaultOptions.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	if o.LockTimeout == 0 {
		o.LockTimeout = d.LockTimeout
	}
	if o.CacheSize <= 0 {
		o.CacheSize = d.CacheSize
	}
	if o.MemTableSize == 0 {
		o.MemTableSize = d.MemTableSize
	}
	return o
}

// diskSlowThreshold is how long one write or sync may take before it is
// logged as a slow disk: far above a healthy fdatasync (well under 10 ms), far
// below the store actor's write timeout.
const diskSlowThreshold = 2 * time.Second

// pebbleOptions turns o into pebble's options for a store on fs.
func (o Options) pebbleOptions(fs vfs.FS, lock *pebbledb.Lock, log zerolog.Logger) *pebbledb.Options {
	po := &pebbledb.Options{
		FormatMajorVersion: formatVersion,
		Lock:               lock,
		Logger:             pebbleLogger{log},
		CacheSize:          o.CacheSize,
		MemTableSize:       o.MemTableSize,
		WALBytesPerSync:    o.WALBytesPerSync,
		// WALMinSyncInterval stays 0: the store actor batches already, and
		// an artificial delay before each fsync would be added to every ack.
		FS: fs,
	}
	for i := range po.Levels {
		// Most dedup lookups are for new client ids, that is misses: a
		// bloom filter answers them without reading a data block.
		po.Levels[i].FilterPolicy = bloom.FilterPolicy(10)
	}
	po.EnsureDefaults()
	return po
}

// pebbleLogger routes pebble's log lines (which would otherwise go to the
// standard library's log package) through zerolog.
type pebbleLogger struct{ log zerolog.Logger }

// Infof logs pebble's informational lines (WAL replay on every Open) at debug
// level: they are noise in normal operation, and useful only when debugging.
func (l pebbleLogger) Infof(format string, args ...any) { l.log.Debug().Msgf(format, args...) }

// Errorf logs pebble's errors (background flush or compaction failures).
func (l pebbleLogger) Errorf(format string, args ...any) { l.log.Error().Msgf(format, args...) }

// Fatalf logs and panics: pebble calls it on invariant violations and relies
// on it not returning. A panic rather than os.Exit so that the stack shows
// and deferred cleanups run.
func (l pebbleLogger) Fatalf(format string, args ...any) {
	l.log.WithLevel(zerolog.FatalLevel).Msgf(format, args...)
	panic(fmt.Sprintf("pebble: "+format, args...))
}

// Store is the pebble implementation of store.Store. It is safe for
// concurrent use: readers never wait for writers, and Appends for different
// conversations commit concurrently (pebble shares one fsync between the
// commits that queue behind one another).
type Store struct {
	dir string
	log zerolog.Logger

	// mu is held for reading by every call and for writing by Close, so
	// that Close waits for calls in flight and every later call reports
	// store.ErrClosed rather than a pebble panic.
	gate store.Gate
	db   *pebbledb.DB
	lock *pebbledb.Lock
	// fsCloser stops the disk health checker of the store's file system.
	fsCloser io.Closer

	// convsMu guards convs, the writer state of the conversations an Append
	// holds now; a state leaves the map with its last holder, so memory
	// follows the conversations in flight, not every one ever written.
	convsMu sync.Mutex
	convs   map[charla.ConvID]*convState
	// heads remembers the heads of recently written conversations, so that
	// a busy conversation's next Append needs no reverse seek; bounded, so
	// that 100,000 conversations written once cost nothing for good.
	heads *lru.Cache[charla.ConvID, charla.Seq]

	// cursorLocks serialise the read-modify-write of a read cursor (striped
	// by key), so that concurrent read frames cannot move a cursor back.
	cursorLocks [64]sync.Mutex
	cursorSeed  maphash.Seed

	// outboxMu serialises the read-modify-writes of outbox entries and
	// delivery statuses (outbox.go), so that a status and the link of its
	// wamid never overwrite each other.
	outboxMu sync.Mutex

	// authMu serialises the read-modify-writes of agents and refresh tokens
	// (agents.go): logins are rare, one lock is plenty.
	authMu sync.Mutex
	// waMu serialises the read-modify-writes of webhook events and
	// contacts (whatsapp.go).
	waMu sync.Mutex
	// workflowMu serialises the read-modify-writes of workflow.go.
	workflowMu sync.Mutex
}

// convState is Append's view of one conversation.
type convState struct {
	// mu is held by the Append writing the conversation. Callers promise one
	// Append in flight per conversation; the lock makes a broken promise
	// wait instead of assigning the same seq twice.
	mu sync.Mutex
	// head is the conversation's highest committed seq, valid when loaded.
	head   charla.Seq
	loaded bool
	// refs counts the Appends holding or waiting for mu; guarded by convsMu.
	refs int
}

// headCacheSize bounds Store.heads: the conversations written within the
// last few group commits, which is what a warm head saves a seek for; a miss
// costs one reverse seek, mostly in the memtable.
const headCacheSize = 4096

var _ store.Store = (*Store)(nil)

// Open opens (creating it and its parent directories when needed) the store
// in directory dir, private to its owner since it holds every conversation.
// Only one Store may have a directory open at a time: a second Open fails
// with ErrLocked after opts.LockTimeout. A WAL whose last record was torn by
// a crash is accepted (the torn record, never acked, is dropped); corruption
// before the tail makes Open fail. ctx bounds the wait for the lock.
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	log := opts.Logger.With().Str("component", "pebble").Logger()
	fs := opts.fs
	if fs == nil {
		fs = vfs.Default
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
		}
	} else if err := fs.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	lock, err := pebblefile.LockDir(ctx, dir, fs, opts.LockTimeout, ErrLocked)
	if err != nil {
		return nil, err
	}
	// The disk health checker is pebble's default file system middleware;
	// the store builds it itself so that it can stop its goroutine when
	// pebble's Open fails (pebble only does on DB.Close) and log slow disks
	// through zerolog.
	hfs, fsCloser := vfs.WithDiskHealthChecks(fs, diskSlowThreshold, nil, func(info vfs.DiskSlowInfo) {
		log.Warn().Str("path", info.Path).Str("op", info.OpType.String()).Int("bytes", info.WriteSize).
			Dur("elapsed", info.Duration).Msg("disk slow")
	})
	db, err := pebbledb.Open(dir, opts.pebbleOptions(hfs, lock, log))
	if err != nil {
		_ = fsCloser.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	if err := checkSchema(db); err != nil {
		_ = db.Close()
		_ = fsCloser.Close()
		_ = lock.Close()
		return nil, fmt.Errorf("pebble: open %s: %w", dir, err)
	}
	heads, _ := lru.New[charla.ConvID, charla.Seq](headCacheSize) // the size is a positive constant
	s := &Store{
		dir:        dir,
		log:        log,
		db:         db,
		lock:       lock,
		fsCloser:   fsCloser,
		convs:      map[charla.ConvID]*convState{},
		heads:      heads,
		cursorSeed: maphash.MakeSeed(),
	}
	log.Info().Str("dir", dir).Int64("cache_bytes", opts.CacheSize).
		Uint64("memtable_bytes", opts.MemTableSize).Msg("pebble store open")
	return s, nil
}

// checkSchema stamps a new store with the schema version and refuses a store
// of another version.
func checkSchema(db *pebbledb.DB) error {
	v, closer, err := db.Get(keyVersion)
	switch {
	case errors.Is(err, pebbledb.ErrNotFound):
		if err := db.Set(keyVersion, []byte(schemaVersion), pebbledb.Sync); err != nil {
			return err
		}
		// Pebble creates a new store at its oldest format and opens its
		// first WAL before it ratchets the format to formatVersion, so that
		// WAL lacks sync offsets: corruption in it would be replayed as a
		// torn tail, silently dropping every record after it. A flush
		// switches to a WAL written at formatVersion.
		return db.Flush()
	case err != nil:
		return err
	}
	defer closer.Close()
	if string(v) != schemaVersion {
		return fmt.Errorf("schema version %q, this binary reads version %q", v, schemaVersion)
	}
	return nil
}

// Dir is the directory the store was opened on, so that a caller (or a
// test) can reopen the same data after Close.
func (s *Store) Dir() string { return s.dir }

// lockConvs locks the writer state of every conversation in ids, in sorted
// order so that two calls sharing conversations cannot deadlock, and loads
// the heads not loaded yet. The returned func unlocks them.
func (s *Store) lockConvs(ids []charla.ConvID) (map[charla.ConvID]*convState, func(), error) {
	ids = slices.Clone(ids)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	states := make(map[charla.ConvID]*convState, len(ids))
	s.convsMu.Lock()
	for _, id := range ids {
		c, ok := s.convs[id]
		if !ok {
			c = &convState{}
			c.head, c.loaded = s.heads.Get(id)
			s.convs[id] = c
		}
		c.refs++
		states[id] = c
	}
	s.convsMu.Unlock()
	// release unlocks the first n states, keeping what they know of their
	// heads for the next writer, and forgets the states nobody else holds.
	release := func(n int) {
		for _, id := range ids[:n] {
			c := states[id]
			if c.loaded {
				s.heads.Add(id, c.head)
			} else {
				s.heads.Remove(id)
			}
			c.mu.Unlock()
		}
		s.convsMu.Lock()
		for _, id := range ids {
			c := states[id]
			if c.refs--; c.refs == 0 {
				delete(s.convs, id)
			}
		}
		s.convsMu.Unlock()
	}
	for i, id := range ids {
		c := states[id]
		c.mu.Lock()
		if c.loaded {
			continue
		}
		h, err := s.head(context.Background(), id)
		if err != nil {
			release(i + 1)
			return nil, nil, fmt.Errorf("%s: load head: %w", id, err)
		}
		c.head, c.loaded = h, true
	}
	return states, func() { release(len(ids)) }, nil
}

// lookupID returns the dedup entry of (conv, id), ok false when there is none.
func (s *Store) lookupID(conv charla.ConvID, id string) (res store.AppendResult, ok bool, err error) {
	v, closer, err := s.db.Get(idKey(conv, id))
	if errors.Is(err, pebbledb.ErrNotFound) {
		return store.AppendResult{}, false, nil
	}
	if err != nil {
		return store.AppendResult{}, false, err
	}
	defer closer.Close()
	seq, ts, err := parseIDValue(v)
	if err != nil {
		return store.AppendResult{}, false, fmt.Errorf("client_msg_id %s: %w", id, err)
	}
	return store.AppendResult{Seq: seq, TS: ts, Duplicate: true}, true, nil
}

// Append implements store.Store: one pebble batch per call, committed with
// pebble.Sync, so that it returns only after the fdatasync that covers every
// message of the call. Messages are validated and encoded before any lock is
// taken. An invalid message fails the call with an error matching
// store.ErrInvalid; a failed commit (I/O error, full disk) with one matching
// store.ErrUnavailable.
func (s *Store) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: append: %w", err)
	}
	defer end()
	if len(msgs) == 0 {
		return []store.AppendResult{}, nil
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	recs := make([][]byte, len(msgs))
	res := make([]store.AppendResult, len(msgs))
	ids := make([]charla.ConvID, len(msgs))
	for i, m := range msgs {
		if recs[i], res[i].TS, err = encodeRecord(m, now); err != nil {
			return nil, fmt.Errorf("pebble: append %s: %w", m.Conv, err)
		}
		ids[i] = m.Conv
	}
	states, unlock, err := s.lockConvs(ids)
	if err != nil {
		return nil, fmt.Errorf("pebble: append %w", err)
	}
	defer unlock()

	type convMsg struct {
		conv charla.ConvID
		id   string
	}
	heads := make(map[charla.ConvID]charla.Seq, len(states))
	for id, c := range states {
		heads[id] = c.head
	}
	first := map[convMsg]int{} // index of the first occurrence in this call
	b := s.db.NewBatch()
	defer b.Close()
	for i, m := range msgs {
		k := convMsg{m.Conv, m.ClientMsgID}
		if j, ok := first[k]; ok {
			res[i] = res[j]
			res[i].Duplicate = true
			continue
		}
		first[k] = i
		dup, ok, err := s.lookupID(m.Conv, m.ClientMsgID)
		if err != nil {
			return nil, fmt.Errorf("pebble: append %s: %w: %w", m.Conv, store.ErrUnavailable, err)
		}
		if ok {
			res[i] = dup
			continue
		}
		seq := heads[m.Conv] + 1
		heads[m.Conv] = seq
		res[i].Seq = seq
		// Set copies key and value into the batch.
		if err := b.Set(msgKey(m.Conv, seq), recs[i], nil); err != nil {
			return nil, fmt.Errorf("pebble: append %s: seq %d: %w", m.Conv, seq, err)
		}
		if err := b.Set(idKey(m.Conv, m.ClientMsgID), idValue(seq, res[i].TS), nil); err != nil {
			return nil, fmt.Errorf("pebble: append %s: client_msg_id %s: %w", m.Conv, m.ClientMsgID, err)
		}
		if err := enqueueOutbound(b, m, seq, res[i].TS); err != nil {
			return nil, fmt.Errorf("pebble: append %s: seq %d: %w", m.Conv, seq, err)
		}
	}
	if b.Empty() {
		// Only duplicates: nothing to write, and what they report was
		// synced by the Append that wrote it.
		return res, nil
	}
	if err := b.Commit(pebbledb.Sync); err != nil {
		// Whether any of it reached the log is unknown: reload the heads
		// from the log before the next write.
		for _, c := range states {
			c.loaded = false
		}
		return nil, fmt.Errorf("pebble: append: commit of %d messages: %w: %w", len(msgs), store.ErrUnavailable, err)
	}
	for id, c := range states {
		c.head = heads[id]
	}
	return res, nil
}

// msgBounds returns the iterator bounds of conv's messages with seq > after.
func msgBounds(conv charla.ConvID, after charla.Seq) *pebbledb.IterOptions {
	prefix := convPrefix(nil, kindMsg, conv)
	return &pebbledb.IterOptions{LowerBound: msgKey(conv, after+1), UpperBound: prefixEnd(prefix)}
}

// Range implements store.Store: one bounded forward scan.
func (s *Store) Range(ctx context.Context, id charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: range %s: %w", id, err)
	}
	defer end()
	out, err := s.rangeMsgs(ctx, id, after, limit)
	if err != nil {
		return nil, fmt.Errorf("pebble: range %s: %w", id, err)
	}
	return out, nil
}

// rangeMsgs scans conv's messages after after; the caller is inside s.gate.
func (s *Store) rangeMsgs(ctx context.Context, id charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error) {
	if limit <= 0 || after == charla.Seq(^uint64(0)) {
		return nil, nil
	}
	it, err := s.db.NewIterWithContext(ctx, msgBounds(id, after))
	if err != nil {
		return nil, err
	}
	defer it.Close()
	prefix := convPrefix(nil, kindMsg, id)
	var out []charla.Message
	for ok := it.First(); ok && len(out) < limit; ok = it.Next() {
		seq, err := seqOf(prefix, it.Key())
		if err != nil {
			return nil, err
		}
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, fmt.Errorf("seq %d: %w", seq, err)
		}
		m, err := decodeRecord(id, seq, v)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, it.Error()
}

// Head implements store.Store: one reverse seek to the end of the
// conversation's messages.
func (s *Store) Head(ctx context.Context, id charla.ConvID) (charla.Seq, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return 0, fmt.Errorf("pebble: head %s: %w", id, err)
	}
	defer end()
	h, err := s.head(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("pebble: head %s: %w", id, err)
	}
	return h, nil
}

// Heads returns the heads of convs (those without a message are left out):
// one seek each, inside one pass through the gate.
func (s *Store) Heads(ctx context.Context, convs []charla.ConvID) (map[charla.ConvID]charla.Seq, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: heads: %w", err)
	}
	defer end()
	out := make(map[charla.ConvID]charla.Seq, len(convs))
	for _, id := range convs {
		h, err := s.head(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("pebble: head %s: %w", id, err)
		}
		if h > 0 {
			out[id] = h
		}
	}
	return out, nil
}

// head reads conv's highest seq from the database; the caller is inside s.gate.
func (s *Store) head(ctx context.Context, id charla.ConvID) (charla.Seq, error) {
	it, err := s.db.NewIterWithContext(ctx, msgBounds(id, 0))
	if err != nil {
		return 0, err
	}
	defer it.Close()
	if !it.Last() {
		return 0, it.Error()
	}
	return seqOf(convPrefix(nil, kindMsg, id), it.Key())
}

// cursorLock returns the lock of the stripe key falls in.
func (s *Store) cursorLock(key []byte) *sync.Mutex {
	return &s.cursorLocks[maphash.Bytes(s.cursorSeed, key)%uint64(len(s.cursorLocks))]
}

// SetReadCursor implements store.Store. A cursor may be set in a
// conversation without messages (and beyond its head), as in bolt: the
// conversation actor decides what a valid read is, the store only keeps the
// highest one. A cursor that would not move costs no write and no fsync.
func (s *Store) SetReadCursor(ctx context.Context, id charla.ConvID, user string, seq charla.Seq) error {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return fmt.Errorf("pebble: set read cursor %s: %w", id, err)
	}
	defer end()
	if id == "" || user == "" {
		return fmt.Errorf("pebble: set read cursor %q user %q: %w: conv and user are required", id, user, store.ErrInvalid)
	}
	if _, err := s.raiseCursor(id, user, seq, pebbledb.Sync); err != nil {
		return fmt.Errorf("pebble: set read cursor %s: %w", id, err)
	}
	return nil
}

// raiseCursor sets user's cursor in conv to seq unless it is already there
// or beyond, and reports whether it moved; the caller is inside s.gate.
func (s *Store) raiseCursor(id charla.ConvID, user string, seq charla.Seq, sync *pebbledb.WriteOptions) (bool, error) {
	key := readKey(id, user)
	mu := s.cursorLock(key)
	mu.Lock()
	defer mu.Unlock()
	cur, err := s.getSeq(key)
	if err != nil {
		return false, err
	}
	if cur >= seq {
		return false, nil
	}
	if err := s.db.Set(key, u64(seq), sync); err != nil {
		return false, fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return true, nil
}

// getSeq reads an 8-byte seq value, 0 when key is absent.
func (s *Store) getSeq(key []byte) (charla.Seq, error) {
	v, closer, err := s.db.Get(key)
	if errors.Is(err, pebbledb.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	defer closer.Close()
	if len(v) != 8 {
		return 0, fmt.Errorf("malformed seq value of %d bytes", len(v))
	}
	return charla.Seq(beUint64(v)), nil
}

// ReadCursors implements store.Store: one prefix scan.
func (s *Store) ReadCursors(ctx context.Context, id charla.ConvID) (map[string]charla.Seq, error) {
	end, err := s.gate.Enter(ctx)
	if err != nil {
		return nil, fmt.Errorf("pebble: read cursors %s: %w", id, err)
	}
	defer end()
	out, err := s.readCursors(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("pebble: read cursors %s: %w", id, err)
	}
	return out, nil
}

// readCursors scans conv's cursors; the caller is inside s.gate.
func (s *Store) readCursors(ctx context.Context, id charla.ConvID) (map[string]charla.Seq, error) {
	prefix := convPrefix(nil, kindRead, id)
	it, err := s.db.NewIterWithContext(ctx, &pebbledb.IterOptions{LowerBound: prefix, UpperBound: prefixEnd(prefix)})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	out := map[string]charla.Seq{}
	for ok := it.First(); ok; ok = it.Next() {
		v, err := it.ValueAndErr()
		if err != nil {
			return nil, err
		}
		if len(v) != 8 {
			return nil, fmt.Errorf("malformed cursor of %q: %d bytes", it.Key()[len(prefix):], len(v))
		}
		out[string(it.Key()[len(prefix):])] = charla.Seq(beUint64(v))
	}
	return out, it.Error()
}

// Close implements store.Store: it waits for calls in flight, closes the
// database (its memtable stays in the synced WAL, replayed by the next Open)
// and releases the directory lock so that another Open may proceed.
func (s *Store) Close() error {
	if !s.gate.Shut() {
		return fmt.Errorf("pebble: close %s: %w", s.dir, store.ErrClosed)
	}
	err := s.db.Close()
	_ = s.fsCloser.Close() // only stops a ticker
	if lerr := s.lock.Close(); err == nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("pebble: close %s: %w", s.dir, err)
	}
	return nil
}
