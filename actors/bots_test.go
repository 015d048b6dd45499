package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/bot"
	"charla/store/pebble"
)

// botSystem is a tree with the default flow (no opening hours), quick
// expiry, over the embedded store.
func botSystem(t *testing.T, sessionTimeout time.Duration) (*System, *pebble.Store) {
	t.Helper()
	o := pebble.DefaultOptions()
	o.MemTableSize, o.CacheSize = 16<<20, 8<<20
	return botSystemWith(t, sessionTimeout, o)
}

func botSystemWith(t *testing.T, sessionTimeout time.Duration, o pebble.Options) (*System, *pebble.Store) {
	t.Helper()
	st, err := pebble.Open(context.Background(), filepath.Join(t.TempDir(), "charla.pebble"), o)
	if err != nil {
		t.Fatal(err)
	}
	flow, err := bot.Parse(bot.Default)
	if err != nil {
		t.Fatal(err)
	}
	flow.Hours = nil
	cfg := DefaultConfig()
	cfg.Bot.Flow, cfg.Bot.SessionTimeout, cfg.Bot.SweepInterval = flow, sessionTimeout, sessionTimeout/2
	cfg.IdleTimeout, cfg.SweepInterval = 300*time.Millisecond, 200*time.Millisecond
	sys, err := NewSystem(cfg, Dependencies{Store: st, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := sys.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		st.Close()
	})
	return sys, st
}

func customerSays(t *testing.T, sys *System, conv charla.ConvID, text string) charla.Seq {
	t.Helper()
	ack, err := sys.Post(context.Background(), charla.Message{Conv: conv, ClientMsgID: uuid.NewString(),
		Sender: charla.Sender{ID: conv.Owner(), Role: charla.RoleCustomer}, Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text))})
	if err != nil {
		t.Fatal(err)
	}
	return ack.Seq
}

// botSaid waits for the bot's message after seq in conv and returns its text.
func botSaid(t *testing.T, sys *System, conv charla.ConvID, after charla.Seq) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		msgs, err := sys.History(context.Background(), conv, after, 10)
		if err == nil {
			for _, m := range msgs {
				if m.Sender.Role == charla.RoleBot {
					var b struct{ Text string }
					_ = json.Unmarshal(m.Body, &b)
					return b.Text
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the bot said nothing in %s after seq %d", conv, after)
	return ""
}

// TestBotSessionExpiresAndResumes is issue 13, what must be shown 3 (first
// half): with a short timeout the session actor stops, its state is saved,
// and the customer's next message resumes it where it was.
func TestBotSessionExpiresAndResumes(t *testing.T) {
	sys, st := botSystem(t, 300*time.Millisecond)
	seq := customerSays(t, sys, "lucia", "hola")
	if got := botSaid(t, sys, "lucia", seq); !strings.Contains(got, "¡Hola!") {
		t.Fatalf("greeting %q", got)
	}
	waitFor(t, 10*time.Second, func() bool {
		return sys.Stats().BotSessions.Load() == 0 && sys.Stats().BotSessionsExpired.Load() == 1
	}, "the session to expire")
	saved, found, err := st.LoadBotSession(context.Background(), "lucia")
	if err != nil || !found || !strings.Contains(string(saved.State), `"node":"greeting"`) {
		t.Fatalf("saved session %s, %v, %v", saved.State, found, err)
	}
	// "2" is the greeting menu's second option: only a resumed session
	// knows that (a fresh one would greet again).
	seq = customerSays(t, sys, "lucia", "2")
	if got := botSaid(t, sys, "lucia", seq); !strings.Contains(got, "quieres reservar") {
		t.Fatalf("after expiry the bot said %q; want the reserve step (the saved context)", got)
	}
}

// TestTenThousandSessionsLeaveNothingBehind is what must be shown 3
// (second half): 10,000 sessions created and expired leave no goroutine and
// no memory behind but the inbox's state of the 10,000 pending
// conversations, which is the workflow's queue, not the sessions'.
func TestTenThousandSessionsLeaveNothingBehind(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 sessions")
	}
	const n = 10_000
	// A small memtable and cache: pebble's buffers are Go heap, and their
	// fill would swamp the sessions' share of the live heap measured here.
	o := pebble.DefaultOptions()
	o.MemTableSize, o.CacheSize = 1<<20, 1<<20
	sys, _ := botSystemWith(t, 40*time.Second, o) // outlives most of the posting on a loaded machine
	stats := sys.Stats()
	post := func(prefix string, count int) {
		var wg sync.WaitGroup
		next := make(chan int)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					customerSays(t, sys, charla.ConvID(fmt.Sprintf("%s%05d", prefix, i)), "hola")
				}
			}()
		}
		for i := range count {
			next <- i
		}
		close(next)
		wg.Wait()
	}
	settled := func(expired int64) {
		waitFor(t, 3*time.Minute, func() bool {
			return stats.BotSessionsExpired.Load() >= expired && stats.BotSessions.Load() == 0 && stats.ConversationsActive.Load() == 0
		}, "sessions and conversations to stop")
	}
	// Warm-up: the process registry's shards, goroutine descriptors and
	// the inbox's maps reach their working size (see unload_test.go).
	post("w", 500)
	settled(500)
	touchRegistry(sys.as)
	baseG, baseHeap := runtime.NumGoroutine(), liveHeap()

	start := time.Now()
	post("s", n)
	t.Logf("%d customers greeted in %v", n, time.Since(start).Round(time.Millisecond))
	waitFor(t, time.Minute, func() bool { return stats.ConversationsActive.Load() == 0 }, "conversations to unload")
	// On a slow machine the first sessions expire while the last are made:
	// the heap is measured with those alive now.
	alive := stats.BotSessions.Load()
	aliveHeap := liveHeap()
	settled(500 + n)
	afterG, afterHeap := runtime.NumGoroutine(), liveHeap()
	perSession := float64(int64(aliveHeap)-int64(afterHeap)) / float64(alive)
	t.Logf("goroutines: %d before, %d after; live heap: %.1f MB before, %.1f MB with %d sessions alive, %.1f MB after (%.0f bytes per live session)",
		baseG, afterG, mb(baseHeap), mb(aliveHeap), alive, mb(afterHeap), perSession)
	if afterG > baseG+5 {
		t.Errorf("%d goroutines after, %d before", afterG, baseG)
	}
	// What stays: the inbox's state of each pending conversation (its
	// queue), under 1 KB each.
	if afterHeap > baseHeap+n*1024 {
		t.Errorf("live heap grew by %.1f MB for %d expired sessions", mb(afterHeap-baseHeap), n)
	}
	if alive < n/10 {
		t.Errorf("only %d sessions were alive at once; the measure needs a good share of the %d", alive, n)
	}
}
