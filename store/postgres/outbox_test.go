package postgres

import (
	"encoding/json"
	"testing"
	"time"

	"charla"
	"charla/store"
	"charla/store/storetest"
)

func TestOutboxConformance(t *testing.T) {
	needDB(t)
	storetest.RunOutbox(t, func(t *testing.T) storetest.OutboxStore { return openTest(t) })
}

// TestOutboxThroughDrain: a message acked from the outage spool reaches the
// outbox when the spool drains into the database (AppendSequenced), once
// however often the drain is repeated.
func TestOutboxThroughDrain(t *testing.T) {
	needDB(t)
	s := openTest(t)
	conv := charla.WhatsAppConv("15550001111", "34600111222")
	m := charla.Message{Conv: conv, Seq: 1, ClientMsgID: "00000001-0000-4000-8000-000000000001",
		Sender: charla.Sender{ID: "alice", Role: charla.RoleAgent}, Body: json.RawMessage(`{"text":"from the spool"}`),
		TS: time.Now().UTC().Truncate(time.Microsecond)}
	for range 2 {
		if _, err := s.AppendSequenced(t.Context(), []charla.Message{m}); err != nil {
			t.Fatal(err)
		}
	}
	open, err := s.OpenOutbox(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0].Seq != 1 || open[0].ClientMsgID != m.ClientMsgID || open[0].State != store.OutboxPending || !open[0].TS.Equal(m.TS) {
		t.Fatalf("open outbox after two drains = %+v, want the one drained message", open)
	}
}
