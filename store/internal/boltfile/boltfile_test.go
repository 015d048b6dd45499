package boltfile

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	bolterrors "go.etcd.io/bbolt/errors"
)

func TestOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "dir", "f.db")
	db, err := Open(path, DefaultLockTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600", perm)
	}
	if !db.NoFreelistSync {
		t.Error("NoFreelistSync is off")
	}

	start := time.Now()
	_, err = Open(path, 100*time.Millisecond)
	if !errors.Is(err, ErrLocked) || !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("second Open: %v, want ErrLocked wrapping bolterrors.ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v, want about the lock timeout", d)
	}
}
