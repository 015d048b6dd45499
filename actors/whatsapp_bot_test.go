package actors_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/soapbridge"
	"charla/store"
	"charla/transport/transporttest"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

// sentText is what a send to the Graph API shows the customer: a text's
// body, an interactive's body text.
func sentText(q fakegraph.Request) string {
	var p struct {
		Text        struct{ Body string } `json:"text"`
		Interactive struct {
			Body struct{ Text string } `json:"body"`
		} `json:"interactive"`
	}
	_ = json.Unmarshal(q.Payload, &p)
	return p.Text.Body + p.Interactive.Body.Text
}

// waitSent waits for an accepted send to waID whose text contains want,
// among those after the first skip sends, and returns it.
func (r *outRig) waitSent(t *testing.T, waID, want string, skip int) (fakegraph.Request, int) {
	t.Helper()
	deadline := time.Now().Add(transporttest.Wait)
	for {
		sent := r.fake.Sent()
		for i := skip; i < len(sent); i++ {
			if q := sent[i]; q.To == waID && strings.Contains(sentText(q), want) {
				return q, i + 1
			}
		}
		if time.Now().After(deadline) {
			var got []string
			for _, q := range sent {
				got = append(got, q.Type+":"+sentText(q))
			}
			t.Fatalf("no send to %s with %q; sent %q", waID, want, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// customerTaps posts, signed, the customer's tap on an interactive
// button.
func (r *outRig) customerTaps(t *testing.T, waID, id, title string) {
	t.Helper()
	content, _ := json.Marshal(map[string]any{"type": "button_reply", "button_reply": map[string]string{"id": id, "title": title}})
	r.inject(t, fakegraph.Inbound{PhoneNumberID: waPhone, From: waID, Type: "interactive", Content: content})
}

func (r *outRig) inject(t *testing.T, in fakegraph.Inbound) {
	t.Helper()
	if _, status, err := r.fake.Inject(t.Context(), in); err != nil || status != http.StatusOK {
		t.Fatalf("webhook: %d %v", status, err)
	}
}

// TestWhatsAppBotEndToEnd is issue 13's what must be shown 1 and 2 over
// WhatsApp: a customer's messages arrive as signed webhooks, the bot's
// replies leave through the fake Graph API (a greeting with interactive
// buttons within a second; the SOAP simulator's stock figure after the
// customer taps "stock" and types the SKU), "talk to a person" hands over
// to the agent online, who gets the conversation frame and the whole
// history, and whose reply reaches the customer; every message of the
// business side is sent exactly once.
func TestWhatsAppBotEndToEnd(t *testing.T) {
	for _, kind := range bothStores {
		t.Run(kind, func(t *testing.T) {
			s := startSim(t)
			r := startOutbound(t, kind, outOptions{engine: []transporttest.Option{
				transporttest.WithBot(transporttest.QuickFlow(t), s.url),
				transporttest.WithActors(func(c *actors.Config) { c.AgentCapacity = 2 }),
			}})
			const waID = "34611000001"
			conv := charla.WhatsAppConv(waPhone, waID)
			ana := r.engine.DialInbox(t, "ana", charla.RoleAgent)

			start := time.Now()
			r.inject(t, fakegraph.Inbound{PhoneNumberID: waPhone, From: waID, Name: "Lucía", Text: "hola"})
			greeting, n := r.waitSent(t, waID, "¡Hola!", 0)
			if d := greeting.At.Sub(start); d > time.Second {
				t.Errorf("greeting sent after %v, want within 1s", d)
			}
			var p struct {
				Interactive struct {
					Type   string
					Action struct {
						Buttons []struct{ Reply struct{ ID, Title string } }
					}
				}
			}
			if err := json.Unmarshal(greeting.Payload, &p); err != nil || greeting.Type != "interactive" || p.Interactive.Type != "button" || len(p.Interactive.Action.Buttons) != 3 {
				t.Fatalf("greeting sent as %s %s, want interactive buttons", greeting.Type, greeting.Payload)
			}
			if b := p.Interactive.Action.Buttons[0].Reply; b.ID != "stock" {
				t.Fatalf("first button %+v, want stock", b)
			}

			// The customer taps "stock": the bot asks for the SKU.
			r.customerTaps(t, waID, "stock", "Consultar stock")
			_, n = r.waitSent(t, waID, "SKU", n)
			client, err := soapbridge.New(s.url, soapbridge.Options{})
			if err != nil {
				t.Fatal(err)
			}
			want, err := client.GetStock(t.Context(), "SKU-00042")
			client.CloseIdleConnections()
			if err != nil {
				t.Fatal(err)
			}
			r.inject(t, fakegraph.Inbound{PhoneNumberID: waPhone, From: waID, Text: "SKU-00042"})
			_, n = r.waitSent(t, waID, fmt.Sprintf("SKU-00042): %d disponibles en %s", want.Quantity, want.Warehouse), n)

			// Handoff: ana (online, under capacity) is assigned and sees it
			// all.
			r.inject(t, fakegraph.Inbound{PhoneNumberID: waPhone, From: waID, Text: "talk to a person"})
			f := ana.NextConversation(conv, func(f wire.Frame) bool { return f.Status == "open" })
			if f.Assignee != "ana" {
				t.Fatalf("handed off to %q, want ana", f.Assignee)
			}
			r.waitSent(t, waID, "una persona", n)
			sub := ana.Subscribe(conv, 0)
			history := ana.Collect(conv, 0, int(sub.Head))
			var customer, business []charla.Seq
			for _, m := range history {
				if m.Sender.Role == charla.RoleCustomer {
					customer = append(customer, m.Seq)
				} else {
					business = append(business, m.Seq)
				}
			}
			// hola, the tap, the SKU, talk to a person; greeting, ask, stock,
			// anything else, handoff.
			if len(customer) != 4 || len(business) < 5 || history[0].Sender.ID != waID {
				t.Fatalf("history: customer seqs %v, business %v", customer, business)
			}

			// Ana answers with a canned reply the server fills with the
			// customer's WhatsApp profile name.
			e := r.engine
			transporttest.DoJSON(t, http.MethodPut, e.HTTPURL("/v1/canned/hola", "ana", charla.RoleAgent), map[string]string{"text": "Hola {{customer_name}}, soy {{agent_name}}"}, http.StatusOK, nil)
			var canned store.CannedReply
			transporttest.DoJSON(t, http.MethodGet, e.HTTPURL("/v1/conversations/"+string(conv)+"/canned/hola", "ana", charla.RoleAgent), nil, http.StatusOK, &canned)
			if canned.Text != "Hola Lucía, soy ana" {
				t.Fatalf("canned reply rendered %q", canned.Text)
			}
			ana.Send(transporttest.SendFrame(conv, uuid.NewString(), canned.Text, "r1"))
			ack := ana.NextOf(wire.TypeAck, transporttest.Wait)
			r.waitSent(t, waID, "Hola Lucía, soy ana", n)
			business = append(business, ack.Seq)
			// Every business-side message went out exactly once, even after a
			// while for a duplicate to show up.
			time.Sleep(300 * time.Millisecond)
			for _, seq := range business {
				if ok, refused := r.sendsOf(conv, seq); len(ok) != 1 || len(refused) != 0 {
					t.Errorf("message %d sent %d times (%d refused), want once", seq, len(ok), len(refused))
				}
			}
		})
	}
}
