//! Group commit of single-SKU writes.
//!
//! Why: event ids come from one clock row held until commit (that is what
//! keeps the feed gap-free), so one transaction per write means commits, and
//! their fsyncs, happen strictly one after another. Here concurrent
//! single-SKU writes queue to a few committer tasks; each takes whatever is
//! queued (up to [`MAX_GROUP`]), runs it as ONE transaction with set-based
//! statements (one row-lock query, one multi-row UPDATE, one clock update
//! for the whole group, one multi-row event INSERT), commits once, and only
//! then answers every caller. The semantics of `SkuStore::write` are
//! unchanged:
//! - every `Committed` answer is durable (sent after COMMIT);
//! - a domain refusal changes nothing (it is decided in memory before any
//!   write; only its idempotency key, if any, is kept, as before);
//! - event ids stay gap-free and commit-ordered (the clock is still the last
//!   row a transaction locks);
//! - per-SKU versions stay consecutive: a SKU that appears twice in a group
//!   is decided against its state after the first change;
//! - if the group transaction fails before COMMIT (say a constraint the
//!   domain did not foresee), nothing of it is kept and each write is run
//!   again alone, so one bad write cannot fail the others.
//!
//! Row locks are taken in SKU code order (as batches do) and the clock last,
//! so groups, batches and single writes cannot deadlock one another.
//! Creates keep the single-write path (`INSERT ... ON CONFLICT`), and so does
//! an upsert (CSV import row) whose SKU has no row yet: the group hands it
//! back, and runs it alone once the group has committed.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use skuwatch_actors::domain::{
    decide, evaluate_alerts, AlertKind, Command, Committed, Event, Micros, Sku, SkuCode, WriteMeta,
};
use skuwatch_actors::messages::Claim;
use skuwatch_actors::store::{Idempotency, StoreError, WriteOutcome};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot, Mutex};

use super::{
    bind_sku_row, commit_error, corrupt, db_error, keep_answer, placeholders, sku_from_row,
    SqlStore, Tx, SKU_COLUMNS,
};
use crate::store::Backend;

/// Most writes in one transaction: bounds the statement size (13 parameters
/// an event row; SQLite allows 32,766) and the time the first caller waits.
pub(super) const MAX_GROUP: usize = 256;

/// Writes queued for the committers at most; one more is refused at once
/// (503 `overloaded`): a deeper queue would only mean longer waits.
pub(super) const MAX_QUEUED: usize = 16 * MAX_GROUP;

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

struct Job {
    sku: SkuCode,
    command: Command,
    meta: WriteMeta,
    idempotency: Option<Idempotency>,
    /// Taken by the committer that runs the job; withdrawn by a caller
    /// that waited longer than the acquire timeout (nothing done then).
    claim: Claim,
    reply: Reply,
}

/// The queue in front of the committer tasks. Dropping the last handle ends
/// them once the queue is empty.
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Job>,
    /// How long a queued write may wait for a committer to take it.
    wait: std::time::Duration,
}

impl GroupCommit {
    /// Starts `committers` tasks, each running one group transaction at a
    /// time on its own connection from `store`'s write pool: while one
    /// waits for its COMMIT, the next group is already being prepared.
    pub(super) fn start(store: SqlStore, committers: usize, wait: std::time::Duration) -> Self {
        let (queue, rx) = mpsc::channel(MAX_QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        let store = Arc::new(store);
        for _ in 0..committers.max(1) {
            tokio::spawn(committer(store.clone(), rx.clone()));
        }
        Self { queue, wait }
    }

    /// Queues one write and waits for its durable outcome.
    pub(super) async fn write(
        &self,
        sku: &SkuCode,
        command: &Command,
        meta: &WriteMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let claim = Claim::default();
        let job = Job {
            sku: sku.clone(),
            command: command.clone(),
            meta: meta.clone(),
            idempotency: idempotency.cloned(),
            claim: claim.clone(),
            reply,
        };
        self.queue.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => {
                StoreError::Busy("the group-commit queue is full".into())
            }
            mpsc::error::TrySendError::Closed(_) => {
                StoreError::Unavailable("store is shutting down".into())
            }
        })?;
        // A committer that took the job runs it to its end: only a job
        // still queued can be withdrawn (then it never runs).
        let lost = |_| StoreError::OutcomeUnknown("group commit ended".into());
        tokio::pin!(answer);
        tokio::select! {
            outcome = &mut answer => outcome.map_err(lost)?,
            _ = tokio::time::sleep(self.wait) => {
                if claim.withdraw() {
                    return Err(StoreError::Busy(
                        "no group committer took the write in time".into(),
                    ));
                }
                answer.await.map_err(lost)?
            }
        }
    }
}

async fn committer(store: Arc<SqlStore>, rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let mut group = Vec::new();
        {
            let mut rx = rx.lock().await;
            match rx.recv().await {
                Some(job) => group.push(job),
                None => return,
            }
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
        }
        // Writes whose callers stopped waiting are dropped unrun.
        group.retain(|job| job.claim.start());
        run(&store, group).await;
    }
}

/// Runs a group, then what had to wait for the next one.
async fn run(store: &Arc<SqlStore>, mut group: Vec<Job>) {
    while !group.is_empty() {
        // The same idempotency key twice in one transaction would see its
        // own unfinished claim; the second waits for the next transaction.
        let mut keys = HashSet::new();
        let (now_jobs, later): (Vec<Job>, Vec<Job>) = group.into_iter().partition(|job| {
            job.idempotency
                .as_ref()
                .is_none_or(|i| keys.insert((i.scope.clone(), i.key.clone())))
        });
        run_one(store, now_jobs).await;
        group = later;
    }
}

async fn run_one(store: &Arc<SqlStore>, jobs: Vec<Job>) {
    let tx = match store.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            for job in jobs {
                let _ = job.reply.send(Err(e.clone_error()));
            }
            return;
        }
    };
    match prepare(store, tx, &jobs).await {
        Ok((tx, outcomes)) => {
            let committed = tx.commit().await.map_err(commit_error);
            for (job, outcome) in jobs.into_iter().zip(outcomes) {
                let Some(outcome) = outcome else {
                    // An upsert that creates: alone, after the group, beside
                    // the next group (as a create would be).
                    let store = store.clone();
                    tokio::spawn(async move {
                        let outcome = store
                            .write_single(
                                &job.sku,
                                &job.command,
                                &job.meta,
                                job.idempotency.as_ref(),
                            )
                            .await;
                        let _ = job.reply.send(outcome);
                    });
                    continue;
                };
                if let (Ok(()), WriteOutcome::Committed(changes)) = (&committed, &outcome) {
                    crate::metrics::alerts_raised(changes);
                }
                let _ = job.reply.send(match &committed {
                    Ok(()) => Ok(outcome),
                    Err(e) => Err(e.clone_error()),
                });
            }
        }
        Err(e @ StoreError::Busy(_)) => {
            // A lock wait timed out: nothing was kept, and running each
            // write alone would only wait again, once per write.
            for job in jobs {
                let _ = job.reply.send(Err(e.clone_error()));
            }
        }
        Err(e) => {
            // Nothing of the group was kept (the transaction is dropped, so
            // rolled back); each write runs alone and gets its own answer.
            tracing::warn!(error = %e, writes = jobs.len(), "group write failed; retrying one by one");
            for job in jobs {
                let outcome = store
                    .write_single(&job.sku, &job.command, &job.meta, job.idempotency.as_ref())
                    .await;
                let _ = job.reply.send(outcome);
            }
        }
    }
}

trait CloneError {
    fn clone_error(&self) -> StoreError;
}

impl CloneError for StoreError {
    fn clone_error(&self) -> StoreError {
        match self {
            StoreError::Unavailable(s) => StoreError::Unavailable(s.clone()),
            StoreError::Busy(s) => StoreError::Busy(s.clone()),
            StoreError::OutcomeUnknown(s) => StoreError::OutcomeUnknown(s.clone()),
            StoreError::Database(s) => StoreError::Database(s.clone()),
            StoreError::Corrupt(s) => StoreError::Corrupt(s.clone()),
        }
    }
}

/// Everything but COMMIT; one outcome per job, in job order, `None` for an
/// upsert whose SKU has no row (it creates, which the single path does).
async fn prepare(
    store: &SqlStore,
    mut tx: Tx,
    jobs: &[Job],
) -> Result<(Tx, Vec<Option<WriteOutcome>>), StoreError> {
    let now_claim = Micros::now();
    let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; jobs.len()];
    // Keys first, in key order (two instances' groups cannot deadlock on them).
    let mut keyed: Vec<usize> = (0..jobs.len())
        .filter(|&i| jobs[i].idempotency.is_some())
        .collect();
    keyed.sort_by(|&a, &b| {
        let (a, b) = (jobs[a].idempotency.as_ref(), jobs[b].idempotency.as_ref());
        a.map(|i| (&i.scope, &i.key))
            .cmp(&b.map(|i| (&i.scope, &i.key)))
    });
    for &i in &keyed {
        if let Some(idem) = &jobs[i].idempotency {
            if let Some(seen) = store.claim_key(&mut tx, idem, now_claim).await? {
                outcomes[i] = Some(seen);
            }
        }
    }
    let live: Vec<usize> = (0..jobs.len()).filter(|&i| outcomes[i].is_none()).collect();
    let codes: BTreeSet<&SkuCode> = live.iter().map(|&i| &jobs[i].sku).collect();
    let mut current = lock_rows(store, &mut tx, &codes).await?;
    // Read the time once the rows are ours (per SKU, `at` follows `version`).
    let now = Micros::now();
    let mut active = active_alerts(&mut tx, &codes).await?;

    // Decide in arrival order against the state left by earlier changes.
    let mut changes = Vec::new();
    let mut deferred = Vec::new();
    for &i in &live {
        let job = &jobs[i];
        if matches!(job.command, Command::Upsert(_)) && !current.contains_key(&job.sku) {
            deferred.push(i);
            continue;
        }
        match decide(
            &job.sku,
            current.get(&job.sku),
            &job.command,
            &job.meta,
            now,
        ) {
            Ok(decided) => {
                if let Some(last) = decided.last() {
                    current.insert(job.sku.clone(), last.state.clone());
                }
                // An upsert equal to the row changes nothing.
                outcomes[i] = Some(WriteOutcome::Committed(Vec::new()));
                changes.extend(decided.into_iter().map(|change| (i, change)));
            }
            Err(rejection) => outcomes[i] = Some(WriteOutcome::Rejected(rejection)),
        }
    }

    if !changes.is_empty() {
        let mut alerts = Vec::with_capacity(changes.len());
        for (_, change) in &changes {
            let sku = &change.state.sku;
            let held = active.remove(sku).unwrap_or_default();
            let actions = evaluate_alerts(
                change.previous.as_ref(),
                &change.state,
                &held,
                change.price_anomaly.clone(),
            );
            let (changed, still) = if actions.is_empty() {
                (Vec::new(), held)
            } else {
                store.apply_alerts(&mut tx, sku, actions, held, now).await?
            };
            active.insert(sku.clone(), still);
            alerts.push(changed);
        }
        // Final state per SKU.
        let mut finals: BTreeMap<&SkuCode, &Sku> = BTreeMap::new();
        for (_, change) in &changes {
            finals.insert(&change.state.sku, &change.state);
        }
        update_rows(store.backend, &mut tx, &finals).await?;
        // Last: the event ids, one clock update for the group (in the same
        // statement as the events on PostgreSQL: the clock row is then held
        // for one round trip and the COMMIT only).
        let mut events = Vec::with_capacity(changes.len());
        for ((i, change), alerts) in changes.into_iter().zip(alerts) {
            let meta = &jobs[i].meta;
            let event = Event {
                event_id: 0,
                sku: change.state.sku.clone(),
                version: change.state.version,
                at: now,
                field: change.field,
                old: change.old,
                new: change.new,
                delta: change.delta,
                reason: meta.reason.clone(),
                actor: meta.actor.clone(),
            };
            events.push((
                i,
                Committed {
                    event,
                    sku: change.state,
                    alerts,
                },
            ));
        }
        append_events(store.backend, &mut tx, &mut events).await?;
        for (i, committed) in events {
            if let Some(WriteOutcome::Committed(changes)) = &mut outcomes[i] {
                changes.push(committed);
            }
        }
    }

    // Responses of keyed writes, kept for their retries.
    for (i, outcome) in outcomes.iter().enumerate() {
        if outcome.is_none() && !deferred.contains(&i) {
            return Err(corrupt("group outcome"));
        }
    }
    for (job, outcome) in jobs.iter().zip(&outcomes) {
        let (Some(idem), Some(outcome)) = (&job.idempotency, outcome) else {
            continue;
        };
        if matches!(
            outcome,
            WriteOutcome::Replayed(_) | WriteOutcome::IdempotencyMismatch
        ) {
            continue;
        }
        keep_answer(&mut tx, idem, outcome).await?;
    }
    Ok((tx, outcomes))
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
async fn lock_rows(
    store: &SqlStore,
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
) -> Result<BTreeMap<SkuCode, Sku>, StoreError> {
    let mut rows = BTreeMap::new();
    if codes.is_empty() {
        return Ok(rows);
    }
    let sql = format!(
        "SELECT {SKU_COLUMNS} FROM skus WHERE sku IN ({}) ORDER BY sku{}",
        placeholders(1, padded(codes.len())),
        store.for_update()
    );
    let query = bind_codes(sqlx::query(&sql), codes);
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let sku = sku_from_row(&row)?;
        rows.insert(sku.sku.clone(), sku);
    }
    Ok(rows)
}

/// Open or acknowledged alerts of the locked SKUs.
async fn active_alerts(
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
const UPDATE_COLUMNS: [&str; 12] = [
    "sku",
    "name",
    "currency",
    "price_minor",
    "stock",
    "low_stock_threshold",
    "guard_max_change_pct",
    "guard_min_price",
    "guard_max_price",
    "version",
    "updated_us",
    "search_text",
];

/// Writes the final state of each SKU in one statement (a `VALUES` list
/// joined on the key: PostgreSQL and SQLite 3.33+ both take `UPDATE ... FROM`).
async fn update_rows(
    backend: Backend,
    tx: &mut Tx,
    finals: &BTreeMap<&SkuCode, &Sku>,
) -> Result<(), StoreError> {
    if backend == Backend::Sqlite && finals.len() > SQLITE_CHUNK {
        let all: Vec<(&SkuCode, &Sku)> = finals.iter().map(|(k, v)| (*k, *v)).collect();
        for chunk in all.chunks(SQLITE_CHUNK) {
            let part: BTreeMap<&SkuCode, &Sku> = chunk.iter().copied().collect();
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
    finals: &BTreeMap<&SkuCode, &Sku>,
) -> Result<(), StoreError> {
    let width = UPDATE_COLUMNS.len();
    let padded_len = padded(finals.len());
    let rows: Vec<String> = (0..padded_len)
        .map(|r| format!("({})", placeholders(r * width + 1, width)))
        .collect();
    let set: Vec<String> = UPDATE_COLUMNS[1..]
        .iter()
        .map(|c| format!("{c} = v.{c}"))
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
    for state in states {
        query = bind_sku_row(query, state);
    }
    let done = query.execute(&mut **tx).await.map_err(db_error)?;
    if done.rows_affected() != finals.len() as u64 {
        return Err(corrupt("group update missed a locked row"));
    }
    Ok(())
}

const UPDATE_TYPES: [&str; 12] = [
    "text", "text", "text", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint", "bigint",
    "bigint", "text",
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

/// Takes the group's event ids from the clock and appends its events,
/// setting each `event_id`. On PostgreSQL the clock update is a CTE of the
/// event INSERT (one round trip holds the clock before COMMIT); on SQLite
/// (no data-modifying CTEs) it is its own statement, then the events go in
/// chunks.
async fn append_events(
    backend: Backend,
    tx: &mut Tx,
    events: &mut [(usize, Committed)],
) -> Result<(), StoreError> {
    let count = i64::try_from(events.len()).map_err(|_| corrupt("group size"))?;
    let first = match backend {
        Backend::Postgres => insert_events(backend, tx, events, count).await?,
        Backend::Sqlite => {
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
            let mut before = last - count;
            for chunk in events.chunks(SQLITE_CHUNK) {
                insert_events(backend, tx, chunk, before).await?;
                before += chunk.len() as i64;
            }
            last - count + 1
        }
    };
    for ((_, c), event_id) in events.iter_mut().zip(first..) {
        c.event.event_id = event_id;
    }
    Ok(())
}

/// One multi-row event INSERT; returns the first event id. The VALUES list
/// carries an ordinal instead of the id (padding rows have none and are
/// skipped). `first_param` is the group size on PostgreSQL (the clock is
/// updated by the statement) and the id before the first on SQLite.
async fn insert_events(
    backend: Backend,
    tx: &mut Tx,
    events: &[(usize, Committed)],
    first_param: i64,
) -> Result<i64, StoreError> {
    const WIDTH: usize = 14;
    let count = i64::try_from(events.len()).map_err(|_| corrupt("group size"))?;
    let padded_len = padded(events.len());
    // $1 is the count (PostgreSQL) or the id before the first (SQLite).
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
    let sql = match backend {
        Backend::Postgres => format!(
            "WITH c AS (UPDATE event_clock SET last_event_id = last_event_id + $1 WHERE id = 1 \
             RETURNING last_event_id), v({columns}) AS (VALUES {values}) \
             INSERT INTO events ({}) SELECT c.last_event_id - $1 + v.ord, {select} \
             FROM c, v WHERE v.ord IS NOT NULL RETURNING event_id",
            super::EVENT_COLUMNS
        ),
        Backend::Sqlite => format!(
            "WITH v({columns}) AS (VALUES {values}) \
             INSERT INTO events ({}) SELECT $1 + v.ord, {select} FROM v WHERE v.ord IS NOT NULL",
            super::EVENT_COLUMNS
        ),
    };
    let mut query = sqlx::query(&sql).bind(first_param);
    for (ord, (_, c)) in (1i64..).zip(events.iter()) {
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
            .bind(Some(c.sku.to_json().to_string()))
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
    match backend {
        Backend::Postgres => {
            let rows = query.fetch_all(&mut **tx).await.map_err(db_error)?;
            if rows.len() != events.len() {
                return Err(corrupt("group insert lost an event"));
            }
            let mut last = i64::MIN;
            for row in &rows {
                last = last.max(row.try_get::<i64, _>(0).map_err(db_error)?);
            }
            Ok(last - count + 1)
        }
        Backend::Sqlite => {
            let done = query.execute(&mut **tx).await.map_err(db_error)?;
            if done.rows_affected() != events.len() as u64 {
                return Err(corrupt("group insert lost an event"));
            }
            Ok(first_param + 1)
        }
    }
}
