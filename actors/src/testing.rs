//! In-memory fakes of the storage trait and the bus, for unit tests of the
//! actor core, the feed and the sessions without a database or Redis.
//! Built for this crate's own tests and behind the `testing` feature for
//! other crates' tests (`[dev-dependencies]`); never in a release build.
//!
//! - [`MemoryStore`]: the whole [`SkuStore`] with the same rules as the SQL
//!   store (the same planner, [`crate::plan::plan`]; gap-free event ids,
//!   idempotency keys), plus knobs to fail a write before or after it
//!   commits, to delay writes or hold them in flight, and counters of what
//!   reached it.
//! - [`FakeBus`]: an [`EventBus`] that can drop, duplicate, hold back and
//!   release in any order what is published, and be disconnected.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use crate::bus::EventBus;
use crate::domain::{
    Alert, AlertKind, AlertStatus, Command, Committed, Currency, Field, Hold, HoldId, Micros,
    Money, NewSku, PriceGuard, Sku, SkuCode, WriteMeta,
};
use crate::plan::{AlertOp, AlertRef};
use crate::store::{
    HistoryPoint, HistoryQuery, Idempotency, ListQuery, SkuStore, StoreError, StoredResponse,
    Summary, UserRecord, WriteJob, WriteOutcome, IDEMPOTENCY_WINDOW_US,
};

/// Where an injected write failure strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailAt {
    /// Nothing is written; the call answers [`StoreError::Busy`] (a bounded
    /// wait elapsed: safe to retry).
    BeforeCommit,
    /// The write commits (its events are kept), then the call answers
    /// [`StoreError::OutcomeUnknown`], as when a connection drops during
    /// COMMIT.
    AfterCommit,
}

#[derive(Default)]
struct Data {
    skus: BTreeMap<SkuCode, Sku>,
    /// Every committed change; `events[i]` has `event_id` `i + 1`.
    events: Vec<Committed>,
    /// `alerts[i]` has id `i + 1`.
    alerts: Vec<Alert>,
    users: BTreeMap<String, UserRecord>,
    keys: HashMap<(String, String), Key>,
    holds: BTreeMap<HoldId, Hold>,
    /// Injected failures, taken one per write call, in order.
    failures: VecDeque<FailAt>,
    /// Loads left to fail with [`StoreError::Unavailable`].
    failing_loads: u32,
    unavailable: bool,
}

struct Key {
    fingerprint: String,
    created: Micros,
    /// `None` while its first request runs.
    response: Option<StoredResponse>,
}

/// The whole [`SkuStore`] in memory. Every write runs under one lock, so
/// writes are serial and event ids are gap-free, as in the SQL store.
pub struct MemoryStore {
    data: Mutex<Data>,
    /// Slept before each write call (outside the lock).
    delay: Mutex<Duration>,
    /// `true`: write calls wait (started, nothing done yet) until released.
    held: watch::Sender<bool>,
    write_calls: AtomicU64,
    /// The number of jobs of each commit call, in call order.
    commit_sizes: Mutex<Vec<usize>>,
    load_calls: AtomicU64,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            data: Mutex::default(),
            delay: Mutex::new(Duration::ZERO),
            held: watch::channel(false).0,
            write_calls: AtomicU64::new(0),
            commit_sizes: Mutex::default(),
            load_calls: AtomicU64::new(0),
        }
    }
}

impl MemoryStore {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        // A test that panicked holding the lock has failed already.
        self.data.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next write call fails at `at` (queued behind failures already
    /// set: each write call takes one).
    pub fn fail_next_write(&self, at: FailAt) {
        self.data().failures.push_back(at);
    }

    /// The next `count` loads (`load`, `load_many`) fail as unavailable.
    pub fn fail_next_loads(&self, count: u32) {
        self.data().failing_loads = count;
    }

    /// Every call answers [`StoreError::Unavailable`] while `true`.
    pub fn set_unavailable(&self, unavailable: bool) {
        self.data().unavailable = unavailable;
    }

    /// Each write call first sleeps this long (tokio time: instant under a
    /// paused clock).
    pub fn set_write_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(|e| e.into_inner()) = delay;
    }

    /// Write calls that start from now on wait, before doing anything,
    /// until [`MemoryStore::release_writes`]: a write "in flight".
    pub fn hold_writes(&self) {
        self.held.send_replace(true);
    }

    pub fn release_writes(&self) {
        self.held.send_replace(false);
    }

    /// How many write calls (`write`, `write_batch`) reached the store.
    pub fn write_calls(&self) -> u64 {
        self.write_calls.load(Ordering::Acquire)
    }

    /// How many `load` calls reached the store.
    /// The number of jobs each commit call carried, in call order.
    pub fn commit_sizes(&self) -> Vec<usize> {
        self.commit_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn load_calls(&self) -> u64 {
        self.load_calls.load(Ordering::Acquire)
    }

    /// Every committed change, in `event_id` order.
    pub fn events(&self) -> Vec<Committed> {
        self.data().events.clone()
    }

    /// The SKU as committed, without counting a load.
    pub fn committed(&self, sku: &SkuCode) -> Option<Sku> {
        self.data().skus.get(sku).cloned()
    }

    /// Creates a SKU (a test's starting point); panics if it exists.
    pub async fn seed(&self, code: &str, stock: i64) -> Sku {
        let sku = code_of(code);
        let outcome = self
            .write(&sku, &create_command(stock), &WriteMeta::default(), None)
            .await;
        match outcome {
            Ok(WriteOutcome::Committed(changes)) => changes[0].sku.clone(),
            other => panic!("could not seed {code}: {other:?}"),
        }
    }

    /// Adjusts a SKU's stock directly in the store, as another instance
    /// would: no actor, no bus. Returns the committed change.
    pub async fn adjust_behind_the_back(&self, code: &str, delta: i64) -> Arc<Committed> {
        let outcome = self
            .write(
                &code_of(code),
                &Command::Adjust { delta },
                &WriteMeta::default(),
                None,
            )
            .await;
        match outcome {
            Ok(WriteOutcome::Committed(mut changes)) => Arc::new(changes.remove(0)),
            other => panic!("could not adjust {code}: {other:?}"),
        }
    }

    fn check_available(&self) -> Result<(), StoreError> {
        if self.data().unavailable {
            return Err(unavailable("the memory store is switched off"));
        }
        Ok(())
    }

    /// What every write call does first: count, delay, wait while held,
    /// and take an injected failure, if any.
    async fn enter_write(&self, jobs: usize) -> Result<Option<FailAt>, StoreError> {
        self.write_calls.fetch_add(1, Ordering::AcqRel);
        self.commit_sizes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(jobs);
        let delay = *self.delay.lock().unwrap_or_else(|e| e.into_inner());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut held = self.held.subscribe();
        // The sender lives in `self`, so this only ends when released.
        let _ = held.wait_for(|held| !*held).await;
        self.check_available()?;
        let failure = self.data().failures.pop_front();
        if failure == Some(FailAt::BeforeCommit) {
            return Err(busy("injected failure before commit"));
        }
        Ok(failure)
    }

    /// Runs `jobs` as one transaction on `data`, as the SQL store does:
    /// claim the keys, plan against the rows (the same
    /// [`crate::plan::plan`]), keep the rows, alerts and events the plan
    /// says, and the answers of keyed jobs.
    fn transaction(data: &mut Data, jobs: &[WriteJob]) -> Vec<WriteOutcome> {
        let now = Micros::now();
        let mut outcomes: Vec<Option<WriteOutcome>> = jobs
            .iter()
            .map(|job| {
                job.idempotency()
                    .and_then(|idem| claim_key(data, idem, now))
            })
            .collect();
        let live: Vec<usize> = (0..jobs.len()).filter(|&i| outcomes[i].is_none()).collect();
        let live_jobs: Vec<&WriteJob> = live.iter().map(|&i| &jobs[i]).collect();
        let codes: BTreeSet<&SkuCode> = live_jobs.iter().flat_map(|job| job.skus()).collect();
        let rows: BTreeMap<SkuCode, Sku> = codes
            .iter()
            .filter_map(|code| {
                data.skus
                    .get(*code)
                    .map(|sku| ((*code).clone(), sku.clone()))
            })
            .collect();
        let mut active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>> = BTreeMap::new();
        for alert in &data.alerts {
            if codes.contains(&alert.sku) && alert.status != AlertStatus::Resolved {
                active
                    .entry(alert.sku.clone())
                    .or_default()
                    .push((alert.id, alert.kind));
            }
        }
        // A hold's SKUs are those of its stored row.
        let holds = crate::plan::HoldRows {
            rows: live_jobs
                .iter()
                .filter_map(|job| job.stored_hold())
                .filter_map(|id| data.holds.get(id).map(|h| (id.clone(), h.clone())))
                .collect(),
            clock: now,
        };
        let mut rows = rows;
        for hold in holds.rows.values() {
            for line in &hold.lines {
                if let Some(sku) = data.skus.get(&line.sku) {
                    rows.insert(line.sku.clone(), sku.clone());
                }
            }
        }
        let mut plan = crate::plan::plan(rows, active, holds, &live_jobs, now);
        for (code, row) in &plan.rows {
            data.skus.insert(code.clone(), row.state.clone());
        }
        let alerts = apply_alerts(data, &plan.alerts, now);
        let mut committed = plan.take_committed(&alerts);
        for change in &mut committed {
            change.event.event_id = data.events.len() as i64 + 1;
            data.events.push(change.clone());
        }
        plan.set_hold_events(&committed);
        for write in &plan.holds {
            data.holds.insert(write.hold.id.clone(), write.hold.clone());
        }
        for (outcome, i) in plan.outcomes(committed).into_iter().zip(live) {
            if let Some(idem) = jobs[i].idempotency() {
                if let Some(key) = data.keys.get_mut(&(idem.scope.clone(), idem.key.clone())) {
                    key.response = Some((idem.render)(&outcome));
                }
            }
            outcomes[i] = Some(outcome);
        }
        outcomes.into_iter().flatten().collect()
    }
}

/// Runs a plan's alert ops in order; one alert per op, as right after it.
fn apply_alerts(data: &mut Data, ops: &[AlertOp], now: Micros) -> Vec<Alert> {
    let mut done: Vec<Alert> = Vec::with_capacity(ops.len());
    for op in ops {
        let alert = match op {
            AlertOp::Raise {
                sku,
                kind,
                message,
                value,
                threshold,
            } => {
                let alert = Alert {
                    id: data.alerts.len() as i64 + 1,
                    sku: sku.clone(),
                    kind: *kind,
                    status: AlertStatus::Open,
                    message: message.clone(),
                    value: value.clone(),
                    threshold: threshold.clone(),
                    raised_at: now,
                    acknowledged_by: None,
                    resolved_at: None,
                };
                data.alerts.push(alert.clone());
                alert
            }
            AlertOp::Resolve(alert) => {
                let id = match alert {
                    AlertRef::Existing(id) => *id,
                    AlertRef::New(k) => done[*k].id,
                };
                let stored = &mut data.alerts[(id - 1) as usize];
                stored.status = AlertStatus::Resolved;
                stored.resolved_at = Some(now);
                stored.clone()
            }
        };
        done.push(alert);
    }
    done
}

// The store's errors, made in one place (their shape is the store's).
fn unavailable(why: &str) -> StoreError {
    StoreError::Unavailable(why.into())
}

fn busy(why: &str) -> StoreError {
    StoreError::Busy(why.into())
}

fn outcome_unknown(why: &str) -> StoreError {
    StoreError::OutcomeUnknown(why.into())
}

/// A valid SKU code; panics on an invalid one (tests only).
pub fn code_of(code: &str) -> SkuCode {
    SkuCode::parse(code).unwrap_or_else(|e| panic!("bad test SKU code {code}: {e}"))
}

/// A `Create` of a SKU priced 9.99 USD with `stock` units and a low-stock
/// threshold of 10.
pub fn create_command(stock: i64) -> Command {
    let currency = Currency::parse("USD").expect("USD");
    Command::Create(NewSku {
        name: "Test SKU".into(),
        price: Money {
            minor: 999,
            currency,
        },
        stock,
        low_stock_threshold: 10,
        price_guard: PriceGuard::default(),
        lead_time_days: None,
        alert_rule: None,
    })
}

/// Records the key, or answers what it was first used for (the SQL store's
/// `claim_key`).
fn claim_key(data: &mut Data, idem: &Idempotency, now: Micros) -> Option<WriteOutcome> {
    let id = (idem.scope.clone(), idem.key.clone());
    if let Some(key) = data.keys.get(&id) {
        if key.created.0 >= now.0 - IDEMPOTENCY_WINDOW_US {
            if let Some(response) = &key.response {
                if key.fingerprint != idem.fingerprint {
                    return Some(WriteOutcome::IdempotencyMismatch);
                }
                return Some(WriteOutcome::Replayed(response.clone()));
            }
        }
    }
    data.keys.insert(
        id,
        Key {
            fingerprint: idem.fingerprint.clone(),
            created: now,
            response: None,
        },
    );
    None
}

#[async_trait]
impl SkuStore for MemoryStore {
    async fn load(&self, sku: &SkuCode) -> Result<Option<Sku>, StoreError> {
        self.load_calls.fetch_add(1, Ordering::AcqRel);
        self.check_available()?;
        let mut data = self.data();
        if data.failing_loads > 0 {
            data.failing_loads -= 1;
            return Err(unavailable("injected load failure"));
        }
        Ok(data.skus.get(sku).cloned())
    }

    async fn load_hold(&self, id: &HoldId) -> Result<Option<Hold>, StoreError> {
        self.check_available()?;
        Ok(self.data().holds.get(id).cloned())
    }

    async fn load_many(&self, skus: &[SkuCode]) -> Result<Vec<Sku>, StoreError> {
        self.check_available()?;
        let mut data = self.data();
        if data.failing_loads > 0 {
            data.failing_loads -= 1;
            return Err(unavailable("injected load failure"));
        }
        let mut found: Vec<Sku> = skus
            .iter()
            .filter_map(|s| data.skus.get(s).cloned())
            .collect();
        found.sort_by(|a, b| a.sku.cmp(&b.sku));
        found.dedup_by(|a, b| a.sku == b.sku);
        Ok(found)
    }

    async fn commit(&self, jobs: Vec<WriteJob>) -> Vec<Result<WriteOutcome, StoreError>> {
        let failure = match self.enter_write(jobs.len()).await {
            Ok(failure) => failure,
            Err(e) => return jobs.iter().map(|_| Err(e.clone())).collect(),
        };
        let outcomes = Self::transaction(&mut self.data(), &jobs);
        outcomes
            .into_iter()
            .map(|outcome| match failure {
                Some(FailAt::AfterCommit) => Err(outcome_unknown("injected failure after commit")),
                _ => Ok(outcome),
            })
            .collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Sku>, StoreError> {
        self.check_available()?;
        let needle = query.q.as_ref().map(|q| q.to_lowercase());
        Ok(self
            .data()
            .skus
            .values()
            .filter(|s| query.after.as_ref().is_none_or(|after| s.sku > *after))
            .filter(|s| {
                needle
                    .as_ref()
                    .is_none_or(|n| format!("{} {}", s.sku, s.name).to_lowercase().contains(n))
            })
            .filter(|s| !query.below_threshold || s.stock < s.low_stock_threshold)
            .take(usize::try_from(query.limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    async fn events_after(
        &self,
        after: i64,
        limit: i64,
        skus: Option<&[SkuCode]>,
    ) -> Result<Vec<Committed>, StoreError> {
        self.check_available()?;
        Ok(self
            .data()
            .events
            .iter()
            .skip(usize::try_from(after).unwrap_or(0))
            .filter(|c| skus.is_none_or(|skus| skus.contains(&c.event.sku)))
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    /// The points of the range, oldest first; over `limit`, the last
    /// `limit` of them (simpler than the SQL store's bucketing).
    async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryPoint>, StoreError> {
        self.check_available()?;
        let points: Vec<HistoryPoint> = self
            .data()
            .events
            .iter()
            .filter(|c| c.event.sku == query.sku)
            .filter(|c| {
                c.event.field == query.field || (c.event.field == Field::Meta && c.sku.version == 1)
            })
            .filter(|c| query.from.is_none_or(|from| c.event.at >= from))
            .filter(|c| query.to.is_none_or(|to| c.event.at <= to))
            .map(|c| HistoryPoint {
                at: c.event.at,
                value: match query.field {
                    Field::Price => c.sku.price_minor,
                    _ => c.sku.stock,
                },
                version: c.event.version,
                event_id: c.event.event_id,
                reason: c.event.reason.clone(),
            })
            .collect();
        let limit = usize::try_from(query.limit).unwrap_or(0);
        Ok(points[points.len().saturating_sub(limit)..].to_vec())
    }

    async fn last_event_id(&self) -> Result<i64, StoreError> {
        self.check_available()?;
        Ok(self.data().events.len() as i64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.check_available()
    }

    async fn list_alerts(
        &self,
        status: Option<AlertStatus>,
        sku: Option<&SkuCode>,
        limit: i64,
    ) -> Result<Vec<Alert>, StoreError> {
        self.check_available()?;
        Ok(self
            .data()
            .alerts
            .iter()
            .rev()
            .filter(|a| status.is_none_or(|s| a.status == s))
            .filter(|a| sku.is_none_or(|s| a.sku == *s))
            .take(usize::try_from(limit).unwrap_or(0))
            .cloned()
            .collect())
    }

    async fn acknowledge_alert(&self, id: i64, by: &str) -> Result<Option<Alert>, StoreError> {
        self.check_available()?;
        let mut data = self.data();
        let Some(alert) = usize::try_from(id - 1)
            .ok()
            .and_then(|i| data.alerts.get_mut(i))
        else {
            return Ok(None);
        };
        if alert.status == AlertStatus::Open {
            alert.status = AlertStatus::Acknowledged;
            alert.acknowledged_by = Some(by.to_owned());
        }
        Ok(Some(alert.clone()))
    }

    async fn summary(&self) -> Result<Summary, StoreError> {
        self.check_available()?;
        let data = self.data();
        let mut summary = Summary {
            skus: data.skus.len() as i64,
            below_threshold: data
                .skus
                .values()
                .filter(|s| s.stock < s.low_stock_threshold)
                .count() as i64,
            out_of_stock: data.skus.values().filter(|s| s.stock == 0).count() as i64,
            ..Summary::empty()
        };
        for alert in data.alerts.iter().filter(|a| a.status == AlertStatus::Open) {
            *summary.open_alerts.entry(alert.kind.as_str()).or_default() += 1;
        }
        Ok(summary)
    }

    async fn create_user(&self, user: &UserRecord) -> Result<bool, StoreError> {
        self.check_available()?;
        let mut data = self.data();
        if data.users.contains_key(&user.username) {
            return Ok(false);
        }
        data.users.insert(user.username.clone(), user.clone());
        Ok(true)
    }

    async fn set_password(&self, username: &str, hash: &str) -> Result<bool, StoreError> {
        self.check_available()?;
        Ok(match self.data().users.get_mut(username) {
            Some(user) => {
                user.password_hash = hash.to_owned();
                user.disabled = false;
                true
            }
            None => false,
        })
    }

    async fn find_user(&self, username: &str) -> Result<Option<UserRecord>, StoreError> {
        self.check_available()?;
        Ok(self.data().users.get(username).cloned())
    }

    async fn list_users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.check_available()?;
        Ok(self.data().users.values().cloned().collect())
    }

    async fn disable_user(&self, username: &str) -> Result<bool, StoreError> {
        self.check_available()?;
        Ok(match self.data().users.get_mut(username) {
            Some(user) => {
                user.disabled = true;
                true
            }
            None => false,
        })
    }

    async fn count_users(&self) -> Result<i64, StoreError> {
        self.check_available()?;
        Ok(self.data().users.len() as i64)
    }

    async fn purge_idempotency_keys(&self) -> Result<u64, StoreError> {
        self.check_available()?;
        let cutoff = Micros::now().0 - IDEMPOTENCY_WINDOW_US;
        let mut data = self.data();
        let before = data.keys.len();
        data.keys.retain(|_, key| key.created.0 >= cutoff);
        Ok((before - data.keys.len()) as u64)
    }
}

/// What [`FakeBus`] does with what is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BusMode {
    /// Delivered at once, in order.
    #[default]
    Deliver,
    /// Lost.
    Drop,
    /// Delivered twice.
    Duplicate,
    /// Kept back until [`FakeBus::release`].
    Hold,
}

/// An [`EventBus`] that misbehaves on demand: it drops, duplicates or holds
/// back what is published, and releases held changes in any order. It
/// records everything published and every [`EventBus::missed`] notice.
pub struct FakeBus {
    sender: broadcast::Sender<Arc<Committed>>,
    connected: watch::Sender<bool>,
    state: Mutex<BusState>,
}

#[derive(Default)]
struct BusState {
    mode: BusMode,
    held: Vec<Arc<Committed>>,
    published: Vec<Arc<Committed>>,
    missed: Vec<Arc<Committed>>,
}

impl Default for FakeBus {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(4096).0,
            connected: watch::channel(true).0,
            state: Mutex::default(),
        }
    }
}

impl FakeBus {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> MutexGuard<'_, BusState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What happens to changes published from now on.
    pub fn set_mode(&self, mode: BusMode) {
        self.state().mode = mode;
    }

    /// Delivers the held changes in the order `order` gives them (indexes
    /// into the held list, oldest first); the others stay held.
    pub fn release_in(&self, order: &[usize]) {
        let mut state = self.state();
        let held = std::mem::take(&mut state.held);
        for &i in order {
            let _ = self.sender.send(held[i].clone());
        }
        state.held = held
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !order.contains(i))
            .map(|(_, c)| c)
            .collect();
    }

    /// Delivers every held change, newest first (the worst reordering).
    pub fn release_reversed(&self) {
        let count = self.state().held.len();
        let order: Vec<usize> = (0..count).rev().collect();
        self.release_in(&order);
    }

    /// Delivers a change as if another instance had published it.
    pub fn deliver(&self, change: Arc<Committed>) {
        let _ = self.sender.send(change);
    }

    /// How many changes are held back.
    pub fn held(&self) -> usize {
        self.state().held.len()
    }

    /// Everything published on this bus, in publishing order.
    pub fn published(&self) -> Vec<Arc<Committed>> {
        self.state().published.clone()
    }

    /// The changes the feed reported it had to read from the database.
    pub fn missed_changes(&self) -> Vec<Arc<Committed>> {
        self.state().missed.clone()
    }

    /// Whether changes from other instances arrive (see
    /// [`EventBus::connected`]).
    pub fn set_connected(&self, connected: bool) {
        self.connected.send_replace(connected);
    }
}

impl EventBus for FakeBus {
    fn publish(&self, changes: &[Arc<Committed>]) {
        let mut state = self.state();
        state.published.extend(changes.iter().cloned());
        for change in changes {
            match state.mode {
                BusMode::Deliver => {
                    let _ = self.sender.send(change.clone());
                }
                BusMode::Drop => {}
                BusMode::Duplicate => {
                    let _ = self.sender.send(change.clone());
                    let _ = self.sender.send(change.clone());
                }
                BusMode::Hold => state.held.push(change.clone()),
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.sender.subscribe()
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }

    fn missed(&self, change: &Arc<Committed>) {
        self.state().missed.push(change.clone());
    }
}
