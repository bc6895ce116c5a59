//! The storage trait the actors need; implemented for PostgreSQL and SQLite
//! in the `skuwatch` crate (`src/store/`).

use async_trait::async_trait;

use std::collections::BTreeMap;

use crate::domain::{
    Alert, AlertKind, AlertStatus, Command, Committed, Delivery, DeliveryStatus, DomainError,
    Endpoint, EndpointPatch, Field, Hold, HoldAction, HoldId, HoldStatus, Micros, Sku, SkuCode,
    WebhookFormat, WriteMeta,
};

/// A storage failure that is not a domain rule: connection lost, constraint
/// the domain did not foresee, corrupt row. Shown to clients as a bare 500 or
/// 503; its text (for a database error, the driver's own message) goes to
/// the log only.
///
/// Each variant carries a [`Cause`]: what happened, the underlying error
/// (`std::error::Error::source`), and whether running the same work again
/// may succeed ([`StoreError::is_retryable`]). `StoreError::Busy("...".into())`
/// builds one from text alone.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the connection was lost before
    /// COMMIT: nothing was done (503 `unavailable`). Retryable.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A bounded wait on a shared resource elapsed (pool acquire, a lock,
    /// the group-commit queue) before anything was written: nothing was
    /// done, retry later (503 `overloaded` with `Retry-After`). Retryable.
    #[error("database busy: {0}")]
    Busy(#[source] Cause),
    /// The connection failed while COMMIT was under way: the write may or
    /// may not have committed (503 `outcome_unknown`). Never retryable.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(#[source] Cause),
    /// The database refused a statement (500), or aborted the transaction
    /// to resolve a conflict (serialisation failure 40001, deadlock 40P01:
    /// nothing was kept, retryable; see [`Cause::retryable`]).
    #[error("database error: {0}")]
    Database(#[source] Cause),
    /// A stored row the code cannot read (500).
    #[error("corrupt row: {0}")]
    Corrupt(#[source] Cause),
}

impl StoreError {
    /// Whether the same work may succeed if run again: nothing was kept
    /// (a bounded wait elapsed, the connection was lost before COMMIT, the
    /// database aborted the transaction to resolve a conflict). A failure
    /// during COMMIT, a refused statement and a corrupt row are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Busy(_) | StoreError::Unavailable(_) => true,
            StoreError::Database(cause) => cause.retryable,
            StoreError::OutcomeUnknown(_) | StoreError::Corrupt(_) => false,
        }
    }
}

/// What a [`StoreError`] is about: a message for the log, the error that
/// caused it (kept as the `source`, shared so the same failure can answer
/// every write of a group), and whether retrying may help.
#[derive(Debug, Clone)]
pub struct Cause {
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
    /// Set for a database conflict that aborted the transaction (40001,
    /// 40P01); the `Busy` and `Unavailable` variants are retryable anyway.
    pub retryable: bool,
}

impl Cause {
    /// A cause with its underlying error.
    pub fn new(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            message: message.into(),
            source: Some(std::sync::Arc::new(source)),
            retryable: false,
        }
    }

    /// Marks the cause as a conflict worth retrying.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self {
            message,
            source: None,
            retryable: false,
        }
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        message.to_owned().into()
    }
}

/// An HTTP response kept for an idempotency key, returned verbatim on a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// The JSON body as sent the first time.
    pub body: String,
}

/// Turns the first outcome of a keyed request into the response to keep.
pub type RenderResponse = fn(&WriteOutcome) -> StoredResponse;

/// An `Idempotency-Key` with the request it was first used for (API.md,
/// Conventions: a retry within 24 h returns the first response).
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The client's key, 1-255 characters.
    pub key: String,
    /// The route the key belongs to, so one key on two routes cannot clash.
    pub scope: String,
    /// Hash of the request body and path; a different one is a mismatch.
    pub fingerprint: String,
    pub render: RenderResponse,
}

/// The result of one write transaction.
#[derive(Debug, Clone)]
pub enum WriteOutcome {
    /// Committed, one entry per event, in `event_id` order; empty when the
    /// command changed nothing (an upsert equal to the stored row).
    Committed(Vec<Committed>),
    /// Refused by a domain rule; nothing changed.
    Rejected(DomainError),
    /// The idempotency key was seen before with the same request.
    Replayed(StoredResponse),
    /// The idempotency key was seen before with a different request.
    IdempotencyMismatch,
    /// A hold job did its work: the hold as it is now, and the SKU
    /// changes it made (none for an extension).
    Held {
        hold: Box<Hold>,
        changes: Vec<Committed>,
    },
}

impl WriteOutcome {
    /// The committed changes, in `event_id` order (none for a refusal or
    /// a replay): what goes to the bus and the actors' caches.
    pub fn changes(&self) -> &[Committed] {
        match self {
            WriteOutcome::Committed(changes) | WriteOutcome::Held { changes, .. } => changes,
            _ => &[],
        }
    }
}

/// One single-SKU write, as the HTTP layer hands it to the SKU's actor.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub command: Command,
    pub meta: WriteMeta,
    pub idempotency: Option<Idempotency>,
}

/// One unit of the write path (ARCHITECTURE.md, "The shape to reach"):
/// what [`SkuStore::commit`] runs. A single write is a job of one command;
/// a batch is one all-or-nothing job.
#[derive(Debug, Clone)]
pub enum WriteJob {
    /// One command on one SKU, decided against its locked row.
    Single { sku: SkuCode, request: WriteRequest },
    /// All adjustments or none (an order's lines).
    Batch {
        lines: Vec<AdjustmentLine>,
        meta: WriteMeta,
        idempotency: Option<Idempotency>,
    },
    /// A hold's creation or change (issue 17). The store locks the hold's
    /// row before its SKUs' rows (every writer's order: holds, then SKUs
    /// by code).
    Hold {
        action: HoldAction,
        meta: WriteMeta,
        idempotency: Option<Idempotency>,
    },
}

impl WriteJob {
    /// The job's idempotency key, if any.
    pub fn idempotency(&self) -> Option<&Idempotency> {
        match self {
            WriteJob::Single { request, .. } => request.idempotency.as_ref(),
            WriteJob::Batch { idempotency, .. } | WriteJob::Hold { idempotency, .. } => {
                idempotency.as_ref()
            }
        }
    }

    /// The meta data of the job (who, why, `If-Match`).
    pub fn meta(&self) -> &WriteMeta {
        match self {
            WriteJob::Single { request, .. } => &request.meta,
            WriteJob::Batch { meta, .. } | WriteJob::Hold { meta, .. } => meta,
        }
    }

    /// The hold a hold job reads (not one it creates), to lock before the
    /// SKU rows.
    pub fn stored_hold(&self) -> Option<&HoldId> {
        match self {
            WriteJob::Hold {
                action: HoldAction::Create { .. },
                ..
            } => None,
            WriteJob::Hold { action, .. } => Some(action.id()),
            _ => None,
        }
    }

    /// The SKUs the job writes (a batch may name one several times); a
    /// hold job other than a creation names those of its stored hold,
    /// which only the store knows ([`WriteJob::stored_hold`]).
    pub fn skus(&self) -> impl Iterator<Item = &SkuCode> {
        let (one, lines, held) = match self {
            WriteJob::Single { sku, .. } => (Some(sku), &[][..], &[][..]),
            WriteJob::Batch { lines, .. } => (None, &lines[..], &[][..]),
            WriteJob::Hold {
                action: HoldAction::Create { lines, .. },
                ..
            } => (None, &[][..], &lines[..]),
            WriteJob::Hold { .. } => (None, &[][..], &[][..]),
        };
        one.into_iter()
            .chain(lines.iter().map(|line| &line.sku))
            .chain(held.iter().map(|line| &line.sku))
    }
}

/// One line of an atomic batch adjustment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdjustmentLine {
    pub sku: SkuCode,
    pub delta: i64,
}

/// The sweeper's jobs: an expiry of each hold, by the server.
pub fn expire_jobs(ids: Vec<HoldId>) -> Vec<WriteJob> {
    ids.into_iter()
        .map(|id| WriteJob::Hold {
            action: HoldAction::Expire { id },
            meta: WriteMeta {
                reason: None,
                actor: Some("skuwatch".into()),
                if_match: None,
            },
            idempotency: None,
        })
        .collect()
}

/// Filters for the hold list (API.md v1 additions, `GET /holds`), in id
/// (so creation) order.
#[derive(Debug, Clone, Default)]
pub struct HoldQuery {
    /// Keyset cursor: only holds after this id.
    pub after: Option<HoldId>,
    /// Only holds with a line of this SKU.
    pub sku: Option<SkuCode>,
    pub status: Option<HoldStatus>,
    pub limit: i64,
}

/// What the sweeper may delete once it is old enough (issue 17).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prunable {
    /// Holds released, expired or committed, by when they ended.
    EndedHolds,
    /// Resolved alerts, by when they were resolved.
    ResolvedAlerts,
    /// Webhook deliveries no longer pending, by when they ended.
    EndedDeliveries,
}

impl Prunable {
    pub fn as_str(self) -> &'static str {
        match self {
            Prunable::EndedHolds => "holds",
            Prunable::ResolvedAlerts => "alerts",
            Prunable::EndedDeliveries => "webhook_deliveries",
        }
    }
}

/// Filters for the SKU list (API.md `GET /skus`), ordered by `sku`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Keyset cursor: only SKUs after this code.
    pub after: Option<SkuCode>,
    /// Case-insensitive substring of the code or the name.
    pub q: Option<String>,
    pub below_threshold: bool,
    pub limit: i64,
}

/// Which events to read for a chart (API.md `GET /skus/{sku}/history`).
#[derive(Debug, Clone)]
pub struct HistoryQuery {
    pub sku: SkuCode,
    pub field: Field,
    pub from: Option<Micros>,
    pub to: Option<Micros>,
    pub limit: i64,
}

/// One chart point: the field's value right after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPoint {
    pub at: Micros,
    /// Stock in units, or price in minor units.
    pub value: i64,
    pub version: i64,
    pub event_id: i64,
    pub reason: Option<String>,
}

/// What one round of [`SkuStore::roll_up_history`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryRollup {
    /// Blocks built (each holds both fields).
    pub blocks: u64,
    /// Events this round looked at (0 when another instance holds the
    /// round, or there was nothing new).
    pub looked: i64,
    /// Committed events the roll-up (of any instance) has not looked at
    /// yet.
    pub behind: i64,
}

/// A stored user (the rows behind login). The hash never leaves the server,
/// and `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub username: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: Micros,
    pub disabled: bool,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("username", &self.username)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// Counts for dashboards and the stock-health gauges (API.md
/// `GET /alerts/summary`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub skus: i64,
    /// SKUs whose `available` (stock less what holds keep) is below their
    /// low-stock threshold.
    pub below_threshold: i64,
    /// SKUs whose `available` is 0 or less.
    pub out_of_stock: i64,
    /// Open (not acknowledged, not resolved) alerts per kind; every kind is
    /// present, 0 when none is open.
    pub open_alerts: BTreeMap<&'static str, i64>,
    /// SKUs by days of cover as of their last change (issue 18).
    pub days_of_cover: CoverCounts,
}

/// SKUs by days of cover (`/summary`'s `days_of_cover`, issue 18): each
/// SKU with a forecast is in one of the three ranges (days, half-open),
/// and also in `within_lead_time` when its cover is below its lead time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CoverCounts {
    pub within_lead_time: i64,
    pub under_7: i64,
    #[serde(rename = "7_to_30")]
    pub from_7_to_30: i64,
    #[serde(rename = "30_plus")]
    pub from_30: i64,
    /// Too few sales, no rate, or beyond the horizon (365 days).
    pub no_forecast: i64,
}

impl Summary {
    /// No SKUs, and every kind of alert at 0.
    pub fn empty() -> Self {
        Self {
            skus: 0,
            below_threshold: 0,
            out_of_stock: 0,
            open_alerts: AlertKind::ALL.iter().map(|k| (k.as_str(), 0)).collect(),
            days_of_cover: CoverCounts::default(),
        }
    }
}

/// One database pool's occupancy (the `skuwatch_db_pool_*` gauges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// `main` (PostgreSQL: one pool), or `write`/`read` (SQLite).
    pub pool: &'static str,
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

/// How long an idempotency key is remembered (API.md: retries within 24 h).
pub const IDEMPOTENCY_WINDOW_US: i64 = 24 * 3600 * 1_000_000;

// --- Webhooks (issue 19).

/// An endpoint's signing secrets as stored: encrypted by the server (the
/// store neither reads nor logs them).
#[derive(Clone, PartialEq, Eq)]
pub struct StoredSecrets {
    pub current: String,
    /// The secret before the last rotation, signed with too until the time.
    pub previous: Option<(String, Micros)>,
}

impl std::fmt::Debug for StoredSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoredSecrets(..)")
    }
}

/// How workers claim deliveries ([`SkuStore::claim_deliveries`]).
#[derive(Debug, Clone, Copy)]
pub struct ClaimRules {
    /// The claim's clock.
    pub now: Micros,
    /// How long a claim keeps other workers off a delivery (µs): longer
    /// than an attempt can take, so a claim lapses only when its worker died.
    pub lease_us: i64,
    /// Most deliveries one claim takes.
    pub limit: i64,
    /// Most messages an endpoint is sent per minute; past it, the fresh
    /// ones due are folded into `alert.digest` messages (at most
    /// `digest_max` each). `None`: no cap.
    pub rate_cap: Option<i64>,
    pub digest_max: i64,
}

/// A delivery a worker has claimed: everything its attempt needs.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The row (not the message id).
    pub row: i64,
    /// The `webhook-id`.
    pub message_id: String,
    pub kind: String,
    /// The frozen standard body.
    pub body: String,
    /// This attempt's number, from 1.
    pub attempt: i64,
    pub created_at: Micros,
    pub endpoint_id: String,
    pub url: String,
    pub format: WebhookFormat,
    pub secrets: StoredSecrets,
}

/// What came of an attempt ([`SkuStore::record_attempt`]).
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptResult {
    pub at: Micros,
    /// The receiver's status code, if it answered.
    pub status_code: Option<i64>,
    /// Why the attempt failed; `None`: delivered.
    pub error: Option<String>,
    /// After a failure: when to try again (`None`: give up, `failed`).
    pub retry_at: Option<Micros>,
    /// The receiver answered 410 Gone: disable the endpoint (`gone`).
    pub gone: bool,
    /// Disable the endpoint (`failing`) once it has failed for this long
    /// (µs) without a success.
    pub disable_failing_after_us: i64,
}

/// The outbox at a glance (the queue gauges).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutboxStats {
    /// Deliveries waiting for an attempt.
    pub pending: i64,
    /// When the oldest of them was created.
    pub oldest: Option<Micros>,
}

/// Storage of SKUs, their events and idempotency keys, alerts and users:
/// everything the HTTP layer, the actors and the background tasks use, so
/// that all of them run against an in-memory store in unit tests
/// ([`crate::testing::MemoryStore`]). The database is the
/// source of truth: every write is one transaction that locks the SKU row,
/// applies [`crate::domain::decide`], writes the row and appends the event
/// with the next global `event_id`.
#[async_trait]
pub trait SkuStore: Send + Sync + 'static {
    /// The SKU as committed, or `None`.
    async fn load(&self, sku: &SkuCode) -> Result<Option<Sku>, StoreError>;

    /// The SKUs that exist among `skus`, in code order.
    async fn load_many(&self, skus: &[SkuCode]) -> Result<Vec<Sku>, StoreError>;

    /// Runs `jobs` in the order given: a later job that touches the same
    /// SKU is decided against the state the earlier one left. Answers one
    /// outcome per job, in the same order; a job refused or failed does not
    /// undo the others (each is all-or-nothing on its own). Every
    /// `Committed` outcome is durable when this returns. The one way a
    /// write reaches a store (ARCHITECTURE.md, "The shape to reach").
    async fn commit(&self, jobs: Vec<WriteJob>) -> Vec<Result<WriteOutcome, StoreError>>;

    /// One command on one SKU: a [`SkuStore::commit`] of one job (seeding,
    /// benchmarks and tests; the server's writes go through the SKU actors).
    async fn write(
        &self,
        sku: &SkuCode,
        command: &Command,
        meta: &WriteMeta,
        idempotency: Option<&Idempotency>,
    ) -> Result<WriteOutcome, StoreError> {
        let job = WriteJob::Single {
            sku: sku.clone(),
            request: WriteRequest {
                command: command.clone(),
                meta: meta.clone(),
                idempotency: idempotency.cloned(),
            },
        };
        let mut outcomes = self.commit(vec![job]).await;
        match (outcomes.pop(), outcomes.is_empty()) {
            (Some(outcome), true) => outcome,
            _ => Err(StoreError::Corrupt("not one outcome for one job".into())),
        }
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Sku>, StoreError>;

    /// Committed events with `event_id > after`, oldest first, optionally only
    /// for some SKUs. Gap-free: ids are assigned in commit order. A change
    /// written straight into the database is returned with its alerts: the
    /// read raises them first if no one has yet (issue 16).
    async fn events_after(
        &self,
        after: i64,
        limit: i64,
        skus: Option<&[SkuCode]>,
    ) -> Result<Vec<Committed>, StoreError>;

    /// Values of one field of one SKU in a time range, oldest first. Over
    /// `limit` points: the last point of the range (a chart ends at the
    /// current value), the first (from `limit` 2), and the lowest and
    /// highest point of each of `(limit - 2) / 2` buckets, so a spike or a
    /// stock-out stays visible; never more than `limit` points.
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError>;

    /// The highest committed `event_id` (0 when there is none).
    async fn last_event_id(&self) -> Result<i64, StoreError>;

    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;

    // --- Alerts (API.md `/alerts`). Raised and resolved only by writes.

    /// Alerts, newest first, optionally by status and SKU.
    async fn list_alerts(
        &self,
        status: Option<AlertStatus>,
        sku: Option<&SkuCode>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError>;

    /// Acknowledges an open alert (idempotent: an acknowledged or resolved
    /// one is returned unchanged); `None` if it does not exist.
    async fn acknowledge_alert(&self, id: i64, by: &str) -> Result<Option<Alert>, StoreError>;

    /// Counts for dashboards: SKUs, below threshold, out of stock, open
    /// alerts by kind.
    async fn summary(&self) -> Result<Summary, StoreError>;

    // --- Users (login).

    /// Inserts a user; `false` when the name is taken.
    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError>;

    /// Replaces a user's password hash and enables it; `false` if unknown.
    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError>;

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError>;

    /// All users, by name.
    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError>;

    /// `false` when the user does not exist.
    async fn disable_user(&self, username: &str) -> Result<bool, StoreError>;

    async fn count_users(&self) -> Result<i64, StoreError>;

    // --- Upkeep and lifecycle.

    /// Deletes idempotency keys past their window
    /// ([`IDEMPOTENCY_WINDOW_US`]), so the table a client grows with fresh
    /// keys is bounded by one window of writes; returns how many.
    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError>;

    // --- Holds (issue 17). Written only through `commit`.

    /// The hold as committed, or `None`.
    async fn load_hold(&self, _id: &HoldId) -> Result<Option<Hold>, StoreError> {
        Ok(None)
    }

    /// Holds in id order, filtered.
    async fn list_holds(&self, _query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
        Ok(Vec::new())
    }

    /// Up to `limit` active holds past their expiry on the database's
    /// clock, oldest expiry first (the sweeper's question; an index
    /// answers it).
    async fn due_holds(&self, _limit: i64) -> Result<Vec<HoldId>, StoreError> {
        Ok(Vec::new())
    }

    /// Expires the holds `ids` (the sweeper's round: [`expire_jobs`]),
    /// one outcome per hold. A hold not yet due or already ended is left
    /// as it is. A store may skip a hold whose rows another transaction
    /// holds (the SQL store does, on PostgreSQL), leaving it for a later
    /// round, so one locked row delays no other hold.
    async fn expire_holds(&self, ids: Vec<HoldId>) -> Vec<Result<WriteOutcome, StoreError>> {
        self.commit(expire_jobs(ids)).await
    }

    /// Up to `limit` SKUs whose open `stockout_forecast` alert the forecast
    /// as of `now` would end ([`Sku::reforecast_ends_alert`]); the
    /// re-evaluation then writes a [`Command::Reforecast`] for each
    /// (issue 18). Passivated SKUs included: the store answers, not the
    /// actors.
    async fn due_reforecasts(&self, _now: Micros, _limit: i64) -> Result<Vec<SkuCode>, StoreError> {
        Ok(Vec::new())
    }

    /// Active holds in all (the `skuwatch_holds_active` gauge).
    async fn count_active_holds(&self) -> Result<i64, StoreError> {
        Ok(0)
    }

    /// Deletes what ended more than `older_than_us` microseconds ago
    /// (ended holds, resolved alerts); returns how many rows.
    async fn prune(&self, _what: Prunable, _older_than_us: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// Raises the alerts of changes written straight into the database
    /// (issue 16) that no reader has met yet (their events are read with
    /// their alerts: [`SkuStore::events_after`] settles what it meets);
    /// one round, safe on several instances at once. Returns how many
    /// events this call settled. A no-op for a store nothing else writes.
    async fn settle_external_alerts(&self) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// One round of the roll-up behind [`SkuStore::history`]: summarises
    /// the events committed since the last round into the pre-aggregated
    /// blocks a long chart reads (issue 15, target 4). Safe to run on
    /// several instances at once. A no-op for a store that scans.
    async fn roll_up_history(&self) -> Result<HistoryRollup, StoreError> {
        Ok(HistoryRollup::default())
    }

    /// Refreshes the planner statistics of the tables a write reads, after
    /// a bulk load grew them (the CSV import calls it as its row count
    /// doubles). A database plans a statement once per connection and keeps
    /// that plan until the table's statistics change: a plan made while the
    /// alerts table was empty scans it whole, on every write, for as long
    /// as nothing analyses it (PostgreSQL's autovacuum may be off, or not
    /// have come round yet). The PostgreSQL manual's advice for a bulk load
    /// ("Populating a Database": run ANALYZE afterwards). A no-op where a
    /// store has no planner statistics to keep.
    async fn refresh_statistics(&self) -> Result<(), StoreError> {
        Ok(())
    }

    // --- Webhooks (issue 19). Alert messages are written by the write
    // path, in the transaction that changes the alert (a transactional
    // outbox); these are the endpoints' configuration and the workers'.
    // The in-memory store has none.

    /// Stores a new endpoint with its encrypted secret, and the audit row.
    async fn create_webhook(
        &self,
        _endpoint: &Endpoint,
        _secret: &str,
        _actor: &str,
    ) -> Result<(), StoreError> {
        Err(no_webhooks())
    }

    /// Every endpoint, newest first.
    async fn list_webhooks(&self) -> Result<Vec<Endpoint>, StoreError> {
        Ok(Vec::new())
    }

    async fn load_webhook(&self, _id: &str) -> Result<Option<Endpoint>, StoreError> {
        Ok(None)
    }

    /// Applies `patch` to the endpoint as stored (locked), with the audit
    /// row; a disabled endpoint's pending deliveries are cancelled.
    /// `None`: no such endpoint.
    async fn update_webhook(
        &self,
        _id: &str,
        _patch: &EndpointPatch,
        _actor: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        Ok(None)
    }

    /// Deletes the endpoint and its deliveries (the audit rows stay);
    /// `false`: no such endpoint.
    async fn delete_webhook(&self, _id: &str, _actor: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Makes `secret` (encrypted) the endpoint's secret and keeps the
    /// current one as the previous until `previous_until`.
    async fn rotate_webhook_secret(
        &self,
        _id: &str,
        _secret: &str,
        _previous_until: Micros,
        _actor: &str,
    ) -> Result<Option<Endpoint>, StoreError> {
        Ok(None)
    }

    /// The endpoint's deliveries, newest first.
    async fn list_deliveries(
        &self,
        _endpoint: &str,
        _status: Option<DeliveryStatus>,
        _limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        Ok(Vec::new())
    }

    /// One delivery by its message id (`webhook-id`).
    async fn load_delivery(&self, _message_id: &str) -> Result<Option<Delivery>, StoreError> {
        Ok(None)
    }

    /// Claims up to `rules.limit` due deliveries of enabled endpoints,
    /// each for one attempt: no other worker (of any instance) takes it
    /// until `rules.lease_us` have passed, and then only if its attempt
    /// was never recorded (the worker died).
    async fn claim_deliveries(&self, _rules: &ClaimRules) -> Result<Vec<Claimed>, StoreError> {
        Ok(Vec::new())
    }

    /// Records an attempt of a claimed delivery, if the claim still holds
    /// (`false` when another worker has taken the delivery since). Updates
    /// the endpoint: a success ends its failing streak, a 410 or a streak
    /// past `disable_failing_after_us` disables it.
    async fn record_attempt(
        &self,
        _claimed: &Claimed,
        _result: &AttemptResult,
    ) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Writes a `webhook.test` message for the endpoint, claimed by the
    /// caller for its one attempt. `None`: no such endpoint.
    async fn create_test_delivery(
        &self,
        _endpoint: &str,
        _body: &str,
        _rules: &ClaimRules,
    ) -> Result<Option<Claimed>, StoreError> {
        Ok(None)
    }

    /// Turns up to `limit` events after each `sku.changed` endpoint's
    /// cursor into its deliveries, and moves the cursor, in one
    /// transaction per endpoint; returns how many deliveries.
    async fn feed_sku_changes(&self, _limit: i64) -> Result<u64, StoreError> {
        Ok(0)
    }

    /// The queue gauges.
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        Ok(OutboxStats::default())
    }

    /// Occupancy of the connection pools, for the gauges; empty for a store
    /// without pools.
    fn pool_stats(&self) -> Vec<PoolStats> {
        Vec::new()
    }

    /// Closes the connections (graceful shutdown).
    async fn close(&self) {}
}

/// What a store without webhook tables answers.
fn no_webhooks() -> StoreError {
    StoreError::Unavailable("this store keeps no webhooks".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connection reset")]
    struct Reset;

    #[test]
    fn waits_lost_connections_and_conflicts_are_retryable_an_unknown_commit_is_not() {
        assert!(StoreError::Busy("queue full".into()).is_retryable());
        assert!(StoreError::Unavailable(Cause::new("lost", Reset)).is_retryable());
        assert!(StoreError::Database(Cause::new("40001", Reset).retryable()).is_retryable());
        assert!(!StoreError::Database("constraint".into()).is_retryable());
        assert!(!StoreError::OutcomeUnknown(Cause::new("commit", Reset)).is_retryable());
        assert!(!StoreError::Corrupt("row".into()).is_retryable());
    }

    #[test]
    fn the_source_error_is_kept() {
        use std::error::Error;
        let error = StoreError::Unavailable(Cause::new("write failed", Reset));
        assert_eq!(error.to_string(), "database unavailable: write failed");
        let cause = error.source().expect("the cause");
        assert_eq!(
            cause.source().expect("the sqlx error").to_string(),
            "connection reset"
        );
    }
}
