package storetest

import (
	"context"
	"testing"
	"time"

	"charla"
	"charla/store"
)

// OutboxStore is a store with the WhatsApp outbox (store/outbox.go): what
// the whatsapp actor uses.
type OutboxStore interface {
	store.Store
	OpenOutbox(ctx context.Context) ([]store.OutboxEntry, error)
	OutboxOf(ctx context.Context, conv charla.ConvID) ([]store.OutboxEntry, error)
	SaveOutbox(ctx context.Context, e store.OutboxEntry) (store.DeliveryStatus, error)
	ApplyWhatsAppStatus(ctx context.Context, n store.DeliveryStatus) (store.DeliveryStatus, bool, error)
	LastInbound(ctx context.Context, conv charla.ConvID) (time.Time, error)
}

// RunOutbox runs the outbox suite against fresh stores from open, which
// closes them itself.
func RunOutbox(t *testing.T, open func(t *testing.T) OutboxStore) {
	t.Run("OutboundRule", func(t *testing.T) { testOutboundRule(t, open(t)) })
	t.Run("Lifecycle", func(t *testing.T) { testOutboxLifecycle(t, open(t)) })
	t.Run("StatusesForwardOnly", func(t *testing.T) { testStatusesForwardOnly(t, open(t)) })
	t.Run("StatusBeforeLink", func(t *testing.T) { testStatusBeforeLink(t, open(t)) })
	t.Run("LastInbound", func(t *testing.T) { testLastInbound(t, open(t)) })
}

var waConv = charla.WhatsAppConv("15550001111", "34600111222")

func from(m charla.Message, id string, role charla.Role) charla.Message {
	m.Sender = charla.Sender{ID: id, Role: role}
	return m
}

// testOutboundRule: exactly the messages of non-customers in WhatsApp
// conversations get an entry, once, written by Append itself.
func testOutboundRule(t *testing.T, st OutboxStore) {
	agent := from(msg(waConv, idFor(1), "hello from agent"), "alice", charla.RoleAgent)
	mustAppend(t, st,
		from(msg(waConv, idFor(0), "hi, I am the customer"), "34600111222", charla.RoleCustomer),
		agent,
		from(msg("web-conv", idFor(2), "web agent reply"), "alice", charla.RoleAgent),
		from(msg(waConv, idFor(3), "bot answer"), "bot", charla.RoleBot),
	)
	mustAppend(t, st, agent) // a resend: a duplicate, no second entry
	open, err := st.OpenOutbox(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 2 {
		t.Fatalf("open outbox has %d entries, want the agent's and the bot's: %+v", len(open), open)
	}
	want := []struct {
		seq  charla.Seq
		cmid string
		who  charla.Sender
	}{{2, idFor(1), charla.Sender{ID: "alice", Role: charla.RoleAgent}}, {3, idFor(3), charla.Sender{ID: "bot", Role: charla.RoleBot}}}
	for i, w := range want {
		e := open[i]
		if e.Conv != waConv || e.Seq != w.seq || e.ClientMsgID != w.cmid || e.Sender != w.who || e.State != store.OutboxPending || e.TS.IsZero() {
			t.Errorf("entry %d = %+v, want conv %s seq %d cmid %s sender %v pending", i, e, waConv, w.seq, w.cmid, w.who)
		}
		if i == 0 && !jsonEqual(e.Body, agent.Body) {
			t.Errorf("entry body %s, want %s", e.Body, agent.Body)
		}
	}
}

// testOutboxLifecycle: sending stays open, sent and failed close, and every
// field the actor saves is read back.
func testOutboxLifecycle(t *testing.T, st OutboxStore) {
	mustAppend(t, st, from(msg(waConv, idFor(1), "one"), "alice", charla.RoleAgent), from(msg(waConv, idFor(2), "two"), "alice", charla.RoleAgent))
	open, err := st.OpenOutbox(t.Context())
	if err != nil || len(open) != 2 {
		t.Fatalf("OpenOutbox = %d entries, %v; want 2", len(open), err)
	}
	due := time.Now().Add(time.Minute).UTC().Truncate(time.Microsecond)
	a, b := open[0], open[1]
	a.State, a.Attempts, a.NextAttempt = store.OutboxSending, 1, due
	b.State, b.Attempts, b.ErrorCode, b.ErrorTitle = store.OutboxFailed, 1, 131047, "Re-engagement message"
	for _, e := range []store.OutboxEntry{a, b} {
		if _, err := st.SaveOutbox(t.Context(), e); err != nil {
			t.Fatal(err)
		}
	}
	open, err = st.OpenOutbox(t.Context())
	if err != nil || len(open) != 1 || open[0].State != store.OutboxSending || !open[0].NextAttempt.Equal(due) || open[0].Attempts != 1 {
		t.Fatalf("after sending+failed, OpenOutbox = %+v, %v; want the sending one due %v", open, err, due)
	}
	a.State, a.WAMID = store.OutboxSent, "wamid.A"
	if _, err := st.SaveOutbox(t.Context(), a); err != nil {
		t.Fatal(err)
	}
	if open, err = st.OpenOutbox(t.Context()); err != nil || len(open) != 0 {
		t.Fatalf("after sent, OpenOutbox = %+v, %v; want none", open, err)
	}
	all, err := st.OutboxOf(t.Context(), waConv)
	if err != nil || len(all) != 2 {
		t.Fatalf("OutboxOf = %+v, %v", all, err)
	}
	if all[0].State != store.OutboxSent || all[0].WAMID != "wamid.A" || all[0].Delivery.WAMID != "wamid.A" {
		t.Errorf("sent entry read back as %+v", all[0])
	}
	if all[1].State != store.OutboxFailed || all[1].ErrorCode != 131047 || all[1].ErrorTitle != "Re-engagement message" {
		t.Errorf("failed entry read back as %+v", all[1])
	}
	missing := a
	missing.Seq = 99
	if _, err := st.SaveOutbox(t.Context(), missing); err == nil {
		t.Error("SaveOutbox of an entry Append never wrote succeeded")
	}
}

// testStatusesForwardOnly: whatever order and repetition notifications
// come in, the status ends at the highest; failed keeps its error.
func testStatusesForwardOnly(t *testing.T, st OutboxStore) {
	ts := time.Unix(1_700_000_000, 0).UTC()
	cases := []struct {
		name     string
		in       []string
		want     string
		wantCode int
	}{
		{"in order", []string{"sent", "delivered", "read"}, "read", 0},
		{"read first", []string{"read", "sent", "delivered", "sent"}, "read", 0},
		{"duplicates", []string{"delivered", "delivered", "sent", "delivered"}, "delivered", 0},
		{"failed keeps its error", []string{"sent", "failed", "sent", "delivered"}, "failed", 131026},
		{"failed does not overwrite read", []string{"read", "failed"}, "read", 0},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wamid := "wamid.F" + idFor(i)
			var last store.DeliveryStatus
			for j, s := range c.in {
				n := store.DeliveryStatus{WAMID: wamid, Status: s, TS: ts.Add(time.Duration(j) * time.Second)}
				if s == "failed" {
					n.ErrorCode, n.ErrorTitle = 131026, "Message undeliverable"
				}
				got, changed, err := st.ApplyWhatsAppStatus(t.Context(), n)
				if err != nil {
					t.Fatal(err)
				}
				if changed != (store.StatusRank(s) > store.StatusRank(last.Status)) {
					t.Errorf("%s after %q: changed = %v", s, last.Status, changed)
				}
				last = got
			}
			if last.Status != c.want || last.ErrorCode != c.wantCode {
				t.Errorf("ended as %q (code %d), want %q (code %d)", last.Status, last.ErrorCode, c.want, c.wantCode)
			}
		})
	}
	if _, _, err := st.ApplyWhatsAppStatus(t.Context(), store.DeliveryStatus{WAMID: "wamid.X", Status: "deleted"}); err == nil {
		t.Error("an unknown status was accepted")
	}
}

// testStatusBeforeLink: a notification that overtakes the Graph API's
// answer is kept and handed over when the wamid is recorded.
func testStatusBeforeLink(t *testing.T, st OutboxStore) {
	mustAppend(t, st, from(msg(waConv, idFor(1), "one"), "alice", charla.RoleAgent))
	got, changed, err := st.ApplyWhatsAppStatus(t.Context(), store.DeliveryStatus{WAMID: "wamid.L", Status: "delivered", TS: time.Now()})
	if err != nil || !changed || got.Conv != "" {
		t.Fatalf("status of an unknown wamid: %+v, %v, %v; want stored, not linked", got, changed, err)
	}
	open, err := st.OpenOutbox(t.Context())
	if err != nil || len(open) != 1 {
		t.Fatalf("OpenOutbox = %+v, %v", open, err)
	}
	e := open[0]
	e.State, e.WAMID, e.Attempts = store.OutboxSent, "wamid.L", 1
	linked, err := st.SaveOutbox(t.Context(), e)
	if err != nil || linked.Status != "delivered" || linked.Conv != waConv || linked.Seq != 1 {
		t.Fatalf("SaveOutbox with the wamid = %+v, %v; want delivered, linked to seq 1", linked, err)
	}
	got, changed, err = st.ApplyWhatsAppStatus(t.Context(), store.DeliveryStatus{WAMID: "wamid.L", Status: "read", TS: time.Now()})
	if err != nil || !changed || got.Status != "read" || got.Conv != waConv || got.Seq != 1 || got.ClientMsgID != idFor(1) {
		t.Fatalf("read after the link: %+v, %v, %v", got, changed, err)
	}
}

// testLastInbound: the customer's last message opens the window; others'
// do not.
func testLastInbound(t *testing.T, st OutboxStore) {
	if at, err := st.LastInbound(t.Context(), waConv); err != nil || !at.IsZero() {
		t.Fatalf("LastInbound of an empty conversation = %v, %v", at, err)
	}
	ts := time.Now().Add(-30 * time.Hour).UTC().Truncate(time.Microsecond)
	c := from(msg(waConv, idFor(1), "customer"), "34600111222", charla.RoleCustomer)
	c.TS = ts
	mustAppend(t, st, c, from(msg(waConv, idFor(2), "agent"), "alice", charla.RoleAgent))
	if at, err := st.LastInbound(t.Context(), waConv); err != nil || !at.Equal(ts) {
		t.Fatalf("LastInbound = %v, %v; want %v", at, err, ts)
	}
}
