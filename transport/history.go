package transport

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"charla"
	"charla/wire"
)

// History API limits.
const (
	// DefaultHistoryLimit is the page size when the request names none.
	DefaultHistoryLimit = 50
	// MaxHistoryLimit is the largest page a client may ask for.
	MaxHistoryLimit = 200
	// maxCursorBody bounds a PUT read body ({"seq":N} is a few bytes).
	maxCursorBody = 4 << 10
)

// HistoryPage is the answer of GET /v1/conversations/{conv}/messages.
type HistoryPage struct {
	Conv     charla.ConvID    `json:"conv"`
	Messages []charla.Message `json:"messages"` // in seq order, oldest first
	// HasMore: there are more messages in the direction of the paging —
	// older ones with before, newer ones (up to now) without.
	HasMore bool `json:"has_more"`
}

// ReadCursors is the answer of GET /v1/conversations/{conv}/read.
type ReadCursors struct {
	Conv    charla.ConvID         `json:"conv"`
	Cursors map[string]charla.Seq `json:"cursors"` // by user id
}

// StatusList is the answer of GET /v1/conversations/{conv}/statuses.
type StatusList struct {
	Conv charla.ConvID `json:"conv"`
	// Statuses are the latest wa_status frame of each outgoing WhatsApp
	// message of the conversation that has one, in seq order; never older
	// than a frame the client already got. Empty for other conversations.
	Statuses []wire.WhatsAppStatus `json:"statuses"`
}

// ReadCursor is the body of PUT /v1/conversations/{conv}/read and its answer.
type ReadCursor struct {
	Conv charla.ConvID `json:"conv,omitempty"` // answer only
	User string        `json:"user,omitempty"` // answer only
	Seq  charla.Seq    `json:"seq"`
}

// routeHistory adds the history and read-cursor endpoints to mux.
func (s *Server) routeHistory(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/conversations/{conv}/messages", s.handleHistory)
	mux.HandleFunc("GET /v1/conversations/{conv}/read", convGet(s, func(ctx context.Context, conv charla.ConvID) (ReadCursors, error) {
		cursors, err := s.sys.ReadCursors(ctx, conv)
		return ReadCursors{Conv: conv, Cursors: cursors}, err
	}))
	mux.HandleFunc("PUT /v1/conversations/{conv}/read", s.handlePutRead)
	// How a client catches up on the wa_status frames it missed while not
	// subscribed (they are live only).
	mux.HandleFunc("GET /v1/conversations/{conv}/statuses", convGet(s, func(ctx context.Context, conv charla.ConvID) (StatusList, error) {
		st, err := s.sys.WhatsAppStatuses(ctx, conv)
		return StatusList{Conv: conv, Statuses: st}, err
	}))
}

// convGet serves a GET of something of one conversation: the REST checks,
// then read, answered as JSON or as the error it returns.
func convGet[T any](s *Server, read func(ctx context.Context, conv charla.ConvID) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conv := charla.ConvID(r.PathValue("conv"))
		if _, ok := s.restIdentity(w, r, conv); !ok {
			return
		}
		v, err := read(r.Context(), conv)
		answer(w, v, err)
	}
}

// restIdentity runs the checks every REST request starts with — origin,
// credentials, and (when conv is not empty) the same conversation rule as
// the WebSocket — and answers the request itself when one fails.
func (s *Server) restIdentity(w http.ResponseWriter, r *http.Request, conv charla.ConvID) (Identity, bool) {
	if !s.cfg.Origins.Allowed(r) {
		writeProblem(w, charla.Errorf(charla.CodeForbidden, "origin %q is not allowed", r.Header.Get("Origin")))
		return Identity{}, false
	}
	id, err := s.cfg.Auth.Authenticate(r)
	if err != nil {
		writeProblem(w, charla.AsError(err))
		return Identity{}, false
	}
	if conv == "" {
		return id, true
	}
	if err := conv.Validate(); err != nil {
		writeProblem(w, charla.AsError(err))
		return Identity{}, false
	}
	if !id.User.CanAccess(conv) {
		writeProblem(w, charla.Errorf(charla.CodeForbidden, "%s may not use conversation %s", id.User.ID, conv))
		return Identity{}, false
	}
	return id, true
}

// historyQuery is a parsed history request: the seqs strictly between
// after and before (0: unbounded), limit of them, the newest ones when
// before is set and the oldest ones otherwise.
type historyQuery struct {
	after, before charla.Seq
	limit         int
}

func parseHistoryQuery(r *http.Request) (historyQuery, *charla.Error) {
	q := historyQuery{limit: DefaultHistoryLimit}
	seq := func(name string) (charla.Seq, *charla.Error) {
		v := r.URL.Query().Get(name)
		if v == "" {
			return 0, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, charla.Errorf(charla.CodeBadRequest, "%s must be a seq (a non-negative integer), got %q", name, v)
		}
		return charla.Seq(n), nil
	}
	var err *charla.Error
	if q.after, err = seq("after"); err != nil {
		return q, err
	}
	if q.before, err = seq("before"); err != nil {
		return q, err
	}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, perr := strconv.Atoi(v)
		if perr != nil || n < 1 || n > MaxHistoryLimit {
			return q, charla.Errorf(charla.CodeBadRequest, "limit must be 1 to %d, got %q", MaxHistoryLimit, v)
		}
		q.limit = n
	}
	if q.before != 0 && q.before <= q.after+1 {
		return q, charla.Errorf(charla.CodeBadRequest, "before (%d) must be greater than after+1 (%d)", q.before, q.after+1)
	}
	return q, nil
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request) {
	conv := charla.ConvID(r.PathValue("conv"))
	if _, ok := s.restIdentity(w, r, conv); !ok {
		return
	}
	q, perr := parseHistoryQuery(r)
	if perr != nil {
		writeProblem(w, perr)
		return
	}
	page := HistoryPage{Conv: conv, Messages: []charla.Message{}}
	after, limit := q.after, q.limit
	if q.before != 0 {
		// The newest page below before: start limit seqs lower (not below
		// after), and read up to before-1.
		if q.before-1-q.after > charla.Seq(q.limit) {
			after = q.before - 1 - charla.Seq(q.limit)
		}
		limit = int(q.before - 1 - after)
		page.HasMore = after > q.after
	} else {
		limit++ // one more tells whether there are more
	}
	msgs, err := s.sys.History(r.Context(), conv, after, limit)
	if err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	if q.before == 0 && len(msgs) > q.limit {
		msgs, page.HasMore = msgs[:q.limit], true
	}
	if len(msgs) > 0 {
		page.Messages = msgs
	}
	writeJSON(w, http.StatusOK, page)
}

func (s *Server) handlePutRead(w http.ResponseWriter, r *http.Request) {
	conv := charla.ConvID(r.PathValue("conv"))
	id, ok := s.restIdentity(w, r, conv)
	if !ok {
		return
	}
	var c ReadCursor
	if !readObject(w, r, maxCursorBody, &c) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
	defer cancel()
	if _, err := s.sys.MarkRead(ctx, id.User, conv, c.Seq); err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	writeJSON(w, http.StatusOK, ReadCursor{Conv: conv, User: id.User.ID, Seq: c.Seq})
}

// requestTimeout bounds a REST request's wait on the actor tree.
const requestTimeout = 5 * time.Second

// readBody reads a request body of at most limit bytes: too_large past it.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *charla.Error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, charla.Errorf(charla.CodeTooLarge, "request body is larger than %d bytes", limit)
	case err != nil:
		return nil, charla.Errorf(charla.CodeBadRequest, "request body could not be read: %v", err)
	}
	return body, nil
}

// readObject reads a body of at most limit bytes that must be one JSON
// object into v; when it cannot, it answers the request itself.
func readObject(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	raw, err := readBody(w, r, limit)
	if err == nil {
		err = decodeObject(raw, v)
	}
	if err != nil {
		writeProblem(w, err)
		return false
	}
	return true
}

// answer writes v as the 200 answer, or err as the request's problem.
func answer(w http.ResponseWriter, v any, err error) {
	if err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	writeJSON(w, http.StatusOK, v)
}

// decodeObject decodes a request body that must be one JSON object.
func decodeObject(body []byte, v any) *charla.Error {
	if i := firstNonSpace(body); i < 0 || body[i] != '{' {
		return charla.Errorf(charla.CodeBadRequest, "request body must be a JSON object")
	}
	if err := json.Unmarshal(body, v); err != nil {
		return charla.Errorf(charla.CodeBadRequest, "request body is not a valid request: %v", err)
	}
	return nil
}

func firstNonSpace(b []byte) int {
	for i, c := range b {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return i
		}
	}
	return -1
}
