// Package bot is the chatbot's flow: the data that says what the bot
// answers (greeting, menus, keyword intents in Spanish and English, stock and
// reserve steps, handoff to people, opening hours), its validation, and the
// pure state machine that turns a customer's message into replies and one
// effect for the engine to carry out (actors/botsession.go runs it).
//
// The flow is a YAML (or JSON, which is YAML) file: --bot-flow, or the
// embedded default.yaml. Parse lists every problem of a file at once.
package bot

import (
	_ "embed"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Default is the flow shipped with the engine.
//
//go:embed default.yaml
var Default []byte

// Actions a node may run.
const (
	ActionStock   = "stock"   // look up an item (the argument: a SKU)
	ActionReserve = "reserve" // reserve one unit of an item (the argument: a SKU)
	ActionHandoff = "handoff" // hand the conversation to people
)

// Resume modes: what a message after a session expired starts with.
const (
	ResumeContext  = "context"  // where the session was
	ResumeGreeting = "greeting" // the start node, as a fresh session
)

// WhatsApp's limits on interactive messages.
const (
	maxButtons     = 3
	maxButtonTitle = 20
	maxListRows    = 10
	maxRowTitle    = 24
)

// Flow is a parsed, valid flow. Its fields are what the file says.
type Flow struct {
	Start    string `yaml:"start"`    // the node of a fresh session
	Fallback string `yaml:"fallback"` // the node when nothing matches
	Resume   string `yaml:"resume"`   // ResumeContext or ResumeGreeting
	// SKUPattern finds a SKU in a message ("stock ABC-123").
	SKUPattern string `yaml:"sku_pattern"`
	// CheckingAfter: a lookup slower than this gets Messages.Checking
	// first; GiveUpAfter: one slower than this gets Messages.Apology.
	CheckingAfter Duration         `yaml:"checking_after"`
	GiveUpAfter   Duration         `yaml:"give_up_after"`
	Hours         *Hours           `yaml:"hours"`
	Messages      Messages         `yaml:"messages"`
	Intents       []Intent         `yaml:"intents"`
	Nodes         map[string]*Node `yaml:"nodes"`
	sku           *regexp.Regexp   // SKUPattern, compiled
	keywords      []keywordIntent  // every intent keyword, normalised, longest first
	loc           *time.Location   // Hours.Timezone
	days          map[time.Weekday]bool
	open, close   int // minutes after midnight
}

// Hours is when people answer; a handoff outside them says
// Messages.OutOfHours (and still queues the conversation when
// HandoffAnyway is set).
type Hours struct {
	Timezone      string   `yaml:"timezone"`
	Days          []string `yaml:"days"` // mon, tue, ...
	Open          string   `yaml:"open"` // "09:00"
	Close         string   `yaml:"close"`
	HandoffAnyway bool     `yaml:"handoff_anyway"`
}

// Messages are the bot's fixed texts. Placeholders ({{name}}) are filled
// from what the step found.
type Messages struct {
	Checking   string `yaml:"checking"`
	Apology    string `yaml:"apology"`
	Stock      string `yaml:"stock"`       // {{name}} {{sku}} {{quantity}} {{warehouse}}
	StockStale string `yaml:"stock_stale"` // the same and {{age}}
	NotFound   string `yaml:"not_found"`   // {{query}}
	// Matches answers a product-name search that found several products
	// (the session then waits for one's SKU); default "{{list}}".
	Matches    string `yaml:"matches"`  // {{query}} {{count}} {{list}} (a line per product: SKU, name, quantity)
	Reserved   string `yaml:"reserved"` // {{sku}} {{quantity}} {{reservation}}
	Handoff    string `yaml:"handoff"`
	OutOfHours string `yaml:"out_of_hours"`
}

// Intent sends a message containing one of its keywords to a node.
type Intent struct {
	Name     string   `yaml:"name"`
	Keywords []string `yaml:"keywords"`
	Goto     string   `yaml:"goto"`
}

// Node is one step of the flow.
type Node struct {
	Say    string `yaml:"say"`
	Menu   *Menu  `yaml:"menu"`
	Action string `yaml:"action"` // "", ActionStock, ActionReserve, ActionHandoff
	// Then is the node after the action's answer (stock, reserve).
	Then string `yaml:"then"`
}

// Menu is a node's choices: WhatsApp reply buttons (kind buttons) or a
// list (kind list, opened by Button).
type Menu struct {
	Kind    string   `yaml:"kind"`
	Button  string   `yaml:"button"`
	Options []Option `yaml:"options"`
}

// Option is one choice of a menu.
type Option struct {
	ID    string `yaml:"id"`
	Title string `yaml:"title"`
	Goto  string `yaml:"goto"`
}

// Duration is a time.Duration written as "1s", "500ms".
type Duration time.Duration

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %q is not a duration (like 1s or 500ms)", n.Line, n.Value)
	}
	*d = Duration(v)
	return nil
}

type keywordIntent struct {
	keyword string
	intent  *Intent
}

// Parse reads and validates a flow; the error lists every problem.
func Parse(data []byte) (*Flow, error) {
	var f Flow
	dec := yaml.NewDecoder(strings.NewReader(string(data)))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, &FlowError{Problems: []error{err}}
	}
	if errs := f.validate(); len(errs) > 0 {
		return nil, &FlowError{Problems: errs}
	}
	return &f, nil
}

// FlowError is every problem of an invalid flow.
type FlowError struct{ Problems []error }

func (e *FlowError) Error() string {
	return fmt.Sprintf("bot flow: %d problems: %v", len(e.Problems), errors.Join(e.Problems...))
}

// Unwrap returns the problems, one error each.
func (e *FlowError) Unwrap() []error { return e.Problems }

var dayNames = map[string]time.Weekday{"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday}

func (f *Flow) validate() []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	node := func(where, name string) {
		if name == "" {
			bad("%s: a node name is required", where)
		} else if f.Nodes[name] == nil {
			bad("%s: no node %q", where, name)
		}
	}
	if len(f.Nodes) == 0 {
		bad("nodes: at least one node is required")
	}
	node("start", f.Start)
	node("fallback", f.Fallback)
	switch f.Resume {
	case ResumeContext, ResumeGreeting:
	case "":
		f.Resume = ResumeContext
	default:
		bad("resume: %q must be %q or %q", f.Resume, ResumeContext, ResumeGreeting)
	}
	if f.SKUPattern == "" {
		bad("sku_pattern: required (a regular expression that finds a SKU in a message)")
	} else if re, err := regexp.Compile(f.SKUPattern); err != nil {
		bad("sku_pattern: %v", err)
	} else {
		f.sku = re
	}
	if f.CheckingAfter <= 0 {
		bad("checking_after: must be positive")
	}
	if f.GiveUpAfter <= f.CheckingAfter {
		bad("give_up_after (%s) must be longer than checking_after (%s)", time.Duration(f.GiveUpAfter), time.Duration(f.CheckingAfter))
	}
	for _, m := range []struct{ name, text string }{{"checking", f.Messages.Checking}, {"apology", f.Messages.Apology},
		{"stock", f.Messages.Stock}, {"not_found", f.Messages.NotFound}, {"reserved", f.Messages.Reserved}, {"handoff", f.Messages.Handoff}} {
		if strings.TrimSpace(m.text) == "" {
			bad("messages.%s: required", m.name)
		}
	}
	if f.Messages.StockStale == "" {
		f.Messages.StockStale = f.Messages.Stock
	}
	if f.Messages.Matches == "" {
		f.Messages.Matches = "{{list}}"
	}
	errs = append(errs, f.validateHours()...)
	seen := map[string]string{}
	for i := range f.Intents {
		in := &f.Intents[i]
		where := fmt.Sprintf("intents[%d] (%s)", i, in.Name)
		if in.Name == "" {
			bad("intents[%d]: name is required", i)
		}
		if len(in.Keywords) == 0 {
			bad("%s: at least one keyword is required", where)
		}
		node(where+".goto", in.Goto)
		for _, k := range in.Keywords {
			nk := Normalize(k)
			if nk == "" {
				bad("%s: an empty keyword", where)
				continue
			}
			if other, dup := seen[nk]; dup {
				bad("%s: keyword %q is also intent %s's", where, k, other)
			}
			seen[nk] = in.Name
			f.keywords = append(f.keywords, keywordIntent{keyword: nk, intent: in})
		}
	}
	slices.SortStableFunc(f.keywords, func(a, b keywordIntent) int { return len(b.keyword) - len(a.keyword) })
	names := make([]string, 0, len(f.Nodes))
	for name := range f.Nodes {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		n := f.Nodes[name]
		where := "nodes." + name
		if n == nil {
			bad("%s: empty node", where)
			continue
		}
		switch n.Action {
		case "", ActionHandoff:
			if n.Then != "" {
				bad("%s.then: only stock and reserve steps have a then", where)
			}
		case ActionStock, ActionReserve:
			if n.Say == "" {
				bad("%s.say: a %s step must ask for its SKU", where, n.Action)
			}
			node(where+".then", n.Then)
		default:
			bad("%s.action: %q must be stock, reserve or handoff", where, n.Action)
		}
		if n.Say == "" && n.Action == "" {
			bad("%s: says nothing and does nothing", where)
		}
		if n.Menu != nil {
			errs = append(errs, f.validateMenu(where+".menu", n.Menu, node)...)
		}
	}
	return errs
}

func (f *Flow) validateMenu(where string, m *Menu, node func(where, name string)) []error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	maxOpts, maxTitle := maxButtons, maxButtonTitle
	switch m.Kind {
	case "buttons":
	case "list":
		maxOpts, maxTitle = maxListRows, maxRowTitle
		if m.Button == "" || len([]rune(m.Button)) > maxButtonTitle {
			bad("%s.button: a list needs a button label of 1 to %d characters", where, maxButtonTitle)
		}
	default:
		bad("%s.kind: %q must be buttons or list", where, m.Kind)
	}
	if len(m.Options) == 0 || len(m.Options) > maxOpts {
		bad("%s.options: %d options; a %s menu has 1 to %d", where, len(m.Options), m.Kind, maxOpts)
	}
	ids := map[string]bool{}
	for i, o := range m.Options {
		ow := fmt.Sprintf("%s.options[%d]", where, i)
		if o.ID == "" || ids[o.ID] {
			bad("%s.id: required and unique in the menu (got %q)", ow, o.ID)
		}
		ids[o.ID] = true
		if o.Title == "" || len([]rune(o.Title)) > maxTitle {
			bad("%s.title: %q must be 1 to %d characters (WhatsApp's limit)", ow, o.Title, maxTitle)
		}
		node(ow+".goto", o.Goto)
	}
	return errs
}

func (f *Flow) validateHours() []error {
	h := f.Hours
	if h == nil {
		return nil
	}
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	loc, err := time.LoadLocation(h.Timezone)
	if h.Timezone == "" || err != nil {
		bad("hours.timezone: %q is not a time zone (like Europe/Madrid)", h.Timezone)
	}
	f.loc = loc
	f.days = map[time.Weekday]bool{}
	for _, d := range h.Days {
		wd, ok := dayNames[strings.ToLower(d)]
		if !ok {
			bad("hours.days: %q is not a day (mon, tue, wed, thu, fri, sat, sun)", d)
		}
		f.days[wd] = true
	}
	if len(h.Days) == 0 {
		bad("hours.days: at least one day is required")
	}
	clock := func(name, v string) int {
		t, err := time.Parse("15:04", v)
		if err != nil {
			bad("hours.%s: %q is not a time of day (like 09:00)", name, v)
			return 0
		}
		return t.Hour()*60 + t.Minute()
	}
	f.open, f.close = clock("open", h.Open), clock("close", h.Close)
	if f.open >= f.close && h.Open != "" && h.Close != "" {
		bad("hours: open (%s) must be before close (%s)", h.Open, h.Close)
	}
	if strings.TrimSpace(f.Messages.OutOfHours) == "" {
		bad("messages.out_of_hours: required with hours")
	}
	return errs
}

// IsOpen reports whether people answer at t (always, without hours).
func (f *Flow) IsOpen(t time.Time) bool {
	if f.Hours == nil {
		return true
	}
	t = t.In(f.loc)
	m := t.Hour()*60 + t.Minute()
	return f.days[t.Weekday()] && m >= f.open && m < f.close
}

// Normalize lower-cases s, strips Spanish accents and collapses spaces, so
// that "Hablar con una PERSONA" matches the keyword "persona" and "día"
// matches "dia".
func Normalize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch r {
		case 'á', 'à', 'ä':
			r = 'a'
		case 'é', 'è', 'ë':
			r = 'e'
		case 'í', 'ï':
			r = 'i'
		case 'ó', 'ö':
			r = 'o'
		case 'ú', 'ü':
			r = 'u'
		case '¿', '¡', '?', '!', ',', '.', ';', ':':
			r = ' '
		}
		b.WriteRune(r)
	}
	return strings.Join(strings.Fields(b.String()), " ")
}
