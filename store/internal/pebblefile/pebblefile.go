// Package pebblefile is what the stores kept in a pebble directory (the
// embedded store and the outage spool) share about opening it.
package pebblefile

import (
	"context"
	"fmt"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// LockDir takes pebble's directory lock, retrying until timeout (negative:
// until ctx is done): the lock is a non-blocking fcntl lock, and a process
// that is just exiting (a restart) should not make the next one fail. Past
// the timeout it fails with errLocked, the caller's sentinel.
func LockDir(ctx context.Context, dir string, fs vfs.FS, timeout time.Duration, errLocked error) (*pebble.Lock, error) {
	start := time.Now()
	for {
		lock, err := pebble.LockDirectory(dir, fs)
		if err == nil {
			return lock, nil
		}
		waited := time.Since(start)
		if timeout >= 0 && waited >= timeout {
			return nil, fmt.Errorf("%w: %s (waited %v; is another charla using this data dir?): %w", errLocked, dir, timeout, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("open %s: waiting for the lock: %w", dir, ctx.Err())
		case <-time.After(min(20*time.Millisecond, max(timeout-waited, time.Millisecond))):
		}
	}
}
