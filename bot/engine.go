package bot

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// State is a session's place in the flow, saved when the session expires.
type State struct {
	// Node is the node the session is at ("" for a fresh session).
	Node string `json:"node"`
	// Awaiting is set when Node's stock or reserve step waits for its SKU.
	Awaiting bool `json:"awaiting,omitempty"`
	// SKU is the last item asked about.
	SKU string `json:"sku,omitempty"`
	// HandedOff is set once the conversation went to people.
	HandedOff bool `json:"handed_off,omitempty"`
}

// Input is a customer's message as the bot reads it.
type Input struct {
	Text string
	// ReplyID is the id of the menu option the customer tapped (a WhatsApp
	// interactive button_reply or list_reply), "" for typed text.
	ReplyID string
}

// ParseInput reads a message body: its text, and the id of a tapped
// option when the body carries WhatsApp's interactive reply
// ({"interactive":{"button_reply":{"id":…}}} or list_reply) or a
// "reply_id".
func ParseInput(body []byte) Input {
	var b struct {
		Text        string `json:"text"`
		ReplyID     string `json:"reply_id"`
		Interactive struct {
			ButtonReply struct{ ID string } `json:"button_reply"`
			ListReply   struct{ ID string } `json:"list_reply"`
		} `json:"interactive"`
	}
	_ = json.Unmarshal(body, &b)
	in := Input{Text: b.Text, ReplyID: b.ReplyID}
	if in.ReplyID == "" {
		in.ReplyID = b.Interactive.ButtonReply.ID
	}
	if in.ReplyID == "" {
		in.ReplyID = b.Interactive.ListReply.ID
	}
	return in
}

// Effect is what the engine must do after sending a step's replies.
type Effect struct {
	// Kind is "", ActionStock, ActionReserve or ActionHandoff.
	Kind string
	// SKU is the item of a stock or reserve step.
	SKU string
	// Query is what a stock step searches the catalogue for (by product
	// name) when the customer gave no SKU; SKU is then "".
	Query string
}

// Step is the outcome of one message: message bodies to post, in order,
// and at most one effect.
type Step struct {
	Replies []json.RawMessage
	Effect  Effect
}

// Handle moves st by one customer message at now. fresh is set for a
// session that has no saved state (or that starts over).
func (f *Flow) Handle(st *State, in Input, now time.Time) Step {
	if st.Node != "" {
		if n := f.Nodes[st.Node]; n == nil {
			*st = State{} // the flow changed under a saved session
		}
	}
	text := Normalize(in.Text)
	// 1. A menu option of where the session is: tapped, its number, or
	// its title typed.
	if cur := f.Nodes[st.Node]; cur != nil && cur.Menu != nil {
		for i, o := range cur.Menu.Options {
			if in.ReplyID == o.ID || text == strconv.Itoa(i+1) || text == Normalize(o.Title) || (in.ReplyID == "" && text == Normalize(o.ID)) {
				return f.enter(st, o.Goto, "", now)
			}
		}
	}
	// 2. An intent's keyword; a SKU in the message is its argument.
	sku := f.sku.FindString(in.Text)
	if ki := f.match(text); ki != nil {
		arg := sku
		if n := f.Nodes[ki.intent.Goto]; arg == "" && n.Action == ActionStock {
			// "stock camiseta roja": the words after the keyword name the
			// product.
			_, arg, _ = strings.Cut(" "+text+" ", " "+ki.keyword+" ")
			arg = strings.TrimSpace(arg)
			for _, w := range []string{"de ", "del ", "of ", "for ", "para "} {
				arg = strings.TrimPrefix(arg, w)
			}
		}
		return f.enter(st, ki.intent.Goto, arg, now)
	}
	// 3. The SKU a stock or reserve step asked for.
	if st.Awaiting {
		arg := sku
		if arg == "" {
			arg = strings.TrimSpace(in.Text)
		}
		return f.enter(st, st.Node, arg, now)
	}
	// 4. A fresh session starts; anything else is not understood.
	if st.Node == "" {
		return f.enter(st, f.Start, "", now)
	}
	return f.enter(st, f.Fallback, "", now)
}

// match finds the longest keyword contained in text as whole words.
func (f *Flow) match(text string) *keywordIntent {
	padded := " " + text + " "
	for i := range f.keywords {
		if strings.Contains(padded, " "+f.keywords[i].keyword+" ") {
			return &f.keywords[i]
		}
	}
	return nil
}

// enter moves st to node: its say (with its menu) and its action. arg is a
// stock or reserve step's SKU when the message carried it.
func (f *Flow) enter(st *State, name, arg string, now time.Time) Step {
	n := f.Nodes[name]
	st.Node, st.Awaiting = name, false
	var step Step
	switch n.Action {
	case ActionStock, ActionReserve:
		if arg == "" {
			st.Awaiting = true
			step.Replies = append(step.Replies, f.body(n.Say, n.Menu))
			return step
		}
		st.SKU = arg
		step.Effect = Effect{Kind: n.Action, SKU: arg}
		if n.Action == ActionStock && !f.sku.MatchString(arg) {
			step.Effect = Effect{Kind: n.Action, Query: arg}
		}
		return step
	case ActionHandoff:
		if n.Say != "" {
			step.Replies = append(step.Replies, Text(n.Say))
		}
		if !f.IsOpen(now) {
			step.Replies = append(step.Replies, Text(f.Messages.OutOfHours))
			if !f.Hours.HandoffAnyway {
				return step
			}
		} else {
			step.Replies = append(step.Replies, Text(f.Messages.Handoff))
		}
		st.HandedOff = true
		step.Effect = Effect{Kind: ActionHandoff}
		return step
	}
	step.Replies = append(step.Replies, f.body(n.Say, n.Menu))
	return step
}

// After is the step that follows a stock or reserve step's answer: the
// node's then.
func (f *Flow) After(st *State) Step {
	n := f.Nodes[st.Node]
	if n == nil || n.Then == "" {
		return Step{}
	}
	return f.enter(st, n.Then, "", time.Time{})
}

// Text is a text message body.
func Text(s string) json.RawMessage {
	b, _ := json.Marshal(map[string]string{"text": s})
	return b
}

// Fill replaces each {{key}} of tmpl with vars[key].
func Fill(tmpl string, vars map[string]string) string {
	for k, v := range vars {
		tmpl = strings.ReplaceAll(tmpl, "{{"+k+"}}", v)
	}
	return tmpl
}

// body is say with menu as a WhatsApp interactive message, whose "text"
// fallback lists the options by number (what a web customer types).
func (f *Flow) body(say string, m *Menu) json.RawMessage {
	if m == nil {
		return Text(say)
	}
	fallback := say
	for i, o := range m.Options {
		fallback += fmt.Sprintf("\n%d. %s", i+1, o.Title)
	}
	var action map[string]any
	kind := "button"
	if m.Kind == "list" {
		kind = "list"
		rows := make([]map[string]string, len(m.Options))
		for i, o := range m.Options {
			rows[i] = map[string]string{"id": o.ID, "title": o.Title}
		}
		action = map[string]any{"button": m.Button, "sections": []any{map[string]any{"title": m.Button, "rows": rows}}}
	} else {
		buttons := make([]any, len(m.Options))
		for i, o := range m.Options {
			buttons[i] = map[string]any{"type": "reply", "reply": map[string]string{"id": o.ID, "title": o.Title}}
		}
		action = map[string]any{"buttons": buttons}
	}
	b, _ := json.Marshal(map[string]any{
		"type":        "interactive",
		"interactive": map[string]any{"type": kind, "body": map[string]string{"text": say}, "action": action},
		"text":        fallback,
	})
	return b
}
