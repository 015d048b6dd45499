package transport

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"charla"
	"charla/store"
	"charla/wire"
)

// The agents' workflow over REST (docs/openapi.json): the conversation
// list, the actions, tags, full-text search, canned replies and agents'
// capacities. Every endpoint is for staff; an agent acts on what they may
// see (the unassigned conversations and theirs), an admin on everything.

// Limits of the list and search endpoints.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
	maxWorkflowBody  = 16 << 10
	maxQueryBytes    = 256
	maxTags          = 20
	maxTagBytes      = 64
)

// ConversationList is the answer of GET /v1/conversations.
type ConversationList struct {
	Conversations []wire.Conversation `json:"conversations"`
	// NextCursor, when set, asks for the next page (cursor=…).
	NextCursor string `json:"next_cursor,omitempty"`
}

// SearchResult is the answer of GET /v1/search.
type SearchResult struct {
	Messages []charla.Message `json:"messages"` // newest first
}

// CannedList is the answer of GET /v1/canned.
type CannedList struct {
	Canned []store.CannedReply `json:"canned"`
}

// ActionBody is the body of the action endpoints (assign and transfer
// need Assignee).
type ActionBody struct {
	Assignee string `json:"assignee"`
}

func (s *Server) routeConversations(mux *http.ServeMux) {
	mux.HandleFunc("GET /v1/conversations", s.handleListConversations)
	mux.HandleFunc("POST /v1/conversations/{conv}/{action}", s.handleAction)
	mux.HandleFunc("PUT /v1/conversations/{conv}/tags", s.handleTags)
	mux.HandleFunc("GET /v1/search", s.handleSearch)
	mux.HandleFunc("GET /v1/canned", s.handleListCanned)
	mux.HandleFunc("PUT /v1/canned/{code}", s.handlePutCanned)
	mux.HandleFunc("DELETE /v1/canned/{code}", s.handleDeleteCanned)
	mux.HandleFunc("GET /v1/conversations/{conv}/canned/{code}", s.handleRenderCanned)
	mux.HandleFunc("PUT /v1/agents/{id}/capacity", s.handleCapacity)
	mux.HandleFunc("GET /v1/agents", s.handleListAgents)
}

// AgentList is the answer of GET /v1/agents.
type AgentList struct {
	// Agents are the accounts that can sign in (disabled ones left out),
	// ordered by e-mail; what a panel shows for an assignee's id.
	Agents []StaffMember `json:"agents"`
}

// StaffMember is one staff account as other staff see it.
type StaffMember struct {
	ID   string      `json:"id"` // the user id of its tokens: assignee, sender id
	Name string      `json:"name"`
	Role charla.Role `json:"role"` // agent or admin
}

// handleListAgents names the staff, for agents and admins.
func (s *Server) handleListAgents(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.staffIdentity(w, r, ""); !ok {
		return
	}
	if s.cfg.Login == nil {
		writeProblemStatus(w, http.StatusServiceUnavailable, charla.Errorf(charla.CodeUnavailable, "this server keeps no agent accounts (login is not configured)"))
		return
	}
	all, err := s.cfg.Login.Store().ListAgents(r.Context())
	if err != nil {
		s.log.Warn().Err(err).Msg("agents unreadable")
		writeProblem(w, charla.Errorf(charla.CodeUnavailable, "the agents are temporarily unavailable; retry"))
		return
	}
	list := AgentList{Agents: []StaffMember{}}
	for _, a := range all {
		if !a.Disabled {
			list.Agents = append(list.Agents, StaffMember{ID: a.ID, Name: a.Name, Role: a.Role})
		}
	}
	writeJSON(w, http.StatusOK, list)
}

// staffIdentity is restIdentity for the workflow's endpoints: staff only.
func (s *Server) staffIdentity(w http.ResponseWriter, r *http.Request, conv charla.ConvID) (Identity, bool) {
	id, ok := s.restIdentity(w, r, conv)
	if ok && id.User.Role != charla.RoleAgent && id.User.Role != charla.RoleAdmin {
		writeProblem(w, charla.Errorf(charla.CodeForbidden, "only agents and admins work conversations"))
		return Identity{}, false
	}
	return id, ok
}

// listCursor is the page cursor: the last row of the page, opaque to
// clients (base64 of this JSON).
type listCursor struct {
	Activity time.Time     `json:"a"`
	Conv     charla.ConvID `json:"c"`
	Version  uint64        `json:"v"`
}

func parseListQuery(r *http.Request) (store.ConvFilter, *charla.Error) {
	q := r.URL.Query()
	f := store.ConvFilter{Status: q.Get("status"), Assignee: q.Get("assignee"), Tag: q.Get("tag"), Limit: DefaultListLimit}
	switch f.Status {
	case "", store.StatusPending, store.StatusOpen, store.StatusResolved:
	default:
		return f, charla.Errorf(charla.CodeBadRequest, "status must be pending, open or resolved, got %q", f.Status)
	}
	if v := q.Get("unassigned"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return f, charla.Errorf(charla.CodeBadRequest, "unassigned must be true or false, got %q", v)
		}
		f.Unassigned = b
	}
	if f.Unassigned && f.Assignee != "" {
		return f, charla.Errorf(charla.CodeBadRequest, "assignee and unassigned=true exclude each other")
	}
	if v := q.Get("changed_since"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return f, charla.Errorf(charla.CodeBadRequest, "changed_since must be a version (a non-negative integer), got %q", v)
		}
		f.ChangedSince = n
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			return f, charla.Errorf(charla.CodeBadRequest, "limit must be 1 to %d, got %q", MaxListLimit, v)
		}
		f.Limit = n
	}
	if v := q.Get("cursor"); v != "" {
		var c listCursor
		raw, err := base64.RawURLEncoding.DecodeString(v)
		if err != nil || json.Unmarshal(raw, &c) != nil {
			return f, charla.Errorf(charla.CodeBadRequest, "cursor is not one this server gave")
		}
		f.After = &store.ConvState{ID: c.Conv, LastActivity: c.Activity, Version: c.Version}
	}
	return f, nil
}

func (s *Server) handleListConversations(w http.ResponseWriter, r *http.Request) {
	id, ok := s.staffIdentity(w, r, "")
	if !ok {
		return
	}
	f, perr := parseListQuery(r)
	if perr != nil {
		writeProblem(w, perr)
		return
	}
	limit := f.Limit
	f.Limit++ // one more tells whether there is a next page
	list, err := s.sys.Conversations(r.Context(), id.User, f)
	if err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	out := ConversationList{Conversations: list}
	if len(list) > limit {
		out.Conversations = list[:limit]
		last := list[limit-1]
		b, _ := json.Marshal(listCursor{Activity: last.LastActivity, Conv: last.Conv, Version: last.Version})
		out.NextCursor = base64.RawURLEncoding.EncodeToString(b)
	}
	if out.Conversations == nil {
		out.Conversations = []wire.Conversation{}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleAction(w http.ResponseWriter, r *http.Request) {
	conv := charla.ConvID(r.PathValue("conv"))
	action := r.PathValue("action")
	switch action {
	case wire.TypeTake, wire.TypeAssign, wire.TypeTransfer, wire.TypeResolve, wire.TypeReopen, wire.TypeHandoff:
	default:
		writeProblem(w, charla.Errorf(charla.CodeNotFound, "no action %q (take, assign, transfer, resolve, reopen, handoff)", action))
		return
	}
	id, ok := s.staffIdentity(w, r, conv)
	if !ok {
		return
	}
	var body ActionBody
	if action == wire.TypeAssign || action == wire.TypeTransfer {
		if !readObject(w, r, maxWorkflowBody, &body) {
			return
		}
	}
	c, err := s.sys.Act(r.Context(), id.User, action, conv, body.Assignee)
	answer(w, c, err)
}

func (s *Server) handleTags(w http.ResponseWriter, r *http.Request) {
	conv := charla.ConvID(r.PathValue("conv"))
	id, ok := s.staffIdentity(w, r, conv)
	if !ok {
		return
	}
	var body struct {
		Tags []string `json:"tags"`
	}
	if !readObject(w, r, maxWorkflowBody, &body) {
		return
	}
	if len(body.Tags) > maxTags {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "at most %d tags", maxTags))
		return
	}
	for _, t := range body.Tags {
		if t == "" || len(t) > maxTagBytes || strings.TrimSpace(t) != t {
			writeProblem(w, charla.Errorf(charla.CodeBadRequest, "a tag is 1 to %d bytes without surrounding spaces, got %q", maxTagBytes, t))
			return
		}
	}
	c, err := s.sys.SetTags(r.Context(), id.User, conv, body.Tags)
	answer(w, c, err)
}

func (s *Server) handleSearch(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.staffIdentity(w, r, ""); !ok {
		return
	}
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" || len(q) > maxQueryBytes {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "q must be 1 to %d bytes of words to find", maxQueryBytes))
		return
	}
	limit := DefaultListLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			writeProblem(w, charla.Errorf(charla.CodeBadRequest, "limit must be 1 to %d, got %q", MaxListLimit, v))
			return
		}
		limit = n
	}
	msgs, err := s.sys.SearchMessages(r.Context(), q, limit)
	if err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	if msgs == nil {
		msgs = []charla.Message{}
	}
	writeJSON(w, http.StatusOK, SearchResult{Messages: msgs})
}

func (s *Server) handleListCanned(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.staffIdentity(w, r, ""); !ok {
		return
	}
	list, err := s.sys.CannedReplies(r.Context())
	answer(w, CannedList{Canned: list}, err)
}

// validCannedCode: a short code a panel offers as "/code".
func validCannedCode(code string) *charla.Error {
	if code == "" || len(code) > 32 {
		return charla.Errorf(charla.CodeBadRequest, "a canned reply's code is 1 to 32 characters")
	}
	for _, c := range code {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return charla.Errorf(charla.CodeBadRequest, "a canned reply's code is lower-case letters, digits, - and _ (got %q)", code)
		}
	}
	return nil
}

func (s *Server) handlePutCanned(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.staffIdentity(w, r, ""); !ok {
		return
	}
	code := r.PathValue("code")
	if err := validCannedCode(code); err != nil {
		writeProblem(w, err)
		return
	}
	var body struct {
		Text string `json:"text"`
	}
	if !readObject(w, r, maxWorkflowBody, &body) {
		return
	}
	if strings.TrimSpace(body.Text) == "" || len(body.Text) > 4096 {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "text must be 1 to 4096 bytes"))
		return
	}
	c, err := s.sys.PutCanned(r.Context(), store.CannedReply{Code: code, Text: body.Text})
	answer(w, c, err)
}

func (s *Server) handleDeleteCanned(w http.ResponseWriter, r *http.Request) {
	if _, ok := s.staffIdentity(w, r, ""); !ok {
		return
	}
	if err := s.sys.DeleteCanned(r.Context(), r.PathValue("code")); err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// handleRenderCanned answers a canned reply with the server's placeholders
// filled for the conversation (actors.RenderCanned), for the panel to send
// as it is or edited.
func (s *Server) handleRenderCanned(w http.ResponseWriter, r *http.Request) {
	conv := charla.ConvID(r.PathValue("conv"))
	id, ok := s.staffIdentity(w, r, conv)
	if !ok {
		return
	}
	c, err := s.sys.RenderCanned(r.Context(), id.User, conv, r.PathValue("code"))
	answer(w, c, err)
}

func (s *Server) handleCapacity(w http.ResponseWriter, r *http.Request) {
	id, ok := s.staffIdentity(w, r, "")
	if !ok {
		return
	}
	if id.User.Role != charla.RoleAdmin {
		writeProblem(w, charla.Errorf(charla.CodeForbidden, "only admins set agents' capacities"))
		return
	}
	agent := r.PathValue("id")
	if err := charla.ValidateUserID(agent); err != nil {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "%v", err))
		return
	}
	var body struct {
		Capacity *int `json:"capacity"`
	}
	if !readObject(w, r, maxWorkflowBody, &body) {
		return
	}
	if body.Capacity == nil || *body.Capacity < -1 || *body.Capacity > 1000 {
		writeProblem(w, charla.Errorf(charla.CodeBadRequest, "capacity must be 0 to 1000, or -1 for the default"))
		return
	}
	if err := s.sys.SetAgentCapacity(r.Context(), agent, *body.Capacity); err != nil {
		writeProblem(w, charla.AsError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"agent": agent, "capacity": *body.Capacity})
}
