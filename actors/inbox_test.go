package actors_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/rs/zerolog"

	"charla"
	"charla/actors"
	"charla/store"
	"charla/store/pebble"
	"charla/store/postgres"
	"charla/store/storetest"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// countSaves is the embedded store counting the inbox's saves of states.
type countSaves struct {
	*pebble.Store
	saves atomic.Int64
}

func (c *countSaves) SaveConvStates(ctx context.Context, states []store.ConvState) error {
	c.saves.Add(1)
	return c.Store.SaveConvStates(ctx, states)
}

func openPebbleAt(tb testing.TB, dir string) *pebble.Store {
	tb.Helper()
	p, err := pebble.Open(context.Background(), filepath.Join(dir, "charla.pebble"), pebble.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	return p
}

// listed is the conversation list as an admin reads it (GET
// /v1/conversations, which reads the store once every change is saved).
func listed(t *testing.T, e *transporttest.Engine, conv charla.ConvID) wire.Conversation {
	t.Helper()
	st, body := transporttest.Do(t, http.MethodGet, e.HTTPURL("/v1/conversations", "boss", charla.RoleAdmin), nil, nil)
	if st != http.StatusOK {
		t.Fatalf("list: %d %s", st, body)
	}
	var list transport.ConversationList
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	for _, c := range list.Conversations {
		if c.Conv == conv {
			return c
		}
	}
	t.Fatalf("%s not listed: %s", conv, body)
	return wire.Conversation{}
}

// A busy conversation's activity is written to its workflow state a few
// times a second, not at every message: the state still ends up with
// every message, and a list (which saves first) shows the last one.
func TestInboxSavesActivityInBatches(t *testing.T) {
	cs := &countSaves{}
	e := transporttest.Start(t,
		transporttest.WithActors(func(c *actors.Config) { c.InboxSaveDelay = time.Second }),
		transporttest.WithStore(func(tb testing.TB) store.Store {
			cs.Store = openPebbleAt(tb, tb.TempDir())
			return cs
		}))
	const n = 100
	customer := e.Dial(t, "c7", charla.RoleCustomer)
	for i := range n {
		cmid := uuid.NewString()
		customer.Send(transporttest.SendFrame("c7", cmid, fmt.Sprint(i), cmid))
		customer.NextOf(wire.TypeAck, transporttest.Wait)
	}
	if got := cs.saves.Load(); got > n/4 {
		t.Fatalf("%d saves of states for %d messages, one each at most a second", got, n)
	}
	// The inbox hears of a message just after its ack.
	deadline := time.Now().Add(transporttest.Wait)
	for c := listed(t, e, "c7"); c.Head != n || c.Last == nil || c.Last.Text != fmt.Sprint(n-1); c = listed(t, e, "c7") {
		if time.Now().After(deadline) {
			t.Fatalf("listed %+v, want head %d and the last message", c, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// What a crash lost of a conversation's activity (its state saved at
// message 1, the log at 3) is rebuilt from the log at start, on both
// stores (PostgreSQL keeps the head itself, not the last message).
func TestInboxRepairsActivityAtStart(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			var st storetest.WorkflowStore
			var start func() *transporttest.Engine
			if kind == "postgres" {
				u := migrated(t)
				o := postgres.DefaultOptions()
				o.URL = u
				p, err := postgres.Open(ctx, o, zerolog.Nop())
				if err != nil {
					t.Fatal(err)
				}
				st, start = p, func() *transporttest.Engine { return engineOverPG(t, u) }
			} else {
				dir := t.TempDir()
				st = openPebbleAt(t, dir)
				start = func() *transporttest.Engine {
					return transporttest.Start(t, transporttest.WithStore(func(tb testing.TB) store.Store { return openPebbleAt(tb, dir) }))
				}
			}
			cust := charla.Sender{ID: "c8", Role: charla.RoleCustomer}
			var msgs []charla.Message
			for i, text := range []string{"one", "two", "three"} {
				msgs = append(msgs, charla.Message{Conv: "c8", ClientMsgID: uuid.NewString(), Sender: cust,
					Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text)), TS: time.Now().UTC().Add(time.Duration(i) * time.Millisecond)})
			}
			if _, err := st.Append(ctx, msgs); err != nil {
				t.Fatal(err)
			}
			first, _ := st.Range(ctx, "c8", 0, 1)
			state := store.ConvState{ID: "c8", Channel: "web", Customer: "c8", Status: store.StatusPending, Tags: []string{}, Head: 1,
				Last: &store.LastMessage{Seq: 1, TS: first[0].TS, Sender: cust, Text: "one"}, LastActivity: first[0].TS, CreatedAt: first[0].TS, Version: 5}
			if err := st.SaveConvStates(ctx, []store.ConvState{state}); err != nil {
				t.Fatal(err)
			}
			if err := st.Close(); err != nil {
				t.Fatal(err)
			}

			c := listed(t, start(), "c8")
			if c.Head != 3 || c.Last == nil || c.Last.Text != "three" || c.Status != store.StatusPending {
				t.Fatalf("listed after the start %+v, want head 3, last \"three\", still pending", c)
			}
		})
	}
}

// The inbox actor failing does not silently cut its followers off: it
// restarts, each agent's conn follows it again, the agent gets an inbox
// frame without ref (frames may have been missed: catch up with
// changed_since) and then every change as before; a request it held is
// answered.
func TestInboxRestartKeepsItsFollowers(t *testing.T) {
	var armed atomic.Bool
	hook := func(msgType string) {
		if msgType == "actors.presenceSet" && armed.CompareAndSwap(true, false) {
			panic("injected by test")
		}
	}
	e := transporttest.Start(t, transporttest.WithSystem(actors.NewSystemWithInboxHook(hook)))
	ana := e.Dial(t, "ana", charla.RoleAgent)
	ana.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	before := ana.NextOf(wire.TypeInbox, transporttest.Wait)

	armed.Store(true)
	ana.Send(wire.Frame{Type: wire.TypePresence, State: wire.PresenceAway, Ref: "away"})
	again := ana.NextOf(wire.TypeInbox, transporttest.Wait)
	if again.Ref != "" || again.Version < before.Version {
		t.Fatalf("after the restart: %+v (before %+v), want an inbox frame without ref, its version not lower", again, before)
	}

	customer := e.Dial(t, "c6", charla.RoleCustomer)
	customer.Send(transporttest.SendFrame("c6", uuid.NewString(), "hola", "s"))
	for {
		f := ana.NextOf(wire.TypeConversation, transporttest.Wait)
		if f.Conv == "c6" {
			if f.Version <= again.Version {
				t.Fatalf("version %d after the restart's %d", f.Version, again.Version)
			}
			break
		}
	}
}
