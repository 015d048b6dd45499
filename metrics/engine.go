package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"charla"
	"charla/actors"
	"charla/ratelimit"
	"charla/wire"
)

// desc is one series of the collector: its Desc and its value type.
type desc struct {
	*prometheus.Desc
	kind prometheus.ValueType
}

const (
	cnt = prometheus.CounterValue
	gau = prometheus.GaugeValue
)

// engineDescs are the collector's series, built once so that Describe and
// Collect agree.
type engineDescs struct {
	connsActive, connsOpened, connsClosed, slowConsumer              desc
	framesIn, framesOut, errorsSent                                  desc
	messages, duplicates                                             desc
	convActive, convLoaded, convUnloaded, restarts                   desc
	commits, storeErrors                                             desc
	breakerState, breakerOpen, breakerTrips                          desc
	spoolDepth, spooled, drained, deadLetters                        desc
	rateLimited                                                      desc
	soapCalls, soapRetries, soapTimeouts, soapFailures, soapRejected desc
	soapCoalesced, soapStale, soapInflight, soapQueued               desc
	soapJobs, soapJobsActive                                         desc
	cacheHits, cacheMisses, cacheStale, cacheHitRatio                desc
	poolAcquired, poolIdle, poolTotal, poolMax, poolConstructing     desc
	poolAcquires, poolEmptyAcquires, poolCanceled                    desc
	poolAcquireSeconds, poolEmptyWaitSeconds                         desc
	dbOp, dbOpErrors, dbOpRetries, dbOpMax, dbAppended, dbDuplicates desc
	waWebhooks, waPending, waMessages, waMedia, waStatuses           desc
	waCalls, waSent, waThrottled, waFailed, waUnknown, waOpen        desc
	botActive, botExpired                                            desc
	clForwarded, clServed, clUnanswered, clFenced, clMoved, clShards desc
}

// collector turns the engine's own counters into series at scrape time:
// one read of each atomic per scrape, nothing on the hot path.
type collector struct {
	src   Sources
	descs []*prometheus.Desc
	d     engineDescs
}

func newEngineCollector(src Sources) *collector {
	c := &collector{src: src}
	n := func(name, help string, kind prometheus.ValueType, labels ...string) desc {
		d := prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
		c.descs = append(c.descs, d)
		return desc{d, kind}
	}
	d := &c.d
	d.connsActive = n("connections_active", "Open client connections (WebSocket and poll sessions).", gau)
	d.connsOpened = n("connections_opened_total", "Client connections opened.", cnt)
	d.connsClosed = n("connections_closed_total", "Client connections closed, by reason (the close reason, e.g. slow_consumer, heartbeat_timeout, client_closed).", cnt, "reason")
	d.slowConsumer = n("slow_consumer_closes_total", "Connections closed because their client did not read (4008 slow consumer).", cnt)
	d.framesIn = n("frames_in_total", "Client frames handled, by type (other: unknown types).", cnt, "type")
	d.framesOut = n("frames_out_total", "Server frames queued for clients, by type.", cnt, "type")
	d.errorsSent = n("errors_sent_total", "Error frames sent to clients, by code.", cnt, "code")
	d.messages = n("messages_stored_total", "Messages accepted and stored (acked once durable).", cnt)
	d.duplicates = n("duplicates_total", "Sends answered duplicate:true (the client_msg_id was already stored).", cnt)
	d.convActive = n("conversations_active", "Conversation actors alive.", gau)
	d.convLoaded = n("conversations_loaded_total", "Conversation actors that loaded their state from the store.", cnt)
	d.convUnloaded = n("conversations_unloaded_total", "Conversation actors unloaded (idle, or their load failed).", cnt)
	d.restarts = n("actor_restarts_total", "Actors restarted after a failure, by actor (conversation, deps/store, deps/soap, ...).", cnt, "actor")
	d.commits = n("group_commits_total", "Group commits (store or spool).", cnt)
	d.storeErrors = n("store_write_errors_total", "Group commits whose store write failed (spooled when a spool covers the outage).", cnt)
	d.breakerState = n("breaker_state", "Circuit breaker state per dependency: 0 closed, 1 open, 2 half-open.", gau, "dependency")
	d.breakerOpen = n("breaker_open", "1 while the dependency's breaker is not closed (open or half-open), else 0.", gau, "dependency")
	d.breakerTrips = n("breaker_trips_total", "Times the dependency's breaker opened.", cnt, "dependency")
	d.spoolDepth = n("spool_depth", "Messages acked from the outage spool and not yet in the database.", gau)
	d.spooled = n("spooled_total", "Messages ever acked from the outage spool.", cnt)
	d.drained = n("spool_drained_total", "Messages moved from the spool into the database.", cnt)
	d.deadLetters = n("dead_letters", "Spooled messages the database refused, set aside.", gau)
	d.rateLimited = n("rate_limit_rejections_total", "Requests refused by a rate limit, by class (auth, chat, media, api, upgrade).", cnt, "class")
	d.soapCalls = n("soap_calls_total", "SOAP attempts sent to the inventory service, retries included.", cnt)
	d.soapRetries = n("soap_retries_total", "SOAP attempts after the first of a call.", cnt)
	d.soapTimeouts = n("soap_timeouts_total", "SOAP attempts that ran out of time.", cnt)
	d.soapFailures = n("soap_failures_total", "SOAP attempts that failed, timeouts included.", cnt)
	d.soapRejected = n("soap_rejected_total", "Inventory requests refused at once (queue full, breaker open without a fallback, too many jobs).", cnt)
	d.soapCoalesced = n("soap_coalesced_total", "Inventory requests that joined a call already running or waiting.", cnt)
	d.soapStale = n("soap_stale_answers_total", "Inventory answers served from a last known value.", cnt)
	d.soapInflight = n("soap_inflight", "SOAP calls in flight.", gau)
	d.soapQueued = n("soap_queued", "SOAP calls waiting for a slot.", gau)
	d.soapJobs = n("soap_jobs_total", "Inventory requests that became jobs (slower than the answer budget).", cnt)
	d.soapJobsActive = n("soap_jobs_active", "Inventory jobs not finished yet.", gau)
	d.cacheHits = n("inventory_cache_hits_total", "Inventory lookups answered fresh from the cache.", cnt)
	d.cacheMisses = n("inventory_cache_misses_total", "Inventory lookups the cache could not answer.", cnt)
	d.cacheStale = n("inventory_cache_stale_total", "Inventory lookups that found only an expired value.", cnt)
	d.cacheHitRatio = n("inventory_cache_hit_ratio", "Fresh hits over all inventory cache lookups since start (0 before the first).", gau)
	d.poolAcquired = n("db_pool_acquired_conns", "PostgreSQL connections in use.", gau)
	d.poolIdle = n("db_pool_idle_conns", "PostgreSQL connections idle in the pool.", gau)
	d.poolTotal = n("db_pool_total_conns", "PostgreSQL connections open.", gau)
	d.poolMax = n("db_pool_max_conns", "The pool's size (db-max-conns).", gau)
	d.poolConstructing = n("db_pool_constructing_conns", "PostgreSQL connections being opened.", gau)
	d.poolAcquires = n("db_pool_acquires_total", "Connections taken from the pool.", cnt)
	d.poolEmptyAcquires = n("db_pool_empty_acquires_total", "Acquires that found the pool empty and waited (a starved pool).", cnt)
	d.poolCanceled = n("db_pool_canceled_acquires_total", "Acquires given up before a connection came.", cnt)
	d.poolAcquireSeconds = n("db_pool_acquire_seconds_total", "Time spent acquiring connections.", cnt)
	d.poolEmptyWaitSeconds = n("db_pool_empty_acquire_wait_seconds_total", "Time spent waiting on an empty pool.", cnt)
	d.dbOp = n("db_op_seconds", "PostgreSQL operations, by op: count and summed duration (retries and backoff included).", prometheus.UntypedValue, "op")
	d.dbOpErrors = n("db_op_errors_total", "PostgreSQL operations that failed after their retries, by op.", cnt, "op")
	d.dbOpRetries = n("db_op_retries_total", "PostgreSQL attempts after the first, by op.", cnt, "op")
	d.dbOpMax = n("db_op_max_seconds", "The slowest PostgreSQL operation since start, by op.", gau, "op")
	d.dbAppended = n("db_appended_messages_total", "Messages written to PostgreSQL (appends and spool drains).", cnt)
	d.dbDuplicates = n("db_duplicate_messages_total", "Messages PostgreSQL reported as already stored.", cnt)
	d.waWebhooks = n("whatsapp_webhook_events_total", "Signed webhooks, by outcome: recorded, duplicate (a redelivery), refused (answered 503), problem (processed with a problem recorded).", cnt, "kind")
	d.waPending = n("whatsapp_webhook_pending", "Webhook events recorded and not yet processed.", gau)
	d.waMessages = n("whatsapp_messages_in_total", "Inbound WhatsApp messages posted to their conversation (redeliveries not counted).", cnt)
	d.waMedia = n("whatsapp_media_total", "Inbound media, by outcome: stored, refused (too large, type not allowed, download failed).", cnt, "outcome")
	d.waStatuses = n("whatsapp_statuses_total", "Delivery status notifications received.", cnt)
	d.waCalls = n("whatsapp_send_calls_total", "Graph API send calls started.", cnt)
	d.waSent = n("whatsapp_sent_total", "Outbound messages the Graph API accepted.", cnt)
	d.waThrottled = n("whatsapp_throttled_total", "Graph API calls answered with a throttling code (retried after a backoff).", cnt)
	d.waFailed = n("whatsapp_failed_total", "Outbound messages failed for good (the agent sees the error).", cnt)
	d.waUnknown = n("whatsapp_unknown_outcome_total", "Graph API calls whose outcome was lost (never resent; settled by a status or failed).", cnt)
	d.waOpen = n("whatsapp_outbox_open", "Outbox entries not final yet.", gau)
	d.botActive = n("bot_sessions_active", "Chatbot session actors alive.", gau)
	d.botExpired = n("bot_sessions_expired_total", "Chatbot sessions stopped (idle past the session timeout, or at shutdown).", cnt)
	d.clForwarded = n("cluster_forwarded_total", "Requests forwarded to the node that owns their conversation.", cnt)
	d.clServed = n("cluster_served_total", "Requests other nodes forwarded to this one.", cnt)
	d.clUnanswered = n("cluster_unanswered_total", "Forwarded requests the owner did not answer within cluster-request-timeout (the client got unavailable).", cnt)
	d.clFenced = n("cluster_fenced_writes_total", "Writes refused by the fence: another node holds their shard now.", cnt)
	d.clMoved = n("cluster_moves_total", "Conversation actors and proxies stopped because their shard changed hands.", cnt)
	d.clShards = n("cluster_shards_held", "Shards this node holds now.", gau)
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func emit(ch chan<- prometheus.Metric, d desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d.Desc, d.kind, v, labels...)
}

// Known label values, emitted at 0 before their first event so that a
// rate() over them has a start (Prometheus' advice for bounded labels).
var (
	knownReasons = func() []string {
		var out []string
		for _, d := range []charla.Disconnect{charla.DisconnectNormal, charla.DisconnectGoingAway, charla.DisconnectFrameTooLarge,
			charla.DisconnectInternal, charla.DisconnectServiceRestart, charla.DisconnectTokenExpired, charla.DisconnectForbidden,
			charla.DisconnectSlowConsumer, charla.DisconnectHeartbeatTimeout, charla.DisconnectRateLimited, charla.DisconnectClientClosed} {
			out = append(out, d.Label())
		}
		return out
	}()
	knownCodes = []charla.Code{charla.CodeBadRequest, charla.CodeUnauthorized, charla.CodeForbidden, charla.CodeNotFound,
		charla.CodeRateLimited, charla.CodeTooLarge, charla.CodeUnavailable, charla.CodeInternal}
	knownFrames = append(wire.FrameTypes[:], actors.OtherFrameType)
	knownActors = []string{"conversation", "deps/store", "deps/soap", "ops/alerts"}
)

// withKnown adds the known keys missing from m, at 0.
func withKnown[K ~string](m map[K]int64, known []K) map[K]int64 {
	for _, k := range known {
		if _, ok := m[k]; !ok {
			m[k] = 0
		}
	}
	return m
}

// emitMap emits one series per label value, in a stable order.
func emitMap[K ~string](ch chan<- prometheus.Metric, d desc, m map[K]int64) {
	keys := make([]K, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		emit(ch, d, float64(m[k]), string(k))
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	sys, d := c.src.System, &c.d
	st := sys.Stats()
	emit(ch, d.connsActive, float64(st.ConnsActive.Load()))
	emit(ch, d.connsOpened, float64(st.Connects.Load()))
	closed := withKnown(st.Disconnects(), knownReasons)
	emitMap(ch, d.connsClosed, closed)
	emit(ch, d.slowConsumer, float64(closed[charla.DisconnectSlowConsumer.Label()]))
	emitMap(ch, d.framesIn, withKnown(st.FramesIn(), knownFrames))
	emitMap(ch, d.framesOut, withKnown(st.FramesOut(), knownFrames))
	emitMap(ch, d.errorsSent, withKnown(st.Errors(), knownCodes))
	emit(ch, d.messages, float64(st.MessagesIn.Load()))
	emit(ch, d.duplicates, float64(st.Duplicates.Load()))
	emit(ch, d.convActive, float64(st.ConversationsActive.Load()))
	emit(ch, d.convLoaded, float64(st.ConversationsLoaded.Load()))
	emit(ch, d.convUnloaded, float64(st.ConversationsIdled.Load()))
	emitMap(ch, d.restarts, withKnown(st.Restarts(), knownActors))
	emit(ch, d.commits, float64(st.StoreWrites.Load()))
	emit(ch, d.storeErrors, float64(st.StoreErrors.Load()))

	c.breaker(ch, "store", actors.BreakerState(st.StoreBreaker.Load()), st.BreakerTrips.Load())
	if sys.SOAPState() != "off" {
		c.breaker(ch, "soap", actors.BreakerState(st.SOAP.Breaker.Load()), st.SOAP.Trips.Load())
	}
	emit(ch, d.spoolDepth, float64(st.SpoolDepth.Load()))
	emit(ch, d.spooled, float64(st.Spooled.Load()))
	emit(ch, d.drained, float64(st.Drained.Load()))
	emit(ch, d.deadLetters, float64(st.DeadLetters.Load()))

	if c.src.Limits != nil {
		for _, class := range []ratelimit.Class{ratelimit.Auth, ratelimit.Chat, ratelimit.Media, ratelimit.API, ratelimit.Upgrade} {
			emit(ch, d.rateLimited, float64(c.src.Limits.Refused(class)), class.String())
		}
	}

	s := &st.SOAP
	emit(ch, d.soapCalls, float64(s.Calls.Load()))
	emit(ch, d.soapRetries, float64(s.Retries.Load()))
	emit(ch, d.soapTimeouts, float64(s.Timeouts.Load()))
	emit(ch, d.soapFailures, float64(s.Failures.Load()))
	emit(ch, d.soapRejected, float64(s.Rejected.Load()))
	emit(ch, d.soapCoalesced, float64(s.Coalesced.Load()))
	emit(ch, d.soapStale, float64(s.Stale.Load()))
	emit(ch, d.soapInflight, float64(s.Inflight.Load()))
	emit(ch, d.soapQueued, float64(s.Queued.Load()))
	emit(ch, d.soapJobs, float64(s.Jobs.Load()))
	active, _ := sys.Jobs()
	emit(ch, d.soapJobsActive, float64(active))
	if cache := sys.InventoryCache(); cache != nil {
		cs := cache.Stats()
		emit(ch, d.cacheHits, float64(cs.Hits))
		emit(ch, d.cacheMisses, float64(cs.Misses))
		emit(ch, d.cacheStale, float64(cs.Stale))
		emit(ch, d.cacheHitRatio, cs.HitRatio())
	}
	if c.src.Store != nil {
		c.store(ch)
	}
	emit(ch, d.botActive, float64(st.BotSessions.Load()))
	if sys.Clustered() {
		cl := &st.Cluster
		emit(ch, d.clForwarded, float64(cl.Forwarded.Load()))
		emit(ch, d.clServed, float64(cl.Served.Load()))
		emit(ch, d.clUnanswered, float64(cl.Unanswered.Load()))
		emit(ch, d.clFenced, float64(cl.Fenced.Load()))
		emit(ch, d.clMoved, float64(cl.Moved.Load()))
		emit(ch, d.clShards, float64(cl.ShardsHeld.Load()))
	}
	emit(ch, d.botExpired, float64(st.BotSessionsExpired.Load()))
	if in := sys.InboundStats(); in != nil {
		c.whatsapp(ch, in, &st.WhatsApp)
	}
}

// whatsapp emits the channel's series, only when it is on: a dashboard
// tells "off" from "idle".
func (c *collector) whatsapp(ch chan<- prometheus.Metric, in *actors.InboundStats, out *actors.WhatsAppStats) {
	d := &c.d
	c.breaker(ch, "whatsapp", actors.BreakerState(out.Breaker.Load()), out.Trips.Load())
	emit(ch, d.waWebhooks, float64(in.Received.Load()), "recorded")
	emit(ch, d.waWebhooks, float64(in.Duplicates.Load()), "duplicate")
	emit(ch, d.waWebhooks, float64(in.Refused.Load()), "refused")
	emit(ch, d.waWebhooks, float64(in.Problems.Load()), "problem")
	emit(ch, d.waPending, float64(in.Pending.Load()))
	emit(ch, d.waMessages, float64(in.Messages.Load()))
	emit(ch, d.waMedia, float64(in.MediaStored.Load()), "stored")
	emit(ch, d.waMedia, float64(in.MediaRefused.Load()), "refused")
	emit(ch, d.waStatuses, float64(in.Statuses.Load()))
	emit(ch, d.waCalls, float64(out.Calls.Load()))
	emit(ch, d.waSent, float64(out.Sent.Load()))
	emit(ch, d.waThrottled, float64(out.Throttled.Load()))
	emit(ch, d.waFailed, float64(out.Failed.Load()))
	emit(ch, d.waUnknown, float64(out.Unknown.Load()))
	emit(ch, d.waOpen, float64(out.Open.Load()))
}

func (c *collector) breaker(ch chan<- prometheus.Metric, dep string, state actors.BreakerState, trips int64) {
	open := 0.0
	if state != actors.BreakerClosed {
		open = 1
	}
	emit(ch, c.d.breakerState, float64(state), dep)
	emit(ch, c.d.breakerOpen, open, dep)
	emit(ch, c.d.breakerTrips, float64(trips), dep)
}

func (c *collector) store(ch chan<- prometheus.Metric) {
	d := &c.d
	st := c.src.Store.Stats()
	p := st.Pool
	emit(ch, d.poolAcquired, float64(p.AcquiredConns))
	emit(ch, d.poolIdle, float64(p.IdleConns))
	emit(ch, d.poolTotal, float64(p.TotalConns))
	emit(ch, d.poolMax, float64(p.MaxConns))
	emit(ch, d.poolConstructing, float64(p.ConstructingConns))
	emit(ch, d.poolAcquires, float64(p.AcquireCount))
	emit(ch, d.poolEmptyAcquires, float64(p.EmptyAcquireCount))
	emit(ch, d.poolCanceled, float64(p.CanceledAcquireCount))
	emit(ch, d.poolAcquireSeconds, p.AcquireDuration.Seconds())
	emit(ch, d.poolEmptyWaitSeconds, p.EmptyAcquireWaitTime.Seconds())
	ops := make([]string, 0, len(st.Ops))
	for op := range st.Ops {
		ops = append(ops, op)
	}
	slices.Sort(ops)
	for _, op := range ops {
		o := st.Ops[op]
		// Count and sum only (no quantiles): the store keeps totals, and a
		// rate of the sum over a rate of the count is the mean latency.
		ch <- prometheus.MustNewConstSummary(d.dbOp.Desc, uint64(o.Calls), o.LatencySum.Seconds(), nil, op)
		emit(ch, d.dbOpErrors, float64(o.Errors), op)
		emit(ch, d.dbOpRetries, float64(o.Retries), op)
		emit(ch, d.dbOpMax, o.MaxLatency.Seconds(), op)
	}
	emit(ch, d.dbAppended, float64(st.AppendedMessages))
	emit(ch, d.dbDuplicates, float64(st.DuplicateMessages))
}
