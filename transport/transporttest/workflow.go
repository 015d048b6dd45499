package transporttest

import (
	"fmt"
	"testing"
	"time"

	"charla"
	"charla/actors"
	"charla/bot"
	"charla/wire"
)

// QuickFlow is the default chatbot flow with quick lookups ("checking"
// after 300ms, an apology after 3s) and no opening hours, so that tests
// run at any hour.
func QuickFlow(t testing.TB) *bot.Flow {
	t.Helper()
	f, err := bot.Parse(bot.Default)
	if err != nil {
		t.Fatal(err)
	}
	f.Hours = nil
	f.CheckingAfter, f.GiveUpAfter = bot.Duration(300*time.Millisecond), bot.Duration(3*time.Second)
	return f
}

// WithBot turns the chatbot on with flow, its inventory at soapURL ("" for
// none), one try per call and a long call timeout (the flow's own timers
// decide when the bot gives up).
func WithBot(flow *bot.Flow, soapURL string) Option {
	return WithActors(func(c *actors.Config) {
		c.Bot.Flow = flow
		c.SOAP.URL = soapURL
		c.SOAP.Timeout = 20 * time.Second
		c.SOAP.Retries = 0
	})
}

// DialInbox dials user with role and subscribes to the inbox (the
// `conversation` frames of what user may see).
func (e *Engine) DialInbox(t testing.TB, user string, role charla.Role) *Client {
	t.Helper()
	c := e.Dial(t, user, role)
	c.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
	if f := c.NextOf(wire.TypeInbox, Wait); f.Ref != "in" {
		t.Fatalf("inbox answer %+v", f)
	}
	return c
}

// NextConversation waits for conv's next conversation frame matching ok,
// skipping other frames.
func (c *Client) NextConversation(conv charla.ConvID, ok func(wire.Frame) bool) wire.Frame {
	c.t.Helper()
	var seen []string
	deadline := time.After(Wait)
	for {
		select {
		case f := <-c.frames:
			if f.Type != wire.TypeConversation {
				continue
			}
			if f.Conv == conv && ok(f) {
				return f
			}
			seen = append(seen, fmt.Sprintf("%s:%s:%s:v%d", f.Conv, f.Status, f.Assignee, f.Version))
		case <-deadline:
			c.t.Fatalf("no such conversation frame of %s; saw %v", conv, seen)
			return wire.Frame{}
		}
	}
}
