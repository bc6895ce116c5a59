//! Changes written straight into the database (issue 16): what makes them
//! reach the dashboards within milliseconds.
//!
//! The database itself turns an external change into events, in the
//! writer's transaction (`migrations/*/0007_external_changes.sql`); the
//! feed reads them like any change the bus missed ([`crate::feed`]). This
//! module only tells the feed *when* to look, and makes sure their alerts
//! are raised even if no feed reads them:
//! - **PostgreSQL:** a `LISTEN skuwatch_external` connection of its own
//!   (`application_name` `skuwatch-external-listener`). The trigger sends
//!   one notification per external transaction, at its commit; the API's
//!   writes send none (`NOTIFY` takes a database-wide lock at commit). A
//!   lost connection is made again, and the feed then catches up from the
//!   events table, since notifications sent meanwhile are gone.
//! - **SQLite:** `PRAGMA data_version` on a connection of its own, every
//!   [`DATA_VERSION_EVERY`]: it changes when another connection (another
//!   process, or this server's writer) commits.
//! - **Both:** a sweep every [`SETTLE_EVERY`] raises the alerts of
//!   external events no reader has met (all instances were down when they
//!   were written, or they were older than a feed's start).
//!
//! The feed's own tail check (every second) remains the safety net.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use skuwatch_actors::store::SkuStore;
use sqlx::Connection;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics;
use crate::store::Backend;

/// The channel the trigger notifies.
pub const CHANNEL: &str = "skuwatch_external";

/// The listener connection's `application_name` (an operator, or a test,
/// can find it in `pg_stat_activity`).
pub const LISTENER_NAME: &str = "skuwatch-external-listener";

/// How often SQLite's `data_version` is read.
const DATA_VERSION_EVERY: Duration = Duration::from_millis(20);

/// How often pending alerts of external events are looked for.
const SETTLE_EVERY: Duration = Duration::from_secs(1);

/// Waits between attempts to connect the listener, doubling up to the last.
const RECONNECT_BACKOFF: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(200),
    Duration::from_secs(1),
    Duration::from_secs(5),
];

/// Starts the listener for `database_url` and the settlement sweep; `wake`
/// is the feed's ([`crate::feed::Feed::start`]).
pub fn spawn(
    database_url: &str,
    store: Arc<dyn SkuStore>,
    wake: Arc<Notify>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    match Backend::from_url(database_url) {
        Ok(Backend::Postgres) => {
            tasks.spawn(listen_postgres(
                database_url.to_owned(),
                wake,
                shutdown.clone(),
            ));
        }
        // An in-memory database has no other writer.
        Ok(Backend::Sqlite) if !database_url.contains(":memory:") => {
            tasks.spawn(watch_sqlite(
                database_url.to_owned(),
                wake,
                shutdown.clone(),
            ));
        }
        _ => {}
    }
    tasks.spawn(settle_pending(store, shutdown));
}

async fn listen_postgres(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut failures = 0usize;
    let mut connected_before = false;
    loop {
        let listener = tokio::select! {
            _ = shutdown.cancelled() => return,
            listener = connect_listener(&url) => listener,
        };
        let mut listener = match listener {
            Ok(listener) => listener,
            Err(error) => {
                let wait = RECONNECT_BACKOFF[failures.min(RECONNECT_BACKOFF.len() - 1)];
                failures += 1;
                tracing::warn!(%error, ?wait, "external-change listener cannot connect; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        failures = 0;
        ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(1.0);
        if connected_before {
            // What was committed while nobody listened: from the table.
            ::metrics::counter!(metrics::EXTERNAL_WAKEUPS, "source" => "reconnect").increment(1);
            wake.notify_one();
        }
        connected_before = true;
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(_)) => {
                    ::metrics::counter!(metrics::EXTERNAL_WAKEUPS, "source" => "listen")
                        .increment(1);
                    wake.notify_one();
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("external-change listener lost its connection; reconnecting");
                    ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(0.0);
                    ::metrics::counter!(metrics::EXTERNAL_LISTENER_RECONNECTS).increment(1);
                    break;
                }
            }
        }
    }
}

async fn connect_listener(url: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?.application_name(LISTENER_NAME);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy_with(options);
    let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
    // A lost connection is reported (`Ok(None)`) and made again here, with
    // the catch-up that must follow it.
    listener.eager_reconnect(false);
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn watch_sqlite(url: String, wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(DATA_VERSION_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut conn: Option<sqlx::SqliteConnection> = None;
    let mut seen: Option<i64> = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            match open_sqlite(&url).await {
                Ok(opened) => {
                    conn = Some(opened);
                    ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(1.0);
                }
                Err(error) => {
                    tracing::warn!(%error, "data_version watcher cannot open the database");
                    continue;
                }
            }
        }
        let Some(open) = conn.as_mut() else { continue };
        match sqlx::query_scalar::<_, i64>("PRAGMA data_version")
            .fetch_one(&mut *open)
            .await
        {
            Ok(version) => {
                if seen.is_some_and(|seen| seen != version) {
                    ::metrics::counter!(metrics::EXTERNAL_WAKEUPS, "source" => "data_version")
                        .increment(1);
                    wake.notify_one();
                }
                seen = Some(version);
            }
            Err(error) => {
                tracing::warn!(%error, "data_version watcher lost its connection");
                ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(0.0);
                ::metrics::counter!(metrics::EXTERNAL_LISTENER_RECONNECTS).increment(1);
                conn = None;
                // A fresh connection has its own counter: catch up once.
                seen = None;
                wake.notify_one();
            }
        }
    }
}

async fn open_sqlite(url: &str) -> Result<sqlx::SqliteConnection, sqlx::Error> {
    use sqlx::ConnectOptions;
    // Fifty statements a second would drown a trace log.
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?
        .read_only(true)
        .disable_statement_logging();
    sqlx::SqliteConnection::connect_with(&options).await
}

async fn settle_pending(store: Arc<dyn SkuStore>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(SETTLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A bounded number of rounds per tick; the rest at the next one.
        for _ in 0..10 {
            match store.settle_external_alerts().await {
                Ok(0) => break,
                Ok(settled) => {
                    ::metrics::counter!(metrics::EXTERNAL_SETTLED).increment(settled);
                }
                Err(error) => {
                    tracing::warn!(%error, "alerts of external changes not settled; retried");
                    break;
                }
            }
        }
    }
}
