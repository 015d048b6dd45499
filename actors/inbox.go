package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"
	lru "github.com/hashicorp/golang-lru/v2"

	"charla"
	"charla/store"
	"charla/wire"
)

// workflowStore is what the inbox needs of a store; a store without it
// (tests' in-memory stores) keeps the workflow in memory only.
type workflowStore interface {
	SaveConvStates(ctx context.Context, states []store.ConvState) error
	LoadConvState(ctx context.Context, conv charla.ConvID) (store.ConvState, bool, error)
	LoadInbox(ctx context.Context) ([]store.ConvState, uint64, error)
	ListConvStates(ctx context.Context, f store.ConvFilter) ([]store.ConvState, error)
	PutCanned(ctx context.Context, c store.CannedReply) error
	DeleteCanned(ctx context.Context, code string) (bool, error)
	ListCanned(ctx context.Context) ([]store.CannedReply, error)
	SetAgentCapacity(ctx context.Context, agent string, capacity int) error
	AgentCapacities(ctx context.Context) (map[string]int, error)
	SearchMessages(ctx context.Context, query string, limit int) ([]charla.Message, error)
}

// inbox is the one owner of the conversations' workflow state (status,
// assignee, tags, last message, unread counts), of the agents' presence and
// of the inbox subscriptions. Conversation actors tell it about every
// durable append batch (one message per batch, after the ack: nothing on the
// send path waits for it); it decides handoffs and assignments, pushes a
// conversation frame to every agent who may see the change, forwards
// customer messages of pending conversations to the chatbot, and writes the
// states through to the store in batches (one save in flight at a time).
//
// It keeps in memory the conversations in the workflow: customers' that
// are pending or open (loaded at start). A resolved or staff-only one is
// dropped from memory once saved, and loaded again on its next use; what is
// asked of a conversation meanwhile waits, in order.
type inbox struct {
	d  *deps
	st workflowStore // nil: memory only

	ready   bool  // the start-up load is done
	waiting []any // messages that arrived before it

	convs map[charla.ConvID]*store.ConvState
	// recent keeps the last inactive states dropped from convs (saved), so
	// that a busy staff-only or resolved conversation is not read back
	// from the store at each message.
	recent  *lru.Cache[charla.ConvID, *store.ConvState]
	peak    int                     // most states held since convs was last rebuilt
	loading map[charla.ConvID][]any // messages waiting for a conversation's load
	version uint64

	dirty       map[charla.ConvID]struct{}
	urgent      bool        // dirty holds a workflow change: saved at once
	saveTimer   *time.Timer // armed while dirty holds activity alone
	saving      bool
	saved       []charla.ConvID   // the conversations of the save in flight
	saveWaiters []func(err error) // answered when the save in flight is done
	nextWaiters []func(err error) // answered by the save after it

	subs     map[string]inboxSub // by conn PID id
	presence map[string]*agentPresence
	// counted are the staff conns presence counts, by PID id: a conn told
	// to join again (an inbox restart, a new leader in a cluster) may say
	// it is up twice, and must still count once.
	counted map[string]struct{}
	caps    map[string]int // agents' own capacities
	lastRR  string         // the agent the last auto-assignment went to
	// leads, in a cluster, says whether this node still holds the inbox's
	// lease, judged when a save is about to be written: a leader paused
	// past its lease must not overwrite what the next one saved (the
	// router stops this inbox once it sees the lease gone; this closes
	// the gap until then). nil on one node.
	leads func() bool

	io sync.WaitGroup
}

type inboxSub struct {
	pid  *actor.PID
	user charla.Sender
}

type agentPresence struct {
	role  charla.Role
	conns int
	away  bool
	state string // wire.Presence*
	gen   int    // invalidates a grace timer armed before the last change
}

// Messages to the inbox.
type (
	// convAppended: msgs were durably appended to conv (duplicates left
	// out), in seq order.
	convAppended struct {
		conv charla.ConvID
		msgs []charla.Message
	}
	// convRead: user moved their read cursor in conv to seq.
	convRead struct {
		conv charla.ConvID
		user charla.Sender
		seq  charla.Seq
	}
	// staffConn: a connection of an agent or admin opened (up) or closed.
	staffConn struct {
		user charla.Sender
		pid  *actor.PID
		up   bool
	}
	// inboxSubscribe: conn follows the conversations user may see; it is
	// answered with an inbox frame (soapFrame, the conn's frame message).
	inboxSubscribe struct {
		conn *actor.PID
		user charla.Sender
		ref  string
	}
	// presenceSet: user says they are away, or back online.
	presenceSet struct {
		user charla.Sender
		away bool
	}
	presenceGrace struct {
		user string
		gen  int
	}
	// workflowReq is an action on a conversation; answered with
	// workflowDone to replyTo once the change is durable.
	workflowReq struct {
		op      string // a wire.Type* action, or opTags
		conv    charla.ConvID
		by      charla.Sender
		to      string   // assign, transfer
		tags    []string // opTags
		ref     string
		replyTo *actor.PID
	}
	workflowDone struct {
		ref   string
		state store.ConvState
		err   *charla.Error
	}
	// inboxQuery runs fn against the store once every change before it is
	// saved, off the actor; answered with inboxAnswer.
	inboxQuery struct {
		fn      func(ctx context.Context, st workflowStore) (any, error)
		replyTo *actor.PID
	}
	inboxAnswer struct {
		v   any
		err error
	}
	// capacitySet changes an agent's capacity (negative: the default).
	capacitySet struct {
		agent    string
		capacity int
		replyTo  *actor.PID
	}
)

// opTags sets a conversation's tags (REST only).
const opTags = "tags"

// Internal messages of the inbox.
type (
	inboxLoaded struct {
		states   []store.ConvState
		top      uint64
		caps     map[string]int
		repaired []charla.ConvID // states brought up to their logs: to save
		err      error
	}
	convLoaded struct {
		conv  charla.ConvID
		state store.ConvState
		found bool
		err   error
	}
	statesSaved struct{ err error }
	// inboxRestarted goes from a failed inbox to every conn (through the
	// gateway): staff conns tell the new incarnation about themselves, and
	// those that followed the inbox follow it again.
	inboxRestarted struct{}
	// inboxSaveDue ends an activity's InboxSaveDelay.
	inboxSaveDue struct{}
)

func newInbox(d *deps, st store.Store) *inbox {
	ib := &inbox{d: d, convs: map[charla.ConvID]*store.ConvState{}, loading: map[charla.ConvID][]any{},
		dirty: map[charla.ConvID]struct{}{}, subs: map[string]inboxSub{}, presence: map[string]*agentPresence{}, caps: map[string]int{},
		counted: map[string]struct{}{}}
	if c := d.cluster; c != nil {
		ib.leads = func() bool { return c.inboxLeader() == c.Node }
	}
	if ws, ok := st.(workflowStore); ok {
		ib.st = ws
		ib.recent, _ = lru.New[charla.ConvID, *store.ConvState](recentInactive)
	}
	return ib
}

func (ib *inbox) Receive(ctx actor.Context) {
	if h := ib.d.hooks; h != nil && h.inboxReceive != nil {
		h.inboxReceive(typeName(ctx.Message()))
	}
	switch m := ctx.Message().(type) {
	case *actor.Started:
		ib.start(ctx)
	case inboxLoaded:
		ib.onStartLoaded(ctx, m)
	case convLoaded:
		ib.onConvLoaded(ctx, m)
	case statesSaved:
		ib.onSaved(ctx, m.err)
	case inboxSaveDue:
		ib.saveTimer = nil
		ib.save(ctx)
	case flushReq:
		// Shutdown's: answered once every change so far is saved.
		to := ctx.Sender()
		ib.nextWaiters = append(ib.nextWaiters, func(error) { ctx.Send(to, flushed{}) })
		ib.save(ctx)
	case presenceGrace:
		ib.onGrace(ctx, m)
	case *actor.Restarting:
		// The next incarnation starts with no subscriber and no presence:
		// the conns, told through the gateway, join it again.
		// In a cluster the router (our parent) tells every node's conns.
		to := ctx.ActorSystem().NewLocalPID(gatewayName)
		if ib.d.cluster != nil {
			to = ctx.Parent()
		}
		ctx.Send(to, inboxRestarted{})
		ib.failPending(ctx, charla.Errorf(charla.CodeUnavailable, "the inbox restarted; retry"))
		ib.stop()
	case *actor.Stopping:
		// After shutdown's flush nothing is pending; in a cluster, the
		// router stops the inbox of a node that lost the lead, with
		// actions in flight whose asker waits for an answer.
		ib.failPending(ctx, charla.Errorf(charla.CodeUnavailable, "the inbox moved to another node; retry"))
		ib.stop()
	default:
		if !ib.ready {
			ib.waiting = append(ib.waiting, m)
			return
		}
		ib.handle(ctx, m)
	}
}

// start loads the open conversations and the agents' capacities, off the
// actor; until they are in, messages wait.
func (ib *inbox) start(ctx actor.Context) {
	if ib.st == nil {
		ib.ready = true
		return
	}
	st := ib.st
	ib.spawnIO(ctx.Self(), ib.d.cfg.StoreWriteTimeout*10, func(c context.Context) any {
		states, top, err := st.LoadInbox(c)
		var repaired []charla.ConvID
		if err == nil {
			repaired, err = ib.repairActivity(c, states)
		}
		caps, cerr := st.AgentCapacities(c)
		if err == nil {
			err = cerr
		}
		return inboxLoaded{states: states, top: top, caps: caps, repaired: repaired, err: err}
	})
}

// spawnIO runs fn off the actor with a timeout, tracked by io (a stop
// waits for it), and sends what it returns to to.
func (ib *inbox) spawnIO(to *actor.PID, timeout time.Duration, fn func(ctx context.Context) any) {
	root := ib.d.root
	ib.io.Add(1)
	go func() {
		defer ib.io.Done()
		c, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		root.Send(to, fn(c))
	}()
}

// logReader reads the heads of many conversations in one call and a
// conversation's last message.
type logReader interface {
	Heads(ctx context.Context, convs []charla.ConvID) (map[charla.ConvID]charla.Seq, error)
	Range(ctx context.Context, conv charla.ConvID, after charla.Seq, limit int) ([]charla.Message, error)
}

// repairActivity brings the loaded states' activity (head, last message) up
// to their logs: a crash loses up to InboxSaveDelay of it. Off the actor,
// before the inbox is ready; it returns the states it changed.
func (ib *inbox) repairActivity(ctx context.Context, states []store.ConvState) ([]charla.ConvID, error) {
	lr, ok := ib.st.(logReader)
	if !ok {
		return nil, nil
	}
	start := time.Now()
	ids := make([]charla.ConvID, len(states))
	for i := range states {
		ids[i] = states[i].ID
	}
	heads, err := lr.Heads(ctx, ids)
	if err != nil {
		return nil, fmt.Errorf("inbox: repair: %w", err)
	}
	var repaired []charla.ConvID
	for i := range states {
		s := &states[i]
		head := heads[s.ID]
		if head == 0 || (head <= s.Head && s.Last != nil && s.Last.Seq >= head) {
			continue
		}
		last, err := lr.Range(ctx, s.ID, head-min(head, 1), 1)
		if err != nil {
			return nil, fmt.Errorf("inbox: repair %s: %w", s.ID, err)
		}
		if len(last) == 1 {
			s.Head, s.Last, s.LastActivity = head, preview(last[0]), last[0].TS
			repaired = append(repaired, s.ID)
		}
	}
	if len(repaired) > 0 {
		ib.d.log.Info().Int("repaired", len(repaired)).Int("conversations", len(states)).Dur("took", time.Since(start)).
			Msg("inbox: activity a stop did not save rebuilt from the message log")
	}
	return repaired, nil
}

func (ib *inbox) onStartLoaded(ctx actor.Context, m inboxLoaded) {
	if m.err != nil {
		// The store is down: start empty and load each conversation on
		// first use.
		ib.d.log.Warn().Err(m.err).Msg("inbox: open conversations could not be loaded; loading them one by one")
	}
	for i := range m.states {
		ib.convs[m.states[i].ID] = &m.states[i]
	}
	ib.version = m.top
	for _, id := range m.repaired {
		ib.convs[id].Version = ib.nextVersion()
		ib.dirty[id] = struct{}{}
	}
	if m.caps != nil {
		ib.caps = m.caps
	}
	ib.ready = true
	ib.save(ctx)
	waiting := ib.waiting
	ib.waiting = nil
	for _, w := range waiting {
		ib.handle(ctx, w)
	}
}

// target is the conversation a message is about, "" for none.
func target(msg any) charla.ConvID {
	switch m := msg.(type) {
	case convAppended:
		return m.conv
	case convRead:
		return m.conv
	case workflowReq:
		return m.conv
	}
	return ""
}

// recentInactive bounds inbox.recent: ~0.5 KB each.
const recentInactive = 1024

func (ib *inbox) handle(ctx actor.Context, msg any) {
	if conv := target(msg); conv != "" && ib.convs[conv] == nil {
		s, ok := (*store.ConvState)(nil), false
		if ib.recent != nil {
			s, ok = ib.recent.Peek(conv)
		}
		if !ok {
			ib.load(ctx, conv, msg)
			return
		}
		ib.recent.Remove(conv)
		ib.convs[conv] = s
	}
	switch m := msg.(type) {
	case convAppended:
		ib.onAppended(ctx, m)
	case convRead:
		ib.onRead(ctx, m)
	case workflowReq:
		ib.onAction(ctx, m)
	case staffConn:
		ib.onStaffConn(ctx, m)
	case inboxSubscribe:
		ib.subs[m.conn.Id] = inboxSub{pid: m.conn, user: m.user}
		ctx.Send(m.conn, soapFrame{frame: wire.Encode(wire.Inbox{Type: wire.TypeInbox, Ref: m.ref, Version: ib.version})})
		for user, p := range ib.presence {
			ctx.Send(m.conn, soapFrame{frame: wire.Encode(wire.Presence{Type: wire.TypePresence, User: user, Role: p.role, State: p.state})})
		}
		// Now, not when the agent connected: this subscriber sees the
		// assignments the queue gives them.
		ib.assignQueued(ctx)
	case presenceSet:
		if p := ib.presence[m.user.ID]; p != nil && p.conns > 0 {
			p.away = m.away
			ib.setPresence(ctx, m.user.ID, p)
			ib.assignQueued(ctx)
		}
	case inboxQuery:
		ib.query(ctx, m)
	case capacitySet:
		if m.capacity < 0 {
			delete(ib.caps, m.agent)
		} else {
			ib.caps[m.agent] = m.capacity
		}
		agent, capacity := m.agent, m.capacity
		ib.query(ctx, inboxQuery{replyTo: m.replyTo, fn: func(c context.Context, st workflowStore) (any, error) {
			return nil, st.SetAgentCapacity(c, agent, capacity)
		}})
		ib.assignQueued(ctx)
	}
}

// load reads conv's state off the actor; msg and what follows for conv
// wait for it.
func (ib *inbox) load(ctx actor.Context, conv charla.ConvID, msg any) {
	if q, busy := ib.loading[conv]; busy {
		ib.loading[conv] = append(q, msg)
		return
	}
	ib.loading[conv] = []any{msg}
	if ib.st == nil {
		ib.onConvLoaded(ctx, convLoaded{conv: conv})
		return
	}
	st := ib.st
	ib.spawnIO(ctx.Self(), DefaultRequestTimeout, func(c context.Context) any {
		s, found, err := st.LoadConvState(c, conv)
		return convLoaded{conv: conv, state: s, found: found, err: err}
	})
}

func (ib *inbox) onConvLoaded(ctx actor.Context, m convLoaded) {
	queued := ib.loading[m.conv]
	delete(ib.loading, m.conv)
	if m.err != nil {
		ib.d.log.Warn().Err(m.err).Str("conv", string(m.conv)).Msg("inbox: conversation state could not be loaded")
	}
	if m.found {
		ib.convs[m.conv] = &m.state
	}
	for _, msg := range queued {
		if ib.convs[m.conv] == nil {
			if a, ok := msg.(convAppended); ok {
				ib.create(a)
			} else {
				ib.refuse(ctx, msg, charla.Errorf(charla.CodeNotFound, "no conversation %s", m.conv))
				continue
			}
		}
		ib.handle(ctx, msg)
	}
}

// create makes the state of a conversation seen for the first time: a
// customer's starts pending (the bot answers), a staff-only one open.
func (ib *inbox) create(a convAppended) {
	first := a.msgs[0]
	s := &store.ConvState{ID: a.conv, Channel: "web", Status: store.StatusOpen, Tags: []string{}, CreatedAt: first.TS}
	if _, _, ok := a.conv.WhatsApp(); ok {
		s.Channel = "whatsapp"
	}
	if first.Sender.Role == charla.RoleCustomer {
		s.Customer, s.Status = a.conv.Owner(), store.StatusPending
	}
	ib.convs[a.conv] = s
	ib.peak = max(ib.peak, len(ib.convs))
	// A new conversation is saved at once: the start-up repair mends an
	// existing state, it cannot bring back one never saved.
	ib.urgent = true
}

func (ib *inbox) refuse(ctx actor.Context, msg any, err *charla.Error) {
	switch r := msg.(type) {
	case workflowReq:
		if r.replyTo != nil {
			ctx.Send(r.replyTo, workflowDone{ref: r.ref, err: err})
		}
	case inboxQuery:
		ctx.Send(r.replyTo, inboxAnswer{err: err})
	case capacitySet:
		ctx.Send(r.replyTo, inboxAnswer{err: err})
	}
}

// failPending answers everything this incarnation still owes, before a
// restart: the requests waiting for the start or a conversation's load,
// and those waiting for a save.
func (ib *inbox) failPending(ctx actor.Context, err *charla.Error) {
	for _, m := range ib.waiting {
		ib.refuse(ctx, m, err)
	}
	for _, q := range ib.loading {
		for _, m := range q {
			ib.refuse(ctx, m, err)
		}
	}
	for _, w := range append(ib.saveWaiters, ib.nextWaiters...) {
		w(err)
	}
	ib.waiting, ib.loading, ib.saveWaiters, ib.nextWaiters = nil, nil, nil, nil
}

func (ib *inbox) onAppended(ctx actor.Context, m convAppended) {
	s := ib.convs[m.conv]
	before := *s
	last := m.msgs[len(m.msgs)-1]
	s.Head = max(s.Head, last.Seq)
	s.Last = preview(last)
	s.LastActivity = last.TS
	customerWrote := false
	for _, msg := range m.msgs {
		switch msg.Sender.Role {
		case charla.RoleCustomer:
			customerWrote = true
		case charla.RoleAgent, charla.RoleAdmin:
			// Their own message is read by them: in the state's copy of
			// the cursors (what unread counts read), not the chat log's
			// read_cursors, which keep what clients said they read.
			s.Reads = setRead(s.Reads, msg.Sender.ID, msg.Seq)
		}
	}
	if customerWrote && s.Status == store.StatusResolved {
		s.Status, s.Assignee = store.StatusPending, ""
	}
	if customerWrote && s.Status == store.StatusPending && ib.d.bots != nil {
		for _, msg := range m.msgs {
			if msg.Sender.Role == charla.RoleCustomer {
				ctx.Send(ib.d.bots, botInput{conv: m.conv, customer: s.Customer, msg: msg})
			}
		}
	}
	ib.changed(ctx, s, before.Assignee, s.Status == before.Status)
}

func setRead(reads map[string]charla.Seq, user string, seq charla.Seq) map[string]charla.Seq {
	if reads == nil {
		reads = map[string]charla.Seq{}
	}
	if seq > reads[user] {
		reads[user] = seq
	}
	return reads
}

// preview is what a list shows of a message.
func preview(m charla.Message) *store.LastMessage {
	var b struct{ Text string }
	_ = json.Unmarshal(m.Body, &b)
	text := b.Text
	if len(text) > store.MaxPreview {
		cut := store.MaxPreview
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		text = text[:cut]
	}
	return &store.LastMessage{Seq: m.Seq, TS: m.TS, Sender: m.Sender, Text: text}
}

func (ib *inbox) onRead(ctx actor.Context, m convRead) {
	if m.user.Role != charla.RoleAgent && m.user.Role != charla.RoleAdmin {
		return // customers' cursors make no unread count of the inbox
	}
	s := ib.convs[m.conv]
	if s.Reads[m.user.ID] >= m.seq {
		return
	}
	s.Reads = setRead(s.Reads, m.user.ID, m.seq)
	ib.changed(ctx, s, s.Assignee, true)
}

// maySee is the rule an agent acts by: an agent sees the unassigned
// conversations and their own; an admin sees every one.
func maySee(u charla.Sender, s *store.ConvState) bool {
	switch u.Role {
	case charla.RoleAdmin:
		return true
	case charla.RoleAgent:
		return s.Assignee == "" || s.Assignee == u.ID
	case charla.RoleBot:
		return true // the bot hands off the conversations it serves
	}
	return false
}

func (ib *inbox) onAction(ctx actor.Context, m workflowReq) {
	s := ib.convs[m.conv]
	reply := func(err *charla.Error) {
		if m.replyTo != nil {
			ctx.Send(m.replyTo, workflowDone{ref: m.ref, state: cloneState(*s), err: err})
		}
	}
	if !maySee(m.by, s) {
		reply(charla.Errorf(charla.CodeForbidden, "%s may not act on %s: it is assigned to %s", m.by.ID, m.conv, s.Assignee))
		return
	}
	before := s.Assignee
	switch m.op {
	case wire.TypeTake:
		s.Assignee, s.Status = m.by.ID, store.StatusOpen
	case wire.TypeAssign, wire.TypeTransfer:
		if err := charla.ValidateUserID(m.to); err != nil {
			reply(charla.Errorf(charla.CodeBadRequest, "%s needs the user id of an agent: %v", m.op, err))
			return
		}
		s.Assignee, s.Status = m.to, store.StatusOpen
	case wire.TypeResolve:
		s.Status = store.StatusResolved
	case wire.TypeReopen:
		s.Status = store.StatusOpen
	case wire.TypeHandoff:
		s.Status = store.StatusOpen
		if s.Assignee == "" {
			s.Assignee = ib.pickAgent()
		}
	case opTags:
		s.Tags = slices.Compact(slices.Sorted(slices.Values(m.tags)))
	default:
		reply(charla.Errorf(charla.CodeBadRequest, "unknown action %q", m.op))
		return
	}
	s.LastActivity = time.Now().UTC().Truncate(time.Microsecond)
	ib.changed(ctx, s, before, false)
	if m.replyTo != nil {
		state, ref, to := cloneState(*s), m.ref, m.replyTo
		ib.nextWaiters = append(ib.nextWaiters, func(err error) {
			var e *charla.Error
			if err != nil {
				e = charla.Errorf(charla.CodeUnavailable, "the change is made but not yet stored; retry")
			}
			ctx.Send(to, workflowDone{ref: ref, state: state, err: e})
		})
		ib.save(ctx)
	}
	if m.op == wire.TypeResolve || m.op == wire.TypeTransfer || m.op == wire.TypeAssign {
		ib.assignQueued(ctx) // capacity may have been freed
	}
}

// pickAgent chooses, round-robin, an online agent (not away) under their
// capacity; "" when none is: the conversation waits unassigned.
func (ib *inbox) pickAgent() string {
	var online []string
	for user, p := range ib.presence {
		if p.role == charla.RoleAgent && p.state == wire.PresenceOnline {
			online = append(online, user)
		}
	}
	if len(online) == 0 {
		return ""
	}
	slices.Sort(online)
	load := map[string]int{}
	for _, s := range ib.convs {
		if s.Status == store.StatusOpen && s.Assignee != "" {
			load[s.Assignee]++
		}
	}
	start, _ := slices.BinarySearch(online, ib.lastRR+"\x00")
	for i := range online {
		user := online[(start+i)%len(online)]
		capacity, own := ib.caps[user]
		if !own {
			capacity = ib.d.cfg.AgentCapacity
		}
		if load[user] < capacity {
			ib.lastRR = user
			return user
		}
	}
	return ""
}

// assignQueued gives the open unassigned conversations, oldest first, to
// agents with room, once some came online or were freed.
func (ib *inbox) assignQueued(ctx actor.Context) {
	var queue []*store.ConvState
	for _, s := range ib.convs {
		if s.Status == store.StatusOpen && s.Assignee == "" && s.Customer != "" {
			queue = append(queue, s)
		}
	}
	slices.SortFunc(queue, func(a, b *store.ConvState) int { return a.LastActivity.Compare(b.LastActivity) })
	for _, s := range queue {
		agent := ib.pickAgent()
		if agent == "" {
			return
		}
		s.Assignee = agent
		ib.changed(ctx, s, "", false)
	}
}

// nextVersion is the version of a change: above every earlier one, and at
// least the clock in microseconds, so that versions keep growing across a
// restart even when the last ones issued were not saved yet (activity
// waits InboxSaveDelay) or the store could not say which was the highest.
func (ib *inbox) nextVersion() uint64 {
	ib.version = max(ib.version+1, uint64(time.Now().UnixMicro()))
	return ib.version
}

// changed records a change of s: a new version, a save, and a
// conversation frame to every subscriber who may see it (and to the
// previous assignee, who learns it left their queue). An activity change
// (see Config.InboxSaveDelay) is saved within the delay, any other at once.
func (ib *inbox) changed(ctx actor.Context, s *store.ConvState, prevAssignee string, activity bool) {
	s.Version = ib.nextVersion()
	ib.dirty[s.ID] = struct{}{}
	if activity && !ib.urgent {
		ib.saveLater(ctx)
	} else {
		ib.urgent = true
		ib.save(ctx)
	}
	for _, sub := range ib.subs {
		if maySee(sub.user, s) || (prevAssignee != "" && sub.user.ID == prevAssignee) {
			ctx.Send(sub.pid, soapFrame{frame: wire.Encode(ConversationFrame(*s, sub.user.ID, ""))})
		}
	}
}

// ConversationFrame is s as user sees it (their unread count).
func ConversationFrame(s store.ConvState, user, ref string) wire.Conversation {
	f := wire.Conversation{Type: wire.TypeConversation, Ref: ref, Conv: s.ID, Channel: s.Channel, Customer: s.Customer,
		Status: s.Status, Assignee: s.Assignee, Tags: s.Tags, Head: s.Head, Unread: s.Unread(user),
		LastActivity: s.LastActivity, Version: s.Version}
	if f.Tags == nil {
		f.Tags = []string{}
	}
	if s.Last != nil {
		f.Last = &wire.LastMessage{Seq: s.Last.Seq, TS: s.Last.TS, Sender: s.Last.Sender, Text: s.Last.Text}
	}
	return f
}

func cloneState(s store.ConvState) store.ConvState {
	s.Tags = slices.Clone(s.Tags)
	s.Reads = maps.Clone(s.Reads)
	if s.Last != nil {
		l := *s.Last
		s.Last = &l
	}
	return s
}

// saveLater saves within InboxSaveDelay.
func (ib *inbox) saveLater(ctx actor.Context) {
	if ib.saveTimer == nil && !ib.saving {
		ib.saveTimer = sendAfter(ib.d.root, ib.d.cfg.InboxSaveDelay, ctx.Self(), inboxSaveDue{})
	}
}

// save writes the dirty states unless a save is in flight (then the next
// one takes them): one round trip for any number of changes.
func (ib *inbox) save(ctx actor.Context) {
	if ib.saving || (len(ib.dirty) == 0 && len(ib.nextWaiters) == 0) {
		return
	}
	ib.urgent = false
	if ib.saveTimer != nil {
		ib.saveTimer.Stop() // this save takes the activity too
		ib.saveTimer = nil
	}
	ib.saveWaiters, ib.nextWaiters = ib.nextWaiters, nil
	if ib.st == nil || len(ib.dirty) == 0 {
		// Memory only: nothing to write, and an inactive state cannot be
		// kept for later (it is made anew on its next message).
		done := ib.dirty
		ib.dirty = map[charla.ConvID]struct{}{}
		for id := range done {
			ib.evict(id)
		}
		ib.onSaved(ctx, nil)
		return
	}
	batch := make([]store.ConvState, 0, len(ib.dirty))
	for id := range ib.dirty {
		batch = append(batch, cloneState(*ib.convs[id]))
	}
	ib.dirty = map[charla.ConvID]struct{}{} // not clear: a burst's buckets would stay
	ib.saving = true
	ib.saved = ib.saved[:0]
	for _, c := range batch {
		ib.saved = append(ib.saved, c.ID)
	}
	st, leads := ib.st, ib.leads
	ib.spawnIO(ctx.Self(), DefaultRequestTimeout, func(c context.Context) any {
		if leads != nil && !leads() {
			return statesSaved{err: &saveError{err: errNotInboxLeader, batch: batch}}
		}
		if err := st.SaveConvStates(c, batch); err != nil {
			// Not lost: onSaved marks the batch dirty again.
			return statesSaved{err: &saveError{err: err, batch: batch}}
		}
		return statesSaved{}
	})
}

// saveError carries a failed batch back so that it is saved again.
var errNotInboxLeader = errors.New("this node no longer holds the inbox's lease")

type saveError struct {
	err   error
	batch []store.ConvState
}

func (e *saveError) Error() string { return "save conversation states: " + e.err.Error() }

func (ib *inbox) onSaved(ctx actor.Context, err error) {
	ib.saving = false
	if se, ok := err.(*saveError); ok {
		ib.d.log.Warn().Err(se.err).Int("states", len(se.batch)).Msg("inbox: states not saved; retrying")
		for _, s := range se.batch {
			ib.dirty[s.ID] = struct{}{}
		}
	} else {
		for _, s := range ib.saved {
			ib.evict(s)
		}
	}
	ib.saved = nil
	waiters := ib.saveWaiters
	ib.saveWaiters = nil
	for _, w := range waiters {
		w(err)
	}
	switch {
	case err == nil && (ib.urgent || len(ib.nextWaiters) > 0):
		ib.save(ctx)
	case len(ib.dirty) > 0:
		// Activity alone, or a failed save: tried again after the delay.
		ib.saveLater(ctx)
	}
}

func (ib *inbox) stop() {
	if ib.saveTimer != nil {
		ib.saveTimer.Stop()
	}
	ib.io.Wait()
}

// evict drops conv's state from memory when it is out of the workflow
// (resolved, or no customer's) and has no change waiting to be saved.
func (ib *inbox) evict(conv charla.ConvID) {
	s := ib.convs[conv]
	if s == nil || (s.Customer != "" && s.Status != store.StatusResolved) {
		return
	}
	if _, dirty := ib.dirty[conv]; dirty {
		return
	}
	delete(ib.convs, conv)
	if ib.recent != nil {
		ib.recent.Add(conv, s)
	}
	// Go maps keep the buckets of their peak: rebuild once a burst has
	// gone, as conversations.shrink does.
	if ib.peak >= 1024 && len(ib.convs) <= ib.peak/4 {
		ib.convs = maps.Clone(ib.convs)
		ib.peak = len(ib.convs)
	}
}

func (ib *inbox) query(ctx actor.Context, m inboxQuery) {
	if ib.st == nil {
		ctx.Send(m.replyTo, inboxAnswer{err: charla.Errorf(charla.CodeUnavailable, "this store keeps no conversation lists")})
		return
	}
	st, fn := ib.st, m.fn
	ib.nextWaiters = append(ib.nextWaiters, func(error) {
		ib.spawnIO(m.replyTo, DefaultRequestTimeout, func(c context.Context) any {
			v, err := fn(c, st)
			return inboxAnswer{v: v, err: err}
		})
	})
	ib.save(ctx)
}

func (ib *inbox) onStaffConn(ctx actor.Context, m staffConn) {
	p := ib.presence[m.user.ID]
	_, counted := ib.counted[m.pid.Id]
	if !m.up {
		delete(ib.subs, m.pid.Id)
		delete(ib.counted, m.pid.Id)
		if p == nil || !counted {
			return
		}
		if p.conns--; p.conns <= 0 {
			p.conns = 0
			p.gen++
			sendAfter(ib.d.root, ib.d.cfg.PresenceGrace, ctx.Self(), presenceGrace{user: m.user.ID, gen: p.gen})
		}
		return
	}
	if counted {
		return
	}
	ib.counted[m.pid.Id] = struct{}{}
	if p == nil {
		p = &agentPresence{role: m.user.Role, state: wire.PresenceOffline}
		ib.presence[m.user.ID] = p
	}
	p.conns++
	p.gen++ // a reconnect within the grace period cancels the offline
	if p.state == wire.PresenceOffline {
		p.away = false
		ib.setPresence(ctx, m.user.ID, p)
	}
}

func (ib *inbox) onGrace(ctx actor.Context, m presenceGrace) {
	p := ib.presence[m.user]
	if p == nil || p.gen != m.gen || p.conns > 0 {
		return
	}
	p.state = wire.PresenceOffline
	ib.broadcastPresence(ctx, m.user, p)
	delete(ib.presence, m.user)
}

func (ib *inbox) setPresence(ctx actor.Context, user string, p *agentPresence) {
	state := wire.PresenceOnline
	if p.away {
		state = wire.PresenceAway
	}
	if state == p.state {
		return
	}
	p.state = state
	ib.broadcastPresence(ctx, user, p)
}

func (ib *inbox) broadcastPresence(ctx actor.Context, user string, p *agentPresence) {
	frame := wire.Encode(wire.Presence{Type: wire.TypePresence, User: user, Role: p.role, State: p.state})
	for _, sub := range ib.subs {
		ctx.Send(sub.pid, soapFrame{frame: frame})
	}
}
