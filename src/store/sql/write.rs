//! The write transaction: the one place a write reaches the database.
//!
//! [`transaction_with`] runs a list of [`WriteJob`]s (a single write is a job of
//! one command, a batch one all-or-nothing job, a group many jobs from many
//! callers) as ONE transaction:
//! 1. claim the idempotency keys (in key order, so two instances cannot
//!    deadlock on them); a key seen before answers its job at once;
//! 2. lock the hold rows hold jobs read (by id), then the SKU rows of every
//!    job in one statement, in code order (the order every writer uses,
//!    so groups cannot deadlock one another), and read their active
//!    alerts. A group of several jobs on PostgreSQL locks without waiting
//!    ([`Locking::Probe`]): if another transaction holds one of the rows,
//!    nothing is done and the group commit runs the jobs clear of it at
//!    once, and waits only with the others;
//! 3. call the planner ([`skuwatch_actors::plan::plan`]: `decide`, alert
//!    rules, rows to write; pure) and execute its plan with set-based
//!    statements: a multi-row INSERT for SKUs it creates, a multi-row
//!    UPDATE, the alert statements, then, last, one clock update and a
//!    multi-row event INSERT (the clock row is held for the COMMIT only);
//! 4. keep the answers of keyed jobs, and COMMIT once.
//!
//! A create that lost a race with another instance creating the same SKU
//! (its INSERT found the other's row, PostgreSQL having waited for it to
//! commit) rolls the transaction back and runs it again: the row is then
//! locked like any other, so the create is refused `already_exists` and an
//! upsert (CSV import) updates it, never a false error.
//!
//! Guarantees: every `Committed` answer is durable (sent after COMMIT);
//! a domain refusal changes nothing (only its idempotency key is kept);
//! event ids stay gap-free and commit-ordered (the clock is the last row a
//! transaction locks); per-SKU versions stay consecutive.

use std::collections::{BTreeMap, BTreeSet};

use skuwatch_actors::domain::{
    alert_messages, Alert, AlertKind, Committed, HoldId, Micros, Sku, SkuCode,
};
use skuwatch_actors::plan::{plan, AlertOp, AlertRef, HoldRows, Plan, RowWrite};
use skuwatch_actors::store::{StoreError, WriteJob, WriteOutcome};
use sqlx::Row;

use super::{
    alert_from_row, bind_sku_row, commit_error, corrupt, db_error, placeholders, sku_from_row,
    SqlStore, Tx, ALERT_COLUMNS, SKU_COLUMNS,
};
use crate::store::Backend;

/// Runs of a transaction whose create lost a race: the second finds the
/// row; more is a safety margin, not an expected path.
const ATTEMPTS: usize = 3;

/// What a transaction did.
#[derive(Debug)]
pub(super) enum Ran {
    /// Committed (or rolled back, nothing to keep): one outcome per job.
    Done(Vec<WriteOutcome>),
    /// With [`Locking::Probe`]: rows of `blocked` are locked by another
    /// transaction, so nothing was done (rolled back). `job_skus[i]` is
    /// every SKU job `i` writes (a hold's from its stored row).
    Blocked {
        job_skus: Vec<BTreeSet<SkuCode>>,
        blocked: BTreeSet<SkuCode>,
    },
}

/// How a transaction takes the rows it locks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Locking {
    /// Waits for a row another transaction holds (up to the lock timeout):
    /// a client's write that has to, and a group of one.
    Wait,
    /// Locks the SKU rows without waiting, and when one another
    /// transaction holds (an operator's `BEGIN; UPDATE skus ...` left open
    /// in psql, or another committer's group) was skipped, rolls back
    /// and says which ([`Ran::Blocked`]): the group commit then runs the
    /// jobs clear of those rows at once and waits only with the others
    /// (`group::run_one`); the hold sweeper leaves them for a later
    /// round (`SqlStore::expire_holds`). Without it, one write to such a
    /// row held every write of its group, and the rows they had locked,
    /// until the lock timeout. Hold rows are locked waiting (only the
    /// server writes them, briefly).
    Probe,
}

/// Runs `jobs` as one transaction, rows locked as `locking` says, and
/// answers one outcome per job, in order ([`Ran::Done`]; [`Ran::Blocked`]
/// only with [`Locking::Probe`]). `Err` when the transaction failed as a
/// whole (nothing of it was kept, except after a failed COMMIT:
/// [`StoreError::OutcomeUnknown`]).
#[tracing::instrument(level = "debug", skip_all, fields(jobs = jobs.len()))]
pub(super) async fn transaction_with(
    store: &SqlStore,
    jobs: &[&WriteJob],
    locking: Locking,
) -> Result<Ran, StoreError> {
    for _ in 0..ATTEMPTS {
        let mut tx = store.begin().await?;
        let (outcomes, keep) = match prepare(store, &mut tx, jobs, locking).await? {
            Prepared::Done(outcomes, keep) => (outcomes, keep),
            Prepared::Retry => {
                tx.rollback().await.map_err(db_error)?;
                continue;
            }
            Prepared::Blocked { job_skus, blocked } => {
                tx.rollback().await.map_err(db_error)?;
                return Ok(Ran::Blocked { job_skus, blocked });
            }
        };
        if keep {
            tx.commit().await.map_err(commit_error)?;
            for outcome in &outcomes {
                crate::metrics::alerts_raised(outcome.changes());
                crate::metrics::hold_changed(outcome);
            }
        } else {
            // Nothing changed and no key to keep.
            tx.rollback().await.map_err(db_error)?;
        }
        return Ok(Ran::Done(outcomes));
    }
    Err(StoreError::Database(
        "a SKU row neither could be created nor was found".into(),
    ))
}

/// What [`prepare`] came to.
enum Prepared {
    /// The outcomes, and whether there is anything to commit.
    Done(Vec<WriteOutcome>, bool),
    /// A create lost a race: run the transaction again.
    Retry,
    /// See [`Ran::Blocked`].
    Blocked {
        job_skus: Vec<BTreeSet<SkuCode>>,
        blocked: BTreeSet<SkuCode>,
    },
}

/// Everything but COMMIT.
async fn prepare(
    store: &SqlStore,
    tx: &mut Tx,
    jobs: &[&WriteJob],
    locking: Locking,
) -> Result<Prepared, StoreError> {
    let claimed_at = Micros::now();
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; jobs.len()];
    let mut keyed: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].idempotency().is_some())
        .collect();
    keyed.sort_by(|&a, &b| {
        let key = |i: usize| jobs[i].idempotency().map(|k| (&k.scope, &k.key));
        key(a).cmp(&key(b))
    });
    for &i in &keyed {
        if let Some(idem) = jobs[i].idempotency() {
            outcomes[i] = store.claim_key(tx, idem, claimed_at).await?;
        }
    }
    let live: Vec<usize> = (0..jobs.len()).filter(|&i| outcomes[i].is_none()).collect();
    let live_jobs: Vec<&WriteJob> = live.iter().map(|&i| jobs[i]).collect();
    // Hold rows first (issue 17): their lines name the SKUs to lock.
    let mut holds = HoldRows::default();
    if live_jobs
        .iter()
        .any(|job| matches!(job, WriteJob::Hold { .. }))
    {
        holds.clock = super::holds::clock(store, tx).await?;
        let ids: BTreeSet<&HoldId> = live_jobs.iter().filter_map(|j| j.stored_hold()).collect();
        holds.rows = super::holds::lock(store, tx, &ids).await?;
    }
    let held: Vec<SkuCode> = holds
        .rows
        .values()
        .flat_map(|hold| hold.lines.iter().map(|line| line.sku.clone()))
        .collect();
    let codes: BTreeSet<&SkuCode> = live_jobs
        .iter()
        .flat_map(|job| job.skus())
        .chain(&held)
        .collect();
    let mut rows = lock_rows_with(store, tx, &codes, locking).await?;
    if locking == Locking::Probe && rows.len() < codes.len() {
        let skipped: BTreeSet<&SkuCode> = codes
            .iter()
            .copied()
            .filter(|code| !rows.contains_key(*code))
            .collect();
        // Absent (a create, or a 404 to be) or locked: the rows that
        // exist were skipped because another transaction holds them.
        let blocked = existing(tx, &skipped).await?;
        if !blocked.is_empty() {
            let job_skus = jobs
                .iter()
                .map(|job| {
                    let held = job
                        .stored_hold()
                        .and_then(|id| holds.rows.get(id))
                        .into_iter()
                        .flat_map(|hold| hold.lines.iter().map(|line| &line.sku));
                    job.skus().chain(held).cloned().collect()
                })
                .collect();
            return Ok(Prepared::Blocked { job_skus, blocked });
        }
    }
    // Read the time once the rows are ours, and never before a locked
    // row's last change (a clock stepped back, or another instance's clock
    // ahead of ours): per SKU, `at` follows `version`, which the history's
    // time ranges rely on.
    let now = rows
        .values()
        .map(|sku| sku.updated_at)
        .fold(Micros::now(), Micros::max);
    let active = active_alerts(tx, &codes).await?;
    let rebuilt = super::forecast::rebuild_missing_rates(tx, &mut rows).await?;

    let mut plan = plan(rows, active, holds, &live_jobs, now);
    for code in &rebuilt {
        if let Some(write) = plan.rows.get_mut(code) {
            write.rate_changed = true;
        }
    }
    let mut keep = plan.changes_anything();
    let Some(committed) = execute(store.backend, tx, &mut plan, now).await? else {
        return Ok(Prepared::Retry);
    };
    for (outcome, &i) in plan.outcomes(committed).into_iter().zip(&live) {
        // Answers of keyed jobs, kept for their retries.
        if let Some(idem) = jobs[i].idempotency() {
            super::keep_answer(tx, idem, &outcome).await?;
            keep = true;
        }
        outcomes[i] = Some(outcome);
    }
    let outcomes = outcomes
        .into_iter()
        .map(|o| o.ok_or_else(|| corrupt("a job without an outcome")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared::Done(outcomes, keep))
}

/// The codes among `codes` that have a row (read without locking).
async fn existing(
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
) -> Result<BTreeSet<SkuCode>, StoreError> {
    let sql = format!(
        "SELECT sku FROM skus WHERE sku IN ({})",
        placeholders(1, padded(codes.len()))
    );
    let rows = bind_codes(sqlx::query(&sql), codes)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let code: String = row.try_get("sku").map_err(db_error)?;
            SkuCode::parse(&code).map_err(|_| corrupt("sku code"))
        })
        .collect()
}

/// Splits a blocked group ([`Ran::Blocked`]) into the jobs clear of the
/// locked rows, which can run at once, and those that must wait: every
/// job writing a blocked SKU, and every later job writing a SKU of one
/// already waiting, so each SKU's jobs keep their order. Returns the
/// indices of each, in order.
pub(super) fn split_blocked(
    job_skus: &[BTreeSet<SkuCode>],
    mut blocked: BTreeSet<SkuCode>,
) -> (Vec<usize>, Vec<usize>) {
    let (mut clear, mut waiting) = (Vec::new(), Vec::new());
    for (i, skus) in job_skus.iter().enumerate() {
        if skus.iter().any(|sku| blocked.contains(sku)) {
            blocked.extend(skus.iter().cloned());
            waiting.push(i);
        } else {
            clear.push(i);
        }
    }
    (clear, waiting)
}

/// Writes the plan: created rows, updated rows, alerts, then the events
/// with their ids. `None` when a created row already existed.
async fn execute(
    backend: Backend,
    tx: &mut Tx,
    plan: &mut Plan,
    now: Micros,
) -> Result<Option<Vec<Committed>>, StoreError> {
    if !plan.changes_anything() {
        return Ok(Some(Vec::new()));
    }
    let (inserts, updates): (Vec<&RowWrite>, Vec<&RowWrite>) =
        plan.rows.values().partition(|row| row.insert);
    if !insert_rows(backend, tx, &inserts).await? {
        return Ok(None);
    }
    let finals: BTreeMap<&SkuCode, &RowWrite> =
        updates.iter().map(|row| (&row.state.sku, *row)).collect();
    if !finals.is_empty() {
        update_rows(backend, tx, &finals).await?;
    }
    let alerts = apply_alerts(tx, &plan.alerts, now).await?;
    let mut committed = plan.take_committed(&alerts);
    if !committed.is_empty() {
        append_events(backend, tx, &mut committed).await?;
    }
    // The transactional outbox (issue 19): the alert messages of this
    // write, in its transaction.
    super::webhooks::enqueue(tx, &alert_messages(&committed)).await?;
    if !plan.holds.is_empty() {
        // After the events: a hold row records their ids.
        plan.set_hold_events(&committed);
        super::holds::write(tx, &plan.holds).await?;
    }
    Ok(Some(committed))
}

/// Runs the alert statements in order; one alert row per op, as it is
/// right after its statement.
pub(super) async fn apply_alerts(
    tx: &mut Tx,
    ops: &[AlertOp],
    now: Micros,
) -> Result<Vec<Alert>, StoreError> {
    let mut done: Vec<Alert> = Vec::with_capacity(ops.len());
    for op in ops {
        let row = match op {
            AlertOp::Raise {
                sku,
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
            .bind(message.as_str())
            .bind(value.to_string())
            .bind(threshold.to_string())
            .bind(now.0)
            .fetch_one(&mut **tx)
            .await
            .map_err(db_error)?,
            AlertOp::Resolve(alert) => {
                let id = match alert {
                    AlertRef::Existing(id) => *id,
                    AlertRef::New(k) => done.get(*k).ok_or_else(|| corrupt("alert ref"))?.id,
                };
                sqlx::query(&format!(
                    "UPDATE alerts SET status = 'resolved', resolved_us = $2 WHERE id = $1 \
                     RETURNING {ALERT_COLUMNS}"
                ))
                .bind(id)
                .bind(now.0)
                .fetch_one(&mut **tx)
                .await
                .map_err(db_error)?
            }
        };
        let alert = alert_from_row(&row)?;
        done.push(alert);
    }
    Ok(done)
}

/// Inserts the rows of the SKUs the plan creates (`ON CONFLICT DO
/// NOTHING`); `false` when one of them already existed (another writer
/// created it since the rows were locked).
async fn insert_rows(
    backend: Backend,
    tx: &mut Tx,
    rows: &[&RowWrite],
) -> Result<bool, StoreError> {
    let chunk = match backend {
        Backend::Sqlite => SQLITE_CHUNK,
        Backend::Postgres => 1024,
    };
    for part in rows.chunks(chunk) {
        let values: Vec<String> = (0..part.len())
            .map(|r| {
                format!(
                    "({})",
                    placeholders(r * UPDATE_COLUMNS.len() + 1, UPDATE_COLUMNS.len())
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO skus ({}) VALUES {} ON CONFLICT (sku) DO NOTHING",
            UPDATE_COLUMNS.join(", "),
            values.join(", ")
        );
        let mut query = sqlx::query(&sql);
        for row in part {
            query = bind_sku_row(query, &row.state, true);
        }
        let done = query.execute(&mut **tx).await.map_err(db_error)?;
        if done.rows_affected() != part.len() as u64 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Statement shapes are padded to powers of two so that the few shapes a
/// connection sees stay in its prepared-statement cache (a new shape costs
/// an extra round trip to prepare).
fn padded(n: usize) -> usize {
    n.max(1).next_power_of_two()
}

/// Binds `codes`, then the last one again up to the padded length (an `IN`
/// list does not mind repeats).
fn bind_codes<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    codes: &BTreeSet<&SkuCode>,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    let last = codes.iter().next_back().map_or("", |c| c.as_str());
    for code in codes {
        query = query.bind(code.as_str().to_owned());
    }
    for _ in codes.len()..padded(codes.len()) {
        query = query.bind(last.to_owned());
    }
    query
}

/// Reads and locks the rows of `codes` in one statement, in code order.
pub(super) async fn lock_rows(
    store: &SqlStore,
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
) -> Result<BTreeMap<SkuCode, Sku>, StoreError> {
    lock_rows_with(store, tx, codes, Locking::Wait).await
}

/// [`lock_rows`], skipping rows others hold with [`Locking::Probe`].
async fn lock_rows_with(
    store: &SqlStore,
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
    locking: Locking,
) -> Result<BTreeMap<SkuCode, Sku>, StoreError> {
    let mut rows = BTreeMap::new();
    if codes.is_empty() {
        return Ok(rows);
    }
    let sql = format!(
        "SELECT {SKU_COLUMNS} FROM skus WHERE sku IN ({}) ORDER BY sku{}",
        placeholders(1, padded(codes.len())),
        store.lock_clause(locking)
    );
    let query = bind_codes(sqlx::query(&sql), codes);
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let sku = sku_from_row(&row)?;
        rows.insert(sku.sku.clone(), sku);
    }
    Ok(rows)
}

/// Open or acknowledged alerts of the locked SKUs.
pub(super) async fn active_alerts(
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
) -> Result<BTreeMap<SkuCode, Vec<(i64, AlertKind)>>, StoreError> {
    let mut active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>> = BTreeMap::new();
    if codes.is_empty() {
        return Ok(active);
    }
    let sql = format!(
        "SELECT sku, id, kind FROM alerts WHERE sku IN ({}) AND status <> 'resolved' ORDER BY id",
        placeholders(1, padded(codes.len()))
    );
    let query = bind_codes(sqlx::query(&sql), codes);
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let code: String = row.try_get("sku").map_err(db_error)?;
        let kind: String = row.try_get("kind").map_err(db_error)?;
        active
            .entry(SkuCode::parse(&code).map_err(|_| corrupt("alert sku"))?)
            .or_default()
            .push((
                row.try_get("id").map_err(db_error)?,
                AlertKind::parse(&kind).ok_or_else(|| corrupt("alert kind"))?,
            ));
    }
    Ok(active)
}

/// Columns of the multi-row UPDATE, in bind order.
const UPDATE_COLUMNS: [&str; 17] = [
    "sku",
    "name",
    "currency",
    "price_minor",
    "stock",
    "reserved",
    "low_stock_threshold",
    "guard_max_change_pct",
    "guard_min_price",
    "guard_max_price",
    "version",
    "updated_us",
    "sales_rate",
    "lead_time_days",
    "alert_rule",
    "cover_tenths",
    "search_text",
];

/// Writes the final state of each SKU in one statement (a `VALUES` list
/// joined on the key: PostgreSQL and SQLite 3.33+ both take `UPDATE ... FROM`).
async fn update_rows(
    backend: Backend,
    tx: &mut Tx,
    finals: &BTreeMap<&SkuCode, &RowWrite>,
) -> Result<(), StoreError> {
    if backend == Backend::Sqlite && finals.len() > SQLITE_CHUNK {
        let all: Vec<(&SkuCode, &RowWrite)> = finals.iter().map(|(k, v)| (*k, *v)).collect();
        for chunk in all.chunks(SQLITE_CHUNK) {
            let part: BTreeMap<&SkuCode, &RowWrite> = chunk.iter().copied().collect();
            update_rows_once(backend, tx, &part).await?;
        }
        return Ok(());
    }
    update_rows_once(backend, tx, finals).await
}

/// SQLite looks bound parameters up by walking a list (quadratic in their
/// number): its multi-row statements are cut into chunks of this many rows.
const SQLITE_CHUNK: usize = 16;

async fn update_rows_once(
    backend: Backend,
    tx: &mut Tx,
    finals: &BTreeMap<&SkuCode, &RowWrite>,
) -> Result<(), StoreError> {
    let width = UPDATE_COLUMNS.len();
    let padded_len = padded(finals.len());
    let rows: Vec<String> = (0..padded_len)
        .map(|r| format!("({})", placeholders(r * width + 1, width)))
        .collect();
    // A NULL rate keeps the stored one (see `bind_sku_row`).
    let set: Vec<String> = UPDATE_COLUMNS[1..]
        .iter()
        .map(|c| match *c {
            "sales_rate" => format!("{c} = COALESCE(v.{c}, skus.{c})"),
            _ => format!("{c} = v.{c}"),
        })
        .collect();
    let sql = match backend {
        // PostgreSQL takes the VALUES column types from the first row's
        // parameters; a NULL guard needs its type spelled out.
        Backend::Postgres => format!(
            "UPDATE skus SET {} FROM (VALUES {}) AS v({}) WHERE skus.sku = v.sku",
            set.join(", "),
            typed_first_row(&rows, &UPDATE_TYPES, 1),
            UPDATE_COLUMNS.join(", ")
        ),
        Backend::Sqlite => format!(
            "WITH v({}) AS (VALUES {}) UPDATE skus SET {} FROM v WHERE skus.sku = v.sku",
            UPDATE_COLUMNS.join(", "),
            rows.join(", "),
            set.join(", ")
        ),
    };
    let mut query = sqlx::query(&sql);
    // Padding repeats the last row: the same values for the same key.
    let last = finals.values().next_back().copied();
    let states = finals
        .values()
        .copied()
        .chain(std::iter::repeat_n(last, padded_len - finals.len()).flatten());
    for row in states {
        query = bind_sku_row(query, &row.state, row.rate_changed);
    }
    let done = query.execute(&mut **tx).await.map_err(db_error)?;
    if done.rows_affected() != finals.len() as u64 {
        return Err(corrupt("group update missed a locked row"));
    }
    Ok(())
}

const UPDATE_TYPES: [&str; 17] = [
    "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
    "bigint", "bigint", "text", "bigint", "text", "bigint", "text",
];

/// The VALUES rows with casts on the first one (PostgreSQL takes a VALUES
/// column's type from its first row; later NULLs then need no cast).
fn typed_first_row(rows: &[String], types: &[&str], first_param: usize) -> String {
    let first = format!(
        "({})",
        types
            .iter()
            .enumerate()
            .map(|(c, t)| format!("CAST(${} AS {t})", first_param + c))
            .collect::<Vec<_>>()
            .join(", ")
    );
    std::iter::once(first)
        .chain(rows.iter().skip(1).cloned())
        .collect::<Vec<_>>()
        .join(", ")
}

const EVENT_TYPES: [&str; 14] = [
    "bigint", "text", "bigint", "bigint", "text", "text", "text", "bigint", "text", "text", "text",
    "bigint", "bigint", "text",
];

/// Most events in one PostgreSQL INSERT (14 parameters each; the limit is
/// 65,535): a larger group (a CSV import chunk) goes in several.
const POSTGRES_CHUNK: usize = 1024;

/// Takes the events' ids from the clock and appends them, setting each
/// `event_id`. On PostgreSQL the clock update is a CTE of the event INSERT
/// (one round trip holds the clock before COMMIT); on SQLite (no
/// data-modifying CTEs), or for more events than one statement takes, it is
/// its own statement, then the events go in chunks.
async fn append_events(
    backend: Backend,
    tx: &mut Tx,
    events: &mut [Committed],
) -> Result<(), StoreError> {
    let count = i64::try_from(events.len()).map_err(|_| corrupt("group size"))?;
    let first = if backend == Backend::Postgres && events.len() <= POSTGRES_CHUNK {
        insert_events(backend, tx, events, count, true).await?
    } else {
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
        let chunk = match backend {
            Backend::Sqlite => SQLITE_CHUNK,
            Backend::Postgres => POSTGRES_CHUNK,
        };
        let mut before = last - count;
        for part in events.chunks(chunk) {
            insert_events(backend, tx, part, before, false).await?;
            before += part.len() as i64;
        }
        last - count + 1
    };
    for (c, event_id) in events.iter_mut().zip(first..) {
        c.event.event_id = event_id;
    }
    Ok(())
}

/// One multi-row event INSERT; returns the first event id. The VALUES list
/// carries an ordinal instead of the id (padding rows have none and are
/// skipped). With `clock` (PostgreSQL) the statement also takes the ids
/// from the clock and `first_param` is the number of events; without, it
/// is the id before the first.
async fn insert_events(
    backend: Backend,
    tx: &mut Tx,
    events: &[Committed],
    first_param: i64,
    clock: bool,
) -> Result<i64, StoreError> {
    const WIDTH: usize = 14;
    let count = i64::try_from(events.len()).map_err(|_| corrupt("group size"))?;
    let padded_len = padded(events.len());
    // $1 is the count (with the clock) or the id before the first.
    let rows: Vec<String> = (0..padded_len)
        .map(|r| format!("({})", placeholders(r * WIDTH + 2, WIDTH)))
        .collect();
    let values = match backend {
        Backend::Postgres => typed_first_row(&rows, &EVENT_TYPES, 2),
        Backend::Sqlite => rows.join(", "),
    };
    let columns = "ord, sku, version, at_us, field, old_value, new_value, delta, reason, actor, \
                   state, stock_after, price_after, alerts";
    let select = "v.sku, v.version, v.at_us, v.field, v.old_value, v.new_value, v.delta, \
                  v.reason, v.actor, v.state, v.stock_after, v.price_after, v.alerts";
    let sql = if clock {
        format!(
            "WITH c AS (UPDATE event_clock SET last_event_id = last_event_id + $1 WHERE id = 1 \
             RETURNING last_event_id), v({columns}) AS (VALUES {values}) \
             INSERT INTO events ({}) SELECT c.last_event_id - $1 + v.ord, {select} \
             FROM c, v WHERE v.ord IS NOT NULL RETURNING event_id",
            super::EVENT_COLUMNS
        )
    } else {
        format!(
            "WITH v({columns}) AS (VALUES {values}) \
             INSERT INTO events ({}) SELECT $1 + v.ord, {select} FROM v WHERE v.ord IS NOT NULL",
            super::EVENT_COLUMNS
        )
    };
    let mut query = sqlx::query(&sql).bind(first_param);
    for (ord, c) in (1i64..).zip(events.iter()) {
        let event = &c.event;
        query = query
            .bind(Some(ord))
            .bind(Some(event.sku.as_str().to_owned()))
            .bind(Some(event.version))
            .bind(Some(event.at.0))
            .bind(Some(event.field.as_str().to_owned()))
            .bind((!event.old.is_null()).then(|| event.old.to_string()))
            .bind(Some(event.new.to_string()))
            .bind(event.delta)
            .bind(event.reason.clone())
            .bind(event.actor.clone())
            .bind(Some(c.sku.to_json_text()))
            .bind(Some(c.sku.stock))
            .bind(Some(c.sku.price_minor))
            .bind(super::alerts_json(&c.alerts));
    }
    for _ in events.len()..padded_len {
        query = query
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<String>)
            .bind(None::<i64>)
            .bind(None::<i64>)
            .bind(None::<String>);
    }
    if clock {
        let rows = query.fetch_all(&mut **tx).await.map_err(db_error)?;
        if rows.len() != events.len() {
            return Err(corrupt("group insert lost an event"));
        }
        let mut last = i64::MIN;
        for row in &rows {
            last = last.max(row.try_get::<i64, _>(0).map_err(db_error)?);
        }
        Ok(last - count + 1)
    } else {
        let done = query.execute(&mut **tx).await.map_err(db_error)?;
        if done.rows_affected() != events.len() as u64 {
            return Err(corrupt("group insert lost an event"));
        }
        Ok(first_param + 1)
    }
}
