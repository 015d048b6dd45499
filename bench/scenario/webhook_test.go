package scenario

import (
	"testing"
	"time"

	"charla/actors"
	"charla/transport"
	"charla/transport/transporttest"
	"charla/whatsapp"
)

// The webhook scenario against the real engine with its WhatsApp channel
// on: every message delivered once to each subscriber, both latencies
// measured; a wrong secret is a failed run, not a pass.
func TestE2EWebhook(t *testing.T) {
	e := transporttest.Start(t,
		transporttest.WithTransport(func(c *transport.Config) {
			c.WhatsApp = whatsapp.Config{AppSecret: "bench-secret", VerifyToken: "v", Token: "t", GraphURL: whatsapp.DefaultGraphURL}
		}),
		transporttest.WithDependencies(func(d *actors.Dependencies) {
			d.Inbound = &actors.Inbound{Store: d.Store.(actors.WebhookStore)}
		}))
	res := runScenario(t, "webhook", Options{Addr: e.Addr, Conns: 20, Convs: 10, Rate: 200, Duration: 2 * time.Second, WebhookSecret: "bench-secret"}, env(t))
	a, d := res.LatencyMS[latWebhookAnswer], res.LatencyMS[latWebhookDeliver]
	t.Logf("answer p50 %.2f p99 %.2f ms; deliver p50 %.2f p99 %.2f ms; %v messages", a.P50, a.P99, d.P50, d.P99, res.Details["webhook_messages"])
	if !res.OK || a.Count == 0 || d.Count != 2*int64(res.Details["webhook_messages"]) {
		t.Fatalf("failures %v details %v (want 2 deliveries per message)", res.Failures, res.Details)
	}
	bad := runScenario(t, "webhook", Options{Addr: e.Addr, Conns: 2, Convs: 1, Rate: 50, Duration: 500 * time.Millisecond, Drain: 300 * time.Millisecond, WebhookSecret: "wrong"}, env(t))
	if bad.OK || bad.Details["webhooks_refused"] == 0 {
		t.Fatalf("a run with the wrong secret passed: %v", bad.Details)
	}
}
