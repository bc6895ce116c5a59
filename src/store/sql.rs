//! One SQL implementation of [`SkuStore`] for both backends.

use async_trait::async_trait;
use serde_json::Value;
use skuwatch_actors::domain::{
    forecast_config, Alert, AlertKind, AlertRule, AlertStatus, Committed, Currency, Delivery,
    DeliveryStatus, Endpoint, EndpointPatch, Event, Field, Forecast, Hold, HoldId, Micros,
    PriceGuard, SalesRate, Sku, SkuCode,
};
use skuwatch_actors::store::{
    AttemptResult, Cause, ClaimRules, Claimed, HistoryPoint, HistoryQuery, HistoryRollup,
    HoldQuery, Idempotency, ListQuery, OutboxStats, PoolStats, Prunable, SkuStore, StoreError,
    StoredResponse, Summary, UserRecord, WriteJob, WriteOutcome,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Row, Transaction};

use super::Backend;

mod alerts;
mod external;
mod forecast;
mod group;
mod history;
mod holds;
mod upkeep;
mod webhooks;
mod write;

pub use group::DEFAULT_QUEUE as DEFAULT_WRITE_QUEUE;

use skuwatch_actors::store::IDEMPOTENCY_WINDOW_US;

const SKU_COLUMNS: &str =
    "sku, name, currency, price_minor, stock, reserved, low_stock_threshold, \
     guard_max_change_pct, guard_min_price, guard_max_price, version, updated_us, \
     sales_rate, lead_time_days, alert_rule";

/// Binds one SKU row, in the order of [`SKU_COLUMNS`], then `cover_tenths`
/// (the forecast's days of cover, for `/summary`), then `search_text`
/// (the lower-cased "code name" that `q` searches, with Unicode's rules,
/// which SQLite's `lower()` lacks); every writer of the `skus` table goes
/// through here or [`search_text`], so the row and its search text agree.
///
/// `with_rate: false` binds NULL for `sales_rate`, which the UPDATE reads
/// as "keep the stored one" (most writes do not move the rate).
fn bind_sku_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    state: &'q Sku,
    with_rate: bool,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(state.sku.as_str())
        .bind(&state.name)
        .bind(state.currency.code())
        .bind(state.price_minor)
        .bind(state.stock)
        .bind(state.reserved)
        .bind(state.low_stock_threshold)
        .bind(state.price_guard.max_change_pct)
        .bind(state.price_guard.min_price)
        .bind(state.price_guard.max_price)
        .bind(state.version)
        .bind(state.updated_at.0)
        .bind(
            state
                .sales_rate
                .as_ref()
                .filter(|_| with_rate)
                .map(SalesRate::encode),
        )
        .bind(state.lead_time_days)
        .bind(state.alert_rule.map(|rule| rule.as_str()))
        .bind(state.forecast.days_of_cover.map(|cover| cover.0))
        .bind(search_text(state))
}

/// The text `GET /skus?q=` searches: code and name, lower-cased. Computed
/// here only, for the server's writes and, in the follow-up transaction,
/// for changes written straight into the database (`external::settle`).
fn search_text(state: &Sku) -> String {
    format!("{} {}", state.sku, state.name).to_lowercase()
}

/// Stores the answer to a keyed write with its claimed idempotency key (in
/// the write's transaction), so a retry with the key gets the same answer.
async fn keep_answer(
    tx: &mut Tx,
    idem: &Idempotency,
    outcome: &WriteOutcome,
) -> Result<(), StoreError> {
    let response = (idem.render)(outcome);
    sqlx::query("UPDATE idempotency_keys SET status = $3, body = $4 WHERE scope = $1 AND key = $2")
        .bind(&idem.scope)
        .bind(&idem.key)
        .bind(i64::from(response.status))
        .bind(response.body)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// `alerts` holds the alerts the event raised or resolved, as pushed (see
/// `migrations/*/0005_event_alerts.sql`).
const EVENT_COLUMNS: &str = "event_id, sku, version, at_us, field, old_value, new_value, delta, \
     reason, actor, state, stock_after, price_after, alerts";

const ALERT_COLUMNS: &str = "id, sku, kind, status, message, value, threshold, raised_us, \
     acknowledged_by, resolved_us";

/// BEGIN of a server write transaction on PostgreSQL: marked for the
/// triggers that turn any other writer's change into events
/// (`migrations/postgres/0007`), sent with BEGIN as one simple query (no
/// extra round trip). `skuwatch.writer` ends with the transaction, so a
/// pooler in transaction mode cannot carry it to another client.
const SERVER_BEGIN_POSTGRES: &str = "BEGIN; SET LOCAL skuwatch.writer = 'server'";

/// BEGIN of a server write transaction on SQLite: the write lock is taken
/// at once, waiting (busy timeout) for another process's write. A deferred
/// transaction that read first could not take it after another process
/// committed (`SQLITE_BUSY_SNAPSHOT`, with no wait): a 503 for nothing.
const SERVER_BEGIN_SQLITE: &str = "BEGIN IMMEDIATE";

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// PostgreSQL or SQLite behind one set of queries.
pub struct SqlStore {
    backend: Backend,
    /// All writes. For SQLite a single connection: SQLite has one writer at a
    /// time, and queueing in the pool instead of in SQLite's lock means no
    /// `database is locked` under concurrent writers.
    write: AnyPool,
    /// Reads. SQLite in WAL mode lets these run beside the writer.
    read: AnyPool,
    /// Every write goes through group commit ([`group`]); `None` in the
    /// committers' own copy of the store.
    group: Option<group::GroupCommit>,
    /// One lazily opened connection of its own for `/readyz`, so readiness
    /// answers while the shared pools are exhausted.
    probe: AnyPool,
    /// The bounded waits (pool acquire, group-commit queue).
    pool: super::PoolSettings,
}

type Tx = Transaction<'static, sqlx::Any>;

pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    let message = e.to_string();
    match e {
        // Bounded waits that elapsed before anything was written.
        sqlx::Error::PoolTimedOut => StoreError::Busy(Cause::new(message, e)),
        sqlx::Error::Database(ref db) if is_lock_timeout(db.code().as_deref()) => {
            StoreError::Busy(Cause::new(message, e))
        }
        // The database aborted the transaction to resolve a conflict:
        // nothing was kept, the same work may succeed when run again.
        sqlx::Error::Database(ref db) if is_conflict(db.code().as_deref()) => {
            StoreError::Database(Cause::new(message, e).retryable())
        }
        // The connection was lost before COMMIT: nothing was kept.
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
            StoreError::Unavailable(Cause::new(message, e))
        }
        other => StoreError::Database(Cause::new(message, other)),
    }
}

/// A lock wait cut short by `SKUWATCH_DB_LOCK_TIMEOUT_MS`: PostgreSQL
/// `lock_not_available` (55P03) and `query_canceled` (57014, the
/// statement timeout), SQLite `SQLITE_BUSY` and its extended codes
/// (5, 261, 517, 773). The statement failed, so its transaction rolls back.
fn is_lock_timeout(code: Option<&str>) -> bool {
    matches!(code, Some("55P03" | "57014" | "5" | "261" | "517" | "773"))
}

/// PostgreSQL `serialization_failure` (40001) and `deadlock_detected`
/// (40P01): the transaction was rolled back and may be run again.
fn is_conflict(code: Option<&str>) -> bool {
    matches!(code, Some("40001" | "40P01"))
}

/// An error from COMMIT. A refusal by the database (a deferred constraint,
/// a serialization failure) means nothing was kept; a lost connection or a
/// protocol failure leaves the outcome unknown (issue 13, fault 3).
pub(super) fn commit_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(_) => db_error(e),
        other => StoreError::OutcomeUnknown(Cause::new(other.to_string(), other)),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.into())
}

fn migration_error(e: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Database(Cause::new(e.to_string(), e))
}

/// A SQLite URL that creates the file when it is missing (`mode=rwc`),
/// unless it names a mode of its own.
fn sqlite_url(url: &str) -> String {
    if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The newest migration applied to the database (0 for a new one).
async fn applied_version(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    // The table exists once any migration ran.
    match sqlx::query("SELECT MAX(version) AS v FROM _sqlx_migrations WHERE success")
        .fetch_one(&mut *conn)
        .await
    {
        Ok(row) => Ok(row
            .try_get::<Option<i64>, _>("v")
            .map_err(db_error)?
            .unwrap_or(0)),
        Err(sqlx::Error::Database(_)) => Ok(0),
        Err(other) => Err(db_error(other)),
    }
}

/// Refuses a schema newer than this build knows (an old instance in a
/// rolling upgrade would write what the new schema reads otherwise, e.g.
/// changes the triggers of migration 0007 take for external ones); runs
/// the pending migrations when `migrate`, and refuses to start on them
/// otherwise (they are `skuwatch migrate`'s, issue 16).
async fn check_schema(
    conn: &mut AnyConnection,
    migrator: &sqlx::migrate::Migrator,
    migrate: bool,
) -> Result<(), StoreError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let applied = applied_version(conn).await?;
    if applied > known {
        return Err(StoreError::Database(
            format!(
                "the database schema is at migration {applied}, newer than this build knows \
                 ({known}): run a newer skuwatch"
            )
            .into(),
        ));
    }
    if applied < known {
        if !migrate {
            return Err(StoreError::Database(
                format!(
                    "the database schema is at migration {applied}, this build needs {known}: \
                     run `skuwatch migrate` first (or set SKUWATCH_MIGRATE_ON_START=true)"
                )
                .into(),
            ));
        }
        migrator.run(conn).await.map_err(migration_error)?;
    }
    Ok(())
}

impl SqlStore {
    /// Connects with the default waits ([`super::PoolSettings`]).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with(
            url,
            super::PoolSettings {
                max_connections,
                ..super::PoolSettings::default()
            },
        )
        .await
    }

    /// Runs the pending migrations of `url`'s backend; returns the
    /// schema's version after them. A newer schema is refused.
    pub async fn migrate(url: &str) -> Result<i64, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let url = match backend {
            Backend::Sqlite => sqlite_url(url),
            Backend::Postgres => url.to_owned(),
        };
        let mut conn = AnyConnection::connect(&url).await.map_err(db_error)?;
        let migrator = match backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        };
        check_schema(&mut conn, migrator, true).await?;
        let version = applied_version(&mut conn).await?;
        let _ = conn.close().await;
        Ok(version)
    }

    pub async fn connect_with(
        url: &str,
        settings: super::PoolSettings,
    ) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let max_connections = settings.max_connections;
        let lock_ms = settings.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
        let probe = |url: &str| {
            AnyPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .acquire_timeout(super::PROBE_TIMEOUT)
                .connect_lazy(url)
                .map_err(db_error)
        };
        let store = match backend {
            Backend::Postgres => {
                // On a connection without the lock timeout: a second
                // instance waits for the first's migrations.
                let mut conn = AnyConnection::connect(url).await.map_err(db_error)?;
                check_schema(&mut conn, &POSTGRES_MIGRATIONS, settings.migrate_on_start).await?;
                let _ = conn.close().await;
                let pool = AnyPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(settings.acquire_timeout)
                    .after_connect(move |conn: &mut AnyConnection, _| {
                        Box::pin(async move {
                            // A write waiting on a row or the event clock
                            // gives up (503 overloaded) instead of holding
                            // its connection and its caller indefinitely.
                            sqlx::query(&format!("SET lock_timeout = {lock_ms}"))
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(url)
                    .await
                    .map_err(db_error)?;
                Self {
                    backend,
                    write: pool.clone(),
                    read: pool,
                    group: None,
                    probe: probe(url)?,
                    pool: settings,
                }
            }
            Backend::Sqlite => {
                let url = sqlite_url(url);
                let write = sqlite_pool(&url, 1, &settings).await?;
                let mut conn = write.acquire().await.map_err(db_error)?;
                check_schema(&mut conn, &SQLITE_MIGRATIONS, true).await?;
                drop(conn);
                let read = sqlite_pool(&url, max_connections.clamp(1, 8), &settings).await?;
                Self {
                    backend,
                    write,
                    read,
                    group: None,
                    probe: probe(&url)?,
                    pool: settings,
                }
            }
        };
        // The clock row makes commits serial, but only its last two round
        // trips hold it: with a few committers, the others lock rows and
        // write while one commits (1, 2 and 4 measured 1,717, 1,840 and
        // 2,031 writes/s; BENCHMARKS.md). Up to half the pool is used, so
        // reads and batches keep the rest. SQLite has one writer connection.
        // SKUWATCH_GROUP_COMMITTERS overrides (benchmarks).
        let committers = std::env::var("SKUWATCH_GROUP_COMMITTERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| (1..=64).contains(n))
            .unwrap_or(match backend {
                Backend::Postgres => (max_connections as usize / 2).clamp(1, 4),
                Backend::Sqlite => 1,
            });
        let group = group::GroupCommit::start(
            store.plain(),
            committers,
            store.pool.write_queue,
            store.pool.acquire_timeout,
        );
        Ok(Self {
            group: Some(group),
            ..store
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same pools without group commit (what the committers use).
    fn plain(&self) -> Self {
        Self {
            backend: self.backend,
            write: self.write.clone(),
            read: self.read.clone(),
            group: None,
            probe: self.probe.clone(),
            pool: self.pool,
        }
    }

    pub(super) fn writer(&self) -> &AnyPool {
        &self.write
    }

    pub(super) fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// The row-lock clause of a SELECT that locks: waiting for a row
    /// another transaction holds, or skipping it (PostgreSQL `SKIP
    /// LOCKED`). SQLite has none: its one writer connection already
    /// excludes other writers.
    fn lock_clause(&self, locking: write::Locking) -> &'static str {
        match (self.backend, locking) {
            (Backend::Postgres, write::Locking::Wait) => " FOR UPDATE",
            (Backend::Postgres, write::Locking::Probe) => " FOR UPDATE SKIP LOCKED",
            (Backend::Sqlite, _) => "",
        }
    }

    /// Begins a write transaction; the wait (pool acquire plus `BEGIN`) is
    /// the `skuwatch_db_acquire_seconds` histogram.
    async fn begin(&self) -> Result<Tx, StoreError> {
        let started = std::time::Instant::now();
        let statement = match self.backend {
            Backend::Postgres => SERVER_BEGIN_POSTGRES,
            Backend::Sqlite => SERVER_BEGIN_SQLITE,
        };
        let tx = self.write.begin_with(statement).await.map_err(db_error);
        metrics::histogram!(crate::metrics::DB_ACQUIRE, "pool" => self.write_pool_name())
            .record(started.elapsed().as_secs_f64());
        tx
    }

    fn write_pool_name(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => "main",
            Backend::Sqlite => "write",
        }
    }

    /// Records the key, or finds it was used before.
    async fn claim_key(
        &self,
        tx: &mut Tx,
        idem: &Idempotency,
        now: Micros,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        // On PostgreSQL this waits for a concurrent transaction holding the
        // same key, then sees its committed row: a retry racing the first
        // attempt still gets the first response.
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, created_us) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(&idem.scope)
        .bind(&idem.key)
        .bind(&idem.fingerprint)
        .bind(now.0)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        if inserted.rows_affected() == 1 {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT fingerprint, status, body, created_us FROM idempotency_keys \
             WHERE scope = $1 AND key = $2",
        )
        .bind(&idem.scope)
        .bind(&idem.key)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
        let created: i64 = row.try_get("created_us").map_err(db_error)?;
        let status: Option<i64> = row.try_get("status").map_err(db_error)?;
        let body: Option<String> = row.try_get("body").map_err(db_error)?;
        if created < now.0 - IDEMPOTENCY_WINDOW_US || status.is_none() {
            sqlx::query(
                "UPDATE idempotency_keys SET fingerprint = $3, created_us = $4, status = NULL, \
                 body = NULL WHERE scope = $1 AND key = $2",
            )
            .bind(&idem.scope)
            .bind(&idem.key)
            .bind(&idem.fingerprint)
            .bind(now.0)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            return Ok(None);
        }
        let fingerprint: String = row.try_get("fingerprint").map_err(db_error)?;
        if fingerprint != idem.fingerprint {
            return Ok(Some(WriteOutcome::IdempotencyMismatch));
        }
        Ok(Some(WriteOutcome::Replayed(StoredResponse {
            status: u16::try_from(status.unwrap_or(500)).unwrap_or(500),
            body: body.unwrap_or_default(),
        })))
    }
}

fn alert_from_row(row: &AnyRow) -> Result<Alert, StoreError> {
    let code: String = row.try_get("sku").map_err(db_error)?;
    let kind: String = row.try_get("kind").map_err(db_error)?;
    let status: String = row.try_get("status").map_err(db_error)?;
    Ok(Alert {
        id: row.try_get("id").map_err(db_error)?,
        sku: SkuCode::parse(&code).map_err(|_| corrupt("alert sku"))?,
        kind: AlertKind::parse(&kind).ok_or_else(|| corrupt("alert kind"))?,
        status: AlertStatus::parse(&status).ok_or_else(|| corrupt("alert status"))?,
        message: row.try_get("message").map_err(db_error)?,
        value: json_column(row, "value")?,
        threshold: json_column(row, "threshold")?,
        raised_at: Micros(row.try_get("raised_us").map_err(db_error)?),
        acknowledged_by: row.try_get("acknowledged_by").map_err(db_error)?,
        resolved_at: row
            .try_get::<Option<i64>, _>("resolved_us")
            .map_err(db_error)?
            .map(Micros),
    })
}

async fn sqlite_pool(
    url: &str,
    max: u32,
    settings: &super::PoolSettings,
) -> Result<AnyPool, StoreError> {
    // SQLite waits for another process's write lock up to busy_timeout:
    // the same bound as a PostgreSQL lock wait.
    let busy_ms = settings.lock_timeout.as_millis().clamp(1, i32::MAX as u128);
    AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(settings.acquire_timeout)
        .after_connect(move |conn: &mut AnyConnection, _| {
            Box::pin(async move {
                for pragma in [
                    "PRAGMA journal_mode = WAL".to_owned(),
                    "PRAGMA synchronous = NORMAL".to_owned(),
                    format!("PRAGMA busy_timeout = {busy_ms}"),
                    "PRAGMA foreign_keys = ON".to_owned(),
                ] {
                    sqlx::query(&pragma).execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(db_error)
}

fn sku_from_row(row: &AnyRow) -> Result<Sku, StoreError> {
    let get_i64 = |name: &str| row.try_get::<i64, _>(name).map_err(db_error);
    let get_opt = |name: &str| row.try_get::<Option<i64>, _>(name).map_err(db_error);
    let get_text = |name: &str| row.try_get::<Option<String>, _>(name).map_err(db_error);
    let code: String = row.try_get("sku").map_err(db_error)?;
    let currency: String = row.try_get("currency").map_err(db_error)?;
    let alert_rule = match get_text("alert_rule")? {
        None => None,
        Some(raw) => Some(AlertRule::parse(&raw).ok_or_else(|| corrupt("alert rule"))?),
    };
    // A rate kept under another half-life is missing too, and so is one
    // that does not read (an external INSERT may write the column): the
    // write path rebuilds it from the events (SalesRate::is_for).
    let sales_rate = get_text("sales_rate")?
        .as_deref()
        .and_then(SalesRate::decode)
        .filter(|rate| rate.is_for(&forecast_config().params));
    let updated_at = Micros(get_i64("updated_us")?);
    let mut sku = Sku {
        sku: SkuCode::parse(&code).map_err(|_| corrupt("sku code"))?,
        name: row.try_get("name").map_err(db_error)?,
        currency: Currency::parse(&currency).map_err(|_| corrupt("currency"))?,
        price_minor: get_i64("price_minor")?,
        stock: get_i64("stock")?,
        reserved: get_i64("reserved")?,
        low_stock_threshold: get_i64("low_stock_threshold")?,
        price_guard: PriceGuard {
            max_change_pct: get_opt("guard_max_change_pct")?,
            min_price: get_opt("guard_min_price")?,
            max_price: get_opt("guard_max_price")?,
        },
        lead_time_days: get_opt("lead_time_days")?,
        alert_rule,
        sales_rate,
        forecast: Forecast::none(updated_at),
        version: get_i64("version")?,
        updated_at,
    };
    sku.refresh_forecast();
    Ok(sku)
}

fn json_column(row: &AnyRow, name: &str) -> Result<Value, StoreError> {
    let text: Option<String> = row.try_get(name).map_err(db_error)?;
    match text {
        None => Ok(Value::Null),
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt(name)),
    }
}

fn committed_from_row(row: &AnyRow) -> Result<Committed, StoreError> {
    let sku = Sku::from_json(&json_column(row, "state")?).ok_or_else(|| corrupt("event state"))?;
    let field: String = row.try_get("field").map_err(db_error)?;
    let event = Event {
        event_id: row.try_get("event_id").map_err(db_error)?,
        sku: sku.sku.clone(),
        version: row.try_get("version").map_err(db_error)?,
        at: Micros(row.try_get("at_us").map_err(db_error)?),
        field: Field::parse(&field).ok_or_else(|| corrupt("event field"))?,
        old: json_column(row, "old_value")?,
        new: json_column(row, "new_value")?,
        delta: row.try_get("delta").map_err(db_error)?,
        reason: row.try_get("reason").map_err(db_error)?,
        actor: row.try_get("actor").map_err(db_error)?,
    };
    // Exactly the alerts that were pushed live with this event.
    let alerts = match row
        .try_get::<Option<String>, _>("alerts")
        .map_err(db_error)?
    {
        None => Vec::new(),
        Some(text) => serde_json::from_str(&text).map_err(|_| corrupt("event alerts"))?,
    };
    Ok(Committed { event, sku, alerts })
}

/// The `events.alerts` column of an event: its alerts as JSON, `NULL` when
/// it has none (most events).
pub(super) fn alerts_json(alerts: &[Alert]) -> Option<String> {
    (!alerts.is_empty()).then(|| serde_json::to_string(alerts).expect("an alert serialises"))
}

/// `$first, $first+1, ...` for an `IN` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern.
fn like_pattern(q: &str) -> String {
    let mut escaped = String::with_capacity(q.len() + 2);
    escaped.push('%');
    for c in q.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped.push('%');
    escaped
}

#[async_trait]
impl SkuStore for SqlStore {
    async fn load(&self, sku: &SkuCode) -> Result<Option<Sku>, StoreError> {
        sqlx::query(&format!("SELECT {SKU_COLUMNS} FROM skus WHERE sku = $1"))
            .bind(sku.as_str())
            .fetch_optional(&self.read)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(sku_from_row)
            .transpose()
    }

    async fn load_many(&self, skus: &[SkuCode]) -> Result<Vec<Sku>, StoreError> {
        if skus.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT {SKU_COLUMNS} FROM skus WHERE sku IN ({}) ORDER BY sku",
            placeholders(1, skus.len())
        );
        let mut query = sqlx::query(&sql);
        for sku in skus {
            query = query.bind(sku.as_str());
        }
        let rows = query.fetch_all(&self.read).await.map_err(db_error)?;
        rows.iter().map(sku_from_row).collect()
    }

    /// Through group commit: the jobs share a transaction with the other
    /// calls queued at the same time ([`group`], [`write`]).
    async fn commit(&self, jobs: Vec<WriteJob>) -> Vec<Result<WriteOutcome, StoreError>> {
        match &self.group {
            Some(group) => group.commit(jobs).await,
            None => {
                let jobs: Vec<&WriteJob> = jobs.iter().collect();
                group::run(self, &jobs).await
            }
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Sku>, StoreError> {
        let mut sql = format!("SELECT {SKU_COLUMNS} FROM skus WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            n
        };
        if query.after.is_some() {
            sql.push_str(&format!(" AND sku > ${}", next()));
        }
        if query.q.is_some() {
            let i = next();
            sql.push_str(&format!(" AND search_text LIKE ${i} ESCAPE '\\'"));
        }
        if query.below_threshold {
            // On `available` (issue 17, API.md v1 additions).
            sql.push_str(" AND stock - reserved < low_stock_threshold");
        }
        sql.push_str(&format!(" ORDER BY sku LIMIT ${}", next()));
        let mut q = sqlx::query(&sql);
        if let Some(after) = &query.after {
            q = q.bind(after.as_str());
        }
        if let Some(text) = &query.q {
            q = q.bind(like_pattern(text));
        }
        let rows = q
            .bind(query.limit)
            .fetch_all(&self.read)
            .await
            .map_err(db_error)?;
        rows.iter().map(sku_from_row).collect()
    }

    async fn events_after(
        &self,
        after: i64,
        limit: i64,
        skus: Option<&[SkuCode]>,
    ) -> Result<Vec<Committed>, StoreError> {
        let filter = skus.map_or(String::new(), |skus| {
            format!(" AND sku IN ({})", placeholders(3, skus.len().max(1)))
        });
        let sql = format!(
            "SELECT {EVENT_COLUMNS}, alerts_pending FROM events WHERE event_id > $1{filter} \
             ORDER BY event_id LIMIT $2"
        );
        let read = || async {
            let mut query = sqlx::query(&sql).bind(after).bind(limit);
            match skus {
                Some([]) => query = query.bind(""),
                Some(skus) => {
                    for sku in skus {
                        query = query.bind(sku.as_str());
                    }
                }
                None => {}
            }
            query.fetch_all(&self.read).await.map_err(db_error)
        };
        let rows = read().await?;
        // An external change is handed out with its alerts, as an API
        // change is: settle the pending ones met here, then read again.
        let mut pending: Vec<SkuCode> = Vec::new();
        for row in &rows {
            if row.try_get::<i64, _>("alerts_pending").map_err(db_error)? == 1 {
                let code: String = row.try_get("sku").map_err(db_error)?;
                pending.push(SkuCode::parse(&code).map_err(|_| corrupt("event sku"))?);
            }
        }
        if pending.is_empty() {
            return rows.iter().map(committed_from_row).collect();
        }
        pending.sort();
        pending.dedup();
        external::settle(self, Some(&pending)).await?;
        read().await?.iter().map(committed_from_row).collect()
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        history::history(self, query).await
    }

    async fn load_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        holds::load(self, id).await
    }

    async fn list_holds(&self, query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
        holds::list(self, query).await
    }

    async fn due_holds(&self, limit: i64) -> Result<Vec<HoldId>, StoreError> {
        holds::due(self, limit).await
    }

    async fn due_reforecasts(&self, now: Micros, limit: i64) -> Result<Vec<SkuCode>, StoreError> {
        forecast::due_reforecasts(self, now, limit).await
    }

    /// Probes its rows like a group commit ([`write::Locking::Probe`]),
    /// but never waits: a hold writing a SKU row another transaction
    /// holds is left for a later round (answered unchanged), and the rest
    /// expire at once.
    async fn expire_holds(&self, ids: Vec<HoldId>) -> Vec<Result<WriteOutcome, StoreError>> {
        let jobs = skuwatch_actors::store::expire_jobs(ids);
        let mut outcomes: Vec<Result<WriteOutcome, StoreError>> = jobs
            .iter()
            .map(|_| Ok(WriteOutcome::Committed(Vec::new())))
            .collect();
        let mut left: Vec<usize> = (0..jobs.len()).collect();
        while !left.is_empty() {
            let refs: Vec<&WriteJob> = left.iter().map(|&i| &jobs[i]).collect();
            match write::transaction_with(self, &refs, write::Locking::Probe).await {
                Ok(write::Ran::Done(done)) => {
                    for (&i, outcome) in left.iter().zip(done) {
                        outcomes[i] = Ok(outcome);
                    }
                    break;
                }
                Ok(write::Ran::Blocked { job_skus, blocked }) => {
                    let (clear, _) = write::split_blocked(&job_skus, blocked);
                    left = clear.into_iter().map(|k| left[k]).collect();
                }
                Err(e) => {
                    for &i in &left {
                        outcomes[i] = Err(e.clone());
                    }
                    break;
                }
            }
        }
        outcomes
    }

    async fn count_active_holds(&self) -> Result<i64, StoreError> {
        holds::count_active(self).await
    }

    async fn prune(&self, what: Prunable, older_than_us: i64) -> Result<u64, StoreError> {
        upkeep::prune(self, what, older_than_us).await
    }

    async fn create_webhook(
        &self,
        endpoint: &Endpoint,
        secret: &str,
        actor: &str,
    ) -> Result<(), StoreError> {
        webhooks::create(self, endpoint, secret, actor).await
    }

    async fn list_webhooks(&self) -> Result<Vec<Endpoint>, StoreError> {
        webhooks::list(self).await
    }

    async fn load_webhook(&self, id: &str) -> Result<Option<Endpoint>, StoreError> {
        webhooks::load(self, id).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        patch: &EndpointPatch,
        actor: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        webhooks::update(self, id, patch, actor).await
    }

    async fn delete_webhook(&self, id: &str, actor: &str) -> Result<bool, StoreError> {
        webhooks::delete(self, id, actor).await
    }

    async fn rotate_webhook_secret(
        &self,
        id: &str,
        secret: &str,
        previous_until: Micros,
        actor: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        webhooks::rotate(self, id, secret, previous_until, actor).await
    }

    async fn list_deliveries(
        &self,
        endpoint: &str,
        status: Option<DeliveryStatus>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        webhooks::deliveries(self, endpoint, status, limit).await
    }

    async fn load_delivery(&self, message_id: &str) -> Result<Option<Delivery>, StoreError> {
        webhooks::delivery(self, message_id).await
    }

    async fn claim_deliveries(&self, rules: &ClaimRules) -> Result<Vec<Claimed>, StoreError> {
        webhooks::claim(self, rules).await
    }

    async fn record_attempt(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
    ) -> Result<bool, StoreError> {
        webhooks::record(self, claimed, result).await
    }

    async fn create_test_delivery(
        &self,
        endpoint: &str,
        body: &str,
        rules: &ClaimRules,
    ) -> Result<Option<Claimed>, StoreError> {
        webhooks::create_test(self, endpoint, body, rules).await
    }

    async fn feed_sku_changes(&self, limit: i64) -> Result<u64, StoreError> {
        webhooks::feed_sku_changes(self, limit).await
    }

    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        webhooks::stats(self).await
    }

    async fn settle_external_alerts(&self) -> Result<u64, StoreError> {
        external::settle(self, None).await
    }

    async fn roll_up_history(&self) -> Result<HistoryRollup, StoreError> {
        history::roll_up(self).await
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        sqlx::query("SELECT last_event_id FROM event_clock WHERE id = 1")
            .fetch_one(&self.read)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)
    }

    /// On a connection of its own (not the shared pools), within
    /// [`super::PROBE_TIMEOUT`]: readiness answers whatever the load.
    async fn ping(&self) -> Result<(), StoreError> {
        let probe = sqlx::query("SELECT 1").execute(&self.probe);
        match tokio::time::timeout(super::PROBE_TIMEOUT, probe).await {
            Ok(result) => result.map(|_| ()).map_err(db_error),
            Err(_) => Err(StoreError::Unavailable(
                "the readiness probe did not answer in time".into(),
            )),
        }
    }

    async fn list_alerts(
        &self,
        status: Option<AlertStatus>,
        sku: Option<&SkuCode>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        alerts::list_alerts(self, status, sku, limit).await
    }

    async fn acknowledge_alert(&self, id: i64, by: &str) -> Result<Option<Alert>, StoreError> {
        alerts::acknowledge_alert(self, id, by).await
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        let mut summary = alerts::summary(self).await?;
        summary.days_of_cover = forecast::cover_counts(self).await?;
        Ok(summary)
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        super::users::create_user(self, user).await
    }

    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        super::users::set_password(self, username, hash).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        super::users::find_user(self, username).await
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        super::users::list_users(self).await
    }

    async fn disable_user(&self, username: &str) -> Result<bool, StoreError> {
        super::users::disable_user(self, username).await
    }

    async fn count_users(&self) -> Result<i64, StoreError> {
        super::users::count_users(self).await
    }

    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        upkeep::purge_idempotency_keys(self).await
    }

    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        upkeep::refresh_statistics(self).await
    }

    /// Occupancy of the pools, for the `skuwatch_db_pool_*` gauges.
    /// PostgreSQL reads and writes share one pool (`main`).
    fn pool_stats(&self) -> Vec<PoolStats> {
        let stats = |pool: &'static str, p: &AnyPool| PoolStats {
            pool,
            size: p.size(),
            idle: p.num_idle(),
            max: p.options().get_max_connections(),
        };
        match self.backend {
            Backend::Postgres => vec![stats("main", &self.write)],
            Backend::Sqlite => vec![stats("write", &self.write), stats("read", &self.read)],
        }
    }

    /// Closes both pools (graceful shutdown).
    async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        self.probe.close().await;
    }
}
