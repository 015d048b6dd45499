package transporttest

import (
	"charla/actors"
	"charla/transport"
	"charla/whatsapp"
)

// WithWhatsApp turns the WhatsApp channel on both ways: webhooks at
// /webhooks/whatsapp checked against cfg (its app secret and verify
// token), inbound media fetched with client, outbound messages sent through
// graph (client itself, or a wrapper that loses answers).
func WithWhatsApp(cfg whatsapp.Config, client *whatsapp.Client, graph actors.GraphSender) Option {
	return func(o *options) {
		WithTransport(func(c *transport.Config) { c.WhatsApp = cfg })(o)
		WithDependencies(func(d *actors.Dependencies) {
			d.Inbound = &actors.Inbound{Store: d.Store.(actors.WebhookStore), Graph: client}
			d.Graph = graph
		})(o)
	}
}
