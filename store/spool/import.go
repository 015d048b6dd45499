package spool

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"

	"charla"
	"charla/store/internal/boltfile"
)

// ImportBolt moves what an earlier engine left in its bbolt spool file at
// path (spool.db, before the spool moved to Pebble) into s, in arrival
// order, and renames the file to path+".imported" so that it is imported
// once. Those messages were acked: dropping them would lose them. A missing
// file is nothing to do. A crash in the middle is safe: the file is renamed
// only after every message is in s, and Put skips a message already spooled.
func ImportBolt(ctx context.Context, s *Spool, path string) (int, error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	db, err := boltfile.Open(path, boltfile.DefaultLockTimeout)
	if err != nil {
		return 0, fmt.Errorf("spool: import %s: %w", path, err)
	}
	var msgs []charla.Message
	err = db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("log"))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			var m charla.Message
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("entry %d: %w", binary.BigEndian.Uint64(k), err)
			}
			msgs = append(msgs, m)
			return nil
		})
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return 0, fmt.Errorf("spool: import %s: %w", path, err)
	}
	for rest := msgs; len(rest) > 0; {
		n := min(len(rest), 1000)
		if err := s.Put(ctx, rest[:n]); err != nil {
			return 0, fmt.Errorf("spool: import %s: %w", path, err)
		}
		rest = rest[n:]
	}
	if err := os.Rename(path, path+".imported"); err != nil {
		return 0, fmt.Errorf("spool: import %s: %w", path, err)
	}
	return len(msgs), nil
}
