//! Settings: defaults, then `SKUWATCH_*`/`DATABASE_URL` environment, then
//! command-line flags (clap's `env`). Every setting is in the README's
//! configuration table.

use std::fmt;
use std::net::SocketAddr;

use skuwatch_actors::domain::AlertRule;

/// A value that must never be printed (a database URL may hold a password).
#[derive(Clone)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// Settings of `skuwatch serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Address to listen on.
    #[arg(long, env = "SKUWATCH_BIND", default_value = "127.0.0.1:8000")]
    pub bind: SocketAddr,

    /// `postgres://...` or `sqlite://FILE`; the default is a SQLite file in
    /// the working directory, created and migrated on start.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "sqlite://skuwatch.db",
        hide_env_values = true
    )]
    pub database_url: Secret,

    /// Size of the PostgreSQL connection pool (SQLite: readers).
    #[arg(long, env = "SKUWATCH_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// Milliseconds a request waits for a pooled database connection, or a
    /// queued write for a group committer, before it is refused with 503
    /// `overloaded` and `Retry-After` (nothing was done).
    #[arg(long, env = "SKUWATCH_DB_ACQUIRE_TIMEOUT_MS", default_value_t = 5000)]
    pub db_acquire_timeout_ms: u64,

    /// Milliseconds a write waits for a row lock or the event clock
    /// (PostgreSQL `lock_timeout`; SQLite `busy_timeout`, a lock held by
    /// another process) before it is rolled back and refused with 503
    /// `overloaded`.
    #[arg(long, env = "SKUWATCH_DB_LOCK_TIMEOUT_MS", default_value_t = 10_000)]
    pub db_lock_timeout_ms: u64,

    /// Most write calls (a SKU actor's writes, a batch, a chunk of a CSV
    /// import) queued for the group committers; one more is refused at once
    /// with 503 `overloaded` and `Retry-After` (nothing was done).
    #[arg(long, env = "SKUWATCH_WRITE_QUEUE", default_value_t = crate::store::DEFAULT_WRITE_QUEUE)]
    pub write_queue: usize,

    /// Run pending PostgreSQL migrations at start. Off by default: they are
    /// a step of their own (`skuwatch migrate`), and an instance refuses
    /// to start while they are pending. SQLite always migrates at start.
    #[arg(long, env = "SKUWATCH_MIGRATE_ON_START", default_value_t = false, action = clap::ArgAction::Set)]
    pub migrate_on_start: bool,

    /// Milliseconds a request waits in a SKU actor's queue before it is
    /// withdrawn and refused with 503 `overloaded` (nothing was done). A
    /// write the actor has started is never withdrawn. Below the request
    /// timeout, so a write stuck behind a hot SKU's queue is answered
    /// "nothing done" rather than `outcome_unknown`.
    #[arg(
        long,
        env = "SKUWATCH_ACTOR_QUEUE_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub actor_queue_timeout_ms: u64,

    /// Most writes one SKU may hold at once (sent to its actor, callers
    /// still waiting: queued, pending, or committing). One more is refused at
    /// once with 503 `overloaded` and counted
    /// (`skuwatch_actor_mailbox_refused_total`), instead of waiting in an
    /// unbounded mailbox.
    #[arg(
        long,
        env = "SKUWATCH_ACTOR_MAILBOX",
        default_value_t = skuwatch_actors::registry::DEFAULT_MAILBOX
    )]
    pub actor_mailbox: usize,

    /// Seconds a SKU actor may stay unused before it is passivated.
    #[arg(long, env = "SKUWATCH_ACTOR_IDLE_SECS", default_value_t = 300)]
    pub actor_idle_secs: u64,

    /// Most SKU actors kept active at once because their SKU has WebSocket
    /// subscribers (pinned: not passivated). Past it, subscribed SKUs'
    /// actors passivate as others do; their subscribers still get every
    /// change (`skuwatch_actor_pins_refused_total`).
    #[arg(
        long,
        env = "SKUWATCH_ACTOR_MAX_PINNED",
        default_value_t = skuwatch_actors::sku_actor::DEFAULT_MAX_PINNED
    )]
    pub actor_max_pinned: usize,

    /// Redis for scale-out (`redis://host:6379/0`): the event bus between
    /// instances and the shared SKU state cache. Unset: an in-process bus
    /// serves one instance.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<Secret>,

    /// Namespace of every Redis key and channel, so deployments (and
    /// parallel tests) can share one Redis.
    #[arg(long, env = "SKUWATCH_REDIS_PREFIX", default_value = "skuwatch")]
    pub redis_prefix: String,

    /// Milliseconds between the Redis listener's heartbeats; three missed in
    /// a row count as a lost connection (a silent network cut included).
    #[arg(long, env = "SKUWATCH_REDIS_HEARTBEAT_MS", default_value_t = 1000)]
    pub redis_heartbeat_ms: u64,

    /// Messages a WebSocket session queues in order before conflating.
    #[arg(long, env = "SKUWATCH_WS_QUEUE", default_value_t = 1024)]
    pub ws_queue: usize,

    /// Distinct SKUs a conflating session may hold before it is closed (4408).
    #[arg(long, env = "SKUWATCH_WS_CONFLATE_MAX", default_value_t = 10_000)]
    pub ws_conflate_max: usize,

    /// Seconds between server pings; a peer silent for two is dropped.
    #[arg(long, env = "SKUWATCH_WS_PING_SECS", default_value_t = 20)]
    pub ws_ping_secs: u64,

    /// Seconds one WebSocket send may take before the client is too slow (4408).
    #[arg(long, env = "SKUWATCH_WS_SEND_TIMEOUT_SECS", default_value_t = 10)]
    pub ws_send_timeout_secs: u64,

    /// Largest WebSocket message from a client, in bytes; past it the
    /// socket closes with 1009.
    #[arg(long, env = "SKUWATCH_WS_MAX_MESSAGE_BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_message_bytes: usize,

    /// Largest single WebSocket frame from a client, in bytes: checked on
    /// the frame header, so an oversized frame closes with 1009 before its
    /// payload is read.
    #[arg(long, env = "SKUWATCH_WS_MAX_FRAME_BYTES", default_value_t = 1024 * 1024)]
    pub ws_max_frame_bytes: usize,

    /// Most SKUs in one subscribe/unsubscribe message (API.md: 1000); more
    /// get an error message and the socket stays open.
    #[arg(long, env = "SKUWATCH_WS_MAX_SKUS_PER_MESSAGE", default_value_t = 1000)]
    pub ws_max_skus_per_message: usize,

    /// Most distinct SKUs one WebSocket session may subscribe to; a
    /// subscribe past it gets an error message and subscribes nothing.
    #[arg(long, env = "SKUWATCH_WS_MAX_SUBSCRIPTIONS", default_value_t = 10_000)]
    pub ws_max_subscriptions: usize,

    /// Most WebSocket sessions open at once per user: one more is refused
    /// (429 on the upgrade, or close 1008 after a first-message auth).
    #[arg(long, env = "SKUWATCH_WS_MAX_SESSIONS_PER_USER", default_value_t = 32)]
    pub ws_max_sessions_per_user: usize,

    /// Kernel send buffer of each accepted connection, in bytes; unset: the
    /// kernel's autotuning. Smaller means a stalled WebSocket client is
    /// noticed (conflated, then closed) sooner and costs less memory.
    #[arg(long, env = "SKUWATCH_TCP_SEND_BUFFER_BYTES")]
    pub tcp_send_buffer_bytes: Option<usize>,

    /// HS256 signing secret, at least 32 bytes. Unset: a random one per
    /// process (tokens die with it), refused with SKUWATCH_ENV=production.
    #[arg(long, env = "SKUWATCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// `iss` of issued tokens, and the only one accepted.
    #[arg(long, env = "SKUWATCH_JWT_ISSUER", default_value = "skuwatch")]
    pub jwt_issuer: String,

    /// `aud` of issued tokens, and the only one accepted.
    #[arg(long, env = "SKUWATCH_JWT_AUDIENCE", default_value = "skuwatch-api")]
    pub jwt_audience: String,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "SKUWATCH_TOKEN_TTL_SECS", default_value_t = 3600)]
    pub token_ttl_secs: u64,

    /// `production` makes missing security settings fatal.
    #[arg(long, env = "SKUWATCH_ENV", default_value = "development")]
    pub env: String,

    /// With no users yet, creates `admin` with this password on start.
    #[arg(long, env = "SKUWATCH_ADMIN_PASSWORD", hide_env_values = true)]
    pub admin_password: Option<Secret>,

    /// Origins (`scheme://host[:port]`, comma-separated) allowed to open
    /// `/ws` besides the server's own; requests without `Origin` (not
    /// browsers) are not affected.
    #[arg(long, env = "SKUWATCH_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Proxies (CIDRs or addresses, comma-separated, e.g.
    /// `10.0.0.0/8,::1`) whose `Forwarded` (RFC 7239) or `X-Forwarded-For`
    /// header names the client. Empty: those headers are ignored and the
    /// peer address is the client (login throttling, logs).
    #[arg(long, env = "SKUWATCH_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// The one forwarding header the trusted proxies write:
    /// `x-forwarded-for` or `forwarded` (RFC 7239). The other is ignored,
    /// as a proxy passes a client's own copy of it through.
    #[arg(
        long,
        env = "SKUWATCH_FORWARDED_HEADER",
        value_enum,
        default_value_t = crate::auth::ForwardedHeader::XForwardedFor
    )]
    pub forwarded_header: crate::auth::ForwardedHeader,

    /// Lets `viewer` tokens watch `/ws` (read-only).
    #[arg(long, env = "SKUWATCH_WS_VIEWERS", default_value_t = false, action = clap::ArgAction::Set)]
    pub ws_viewers: bool,

    /// Seconds a WebSocket may stay unauthenticated before 4401.
    #[arg(long, env = "SKUWATCH_WS_AUTH_TIMEOUT_SECS", default_value_t = 10)]
    pub ws_auth_timeout_secs: u64,

    /// Largest JSON request body, in bytes (413 past it).
    #[arg(long, env = "SKUWATCH_BODY_LIMIT_BYTES", default_value_t = 1024 * 1024)]
    pub body_limit_bytes: usize,

    /// Largest CSV import body, in bytes (413 past it).
    #[arg(long, env = "SKUWATCH_IMPORT_LIMIT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub import_limit_bytes: usize,

    /// Serve `GET /metrics` on this address instead of the API's (to keep
    /// it off a public port). Unset: `/metrics` is a route of the API.
    #[arg(long, env = "SKUWATCH_METRICS_BIND")]
    pub metrics_bind: Option<SocketAddr>,

    /// Seconds between refreshes of the gauges read from the database
    /// (stock health, open alerts) and the pool gauges.
    #[arg(long, env = "SKUWATCH_METRICS_REFRESH_SECS", default_value_t = 10)]
    pub metrics_refresh_secs: u64,

    /// Milliseconds between the hold sweeper's looks for holds past their
    /// expiry (issue 17): a hold is released within about this long of
    /// its `expires_at`. Every instance sweeps; each hold expires once.
    #[arg(long, env = "SKUWATCH_HOLD_SWEEP_MS", default_value_t = 200)]
    pub hold_sweep_ms: u64,

    /// Hours an ended hold (released, expired, committed) is kept for
    /// `GET /holds` and idempotent retries before the sweeper deletes it.
    #[arg(long, env = "SKUWATCH_HOLD_RETENTION_HOURS", default_value_t = 168)]
    pub hold_retention_hours: u64,

    /// Days a delivery ordered now takes, for SKUs that set no
    /// `lead_time_days` (issue 18): a `stockout_forecast` alert is raised
    /// when the projected stock-out falls within it.
    #[arg(long, env = "SKUWATCH_LEAD_TIME_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(0..=365))]
    pub lead_time_days: u64,

    /// Which rules raise stock alerts for SKUs that set no `alert_rule`:
    /// `threshold` (low_stock only), `forecast` (stockout_forecast only) or
    /// `both`. Out of stock is always raised.
    #[arg(long, env = "SKUWATCH_ALERT_RULE", default_value = "both", value_parser = parse_alert_rule)]
    pub alert_rule: AlertRule,

    /// Seconds after which a sale weighs half in the sales rate (issue
    /// 18; default 7 days). Changing it rebuilds each SKU's rate from its
    /// events at its next change.
    #[arg(long, env = "SKUWATCH_FORECAST_HALF_LIFE_SECS", default_value_t = 604_800,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub forecast_half_life_secs: u64,

    /// Weighted sales below which a SKU has no days of cover and no
    /// forecast alert.
    #[arg(long, env = "SKUWATCH_FORECAST_MIN_SALES", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub forecast_min_sales: u64,

    /// Adjustment reasons counted as sales (comma-separated; committed
    /// holds sell with `sale`).
    #[arg(long, env = "SKUWATCH_FORECAST_SALE_REASONS", default_value = "sale")]
    pub forecast_sale_reasons: String,

    /// Adjustment reasons counted as returns (netted off the last sale
    /// within 24 h).
    #[arg(
        long,
        env = "SKUWATCH_FORECAST_RETURN_REASONS",
        default_value = "return"
    )]
    pub forecast_return_reasons: String,

    /// Seconds between re-readings of the forecasts of SKUs with an open
    /// `stockout_forecast` alert, which end the alerts of SKUs that stopped
    /// selling.
    #[arg(long, env = "SKUWATCH_FORECAST_SWEEP_SECS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub forecast_sweep_secs: u64,

    /// Days a resolved alert is kept before the sweeper deletes it (the
    /// events that raised and resolved it keep their copy).
    #[arg(long, env = "SKUWATCH_ALERT_RETENTION_DAYS", default_value_t = 90)]
    pub alert_retention_days: u64,

    /// Seconds that in-flight requests get to finish after SIGTERM/SIGINT;
    /// then the process exits anyway (uncommitted writes roll back).
    #[arg(long, env = "SKUWATCH_SHUTDOWN_TIMEOUT_SECS", default_value_t = 20)]
    pub shutdown_timeout_secs: u64,

    /// Most data rows in one CSV import (413 past it; nothing is imported).
    #[arg(long, env = "SKUWATCH_IMPORT_MAX_ROWS", default_value_t = 100_000)]
    pub import_max_rows: usize,

    /// Deepest nesting of arrays and objects in a JSON body or WebSocket
    /// message (422 / an error message past it). serde_json's own limit
    /// of 128 applies on top.
    #[arg(long, env = "SKUWATCH_JSON_MAX_DEPTH", default_value_t = 32)]
    pub json_max_depth: usize,

    /// Milliseconds a request may take before it is answered with 503:
    /// `outcome_unknown` for a write (it may still commit: re-read, then
    /// retry with If-Match or the same Idempotency-Key), `timeout` for a
    /// read. WebSocket sessions are not limited, only their upgrade request.
    #[arg(long, env = "SKUWATCH_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,

    /// The dashboard's address as users reach it (`https://skuwatch.example.com`):
    /// the base of the links in Slack webhook messages. Unset: no links.
    #[arg(long, env = "SKUWATCH_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Allow webhook endpoints on `http` and on loopback, private,
    /// link-local and other non-public addresses (a receiver on the same
    /// network; tests). Off: only public `https` endpoints.
    #[arg(long, env = "SKUWATCH_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,

    /// The key webhook signing secrets are encrypted with at rest (at least
    /// 32 bytes). Unset: derived from SKUWATCH_JWT_SECRET. Changing it
    /// makes every stored secret unreadable (rotate them).
    #[arg(long, env = "SKUWATCH_WEBHOOK_SECRET_KEY", hide_env_values = true)]
    pub webhook_secret_key: Option<Secret>,

    /// The waits before each retry of a failed webhook delivery
    /// (`5s,30s,2m,10m,1h,6h,24h`: eight attempts in all); each wait
    /// varies by up to 20 % either way.
    #[arg(long, env = "SKUWATCH_WEBHOOK_RETRY_SCHEDULE", value_delimiter = ',',
          default_value = crate::webhooks::DEFAULT_RETRY_SCHEDULE, value_parser = parse_wait)]
    pub webhook_retry_schedule: Vec<std::time::Duration>,

    /// Seconds an endpoint may fail every attempt before it is disabled
    /// (`disabled_reason: "failing"`); 3 days.
    #[arg(
        long,
        env = "SKUWATCH_WEBHOOK_DISABLE_AFTER_SECS",
        default_value_t = 259_200
    )]
    pub webhook_disable_after_secs: u64,

    /// Milliseconds one webhook attempt may take (connect, send, answer).
    #[arg(long, env = "SKUWATCH_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=20_000))]
    pub webhook_timeout_ms: u64,

    /// Messages an endpoint is sent per minute; past it, the messages due
    /// are folded into `alert.digest` messages (up to 1000 each). 0: no cap.
    #[arg(long, env = "SKUWATCH_WEBHOOK_RATE_CAP", default_value_t = 60)]
    pub webhook_rate_cap: u64,

    /// Milliseconds between the webhook worker's looks at the outbox (the
    /// bus wakes it at once for new alerts; this is the net).
    #[arg(long, env = "SKUWATCH_WEBHOOK_POLL_MS", default_value_t = 1000)]
    pub webhook_poll_ms: u64,

    /// Webhook attempts in flight per instance.
    #[arg(long, env = "SKUWATCH_WEBHOOK_CONCURRENCY", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub webhook_concurrency: u64,

    /// Days an ended webhook delivery stays in the delivery log.
    #[arg(long, env = "SKUWATCH_WEBHOOK_RETENTION_DAYS", default_value_t = 30)]
    pub webhook_retention_days: u64,

    /// Test-only fault injection; never read from the environment or flags.
    #[doc(hidden)]
    #[arg(skip)]
    pub inject_faults: skuwatch_actors::messages::InjectedFaults,
}

/// `threshold`, `forecast` or `both` (API.md `alert_rule`).
fn parse_alert_rule(raw: &str) -> Result<AlertRule, String> {
    AlertRule::parse(raw.trim())
        .ok_or_else(|| format!("{raw:?} is not threshold, forecast or both"))
}

/// A wait such as `5s`, `2m` or `1h` (humantime's form).
fn parse_wait(raw: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|e| format!("{raw:?}: {e}"))
}

/// A CIDR (`10.0.0.0/8`, `fd00::/8`) or a single address (`127.0.0.1`).
fn parse_proxy(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("{raw:?} is neither an IP address nor a CIDR"))
}

impl Default for Settings {
    fn default() -> Self {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        Defaults::parse_from(["skuwatch"]).settings
    }
}
