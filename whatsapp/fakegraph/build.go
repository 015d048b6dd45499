package fakegraph

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"charla/whatsapp"
)

// Builders of webhook payloads as the platform posts them, for the fake's
// status webhooks, `charla simulate-customer`, the tests and the bench.

// NewWAMID returns a message id shaped like the platform's: "wamid." and
// base64 of the recipient's number and 9 random bytes in upper-case hex.
func NewWAMID(waID string) string {
	var r [9]byte
	_, _ = rand.Read(r[:])
	var b bytes.Buffer
	b.Write([]byte{0x1c, 0x18, byte(len(waID))})
	b.WriteString(waID)
	b.Write([]byte{0x15, 0x02, 0x00, 0x11, 0x18, 0x12})
	b.WriteString(strings.ToUpper(hex.EncodeToString(r[:])))
	b.WriteByte(0)
	return "wamid." + base64.StdEncoding.EncodeToString(b.Bytes())
}

// NewMessage builds an inbound message of type typ from customer from, with
// content as the object under typ (for "text": {"body": …}), as parsed from
// the platform's JSON (Raw set).
func NewMessage(from, wamid string, ts time.Time, typ string, content any) whatsapp.Message {
	obj := map[string]any{"from": from, "id": wamid, "timestamp": strconv.FormatInt(ts.Unix(), 10), "type": typ}
	if content != nil {
		obj[typ] = content
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		panic(fmt.Sprintf("fakegraph: message content does not marshal: %v", err))
	}
	var m whatsapp.Message
	if err := json.Unmarshal(raw, &m); err != nil {
		panic(fmt.Sprintf("fakegraph: message does not parse back: %v", err))
	}
	return m
}

// TextMessage is NewMessage of a text.
func TextMessage(from, wamid string, ts time.Time, text string) whatsapp.Message {
	return NewMessage(from, wamid, ts, "text", map[string]string{"body": text})
}

// Change is one change of a payload: what happened on one business number.
func Change(phoneNumberID string, contacts []whatsapp.Contact, msgs []whatsapp.Message, statuses []whatsapp.StatusPayload) whatsapp.Change {
	return whatsapp.Change{Field: "messages", Value: whatsapp.Value{
		MessagingProduct: "whatsapp",
		Metadata:         whatsapp.Metadata{DisplayPhoneNumber: "1555" + phoneNumberID, PhoneNumberID: phoneNumberID},
		Contacts:         contacts, Messages: msgs, Statuses: statuses,
	}}
}

// Contact is a contacts[] element: the customer's profile name.
func Contact(waID, name string) whatsapp.Contact {
	c := whatsapp.Contact{WaID: waID}
	c.Profile.Name = name
	return c
}

// Payload wraps changes in entries, one entry per change, as the platform
// does when it batches.
func Payload(changes ...whatsapp.Change) whatsapp.Payload {
	p := whatsapp.Payload{Object: "whatsapp_business_account"}
	for i, c := range changes {
		p.Entry = append(p.Entry, whatsapp.Entry{ID: "WABA" + strconv.Itoa(100000+i), Changes: []whatsapp.Change{c}})
	}
	return p
}

// Webhook posts signed payloads to a webhook URL as the platform does.
type Webhook struct {
	// URL is the engine's /webhooks/whatsapp.
	URL string
	// Secret is the app secret both sides share.
	Secret []byte
	// HTTP sends the posts; nil means http.DefaultClient.
	HTTP *http.Client
}

// Post signs body and posts it; it returns the HTTP status.
func (w Webhook) Post(ctx context.Context, body []byte) (int, error) {
	return w.PostSigned(ctx, body, whatsapp.Sign(w.Secret, body))
}

// PostSigned posts body with signature as its X-Hub-Signature-256 ("" for
// none), for tests of wrong signatures.
func (w Webhook) PostSigned(ctx context.Context, body []byte, signature string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set(whatsapp.SignatureHeader, signature)
	}
	c := w.HTTP
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("webhook: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	return resp.StatusCode, nil
}

// PostPayload marshals p and posts it (see Post).
func (w Webhook) PostPayload(ctx context.Context, p whatsapp.Payload) (int, error) {
	body, err := json.Marshal(p)
	if err != nil {
		return 0, fmt.Errorf("webhook: encode: %w", err)
	}
	return w.Post(ctx, body)
}
