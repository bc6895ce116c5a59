//! The SKU actor: the cached state of one SKU and the pipelined writer for
//! it on this instance.
//!
//! # The write pipeline
//! A write received joins the actor's pending list. When no commit call is
//! in flight, the actor takes every pending write (at most
//! [`MAX_COMMIT_JOBS`], in the order received) into ONE
//! [`SkuStore::commit`] call, run by a task of its own, and goes back to
//! its mailbox: writes arriving meanwhile wait in the pending list for the
//! NEXT call, and reads are answered at once from the cached committed
//! state. When the task reports the outcomes ([`SkuMsg::Committed`]), the
//! actor caches the last committed state, answers every caller in order,
//! then starts the next call. So a hot SKU commits as many writes per cycle
//! as arrived during the previous one, instead of one, and the order of
//! its writes is the order of its mailbox (the store decides each job
//! against the state the one before it left).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::Instrument;

use crate::bus::EventBus;
use crate::domain::{Committed, DomainError, Sku, SkuCode};
use crate::handle::{ChangeSlot, SkuHandle};
use crate::messages::{Claim, InjectedFaults, SkuMsg, WriteReply};
use crate::store::{SkuStore, StoreError, WriteJob, WriteOutcome};
use crate::subscribers::Pins;

/// Most jobs in one commit call of a SKU actor (the store's group size):
/// a longer pending list is committed over several calls, in order.
pub const MAX_COMMIT_JOBS: usize = 256;

/// Everything a SKU actor needs; shared by all actors of an instance.
#[derive(Clone)]
pub struct SkuContext {
    pub store: Arc<dyn SkuStore>,
    pub bus: Arc<dyn EventBus>,
    /// The registry's map, so a passivating actor can take itself out, and
    /// a batch's coordinator can offer its result to the other lines' actors.
    pub actors: Arc<DashMap<SkuCode, SkuHandle>>,
    /// Unused this long, the actor stops (passivation).
    pub idle: Duration,
    /// Commit calls and the writes they carried, for all actors of the
    /// instance (tests and benchmarks read writes per commit here; the
    /// histogram [`crate::metrics::ACTOR_COMMIT_WRITES`] is process-wide).
    pub stats: Arc<CommitStats>,
    /// Which SKUs are subscribed, and how many actors they may pin.
    pub pinning: Pinning,
    /// Test-only faults (none in production).
    #[doc(hidden)]
    pub faults: InjectedFaults,
}

/// Counts of the SKU actors' commit calls.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Commit calls started.
    pub commits: AtomicU64,
    /// Jobs (single writes and batches) in those calls.
    pub writes: AtomicU64,
}

impl CommitStats {
    /// `(commit calls, jobs)` so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

pub struct SkuActor;

/// A write waiting for the next commit call.
struct PendingWrite {
    job: WriteJob,
    claim: Claim,
    reply: WriteReply,
}

/// The callers of the commit call in flight, in job order.
struct InFlight {
    replies: Vec<WriteReply>,
    /// Each job's `reason`, kept only while a `panic_after_commit` fault is
    /// set (tests), which fires on it.
    reasons: Option<Vec<Option<String>>>,
}

pub struct SkuActorState {
    sku: SkuCode,
    ctx: SkuContext,
    /// States offered from elsewhere, taken on [`SkuMsg::Changed`].
    changes: Arc<ChangeSlot>,
    /// `None` until the first read: the state is read from the database
    /// only once the actor is registered, so no change committed before that
    /// read can be missed (later ones arrive through the change slot or via writes).
    cached: Option<Option<Sku>>,
    last_used: Instant,
    /// A [`SkuMsg::StopIfAbsent`] is queued, or waits for the commit in
    /// flight to end.
    stop_pending: bool,
    /// Writes received, not yet in a commit call (their claims not started).
    pending: VecDeque<PendingWrite>,
    /// The commit call running, if any: at most one at a time, so commits
    /// of this SKU's writes never overtake one another.
    in_flight: Option<InFlight>,
    /// Holds one of [`Pinning::max`] pins: subscribed, so not passivated.
    pinned: bool,
}

impl SkuActorState {
    async fn loaded(&mut self) -> Result<Option<&Sku>, StoreError> {
        // Activation reads the database, never the Redis hash (issue 13,
        // fault 11): a hash restored from an older dump, or a lagging
        // replica, holds a version older than one this instance may already
        // have shown, and nothing in the hash tells. Checking it against the
        // database costs one primary-key read of the same row, exactly what
        // loading costs, so the hash can save nothing here.
        if self.cached.is_none() {
            self.cached = Some(self.ctx.store.load(&self.sku).await?);
        }
        Ok(self.cached.as_ref().and_then(Option::as_ref))
    }

    /// Keeps `sku` if it is newer than the cached state.
    fn offer(&mut self, sku: &Sku) {
        if let Some(cached) = &mut self.cached {
            if cached.as_ref().is_none_or(|c| c.version < sku.version) {
                *cached = Some(sku.clone());
            }
        }
    }

    /// A change from elsewhere: kept if newer. Versions step by exactly 1,
    /// so a jump means a change never reached this actor (a bus that lost
    /// it, or a change committed between the load and the registration);
    /// the state is then read again
    /// from the database, which is the truth.
    async fn apply(&mut self, sku: &Sku) {
        let gap = matches!(&self.cached, Some(Some(c)) if sku.version > c.version + 1);
        if gap {
            tracing::debug!(sku = %self.sku, "version gap; reloading from the database");
            match self.ctx.store.load(&self.sku).await {
                Ok(loaded) => self.cached = Some(loaded),
                // Forget the state: the next use reads the database again.
                Err(_) => self.cached = None,
            }
        }
        self.offer(sku);
    }

    /// Whether writes are waiting or committing: such an actor is never
    /// idle, and never stops on its own (a caller whose write is committing
    /// would be told `outcome_unknown`).
    fn busy(&self) -> bool {
        self.in_flight.is_some() || !self.pending.is_empty()
    }
}

impl SkuActorState {
    /// After a request that found no SKU (or could not load it), queues a
    /// [`SkuMsg::StopIfAbsent`]: an actor holds memory for the idle time,
    /// and codes that do not exist are the client's to invent.
    fn stop_if_absent(&mut self, myself: &ActorRef<SkuMsg>) {
        if !self.stop_pending && !matches!(self.cached, Some(Some(_))) {
            self.stop_pending = myself.cast(SkuMsg::StopIfAbsent).is_ok();
        }
    }

    /// Takes the actor out of the registry, then stops it. Requests still
    /// in its mailbox or pending list are dropped unstarted; the registry
    /// sends them to a fresh actor.
    fn leave(&self, myself: &ActorRef<SkuMsg>, why: &str) {
        let id = myself.get_id();
        self.ctx
            .actors
            .remove_if(&self.sku, |_, h| h.actor.get_id() == id);
        ::metrics::counter!(crate::metrics::ACTOR_PASSIVATIONS).increment(1);
        myself.stop(Some(why.into()));
    }

    /// Starts the next commit call if none is in flight: every pending
    /// write not withdrawn, up to [`MAX_COMMIT_JOBS`], in order. Claims are
    /// started here, when a write goes into a call, not when it arrives: a
    /// write still pending when the actor stops never reached the store and
    /// is sent again by the registry.
    fn start_commit(&mut self, myself: &ActorRef<SkuMsg>) {
        if self.in_flight.is_some() {
            return;
        }
        let keep_reasons = self.ctx.faults.panic_after_commit.is_some();
        let mut jobs = Vec::new();
        let mut replies = Vec::new();
        let mut reasons = keep_reasons.then(Vec::new);
        while jobs.len() < MAX_COMMIT_JOBS {
            let Some(write) = self.pending.pop_front() else {
                break;
            };
            // Withdrawn: the caller stopped waiting and was told nothing
            // was done.
            if !write.claim.start() {
                continue;
            }
            if let Some(reasons) = &mut reasons {
                reasons.push(write.job.meta().reason.clone());
            }
            jobs.push(write.job);
            replies.push(write.reply);
        }
        if jobs.is_empty() {
            return;
        }
        ::metrics::histogram!(crate::metrics::ACTOR_COMMIT_WRITES).record(jobs.len() as f64);
        self.ctx.stats.commits.fetch_add(1, Ordering::Relaxed);
        self.ctx
            .stats
            .writes
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let span = tracing::debug_span!("sku_commit", sku = %self.sku, jobs = jobs.len());
        let store = self.ctx.store.clone();
        let bus = self.ctx.bus.clone();
        let report = CommitReport(Some(myself.clone()));
        // A task of its own: the actor keeps answering reads and queueing
        // writes meanwhile, and a caller hanging up cannot cancel the work
        // between commit and publish.
        tokio::spawn(
            async move {
                let outcomes = store.commit(jobs).await;
                // Published by the task, not the actor: a change committed
                // reaches the bus even if the actor fails before it reads
                // the outcomes.
                let changes: Vec<Arc<Committed>> = outcomes
                    .iter()
                    .flatten()
                    .flat_map(WriteOutcome::changes)
                    .cloned()
                    .map(Arc::new)
                    .collect();
                if !changes.is_empty() {
                    bus.publish(&changes);
                }
                report.send(outcomes);
            }
            .instrument(span),
        );
        self.in_flight = Some(InFlight { replies, reasons });
    }

    /// The outcomes of the commit call in flight: cache, offer batch lines
    /// to their actors, answer each caller in order, start the next call.
    fn committed(
        &mut self,
        myself: &ActorRef<SkuMsg>,
        outcomes: Option<Vec<Result<WriteOutcome, StoreError>>>,
    ) {
        let Some(in_flight) = self.in_flight.take() else {
            return;
        };
        self.last_used = Instant::now();
        let Some(outcomes) = outcomes else {
            // The commit task ended without outcomes: dropping the replies
            // tells each caller its write's outcome is unknown.
            tracing::error!(sku = %self.sku, "a commit task ended without outcomes");
            self.start_commit(myself);
            return;
        };
        if let (Some(fault), Some(reasons)) =
            (&self.ctx.faults.panic_after_commit, &in_flight.reasons)
        {
            for (outcome, reason) in outcomes.iter().zip(reasons) {
                if matches!(outcome, Ok(WriteOutcome::Committed(_)))
                    && fault.fires(reason.as_deref())
                {
                    panic!("fault injected after commit");
                }
            }
        }
        let mut absent = false;
        for (outcome, reply) in outcomes.into_iter().zip(in_flight.replies) {
            match &outcome {
                Ok(committed @ (WriteOutcome::Committed(_) | WriteOutcome::Held { .. })) => {
                    for change in committed.changes() {
                        if change.sku.sku == self.sku {
                            self.offer(&change.sku);
                        } else if let Some(handle) = self.ctx.actors.get(&change.sku.sku) {
                            // A batch's other lines, offered before the
                            // answer: a GET after it reads the result.
                            handle.offer(&change.sku, false);
                        }
                    }
                }
                // Only this SKU missing: a refusal (409, 412, 422), a busy
                // store, or a batch's other line missing says nothing about
                // this SKU, and stopping then would restart a sold-out SKU's
                // actor on every refused sale.
                Ok(WriteOutcome::Rejected(DomainError::NotFound(code))) if *code == self.sku => {
                    absent = true;
                }
                _ => {}
            }
            let _ = reply.send(outcome);
        }
        if absent || self.stop_pending {
            // A stop check waiting for this commit to end is queued again.
            self.stop_pending = false;
            self.stop_if_absent(myself);
        }
        self.start_commit(myself);
    }
}

/// Reports a commit call's outcomes to its actor exactly once: with them,
/// or, when the task is dropped first (a panic in the store, the runtime
/// shutting down), with `None`, so the actor never waits forever for a
/// call that ended.
struct CommitReport(Option<ActorRef<SkuMsg>>);

impl CommitReport {
    fn send(mut self, outcomes: Vec<Result<WriteOutcome, StoreError>>) {
        if let Some(actor) = self.0.take() {
            let _ = actor.cast(SkuMsg::Committed(Some(outcomes)));
        }
    }
}

impl Drop for CommitReport {
    fn drop(&mut self) {
        if let Some(actor) = self.0.take() {
            let _ = actor.cast(SkuMsg::Committed(None));
        }
    }
}

/// Pinning: a SKU with subscribers is not passivated, so its cached state
/// stays warm for the changes its watchers are shown. The subscriber sets
/// live in the instance's table ([`crate::subscribers`]), which outlives
/// the actor: a restarted or re-activated actor finds its set there and
/// pins itself again at its next idle check. Pins are capped
/// ([`Pinning::max`]): past the cap a subscribed SKU's actor passivates as
/// any other (its subscribers still get every change: delivery does not go
/// through the actor), and the refusal is counted.
/// Default of [`Pinning::max`] (`SKUWATCH_ACTOR_MAX_PINNED`).
pub const DEFAULT_MAX_PINNED: usize = 10_000;

#[derive(Clone)]
pub struct Pinning {
    /// `None`: nothing pins (an instance without sessions, unit tests).
    pub pins: Option<Arc<dyn Pins>>,
    /// Most actors pinned at once on this instance.
    pub max: usize,
    /// Actors pinned now (the [`crate::metrics::ACTORS_PINNED`] gauge).
    pub count: Arc<AtomicUsize>,
}

impl Default for Pinning {
    fn default() -> Self {
        Self {
            pins: None,
            max: DEFAULT_MAX_PINNED,
            count: Arc::default(),
        }
    }
}

impl std::fmt::Debug for Pinning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pinning")
            .field("max", &self.max)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

impl SkuActorState {
    /// Whether the actor stays although idle: its SKU has subscribers and it
    /// holds (or can take) a pin. Drops its pin once unsubscribed.
    fn stays_pinned(&mut self) -> bool {
        let pinning = &self.ctx.pinning;
        let subscribed = pinning
            .pins
            .as_ref()
            .is_some_and(|pins| pins.is_subscribed(&self.sku));
        if !subscribed {
            self.unpin();
            return false;
        }
        if !self.pinned {
            let max = pinning.max;
            self.pinned = pinning
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok();
            if self.pinned {
                crate::metrics::set_pinned(pinning.count.load(Ordering::Acquire));
            } else {
                ::metrics::counter!(crate::metrics::ACTOR_PINS_REFUSED).increment(1);
            }
        }
        self.pinned
    }

    fn unpin(&mut self) {
        if std::mem::take(&mut self.pinned) {
            let left = self.ctx.pinning.count.fetch_sub(1, Ordering::AcqRel) - 1;
            crate::metrics::set_pinned(left);
        }
    }
}

/// However the actor ends (passivated, stopped, failed), its pin is freed.
impl Drop for SkuActorState {
    fn drop(&mut self) {
        self.unpin();
    }
}

impl Actor for SkuActor {
    type Msg = SkuMsg;
    type State = SkuActorState;
    type Arguments = (SkuCode, SkuContext, Arc<ChangeSlot>);

    async fn pre_start(
        &self,
        myself: ActorRef<SkuMsg>,
        (sku, ctx, changes): (SkuCode, SkuContext, Arc<ChangeSlot>),
    ) -> Result<SkuActorState, ActorProcessingErr> {
        // The timer task ends by itself once the actor is gone.
        myself.send_interval(ctx.idle / 2, || SkuMsg::IdleCheck);
        Ok(SkuActorState {
            sku,
            ctx,
            changes,
            cached: None,
            last_used: Instant::now(),
            stop_pending: false,
            pending: VecDeque::new(),
            in_flight: None,
            pinned: false,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SkuMsg>,
        message: SkuMsg,
        state: &mut SkuActorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SkuMsg::Get(claim, reply) => {
                if !claim.start() {
                    return Ok(());
                }
                state.last_used = Instant::now();
                // The committed state; writes in flight are not waited for
                // (only the first load reads the database).
                let _ = reply.send(state.loaded().await.map(Option::<&Sku>::cloned));
                state.stop_if_absent(&myself);
            }
            SkuMsg::Write(job, claim, reply) => {
                let faults = &state.ctx.faults;
                if faults
                    .fail_before_start
                    .as_ref()
                    .is_some_and(|f| f.fires(job.meta().reason.as_deref()))
                {
                    return Err("fault injected before the write started".into());
                }
                state.last_used = Instant::now();
                state.pending.push_back(PendingWrite {
                    job: *job,
                    claim,
                    reply,
                });
                state.start_commit(&myself);
            }
            SkuMsg::Committed(outcomes) => state.committed(&myself, outcomes),
            SkuMsg::Changed => {
                if let Some(offered) = state.changes.take() {
                    if offered.check_gap {
                        state.apply(&offered.sku).await;
                    } else {
                        state.offer(&offered.sku);
                    }
                }
            }
            SkuMsg::IdleCheck => {
                // Checked at every tick, busy or not, so a busy SKU whose
                // subscribers left gives its pin back.
                let pinned = state.stays_pinned();
                if !pinned && !state.busy() && state.last_used.elapsed() >= state.ctx.idle {
                    state.leave(&myself, "passivated");
                }
            }
            SkuMsg::StopIfAbsent => {
                // With a commit in flight the check waits for its outcomes
                // (`stop_pending` stays set; `committed` queues it again).
                if state.in_flight.is_none() {
                    state.stop_pending = false;
                    if !matches!(state.cached, Some(Some(_))) {
                        state.leave(&myself, "absent");
                    }
                }
            }
            SkuMsg::Fail => return Err("fault injected".into()),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! The pipeline against the in-memory store with its commit calls held
    //! in flight, so a test decides when a call in flight ends.

    use crate::domain::{Command, WriteMeta};
    use crate::registry::{ActorError, Registry, RegistryConfig};
    use crate::store::WriteRequest;
    use crate::testing::{code_of, FakeBus, MemoryStore};

    use super::*;

    fn code() -> SkuCode {
        code_of("HOT")
    }

    fn adjust(delta: i64) -> WriteRequest {
        WriteRequest {
            command: Command::Adjust { delta },
            meta: WriteMeta::default(),
            idempotency: None,
        }
    }

    fn stock(store: &MemoryStore) -> i64 {
        store.committed(&code()).unwrap().stock
    }

    /// The jobs of each commit call after the seeding one.
    fn calls(store: &MemoryStore) -> Vec<usize> {
        store.commit_sizes()[1..].to_vec()
    }

    /// A store holding SKU `HOT` with `stock`, whose commit calls wait
    /// until released, and a registry with its actor active.
    async fn rig(stock: i64, config: RegistryConfig) -> (Arc<MemoryStore>, Registry) {
        let store = MemoryStore::new();
        store.seed("HOT", stock).await;
        store.hold_writes();
        let registry = Registry::start(store.clone(), FakeBus::new(), config)
            .await
            .unwrap();
        // Active before the first write, so writes reach the actor in the
        // order they are sent (no activation in between).
        assert!(registry.get(&code()).await.unwrap().is_some());
        (store, registry)
    }

    /// Waits until a commit call (after the seeding one) is in the store,
    /// held there: the first write is in flight.
    async fn until_committing(store: &MemoryStore) {
        while store.commit_sizes().len() < 2 {
            tokio::task::yield_now().await;
        }
    }

    /// Waits until the SKU holds `n` writes (each is sent right after).
    async fn until_held(registry: &Registry, n: usize) {
        while registry.held(&code()) < n {
            tokio::task::yield_now().await;
        }
    }

    fn spawn_write(registry: &Registry, delta: i64) -> tokio::task::JoinHandle<i64> {
        let registry = registry.clone();
        tokio::spawn(async move {
            match registry.write(&code(), adjust(delta)).await {
                Ok(WriteOutcome::Committed(changes)) => changes.last().unwrap().sku.stock,
                other => panic!("{other:?}"),
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_arriving_during_a_commit_share_the_next_call_and_reads_do_not_wait() {
        let (store, registry) = rig(100, RegistryConfig::default()).await;
        let first = spawn_write(&registry, -1);
        until_committing(&store).await;
        let more: Vec<_> = (0..5).map(|_| spawn_write(&registry, -2)).collect();
        until_held(&registry, 6).await;

        // The first call is still in flight: a read answers at once, with
        // the committed state (nothing committed yet).
        let read = tokio::time::timeout(Duration::from_secs(5), registry.get(&code()))
            .await
            .expect("a read waited behind the commit in flight")
            .unwrap()
            .unwrap();
        assert_eq!(read.stock, 100);

        store.release_writes();
        assert_eq!(first.await.unwrap(), 99);
        let mut answers: Vec<i64> = Vec::new();
        for write in more {
            answers.push(write.await.unwrap());
        }
        answers.sort_unstable();
        assert_eq!(answers, vec![89, 91, 93, 95, 97], "each its own state");
        assert_eq!(stock(&store), 89);
        let calls = calls(&store);
        assert_eq!(calls[0], 1);
        assert!(calls[1] > 1, "one write per call: {calls:?}");
        assert_eq!(calls.iter().sum::<usize>(), 6);
        assert_eq!(registry.commit_stats(), (calls.len() as u64, 6));
        // The cache took the last committed state.
        assert_eq!(registry.get(&code()).await.unwrap().unwrap().stock, 89);
        assert_eq!(registry.held(&code()), 0, "every slot released");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_past_the_mailbox_bound_is_refused_at_once_and_nothing_runs() {
        let config = RegistryConfig {
            mailbox: 2,
            ..RegistryConfig::default()
        };
        let (store, registry) = rig(10, config).await;
        let held: Vec<_> = (0..2).map(|_| spawn_write(&registry, -1)).collect();
        until_held(&registry, 2).await;
        let refused = registry.write(&code(), adjust(-5)).await;
        assert!(
            matches!(refused, Err(ActorError::Overloaded)),
            "{refused:?}"
        );
        store.release_writes();
        for write in held {
            write.await.unwrap();
        }
        assert_eq!(stock(&store), 8, "the refused write never ran");
        // Slots are released with the answers.
        assert!(matches!(
            registry.write(&code(), adjust(-1)).await,
            Ok(WriteOutcome::Committed(_))
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pending_write_withdrawn_by_its_caller_never_runs() {
        let config = RegistryConfig {
            call_timeout: Duration::from_millis(200),
            ..RegistryConfig::default()
        };
        let (store, registry) = rig(10, config).await;
        // Started (in the blocked call): awaited past the timeout.
        let started = spawn_write(&registry, -1);
        until_committing(&store).await;
        // Pending behind it: withdrawn when the wait elapses.
        let withdrawn = registry.write(&code(), adjust(-3)).await;
        assert!(
            matches!(withdrawn, Err(ActorError::Timeout)),
            "{withdrawn:?}"
        );
        store.release_writes();
        assert_eq!(started.await.unwrap(), 9);
        // The next call carries only what was not withdrawn.
        assert!(matches!(
            registry.write(&code(), adjust(-1)).await,
            Ok(WriteOutcome::Committed(_))
        ));
        assert_eq!(stock(&store), 8);
        assert_eq!(calls(&store), vec![1, 1]);
    }
}
