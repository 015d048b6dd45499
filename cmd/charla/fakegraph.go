package main

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/rs/zerolog"

	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
)

// defaultFakeGraphAddr is where `charla fakegraph` listens, and what `make
// run` points the engine's --whatsapp-graph-url at.
const defaultFakeGraphAddr = "127.0.0.1:8082"

// fakegraphCmd runs the fake WhatsApp Graph API until SIGTERM or SIGINT:
// sends at /{version}/{phone number id}/messages, media, status webhooks
// posted back to --webhook-url, and the admin endpoints under /admin/ (see
// whatsapp/fakegraph).
func fakegraphCmd(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	sim := simulator{name: "fakegraph"}
	var token, secret, hook string
	var delay int
	fs := sim.settings("CHARLA_FAKEGRAPH", defaultFakeGraphAddr,
		setting{name: "whatsapp-token", env: "CHARLA_WHATSAPP_TOKEN", usage: "bearer token the fake expects; empty = any", value: strVar(&token, ""), secret: true},
		setting{name: "whatsapp-app-secret", env: "CHARLA_WHATSAPP_APP_SECRET", usage: "app secret that signs the webhooks the fake posts", value: strVar(&secret, ""), secret: true},
		setting{name: "webhook-url", env: "CHARLA_FAKEGRAPH_WEBHOOK_URL", usage: "the engine's webhook, where statuses and customer messages go; empty = none", value: strVar(&hook, "")},
		setting{name: "status-delay-ms", env: "CHARLA_FAKEGRAPH_STATUS_DELAY_MS", usage: "pause before each status webhook (sent, delivered, read)", value: intVar(&delay, 500)})
	check := func() (err error) {
		if hook != "" {
			if herr := whatsapp.CheckGraphURL(hook); herr != nil {
				err = errors.Join(err, fmt.Errorf("webhook-url: %v", herr))
			}
			if secret == "" {
				err = errors.Join(err, errors.New("whatsapp-app-secret: required with webhook-url (webhooks are signed)"))
			}
		}
		if delay < 0 {
			err = errors.Join(err, fmt.Errorf("status-delay-ms must not be negative (got %d)", delay))
		}
		return err
	}
	if code, done := sim.parse(fs, args, getenv, stdout, stderr, check); done {
		return code
	}
	if delay == 0 {
		delay = -1 // the plan's 0 means its default
	}
	return sim.run(ctx, stderr, func(ctx context.Context, log zerolog.Logger) error {
		return fakegraph.Run(ctx, sim.addr, fakegraph.Options{Token: token, AppSecret: secret, WebhookURL: hook,
			Statuses: fakegraph.StatusPlan{DelayMS: delay}, Log: log})
	})
}
