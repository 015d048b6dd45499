package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os/signal"
	"syscall"

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
	var addr, token, secret, hook, logFormat string
	var delay int
	fs := flagSet{
		{name: "addr", env: "CHARLA_FAKEGRAPH_ADDR", usage: "listen address (host:port)", value: strVar(&addr, defaultFakeGraphAddr)},
		{name: "whatsapp-token", env: "CHARLA_WHATSAPP_TOKEN", usage: "bearer token the fake expects; empty = any", value: strVar(&token, ""), secret: true},
		{name: "whatsapp-app-secret", env: "CHARLA_WHATSAPP_APP_SECRET", usage: "app secret that signs the webhooks the fake posts", value: strVar(&secret, ""), secret: true},
		{name: "webhook-url", env: "CHARLA_FAKEGRAPH_WEBHOOK_URL", usage: "the engine's webhook, where statuses and customer messages go; empty = none", value: strVar(&hook, "")},
		{name: "status-delay-ms", env: "CHARLA_FAKEGRAPH_STATUS_DELAY_MS", usage: "pause before each status webhook (sent, delivered, read)", value: intVar(&delay, 500)},
		{name: "log-format", env: "CHARLA_LOG_FORMAT", usage: "json or console", value: strVar(&logFormat, "console")},
	}
	err := fs.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	if _, _, aerr := net.SplitHostPort(addr); aerr != nil {
		err = errors.Join(err, fmt.Errorf("addr %q: %v", addr, aerr))
	}
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
	if logFormat != "json" && logFormat != "console" {
		err = errors.Join(err, fmt.Errorf("log-format %q: must be json or console", logFormat))
	}
	if err != nil {
		fmt.Fprintf(stderr, "charla fakegraph: invalid configuration:\n%s\n", indent(err))
		return 2
	}
	if delay == 0 {
		delay = -1 // the plan's 0 means its default
	}
	log := config{LogLevel: "info", LogFormat: logFormat}.logger(stderr)
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	o := fakegraph.Options{Token: token, AppSecret: secret, WebhookURL: hook, Statuses: fakegraph.StatusPlan{DelayMS: delay},
		Log: log.With().Str("component", "fakegraph").Logger()}
	if err := fakegraph.Run(ctx, addr, o); err != nil {
		fmt.Fprintf(stderr, "charla fakegraph: %v\n", err)
		return 1
	}
	return 0
}
