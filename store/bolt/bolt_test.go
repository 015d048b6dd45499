package bolt_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
	"go.uber.org/goleak"

	"charla"
	"charla/store"
	"charla/store/bolt"
	"charla/store/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// open opens a store at path, failing the test on error.
func open(t testing.TB, path string) *bolt.Store {
	t.Helper()
	s, err := bolt.Open(path)
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
			return open(t, filepath.Join(t.TempDir(), "data", "charla.db"))
		},
		Reopen: func(t *testing.T, old store.Store) store.Store {
			return open(t, old.(*bolt.Store).Path())
		},
	})
}

func TestOpenCreatesPrivateFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a", "b", "charla.db")
	s := open(t, path)
	defer s.Close()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode %v, want 0600", perm)
	}
	if s.Path() != path {
		t.Errorf("Path() = %q, want %q", s.Path(), path)
	}
}

func TestOpenLockedFailsFast(t *testing.T) {
	path := filepath.Join(t.TempDir(), "charla.db")
	s := open(t, path)
	start := time.Now()
	_, err := bolt.Open(path, bolt.WithLockTimeout(100*time.Millisecond))
	if !errors.Is(err, bolt.ErrLocked) || !errors.Is(err, bolterrors.ErrTimeout) {
		t.Errorf("second Open: %v, want ErrLocked wrapping bolterrors.ErrTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("second Open took %v, want about the lock timeout", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := bolt.Open(path, bolt.WithLockTimeout(100*time.Millisecond))
	if err != nil {
		t.Fatalf("Open after the holder closed: %v", err)
	}
	s2.Close()
}

func TestOpenRejectsForeignFiles(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a bolt file\n", 1024)), 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := bolt.Open(garbage); err == nil {
		s.Close()
		t.Error("Open of a non-bbolt file succeeded")
	}

	// A file written by a future schema: an old binary must refuse it.
	future := filepath.Join(dir, "future.db")
	s := open(t, future)
	s.Close()
	db, err := bbolt.Open(future, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bbolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("version"), []byte("999")) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if s, err := bolt.Open(future); err == nil || !strings.Contains(err.Error(), "schema version") {
		if err == nil {
			s.Close()
		}
		t.Errorf("Open of a future schema: %v, want a schema version error", err)
	}
}

func TestConversations(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "charla.db"))
	ctx := t.Context()
	body := []byte(`{"text":"x"}`)
	steps := []struct {
		name string
		do   func() error
		want []charla.ConvID
	}{
		{"Empty", func() error { return nil }, []charla.ConvID{}},
		{"Messages", func() error {
			_, err := s.Append(ctx, []charla.Message{{Conv: "b", ClientMsgID: "1", Body: body}, {Conv: "a:1", ClientMsgID: "1", Body: body}})
			return err
		}, []charla.ConvID{"a:1", "b"}},
		{"CursorOnly", func() error { return s.SetReadCursor(ctx, "a", "alice", 3) }, []charla.ConvID{"a", "a:1", "b"}},
		{"MoreMessages", func() error {
			_, err := s.Append(ctx, []charla.Message{{Conv: "b", ClientMsgID: "2", Body: body}})
			return err
		}, []charla.ConvID{"a", "a:1", "b"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got, err := s.Conversations(ctx)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(st.want) || got == nil {
			t.Errorf("%s: Conversations = %#v, %v; want %#v", st.name, got, err, st.want)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conversations(ctx); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Conversations after Close: %v, want ErrClosed", err)
	}
}

// TestErrorsNameTheConversation checks that errors say which conversation
// failed: a group commit carries many, and the log line must tell which.
func TestErrorsNameTheConversation(t *testing.T) {
	s := open(t, filepath.Join(t.TempDir(), "charla.db"))
	defer s.Close()
	_, err := s.Append(t.Context(), []charla.Message{
		{Conv: "good", ClientMsgID: "1", Body: []byte(`{"text":"x"}`)},
		{Conv: "conv-bad", ClientMsgID: "2", Body: []byte(`{`)},
	})
	if err == nil || !strings.Contains(err.Error(), "bolt: append conv-bad:") {
		t.Errorf("Append error %q, want it to start with the failing conversation", err)
	}
}

// BenchmarkAppend measures a group commit of b.N messages in batches of
// various sizes spread over 16 conversations: one fsync per batch.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 16, 256} {
		b.Run(fmt.Sprintf("batch%d", batch), func(b *testing.B) {
			s := open(b, filepath.Join(b.TempDir(), "charla.db"))
			defer s.Close()
			body := []byte(`{"text":"hola, ¿tienen stock del modelo X?"}`)
			n := 0
			for b.Loop() {
				msgs := make([]charla.Message, batch)
				for i := range msgs {
					n++
					msgs[i] = charla.Message{
						Conv:        charla.ConvID(fmt.Sprintf("conv-%d", n%16)),
						ClientMsgID: fmt.Sprintf("%08x-0000-4000-8000-%012x", n, n),
						Sender:      charla.Sender{ID: "u", Role: charla.RoleCustomer},
						Body:        body,
					}
				}
				if _, err := s.Append(b.Context(), msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
