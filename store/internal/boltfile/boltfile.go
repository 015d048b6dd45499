// Package boltfile opens the bbolt files of the embedded store and of the
// outage spool the same way: owner-only permissions, the freelist options
// both want, and a lock timeout that fails with ErrLocked instead of hanging.
package boltfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// DefaultLockTimeout is how long Open waits for the file lock. bbolt's own
// default is to wait forever, which turns a second engine started on the same
// data dir into a silent hang; a short wait turns it into ErrLocked.
const DefaultLockTimeout = time.Second

// ErrLocked is returned by Open when another process (or another Open in this
// one) holds the file, so that the caller can say "is charla already
// running?" rather than print a bare timeout. It wraps nothing itself; the
// error Open returns also matches bbolt's ErrTimeout.
var ErrLocked = errors.New("bbolt file locked by another process")

// Open opens (creating it and its parent directories when needed) the bbolt
// file at path, readable by its owner only since it holds conversations.
// lockTimeout is how long to wait for the file lock before failing with
// ErrLocked; zero or less waits forever, which only a tool that knows the
// holder will exit should ask for.
func Open(path string, lockTimeout time.Duration) (*bbolt.DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	timeout := max(lockTimeout, 0)
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{
		Timeout: timeout,
		// The map freelist stays fast as the file grows and fragments.
		FreelistType: bbolt.FreelistMapType,
		// Not writing the freelist at every commit saves a good part of each
		// commit's writes (a group commit, or a spooled write on the ack path
		// during an outage); Open rebuilds it by scanning the file.
		NoFreelistSync: true,
	})
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, fmt.Errorf("%w: %s (waited %v; is another charla using this data dir?): %w", ErrLocked, path, timeout, err)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, nil
}
