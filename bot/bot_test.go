package bot

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestDefaultFlowIsValid(t *testing.T) {
	if _, err := Parse(Default); err != nil {
		t.Fatal(err)
	}
}

// TestParseListsEveryProblem: an invalid flow names each of its problems in
// one error, so that an operator fixes the file in one round.
func TestParseListsEveryProblem(t *testing.T) {
	bad := `
start: nowhere
fallback: menu
resume: sometimes
sku_pattern: "([a-z"
checking_after: 2s
give_up_after: 1s
hours: {timezone: Mars/Olympus, days: [mon, funday], open: "25:00", close: "18:00"}
messages: {checking: "…"}
intents:
  - {name: human, keywords: [persona], goto: handoff}
  - {name: again, keywords: [Persona], goto: missing}
nodes:
  menu:
    say: "Hola"
    menu:
      kind: buttons
      options:
        - {id: a, title: "A title far longer than twenty", goto: menu}
        - {id: a, title: "B", goto: menu}
        - {id: c, title: "C", goto: menu}
        - {id: d, title: "D", goto: menu}
  ask:
    action: stock
  handoff:
    action: teleport
`
	_, err := Parse([]byte(bad))
	if err == nil {
		t.Fatal("Parse accepted an invalid flow")
	}
	for _, want := range []string{
		`start: no node "nowhere"`, `resume: "sometimes"`, "sku_pattern:", "give_up_after", "hours.timezone", `"funday"`,
		"hours.open", "messages.apology", `keyword "Persona" is also intent human's`, `no node "missing"`,
		"options: 4 options", "options[0].title", "options[1].id", "nodes.ask.say", "nodes.ask.then", `"teleport"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q:\n%v", want, err)
		}
	}
	if _, err := Parse([]byte("start: a\nunknown_field: 1\n")); err == nil || !strings.Contains(err.Error(), "unknown_field") {
		t.Errorf("an unknown field: %v", err)
	}
}

func text(t *testing.T, b json.RawMessage) string {
	t.Helper()
	var v struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v.Type + "|" + v.Text
}

// TestConversation walks the default flow as a customer would.
func TestConversation(t *testing.T) {
	f, err := Parse(Default)
	if err != nil {
		t.Fatal(err)
	}
	open := time.Date(2026, 11, 27, 11, 0, 0, 0, time.UTC)   // a Friday, 12:00 in Madrid
	closed := time.Date(2026, 11, 29, 11, 0, 0, 0, time.UTC) // a Sunday
	var st State
	for _, tc := range []struct {
		name   string
		in     Input
		at     time.Time
		reply  string // the first reply's type|text prefix, "" for none
		effect Effect
		node   string
	}{
		{"greeting", Input{Text: "¡Hola!"}, open, "interactive|¡Hola! Soy", Effect{}, "greeting"},
		{"tap stock", Input{ReplyID: "stock"}, open, "|Dime el código", Effect{}, "ask_stock"},
		{"the sku", Input{Text: "es el abc-123 por favor"}, open, "", Effect{Kind: ActionStock, SKU: "abc-123"}, "ask_stock"},
		{"stock in one go", Input{Text: "stock ABC-123"}, open, "", Effect{Kind: ActionStock, SKU: "ABC-123"}, "ask_stock"},
		{"english", Input{Text: "is SKU-00042 available?"}, open, "", Effect{Kind: ActionStock, SKU: "SKU-00042"}, "ask_stock"},
		{"by product name", Input{Text: "¿Stock de Red Cotton Lamp?"}, open, "", Effect{Kind: ActionStock, Query: "red cotton lamp"}, "ask_stock"},
		{"the keyword alone asks", Input{Text: "disponibilidad"}, open, "|Dime el código", Effect{}, "ask_stock"},
		{"a name when asked", Input{Text: "lamp"}, open, "", Effect{Kind: ActionStock, Query: "lamp"}, "ask_stock"},
		{"not understood", Input{Text: "qwerty"}, open, "interactive|No te he entendido", Effect{}, "not_understood"},
		{"option by number", Input{Text: "2"}, open, "|Dime el código (SKU) del producto que quieres reservar", Effect{}, "ask_reserve"},
		{"a person", Input{Text: "quiero hablar con una persona"}, open, "|Te paso", Effect{Kind: ActionHandoff}, "handoff"},
		{"out of hours", Input{Text: "agent please"}, closed, "|Nuestro equipo atiende", Effect{Kind: ActionHandoff}, "handoff"},
		{"a reserve needs a SKU", Input{Text: "reservar la lámpara"}, open, "|Dime el código (SKU) del producto que quieres reservar", Effect{}, "ask_reserve"},
	} {
		step := f.Handle(&st, tc.in, tc.at)
		got := ""
		if len(step.Replies) > 0 {
			got = text(t, step.Replies[0])
		}
		if !strings.HasPrefix(got, tc.reply) || (tc.reply == "" && got != "") || step.Effect != tc.effect || st.Node != tc.node {
			t.Errorf("%s: reply %q effect %+v node %s; want %q… %+v %s", tc.name, got, step.Effect, st.Node, tc.reply, tc.effect, tc.node)
		}
	}
	st = State{Node: "ask_stock"}
	if step := f.After(&st); len(step.Replies) != 1 || st.Node != "anything_else" {
		t.Errorf("After a stock answer: %+v at %s", step, st.Node)
	}
}

func TestParseInput(t *testing.T) {
	for body, want := range map[string]Input{
		`{"text":"hola"}`: {Text: "hola"},
		`{"type":"interactive","text":"Reservar","interactive":{"type":"button_reply","button_reply":{"id":"reserve","title":"Reservar"}}}`: {Text: "Reservar", ReplyID: "reserve"},
		`{"text":"x","interactive":{"list_reply":{"id":"r2"}}}`:                                                                             {Text: "x", ReplyID: "r2"},
	} {
		if got := ParseInput([]byte(body)); got != want {
			t.Errorf("ParseInput(%s) = %+v, want %+v", body, got, want)
		}
	}
}
