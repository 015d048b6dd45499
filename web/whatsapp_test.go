package web_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// TestWhatsAppInPanel: a customer writes on WhatsApp (the fake Graph API
// posts a signed webhook to the engine); the conversation appears in the
// agent's inbox by itself (a conversation frame), the agent takes it and
// replies, optimistically; once the binary sends WhatsApp replies, the
// reply goes to the Graph API once and its tick follows WhatsApp's
// statuses (wa_status frames) up to read.
func TestWhatsAppInPanel(t *testing.T) {
	ctx := browser(t)
	const (
		appSecret = "fake-app-secret"
		phoneID   = "100200300"
		waID      = "34600111222"
	)
	dataDir := t.TempDir()
	addAgent(t, dataDir, "ana@example.com", "Ana", "agent", "correct horse battery")
	engineAddr, graphAddr := freeAddr(t), freeAddr(t)
	graph := exec.Command(binary, "fakegraph", "--addr", graphAddr, "--whatsapp-app-secret", appSecret,
		"--webhook-url", "http://"+engineAddr+"/webhooks/whatsapp", "--status-delay-ms", "200")
	if err := graph.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = graph.Process.Kill(); _ = graph.Wait() })
	e := startEngineAt(t, engineAddr, dataDir, "--auth-mode", "jwt", "--jwt-secret", jwtSecret, "--bot-flow", "off",
		"--whatsapp-app-secret", appSecret, "--whatsapp-verify-token", "fake-verify", "--whatsapp-token", "fake-token", "--whatsapp-phone-number-id", phoneID,
		"--whatsapp-graph-url", "http://"+graphAddr+"/v21.0")
	signIn(t, ctx, "http://"+e.Addr, "ana@example.com")

	// The customer writes on WhatsApp: the conversation comes to the inbox by itself.
	inbound := fmt.Sprintf(`{"phone_number_id":%q,"from":%q,"name":"Lucía","text":"Hola, escribo por WhatsApp"}`, phoneID, waID)
	var answer struct{ Status int }
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		r, err := http.Post("http://"+graphAddr+"/admin/inbound", "application/json", strings.NewReader(inbound))
		if err == nil {
			err = json.NewDecoder(r.Body).Decode(&answer)
			r.Body.Close()
		}
		if err == nil && answer.Status == http.StatusOK || time.Now().After(deadline) {
			break
		}
	}
	if answer.Status != http.StatusOK {
		t.Fatalf("the engine answered the webhook %d", answer.Status)
	}
	conv := fmt.Sprintf("wa.%s:%s", waID, phoneID)
	row := fmt.Sprintf(`#conv-list li[data-conv=%q]`, conv)
	waitJS(t, ctx, 15*time.Second, "the conversation in the inbox", fmt.Sprintf(`document.querySelector(%q) !== null`, row))
	click(t, ctx, 10*time.Second, row)
	run(t, ctx, 10*time.Second, chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	waitJS(t, ctx, 10*time.Second, "the WhatsApp message", `[...document.querySelectorAll("#messages li")].some((li) => li.firstChild.textContent === "Hola, escribo por WhatsApp")`)

	// The agent takes it and replies; the reply is ticked as WhatsApp reports it.
	click(t, ctx, 5*time.Second, `[data-action=take]`)
	waitJS(t, ctx, 10*time.Second, "taken", `document.querySelector("#conv-assignee").textContent === "assigned to you"`)
	reply := "¡Hola Lucía! ¿En qué te ayudo?"
	run(t, ctx, 10*time.Second, chromedp.SendKeys(chromedp.CSS("#composer textarea"), reply+"\r"))
	waitJS(t, ctx, 10*time.Second, "the reply confirmed", fmt.Sprintf(`[...document.querySelectorAll("#messages li")].some((li) => li.firstChild.textContent === %q && li.dataset.status === "confirmed")`, reply))

	// It goes to WhatsApp once, and its tick follows WhatsApp's statuses up
	// to read. (An engine whose binary does not send WhatsApp replies yet —
	// cmd/charla without actors.Dependencies.Graph — stops here.)
	var n int
	for deadline := time.Now().Add(10 * time.Second); n == 0 && time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		n = graphSends(t, graphAddr, "En qué te ayudo")
	}
	if n == 0 {
		t.Log("the engine sent no WhatsApp reply: outbound WhatsApp is not wired in this binary; ticks not checked")
		return
	}
	mine := fmt.Sprintf(`[...document.querySelectorAll("#messages li")].find((li) => li.firstChild.textContent === %q)`, reply)
	waitJS(t, ctx, 20*time.Second, "read on WhatsApp", mine+`?.querySelector(".tick.read") != null`)
	if n := graphSends(t, graphAddr, "En qué te ayudo"); n != 1 {
		t.Fatalf("the reply reached the Graph API %d times, want once", n)
	}

	// A page opened later got none of those frames (they are live only):
	// it catches up on the statuses, and shows the reply read.
	run(t, ctx, 15*time.Second, chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS(row)))
	click(t, ctx, 10*time.Second, row)
	run(t, ctx, 10*time.Second, chromedp.WaitVisible(chromedp.CSS("#conv-view")))
	waitJS(t, ctx, 20*time.Second, "read on WhatsApp after a reload", mine+`?.querySelector(".tick.read") != null`)
}

// graphSends counts the sends the fake Graph API received that contain text.
func graphSends(t *testing.T, graphAddr, text string) int {
	t.Helper()
	r, err := http.Get("http://" + graphAddr + "/admin/sends")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var sends []json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&sends); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, s := range sends {
		if strings.Contains(string(s), text) {
			n++
		}
	}
	return n
}
