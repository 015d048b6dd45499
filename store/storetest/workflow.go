package storetest

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"charla"
	"charla/store"
)

// WorkflowStore is what the conversation workflow needs of a store
// (actors/inbox.go and actors/bot*.go define the same methods, split by
// user); both implementations run RunWorkflow.
type WorkflowStore interface {
	store.Store
	SaveConvStates(ctx context.Context, states []store.ConvState) error
	LoadConvState(ctx context.Context, conv charla.ConvID) (store.ConvState, bool, error)
	LoadInbox(ctx context.Context) ([]store.ConvState, uint64, error)
	ListConvStates(ctx context.Context, f store.ConvFilter) ([]store.ConvState, error)
	SaveBotSession(ctx context.Context, b store.BotSession) error
	LoadBotSession(ctx context.Context, conv charla.ConvID) (store.BotSession, bool, error)
	PutCanned(ctx context.Context, c store.CannedReply) error
	DeleteCanned(ctx context.Context, code string) (bool, error)
	ListCanned(ctx context.Context) ([]store.CannedReply, error)
	SetAgentCapacity(ctx context.Context, agent string, capacity int) error
	AgentCapacities(ctx context.Context) (map[string]int, error)
	SearchMessages(ctx context.Context, query string, limit int) ([]charla.Message, error)
	Heads(ctx context.Context, convs []charla.ConvID) (map[charla.ConvID]charla.Seq, error)
}

// RunWorkflow checks the workflow's persistence on a fresh store: states
// round-trip, lists filter, order and page the same way on every store,
// changed_since, bot sessions, canned replies, capacities and search.
func RunWorkflow(t *testing.T, open func(t *testing.T) WorkflowStore) {
	ctx := context.Background()
	s := open(t)
	t0 := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	states := []store.ConvState{
		{ID: "c1", Channel: "web", Customer: "c1", Status: store.StatusPending, Tags: []string{}, LastActivity: t0.Add(1 * time.Minute), CreatedAt: t0, Version: 1},
		{ID: "c2", Channel: "web", Customer: "c2", Status: store.StatusOpen, Assignee: "ana", Tags: []string{"vip"}, LastActivity: t0.Add(3 * time.Minute), CreatedAt: t0, Version: 5,
			Reads: map[string]charla.Seq{"ana": 2}},
		{ID: "wa.1:9", Channel: "whatsapp", Customer: "wa.1", Status: store.StatusOpen, Tags: []string{"vip", "es"}, LastActivity: t0.Add(2 * time.Minute), CreatedAt: t0, Version: 3,
			Last: &store.LastMessage{Seq: 1, TS: t0, Sender: charla.Sender{ID: "wa.1", Role: charla.RoleCustomer}, Text: "hola"}},
		{ID: "c4", Channel: "web", Customer: "c4", Status: store.StatusResolved, Assignee: "bea", Tags: []string{}, LastActivity: t0.Add(4 * time.Minute), CreatedAt: t0, Version: 4},
	}
	if err := s.SaveConvStates(ctx, states); err != nil {
		t.Fatalf("SaveConvStates: %v", err)
	}
	// An older version never overwrites a newer one (a late flush).
	stale := states[1]
	stale.Version, stale.Status = 2, store.StatusResolved
	if err := s.SaveConvStates(ctx, []store.ConvState{stale}); err != nil {
		t.Fatal(err)
	}
	got, found, err := s.LoadConvState(ctx, "c2")
	if err != nil || !found || got.Status != store.StatusOpen || got.Assignee != "ana" || got.Reads["ana"] != 2 || len(got.Tags) != 1 {
		t.Fatalf("LoadConvState(c2) = %+v, %v, %v", got, found, err)
	}
	if got, found, err := s.LoadConvState(ctx, "wa.1:9"); err != nil || !found || got.Last == nil || got.Last.Text != "hola" || !got.LastActivity.Equal(t0.Add(2*time.Minute)) {
		t.Fatalf("LoadConvState(wa) = %+v, %v, %v", got, found, err)
	}
	if _, found, err := s.LoadConvState(ctx, "nope"); err != nil || found {
		t.Fatalf("LoadConvState(nope) = %v, %v", found, err)
	}
	// A conversation with messages whose state the inbox never saved has
	// no state yet (on PostgreSQL, Append makes its row): the inbox builds
	// one from the messages, with their channel and customer.
	if _, err := s.Append(ctx, []charla.Message{{Conv: "wa.7:9", ClientMsgID: "00000000-0000-4000-8000-000000000007",
		Sender: charla.Sender{ID: "7", Role: charla.RoleCustomer}, Body: []byte(`{"text":"hola"}`), TS: t0}}); err != nil {
		t.Fatal(err)
	}
	if got, found, err := s.LoadConvState(ctx, "wa.7:9"); err != nil || found {
		t.Fatalf("LoadConvState of a conversation with messages and no saved state = %+v, %v, %v; want not found", got, found, err)
	}
	// The heads of many conversations at once (the inbox's start): the
	// log's, whatever the states say; none for a conversation without one.
	if heads, err := s.Heads(ctx, []charla.ConvID{"wa.7:9", "c1", "nope"}); err != nil || len(heads) != 1 || heads["wa.7:9"] != 1 {
		t.Fatalf("Heads = %v, %v; want wa.7:9 at 1 only", heads, err)
	}
	inbox, top, err := s.LoadInbox(ctx)
	if err != nil || top != 5 || len(inbox) != 3 {
		t.Fatalf("LoadInbox = %d states, top %d, %v; want 3, 5", len(inbox), top, err)
	}
	ids := func(cs []store.ConvState) string {
		out := ""
		for _, c := range cs {
			out += string(c.ID) + " "
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    store.ConvFilter
		want string
	}{
		{"all by activity", store.ConvFilter{}, "c4 c2 wa.1:9 c1 "},
		{"open", store.ConvFilter{Status: store.StatusOpen}, "c2 wa.1:9 "},
		{"assignee", store.ConvFilter{Assignee: "ana"}, "c2 "},
		{"unassigned", store.ConvFilter{Unassigned: true}, "wa.1:9 c1 "},
		{"tag", store.ConvFilter{Tag: "vip"}, "c2 wa.1:9 "},
		{"visible to bea", store.ConvFilter{VisibleTo: "bea"}, "c4 wa.1:9 c1 "},
		{"page 1", store.ConvFilter{Limit: 2}, "c4 c2 "},
		{"page 2", store.ConvFilter{Limit: 2, After: &states[1]}, "wa.1:9 c1 "},
		{"changed since", store.ConvFilter{ChangedSince: 2}, "wa.1:9 c4 c2 "},
		{"changed since, page 2", store.ConvFilter{ChangedSince: 2, After: &states[2], Limit: 1}, "c4 "},
	} {
		list, err := s.ListConvStates(ctx, tc.f)
		if err != nil || ids(list) != tc.want {
			t.Errorf("%s: ListConvStates = %q, %v; want %q", tc.name, ids(list), err, tc.want)
		}
	}

	sess := store.BotSession{Conv: "c1", Customer: "c1", State: json.RawMessage(`{"node":"menu"}`), ExpiresAt: t0.Add(15 * time.Minute), UpdatedAt: t0}
	if err := s.SaveBotSession(ctx, sess); err != nil {
		t.Fatal(err)
	}
	if b, found, err := s.LoadBotSession(ctx, "c1"); err != nil || !found || !jsonEqual(b.State, sess.State) || !b.ExpiresAt.Equal(sess.ExpiresAt) {
		t.Fatalf("LoadBotSession = %+v, %v, %v", b, found, err)
	}
	if _, found, err := s.LoadBotSession(ctx, "c9"); err != nil || found {
		t.Fatalf("LoadBotSession(c9) = %v, %v", found, err)
	}

	for _, c := range []store.CannedReply{{Code: "hi", Text: "Hola {{customer}}", UpdatedAt: t0}, {Code: "bye", Text: "Adiós", UpdatedAt: t0}} {
		if err := s.PutCanned(ctx, c); err != nil {
			t.Fatal(err)
		}
	}
	if found, err := s.DeleteCanned(ctx, "bye"); err != nil || !found {
		t.Fatalf("DeleteCanned(bye) = %v, %v", found, err)
	}
	if found, err := s.DeleteCanned(ctx, "bye"); err != nil || found {
		t.Fatalf("second DeleteCanned(bye) = %v, %v", found, err)
	}
	if cs, err := s.ListCanned(ctx); err != nil || len(cs) != 1 || cs[0].Text != "Hola {{customer}}" {
		t.Fatalf("ListCanned = %+v, %v", cs, err)
	}

	if err := s.SetAgentCapacity(ctx, "ana", 3); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAgentCapacity(ctx, "bea", 1); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAgentCapacity(ctx, "bea", -1); err != nil {
		t.Fatal(err)
	}
	if caps, err := s.AgentCapacities(ctx); err != nil || fmt.Sprint(caps) != "map[ana:3]" {
		t.Fatalf("AgentCapacities = %v, %v", caps, err)
	}

	var msgs []charla.Message
	for i, text := range []string{"¿Tienen stock del taladro azul?", "Hello, is the blue drill in stock?", "gracias"} {
		msgs = append(msgs, charla.Message{Conv: charla.ConvID(fmt.Sprintf("s%d", i)), ClientMsgID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i),
			Sender: charla.Sender{ID: "x", Role: charla.RoleCustomer}, Body: json.RawMessage(fmt.Sprintf(`{"text":%q}`, text)), TS: t0.Add(time.Duration(i) * time.Second)})
	}
	if _, err := s.Append(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		q    string
		want string
	}{{"stock", "s1 s0 "}, {"blue drill", "s1 "}, {"GRACIAS", "s2 "}, {"nada", ""}} {
		hits, err := s.SearchMessages(ctx, tc.q, 10)
		got := ""
		for _, h := range hits {
			got += string(h.Conv) + " "
		}
		if err != nil || got != tc.want {
			t.Errorf("SearchMessages(%q) = %q, %v; want %q", tc.q, got, err, tc.want)
		}
	}
}
