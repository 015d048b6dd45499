package workflow

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"charla"
	"charla/actors"
	"charla/bot"
	"charla/transport/transporttest"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
	"charla/wire"
)

// TestWhatsAppBotFigures is TestBotFigures over the WhatsApp channel: each
// customer message is a signed webhook (one message each) posted to the
// engine, the bot's reply counts when the fake Graph API accepts it (its
// recorded send time). Round one is "hola" (the greeting), round two
// "agente" (a handoff: the agent's conversation frame is timed too).
//
//	CHARLA_BENCH_WORKFLOW_SECONDS=15 go test -run TestWhatsAppBotFigures -v ./bench/workflow/
//
// The business number sends at 1,000 msg/s (WhatsApp's upgraded tier; the
// default 80 would cap the replies, not measure the engine); the fake
// posts no status webhooks.
func TestWhatsAppBotFigures(t *testing.T) {
	secs := env("CHARLA_BENCH_WORKFLOW_SECONDS", 0)
	if secs == 0 {
		t.Skip("set CHARLA_BENCH_WORKFLOW_SECONDS to run")
	}
	rate, customers := env("CHARLA_BENCH_WORKFLOW_RATE", 200), env("CHARLA_BENCH_WORKFLOW_CUSTOMERS", 2000)
	const secret, token, phone = "bench-secret", "bench-token", "15550009999"
	fake, err := fakegraph.New(fakegraph.Options{Token: token, AppSecret: secret, Statuses: fakegraph.StatusPlan{Off: true}})
	if err != nil {
		t.Fatal(err)
	}
	fs := httptest.NewServer(fake.Handler())
	defer fs.Close()
	client, err := whatsapp.NewClient(fs.URL+"/v21.0", token, whatsapp.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer client.CloseIdleConnections()
	flow, err := bot.Parse(bot.Default)
	if err != nil {
		t.Fatal(err)
	}
	flow.Hours = nil
	e := transporttest.Start(t,
		transporttest.WithWhatsApp(whatsapp.Config{AppSecret: secret, VerifyToken: "v", Token: token, GraphURL: fs.URL + "/v21.0"}, client, client),
		transporttest.WithActors(func(c *actors.Config) {
			c.Bot.Flow = flow
			c.AgentCapacity = 1 << 20
			c.WhatsApp.Rate = 1000
		}))
	defer fake.Close()
	agent := e.DialInbox(t, "ana", charla.RoleAgent)
	hook := fakegraph.Webhook{URL: "http://" + e.Addr + "/webhooks/whatsapp", Secret: []byte(secret)}

	var mu sync.Mutex
	handedAt := map[charla.ConvID]time.Time{}
	var handoff []time.Duration
	go func() {
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

	waID := func(i int) string { return fmt.Sprintf("3460%07d", i) }
	type trigger struct {
		to string
		at time.Time
	}
	total := rate * secs
	triggers := make([]trigger, total)
	var failed sync.Map
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // webhooks in flight, as the platform's bounded delivery
	tick := time.NewTicker(time.Second / time.Duration(rate))
	start := time.Now()
	for n := range total {
		<-tick.C
		i := n % customers
		text := "hola"
		if n >= customers {
			text = "agente"
		}
		body, _ := json.Marshal(fakegraph.Payload(fakegraph.Change(phone, nil,
			[]whatsapp.Message{fakegraph.TextMessage(waID(i), fakegraph.NewWAMID(waID(i)), time.Now(), text)}, nil)))
		at := time.Now()
		triggers[n] = trigger{to: waID(i), at: at}
		if text == "agente" {
			mu.Lock()
			handedAt[charla.WhatsAppConv(phone, waID(i))] = at
			mu.Unlock()
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if st, err := hook.Post(context.Background(), body); err != nil || st != http.StatusOK {
				failed.Store(n, fmt.Sprint(st, err))
			}
		}()
		if (n+1)%(rate*2) == 0 {
			t.Logf("%d/%d webhooks posted", n+1, total)
		}
	}
	tick.Stop()
	wg.Wait()
	elapsed := time.Since(start)
	// Replies: the first accepted send to the customer after each trigger
	// (a customer's triggers are a round apart).
	var lat []time.Duration
	deadline := time.Now().Add(30 * time.Second)
	for {
		sent := fake.Sent()
		byTo := map[string][]time.Time{}
		for _, q := range sent {
			byTo[q.To] = append(byTo[q.To], q.At)
		}
		lat = lat[:0]
		for _, tr := range triggers {
			for _, at := range byTo[tr.to] {
				if at.After(tr.at) {
					lat = append(lat, at.Sub(tr.at))
					break
				}
			}
		}
		if len(lat) == total || time.Now().After(deadline) {
			break
		}
		t.Logf("%d of %d replies sent so far", len(lat), total)
		time.Sleep(time.Second)
	}
	nFailed := 0
	failed.Range(func(any, any) bool { nFailed++; return true })
	mu.Lock()
	hs := slices.Clone(handoff)
	mu.Unlock()
	t.Logf("signed webhook → bot reply accepted by the fake Graph API: %d replies of %d messages (%d webhooks refused) in %v (%.0f msg/s) across %d customers: p50 %v, p99 %v, max %v",
		len(lat), total, nFailed, elapsed.Round(time.Millisecond), float64(total)/elapsed.Seconds(), customers, quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
	if len(hs) > 0 {
		t.Logf("handoff (webhook posted) → agent's conversation frame: %d handoffs, p50 %v, p99 %v", len(hs), quantile(hs, 0.5), quantile(hs, 0.99))
	}
}
