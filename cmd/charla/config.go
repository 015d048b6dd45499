package main

import (
	"cmp"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"gopkg.in/natefinch/lumberjack.v2"

	"charla/actors"
	"charla/auth"
	"charla/bot"
	"charla/cluster"
	"charla/ops"
	"charla/store/postgres"
	"charla/transport"
)

// defaultAddr is where serve listens and chat connects unless told otherwise.
const defaultAddr = "127.0.0.1:8080"

// config is every setting of `charla serve`. Each is a flag and an
// environment variable (the flag wins); see settings(). The packages own
// their settings, defaults and checks (actors.Config, transport.Config,
// postgres.Options); config only adds what belongs to the process.
type config struct {
	Addr      string
	DataDir   string
	LogLevel  string
	LogFormat string
	DebugAddr string
	// MetricsAddr is a private listener for Prometheus (/metrics without
	// credentials, /healthz, /readyz with details); empty = none.
	MetricsAddr string
	// Metrics turns the Prometheus registry on (/metrics for admins on the
	// main listener, on MetricsAddr and DebugAddr, and the alert rules).
	Metrics bool
	// SettingsFile holds the runtime settings (log level, rate limits,
	// feature flags, alert rules), read at start and again on SIGHUP.
	SettingsFile string
	// MinProcs raises GOMAXPROCS to at least this (see serve).
	MinProcs int
	// GCHeapFloor is the heap size below which no garbage collection starts
	// (internal/heapfloor); 0 leaves Go's pacing alone.
	GCHeapFloor int64
	// BotFlow is the chatbot's flow file; "" is the embedded default, "off"
	// no bot. Parsed into Actors.Bot.Flow by parseConfig.
	BotFlow string
	// ConfigFile is the YAML file of startup settings (keys are the flag
	// names); Profile the environment whose defaults apply under it.
	ConfigFile string
	Profile    string
	// LogFile, when set, receives the log instead of stderr, rotated by
	// size and pruned by age and count (lumberjack).
	LogFile       string
	LogMaxSizeMB  int
	LogMaxAgeDays int
	LogMaxBackups int
	// effective is every setting's shown value and its source, for
	// check-config.
	effective []effectiveSetting

	// Cluster makes this engine one node of a cluster; its NATSURL empty,
	// a single node (docs/CLUSTER.md).
	Cluster clusterConfig

	Actors    actors.Config
	Transport transport.Config // HeartbeatTimeout is Actors.HeartbeatTimeout: one flag sets both
	DB        postgres.Options // URL empty = the embedded store
	Login     auth.Config      // agent login (transport.Config.Login is built from it by serve)
}

// setting is one flag of a command, with the environment variable that
// sets it too (none when env is empty).
type setting struct {
	name, env, usage string
	value            flag.Value
	// secret hides the value from --help, whose output ends up in terminals
	// and tickets.
	secret bool
	// dbField is the postgres.Options field the setting fills, so that a
	// postgres.SettingError can be told in the flag's words.
	dbField string
}

// settings binds each field of c to its flag and environment variable, with
// the defaults of the package the field belongs to.
func (c *config) settings() flagSet {
	a, t, db, l := actors.DefaultConfig(), transport.DefaultConfig(), postgres.DefaultOptions(), auth.DefaultConfig()
	c.Actors, c.Transport, c.DB, c.Login = a, t, db, l
	return flagSet{
		{name: "config", env: "CHARLA_CONFIG", usage: "YAML file of startup settings, keyed by these flag names (flags and environment variables win over it); read once at start", value: strVar(&c.ConfigFile, "")},
		{name: "profile", env: "CHARLA_PROFILE", usage: "development, staging or production: defaults and rules for that environment (README, Profiles); empty = none", value: strVar(&c.Profile, "")},
		{name: "addr", env: "CHARLA_ADDR", usage: "listen address (host:port)", value: strVar(&c.Addr, defaultAddr)},
		{name: "data-dir", env: "CHARLA_DATA_DIR", usage: "directory of the embedded store", value: strVar(&c.DataDir, "./data")},
		{name: "max-session", env: "CHARLA_MAX_SESSION", usage: "longest a connection lives, whatever its token's exp; then 4001 and the client reconnects (0 = the token's exp alone)", value: durVar(&c.Transport.Auth.MaxSession, t.Auth.MaxSession)},
		{name: "auth-mode", env: "CHARLA_AUTH_MODE", usage: "jwt, or dev (?user=&role= trusted as given: development only)", value: strVar(&c.Transport.Auth.Mode, t.Auth.Mode)},
		{name: "jwt-secret", env: "CHARLA_JWT_SECRET", usage: "HS256 secret (Supabase JWT secret); required in jwt mode, 32 bytes or more", value: bytesVar(&c.Transport.Auth.Secret, t.Auth.Secret), secret: true},
		{name: "allowed-origins", env: "CHARLA_ALLOWED_ORIGINS", usage: "comma-separated browser origins allowed to connect; empty = same origin and non-browser clients only; * = any", value: listVar((*[]string)(&c.Transport.Origins), t.Origins)},
		{name: "rate-limit-auth", env: "CHARLA_RATE_LIMIT_AUTH", usage: "login attempts per minute per client (IP when anonymous); 0 = off", value: intVar(&c.Transport.RateLimits.Auth, t.RateLimits.Auth)},
		{name: "rate-limit-chat", env: "CHARLA_RATE_LIMIT_CHAT", usage: "messages per minute per user, WebSocket and POST /v1/send together; 0 = off", value: intVar(&c.Transport.RateLimits.Chat, t.RateLimits.Chat)},
		{name: "rate-limit-media", env: "CHARLA_RATE_LIMIT_MEDIA", usage: "media requests per minute per user; 0 = off", value: intVar(&c.Transport.RateLimits.Media, t.RateLimits.Media)},
		{name: "rate-limit-api", env: "CHARLA_RATE_LIMIT_API", usage: "other HTTP requests per minute per user (IP when anonymous); 0 = off", value: intVar(&c.Transport.RateLimits.API, t.RateLimits.API)},
		{name: "rate-limit-ws", env: "CHARLA_RATE_LIMIT_WS", usage: "WebSocket upgrades per minute per client IP (a flood guard); 0 = off", value: intVar(&c.Transport.RateLimits.Upgrade, t.RateLimits.Upgrade)},
		{name: "rate-limit-allow", env: "CHARLA_RATE_LIMIT_ALLOW", usage: "comma-separated CIDRs (or IPs) exempt from rate limits and the per-IP connection cap", value: listVar(&c.Transport.RateLimits.Allow, t.RateLimits.Allow)},
		{name: "rate-limit-deny-user-agents", env: "CHARLA_RATE_LIMIT_DENY_USER_AGENTS", usage: "comma-separated User-Agent substrings refused with 403 (case-insensitive)", value: listVar(&c.Transport.RateLimits.DenyUserAgents, t.RateLimits.DenyUserAgents)},
		{name: "trusted-proxies", env: "CHARLA_TRUSTED_PROXIES", usage: "comma-separated CIDRs (or IPs) of proxies whose X-Forwarded-For is believed; empty = none", value: listVar(&c.Transport.RateLimits.TrustedProxies, t.RateLimits.TrustedProxies)},
		{name: "max-conns-per-ip", env: "CHARLA_MAX_CONNS_PER_IP", usage: "concurrent connections from one address (429 past it); 0 = no cap", value: intVar(&c.Transport.MaxConnsPerIP, t.MaxConnsPerIP)},
		{name: "max-request-bytes", env: "CHARLA_MAX_REQUEST_BYTES", usage: "largest HTTP request body (413 past it)", value: int64Var(&c.Transport.MaxRequestBytes, t.MaxRequestBytes)},
		{name: "max-media-bytes", env: "CHARLA_MAX_MEDIA_BYTES", usage: "largest request body under /v1/media", value: int64Var(&c.Transport.MaxMediaBytes, t.MaxMediaBytes)},
		{name: "http-read-timeout", env: "CHARLA_HTTP_READ_TIMEOUT", usage: "a whole HTTP request, body included, must arrive within it", value: durVar(&c.Transport.ReadTimeout, t.ReadTimeout)},
		{name: "http-write-timeout", env: "CHARLA_HTTP_WRITE_TIMEOUT", usage: "an HTTP answer must be written within it (not WebSockets); longer than the longest long-poll", value: durVar(&c.Transport.WriteTimeout, t.WriteTimeout)},
		{name: "http-idle-timeout", env: "CHARLA_HTTP_IDLE_TIMEOUT", usage: "an idle keep-alive connection is closed after it", value: durVar(&c.Transport.IdleTimeout, t.IdleTimeout)},
		{name: "heartbeat-interval", env: "CHARLA_HEARTBEAT_INTERVAL", usage: "server ping period", value: durVar(&c.Actors.HeartbeatInterval, a.HeartbeatInterval)},
		{name: "heartbeat-timeout", env: "CHARLA_HEARTBEAT_TIMEOUT", usage: "silence after which a connection is closed (4008)", value: durVar(&c.Actors.HeartbeatTimeout, a.HeartbeatTimeout)},
		{name: "connect-timeout", env: "CHARLA_CONNECT_TIMEOUT", usage: "time allowed for the WebSocket handshake", value: durVar(&c.Transport.ConnectTimeout, t.ConnectTimeout)},
		{name: "max-frame-bytes", env: "CHARLA_MAX_FRAME_BYTES", usage: "largest client frame; larger closes with 1009", value: intVar(&c.Transport.MaxFrameBytes, t.MaxFrameBytes)},
		{name: "max-body-bytes", env: "CHARLA_MAX_BODY_BYTES", usage: "largest message body; larger is refused with too_large", value: intVar(&c.Actors.MaxBodyBytes, a.MaxBodyBytes)},
		{name: "max-customer-conversations", env: "CHARLA_MAX_CUSTOMER_CONVERSATIONS", usage: "conversations one customer may have loaded at once (rate_limited past it); staff are not bound", value: intVar(&c.Actors.MaxCustomerConversations, a.MaxCustomerConversations)},
		{name: "max-subscriptions", env: "CHARLA_MAX_SUBSCRIPTIONS", usage: "conversations one connection may subscribe to at once", value: intVar(&c.Actors.MaxSubscriptions, a.MaxSubscriptions)},
		{name: "max-sends-in-flight", env: "CHARLA_MAX_SENDS_IN_FLIGHT", usage: "sends one connection may have awaiting their ack; past it rate_limited (retry_after_ms); below send-queue-frames", value: intVar(&c.Actors.MaxSendsInFlight, a.MaxSendsInFlight)},
		{name: "send-queue-frames", env: "CHARLA_SEND_QUEUE_FRAMES", usage: "per-connection outbound queue in frames; past it 4008 slow consumer", value: intVar(&c.Actors.SendQueueFrames, a.SendQueueFrames)},
		{name: "send-queue-bytes", env: "CHARLA_SEND_QUEUE_BYTES", usage: "per-connection outbound queue in bytes; past it 4008 slow consumer", value: intVar(&c.Actors.SendQueueBytes, a.SendQueueBytes)},
		{name: "session-idle-timeout", env: "CHARLA_SESSION_IDLE_TIMEOUT", usage: "an idle conversation with no subscriber is unloaded after this", value: durVar(&c.Actors.IdleTimeout, a.IdleTimeout)},
		{name: "session-sweep-interval", env: "CHARLA_SESSION_SWEEP_INTERVAL", usage: "how often idle conversations are swept", value: durVar(&c.Actors.SweepInterval, a.SweepInterval)},
		{name: "shutdown-timeout", env: "CHARLA_SHUTDOWN_TIMEOUT", usage: "how long SIGTERM waits for in-flight sends", value: durVar(&c.Actors.ShutdownGrace, a.ShutdownGrace)},
		{name: "log-level", env: "CHARLA_LOG_LEVEL", usage: "debug, info, warn or error", value: strVar(&c.LogLevel, "info")},
		{name: "log-format", env: "CHARLA_LOG_FORMAT", usage: "json or console", value: strVar(&c.LogFormat, "json")},
		{name: "log-file", env: "CHARLA_LOG_FILE", usage: "write the log to this file instead of stderr, rotated past log-max-size-mb; empty = stderr", value: strVar(&c.LogFile, "")},
		{name: "log-max-size-mb", env: "CHARLA_LOG_MAX_SIZE_MB", usage: "with log-file: megabytes after which the file is rotated (renamed with a timestamp, a new one opened)", value: intVar(&c.LogMaxSizeMB, 100)},
		{name: "log-max-age-days", env: "CHARLA_LOG_MAX_AGE_DAYS", usage: "with log-file: rotated files older than this many days are deleted; 0 = kept whatever their age", value: intVar(&c.LogMaxAgeDays, 14)},
		{name: "log-max-backups", env: "CHARLA_LOG_MAX_BACKUPS", usage: "with log-file: rotated files kept at most; 0 = as many as log-max-age-days allows", value: intVar(&c.LogMaxBackups, 10)},
		{name: "gc-heap-floor", env: "CHARLA_GC_HEAP_FLOOR", usage: "bytes of heap below which the garbage collector does not run: a small heap collected every second under load sets the latency's tail; up to this much memory in garbage is the price; 0 = Go's own pacing (GOGC)", value: int64Var(&c.GCHeapFloor, 128<<20)},
		{name: "min-procs", env: "CHARLA_MIN_PROCS", usage: "fewest Go Ps (GOMAXPROCS) the engine runs with, even on one core: a P blocked in an fsync stalls every actor until the runtime takes it back", value: intVar(&c.MinProcs, 2)},
		{name: "debug-addr", env: "CHARLA_DEBUG_ADDR", usage: "serve Go's pprof profiles, /metrics and the detailed /readyz on this address (keep it private); empty = off", value: strVar(&c.DebugAddr, "")},
		{name: "metrics", env: "CHARLA_METRICS", usage: "export Prometheus metrics (GET /metrics for admins, and on metrics-addr); false also stops the latency histograms", value: boolVar(&c.Metrics, true)},
		{name: "settings-file", env: "CHARLA_SETTINGS_FILE", usage: "YAML file of the runtime settings (log level, rate limits, feature flags, alert rules; docs/SETTINGS.md), applied at start and on SIGHUP; empty = none", value: strVar(&c.SettingsFile, "")},
		{name: "alert-interval", env: "CHARLA_ALERT_INTERVAL", usage: "how often the alert rules are evaluated", value: durVar(&c.Actors.Alerts.Interval, a.Alerts.Interval)},
		{name: "alert-webhook-url", env: "CHARLA_ALERT_WEBHOOK_URL", usage: "POST every alert firing and resolving here (JSON); empty = none", value: strVar(&c.Actors.Alerts.WebhookURL, a.Alerts.WebhookURL), secret: true},
		{name: "alert-webhook-timeout", env: "CHARLA_ALERT_WEBHOOK_TIMEOUT", usage: "deadline of one webhook attempt", value: durVar(&c.Actors.Alerts.WebhookTimeout, a.Alerts.WebhookTimeout)},
		{name: "alert-webhook-retries", env: "CHARLA_ALERT_WEBHOOK_RETRIES", usage: "webhook attempts after the first (backoff with jitter); then the event is dropped and logged", value: intVar(&c.Actors.Alerts.WebhookRetries, a.Alerts.WebhookRetries)},
		{name: "metrics-addr", env: "CHARLA_METRICS_ADDR", usage: "serve /metrics (no credentials), /healthz and the detailed /readyz on this private address, for Prometheus; empty = off", value: strVar(&c.MetricsAddr, "")},
		{name: "database-url", env: "DATABASE_URL", usage: "PostgreSQL URL (Supabase: add default_query_exec_mode=simple_protocol for the transaction pooler); empty = embedded store", value: strVar(&c.DB.URL, db.URL), secret: true, dbField: "URL"},
		{name: "migrate", env: "CHARLA_MIGRATE", usage: "apply pending database migrations before serving", value: boolVar(&c.DB.AutoMigrate, db.AutoMigrate), dbField: "AutoMigrate"},
		{name: "db-max-conns", env: "CHARLA_DB_MAX_CONNS", usage: "connection pool size", value: int32Var(&c.DB.MaxConns, db.MaxConns), dbField: "MaxConns"},
		{name: "db-min-conns", env: "CHARLA_DB_MIN_CONNS", usage: "connections kept open when idle", value: int32Var(&c.DB.MinConns, db.MinConns), dbField: "MinConns"},
		{name: "db-query-timeout", env: "CHARLA_DB_QUERY_TIMEOUT", usage: "deadline of each database attempt", value: durVar(&c.DB.QueryTimeout, db.QueryTimeout), dbField: "QueryTimeout"},
		{name: "db-connect-timeout", env: "CHARLA_DB_CONNECT_TIMEOUT", usage: "deadline of a new database connection", value: durVar(&c.DB.ConnectTimeout, db.ConnectTimeout), dbField: "ConnectTimeout"},
		{name: "db-retry-attempts", env: "CHARLA_DB_RETRY_ATTEMPTS", usage: "retries of a retryable database error (backoff with jitter)", value: intVar(&c.DB.RetryAttempts, db.RetryAttempts), dbField: "RetryAttempts"},
		{name: "db-retry-base-delay", env: "CHARLA_DB_RETRY_BASE_DELAY", usage: "first retry backoff", value: durVar(&c.DB.RetryBaseDelay, db.RetryBaseDelay), dbField: "RetryBaseDelay"},
		{name: "db-retry-max-delay", env: "CHARLA_DB_RETRY_MAX_DELAY", usage: "largest retry backoff", value: durVar(&c.DB.RetryMaxDelay, db.RetryMaxDelay), dbField: "RetryMaxDelay"},
		{name: "db-health-check-period", env: "CHARLA_DB_HEALTH_CHECK_PERIOD", usage: "how often idle connections are checked", value: durVar(&c.DB.HealthCheckPeriod, db.HealthCheckPeriod), dbField: "HealthCheckPeriod"},
		{name: "db-max-conn-lifetime", env: "CHARLA_DB_MAX_CONN_LIFETIME", usage: "connections are rotated after this", value: durVar(&c.DB.MaxConnLifetime, db.MaxConnLifetime), dbField: "MaxConnLifetime"},
		{name: "db-max-conn-lifetime-jitter", env: "CHARLA_DB_MAX_CONN_LIFETIME_JITTER", usage: "random spread of rotations", value: durVar(&c.DB.MaxConnLifetimeJitter, db.MaxConnLifetimeJitter), dbField: "MaxConnLifetimeJitter"},
		{name: "db-max-conn-idle-time", env: "CHARLA_DB_MAX_CONN_IDLE_TIME", usage: "idle connections are closed after this", value: durVar(&c.DB.MaxConnIdleTime, db.MaxConnIdleTime), dbField: "MaxConnIdleTime"},
		{name: "db-keepalive", env: "CHARLA_DB_KEEPALIVE", usage: "TCP keep-alive period of database connections (negative disables)", value: durVar(&c.DB.KeepAlive, db.KeepAlive), dbField: "KeepAlive"},
		{name: "commit-delay", env: "CHARLA_COMMIT_DELAY", usage: "while messages arrive at 4 or more per delay, the shortest time between the starts of two group commits, so that a busy engine pays fewer fsyncs; 0 = every commit at once", value: durVar(&c.Actors.CommitDelay, a.CommitDelay)},
		{name: "store-write-timeout", env: "CHARLA_STORE_WRITE_TIMEOUT", usage: "with PostgreSQL: how long an ack waits for the database before the message is spooled", value: durVar(&c.Actors.StoreWriteTimeout, a.StoreWriteTimeout)},
		{name: "store-breaker-failures", env: "CHARLA_STORE_BREAKER_FAILURES", usage: "consecutive database failures that open the breaker", value: intVar(&c.Actors.StoreBreaker.Failures, a.StoreBreaker.Failures)},
		{name: "spool-dedup-window", env: "CHARLA_SPOOL_DEDUP_WINDOW", usage: "with PostgreSQL: how long the spool remembers every ack, so that a resend is a duplicate even during an outage", value: durVar(&c.Actors.SpoolDedupWindow, a.SpoolDedupWindow)},
		{name: "spool-dedup-max", env: "CHARLA_SPOOL_DEDUP_MAX", usage: "with PostgreSQL: most acks the spool remembers (oldest forgotten first)", value: intVar(&c.Actors.SpoolDedupMax, a.SpoolDedupMax)},
		{name: "access-token-ttl", env: "CHARLA_ACCESS_TOKEN_TTL", usage: "life of the JWT that POST /v1/auth/login and /refresh answer", value: durVar(&c.Login.AccessTTL, l.AccessTTL)},
		{name: "refresh-token-ttl", env: "CHARLA_REFRESH_TOKEN_TTL", usage: "life of a refresh token (single use: each refresh rotates it)", value: durVar(&c.Login.RefreshTTL, l.RefreshTTL)},
		{name: "store-breaker-cooldown", env: "CHARLA_STORE_BREAKER_COOLDOWN", usage: "how long the open breaker waits before probing the database", value: durVar(&c.Actors.StoreBreaker.Cooldown, a.StoreBreaker.Cooldown)},
		{name: "whatsapp-app-secret", env: "CHARLA_WHATSAPP_APP_SECRET", usage: "the Meta app's secret, which signs every webhook; empty = the WhatsApp channel is off (webhook 503)", value: strVar(&c.Transport.WhatsApp.AppSecret, t.WhatsApp.AppSecret), secret: true},
		{name: "whatsapp-verify-token", env: "CHARLA_WHATSAPP_VERIFY_TOKEN", usage: "the token of the webhook's verification handshake (GET /webhooks/whatsapp)", value: strVar(&c.Transport.WhatsApp.VerifyToken, t.WhatsApp.VerifyToken), secret: true},
		{name: "whatsapp-token", env: "CHARLA_WHATSAPP_TOKEN", usage: "the Graph API bearer token (media downloads, replies)", value: strVar(&c.Transport.WhatsApp.Token, t.WhatsApp.Token), secret: true},
		{name: "whatsapp-phone-number-id", env: "CHARLA_WHATSAPP_PHONE_NUMBER_ID", usage: "the business number's id replies go out from by default", value: strVar(&c.Transport.WhatsApp.PhoneNumberID, t.WhatsApp.PhoneNumberID)},
		{name: "whatsapp-graph-url", env: "CHARLA_WHATSAPP_GRAPH_URL", usage: "the Graph API base URL with its version (the fake: http://127.0.0.1:8082/v21.0)", value: strVar(&c.Transport.WhatsApp.GraphURL, t.WhatsApp.GraphURL)},
		{name: "soap-url", env: "CHARLA_SOAP_URL", usage: "the inventory service's SOAP endpoint (the simulator: http://127.0.0.1:8081); empty = bridge off, inventory answers unavailable", value: strVar(&c.Actors.SOAP.URL, a.SOAP.URL)},
		{name: "soap-timeout", env: "CHARLA_SOAP_TIMEOUT", usage: "deadline of one SOAP call", value: durVar(&c.Actors.SOAP.Timeout, a.SOAP.Timeout)},
		{name: "soap-get-stock-timeout", env: "CHARLA_SOAP_GET_STOCK_TIMEOUT", usage: "deadline of one GetStock call; 0 = soap-timeout", value: durVar(&c.Actors.SOAP.GetStockTimeout, a.SOAP.GetStockTimeout)},
		{name: "soap-reserve-timeout", env: "CHARLA_SOAP_RESERVE_TIMEOUT", usage: "deadline of one ReserveItem call; 0 = soap-timeout", value: durVar(&c.Actors.SOAP.ReserveTimeout, a.SOAP.ReserveTimeout)},
		{name: "soap-retries", env: "CHARLA_SOAP_RETRIES", usage: "retries of a retryable SOAP failure (timeouts, resets, 5xx, server faults)", value: intVar(&c.Actors.SOAP.Retries, a.SOAP.Retries)},
		{name: "soap-backoff-base", env: "CHARLA_SOAP_BACKOFF_BASE", usage: "first retry backoff (exponential, full jitter)", value: durVar(&c.Actors.SOAP.BackoffBase, a.SOAP.BackoffBase)},
		{name: "soap-backoff-max", env: "CHARLA_SOAP_BACKOFF_MAX", usage: "largest retry backoff", value: durVar(&c.Actors.SOAP.BackoffMax, a.SOAP.BackoffMax)},
		{name: "soap-max-inflight", env: "CHARLA_SOAP_MAX_INFLIGHT", usage: "SOAP calls in flight at once (the bulkhead)", value: intVar(&c.Actors.SOAP.MaxInflight, a.SOAP.MaxInflight)},
		{name: "soap-queue", env: "CHARLA_SOAP_QUEUE", usage: "SOAP calls waiting for a slot; past it requests are refused at once (unavailable)", value: intVar(&c.Actors.SOAP.Queue, a.SOAP.Queue)},
		{name: "soap-breaker-failures", env: "CHARLA_SOAP_BREAKER_FAILURES", usage: "consecutive SOAP failures that open the breaker", value: intVar(&c.Actors.SOAP.Breaker.Failures, a.SOAP.Breaker.Failures)},
		{name: "soap-breaker-cooldown", env: "CHARLA_SOAP_BREAKER_COOLDOWN", usage: "how long the open SOAP breaker waits before probing the service", value: durVar(&c.Actors.SOAP.Breaker.Cooldown, a.SOAP.Breaker.Cooldown)},
		{name: "inventory-answer-budget", env: "CHARLA_INVENTORY_ANSWER_BUDGET", usage: "how long an inventory request waits for the service before it becomes a job", value: durVar(&c.Actors.SOAP.AnswerBudget, a.SOAP.AnswerBudget)},
		{name: "inventory-cache-ttl", env: "CHARLA_INVENTORY_CACHE_TTL", usage: "how long an inventory item is served fresh from the cache", value: durVar(&c.Actors.SOAP.CacheTTL, a.SOAP.CacheTTL)},
		{name: "inventory-cache-size", env: "CHARLA_INVENTORY_CACHE_SIZE", usage: "inventory items kept fresh in the cache", value: intVar(&c.Actors.SOAP.CacheSize, a.SOAP.CacheSize)},
		{name: "job-retention", env: "CHARLA_JOB_RETENTION", usage: "how long a finished inventory job can still be asked for", value: durVar(&c.Actors.SOAP.JobRetention, a.SOAP.JobRetention)},
		{name: "job-max", env: "CHARLA_JOB_MAX", usage: "inventory jobs kept (oldest finished dropped first)", value: intVar(&c.Actors.SOAP.MaxJobs, a.SOAP.MaxJobs)},
		{name: "whatsapp-rate", env: "CHARLA_WHATSAPP_RATE", usage: "WhatsApp messages per second per business number (the Cloud API's throughput)", value: floatVar(&c.Actors.WhatsApp.Rate, a.WhatsApp.Rate)},
		{name: "whatsapp-burst", env: "CHARLA_WHATSAPP_BURST", usage: "WhatsApp messages a business number may send at once after a quiet spell", value: intVar(&c.Actors.WhatsApp.Burst, a.WhatsApp.Burst)},
		{name: "whatsapp-pair-interval", env: "CHARLA_WHATSAPP_PAIR_INTERVAL", usage: "one WhatsApp message per this interval to one customer, past whatsapp-pair-burst (the pair rate limit)", value: durVar(&c.Actors.WhatsApp.PairInterval, a.WhatsApp.PairInterval)},
		{name: "whatsapp-pair-burst", env: "CHARLA_WHATSAPP_PAIR_BURST", usage: "WhatsApp messages to one customer sent back to back before the pair interval applies", value: intVar(&c.Actors.WhatsApp.PairBurst, a.WhatsApp.PairBurst)},
		{name: "whatsapp-window", env: "CHARLA_WHATSAPP_WINDOW", usage: "the customer-service window after the customer's last message; outside it only templates are sent (131047)", value: durVar(&c.Actors.WhatsApp.Window, a.WhatsApp.Window)},
		{name: "whatsapp-call-timeout", env: "CHARLA_WHATSAPP_CALL_TIMEOUT", usage: "deadline of one Graph API call", value: durVar(&c.Actors.WhatsApp.CallTimeout, a.WhatsApp.CallTimeout)},
		{name: "whatsapp-backoff-base", env: "CHARLA_WHATSAPP_BACKOFF_BASE", usage: "first retry backoff after throttling or a 5xx (exponential, full jitter)", value: durVar(&c.Actors.WhatsApp.BackoffBase, a.WhatsApp.BackoffBase)},
		{name: "whatsapp-backoff-max", env: "CHARLA_WHATSAPP_BACKOFF_MAX", usage: "largest WhatsApp retry backoff", value: durVar(&c.Actors.WhatsApp.BackoffMax, a.WhatsApp.BackoffMax)},
		{name: "whatsapp-max-attempts", env: "CHARLA_WHATSAPP_MAX_ATTEMPTS", usage: "Graph API calls for one message before it fails", value: intVar(&c.Actors.WhatsApp.MaxAttempts, a.WhatsApp.MaxAttempts)},
		{name: "whatsapp-max-inflight", env: "CHARLA_WHATSAPP_MAX_INFLIGHT", usage: "Graph API calls in flight at once", value: intVar(&c.Actors.WhatsApp.MaxInflight, a.WhatsApp.MaxInflight)},
		{name: "whatsapp-reconcile-window", env: "CHARLA_WHATSAPP_RECONCILE_WINDOW", usage: "how long a send of unknown outcome waits for a status naming it before it fails as unknown (never resent)", value: durVar(&c.Actors.WhatsApp.ReconcileWindow, a.WhatsApp.ReconcileWindow)},
		{name: "whatsapp-rescan-interval", env: "CHARLA_WHATSAPP_RESCAN_INTERVAL", usage: "how often the WhatsApp outbox is read again for entries not seen otherwise", value: durVar(&c.Actors.WhatsApp.RescanInterval, a.WhatsApp.RescanInterval)},
		{name: "whatsapp-breaker-failures", env: "CHARLA_WHATSAPP_BREAKER_FAILURES", usage: "consecutive Graph API failures (5xx, no answer) that open the breaker", value: intVar(&c.Actors.WhatsApp.Breaker.Failures, a.WhatsApp.Breaker.Failures)},
		{name: "whatsapp-breaker-cooldown", env: "CHARLA_WHATSAPP_BREAKER_COOLDOWN", usage: "how long the open Graph API breaker waits before a probe", value: durVar(&c.Actors.WhatsApp.Breaker.Cooldown, a.WhatsApp.Breaker.Cooldown)},
		{name: "bot-flow", env: "CHARLA_BOT_FLOW", usage: "the chatbot's flow (YAML or JSON); empty = the embedded default, off = no chatbot", value: strVar(&c.BotFlow, "")},
		{name: "bot-session-timeout", env: "CHARLA_BOT_SESSION_TIMEOUT", usage: "a chatbot session idle this long saves its state and stops; the next message resumes it", value: durVar(&c.Actors.Bot.SessionTimeout, a.Bot.SessionTimeout)},
		{name: "bot-session-sweep", env: "CHARLA_BOT_SESSION_SWEEP", usage: "how often chatbot sessions are checked for idleness", value: durVar(&c.Actors.Bot.SweepInterval, a.Bot.SweepInterval)},
		{name: "agent-capacity", env: "CHARLA_AGENT_CAPACITY", usage: "open conversations a handoff assigns one agent at most, unless they have their own (PUT /v1/agents/{id}/capacity)", value: intVar(&c.Actors.AgentCapacity, a.AgentCapacity)},
		{name: "presence-grace", env: "CHARLA_PRESENCE_GRACE", usage: "an agent whose last connection closed stays online this long (a reconnect does not flap)", value: durVar(&c.Actors.PresenceGrace, a.PresenceGrace)},
		{name: "cluster-nats-url", env: "CHARLA_CLUSTER_NATS_URL", usage: "NATS URL(s), comma-separated, of the cluster this node joins (JetStream required); empty = a single node", value: strVar(&c.Cluster.NATSURL, ""), secret: true},
		{name: "cluster-name", env: "CHARLA_CLUSTER_NAME", usage: "names the cluster's NATS buckets (<name>_leases, <name>_nodes) and subjects; the same on every node", value: strVar(&c.Cluster.Name, "charla")},
		{name: "cluster-node-id", env: "CHARLA_CLUSTER_NODE_ID", usage: "this node's id, unique in the cluster (letters, digits, - and _); empty = host name and process id", value: strVar(&c.Cluster.NodeID, "")},
		{name: "cluster-shards", env: "CHARLA_CLUSTER_SHARDS", usage: "shards conversations are placed in; fixed for the cluster's life (checked at start)", value: intVar(&c.Cluster.Shards, cluster.DefaultShards)},
		{name: "cluster-lease-ttl", env: "CHARLA_CLUSTER_LEASE_TTL", usage: "a dead node's shards are taken over after this; leases are renewed every third of it", value: durVar(&c.Cluster.LeaseTTL, cluster.DefaultLeaseTTL)},
		{name: "cluster-replicas", env: "CHARLA_CLUSTER_REPLICAS", usage: "replicas of the lease buckets in NATS: the NATS cluster's size, up to 3 (1 for a single NATS server)", value: intVar(&c.Cluster.Replicas, cluster.DefaultReplicas)},
		{name: "cluster-request-timeout", env: "CHARLA_CLUSTER_REQUEST_TIMEOUT", usage: "how long a request forwarded to the conversation's owner node waits for its answer (then unavailable)", value: durVar(&c.Cluster.RequestTimeout, defaultClusterRequestTimeout)},
		{name: "inbox-save-delay", env: "CHARLA_INBOX_SAVE_DELAY", usage: "a conversation's activity (last message, unread counts) is saved to its workflow state within this; status, assignee and tags at once", value: durVar(&c.Actors.InboxSaveDelay, a.InboxSaveDelay)},
	}
}

// parseConfig reads the environment, then args, and validates the result.
// Every problem is reported at once, so an operator fixes them in one go.
// serving is false for `migrate`, which needs a database URL and nothing
// else.
func parseConfig(args []string, getenv func(string) string, help io.Writer, serving bool) (config, error) {
	var c config
	fs := c.settings()
	layers, layerErr := fs.layers(args, getenv)
	from, err := fs.parseLayers(layers, args, getenv, help)
	if errors.Is(err, errHelp) {
		return c, err
	}
	c.effective = fs.effective(from)
	err = errors.Join(layerErr, err)
	// One heartbeat-timeout: the actors close a silent connection after it,
	// the edge bounds its socket writes with it.
	c.Transport.HeartbeatTimeout = c.Actors.HeartbeatTimeout
	var flowErr error
	if serving {
		c.Actors.Bot.Flow, flowErr = loadFlow(c.BotFlow)
	}
	return c, errors.Join(err, c.validate(serving), flowErr)
}

// loadFlow reads the chatbot's flow: path, the embedded default for "",
// none for "off". Each problem of the file is one error, named after it.
func loadFlow(path string) (*bot.Flow, error) {
	data := bot.Default
	switch path {
	case "off":
		return nil, nil
	case "":
		path = "(embedded default)"
	default:
		var err error
		if data, err = os.ReadFile(path); err != nil {
			return nil, fmt.Errorf("bot-flow: %w", err)
		}
	}
	f, err := bot.Parse(data)
	if err != nil {
		var errs []error
		for _, p := range flatten(err) {
			errs = append(errs, fmt.Errorf("bot-flow %s: %w", path, p))
		}
		return nil, errors.Join(errs...)
	}
	return f, nil
}

// validate checks the process's own settings and has each package check its
// own. serving adds what only serve needs (a listen address, credentials),
// so that `migrate` runs with a URL alone.
func (c config) validate(serving bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if !serving {
		if c.DB.URL == "" {
			bad("database-url (or DATABASE_URL) is required")
		} else {
			errs = append(errs, c.dbProblems()...)
		}
		return errors.Join(errs...)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		bad("addr %q: %v", c.Addr, err)
	}
	if c.DebugAddr != "" {
		if _, _, err := net.SplitHostPort(c.DebugAddr); err != nil {
			bad("debug-addr %q: %v", c.DebugAddr, err)
		}
	}
	if c.MetricsAddr != "" {
		if _, _, err := net.SplitHostPort(c.MetricsAddr); err != nil {
			bad("metrics-addr %q: %v", c.MetricsAddr, err)
		}
		if !c.Metrics {
			bad("metrics-addr needs metrics=true")
		}
	}
	if c.DataDir == "" {
		bad("data-dir must not be empty")
	}
	if c.MinProcs < 1 {
		bad("min-procs must be at least 1 (got %d)", c.MinProcs)
	}
	if c.GCHeapFloor < 0 {
		bad("gc-heap-floor must be 0 (off) or a number of bytes (got %d)", c.GCHeapFloor)
	}
	if _, err := zerolog.ParseLevel(c.LogLevel); err != nil || c.LogLevel == "" {
		bad("log-level %q: must be debug, info, warn or error", c.LogLevel)
	}
	if c.LogFormat != "json" && c.LogFormat != "console" {
		bad("log-format %q: must be json or console", c.LogFormat)
	}
	if c.LogMaxSizeMB < 1 {
		bad("log-max-size-mb must be at least 1 (got %d)", c.LogMaxSizeMB)
	}
	if c.LogMaxAgeDays < 0 {
		bad("log-max-age-days must not be negative (got %d)", c.LogMaxAgeDays)
	}
	if c.LogMaxBackups < 0 {
		bad("log-max-backups must not be negative (got %d)", c.LogMaxBackups)
	}
	errs = append(errs, c.profileProblems()...)
	// The one check across two packages: a body travels inside a frame.
	if c.Actors.MaxBodyBytes > c.Transport.MaxFrameBytes {
		bad("max-body-bytes (%d) must not exceed max-frame-bytes (%d)", c.Actors.MaxBodyBytes, c.Transport.MaxFrameBytes)
	}
	if c.SettingsFile != "" {
		if _, err := c.runtimeSettings(zerolog.Nop(), ops.Appliers{}); err != nil {
			bad("settings-file %s: %v", c.SettingsFile, indentAll(err))
		}
	}
	errs = append(errs, flatten(c.Actors.Validate())...)
	errs = append(errs, flatten(c.Transport.Validate())...)
	errs = append(errs, flatten(c.Login.Validate())...)
	if c.DB.URL != "" {
		errs = append(errs, c.dbProblems()...)
	} else if c.DB.AutoMigrate {
		bad("migrate needs database-url")
	}
	errs = append(errs, c.clusterProblems()...)
	return errors.Join(dedup(errs)...)
}

// dbProblems is postgres.Options.Validate's verdict in the flags' words:
// each postgres.SettingError names an Options field, which becomes the flag
// that sets it, in the problem's text too ("db-min-conns must not exceed
// db-max-conns (50), got 60").
func (c config) dbProblems() []error {
	var scratch config // settings() resets what it binds: not c's own values
	names := map[string]string{}
	var fields []string
	for _, s := range scratch.settings() {
		if s.dbField != "" {
			names[s.dbField] = s.name
			if s.dbField != "URL" { // too common a word to rewrite in a parse error
				fields = append(fields, s.dbField)
			}
		}
	}
	// Longest first, so that MaxConnLifetimeJitter is not read as
	// MaxConnLifetime followed by Jitter.
	slices.SortFunc(fields, func(a, b string) int { return cmp.Compare(len(b), len(a)) })
	var pairs []string
	for _, f := range fields {
		pairs = append(pairs, f, names[f])
	}
	words := strings.NewReplacer(pairs...)
	var out []error
	for _, err := range flatten(c.DB.Validate()) {
		var se *postgres.SettingError
		if !errors.As(err, &se) {
			out = append(out, fmt.Errorf("database: %w", err))
			continue
		}
		name, ok := names[se.Setting]
		if !ok {
			name = se.Setting
		}
		out = append(out, fmt.Errorf("%s %s", name, words.Replace(se.Problem)))
	}
	return out
}

// flatten undoes errors.Join, so each problem gets its own line.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// dedup drops a problem already listed: a setting two packages share (the
// heartbeat timeout) may be refused by both in the same words.
func dedup(errs []error) []error {
	seen := map[string]bool{}
	out := errs[:0]
	for _, err := range errs {
		if !seen[err.Error()] {
			seen[err.Error()] = true
			out = append(out, err)
		}
	}
	return out
}

// logger writes to w, or to the rotated log-file when one is set: then
// close must be called once the engine stops.
func (c config) logger(w io.Writer) (log zerolog.Logger, close func() error) {
	close = func() error { return nil }
	if c.LogFile != "" {
		lj := &lumberjack.Logger{Filename: c.LogFile, MaxSize: c.LogMaxSizeMB, MaxAge: c.LogMaxAgeDays, MaxBackups: c.LogMaxBackups}
		w, close = lj, lj.Close
	}
	return c.loggerTo(w), close
}

func (c config) loggerTo(w io.Writer) zerolog.Logger {
	level, _ := zerolog.ParseLevel(c.LogLevel)
	if c.LogFormat == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.TimeOnly}
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}

// flagSet is the settings of one command and the one parser every command
// uses: --name value, --name=value (one dash will do), bare --name for a
// bool, environment variables first and flags over them; anything else is
// an unknown argument, and every problem is reported at once.
type flagSet []setting

var errHelp = errors.New("help requested")

// parse sets the values from getenv (nil: no environment), then from args.
// On -h or --help it prints the settings to help and returns errHelp.
func (fs flagSet) parse(args []string, getenv func(string) string, help io.Writer) error {
	_, err := fs.parseLayers(nil, args, getenv, help)
	return err
}

// parseLayers sets the values from each layer in turn (a profile's
// defaults, a config file), then from getenv, then from args: each later
// source wins. It answers where each setting's value came from (those it
// does not name kept their default).
func (fs flagSet) parseLayers(layers []layer, args []string, getenv func(string) string, help io.Writer) (map[string]source, error) {
	byName := map[string]setting{}
	from := map[string]source{}
	var errs []error
	for _, s := range fs {
		byName[s.name] = s
	}
	for _, l := range layers {
		for _, kv := range l.values {
			s, ok := byName[kv.name]
			if !ok {
				errs = append(errs, fmt.Errorf("%s: unknown setting %q", kv.where, kv.name))
				continue
			}
			if err := s.value.Set(kv.value); err != nil {
				errs = append(errs, fmt.Errorf("%s: %s=%q: %v", kv.where, kv.name, kv.value, err))
				continue
			}
			from[kv.name] = l.source
		}
	}
	for _, s := range fs {
		if s.env == "" || getenv == nil {
			continue
		}
		if v := getenv(s.env); v != "" {
			if err := s.value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", s.env, v, err))
				continue
			}
			from[s.name] = sourceEnv
		}
	}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "-h" || a == "--help" || a == "-help" {
			fs.printUsage(help)
			return from, errHelp
		}
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		s, ok := byName[name]
		if !strings.HasPrefix(a, "-") || !ok {
			errs = append(errs, fmt.Errorf("unknown argument %q", a))
			if strings.HasPrefix(a, "-") && !hasVal && i+1 < len(args) && !strings.HasPrefix(args[i+1], "-") {
				i++ // its value
			}
			continue
		}
		if b, isBool := s.value.(interface{ IsBoolFlag() bool }); !hasVal && isBool && b.IsBoolFlag() {
			val = "true"
		} else if !hasVal {
			if i+1 >= len(args) {
				errs = append(errs, fmt.Errorf("--%s needs a value", name))
				continue
			}
			i++
			val = args[i]
		}
		if err := s.value.Set(val); err != nil {
			errs = append(errs, fmt.Errorf("--%s=%q: %v", name, val, err))
			continue
		}
		from[name] = sourceFlag
	}
	return from, errors.Join(errs...)
}

func (fs flagSet) printUsage(w io.Writer) {
	fmt.Fprintln(w, "Settings (flag, environment variable, current value):")
	for _, s := range fs {
		v := s.shown()
		env := s.env
		if env == "" {
			env = "-"
		}
		fmt.Fprintf(w, "  --%-28s %-34s %q\n      %s\n", s.name, env, v, s.usage)
	}
}

// value is a flag.Value over a typed setting: parse turns text into it,
// format back, and problem is what an operator reads when the text is wrong
// ("" passes the parser's own error on).
type value[T any] struct {
	p       *T
	parse   func(string) (T, error)
	format  func(T) string
	problem string
	isBool  bool
}

func (v value[T]) String() string {
	if v.format != nil {
		return v.format(*v.p)
	}
	return fmt.Sprint(*v.p)
}

func (v value[T]) IsBoolFlag() bool { return v.isBool }

func (v value[T]) Set(s string) error {
	x, err := v.parse(s)
	if err != nil {
		if v.problem == "" {
			return err
		}
		return errors.New(v.problem)
	}
	*v.p = x
	return nil
}

func newVar[T any](p *T, def T, parse func(string) (T, error), problem string) value[T] {
	*p = def
	return value[T]{p: p, parse: parse, problem: problem}
}

func strVar(p *string, def string) flag.Value {
	return newVar(p, def, func(s string) (string, error) { return s, nil }, "")
}

func bytesVar(p *[]byte, def []byte) flag.Value {
	v := newVar(p, def, func(s string) ([]byte, error) { return []byte(s), nil }, "")
	v.format = func(b []byte) string { return string(b) }
	return v
}

// listVar is a comma-separated list; blanks around and between items are
// dropped.
func listVar(p *[]string, def []string) flag.Value {
	v := newVar(p, def, func(s string) ([]string, error) {
		var out []string
		for item := range strings.SplitSeq(s, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
		return out, nil
	}, "")
	v.format = func(l []string) string { return strings.Join(l, ",") }
	return v
}

func durVar(p *time.Duration, def time.Duration) flag.Value {
	return newVar(p, def, time.ParseDuration, "not a duration (e.g. 5s, 1m30s)")
}

func floatVar(p *float64, def float64) flag.Value {
	return newVar(p, def, func(s string) (float64, error) { return strconv.ParseFloat(s, 64) }, "not a number")
}

func boolVar(p *bool, def bool) flag.Value {
	v := newVar(p, def, strconv.ParseBool, "not true or false")
	v.isBool = true
	return v
}

func intVar(p *int, def int) flag.Value {
	return newVar(p, def, strconv.Atoi, "not a whole number")
}

func int64Var(p *int64, def int64) flag.Value {
	return newVar(p, def, func(s string) (int64, error) { return strconv.ParseInt(s, 10, 64) }, "not a whole number")
}

func int32Var(p *int32, def int32) flag.Value {
	return newVar(p, def, func(s string) (int32, error) {
		n, err := strconv.ParseInt(s, 10, 32)
		return int32(n), err
	}, "not a whole number")
}
