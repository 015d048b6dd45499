package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/google/uuid"

	"charla"
	"charla/bot"
	"charla/store"
	"charla/wire"
)

// botSession is the chatbot of one conversation: it runs the flow on each
// customer message, posts its replies like any sender (System.Post's path:
// the conversation actor, so they reach the customer through the channel),
// looks stock up through the soap actor, and hands off to the inbox.
//
// One lookup at a time per session: messages that arrive meanwhile wait,
// so the customer gets answers in the order they asked. A slow lookup gets
// the flow's "checking" message after CheckingAfter and an apology after
// GiveUpAfter; other sessions never wait for it (each is its own actor, the
// soap actor answers by message).
//
// Idle for the session timeout (its own timer, and the bots actor's
// sweep), it saves its state and stops; the next message spawns a session
// that loads it.
type botSession struct {
	d        *deps
	st       botStore
	flow     *bot.Flow
	conv     charla.ConvID
	customer string
	self     *actor.PID

	loaded  bool
	state   bot.State
	waiting []botInput // arrived before the load, or during a lookup

	lookup       *botLookup
	lastActivity time.Time
	idleTimer    *time.Timer
	expiring     bool
}

// botLookup is the stock or reserve call a session waits for.
type botLookup struct {
	id       int // matches the timers and the reply to this lookup
	effect   bot.Effect
	trigger  charla.Message // the customer message it answers
	out      int            // replies posted for trigger so far
	checking *time.Timer
	giveUp   *time.Timer
}

// Messages of a bot session.
type (
	botLoaded struct {
		sess  store.BotSession
		found bool
		err   error
	}
	botChecking struct{ id int }
	botGiveUp   struct{ id int }
	botSaved    struct{ err error }
)

func newBotSession(d *deps, st botStore, conv charla.ConvID, customer string) *botSession {
	return &botSession{d: d, st: st, flow: d.cfg.Bot.Flow, conv: conv, customer: customer}
}

func (s *botSession) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		s.self = ctx.Self()
		s.lastActivity = time.Now()
		s.armIdle(s.d.cfg.Bot.SessionTimeout)
		s.load()
	case botLoaded:
		s.onLoaded(ctx, m)
	case botInput:
		s.lastActivity = time.Now()
		if !s.loaded || s.lookup != nil {
			s.waiting = append(s.waiting, m)
			return
		}
		s.handle(ctx, m)
	case stockReply:
		s.onStock(ctx, m)
	case searchReply:
		s.onSearch(ctx, m)
	case botChecking:
		if l := s.lookup; l != nil && l.id == m.id {
			s.post(ctx, l, bot.Text(s.flow.Messages.Checking))
		}
	case botGiveUp:
		if l := s.lookup; l != nil && l.id == m.id {
			s.d.log.Warn().Str("conv", string(s.conv)).Str("sku", l.effect.SKU).Msg("bot: inventory lookup gave up")
			s.post(ctx, l, bot.Text(s.flow.Messages.Apology))
			s.finishLookup(ctx, l)
		}
	case sendReply:
		if m.err != nil {
			s.d.log.Warn().Str("conv", string(s.conv)).Str("code", string(m.err.Code)).Msg("bot: reply not posted: " + m.err.Message)
		}
	case idleCheck:
		s.onIdleCheck(ctx)
	case botExpire:
		s.expiring = true
		s.save(ctx)
	case botSaved:
		if m.err != nil {
			s.d.log.Warn().Err(m.err).Str("conv", string(s.conv)).Msg("bot: session state not saved; the next message starts over")
		}
		ctx.Stop(ctx.Self())
	case *actor.Stopping:
		if s.idleTimer != nil {
			s.idleTimer.Stop()
		}
		if s.lookup != nil {
			s.lookup.stop()
		}
	}
}

// load reads the saved session off the actor.
func (s *botSession) load() {
	if s.st == nil {
		s.d.root.Send(s.self, botLoaded{})
		return
	}
	st, conv, root, self := s.st, s.conv, s.d.root, s.self
	go func() {
		c, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
		defer cancel()
		sess, found, err := st.LoadBotSession(c, conv)
		root.Send(self, botLoaded{sess: sess, found: found, err: err})
	}()
}

func (s *botSession) onLoaded(ctx actor.Context, m botLoaded) {
	s.loaded = true
	if m.err != nil {
		s.d.log.Warn().Err(m.err).Str("conv", string(s.conv)).Msg("bot: saved session unreadable; starting over")
	}
	if m.found && s.flow.Resume == bot.ResumeContext {
		if err := json.Unmarshal(m.sess.State, &s.state); err != nil {
			s.state = bot.State{}
		}
	}
	s.drain(ctx)
}

// drain handles waiting messages until one starts a lookup.
func (s *botSession) drain(ctx actor.Context) {
	for len(s.waiting) > 0 && s.lookup == nil {
		m := s.waiting[0]
		s.waiting = s.waiting[1:]
		s.handle(ctx, m)
	}
	if len(s.waiting) == 0 {
		s.waiting = nil
	}
}

func (s *botSession) handle(ctx actor.Context, m botInput) {
	if s.state.HandedOff {
		// People have it now; a message after a resolve reopens it as
		// pending and the bot starts over.
		s.state = bot.State{}
	}
	l := &botLookup{trigger: m.msg}
	step := s.flow.Handle(&s.state, bot.ParseInput(m.msg.Body), time.Now())
	for _, r := range step.Replies {
		s.post(ctx, l, r)
	}
	switch step.Effect.Kind {
	case bot.ActionStock, bot.ActionReserve:
		l.id = int(m.msg.Seq)
		l.effect = step.Effect
		s.lookup = l
		req := stockReq{sku: step.Effect.SKU, replyTo: ctx.Self()}
		if step.Effect.Kind == bot.ActionReserve {
			// The reservation's idempotency key is the message that asked
			// for it: a redelivered message reserves nothing twice.
			req.qty, req.resv = 1, "bot-"+l.msgID(99)
		}
		if step.Effect.Query != "" {
			ctx.Send(s.d.soap, searchReq{query: step.Effect.Query, replyTo: ctx.Self()})
		} else {
			ctx.Send(s.d.soap, req)
		}
		l.checking = sendAfter(s.d.root, time.Duration(s.flow.CheckingAfter), ctx.Self(), botChecking{id: l.id})
		l.giveUp = sendAfter(s.d.root, time.Duration(s.flow.GiveUpAfter), ctx.Self(), botGiveUp{id: l.id})
	case bot.ActionHandoff:
		ctx.Send(s.d.inbox, workflowReq{op: wire.TypeHandoff, conv: s.conv, by: botSender})
	}
}

// botSender is who the bot posts as.
var botSender = charla.Sender{ID: "bot", Role: charla.RoleBot}

func (s *botSession) onStock(ctx actor.Context, m stockReply) {
	l := s.lookup
	if l == nil || m.sku != l.effect.SKU {
		return // the answer to a lookup that gave up
	}
	msgs := s.flow.Messages
	vars := map[string]string{"query": l.effect.SKU, "sku": l.effect.SKU}
	var text string
	switch {
	case m.err != nil && m.err.Code == charla.CodeNotFound, m.err != nil && m.err.Code == charla.CodeBadRequest:
		text = bot.Fill(msgs.NotFound, vars)
	case m.err != nil:
		text = msgs.Apology
	case l.effect.Kind == bot.ActionReserve:
		vars["quantity"], vars["reservation"] = strconv.Itoa(m.resv.Quantity), m.resv.ReservationID
		text = bot.Fill(msgs.Reserved, vars)
	default:
		vars["name"], vars["sku"], vars["quantity"], vars["warehouse"] = m.item.Name, m.item.SKU, strconv.Itoa(m.item.Quantity), m.item.Warehouse
		tmpl := msgs.Stock
		if m.stale {
			tmpl, vars["age"] = msgs.StockStale, m.age.Round(time.Second).String()
		}
		text = bot.Fill(tmpl, vars)
	}
	s.post(ctx, l, bot.Text(text))
	s.finishLookup(ctx, l)
}

// maxMatches is how many products a search's answer lists.
const maxMatches = 5

// onSearch answers a stock step by product name: one match is looked up
// as its SKU would have been (the same lookup, so the same timers); several
// are listed and the step waits for the customer's pick; none is not found.
func (s *botSession) onSearch(ctx actor.Context, m searchReply) {
	l := s.lookup
	if l == nil || l.effect.Query == "" || m.query != l.effect.Query {
		return // the answer to a lookup that gave up
	}
	msgs := s.flow.Messages
	vars := map[string]string{"query": m.query}
	switch ps := m.page.Products; {
	case m.err != nil && m.err.Code == charla.CodeBadRequest, m.err == nil && len(ps) == 0:
		s.post(ctx, l, bot.Text(bot.Fill(msgs.NotFound, vars)))
	case m.err != nil:
		s.post(ctx, l, bot.Text(msgs.Apology))
	case len(ps) == 1:
		l.effect.SKU, l.effect.Query = ps[0].SKU, ""
		s.state.SKU = ps[0].SKU
		ctx.Send(s.d.soap, stockReq{sku: ps[0].SKU, replyTo: ctx.Self()})
		return
	default:
		var list strings.Builder
		for _, p := range ps[:min(len(ps), maxMatches)] {
			fmt.Fprintf(&list, "\n%s — %s: %d", p.SKU, p.Name, p.Quantity)
		}
		vars["count"], vars["list"] = strconv.Itoa(m.page.Total), strings.TrimPrefix(list.String(), "\n")
		s.post(ctx, l, bot.Text(bot.Fill(msgs.Matches, vars)))
		// The step waits for the SKU of one of them.
		l.stop()
		s.state.Awaiting = true
		s.lookup = nil
		s.drain(ctx)
		return
	}
	s.finishLookup(ctx, l)
}

func (s *botSession) finishLookup(ctx actor.Context, l *botLookup) {
	l.stop()
	for _, r := range s.flow.After(&s.state).Replies {
		s.post(ctx, l, r)
	}
	s.lookup = nil
	s.drain(ctx)
}

func (l *botLookup) stop() {
	if l.checking != nil {
		l.checking.Stop()
	}
	if l.giveUp != nil {
		l.giveUp.Stop()
	}
}

// msgID is the client_msg_id of the n-th reply to the trigger message: a
// UUID derived from both, so that a trigger handled twice (a session that
// restarted) posts duplicates the conversation recognises, not new
// messages.
func (l *botLookup) msgID(n int) string {
	return uuid.NewSHA1(uuid.NameSpaceURL, fmt.Appendf(nil, "charla-bot:%s:%d:%d", l.trigger.Conv, l.trigger.Seq, n)).String()
}

// post sends one reply to the conversation, as the bot.
func (s *botSession) post(ctx actor.Context, l *botLookup, body json.RawMessage) {
	l.out++
	ctx.Send(s.d.conversations, sendReq{conn: ctx.Self(), msg: charla.Message{Conv: s.conv, ClientMsgID: l.msgID(l.out), Sender: botSender, Body: body}})
}

func (s *botSession) onIdleCheck(ctx actor.Context) {
	idle := time.Since(s.lastActivity)
	timeout := s.d.cfg.Bot.SessionTimeout
	if s.expiring {
		return
	}
	if idle < timeout || s.lookup != nil || !s.loaded {
		s.armIdle(max(timeout-idle, 10*time.Millisecond))
		return
	}
	ctx.Send(ctx.Parent(), botExpireReq{pid: ctx.Self()})
}

func (s *botSession) armIdle(d time.Duration) {
	if s.idleTimer == nil {
		s.idleTimer = sendAfter(s.d.root, d, s.self, idleCheck{})
		return
	}
	s.idleTimer.Reset(d)
}

// save persists the state off the actor; botSaved stops it.
func (s *botSession) save(ctx actor.Context) {
	if s.st == nil {
		ctx.Send(ctx.Self(), botSaved{})
		return
	}
	state, _ := json.Marshal(s.state)
	sess := store.BotSession{Conv: s.conv, Customer: s.customer, State: state,
		ExpiresAt: s.lastActivity.Add(s.d.cfg.Bot.SessionTimeout), UpdatedAt: time.Now()}
	st, root, self := s.st, s.d.root, s.self
	go func() {
		c, cancel := context.WithTimeout(context.Background(), DefaultRequestTimeout)
		defer cancel()
		root.Send(self, botSaved{err: st.SaveBotSession(c, sess)})
	}()
}
