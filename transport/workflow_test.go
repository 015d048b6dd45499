package transport_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/bot"
	"charla/soapbridge"
	"charla/soapbridge/soapsim"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/wire"
)

// The chatbot and the agents' workflow end to end, over the web channel
// (a customer on the WebSocket): WhatsApp customers reach the same
// conversation actors through the webhook, and the bot's replies to them
// leave through the WhatsApp outbox (issue 12), which these tests do not
// need.

// startSim runs the real SOAP simulator.
func startSim(t *testing.T) (*soapsim.Server, string) {
	t.Helper()
	s, err := soapsim.New(soapsim.Options{})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		s.Close() // releases hanging calls
		hs.Close()
	})
	return s, hs.URL
}

// say sends text to conv as the client.
func say(c *transporttest.Client, conv charla.ConvID, text string) {
	c.Send(transporttest.SendFrame(conv, uuid.NewString(), text, ""))
}

// botText waits for the bot's next message in conv whose text contains
// want, and returns its text.
func botText(t *testing.T, c *transporttest.Client, want string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f := c.Next(time.Until(deadline))
		if f.Type == wire.TypeError {
			t.Fatalf("error frame %+v", f)
		}
		if f.Type != wire.TypeMsg || f.Sender == nil || f.Sender.Role != charla.RoleBot {
			continue
		}
		var b struct{ Text string }
		_ = json.Unmarshal(f.Body, &b)
		if strings.Contains(b.Text, want) {
			return b.Text
		}
	}
}

// TestBotAgainstTheSOAPSimulator is issue 13, what must be shown 1: a
// customer's "hola" gets the greeting within a second, "stock SKU-00042"
// the simulator's figure; with the simulator hanging, the bot says it is
// checking and then apologises, while another customer's replies are not
// slowed.
func TestBotAgainstTheSOAPSimulator(t *testing.T) {
	sim, url := startSim(t)
	e := transporttest.Start(t, transporttest.WithBot(transporttest.QuickFlow(t), url))
	alice := e.Dial(t, "alice", charla.RoleCustomer)
	alice.Subscribe("alice", 0)

	start := time.Now()
	say(alice, "alice", "hola")
	botText(t, alice, "¡Hola!", transporttest.Wait)
	if d := time.Since(start); d > time.Second {
		t.Errorf("greeting after %v, want within 1s", d)
	}

	client, err := soapbridge.New(url, soapbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	want, err := client.GetStock(t.Context(), "SKU-00042") // the simulator's figure
	if err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	say(alice, "alice", "stock SKU-00042")
	got := botText(t, alice, "SKU-00042", transporttest.Wait)
	if !strings.Contains(got, fmt.Sprintf("%d disponibles", want.Quantity)) || !strings.Contains(got, want.Warehouse) {
		t.Errorf("stock answer %q, want %d in %s", got, want.Quantity, want.Warehouse)
	}

	// The simulator hangs: SKU-00077 is not cached.
	if err := sim.SetFaults(soapsim.Faults{FaultSet: soapsim.FaultSet{Hang: 1}}); err != nil {
		t.Fatal(err)
	}
	say(alice, "alice", "stock SKU-00077")
	botText(t, alice, "consultando", transporttest.Wait)
	bob := e.Dial(t, "bob", charla.RoleCustomer)
	bob.Subscribe("bob", 0)
	start = time.Now()
	say(bob, "bob", "hola")
	botText(t, bob, "¡Hola!", transporttest.Wait)
	if d := time.Since(start); d > time.Second {
		t.Errorf("another customer's greeting took %v while the simulator hangs", d)
	}
	botText(t, alice, "Lo siento", transporttest.Wait)
}

// TestFlowFileChangesTheBot is what must be shown 6 (the validation half is
// cmd/charla's TestInvalidBotFlowListsEveryProblem): a different flow, no
// code change, a different bot.
func TestFlowFileChangesTheBot(t *testing.T) {
	flow, err := bot.Parse([]byte(strings.ReplaceAll(string(bot.Default), "¡Hola! Soy el asistente de la tienda.", "Bienvenido a Ferretería Paco.")))
	if err != nil {
		t.Fatal(err)
	}
	flow.Hours = nil
	e := transporttest.Start(t, transporttest.WithBot(flow, ""))
	c := e.Dial(t, "carla", charla.RoleCustomer)
	c.Subscribe("carla", 0)
	say(c, "carla", "buenas")
	botText(t, c, "Ferretería Paco", transporttest.Wait)
	// No inventory service: the stock step apologises at once.
	say(c, "carla", "stock SKU-00001")
	botText(t, c, "Lo siento", transporttest.Wait)
}

// TestHandoff is what must be shown 2: auto-assignment respects capacity
// and online state; the assigned agent gets the conversation frame and the
// whole history; their reply reaches the customer exactly once.
func TestHandoff(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithBot(transporttest.QuickFlow(t), ""), transporttest.WithActors(func(c *actors.Config) { c.AgentCapacity = 1 }))
	ana := e.DialInbox(t, "ana", charla.RoleAgent)

	cust := e.Dial(t, "dora", charla.RoleCustomer)
	cust.Subscribe("dora", 0)
	say(cust, "dora", "hola")
	botText(t, cust, "¡Hola!", transporttest.Wait)
	f := ana.NextConversation("dora", func(f wire.Frame) bool { return f.Status == "pending" })
	if f.Assignee != "" {
		t.Fatalf("a pending conversation is assigned: %+v", f)
	}
	start := time.Now()
	say(cust, "dora", "quiero hablar con una persona")
	f = ana.NextConversation("dora", func(f wire.Frame) bool { return f.Status == "open" })
	t.Logf("handoff → agent's frame in %v", time.Since(start))
	if f.Assignee != "ana" {
		t.Fatalf("handed off to %q, want ana (online, under capacity)", f.Assignee)
	}
	// The whole history so far: the customer's two messages and the greeting
	// (the bot's handoff line may still be on its way).
	sub := ana.Subscribe("dora", 0)
	msgs := ana.Collect("dora", 0, int(sub.Head))
	if len(msgs) < 3 || msgs[0].Sender.ID != "dora" {
		t.Fatalf("history %d messages, first %+v", len(msgs), msgs[0])
	}
	ana.Send(transporttest.SendFrame("dora", uuid.NewString(), "Hola Dora, soy Ana", "r1"))
	ack := ana.NextOf(wire.TypeAck, transporttest.Wait)
	got := 0
	deadline := time.After(time.Second)
	for done := false; !done; {
		select {
		case f := <-cust.Frames():
			if f.Type == wire.TypeMsg && f.Sender.ID == "ana" {
				got++
				if f.Seq != ack.Seq {
					t.Errorf("the reply has seq %d, its ack %d", f.Seq, ack.Seq)
				}
			}
		case <-deadline:
			done = true
		}
	}
	if got != 1 {
		t.Errorf("the customer got the agent's reply %d times, want 1", got)
	}

	// Ana is full (capacity 1) and nobody else is online: the next handoff
	// waits unassigned, until bea connects.
	eva := e.Dial(t, "eva", charla.RoleCustomer)
	say(eva, "eva", "agente")
	if f := eva.NextOf(wire.TypeAck, transporttest.Wait); f.Seq != 1 {
		t.Fatalf("eva's first message: %+v", f)
	}
	f = ana.NextConversation("eva", func(f wire.Frame) bool { return f.Status == "open" })
	if f.Assignee != "" {
		t.Fatalf("handed off to %q past ana's capacity", f.Assignee)
	}
	bea := e.DialInbox(t, "bea", charla.RoleAgent)
	if f := bea.NextConversation("eva", func(f wire.Frame) bool { return f.Assignee != "" }); f.Assignee != "bea" {
		t.Fatalf("queued conversation went to %q, want bea", f.Assignee)
	}
	// Ana may not act on bea's conversation; an admin may.
	ana.Send(wire.Frame{Type: wire.TypeResolve, Conv: "eva", Ref: "x"})
	if f := ana.NextOf(wire.TypeError, transporttest.Wait); f.Code != charla.CodeForbidden || f.Ref != "x" {
		t.Errorf("ana resolving bea's conversation: %+v", f)
	}
	st, body := transporttest.Do(t, http.MethodPost, e.HTTPURL("/v1/conversations/eva/resolve", "root", charla.RoleAdmin), nil, nil)
	if st != http.StatusOK || !strings.Contains(string(body), `"status":"resolved"`) {
		t.Errorf("admin resolve = %d %s", st, body)
	}
	// The customer writes again: it reopens, pending, for the bot.
	say(eva, "eva", "hola otra vez")
	if f := bea.NextConversation("eva", func(f wire.Frame) bool { return f.Status == "pending" }); f.Assignee != "" {
		t.Errorf("reopened conversation keeps assignee %q", f.Assignee)
	}
}

// TestPresence is what must be shown 5: a reconnect within the grace
// period does not flap; the last connection closing makes the agent
// offline after it.
func TestPresence(t *testing.T) {
	const grace = 700 * time.Millisecond
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) { c.PresenceGrace = grace }))
	watcher := e.DialInbox(t, "watcher", charla.RoleAdmin)
	presence := func(user, state string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			f := watcher.NextOf(wire.TypePresence, time.Until(deadline))
			if f.User == user && f.State == state {
				return
			}
		}
	}
	ana := e.Dial(t, "ana", charla.RoleAgent)
	presence("ana", "online", transporttest.Wait)
	ana.Close()
	time.Sleep(grace / 3)
	ana = e.Dial(t, "ana", charla.RoleAgent)
	watcher.NoFrame(wire.TypePresence, grace+500*time.Millisecond)
	ana.Send(wire.Frame{Type: wire.TypePresence, State: "away"})
	presence("ana", "away", transporttest.Wait)
	start := time.Now()
	ana.Close()
	presence("ana", "offline", transporttest.Wait)
	if d := time.Since(start); d < grace {
		t.Errorf("offline after %v, before the %v grace", d, grace)
	}
}

// cutProxy is a TCP proxy whose connections a test cuts at will.
type cutProxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c); u.Close() }()
			go func() { _, _ = io.Copy(c, u); c.Close() }()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestReconnectSeesEverything is what must be shown 4: an agent whose
// connection a proxy cuts reconnects and, with changed_since (the
// conversations) and since (their messages), sees every change and every
// message of the meantime, exactly once.
func TestReconnectSeesEverything(t *testing.T) {
	e := transporttest.Start(t, transporttest.WithBot(transporttest.QuickFlow(t), ""))
	proxy := newCutProxy(t, e.Addr)
	dial := func() *transporttest.Client {
		c, err := transporttest.DialURL(t, "ws://"+proxy.ln.Addr().String()+"/v1/ws?user=ana&role=agent", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(wire.Frame{Type: wire.TypeInbox, Ref: "in"})
		c.NextOf(wire.TypeInbox, transporttest.Wait)
		return c
	}
	ana := dial()
	customers := []charla.ConvID{"c1", "c2", "c3"}
	cust := map[charla.ConvID]*transporttest.Client{}
	for _, conv := range customers {
		cust[conv] = e.Dial(t, string(conv), charla.RoleCustomer)
		say(cust[conv], conv, "hola")
	}
	// What ana has seen: the highest version, and each conversation's head.
	var version uint64
	heads := map[charla.ConvID]charla.Seq{}
	for len(heads) < len(customers) {
		f := ana.NextOf(wire.TypeConversation, transporttest.Wait)
		version = max(version, f.Version)
		if f.Head >= 2 { // the greeting is in
			heads[f.Conv] = f.Head
		}
	}
	proxy.cut()
	<-ana.Done()
	// Meanwhile: messages, a handoff, a new conversation.
	say(cust["c1"], "c1", "stock")
	say(cust["c2"], "c2", "agente")
	cust["c4"] = e.Dial(t, "c4", charla.RoleCustomer)
	say(cust["c4"], "c4", "hola")
	time.Sleep(500 * time.Millisecond)

	ana = dial()
	st, body := transporttest.Do(t, http.MethodGet, e.HTTPURL(fmt.Sprintf("/v1/conversations?changed_since=%d", version), "ana", charla.RoleAgent), nil, nil)
	if st != http.StatusOK {
		t.Fatalf("changed_since = %d %s", st, body)
	}
	var list transport.ConversationList
	if err := json.Unmarshal(body, &list); err != nil {
		t.Fatal(err)
	}
	changed := map[charla.ConvID]wire.Conversation{}
	for _, c := range list.Conversations {
		if _, dup := changed[c.Conv]; dup {
			t.Errorf("%s listed twice", c.Conv)
		}
		changed[c.Conv] = c
	}
	for _, conv := range []charla.ConvID{"c1", "c2", "c4"} {
		if _, ok := changed[conv]; !ok {
			t.Errorf("%s changed while ana was away but is not in changed_since=%d: %s", conv, version, body)
		}
	}
	if _, ok := changed["c3"]; ok {
		t.Errorf("c3 did not change but is listed")
	}
	if changed["c2"].Status != "open" {
		t.Errorf("c2 after its handoff: %+v", changed["c2"])
	}
	// since per conversation: exactly the messages ana has not seen.
	for conv, c := range changed {
		sub := ana.Subscribe(conv, heads[conv])
		if sub.Head != c.Head && sub.Head < c.Head {
			t.Errorf("%s: head %d, the list said %d", conv, sub.Head, c.Head)
		}
		msgs := ana.Collect(conv, heads[conv], int(sub.Head-heads[conv]))
		if len(msgs) == 0 {
			t.Errorf("%s: no message of the meantime", conv)
		}
	}
}

// TestBotStockByProductName: the bot looks stock up by product name through
// the simulator's SearchProducts: one match answers its stock, several are
// listed and the customer picks one by SKU, none is not found; a hanging
// search gets "checking" and then the apology.
func TestBotStockByProductName(t *testing.T) {
	sim, url := startSim(t)
	e := transporttest.Start(t, transporttest.WithBot(transporttest.QuickFlow(t), url))
	client, err := soapbridge.New(url, soapbridge.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	item, err := client.GetStock(t.Context(), "SKU-00042")
	if err != nil {
		t.Fatal(err)
	}
	one, err := client.SearchProducts(t.Context(), item.Name, 1)
	if err != nil || one.Total != 1 {
		t.Fatalf("the simulator's search for %q: %+v %v, want one match", item.Name, one, err)
	}
	word := strings.Fields(item.Name)[2] // a noun many products share
	many, err := client.SearchProducts(t.Context(), word, 1)
	if err != nil || many.Total < 2 {
		t.Fatalf("the simulator's search for %q: total %d %v, want several", word, many.Total, err)
	}

	c := e.Dial(t, "pia", charla.RoleCustomer)
	c.Subscribe("pia", 0)
	say(c, "pia", "stock de "+item.Name)
	if got := botText(t, c, "SKU-00042", transporttest.Wait); !strings.Contains(got, fmt.Sprintf("%d disponibles en %s", item.Quantity, item.Warehouse)) {
		t.Errorf("stock by name %q answered %q, want %d in %s", item.Name, got, item.Quantity, item.Warehouse)
	}

	say(c, "pia", "disponibilidad "+word)
	list := botText(t, c, fmt.Sprintf("Encontré %d productos", many.Total), transporttest.Wait)
	pick := many.Products[1]
	if !strings.Contains(list, fmt.Sprintf("%s — %s: %d", pick.SKU, pick.Name, pick.Quantity)) {
		t.Fatalf("the list %q does not show %+v", list, pick)
	}
	say(c, "pia", pick.SKU)
	botText(t, c, fmt.Sprintf("(%s): %d disponibles", pick.SKU, pick.Quantity), transporttest.Wait)

	say(c, "pia", "stock unobtainium")
	botText(t, c, "No encuentro «unobtainium»", transporttest.Wait)

	// Two customers asking for the same name while the search is slow
	// share one SearchProducts call.
	if err := sim.SetFaults(soapsim.Faults{Operations: map[string]soapsim.FaultSet{soapbridge.OpSearchProducts: {LatencyMS: 1000}}}); err != nil {
		t.Fatal(err)
	}
	other := strings.Fields(item.Name)[1] // the material
	before := sim.Stats().Calls[soapbridge.OpSearchProducts]
	quim := e.Dial(t, "quim", charla.RoleCustomer)
	quim.Subscribe("quim", 0)
	say(c, "pia", "stock "+other)
	say(quim, "quim", "stock "+other)
	botText(t, c, "productos con «"+strings.ToLower(other)+"»", transporttest.Wait)
	botText(t, quim, "productos con «"+strings.ToLower(other)+"»", transporttest.Wait)
	if n := sim.Stats().Calls[soapbridge.OpSearchProducts] - before; n != 1 {
		t.Errorf("two identical searches made %d calls, want 1 (shared)", n)
	}

	// A hanging search: "checking", then the apology; the bot still
	// answers what follows.
	if err := sim.SetFaults(soapsim.Faults{Operations: map[string]soapsim.FaultSet{soapbridge.OpSearchProducts: {Hang: 1}}}); err != nil {
		t.Fatal(err)
	}
	say(c, "pia", "stock "+word)
	botText(t, c, "consultando", transporttest.Wait)
	botText(t, c, "Lo siento", transporttest.Wait)
	say(c, "pia", "hola")
	botText(t, c, "¡Hola!", transporttest.Wait)
}
