package actors

import (
	"errors"
	"time"

	"github.com/rs/zerolog"

	"charla/store/spool"
)

// Config holds what the actor tree needs to know; cmd/charla fills it from
// flags and checks it with Validate before the tree is built.
//
// The comment of each field starts with the setting's name as Validate
// spells it, which is the engine's flag where there is one (README.md's
// configuration table), so that a problem reads as what the operator typed.
type Config struct {
	HeartbeatInterval time.Duration // heartbeat-interval: server ping period
	HeartbeatTimeout  time.Duration // heartbeat-timeout: silence after which a connection is closed (4008)
	SendQueueFrames   int           // send-queue-frames: per-connection outbound cap in frames (4008 past it)
	SendQueueBytes    int           // send-queue-bytes: per-connection outbound cap in bytes (4008 past it)
	MaxBodyBytes      int           // max-body-bytes: largest message body accepted (too_large past it)
	MaxSubscriptions  int           // max-subscriptions: conversations one connection may follow at once
	// max-sends-in-flight: sends one connection may have awaiting their ack
	// or error; past it a send is refused rate_limited (retry_after_ms).
	// Below send-queue-frames: a shutdown (or a store coming back) answers
	// every send in flight at once, and the answers must fit the queue.
	MaxSendsInFlight int
	// max-customer-conversations: conversations one customer may have loaded
	// at once (each costs memory until it idles out); staff are not bound.
	MaxCustomerConversations int
	DedupWindow              int           // dedup-window: client_msg_ids remembered per conversation in memory
	RecentWindow             int           // recent-window: messages kept per conversation to serve replays from memory
	ReplayPage               int           // replay-page: messages read from the store per replay page
	IdleTimeout              time.Duration // session-idle-timeout: a conversation with no activity and no subscriber stops after this
	SweepInterval            time.Duration // session-sweep-interval: how often leftovers are checked for idleness
	StoreBatchMax            int           // store-batch-max: most messages in one group commit
	// commit-delay: while messages arrive at 4 or more per delay, the
	// shortest time between the starts of two group commits, so that a
	// busy engine pays fewer fsyncs; 0 starts every commit at once. See
	// groupCommit.linger.
	CommitDelay       time.Duration
	StoreWriteTimeout time.Duration // store-write-timeout: with a spool, how long a write waits for the store before it is spooled
	StoreBreaker      BreakerConfig // store-breaker-*: with a spool, when the store is considered down
	DrainBatch        int           // drain-batch: messages per store call when draining the spool
	DrainTimeout      time.Duration // drain-timeout: deadline of one drain call; off the ack path, so far longer than StoreWriteTimeout
	// spool-dedup-window: with a spool, how long every ack stays in its
	// durable ack index, so that a resend is recognised during an outage
	// even past the in-memory DedupWindow (PROTOCOL.md's idempotency).
	SpoolDedupWindow time.Duration
	SpoolDedupMax    int            // spool-dedup-max: most acks the spool's ack index keeps (oldest pruned first)
	ShutdownGrace    time.Duration  // shutdown-timeout: how long in-flight sends may take to finish on shutdown
	SOAP             SOAPConfig     // soap-*, inventory-*, job-*: the inventory bridge (soapconfig.go)
	Alerts           AlertConfig    // alert-*: the alert rules and where alerts go (alerts.go)
	WhatsApp         WhatsAppConfig // whatsapp-*: the outbound WhatsApp policy (whatsappconfig.go)
	// agent-capacity: open conversations an agent is auto-assigned at most
	// unless they have their own (PUT /v1/agents/{id}/capacity).
	AgentCapacity int
	// presence-grace: how long an agent whose last connection closed stays
	// online, so that a reconnect does not flap their presence.
	PresenceGrace time.Duration
	// inbox-save-delay: how long a conversation's activity (its last
	// message, head and read cursors, which the message log holds too) may
	// wait to be saved in its workflow state, so that a busy conversation's
	// state is written a few times a second rather than at every message.
	// Workflow changes (status, assignee, tags) are saved at once; what a
	// crash loses of the activity is rebuilt from the log at start.
	InboxSaveDelay time.Duration
	Bot            BotConfig // bot-*: the chatbot (bots.go)
}

// DefaultConfig returns the engine's defaults, the ones README.md's
// configuration table lists.
func DefaultConfig() Config {
	return Config{
		HeartbeatInterval:        5 * time.Second,
		HeartbeatTimeout:         10 * time.Second,
		SendQueueFrames:          1024,
		SendQueueBytes:           4 << 20,
		MaxBodyBytes:             32 << 10,
		MaxSubscriptions:         1000,
		MaxSendsInFlight:         512,
		MaxCustomerConversations: 50,
		DedupWindow:              1024,
		RecentWindow:             256,
		ReplayPage:               256,
		IdleTimeout:              15 * time.Minute,
		SweepInterval:            5 * time.Minute,
		StoreBatchMax:            2000,
		CommitDelay:              time.Millisecond,
		StoreWriteTimeout:        time.Second,
		StoreBreaker:             BreakerConfig{Failures: 3, Window: 20, Ratio: 0.5, Cooldown: 2 * time.Second},
		DrainBatch:               1000,
		DrainTimeout:             10 * time.Second,
		SpoolDedupWindow:         24 * time.Hour,
		SpoolDedupMax:            2_000_000,
		// The engine's shutdown-timeout: SIGTERM waits this long for
		// in-flight sends (and Shutdown without a deadline as long).
		ShutdownGrace:  10 * time.Second,
		SOAP:           DefaultSOAPConfig(),
		Alerts:         DefaultAlertConfig(),
		WhatsApp:       DefaultWhatsAppConfig(),
		AgentCapacity:  5,
		PresenceGrace:  10 * time.Second,
		InboxSaveDelay: 500 * time.Millisecond,
		Bot:            DefaultBotConfig(),
	}
}

// Validate reports every problem of c at once (joined with errors.Join), so
// that an operator fixes a configuration in one round. Each problem names
// its setting as the field's comment does. The lower bounds are the ones the
// engine accepts for serving; a zero window or page would make the tree
// panic or spin at its first use.
func (c Config) Validate() error {
	var p problems
	p.atLeast("max-customer-conversations", c.MaxCustomerConversations, 1)
	p.positive("heartbeat-interval", c.HeartbeatInterval)
	p.positive("heartbeat-timeout", c.HeartbeatTimeout)
	if c.HeartbeatInterval > 0 && c.HeartbeatTimeout > 0 && c.HeartbeatTimeout <= c.HeartbeatInterval {
		p.bad("heartbeat-timeout (%s) must be longer than heartbeat-interval (%s), or a healthy client is closed between two pings", c.HeartbeatTimeout, c.HeartbeatInterval)
	}
	p.atLeast("send-queue-frames", c.SendQueueFrames, 16)
	p.atLeast("send-queue-bytes", c.SendQueueBytes, 64<<10)
	p.atLeast("max-body-bytes", c.MaxBodyBytes, 64)
	p.atLeast("max-subscriptions", c.MaxSubscriptions, 1)
	p.atLeast("max-sends-in-flight", c.MaxSendsInFlight, 1)
	if c.MaxSendsInFlight >= c.SendQueueFrames && c.SendQueueFrames >= 16 {
		p.bad("max-sends-in-flight (%d) must be below send-queue-frames (%d): their answers come at once when the engine shuts down, and more than the queue holds closes the client as a slow consumer", c.MaxSendsInFlight, c.SendQueueFrames)
	}
	p.atLeast("dedup-window", c.DedupWindow, 1)
	p.atLeast("recent-window", c.RecentWindow, 1)
	p.atLeast("replay-page", c.ReplayPage, 1)
	p.positive("session-idle-timeout", c.IdleTimeout)
	p.positive("session-sweep-interval", c.SweepInterval)
	p.atLeast("store-batch-max", c.StoreBatchMax, 1)
	if c.CommitDelay < 0 || c.CommitDelay > time.Second {
		p.bad("commit-delay must be between 0 and 1s (got %s): it is added to acks under load", c.CommitDelay)
	}
	p.positive("store-write-timeout", c.StoreWriteTimeout)
	p.add(c.StoreBreaker.validate("store-breaker-")...)
	p.atLeast("drain-batch", c.DrainBatch, 1)
	p.positive("drain-timeout", c.DrainTimeout)
	p.positive("spool-dedup-window", c.SpoolDedupWindow)
	p.atLeast("spool-dedup-max", c.SpoolDedupMax, 1)
	p.positive("shutdown-timeout", c.ShutdownGrace)
	p.add(c.SOAP.problems()...)
	p.add(c.Alerts.problems()...)
	p.add(c.WhatsApp.problems()...)
	p.atLeast("agent-capacity", c.AgentCapacity, 0)
	p.positive("presence-grace", c.PresenceGrace)
	p.positive("inbox-save-delay", c.InboxSaveDelay)
	p.add(c.Bot.problems()...)
	return errors.Join(p.errs...)
}

// SpoolOptions are the options to open the outage spool with (spool.Open):
// the ack index's bounds come from c, the rest are the spool's defaults.
func (c Config) SpoolOptions(log zerolog.Logger) spool.Options {
	o := spool.DefaultOptions()
	o.Logger, o.DedupWindow, o.DedupMax = log, c.SpoolDedupWindow, c.SpoolDedupMax
	return o
}

// validate returns every problem of b, each naming its setting as prefix
// plus the field in the engine's flag words (store-breaker-failures...).
func (b BreakerConfig) validate(prefix string) []error {
	var p problems
	p.atLeast(prefix+"failures", b.Failures, 1)
	if b.Window < 0 {
		p.bad("%swindow must not be negative (got %d)", prefix, b.Window)
	}
	switch {
	case b.Ratio < 0 || b.Ratio > 1:
		p.bad("%sratio must be between 0 and 1 (got %g)", prefix, b.Ratio)
	case b.Ratio > 0 && b.Window < 1:
		// The ratio rule reads the last Window outcomes: without any it
		// could never trip, which is surely not what was meant.
		p.bad("%sratio %g needs a %swindow of at least 1 (got %d)", prefix, b.Ratio, prefix, b.Window)
	}
	p.positive(prefix+"cooldown", b.Cooldown)
	return p.errs
}
