package transport

import (
	"context"
	"crypto/subtle"
	"errors"
	"io"
	"net/http"
	"time"

	"charla"
	"charla/whatsapp"
)

// WebhookMaxBytes bounds a WhatsApp webhook body: the platform batches up to
// 1,000 updates per POST, well under 3 MiB.
const WebhookMaxBytes = 3 << 20

// webhookPath is where the platform posts (the app's callback URL).
const webhookPath = "/webhooks/whatsapp"

// webhookAnswerBudget bounds how long a POST waits for its durable record
// before it answers 503 (the platform then redelivers): a slow store makes
// the webhook refuse, never hang.
const webhookAnswerBudget = 3 * time.Second

func (s *Server) routeWebhook(mux *http.ServeMux) {
	mux.HandleFunc("GET "+webhookPath, s.handleWebhookVerify)
	mux.HandleFunc("POST "+webhookPath, s.handleWebhook)
}

// whatsappReady answers 503 unless the channel is configured.
func (s *Server) whatsappReady(w http.ResponseWriter) bool {
	if !s.cfg.WhatsApp.Enabled() {
		writeProblem(w, charla.Errorf(charla.CodeUnavailable, "the WhatsApp channel is not configured on this server (whatsapp-app-secret)"))
		return false
	}
	return true
}

// handleWebhookVerify is the platform's verification handshake:
// hub.mode=subscribe and hub.verify_token equal to the configured token
// answer hub.challenge; anything else 403.
func (s *Server) handleWebhookVerify(w http.ResponseWriter, r *http.Request) {
	if !s.whatsappReady(w) {
		return
	}
	q := r.URL.Query()
	token := q.Get("hub.verify_token")
	if q.Get("hub.mode") != "subscribe" || subtle.ConstantTimeCompare([]byte(token), []byte(s.cfg.WhatsApp.VerifyToken)) != 1 {
		s.log.Warn().Str("mode", q.Get("hub.mode")).Msg("webhook verification refused")
		writeProblem(w, charla.Errorf(charla.CodeForbidden, "verification refused: hub.mode must be subscribe and hub.verify_token the configured token"))
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, q.Get("hub.challenge"))
}

// handleWebhook takes a notification POST: the signature is checked on the
// raw bytes before anything else reads them (wrong or missing: 401, nothing
// stored); then the body is recorded durably and answered 200, and the
// actors process it. A body that parses badly is still answered 200 — it
// is signed, so it is the platform's, and redelivering it would not mend it
// — and kept with its problem.
func (s *Server) handleWebhook(w http.ResponseWriter, r *http.Request) {
	if !s.whatsappReady(w) {
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, WebhookMaxBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		writeProblem(w, charla.Errorf(charla.CodeTooLarge, "webhook body over %d bytes", tooBig.Limit))
		return
	case err != nil:
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "webhook body unreadable: %v", err))
		return
	}
	if err := whatsapp.VerifySignature([]byte(s.cfg.WhatsApp.AppSecret), body, r.Header.Get(whatsapp.SignatureHeader)); err != nil {
		s.log.Warn().Err(err).Str("ip", r.RemoteAddr).Int("bytes", len(body)).Msg("webhook refused: bad signature")
		writeProblem(w, charla.Errorf(charla.CodeUnauthorized, "%v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), webhookAnswerBudget)
	defer cancel()
	if _, err := s.sys.ReceiveWebhook(ctx, body); err != nil {
		writeProblemRetry(w, charla.AsError(err), 1000)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "received"})
}
