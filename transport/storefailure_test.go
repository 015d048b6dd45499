package transport_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/store"
	"charla/store/bolt"
	"charla/transport/transporttest"
	"charla/wire"
)

// fullDisk is the embedded store with a switch that makes its writes fail
// as a full disk does: no real disk can be filled here safely.
type fullDisk struct {
	store.Store
	full atomic.Bool
}

func (f *fullDisk) Append(ctx context.Context, msgs []charla.Message) ([]store.AppendResult, error) {
	if f.full.Load() {
		return nil, fmt.Errorf("append: write charla.db: %w", syscall.ENOSPC)
	}
	return f.Store.Append(ctx, msgs)
}

// A full disk answers sends unavailable and is logged once when it starts
// (with its cause) and once when writes succeed again; chat then recovers.
func TestStoreWriteFailuresAreLoggedOncePerEpisode(t *testing.T) {
	disk := &fullDisk{}
	logs := &transporttest.LogBuffer{}
	e := transporttest.Start(t,
		transporttest.WithLogger(zerolog.New(logs).Level(zerolog.InfoLevel)),
		transporttest.WithStore(func(tb testing.TB) store.Store {
			st, err := bolt.Open(filepath.Join(tb.TempDir(), "charla.db"))
			if err != nil {
				tb.Fatal(err)
			}
			disk.Store = st
			return disk
		}))
	c := e.Dial(t, "ana", charla.RoleAgent)
	send := func(ref string) wire.Frame {
		t.Helper()
		c.Send(transporttest.SendFrame("disk", uuid.NewString(), "x", ref))
		for {
			if f := c.Next(transporttest.Wait); f.Ref == ref {
				return f
			}
		}
	}
	disk.full.Store(true)
	for i := range 5 {
		if f := send(fmt.Sprint("full", i)); f.Type != wire.TypeError || f.Code != charla.CodeUnavailable {
			t.Fatalf("send on a full disk: %+v, want unavailable", f)
		}
	}
	if n := strings.Count(logs.String(), "store writes are failing"); n != 1 {
		t.Fatalf("%d failure lines for one episode, want 1; log:\n%s", n, logs.String())
	}
	if strings.Count(logs.String(), "no space left on device") != 1 {
		t.Fatalf("the failure line does not name the cause; log:\n%s", logs.String())
	}
	disk.full.Store(false)
	if f := send("ok"); f.Type != wire.TypeAck || f.Seq != 1 {
		t.Fatalf("send after space returned: %+v, want ack seq 1", f)
	}
	if n := strings.Count(logs.String(), "store writes succeed again"); n != 1 {
		t.Fatalf("%d recovery lines, want 1; log:\n%s", n, logs.String())
	}
}
