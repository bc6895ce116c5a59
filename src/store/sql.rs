//! One SQL implementation of [`SkuStore`] for both backends.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use serde_json::Value;
use skuwatch_actors::domain::{
    decide, evaluate_alerts, Alert, AlertAction, AlertKind, AlertStatus, Change, Command,
    Committed, Currency, DomainError, Event, Field, Micros, PriceGuard, Shortfall, Sku, SkuCode,
    WriteMeta,
};
use skuwatch_actors::store::{
    AdjustmentLine, HistoryPoint, HistoryQuery, Idempotency, ListQuery, PoolStats, SkuStore,
    StoreError, StoredResponse, Summary, UserRecord, WriteOutcome,
};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyConnection, AnyPool, Connection, Row, Transaction};

use super::Backend;

mod alerts;
mod group;
mod upkeep;

/// Keys older than this are forgotten (API.md: retries within 24 h).
const IDEMPOTENCY_WINDOW_US: i64 = 24 * 3600 * 1_000_000;

const SKU_COLUMNS: &str = "sku, name, currency, price_minor, stock, low_stock_threshold, \
     guard_max_change_pct, guard_min_price, guard_max_price, version, updated_us";

/// Binds one SKU row, in the order of [`SKU_COLUMNS`] then `search_text`
/// (the lower-cased "code name" that `q` searches); every writer of the
/// `skus` table goes through here, so the row and its search text agree.
fn bind_sku_row<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    state: &'q Sku,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(state.sku.as_str())
        .bind(&state.name)
        .bind(state.currency.code())
        .bind(state.price_minor)
        .bind(state.stock)
        .bind(state.low_stock_threshold)
        .bind(state.price_guard.max_change_pct)
        .bind(state.price_guard.min_price)
        .bind(state.price_guard.max_price)
        .bind(state.version)
        .bind(state.updated_at.0)
        .bind(format!("{} {}", state.sku, state.name).to_lowercase())
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
    /// Single-SKU writes other than creates go through group commit
    /// ([`group`]); `None` in the committers' own copy of the store.
    group: Option<group::GroupCommit>,
    /// One lazily opened connection of its own for `/readyz`, so readiness
    /// answers while the shared pools are exhausted.
    probe: AnyPool,
    /// The bounded waits (pool acquire, group-commit queue).
    pool: super::PoolSettings,
}

type Tx = Transaction<'static, sqlx::Any>;

pub(super) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        // Bounded waits that elapsed before anything was written.
        sqlx::Error::PoolTimedOut => StoreError::Busy(e.to_string()),
        sqlx::Error::Database(ref db) if is_lock_timeout(db.code().as_deref()) => {
            StoreError::Busy(e.to_string())
        }
        sqlx::Error::Io(_) | sqlx::Error::PoolClosed => StoreError::Unavailable(e.to_string()),
        other => StoreError::Database(other.to_string()),
    }
}

/// A lock wait cut short by `SKUWATCH_DB_LOCK_TIMEOUT_MS`: PostgreSQL
/// `lock_not_available` (55P03) and `query_canceled` (57014, the
/// statement timeout), SQLite `SQLITE_BUSY` and its extended codes
/// (5, 261, 517, 773). The statement failed, so its transaction rolls back.
fn is_lock_timeout(code: Option<&str>) -> bool {
    matches!(code, Some("55P03" | "57014" | "5" | "261" | "517" | "773"))
}

/// An error from COMMIT. A refusal by the database (a deferred constraint,
/// a serialization failure) means nothing was kept; a lost connection or a
/// protocol failure leaves the outcome unknown (issue 13, fault 3).
pub(super) fn commit_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(_) => db_error(e),
        other => StoreError::OutcomeUnknown(other.to_string()),
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
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
                POSTGRES_MIGRATIONS
                    .run(&mut conn)
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?;
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
                let url = if url.contains("mode=") {
                    url.to_owned()
                } else if url.contains('?') {
                    format!("{url}&mode=rwc")
                } else {
                    format!("{url}?mode=rwc")
                };
                let write = sqlite_pool(&url, 1, &settings).await?;
                SQLITE_MIGRATIONS
                    .run(&write)
                    .await
                    .map_err(|e| StoreError::Database(e.to_string()))?;
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
        let group =
            group::GroupCommit::start(store.plain(), committers, store.pool.acquire_timeout);
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

    /// One write in its own transaction: lock the row, decide, write the row
    /// and the event, take the event id, commit.
    ///
    /// A creation inserts with `ON CONFLICT DO NOTHING`, so when another
    /// instance creates the same SKU at the same moment one insert finds the
    /// other's row (PostgreSQL waits for it to commit). A create is then
    /// refused `already_exists`; an upsert (CSV import) runs again, now
    /// against the existing row, locked, so it never reports a false error.
    pub(super) async fn write_single(
        &self,
        sku: &SkuCode,
        command: &Command,
        meta: &WriteMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<WriteOutcome, StoreError> {
        let upsert = matches!(command, Command::Upsert(_));
        // The second attempt finds the row the first lost to; more is a
        // safety margin, not an expected path.
        for _ in 0..3 {
            let mut tx = match self.begin_keyed(idempotency).await? {
                Ok(tx) => tx,
                Err(seen) => return Ok(seen),
            };
            let rows = self.lock_rows(&mut tx, &BTreeSet::from([sku])).await?;
            // Read the clock once the row is ours: the previous change of
            // this SKU has committed, so its time is earlier (per SKU, `at`
            // follows `version`).
            let now = Micros::now();
            let decided = decide(sku, rows.get(sku), command, meta, now);
            if let Some(outcome) = self
                .finish(tx, decided, meta, idempotency, now, upsert)
                .await?
            {
                return Ok(outcome);
            }
        }
        Err(StoreError::Database(format!(
            "the row of {sku} neither could be created nor was found"
        )))
    }

    pub(super) fn writer(&self) -> &AnyPool {
        &self.write
    }

    pub(super) fn reader(&self) -> &AnyPool {
        &self.read
    }

    fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            // The single writer connection already excludes other writers.
            Backend::Sqlite => "",
        }
    }

    /// Begins a write transaction; the wait (pool acquire plus `BEGIN`) is
    /// the `skuwatch_db_acquire_seconds` histogram.
    async fn begin(&self) -> Result<Tx, StoreError> {
        let started = std::time::Instant::now();
        let tx = self.write.begin().await.map_err(db_error);
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

    /// Begins a write transaction and claims the idempotency key, if any;
    /// `Err(outcome)` when the key was used before (nothing else to do).
    async fn begin_keyed(
        &self,
        idempotency: Option<&Idempotency>,
    ) -> Result<Result<Tx, WriteOutcome>, StoreError> {
        let mut tx = self.begin().await?;
        if let Some(idem) = idempotency {
            if let Some(seen) = self.claim_key(&mut tx, idem, Micros::now()).await? {
                tx.rollback().await.map_err(db_error)?;
                return Ok(Err(seen));
            }
        }
        Ok(Ok(tx))
    }

    /// Reads and locks the SKU rows of a write, in code order so that two
    /// batches touching the same SKUs cannot deadlock.
    async fn lock_rows(
        &self,
        tx: &mut Tx,
        skus: &BTreeSet<&SkuCode>,
    ) -> Result<BTreeMap<SkuCode, Sku>, StoreError> {
        let mut rows = BTreeMap::new();
        for sku in skus {
            let row = sqlx::query(&format!(
                "SELECT {SKU_COLUMNS} FROM skus WHERE sku = $1{}",
                self.for_update()
            ))
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(db_error)?;
            if let Some(row) = row {
                rows.insert((*sku).clone(), sku_from_row(&row)?);
            }
        }
        Ok(rows)
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

    /// Writes the changed rows and appends the events, then ends the
    /// transaction: commit when something is to be kept, else roll back.
    /// A decision of no change (an upsert equal to the row) commits nothing.
    /// `None` when a creation lost a race with another instance creating the
    /// same SKU and `retry_lost_create` is set: rolled back, nothing kept.
    async fn finish(
        &self,
        mut tx: Tx,
        decided: Result<Vec<Change>, DomainError>,
        meta: &WriteMeta,
        idem: Option<&Idempotency>,
        now: Micros,
        retry_lost_create: bool,
    ) -> Result<Option<WriteOutcome>, StoreError> {
        let outcome = match decided {
            Err(rejection) => WriteOutcome::Rejected(rejection),
            Ok(changes) if changes.is_empty() => WriteOutcome::Committed(Vec::new()),
            Ok(changes) => match self.append(&mut tx, &changes, meta, now).await? {
                Some(committed) => WriteOutcome::Committed(committed),
                None if retry_lost_create => {
                    tx.rollback().await.map_err(db_error)?;
                    return Ok(None);
                }
                None => {
                    WriteOutcome::Rejected(DomainError::AlreadyExists(changes[0].state.sku.clone()))
                }
            },
        };
        let keep = match (&outcome, idem) {
            (_, Some(idem)) => {
                keep_answer(&mut tx, idem, &outcome).await?;
                true
            }
            (WriteOutcome::Committed(changes), None) => !changes.is_empty(),
            _ => false,
        };
        if keep {
            tx.commit().await.map_err(commit_error)?;
            if let WriteOutcome::Committed(changes) = &outcome {
                crate::metrics::alerts_raised(changes);
            }
        } else {
            tx.rollback().await.map_err(db_error)?;
        }
        Ok(Some(outcome))
    }

    /// Writes each change's row and event. `None` when a create lost a race
    /// with another instance creating the same SKU.
    async fn append(
        &self,
        tx: &mut Tx,
        changes: &[Change],
        meta: &WriteMeta,
        now: Micros,
    ) -> Result<Option<Vec<Committed>>, StoreError> {
        // Final state per SKU (a batch may touch one SKU twice), and whether
        // its first change creates it.
        let mut finals: BTreeMap<&SkuCode, (&Sku, bool)> = BTreeMap::new();
        for change in changes {
            let created = change.previous.is_none();
            finals
                .entry(&change.state.sku)
                .and_modify(|f| f.0 = &change.state)
                .or_insert((&change.state, created));
        }
        for (state, creating) in finals.values() {
            let query = if *creating {
                format!(
                    "INSERT INTO skus ({SKU_COLUMNS}, search_text) VALUES ($1, $2, $3, $4, $5, $6, \
                     $7, $8, $9, $10, $11, $12) ON CONFLICT (sku) DO NOTHING"
                )
            } else {
                "UPDATE skus SET name = $2, currency = $3, price_minor = $4, stock = $5, \
                 low_stock_threshold = $6, guard_max_change_pct = $7, guard_min_price = $8, \
                 guard_max_price = $9, version = $10, updated_us = $11, search_text = $12 \
                 WHERE sku = $1"
                    .to_owned()
            };
            let done = bind_sku_row(sqlx::query(&query), state)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
            if done.rows_affected() != 1 {
                return Ok(None);
            }
        }
        let mut alerts = Vec::with_capacity(changes.len());
        let mut active: BTreeMap<&SkuCode, Vec<(i64, AlertKind)>> = BTreeMap::new();
        for change in changes {
            let sku = &change.state.sku;
            if !active.contains_key(sku) {
                active.insert(sku, self.active_alerts(tx, sku).await?);
            }
            let current = active.get_mut(sku).map(std::mem::take).unwrap_or_default();
            let actions = evaluate_alerts(
                change.previous.as_ref(),
                &change.state,
                &current,
                change.price_anomaly.clone(),
            );
            let (changed, still_active) = self.apply_alerts(tx, sku, actions, current, now).await?;
            active.insert(sku, still_active);
            alerts.push(changed);
        }
        // Last: the event ids. The clock row stays locked until commit.
        let count = i64::try_from(changes.len()).map_err(|_| corrupt("batch size"))?;
        let last: i64 = sqlx::query(
            "UPDATE event_clock SET last_event_id = last_event_id + $1 WHERE id = 1 \
             RETURNING last_event_id",
        )
        .bind(count)
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?
        .try_get(0)
        .map_err(db_error)?;
        let mut committed = Vec::with_capacity(changes.len());
        for ((change, alerts), event_id) in changes.iter().zip(alerts).zip(last - count + 1..) {
            let event = Event {
                event_id,
                sku: change.state.sku.clone(),
                version: change.state.version,
                at: now,
                field: change.field,
                old: change.old.clone(),
                new: change.new.clone(),
                delta: change.delta,
                reason: meta.reason.clone(),
                actor: meta.actor.clone(),
            };
            sqlx::query(&format!(
                "INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
                 $10, $11, $12, $13, $14)"
            ))
            .bind(event.event_id)
            .bind(event.sku.as_str())
            .bind(event.version)
            .bind(event.at.0)
            .bind(event.field.as_str())
            .bind((!event.old.is_null()).then(|| event.old.to_string()))
            .bind(event.new.to_string())
            .bind(event.delta)
            .bind(event.reason.as_deref())
            .bind(event.actor.as_deref())
            .bind(change.state.to_json().to_string())
            .bind(change.state.stock)
            .bind(change.state.price_minor)
            .bind(alerts_json(&alerts))
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            committed.push(Committed {
                event,
                sku: change.state.clone(),
                alerts,
            });
        }
        Ok(Some(committed))
    }
}

impl SqlStore {
    /// Open or acknowledged alerts of a SKU whose row this transaction locked.
    async fn active_alerts(
        &self,
        tx: &mut Tx,
        sku: &SkuCode,
    ) -> Result<Vec<(i64, AlertKind)>, StoreError> {
        let rows =
            sqlx::query("SELECT id, kind FROM alerts WHERE sku = $1 AND status <> 'resolved'")
                .bind(sku.as_str())
                .fetch_all(&mut **tx)
                .await
                .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get("kind").map_err(db_error)?;
                Ok((
                    row.try_get("id").map_err(db_error)?,
                    AlertKind::parse(&kind).ok_or_else(|| corrupt("alert kind"))?,
                ))
            })
            .collect()
    }

    /// Raises and resolves alerts; returns the alerts changed and the SKU's
    /// active alerts afterwards.
    async fn apply_alerts(
        &self,
        tx: &mut Tx,
        sku: &SkuCode,
        actions: Vec<AlertAction>,
        mut active: Vec<(i64, AlertKind)>,
        now: Micros,
    ) -> Result<(Vec<Alert>, Vec<(i64, AlertKind)>), StoreError> {
        let mut changed = Vec::with_capacity(actions.len());
        for action in actions {
            let row = match action {
                AlertAction::Raise {
                    kind,
                    message,
                    value,
                    threshold,
                } => sqlx::query(&format!(
                    "INSERT INTO alerts (sku, kind, status, message, value, threshold, raised_us) \
                     VALUES ($1, $2, 'open', $3, $4, $5, $6) RETURNING {ALERT_COLUMNS}"
                ))
                .bind(sku.as_str())
                .bind(kind.as_str())
                .bind(message)
                .bind(value.to_string())
                .bind(threshold.to_string())
                .bind(now.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?,
                AlertAction::Resolve { id } => sqlx::query(&format!(
                    "UPDATE alerts SET status = 'resolved', resolved_us = $2 WHERE id = $1 \
                     RETURNING {ALERT_COLUMNS}"
                ))
                .bind(id)
                .bind(now.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?,
            };
            let alert = alert_from_row(&row)?;
            active.retain(|(id, _)| *id != alert.id);
            if alert.status != AlertStatus::Resolved {
                active.push((alert.id, alert.kind));
            }
            changed.push(alert);
        }
        Ok((changed, active))
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
    let code: String = row.try_get("sku").map_err(db_error)?;
    let currency: String = row.try_get("currency").map_err(db_error)?;
    Ok(Sku {
        sku: SkuCode::parse(&code).map_err(|_| corrupt("sku code"))?,
        name: row.try_get("name").map_err(db_error)?,
        currency: Currency::parse(&currency).map_err(|_| corrupt("currency"))?,
        price_minor: get_i64("price_minor")?,
        stock: get_i64("stock")?,
        low_stock_threshold: get_i64("low_stock_threshold")?,
        price_guard: PriceGuard {
            max_change_pct: get_opt("guard_max_change_pct")?,
            min_price: get_opt("guard_min_price")?,
            max_price: get_opt("guard_max_price")?,
        },
        version: get_i64("version")?,
        updated_at: Micros(get_i64("updated_us")?),
    })
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

impl SqlStore {
    /// The ids of the lowest and highest point of each of `buckets`
    /// buckets (equal spans of event id), in one aggregate scan: each value
    /// is packed with its event's offset (`v * span + offset`), so MIN and
    /// MAX give the value and the earliest event holding it, with no sort.
    /// Values are >= 0 (stock, and prices in minor units); when packing
    /// would overflow, a window-function query does the same, slower.
    #[allow(clippy::too_many_arguments)]
    async fn bucket_extremes(
        &self,
        query: &HistoryQuery,
        column: &str,
        range: &str,
        first: i64,
        last: i64,
        top: i64,
        buckets: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let span = last - first + 1;
        let fits = top
            .checked_add(1)
            .and_then(|t| t.checked_mul(span))
            .is_some();
        let rows = if fits {
            let sql = format!(
                "SELECT (event_id - $5) * $6 / $7 AS bucket, \
                 MIN(COALESCE({column}, 0) * $7 + (event_id - $5)) AS low, \
                 MAX(COALESCE({column}, 0) * $7 + ($7 - 1 - (event_id - $5))) AS high \
                 FROM events WHERE {range} GROUP BY (event_id - $5) * $6 / $7"
            );
            let rows = history_query(&sql, query)
                .bind(first)
                .bind(buckets)
                .bind(span)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?;
            let mut ids = BTreeSet::new();
            for row in rows {
                let low: i64 = row.try_get("low").map_err(db_error)?;
                let high: i64 = row.try_get("high").map_err(db_error)?;
                ids.insert(first + low % span);
                ids.insert(first + (span - 1 - high % span));
            }
            return Ok(ids.into_iter().collect());
        } else {
            let sql = format!(
                "WITH points AS (SELECT event_id, COALESCE({column}, 0) AS v, \
                   NTILE(CAST($5 AS INTEGER)) OVER (ORDER BY event_id) AS bucket \
                   FROM events WHERE {range}), \
                 ranked AS (SELECT event_id, \
                   ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY v, event_id) AS low, \
                   ROW_NUMBER() OVER (PARTITION BY bucket ORDER BY v DESC, event_id) AS high \
                   FROM points) \
                 SELECT event_id FROM ranked WHERE low = 1 OR high = 1"
            );
            history_query(&sql, query)
                .bind(buckets)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?
        };
        rows.iter()
            .map(|row| row.try_get::<i64, _>("event_id").map_err(db_error))
            .collect()
    }
}

/// Decides a batch's lines in order against the locked rows (`current`,
/// updated as lines apply): all the changes, or the refusal that names every
/// SKU the batch takes below 0, each with the first line where it does and
/// the lowest sum its lines reach (a SKU may appear on several lines, and a
/// later line putting stock back does not undo an earlier one going below
/// 0). Sums are checked: past the 64-bit range is a refusal naming the line.
fn decide_batch(
    lines: &[AdjustmentLine],
    current: &mut BTreeMap<SkuCode, Sku>,
    meta: &WriteMeta,
    now: Micros,
) -> Result<Vec<Change>, DomainError> {
    // If-Match makes no sense across several SKUs; it is not applied.
    let line_meta = WriteMeta {
        if_match: None,
        ..meta.clone()
    };
    let mut changes = Vec::with_capacity(lines.len());
    let mut shortfalls: Vec<Shortfall> = Vec::new();
    let mut rejection = None;
    // Per SKU: the sum of its lines so far, and the lowest such sum.
    let mut sums: BTreeMap<&SkuCode, (i64, i64)> = BTreeMap::new();
    let mut stock_before: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let field = || format!("adjustments[{i}].delta");
        let (sum, lowest) = sums.entry(&line.sku).or_insert((0, 0));
        let Some(next) = sum.checked_add(line.delta) else {
            rejection.get_or_insert(DomainError::Invalid {
                field: field(),
                message: format!(
                    "with the lines before it for {}, the total passes the 64-bit range",
                    line.sku
                ),
            });
            continue;
        };
        *sum = next;
        *lowest = (*lowest).min(next);
        if shortfalls.iter().any(|s| s.sku == line.sku) {
            // Already short: only its lowest sum still matters.
            continue;
        }
        if let Some(row) = current.get(&line.sku) {
            stock_before.entry(&line.sku).or_insert(row.stock);
        }
        let command = Command::Adjust { delta: line.delta };
        match decide(&line.sku, current.get(&line.sku), &command, &line_meta, now) {
            Ok(decided) => {
                if let Some(last) = decided.last() {
                    current.insert(line.sku.clone(), last.state.clone());
                }
                changes.extend(decided);
            }
            Err(DomainError::InsufficientStock(_)) => shortfalls.push(Shortfall {
                sku: line.sku.clone(),
                stock: stock_before.get(&line.sku).copied().unwrap_or(0),
                delta: next,
                line: Some(i),
            }),
            Err(DomainError::StockOverflow(sku)) => {
                rejection.get_or_insert(DomainError::Invalid {
                    field: field(),
                    message: format!(
                        "would take the stock of {sku} past the largest number this server counts (9223372036854775807)"
                    ),
                });
            }
            Err(other) => {
                rejection.get_or_insert(other);
            }
        }
    }
    for shortfall in &mut shortfalls {
        if let Some((_, lowest)) = sums.get(&shortfall.sku) {
            shortfall.delta = *lowest;
        }
    }
    match (rejection, shortfalls.is_empty()) {
        (Some(rejection), _) => Err(rejection),
        (None, false) => Err(DomainError::InsufficientStock(shortfalls)),
        (None, true) => Ok(changes),
    }
}

/// Binds `$1`-`$4` of a history query: SKU, field, from, to.
fn history_query<'q>(
    sql: &'q str,
    query: &'q HistoryQuery,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    sqlx::query(sql)
        .bind(query.sku.as_str())
        .bind(query.field.as_str())
        .bind(query.from.map_or(i64::MIN, |t| t.0))
        .bind(query.to.map_or(i64::MAX, |t| t.0))
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

    async fn write(
        &self,
        sku: &SkuCode,
        command: &Command,
        meta: &WriteMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<WriteOutcome, StoreError> {
        match &self.group {
            // Creates insert (group commit only updates); an upsert goes to
            // the group, which hands a creating one back to the single path.
            Some(group) if !matches!(command, Command::Create(_)) => {
                group.write(sku, command, meta, idempotency).await
            }
            _ => self.write_single(sku, command, meta, idempotency).await,
        }
    }

    async fn write_batch(
        &self,
        lines: &[AdjustmentLine],
        meta: &WriteMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<WriteOutcome, StoreError> {
        let mut tx = match self.begin_keyed(idempotency).await? {
            Ok(tx) => tx,
            Err(seen) => return Ok(seen),
        };
        let codes: BTreeSet<&SkuCode> = lines.iter().map(|l| &l.sku).collect();
        let mut current = self.lock_rows(&mut tx, &codes).await?;
        let now = Micros::now();
        let decided = decide_batch(lines, &mut current, meta, now);
        self.finish(tx, decided, meta, idempotency, now, false)
            .await?
            .ok_or_else(|| corrupt("a batch creates nothing"))
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
            sql.push_str(" AND stock < low_stock_threshold");
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
            "SELECT {EVENT_COLUMNS} FROM events WHERE event_id > $1{filter} \
             ORDER BY event_id LIMIT $2"
        );
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
        let rows = query.fetch_all(&self.read).await.map_err(db_error)?;
        rows.iter().map(committed_from_row).collect()
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        // Creation (version 1, a meta event) carries the first value.
        let column = match query.field {
            Field::Price => "price_after",
            _ => "stock_after",
        };
        let range = "sku = $1 AND (field = $2 OR (field = 'meta' AND version = 1)) \
                     AND at_us >= $3 AND at_us <= $4";
        let count_sql = format!("SELECT COUNT(*) FROM events WHERE {range}");
        let count: i64 = history_query(&count_sql, query)
            .fetch_one(&self.read)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        let raw = format!(
            "SELECT event_id, at_us, version, reason, {column} AS v FROM events \
             WHERE {range} ORDER BY event_id"
        );
        let rows = if count <= query.limit {
            history_query(&raw, query)
                .fetch_all(&self.read)
                .await
                .map_err(db_error)?
        } else {
            let stats_sql = format!(
                "SELECT MIN(event_id) AS first, MAX(event_id) AS last, \
                 MAX(COALESCE({column}, 0)) AS top FROM events WHERE {range}"
            );
            let stats = history_query(&stats_sql, query)
                .fetch_one(&self.read)
                .await
                .map_err(db_error)?;
            let first: i64 = stats.try_get("first").map_err(db_error)?;
            let last: i64 = stats.try_get("last").map_err(db_error)?;
            let top: i64 = stats.try_get("top").map_err(db_error)?;
            // A chart starts at the start of the range and ends at its last
            // change (at `limit` 1, that one alone); the rest of the points
            // go to buckets, two each, so the result never exceeds `limit`.
            let mut ids = BTreeSet::from([last]);
            if query.limit >= 2 {
                ids.insert(first);
            }
            let buckets = (query.limit - 2) / 2;
            if buckets > 0 {
                ids.extend(
                    self.bucket_extremes(query, column, range, first, last, top, buckets)
                        .await?,
                );
            }
            let sql = format!(
                "SELECT event_id, at_us, version, reason, {column} AS v FROM events \
                 WHERE event_id IN ({}) ORDER BY event_id",
                placeholders(1, ids.len())
            );
            let mut select = sqlx::query(&sql);
            for id in &ids {
                select = select.bind(*id);
            }
            select.fetch_all(&self.read).await.map_err(db_error)?
        };
        rows.iter()
            .map(|row| {
                Ok(HistoryPoint {
                    at: Micros(row.try_get("at_us").map_err(db_error)?),
                    value: row
                        .try_get::<Option<i64>, _>("v")
                        .map_err(db_error)?
                        .unwrap_or(0),
                    version: row.try_get("version").map_err(db_error)?,
                    event_id: row.try_get("event_id").map_err(db_error)?,
                    reason: row.try_get("reason").map_err(db_error)?,
                })
            })
            .collect()
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
        alerts::summary(self).await
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
