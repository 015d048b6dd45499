package actors_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/google/uuid"

	"charla"
	"charla/transport/transporttest"
)

// A producer inside the engine (the webhook, the bot) posts through the same
// single writer as a client: subscribers get the message once, and a post
// retried with the same client_msg_id (a redelivered webhook) is answered
// with the original seq, stored once.
func TestPostIsASendFromInside(t *testing.T) {
	e := transporttest.Start(t)
	agent := e.Dial(t, "agent-1", charla.RoleAgent)
	agent.Subscribe("wa.5215550001:1065", 0)

	ctx := context.Background()
	cmid := uuid.NewString()
	msg := charla.Message{
		Conv:        "wa.5215550001:1065",
		ClientMsgID: cmid,
		Sender:      charla.Sender{ID: "5215550001", Role: charla.RoleCustomer},
		Body:        json.RawMessage(`{"text":"hola"}`),
	}
	first, err := e.Sys.Post(ctx, msg)
	if err != nil || first.Seq != 1 || first.Duplicate {
		t.Fatalf("first post: %+v, %v; want seq 1, not a duplicate", first, err)
	}
	again, err := e.Sys.Post(ctx, msg)
	if err != nil || again.Seq != 1 || !again.Duplicate {
		t.Fatalf("second post: %+v, %v; want the duplicate of seq 1", again, err)
	}
	got := agent.Collect("wa.5215550001:1065", 0, 1)
	if got[0].Sender.ID != "5215550001" || string(got[0].Body) != `{"text":"hola"}` {
		t.Fatalf("subscriber got %+v", got[0])
	}

	tests := []struct {
		name string
		mod  func(*charla.Message)
	}{
		{"bad conversation", func(m *charla.Message) { m.Conv = "no spaces" }},
		{"client_msg_id not a UUID", func(m *charla.Message) { m.ClientMsgID = "wamid.HBgL" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bad := msg
			tt.mod(&bad)
			_, err := e.Sys.Post(ctx, bad)
			var ce *charla.Error
			if !errors.As(err, &ce) || ce.Code != charla.CodeBadRequest {
				t.Fatalf("err = %v, want a bad_request *charla.Error", err)
			}
		})
	}
	if msgs, err := e.Sys.History(ctx, "wa.5215550001:1065", 0, 10); err != nil || len(msgs) != 1 {
		t.Fatalf("history after the refused posts: %d messages, %v; want the one", len(msgs), err)
	}
}
