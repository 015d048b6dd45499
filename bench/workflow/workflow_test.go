// Package workflow holds the chatbot's and the inbox's figures (issue 13):
// customer message → bot reply at a steady rate across many customers,
// and handoff → the agent's conversation frame. It runs only when
// CHARLA_BENCH_WORKFLOW_SECONDS is set (a load run, not a unit test):
//
//	CHARLA_BENCH_WORKFLOW_SECONDS=10 go test -run TestBotFigures -v ./bench/workflow/
//
// CHARLA_BENCH_WORKFLOW_RATE (200 msg/s) and _CUSTOMERS (2,000) change the
// load. The engine runs in-process with the embedded store, customers and
// the agent are WebSocket clients on loopback; a figure from a shared
// machine is indicative only.
package workflow

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"charla"
	"charla/actors"
	"charla/bot"
	"charla/transport/transporttest"
	"charla/wire"
)

func env(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func TestBotFigures(t *testing.T) {
	secs := env("CHARLA_BENCH_WORKFLOW_SECONDS", 0)
	if secs == 0 {
		t.Skip("set CHARLA_BENCH_WORKFLOW_SECONDS to run")
	}
	rate, customers := env("CHARLA_BENCH_WORKFLOW_RATE", 200), env("CHARLA_BENCH_WORKFLOW_CUSTOMERS", 2000)
	flow, err := bot.Parse(bot.Default)
	if err != nil {
		t.Fatal(err)
	}
	flow.Hours = nil
	e := transporttest.Start(t, transporttest.WithActors(func(c *actors.Config) {
		c.Bot.Flow = flow
		c.AgentCapacity = 1 << 20
		c.MaxSubscriptions = customers + 10
	}))
	agent := e.Dial(t, "ana", charla.RoleAgent)
	agent.Send(wire.Frame{Type: wire.TypeInbox})
	agent.NextOf(wire.TypeInbox, transporttest.Wait)

	// Customers connect and subscribe to their conversation.
	clients := make([]*transporttest.Client, customers)
	for i := range clients {
		conv := charla.ConvID(fmt.Sprintf("cust%05d", i))
		for attempt := 0; ; attempt++ {
			c, err := transporttest.DialURL(t, e.URL(string(conv), charla.RoleCustomer), nil)
			if err == nil {
				clients[i] = c
				break
			}
			if attempt == 5 {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond) // a loaded machine's accept backlog
		}
		clients[i].Subscribe(conv, 0)
		if (i+1)%500 == 0 {
			t.Logf("%d customers connected", i+1)
		}
	}
	// The agent's frames: handoff → frame, by conversation.
	var mu sync.Mutex
	handedAt := map[charla.ConvID]time.Time{}
	var handoff []time.Duration
	agentDone := make(chan struct{})
	go func() {
		defer close(agentDone)
		for f := range agent.Frames() {
			if f.Type == wire.TypeConversation && f.Status == "open" {
				mu.Lock()
				if at, ok := handedAt[f.Conv]; ok {
					handoff = append(handoff, time.Since(at))
					delete(handedAt, f.Conv)
				}
				mu.Unlock()
			}
		}
	}()

	send := func(i int, text string) time.Time {
		conv := charla.ConvID(fmt.Sprintf("cust%05d", i))
		at := time.Now()
		clients[i].Send(transporttest.SendFrame(conv, uuid.NewString(), text, ""))
		return at
	}
	// A customer's reply: the first bot message after the send.
	replyIn := func(i int, at time.Time) (time.Duration, bool) {
		deadline := time.After(30 * time.Second)
		for {
			select {
			case f := <-clients[i].Frames():
				if f.Type == wire.TypeMsg && f.Sender != nil && f.Sender.Role == charla.RoleBot {
					return time.Since(at), true
				}
			case <-deadline:
				return 0, false
			}
		}
	}
	total := rate * secs
	lat := make([]time.Duration, 0, total)
	var latMu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	start := time.Now()
	for n := 0; n < total; n++ {
		<-tick.C
		i := n % customers
		text := "hola"
		if n >= customers { // second round: ask for a person
			text = "agente"
		}
		at := send(i, text)
		if text == "agente" {
			mu.Lock()
			handedAt[charla.ConvID(fmt.Sprintf("cust%05d", i))] = at
			mu.Unlock()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, ok := replyIn(i, at); ok {
				latMu.Lock()
				lat = append(lat, d)
				latMu.Unlock()
			}
		}()
		if (n+1)%(rate*2) == 0 {
			t.Logf("%d/%d messages sent", n+1, total)
		}
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(start)
	time.Sleep(time.Second)
	mu.Lock()
	hs := slices.Clone(handoff)
	mu.Unlock()
	t.Logf("customer message → bot reply: %d replies of %d messages in %v (%.0f msg/s) across %d customers: p50 %v, p99 %v, max %v",
		len(lat), total, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), customers, quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
	if len(hs) > 0 {
		t.Logf("handoff (customer's message) → agent's conversation frame: %d handoffs, p50 %v, p99 %v", len(hs), quantile(hs, 0.5), quantile(hs, 0.99))
	}
}

// quantile is the p-quantile of ds (which it sorts), 0 for none.
func quantile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return ds[min(len(ds)-1, int(p*float64(len(ds))))]
}
