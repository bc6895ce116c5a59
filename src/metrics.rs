//! Every Prometheus metric of skuwatch: names, help texts, units, histogram
//! buckets, and the small helpers the rest of the code calls.
//!
//! Conventions (Prometheus naming): prefix `skuwatch_`, base units
//! (`_seconds`), counters end in `_total`. No label takes values that grow
//! with the catalog or the user base: no SKU, user, session or raw path
//! labels; HTTP requests are labelled with the matched route template
//! (`/api/v1/skus/{sku}`), and requests that match no route with
//! [`UNMATCHED_ROUTE`]. The test `metrics_series_do_not_grow_with_the_catalog`
//! holds this.
//!
//! The recorder is process-wide (the `metrics` facade has one global
//! recorder): several servers in one process (the tests) share it.
//! Histogram upkeep (draining each histogram's buffer into its buckets) runs
//! on a thread of its own every [`UPKEEP_EVERY`], so memory stays bounded
//! even when nobody scrapes.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use skuwatch_actors::domain::{AlertKind, AlertStatus, Committed, HoldStatus};
pub use skuwatch_actors::metrics::{
    ACTORS_ACTIVE, ACTORS_PINNED, ACTOR_ACTIVATIONS, ACTOR_CHANGES_CONFLATED, ACTOR_COMMIT_WRITES,
    ACTOR_MAILBOX_REFUSED, ACTOR_PASSIVATIONS, ACTOR_PINS_REFUSED, ACTOR_RESTARTS,
};
use skuwatch_actors::store::{Prunable, WriteOutcome};

// --- HTTP --------------------------------------------------------------
/// Counter `{method, route, status}`: HTTP requests answered.
pub const HTTP_REQUESTS: &str = "skuwatch_http_requests_total";
/// Histogram `{method, route, status}`: time to the response head, seconds.
pub const HTTP_DURATION: &str = "skuwatch_http_request_duration_seconds";
/// Gauge: requests being handled now (drains to 0 on graceful shutdown).
pub const HTTP_IN_FLIGHT: &str = "skuwatch_http_requests_in_flight";
/// The `route` label of a request that matched no route (404 fallback).
pub const UNMATCHED_ROUTE: &str = "unmatched";

// --- WebSocket ---------------------------------------------------------
/// Gauge: WebSocket sessions open on this instance.
pub const WS_SESSIONS_OPEN: &str = "skuwatch_ws_sessions_open";
/// Counter `{kind}`: messages written to WebSockets; `kind` is `change`
/// (in order), `conflated` (newest per SKU of a slow session), `alert`,
/// `replay` (snapshot and `since` replay) or `control` (replies, errors).
pub const WS_MESSAGES_SENT: &str = "skuwatch_ws_messages_sent_total";
/// Counter: changes a slow session never sent because a newer change of the
/// same SKU replaced them in its conflation map.
pub const WS_UPDATES_CONFLATED: &str = "skuwatch_ws_updates_conflated_total";
/// Counter `{reason}`: sessions the server closed; see [`DropReason`].
pub const WS_SESSIONS_DROPPED: &str = "skuwatch_ws_sessions_dropped_total";
/// Histogram: from a change's commit time (`event.at`) to the moment its
/// live message was written to the socket, seconds.
pub const WS_PUSH_LATENCY: &str = "skuwatch_ws_push_latency_seconds";
/// Counter `{code, via}`: positions refused because this server does not
/// have them (`code` `cursor_ahead` or `cursor_unknown`; `via` `events` for
/// `/events` 409s, `ws` for a `since` answered with a notice and a
/// snapshot, `feed` when this instance's own feed found the database
/// behind it). Non-zero after a restore or a failover.
pub const CURSOR_REFUSED: &str = "skuwatch_cursor_refused_total";

// --- Bus and feed ------------------------------------------------------
/// Counter: changes this instance published on the bus.
pub const BUS_PUBLISHED: &str = "skuwatch_bus_events_published_total";
/// Counter: changes this instance's listener received from the bus.
pub const BUS_RECEIVED: &str = "skuwatch_bus_events_received_total";
/// Gauge: 1 while the bus listener is connected (always 1 in-process).
pub const BUS_LISTENER_UP: &str = "skuwatch_bus_listener_up";
/// Counter: reconnections of the bus listener (Redis).
pub const BUS_RECONNECTS: &str = "skuwatch_bus_listener_reconnects_total";
/// Counter: changes read from the database because the bus lost, delayed
/// or had not yet delivered them (gap fill and catch-up).
pub const BUS_CATCHUP_EVENTS: &str = "skuwatch_bus_catchup_events_total";
/// Histogram: from a change's commit time to its receipt by the listener.
pub const BUS_LAG: &str = "skuwatch_bus_lag_seconds";
/// Counter: changes the Redis publisher could not publish (Redis down or
/// slow); other instances read them from the database.
pub const BUS_PUBLISH_FAILURES: &str = "skuwatch_bus_publish_failures_total";

// --- Database ----------------------------------------------------------
/// Gauge `{pool}`: open connections of a pool.
pub const DB_POOL_CONNECTIONS: &str = "skuwatch_db_pool_connections";
/// Gauge `{pool}`: open connections that are idle.
pub const DB_POOL_IDLE: &str = "skuwatch_db_pool_idle_connections";
/// Gauge `{pool}`: the pool's maximum size.
pub const DB_POOL_MAX: &str = "skuwatch_db_pool_max_connections";
/// Histogram `{pool}`: wait for a connection and `BEGIN` of a write
/// transaction, seconds.
pub const DB_ACQUIRE: &str = "skuwatch_db_acquire_seconds";

// --- Stock health and alerts -------------------------------------------
/// Gauge: SKUs in the catalog (from the summary, refreshed periodically).
pub const SKUS: &str = "skuwatch_skus";
/// Gauge: SKUs whose stock is below their low-stock threshold.
pub const SKUS_BELOW_THRESHOLD: &str = "skuwatch_skus_below_threshold";
/// Gauge: SKUs with stock 0.
pub const SKUS_OUT_OF_STOCK: &str = "skuwatch_skus_out_of_stock";
/// Gauge: SKUs whose days of cover (as of their last change) is below
/// their lead time (issue 18).
pub const SKUS_WITHIN_LEAD_TIME: &str = "skuwatch_skus_cover_within_lead_time";
/// Gauge: SKUs with no forecast (too few sales, no rate, beyond 365 days).
pub const SKUS_NO_FORECAST: &str = "skuwatch_skus_without_forecast";
/// Gauge `{kind}`: alerts open now.
pub const ALERTS_OPEN: &str = "skuwatch_alerts_open";
/// Counter `{kind}`: alerts raised by writes of this instance.
pub const ALERTS_RAISED: &str = "skuwatch_alerts_raised_total";

// --- Bounds on what clients can make the server hold (issue 13) -------
/// Counter `{scope}`: login attempts refused by the throttle, by the limit
/// that refused them (`pair`: username and address, `address`, `user`).
pub const LOGIN_THROTTLED: &str = "skuwatch_login_throttled_total";
/// Gauge: keys (username-and-address pairs, addresses, usernames) the
/// login throttle is tracking; at most `auth::throttle::MAX_KEYS`.
pub const LOGIN_THROTTLE_KEYS: &str = "skuwatch_login_throttle_keys";
/// Gauge: distinct SKU codes with at least one WebSocket subscriber (codes
/// need not exist yet; bounded per session and sessions per user).
pub const WS_SUBSCRIBED_SKUS: &str = "skuwatch_ws_subscribed_skus";
/// Counter `{queue}`: changes a bounded push-path queue dropped; each is
/// made good from the database or by conflation. `queue`: `feed` (the bus's
/// hand-over to the feed overflowed; the feed read them back from the
/// database).
pub const PUSH_DROPPED: &str = "skuwatch_push_dropped_total";
/// Counter: idempotency keys deleted after their 24 h window.
pub const IDEMPOTENCY_KEYS_PURGED: &str = "skuwatch_idempotency_keys_purged_total";
/// Counter: pre-aggregated history blocks built by the roll-up (each
/// summarises 256 * 4^(level - 1) versions of one SKU; issue 15, target 4).
pub const HISTORY_BLOCKS_BUILT: &str = "skuwatch_history_blocks_built_total";
/// Counter: changes written straight into the database (reason
/// `external`, issue 16) this instance's feed dispatched.
pub const EXTERNAL_EVENTS: &str = "skuwatch_external_events_total";
/// Counter: external events whose alerts this instance evaluated (each is
/// settled by exactly one instance).
pub const EXTERNAL_SETTLED: &str = "skuwatch_external_alerts_settled_total";
/// Counter: times the database listener told the feed of events it had
/// not dispatched (a PostgreSQL notification, SQLite's file changed, or
/// the listener reconnected), so it read them from the database at once.
pub const EXTERNAL_WAKEUPS: &str = "skuwatch_external_wakeups_total";
/// Gauge: 1 while the database listener (PostgreSQL `LISTEN`, SQLite
/// `data_version` poll) is connected.
pub const EXTERNAL_LISTENER_UP: &str = "skuwatch_external_listener_up";
/// Counter: database listener connections lost and made again.
pub const EXTERNAL_LISTENER_RECONNECTS: &str = "skuwatch_external_listener_reconnects_total";
/// Holds active now (issue 17; the same on every instance: read from the
/// database).
pub const HOLDS_ACTIVE: &str = "skuwatch_holds_active";
/// Hold changes committed by this instance, by `change` (created,
/// extended, released, expired, committed).
pub const HOLD_CHANGES: &str = "skuwatch_hold_changes_total";
/// From a hold's `expires_at` to the commit of its expiry, on the
/// database's clock (the sweeper's lag).
pub const HOLD_EXPIRY_LAG: &str = "skuwatch_hold_expiry_lag_seconds";
/// Rows the sweeper deleted once old enough, by `what` (holds, alerts).
pub const UPKEEP_PRUNED: &str = "skuwatch_upkeep_pruned_total";
/// Gauge: committed events the history roll-up has not looked at yet
/// (charts stay exact; a lag only makes long charts read more events).
pub const HISTORY_ROLLUP_BEHIND: &str = "skuwatch_history_rollup_behind_events";
/// Counter: SKU sales rates rebuilt from their events (issue 18): rows
/// from before the forecast, external INSERTs, a changed half-life.
pub const FORECAST_RATES_REBUILT: &str = "skuwatch_forecast_rates_rebuilt_total";
/// Counter: forecasts the re-evaluation re-read as of now and wrote
/// (each ends a `stockout_forecast` alert of a SKU that stopped selling).
pub const FORECAST_REFORECASTS: &str = "skuwatch_forecast_reforecasts_total";
/// Counter: webhook deliveries written to the outbox (issue 19), one per
/// message per endpoint.
pub const WEBHOOK_ENQUEUED: &str = "skuwatch_webhook_deliveries_enqueued_total";
/// Counter: webhook delivery attempts, by `result`: `delivered`, `retry`
/// (failed, tried again later), `failed` (the last try failed), `gone` (the
/// receiver answered 410), `refused` (the address is not allowed).
pub const WEBHOOK_ATTEMPTS: &str = "skuwatch_webhook_attempts_total";
/// Histogram: seconds from a delivery's commit to its first attempt.
pub const WEBHOOK_FIRST_ATTEMPT_DELAY: &str = "skuwatch_webhook_first_attempt_delay_seconds";
/// Histogram: seconds an attempt took (connect, send, response head).
pub const WEBHOOK_ATTEMPT_DURATION: &str = "skuwatch_webhook_attempt_duration_seconds";
/// Gauge: deliveries waiting for an attempt.
pub const WEBHOOK_QUEUE: &str = "skuwatch_webhook_queue_depth";
/// Gauge: age of the oldest undelivered delivery, seconds (0 when none).
pub const WEBHOOK_OLDEST: &str = "skuwatch_webhook_oldest_undelivered_seconds";
/// Counter: digest messages the rate cap made, and the messages folded in.
pub const WEBHOOK_DIGESTS: &str = "skuwatch_webhook_digests_total";
pub const WEBHOOK_DIGESTED: &str = "skuwatch_webhook_digested_messages_total";
/// Counter: endpoints the server disabled, by `reason` (gone, failing).
pub const WEBHOOK_ENDPOINTS_DISABLED: &str = "skuwatch_webhook_endpoints_disabled_total";
/// The results of [`WEBHOOK_ATTEMPTS`].
pub const WEBHOOK_RESULTS: [&str; 5] = ["delivered", "retry", "failed", "gone", "refused"];
/// Gauge: the process's resident memory (VmRSS), bytes; refreshed with the
/// other gauges (Linux; absent elsewhere).
pub const PROCESS_RESIDENT: &str = "skuwatch_process_resident_bytes";
/// Counter: times the instance asked its threads to give free memory back
/// to the system, after its load (SKU actors plus sessions) fell to half of
/// its peak (src/memory.rs; issue 15, target 5).
pub const MEMORY_RELEASES: &str = "skuwatch_memory_releases_total";
/// Counter: write calls refused because the group-commit queue was full
/// (each one a 503 `overloaded`; `SKUWATCH_WRITE_QUEUE`).
pub const WRITE_QUEUE_REFUSED: &str = "skuwatch_write_queue_refused_total";
/// Counter `{kind}`: requests refused with 503 because a bounded wait
/// elapsed (`overloaded`), or whose outcome is unknown (`outcome_unknown`).
pub const REFUSED_503: &str = "skuwatch_http_503_total";

/// Gauge `{version}`: always 1; the running build.
pub const BUILD_INFO: &str = "skuwatch_build_info";

/// How often histogram buffers are drained when nobody scrapes.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Buckets for request and database times: 0.5 ms to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Jobs per commit call of a SKU actor: 1 (no contention) to the group
/// size, 256.
const COMMIT_WRITES_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Buckets for push and bus latency: 100 µs (in-process) to 10 s (a slow
/// client or a lagging Redis).
const PUSH_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Why the server closed a WebSocket session (label `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// 4408: conflation limit or a blocked write.
    TooSlow,
    /// No frame for two ping intervals.
    DeadPeer,
    /// 4401: no or expired token.
    Unauthenticated,
    /// 4403: a token without the role to watch.
    Forbidden,
    /// 1009: a message over the size limit.
    TooBig,
    /// 1001: the server is shutting down.
    Shutdown,
    /// 1011: the session actor failed (a bug); only its own socket closes.
    Failed,
}

impl DropReason {
    pub const ALL: [DropReason; 7] = [
        DropReason::TooSlow,
        DropReason::DeadPeer,
        DropReason::Unauthenticated,
        DropReason::Forbidden,
        DropReason::TooBig,
        DropReason::Shutdown,
        DropReason::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooSlow => "too_slow",
            DropReason::DeadPeer => "dead_peer",
            DropReason::Unauthenticated => "unauthenticated",
            DropReason::Forbidden => "forbidden",
            DropReason::TooBig => "too_big",
            DropReason::Shutdown => "shutdown",
            DropReason::Failed => "failed",
        }
    }
}

const ALERT_KINDS: [AlertKind; 4] = AlertKind::ALL;
const MESSAGE_KINDS: [&str; 5] = ["change", "conflated", "alert", "replay", "control"];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call (later calls return the
/// same handle), describes every metric, starts the upkeep thread, and
/// creates the labelled series whose label values are known, at 0, so rates
/// and dashboards show 0 rather than nothing before the first event.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(DB_ACQUIRE.into()), LATENCY_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(WS_PUSH_LATENCY.into()), PUSH_BUCKETS)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(BUS_LAG.into()), PUSH_BUCKETS))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(HOLD_EXPIRY_LAG.into()), PUSH_BUCKETS)
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(WEBHOOK_FIRST_ATTEMPT_DELAY.into()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(WEBHOOK_ATTEMPT_DURATION.into()),
                        LATENCY_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(ACTOR_COMMIT_WRITES.into()),
                        COMMIT_WRITES_BUCKETS,
                    )
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder (a test harness's) wins; ours then renders
            // nothing, which is visible at once on /metrics.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            zero_known_series();
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                });
            handle
        })
        .clone()
}

fn describe() {
    use Unit::{Count, Seconds};
    describe_counter!(
        HTTP_REQUESTS,
        Count,
        "HTTP requests answered, by method, matched route template and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Seconds,
        "Time from request to response head, by method, matched route template and status"
    );
    describe_gauge!(HTTP_IN_FLIGHT, Count, "HTTP requests being handled now");
    describe_gauge!(
        WS_SESSIONS_OPEN,
        Count,
        "WebSocket sessions open on this instance"
    );
    describe_counter!(
        WS_MESSAGES_SENT,
        Count,
        "Messages written to WebSockets, by kind (change, conflated, alert, replay, control)"
    );
    describe_counter!(
        WS_UPDATES_CONFLATED,
        Count,
        "Changes a slow session skipped because a newer change of the same SKU replaced them"
    );
    describe_counter!(WS_SESSIONS_DROPPED, Count, "WebSocket sessions closed by the server, by reason (too_slow, dead_peer, unauthenticated, forbidden, too_big, shutdown, failed)");
    describe_histogram!(
        WS_PUSH_LATENCY,
        Seconds,
        "From a change's commit to the write of its live message to a WebSocket"
    );
    describe_counter!(
        BUS_PUBLISHED,
        Count,
        "Changes published on the bus by this instance"
    );
    describe_counter!(
        BUS_RECEIVED,
        Count,
        "Changes received from the bus by this instance's listener"
    );
    describe_gauge!(
        BUS_LISTENER_UP,
        Count,
        "1 while the bus listener is connected, else 0"
    );
    describe_counter!(BUS_RECONNECTS, Count, "Reconnections of the bus listener");
    describe_counter!(
        CURSOR_REFUSED,
        Count,
        "Feed positions refused as ahead of or unknown to this server (after a restore or failover), by code and via (events, ws)"
    );
    describe_counter!(
        BUS_PUBLISH_FAILURES,
        Count,
        "Changes that could not be published to Redis (other instances read them from the database)"
    );
    describe_counter!(BUS_CATCHUP_EVENTS, Count, "Changes read from the database to fill gaps or catch up after the bus lost or delayed them");
    describe_histogram!(
        BUS_LAG,
        Seconds,
        "From a change's commit to its receipt by the bus listener"
    );
    describe_gauge!(ACTORS_ACTIVE, Count, "SKU actors active on this instance");
    describe_counter!(ACTOR_ACTIVATIONS, Count, "SKU actors started on first use");
    describe_counter!(
        ACTOR_PASSIVATIONS,
        Count,
        "SKU actors stopped after being idle, or after finding their SKU absent"
    );
    describe_counter!(
        ACTOR_RESTARTS,
        Count,
        "SKU actors restarted by the supervisor after a failure"
    );
    describe_histogram!(
        ACTOR_COMMIT_WRITES,
        Count,
        "Writes (single or batch jobs) in one commit call of a SKU actor: those that arrived while its previous call was in flight"
    );
    describe_counter!(
        ACTOR_MAILBOX_REFUSED,
        Count,
        "Writes refused with 503 overloaded because their SKU already held SKUWATCH_ACTOR_MAILBOX writes not yet answered"
    );
    describe_counter!(
        ACTOR_CHANGES_CONFLATED,
        Count,
        "States offered to a SKU actor merged into one already waiting for it instead of queued behind it"
    );
    describe_gauge!(
        ACTORS_PINNED,
        Count,
        "SKU actors kept active because their SKU has WebSocket subscribers"
    );
    describe_counter!(
        ACTOR_PINS_REFUSED,
        Count,
        "Idle subscribed SKU actors passivated because SKUWATCH_ACTOR_MAX_PINNED was reached"
    );
    describe_counter!(
        PUSH_DROPPED,
        Count,
        "Changes a bounded push-path queue dropped and that were made good from the database, by queue"
    );
    describe_gauge!(
        DB_POOL_CONNECTIONS,
        Count,
        "Open database connections, by pool"
    );
    describe_gauge!(DB_POOL_IDLE, Count, "Idle database connections, by pool");
    describe_gauge!(DB_POOL_MAX, Count, "Maximum database connections, by pool");
    describe_histogram!(
        DB_ACQUIRE,
        Seconds,
        "Wait for a database connection and BEGIN of a write transaction, by pool"
    );
    describe_gauge!(SKUS, Count, "SKUs in the catalog");
    describe_gauge!(
        SKUS_WITHIN_LEAD_TIME,
        Count,
        "SKUs whose days of cover is below their lead time"
    );
    describe_gauge!(
        SKUS_NO_FORECAST,
        Count,
        "SKUs without a forecast (too few sales, no rate, or beyond 365 days)"
    );
    describe_gauge!(
        SKUS_BELOW_THRESHOLD,
        Count,
        "SKUs whose stock is below their low-stock threshold"
    );
    describe_gauge!(SKUS_OUT_OF_STOCK, Count, "SKUs with no stock");
    describe_gauge!(ALERTS_OPEN, Count, "Alerts open now, by kind");
    describe_counter!(
        ALERTS_RAISED,
        Count,
        "Alerts raised by this instance's writes, by kind"
    );
    describe_counter!(
        LOGIN_THROTTLED,
        Count,
        "Login attempts refused by the throttle, by scope (pair, address, user)"
    );
    describe_gauge!(
        LOGIN_THROTTLE_KEYS,
        Count,
        "Keys tracked by the login throttle"
    );
    describe_gauge!(
        WS_SUBSCRIBED_SKUS,
        Count,
        "Distinct SKU codes with at least one WebSocket subscriber"
    );
    describe_counter!(
        IDEMPOTENCY_KEYS_PURGED,
        Count,
        "Idempotency keys deleted after their 24 h window"
    );
    describe_counter!(
        HISTORY_BLOCKS_BUILT,
        Count,
        "Pre-aggregated history blocks built by the roll-up"
    );
    describe_counter!(
        EXTERNAL_EVENTS,
        Count,
        "Changes written straight into the database that the feed dispatched"
    );
    describe_counter!(
        EXTERNAL_SETTLED,
        Count,
        "External events whose alerts this instance evaluated"
    );
    describe_counter!(
        EXTERNAL_WAKEUPS,
        Count,
        "Feed reads of the database on the word of its listener"
    );
    describe_gauge!(
        EXTERNAL_LISTENER_UP,
        Count,
        "1 while the database listener for external changes is connected"
    );
    describe_counter!(
        EXTERNAL_LISTENER_RECONNECTS,
        Count,
        "Database listener connections lost and made again"
    );
    describe_gauge!(HOLDS_ACTIVE, Count, "Holds active now");
    describe_counter!(
        HOLD_CHANGES,
        Count,
        "Hold changes committed by this instance, by change (created, extended, released, expired, committed)"
    );
    describe_histogram!(
        HOLD_EXPIRY_LAG,
        Unit::Seconds,
        "From a hold's expires_at to the commit that expired it (database clock)"
    );
    describe_counter!(
        UPKEEP_PRUNED,
        Count,
        "Ended holds and resolved alerts deleted after their retention, by what"
    );
    describe_counter!(
        FORECAST_RATES_REBUILT,
        Count,
        "SKU sales rates rebuilt from their events (missing or kept under another half-life)"
    );
    describe_counter!(
        FORECAST_REFORECASTS,
        Count,
        "Forecasts re-read as of now by the re-evaluation and written (a stockout_forecast alert ended)"
    );
    describe_counter!(
        WEBHOOK_ENQUEUED,
        Count,
        "Webhook deliveries written to the outbox (one per message per endpoint)"
    );
    describe_counter!(
        WEBHOOK_ATTEMPTS,
        Count,
        "Webhook delivery attempts by result (delivered, retry, failed, gone, refused)"
    );
    describe_histogram!(
        WEBHOOK_FIRST_ATTEMPT_DELAY,
        Unit::Seconds,
        "From a webhook delivery's commit to the start of its first attempt"
    );
    describe_histogram!(
        WEBHOOK_ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of a webhook delivery attempt"
    );
    describe_gauge!(
        WEBHOOK_QUEUE,
        Count,
        "Webhook deliveries waiting for an attempt"
    );
    describe_gauge!(
        WEBHOOK_OLDEST,
        Unit::Seconds,
        "Age of the oldest webhook delivery waiting for an attempt (0 when none)"
    );
    describe_counter!(
        WEBHOOK_DIGESTS,
        Count,
        "Digest messages made by the per-endpoint rate cap"
    );
    describe_counter!(
        WEBHOOK_DIGESTED,
        Count,
        "Webhook messages folded into digests by the rate cap"
    );
    describe_counter!(
        WEBHOOK_ENDPOINTS_DISABLED,
        Count,
        "Webhook endpoints disabled by the server, by reason (gone, failing)"
    );
    describe_gauge!(
        HISTORY_ROLLUP_BEHIND,
        Count,
        "Committed events the history roll-up has not looked at yet"
    );
    describe_gauge!(
        PROCESS_RESIDENT,
        Unit::Bytes,
        "Resident memory of the process (VmRSS)"
    );
    describe_counter!(
        MEMORY_RELEASES,
        Count,
        "Times the threads were asked to give free memory back after a load ended"
    );
    describe_counter!(
        WRITE_QUEUE_REFUSED,
        Count,
        "Write calls refused because the group-commit queue was full (503 overloaded)"
    );
    describe_counter!(
        REFUSED_503,
        Count,
        "Requests answered 503 overloaded (nothing done) or outcome_unknown, by kind"
    );
    describe_gauge!(
        BUILD_INFO,
        Count,
        "Always 1, labelled with the running version"
    );
}

fn zero_known_series() {
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    counter!(FORECAST_REFORECASTS).absolute(0);
    counter!(WEBHOOK_ENQUEUED).absolute(0);
    counter!(WEBHOOK_DIGESTS).absolute(0);
    counter!(WEBHOOK_DIGESTED).absolute(0);
    for result in WEBHOOK_RESULTS {
        counter!(WEBHOOK_ATTEMPTS, "result" => result).absolute(0);
    }
    for reason in ["gone", "failing"] {
        counter!(WEBHOOK_ENDPOINTS_DISABLED, "reason" => reason).absolute(0);
    }
    gauge!(WEBHOOK_QUEUE).set(0.0);
    gauge!(WEBHOOK_OLDEST).set(0.0);
    counter!(FORECAST_RATES_REBUILT).absolute(0);
    for reason in DropReason::ALL {
        counter!(WS_SESSIONS_DROPPED, "reason" => reason.as_str()).absolute(0);
    }
    for kind in MESSAGE_KINDS {
        counter!(WS_MESSAGES_SENT, "kind" => kind).absolute(0);
    }
    for kind in ALERT_KINDS {
        counter!(ALERTS_RAISED, "kind" => kind.as_str()).absolute(0);
    }
    for scope in ["pair", "address", "user"] {
        counter!(LOGIN_THROTTLED, "scope" => scope).absolute(0);
    }
    counter!(PUSH_DROPPED, "queue" => "feed").absolute(0);
    for change in HOLD_CHANGE_KINDS {
        counter!(HOLD_CHANGES, "change" => change).absolute(0);
    }
    for what in [
        Prunable::EndedHolds,
        Prunable::ResolvedAlerts,
        Prunable::EndedDeliveries,
    ] {
        counter!(UPKEEP_PRUNED, "what" => what.as_str()).absolute(0);
    }
    gauge!(HOLDS_ACTIVE).set(0.0);
    for kind in ["overloaded", "outcome_unknown"] {
        counter!(REFUSED_503, "kind" => kind).absolute(0);
    }
    for name in [
        WS_UPDATES_CONFLATED,
        BUS_PUBLISHED,
        BUS_RECEIVED,
        BUS_RECONNECTS,
        BUS_PUBLISH_FAILURES,
        BUS_CATCHUP_EVENTS,
        ACTOR_ACTIVATIONS,
        ACTOR_PASSIVATIONS,
        ACTOR_RESTARTS,
        ACTOR_MAILBOX_REFUSED,
        ACTOR_PINS_REFUSED,
        ACTOR_CHANGES_CONFLATED,
        IDEMPOTENCY_KEYS_PURGED,
        WRITE_QUEUE_REFUSED,
        HISTORY_BLOCKS_BUILT,
        MEMORY_RELEASES,
        EXTERNAL_EVENTS,
        EXTERNAL_SETTLED,
        EXTERNAL_WAKEUPS,
        EXTERNAL_LISTENER_RECONNECTS,
    ] {
        counter!(name).absolute(0);
    }
    gauge!(WS_SESSIONS_OPEN).set(0.0);
    gauge!(ACTORS_ACTIVE).set(0.0);
    gauge!(ACTORS_PINNED).set(0.0);
    gauge!(HISTORY_ROLLUP_BEHIND).set(0.0);
    gauge!(EXTERNAL_LISTENER_UP).set(0.0);
    set_resident_memory();
    gauge!(HTTP_IN_FLIGHT).set(0.0);
}

/// Seconds from `at_micros` (microseconds since the epoch) to now; 0 when
/// the clocks disagree (another instance's clock ahead of ours).
pub fn seconds_since_micros(at_micros: i64) -> f64 {
    let now = chrono::Utc::now().timestamp_micros();
    (now - at_micros).max(0) as f64 / 1e6
}

/// Counts a change the bus listener received, and its lag since commit.
pub fn bus_received(change: &Committed) {
    counter!(BUS_RECEIVED).increment(1);
    metrics::histogram!(BUS_LAG).record(seconds_since_micros(change.event.at.0));
}

/// Counts a message written to a WebSocket.
pub fn ws_message_sent(kind: &'static str) {
    counter!(WS_MESSAGES_SENT, "kind" => kind).increment(1);
}

/// Counts a refused feed position; see [`CURSOR_REFUSED`].
pub fn cursor_refused(code: &'static str, via: &'static str) {
    counter!(CURSOR_REFUSED, "code" => code, "via" => via).increment(1);
}

/// Counts changes a bounded push-path queue dropped; see [`PUSH_DROPPED`].
pub fn push_dropped(queue: &'static str, count: u64) {
    counter!(PUSH_DROPPED, "queue" => queue).increment(count);
}

/// Counts a session the server closed.
pub fn ws_session_dropped(reason: DropReason) {
    counter!(WS_SESSIONS_DROPPED, "reason" => reason.as_str()).increment(1);
}

/// Counts the alerts that committed changes opened.
pub fn alerts_raised(changes: &[Committed]) {
    for alert in changes.iter().flat_map(|c| &c.alerts) {
        if alert.status == AlertStatus::Open {
            counter!(ALERTS_RAISED, "kind" => alert.kind.as_str()).increment(1);
        }
    }
}

/// The `change` label values of [`HOLD_CHANGES`].
const HOLD_CHANGE_KINDS: [&str; 5] = ["created", "extended", "released", "expired", "committed"];

/// Counts a committed hold job by what it did.
pub fn hold_changed(outcome: &WriteOutcome) {
    if let WriteOutcome::Held { hold, changes } = outcome {
        let change = match hold.status {
            HoldStatus::Active if changes.is_empty() => "extended",
            HoldStatus::Active => "created",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
            HoldStatus::Committed => "committed",
        };
        counter!(HOLD_CHANGES, "change" => change).increment(1);
    }
}

/// Sets the stock-health gauges from the store's summary
/// (`GET /api/v1/summary` shape).
pub fn set_stock_health(summary: &skuwatch_actors::store::Summary) {
    gauge!(SKUS).set(summary.skus as f64);
    gauge!(SKUS_BELOW_THRESHOLD).set(summary.below_threshold as f64);
    gauge!(SKUS_OUT_OF_STOCK).set(summary.out_of_stock as f64);
    gauge!(SKUS_WITHIN_LEAD_TIME).set(summary.days_of_cover.within_lead_time as f64);
    gauge!(SKUS_NO_FORECAST).set(summary.days_of_cover.no_forecast as f64);
    for kind in ALERT_KINDS {
        let open = summary.open_alerts.get(kind.as_str()).copied().unwrap_or(0);
        gauge!(ALERTS_OPEN, "kind" => kind.as_str()).set(open as f64);
    }
}

/// One database pool's occupancy (defined with the storage trait).
pub use skuwatch_actors::store::PoolStats;

pub fn set_pool_stats(stats: &[PoolStats]) {
    for s in stats {
        gauge!(DB_POOL_CONNECTIONS, "pool" => s.pool).set(f64::from(s.size));
        gauge!(DB_POOL_IDLE, "pool" => s.pool).set(s.idle as f64);
        gauge!(DB_POOL_MAX, "pool" => s.pool).set(f64::from(s.max));
    }
}

/// Sets [`PROCESS_RESIDENT`] from `/proc/self/status` (Linux only).
pub fn set_resident_memory() {
    let kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kib| kib.parse::<f64>().ok())
        });
    if let Some(kib) = kib {
        gauge!(PROCESS_RESIDENT).set(kib * 1024.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_from_a_clock_ahead_of_ours_is_zero_not_negative() {
        let future = chrono::Utc::now().timestamp_micros() + 5_000_000;
        assert_eq!(seconds_since_micros(future), 0.0);
        let past = chrono::Utc::now().timestamp_micros() - 2_000_000;
        assert!(seconds_since_micros(past) >= 2.0);
    }

    #[test]
    fn bucket_lists_span_sub_millisecond_to_seconds_in_order() {
        for buckets in [LATENCY_BUCKETS, PUSH_BUCKETS] {
            assert!(buckets.windows(2).all(|w| w[0] < w[1]));
            assert!(buckets[0] < 0.001 && *buckets.last().unwrap() >= 10.0);
        }
    }

    #[test]
    fn drop_reasons_are_distinct_labels() {
        let labels: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), DropReason::ALL.len());
    }
}
