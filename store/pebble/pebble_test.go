package pebble

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pebbledb "github.com/cockroachdb/pebble/v2"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"charla"
	"charla/store"
	"charla/store/storetest"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		// The child of TestKillLoop: append until killed, no test framework.
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m)
}

// testOptions logs warnings and worse to the test's log.
func testOptions(t testing.TB) Options {
	o := DefaultOptions()
	o.Logger = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
	o.CacheSize = 8 << 20
	o.MemTableSize = 4 << 20
	return o
}

// open opens a store in dir, failing the test on error.
func open(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, testOptions(t))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Harness{
		Open: func(t *testing.T) store.Store {
			// A nested path, so that every run also checks that Open
			// creates the data dir.
			return open(t, filepath.Join(t.TempDir(), "data", "charla.pebble"))
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			return open(t, old.(*Store).Dir())
		},
	})
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "charla.pebble")
	s := open(t, dir)
	defer s.Close()
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("dir mode %v, want 0700", perm)
	}
	if s.Dir() != dir {
		t.Errorf("Dir() = %q, want %q", s.Dir(), dir)
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "charla.pebble")
	s := open(t, dir)
	o := testOptions(t)
	o.LockTimeout = 100 * time.Millisecond
	start := time.Now()
	if s2, err := Open(t.Context(), dir, o); !errors.Is(err, ErrLocked) {
		if err == nil {
			s2.Close()
		}
		t.Errorf("second Open: %v, want ErrLocked", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v, want about the lock timeout", d)
	}
	// A canceled context ends the wait early, with the context's error.
	o.LockTimeout = -1
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if _, err := Open(ctx, dir, o); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Open waiting forever with a deadline: %v, want context.DeadlineExceeded", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	o.LockTimeout = 100 * time.Millisecond
	s2, err := Open(t.Context(), dir, o)
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s2.Close()
}

func TestOpenRejectsFutureSchema(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	s.Close()
	db, err := pebbledb.Open(dir, &pebbledb.Options{Logger: pebbleLogger{zerolog.Nop()}})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Set(keyVersion, []byte("999"), pebbledb.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(t.Context(), dir, testOptions(t)); err == nil || !strings.Contains(err.Error(), "schema version") {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open of a future schema: %v, want a schema version error", err)
	}
}

// TestPebbleLogsThroughZerolog pins that pebble's own lines ("Found 0 WALs")
// reach the configured logger, not the standard library's.
func TestPebbleLogsThroughZerolog(t *testing.T) {
	var buf bytes.Buffer
	o := testOptions(t)
	o.Logger = zerolog.New(&buf).Level(zerolog.DebugLevel)
	s, err := Open(t.Context(), t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	out := buf.String()
	for _, want := range []string{`"component":"pebble"`, `Found 0 WALs`, `"message":"pebble store open"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %s:\n%s", want, out)
		}
	}
}

// TestErrors pins the errors callers branch on, and that they name the
// conversation: a group commit carries many, and the log line must tell which.
func TestErrors(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	tests := []struct {
		name string
		call func() error
		want error
		text string
	}{
		{"BodyNotJSON", func() error {
			_, err := s.Append(t.Context(), []charla.Message{
				{Conv: "good", ClientMsgID: "1", Body: []byte(`{"text":"x"}`)},
				{Conv: "conv-bad", ClientMsgID: "2", Body: []byte(`{`)},
			})
			return err
		}, store.ErrInvalid, "pebble: append conv-bad:"},
		{"NoClientMsgID", func() error {
			_, err := s.Append(t.Context(), []charla.Message{{Conv: "conv-x", Body: []byte(`{}`)}})
			return err
		}, store.ErrInvalid, "pebble: append conv-x:"},
		{"CursorWithoutUser", func() error {
			return s.SetReadCursor(t.Context(), "conv-y", "", 1)
		}, store.ErrInvalid, "conv-y"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.want) || !strings.Contains(fmt.Sprint(err), tt.text) {
				t.Errorf("error %v, want one matching %v and containing %q", err, tt.want, tt.text)
			}
		})
	}
}

// TestConcurrentAppendsSameConversation pins that a caller breaking the
// one-Append-per-conversation promise gets waiting, not two messages with
// the same seq.
func TestConcurrentAppendsSameConversation(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	const writers, calls = 4, 25
	errs := make(chan error, writers)
	for w := range writers {
		go func() {
			for i := range calls {
				_, err := s.Append(t.Context(), []charla.Message{
					{Conv: "shared", ClientMsgID: fmt.Sprintf("w%d-%d", w, i), Body: []byte(`{}`)},
					{Conv: charla.ConvID(fmt.Sprintf("own-%d", w)), ClientMsgID: fmt.Sprint(i), Body: []byte(`{}`)},
				})
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range writers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Range(t.Context(), "shared", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != writers*calls {
		t.Fatalf("shared has %d messages, want %d", len(got), writers*calls)
	}
	for i, m := range got {
		if m.Seq != charla.Seq(i+1) {
			t.Fatalf("shared[%d] has seq %d: not contiguous", i, m.Seq)
		}
	}
}

func TestWorkflow(t *testing.T) {
	storetest.RunWorkflow(t, func(t *testing.T) storetest.WorkflowStore {
		s := open(t, filepath.Join(t.TempDir(), "charla.pebble"))
		t.Cleanup(func() { s.Close() })
		return s
	})
}
