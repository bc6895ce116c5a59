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
//!   process, or this server's writer) commits; the event clock is then
//!   read, and the feed reads the database only when it is behind it (the
//!   server's own commits reach it through the bus first).
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
use tokio::sync::watch;
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

/// Starts the listener for `database_url` and the settlement sweep. The
/// listener tells the feed the newest `event_id` the database holds
/// through `newest` ([`crate::feed::Feed::start`]); `i64::MAX` when it
/// cannot tell which (a PostgreSQL notification carries none).
pub fn spawn(
    database_url: &str,
    store: Arc<dyn SkuStore>,
    newest: watch::Sender<i64>,
    tasks: &TaskTracker,
    shutdown: CancellationToken,
) {
    match Backend::from_url(database_url) {
        Ok(Backend::Postgres) => {
            tasks.spawn(listen_postgres(
                database_url.to_owned(),
                newest,
                shutdown.clone(),
            ));
        }
        // An in-memory database has no other writer.
        Ok(Backend::Sqlite) if !database_url.contains(":memory:") => {
            tasks.spawn(watch_sqlite(
                database_url.to_owned(),
                newest,
                shutdown.clone(),
            ));
        }
        _ => {}
    }
    tasks.spawn(settle_pending(store, shutdown));
}

async fn listen_postgres(url: String, newest: watch::Sender<i64>, shutdown: CancellationToken) {
    let mut failures = 0usize;
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
        // What was committed while nobody listened is read from the table.
        newest.send_replace(i64::MAX);
        loop {
            let received = tokio::select! {
                _ = shutdown.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(_)) => {
                    newest.send_replace(i64::MAX);
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

async fn watch_sqlite(url: String, newest: watch::Sender<i64>, shutdown: CancellationToken) {
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
                    seen = None;
                    ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(1.0);
                }
                Err(error) => {
                    tracing::warn!(%error, "data_version watcher cannot open the database");
                    continue;
                }
            }
        }
        let Some(open) = conn.as_mut() else { continue };
        match newest_event(open, &mut seen).await {
            // The file changed (this server's own commits change it too):
            // the feed reads the database only if it is behind the clock.
            Ok(Some(last)) => {
                newest.send_if_modified(|told| {
                    let ahead = last > *told;
                    *told = (*told).max(last);
                    ahead
                });
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "data_version watcher lost its connection");
                ::metrics::gauge!(metrics::EXTERNAL_LISTENER_UP).set(0.0);
                ::metrics::counter!(metrics::EXTERNAL_LISTENER_RECONNECTS).increment(1);
                conn = None;
            }
        }
    }
}

/// The event clock when the file changed since `seen` (`PRAGMA
/// data_version`, which counts other connections' commits), else `None`.
async fn newest_event(
    conn: &mut sqlx::SqliteConnection,
    seen: &mut Option<i64>,
) -> Result<Option<i64>, sqlx::Error> {
    let version: i64 = sqlx::query_scalar("PRAGMA data_version")
        .fetch_one(&mut *conn)
        .await?;
    if seen.replace(version) == Some(version) {
        return Ok(None);
    }
    sqlx::query_scalar("SELECT last_event_id FROM event_clock WHERE id = 1")
        .fetch_one(&mut *conn)
        .await
        .map(Some)
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
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, "alerts of external changes not settled; retried");
                    break;
                }
            }
        }
    }
}
