package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"charla"
	"charla/media"
	"charla/whatsapp"
	"charla/whatsapp/fakegraph"
)

// simulateCustomer plays a WhatsApp customer: each line of standard input
// (or --text, once) is posted to the engine's webhook as the platform would
// post it, signed with the app secret. "/image FILE [caption]" uploads FILE
// to the fake Graph API and sends it as an image (or document, by its type).
func simulateCustomer(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	var hook, secret, phone, from, name, text, fake string
	fs := flagSet{
		{name: "webhook-url", env: "CHARLA_FAKEGRAPH_WEBHOOK_URL", usage: "the engine's webhook", value: strVar(&hook, "http://"+defaultAddr+"/webhooks/whatsapp")},
		{name: "whatsapp-app-secret", env: "CHARLA_WHATSAPP_APP_SECRET", usage: "the app secret the engine checks signatures with", value: strVar(&secret, ""), secret: true},
		{name: "phone-number-id", env: "CHARLA_WHATSAPP_PHONE_NUMBER_ID", usage: "the business number written to", value: strVar(&phone, "1001")},
		{name: "from", usage: "the customer's wa_id (digits)", value: strVar(&from, "34600000001")},
		{name: "name", usage: "the customer's profile name", value: strVar(&name, "Ana")},
		{name: "text", usage: "send this one message and exit (else: one message per line of stdin)", value: strVar(&text, "")},
		{name: "fakegraph-url", usage: "the fake Graph API, for /image", value: strVar(&fake, "http://"+defaultFakeGraphAddr)},
	}
	err := fs.parse(args, getenv, stdout)
	if errors.Is(err, errHelp) {
		return 0
	}
	errs := flatten(err)
	if secret == "" {
		errs = append(errs, errors.New("whatsapp-app-secret (or CHARLA_WHATSAPP_APP_SECRET) is required"))
	}
	if !isDigits(phone) {
		errs = append(errs, fmt.Errorf("phone-number-id %q: digits only", phone))
	}
	if e := charla.ValidateUserID(from); e != nil || !isDigits(from) {
		errs = append(errs, fmt.Errorf("from %q: a wa_id is digits only", from))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(stderr, "charla simulate-customer: invalid configuration:\n%s\n", indent(err))
		return 2
	}
	c := customer{hook: fakegraph.Webhook{URL: hook, Secret: []byte(secret), HTTP: &http.Client{Timeout: 10 * time.Second}},
		phone: phone, from: from, name: name, fake: strings.TrimRight(fake, "/"), out: stdout}
	if text != "" {
		if err := c.say(ctx, text); err != nil {
			fmt.Fprintf(stderr, "charla simulate-customer: %v\n", err)
			return 1
		}
		return 0
	}
	fmt.Fprintf(stdout, "writing as %s (%s) to business number %s; one message per line, /image FILE [caption] for media\n", name, from, phone)
	lines := bufio.NewScanner(stdin)
	for lines.Scan() {
		if l := strings.TrimSpace(lines.Text()); l != "" {
			if err := c.say(ctx, l); err != nil {
				fmt.Fprintf(stderr, "charla simulate-customer: %v\n", err)
			}
		}
	}
	return 0
}

type customer struct {
	hook                    fakegraph.Webhook
	phone, from, name, fake string
	out                     io.Writer
}

// say posts one line as a message.
func (c customer) say(ctx context.Context, line string) error {
	wamid := fakegraph.NewWAMID(c.from)
	msg := fakegraph.TextMessage(c.from, wamid, time.Now(), line)
	if rest, ok := strings.CutPrefix(line, "/image "); ok {
		path, caption, _ := strings.Cut(strings.TrimSpace(rest), " ")
		var err error
		if msg, err = c.media(ctx, wamid, path, caption); err != nil {
			return err
		}
	}
	p := fakegraph.Payload(fakegraph.Change(c.phone, []whatsapp.Contact{fakegraph.Contact(c.from, c.name)}, []whatsapp.Message{msg}, nil))
	status, err := c.hook.PostPayload(ctx, p)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("the webhook answered %d for %s", status, wamid)
	}
	fmt.Fprintf(c.out, "sent %s (%s)\n", wamid, charla.WhatsAppConv(c.phone, c.from))
	return nil
}

// media uploads the file at path to the fake Graph API and returns the
// message that refers to it.
func (c customer) media(ctx context.Context, wamid, path, caption string) (whatsapp.Message, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return whatsapp.Message{}, err
	}
	typ := http.DetectContentType(data)
	if media.Normalize(typ) != "" {
		typ = media.Normalize(typ)
	}
	id := fmt.Sprintf("sim-%d", time.Now().UnixNano())
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, c.fake+"/admin/media/"+id, bytes.NewReader(data))
	if err != nil {
		return whatsapp.Message{}, err
	}
	req.Header.Set("Content-Type", typ)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return whatsapp.Message{}, fmt.Errorf("upload to the fake Graph API: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return whatsapp.Message{}, fmt.Errorf("upload to the fake Graph API: HTTP %d", resp.StatusCode)
	}
	kind := "document"
	obj := map[string]string{"id": id, "mime_type": typ, "caption": caption}
	if strings.HasPrefix(typ, "image/") {
		kind = "image"
	} else {
		obj["filename"] = filepath.Base(path)
	}
	raw, _ := json.Marshal(obj)
	return fakegraph.NewMessage(c.from, wamid, time.Now(), kind, json.RawMessage(raw)), nil
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
