// Package fakegraph is a fake WhatsApp Cloud API (Graph API) for tests,
// benchmarks and `make run`: it accepts sends at POST /{version}/{phone
// number id}/messages (the version segment is optional), records every one,
// answers realistic wamids, fails or throttles the next sends on request,
// serves media (GET /{version}/{media id}, then the download URL it gives),
// and posts signed status webhooks (sent → delivered → read) for every
// accepted message back to the engine, with a configurable delay, order and
// duplicates. It also plays the customer: POST /admin/inbound posts a signed
// inbound message to the engine.
//
// Admin endpoints, JSON:
//
//	GET    /admin/sends      every send and mark-read received, in order (Request)
//	DELETE /admin/sends      forget them
//	POST   /admin/fail       fail the next sends: {"count":2,"code":130429} (FailRule)
//	DELETE /admin/fail       fail nothing
//	PUT    /admin/statuses   how statuses are posted back (StatusPlan)
//	PUT    /admin/webhook    {"url":"http://127.0.0.1:8080/webhooks/whatsapp"}
//	PUT    /admin/media/{id} store media (body = bytes, Content-Type = its type)
//	POST   /admin/inbound    post a customer message to the engine (Inbound);
//	                         answers {"wamid","status"} (status = the engine's HTTP answer)
package fakegraph

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"charla/internal/httpserve"
	"charla/whatsapp"
)

const (
	maxRequestBytes = 1 << 20
	maxMediaBytes   = 200 << 20
	// webhookAttempts bounds how often a status webhook is posted before the
	// fake gives up on it (the platform retries for days; a test does not).
	webhookAttempts = 5
)

// Options configures a Server. The zero value of each field means its
// default.
type Options struct {
	// Token is the bearer token the fake expects; empty accepts any.
	Token string
	// AppSecret signs the webhooks the fake posts.
	AppSecret string
	// WebhookURL is where status webhooks and injected customer messages go
	// (the engine's /webhooks/whatsapp); empty posts none.
	WebhookURL string
	// Statuses is how statuses are posted back. Default: sent, delivered
	// and read, in order, 50 ms apart.
	Statuses StatusPlan
	// PublicURL is the fake's own base URL, for the media download URLs it
	// hands out. Default: the Host of each request.
	PublicURL string
	// HTTP posts the webhooks. Default: a client with a 10 s timeout.
	HTTP *http.Client
	// Log receives a line per admin change and per failed webhook.
	Log zerolog.Logger
}

// StatusPlan says which status webhooks follow an accepted send.
type StatusPlan struct {
	// Off posts no status at all.
	Off bool `json:"off,omitempty"`
	// DelayMS is the pause before each status. Default 50; negative: none.
	DelayMS int `json:"delay_ms,omitempty"`
	// Last is the last status posted: "sent", "delivered" or "read"
	// (default "read").
	Last whatsapp.StatusKind `json:"last,omitempty"`
	// Reverse posts them newest first (read, delivered, sent), as a late
	// webhook would arrive.
	Reverse bool `json:"reverse,omitempty"`
	// Duplicate posts every status twice.
	Duplicate bool `json:"duplicate,omitempty"`
	// FailCode, when set, posts sent then failed with this error code (e.g.
	// 131026, message undeliverable) instead.
	FailCode int `json:"fail_code,omitempty"`
}

func (p StatusPlan) validate() error {
	switch p.Last {
	case "", whatsapp.StatusSent, whatsapp.StatusDelivered, whatsapp.StatusRead:
		return nil
	}
	return fmt.Errorf("statuses: last must be sent, delivered or read, got %q", p.Last)
}

// FailRule makes the next Count sends fail with a Graph API error.
type FailRule struct {
	Count int `json:"count"`
	// Code is the error code (130429 throughput, 131056 pair rate, 131047
	// outside the 24-hour window, 131026 undeliverable…).
	Code    int `json:"code"`
	Subcode int `json:"subcode,omitempty"`
	// HTTPStatus defaults to 429 for throttling codes, 500 for codes 1
	// and 2, else 400.
	HTTPStatus int    `json:"http_status,omitempty"`
	Message    string `json:"message,omitempty"`
}

// Request is one call the fake received on a messages endpoint.
type Request struct {
	// Kind is "send" or "read" (a mark-as-read).
	Kind          string          `json:"kind"`
	PhoneNumberID string          `json:"phone_number_id"`
	To            string          `json:"to,omitempty"`
	Type          string          `json:"type,omitempty"`
	Payload       json.RawMessage `json:"payload"`
	At            time.Time       `json:"at"`
	// HTTPStatus is what the fake answered; 200 means accepted.
	HTTPStatus int `json:"http_status"`
	// WAMID is the id answered to an accepted send.
	WAMID string `json:"wamid,omitempty"`
	// ErrorCode is the Graph API code of a refusal.
	ErrorCode int `json:"error_code,omitempty"`
}

// Server is the fake Graph API. It is safe for concurrent use.
type Server struct {
	token  string
	secret []byte
	public string
	http   *http.Client
	log    zerolog.Logger

	mu       sync.Mutex // guards the fields below
	webhook  string
	plan     StatusPlan
	fails    []FailRule
	requests []Request
	media    map[string]mediaFile

	ctx    context.Context // ends at Close: cancels pending webhooks
	cancel context.CancelFunc
	wg     sync.WaitGroup // webhook goroutines
}

type mediaFile struct {
	mime string
	data []byte
}

// New builds a Server from o, reporting every problem at once.
func New(o Options) (*Server, error) {
	var errs []error
	if err := o.Statuses.validate(); err != nil {
		errs = append(errs, err)
	}
	if o.WebhookURL != "" && o.AppSecret == "" {
		errs = append(errs, errors.New("AppSecret: required to post webhooks"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("fakegraph: %w", err)
	}
	s := &Server{token: o.Token, secret: []byte(o.AppSecret), public: strings.TrimRight(o.PublicURL, "/"), http: o.HTTP, log: o.Log,
		webhook: o.WebhookURL, plan: o.Statuses, media: map[string]mediaFile{}}
	if s.http == nil {
		s.http = &http.Client{Timeout: 10 * time.Second}
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Close cancels the webhooks not yet posted and waits for those in flight.
func (s *Server) Close() {
	s.cancel()
	s.wg.Wait()
}

// SetWebhookURL points status webhooks and injected messages at url.
func (s *Server) SetWebhookURL(url string) {
	s.mu.Lock()
	s.webhook = url
	s.mu.Unlock()
}

// SetStatuses replaces the status plan.
func (s *Server) SetStatuses(p StatusPlan) error {
	if err := p.validate(); err != nil {
		return err
	}
	s.mu.Lock()
	s.plan = p
	s.mu.Unlock()
	return nil
}

// FailNext queues r: the next r.Count sends (after those of rules queued
// before it) fail with its error.
func (s *Server) FailNext(r FailRule) {
	if r.Count <= 0 {
		return
	}
	s.mu.Lock()
	s.fails = append(s.fails, r)
	s.mu.Unlock()
}

// ClearFails drops every queued failure.
func (s *Server) ClearFails() {
	s.mu.Lock()
	s.fails = nil
	s.mu.Unlock()
}

// Requests returns every call received on a messages endpoint, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Sent returns the accepted sends (not mark-as-read), in order.
func (s *Server) Sent() []Request {
	var out []Request
	for _, r := range s.Requests() {
		if r.Kind == "send" && r.HTTPStatus == http.StatusOK {
			out = append(out, r)
		}
	}
	return out
}

// ResetRequests forgets the calls received.
func (s *Server) ResetRequests() {
	s.mu.Lock()
	s.requests = nil
	s.mu.Unlock()
}

// PutMedia stores media under id, served to anyone with the token.
func (s *Server) PutMedia(id, mimeType string, data []byte) {
	s.mu.Lock()
	s.media[id] = mediaFile{mime: mimeType, data: append([]byte(nil), data...)}
	s.mu.Unlock()
}

// Handler serves the Graph API and the admin endpoints.
func (s *Server) Handler() http.Handler {
	admin := http.NewServeMux()
	admin.HandleFunc("GET /admin/sends", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, http.StatusOK, s.Requests()) })
	admin.HandleFunc("DELETE /admin/sends", func(w http.ResponseWriter, _ *http.Request) {
		s.ResetRequests()
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("POST /admin/fail", func(w http.ResponseWriter, r *http.Request) {
		var f FailRule
		if !readJSON(w, r, &f) {
			return
		}
		if f.Count <= 0 || f.Code <= 0 {
			http.Error(w, "count and code must be positive", http.StatusBadRequest)
			return
		}
		s.FailNext(f)
		s.log.Info().Int("count", f.Count).Int("code", f.Code).Msg("fakegraph: next sends fail")
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("DELETE /admin/fail", func(w http.ResponseWriter, _ *http.Request) {
		s.ClearFails()
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("PUT /admin/statuses", func(w http.ResponseWriter, r *http.Request) {
		var p StatusPlan
		if !readJSON(w, r, &p) {
			return
		}
		if err := s.SetStatuses(p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("PUT /admin/webhook", func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			URL string `json:"url"`
		}
		if !readJSON(w, r, &b) {
			return
		}
		s.SetWebhookURL(b.URL)
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("PUT /admin/media/{id}", func(w http.ResponseWriter, r *http.Request) {
		data, err := io.ReadAll(io.LimitReader(r.Body, maxMediaBytes+1))
		if err != nil || len(data) > maxMediaBytes {
			http.Error(w, "media unreadable or larger than 200 MiB", http.StatusBadRequest)
			return
		}
		s.PutMedia(r.PathValue("id"), r.Header.Get("Content-Type"), data)
		w.WriteHeader(http.StatusNoContent)
	})
	admin.HandleFunc("POST /admin/inbound", func(w http.ResponseWriter, r *http.Request) {
		var in Inbound
		if !readJSON(w, r, &in) {
			return
		}
		wamid, status, err := s.Inject(r.Context(), in)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"wamid": wamid, "status": status})
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/admin/") {
			admin.ServeHTTP(w, r)
			return
		}
		s.serveGraph(w, r)
	})
}

// serveGraph routes the Graph API paths by hand: a version segment may or
// may not come first, which ServeMux patterns cannot say without clashing.
func (s *Server) serveGraph(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(segs) > 0 && len(segs[0]) > 1 && segs[0][0] == 'v' && isVersion(segs[0][1:]) {
		segs = segs[1:]
	}
	if !s.authorized(r) {
		graphErr(w, http.StatusUnauthorized, 190, 0, "Invalid OAuth access token - Cannot parse access token")
		return
	}
	switch {
	case r.Method == http.MethodPost && len(segs) == 2 && segs[1] == "messages":
		s.serveMessages(w, r, segs[0])
	case r.Method == http.MethodGet && len(segs) == 2 && segs[0] == "download":
		s.serveDownload(w, segs[1])
	case r.Method == http.MethodGet && len(segs) == 1 && segs[0] != "":
		s.serveMediaInfo(w, r, segs[0])
	default:
		graphErr(w, http.StatusBadRequest, 100, 0, fmt.Sprintf("Unsupported %s request to %s", r.Method, r.URL.Path))
	}
}

func isVersion(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func (s *Server) authorized(r *http.Request) bool {
	if s.token == "" {
		return true
	}
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && subtle.ConstantTimeCompare([]byte(got), []byte(s.token)) == 1
}

// serveMessages answers a send or a mark-as-read, as the Graph API would.
func (s *Server) serveMessages(w http.ResponseWriter, r *http.Request, phone string) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBytes))
	if err != nil {
		graphErr(w, http.StatusBadRequest, 100, 0, "Unreadable request body")
		return
	}
	var p struct {
		Product   string          `json:"messaging_product"`
		To        string          `json:"to"`
		Type      string          `json:"type"`
		Status    string          `json:"status"`
		MessageID string          `json:"message_id"`
		Text      json.RawMessage `json:"text"`
		// Callback is echoed in the message's status webhooks, as the
		// platform does.
		Callback string `json:"biz_opaque_callback_data"`
	}
	req := Request{Kind: "send", PhoneNumberID: phone, Payload: json.RawMessage(raw), At: time.Now().UTC()}
	problem := ""
	if err := json.Unmarshal(raw, &p); err != nil {
		problem = "The request body is not a JSON object"
	} else {
		req.To, req.Type = p.To, p.Type
		switch {
		case p.Product != "whatsapp":
			problem = "(#100) The parameter messaging_product is required."
		case p.Status == "read":
			req.Kind = "read"
			if p.MessageID == "" {
				problem = "(#100) The parameter message_id is required."
			}
		case p.To == "":
			problem = "(#100) The parameter to is required."
		case p.Type == "" && p.Text == nil:
			problem = "(#100) The parameter type is required."
		}
		if req.Type == "" && req.Kind == "send" {
			req.Type = "text"
		}
	}
	s.mu.Lock()
	var fail *FailRule
	if problem == "" && req.Kind == "send" && len(s.fails) > 0 {
		f := s.fails[0]
		fail = &f
		if s.fails[0].Count--; s.fails[0].Count == 0 {
			s.fails = s.fails[1:]
		}
	}
	switch {
	case problem != "":
		req.HTTPStatus, req.ErrorCode = http.StatusBadRequest, 100
	case fail != nil:
		req.HTTPStatus, req.ErrorCode = fail.status(), fail.Code
	default:
		req.HTTPStatus = http.StatusOK
		if req.Kind == "send" {
			req.WAMID = NewWAMID(req.To)
		}
	}
	s.requests = append(s.requests, req)
	plan, hook := s.plan, s.webhook
	s.mu.Unlock()

	switch {
	case problem != "":
		graphErr(w, http.StatusBadRequest, 100, 0, problem)
	case fail != nil:
		msg := fail.Message
		if msg == "" {
			msg = fmt.Sprintf("(#%d) injected by fakegraph", fail.Code)
		}
		graphErr(w, fail.status(), fail.Code, fail.Subcode, msg)
	case req.Kind == "read":
		writeJSON(w, http.StatusOK, map[string]bool{"success": true})
	default:
		writeJSON(w, http.StatusOK, map[string]any{
			"messaging_product": "whatsapp",
			"contacts":          []map[string]string{{"input": req.To, "wa_id": req.To}},
			"messages":          []map[string]string{{"id": req.WAMID}},
		})
		if hook != "" && !plan.Off {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.postStatuses(hook, plan, phone, req.To, req.WAMID, p.Callback)
			}()
		}
	}
}

func (f FailRule) status() int {
	if f.HTTPStatus != 0 {
		return f.HTTPStatus
	}
	switch f.Code {
	case 4, 80007, 130429, 131048, 131056:
		return http.StatusTooManyRequests
	case 1, 2:
		return http.StatusInternalServerError
	}
	return http.StatusBadRequest
}

// postStatuses posts the plan's status webhooks for one accepted message,
// one webhook per status, as the platform does.
func (s *Server) postStatuses(hook string, plan StatusPlan, phone, to, wamid, callback string) {
	kinds := []whatsapp.StatusKind{whatsapp.StatusSent, whatsapp.StatusDelivered, whatsapp.StatusRead}
	switch {
	case plan.FailCode != 0:
		kinds = []whatsapp.StatusKind{whatsapp.StatusSent, whatsapp.StatusFailed}
	case plan.Last == whatsapp.StatusSent:
		kinds = kinds[:1]
	case plan.Last == whatsapp.StatusDelivered:
		kinds = kinds[:2]
	}
	delay := time.Duration(plan.DelayMS) * time.Millisecond
	if plan.DelayMS == 0 {
		delay = 50 * time.Millisecond
	}
	start := time.Now()
	var statuses []whatsapp.StatusPayload
	for i, k := range kinds {
		st := whatsapp.StatusPayload{ID: wamid, Status: string(k), RecipientID: to, BizOpaqueCallbackData: callback,
			Timestamp: strconv.FormatInt(start.Add(time.Duration(i)*time.Second).Unix(), 10)}
		if k == whatsapp.StatusFailed {
			st.Errors = []whatsapp.ErrorPayload{{Code: plan.FailCode, Title: "Message failed (fakegraph)", Message: "Message failed (fakegraph)"}}
		}
		statuses = append(statuses, st)
		if plan.Duplicate {
			statuses = append(statuses, st)
		}
	}
	if plan.Reverse {
		for i, j := 0, len(statuses)-1; i < j; i, j = i+1, j-1 {
			statuses[i], statuses[j] = statuses[j], statuses[i]
		}
	}
	for _, st := range statuses {
		if delay > 0 && !sleep(s.ctx, delay) {
			return
		}
		body, err := json.Marshal(Payload(Change(phone, nil, nil, []whatsapp.StatusPayload{st})))
		if err != nil {
			s.log.Error().Err(err).Msg("fakegraph: status webhook does not encode")
			return
		}
		s.postWebhook(hook, body)
	}
}

// postWebhook posts body signed, retrying a few times as the platform would.
func (s *Server) postWebhook(hook string, body []byte) int {
	wh := Webhook{URL: hook, Secret: s.secret, HTTP: s.http}
	backoff := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		status, err := wh.Post(s.ctx, body)
		if err == nil && status == http.StatusOK {
			return status
		}
		if attempt == webhookAttempts || !sleep(s.ctx, backoff) {
			s.log.Warn().Err(err).Int("status", status).Int("attempts", attempt).Msg("fakegraph: webhook not accepted; giving up")
			return status
		}
		backoff *= 2
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *Server) serveMediaInfo(w http.ResponseWriter, r *http.Request, id string) {
	s.mu.Lock()
	f, ok := s.media[id]
	s.mu.Unlock()
	if !ok {
		graphErr(w, http.StatusNotFound, 100, 33, fmt.Sprintf("Unsupported get request. Object with ID '%s' does not exist", id))
		return
	}
	base := s.public
	if base == "" {
		base = "http://" + r.Host
	}
	sum := sha256.Sum256(f.data)
	writeJSON(w, http.StatusOK, map[string]any{
		"messaging_product": "whatsapp", "id": id, "url": base + "/download/" + id,
		"mime_type": f.mime, "sha256": hex.EncodeToString(sum[:]), "file_size": len(f.data),
	})
}

func (s *Server) serveDownload(w http.ResponseWriter, id string) {
	s.mu.Lock()
	f, ok := s.media[id]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, nil)
		return
	}
	w.Header().Set("Content-Type", f.mime)
	w.Header().Set("Content-Length", strconv.Itoa(len(f.data)))
	_, _ = w.Write(f.data)
}

// Inbound is a customer message for Inject.
type Inbound struct {
	// PhoneNumberID is the business number written to.
	PhoneNumberID string `json:"phone_number_id"`
	// From is the customer's wa_id; Name their profile name.
	From string `json:"from"`
	Name string `json:"name,omitempty"`
	// Type is the message type (default "text"); Content is the object
	// under it. For a text, Text may be given instead.
	Type    string          `json:"type,omitempty"`
	Text    string          `json:"text,omitempty"`
	Content json.RawMessage `json:"content,omitempty"`
	// WAMID is the message id; empty makes one.
	WAMID string `json:"wamid,omitempty"`
}

// Inject posts in to the webhook URL, signed, as the platform would, and
// returns its wamid and the engine's HTTP status.
func (s *Server) Inject(ctx context.Context, in Inbound) (string, int, error) {
	s.mu.Lock()
	hook := s.webhook
	s.mu.Unlock()
	if hook == "" {
		return "", 0, errors.New("fakegraph: no webhook url to post to")
	}
	body, wamid, err := in.payload()
	if err != nil {
		return "", 0, err
	}
	status, err := Webhook{URL: hook, Secret: s.secret, HTTP: s.http}.Post(ctx, body)
	return wamid, status, err
}

// payload is the signed body of in.
func (in Inbound) payload() ([]byte, string, error) {
	if in.PhoneNumberID == "" || in.From == "" {
		return nil, "", errors.New("fakegraph: inbound needs phone_number_id and from")
	}
	typ, content := in.Type, any(in.Content)
	if typ == "" {
		typ = "text"
	}
	if in.Content == nil {
		if typ != "text" {
			return nil, "", fmt.Errorf("fakegraph: inbound of type %q needs content", typ)
		}
		content = map[string]string{"body": in.Text}
	}
	wamid := in.WAMID
	if wamid == "" {
		wamid = NewWAMID(in.From)
	}
	var contacts []whatsapp.Contact
	if in.Name != "" {
		contacts = []whatsapp.Contact{Contact(in.From, in.Name)}
	}
	msg := NewMessage(in.From, wamid, time.Now(), typ, content)
	body, err := json.Marshal(Payload(Change(in.PhoneNumberID, contacts, []whatsapp.Message{msg}, nil)))
	return body, wamid, err
}

// Serve answers on ln until ctx ends, then shuts down (see Close).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return httpserve.Until(ctx, "fakegraph", ln, s.Handler(), s.Close)
}

// Run listens on addr, logs the address and serves a Server built from o
// until ctx ends.
func Run(ctx context.Context, addr string, o Options) error {
	s, err := New(o)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("fakegraph: %w", err)
	}
	o.Log.Info().Str("addr", ln.Addr().String()).Str("webhook", o.WebhookURL).
		Msgf("fake Graph API listening on http://%s (admin under /admin/)", ln.Addr())
	return s.Serve(ctx, ln)
}

func graphErr(w http.ResponseWriter, status, code, subcode int, msg string) {
	e := map[string]any{"message": msg, "type": "OAuthException", "code": code, "fbtrace_id": "AfakeGraphTrace"}
	if subcode != 0 {
		e["error_subcode"] = subcode
	}
	e["error_data"] = map[string]string{"messaging_product": "whatsapp", "details": msg}
	writeJSON(w, status, map[string]any{"error": e})
}

func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(io.LimitReader(r.Body, maxRequestBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		http.Error(w, "bad JSON: "+err.Error(), http.StatusBadRequest)
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	_ = json.NewEncoder(&b).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b.Bytes())
}
