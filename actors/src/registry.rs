//! Finds the actor of a SKU, activating it on first use, and supervises all
//! SKU actors of an instance.
//!
//! Every write goes through a SKU actor: a single write through its SKU's,
//! an atomic batch through the actor of its lowest SKU
//! ([`Registry::write_batch`]). Each SKU holds at most
//! [`RegistryConfig::mailbox`] writes not yet answered; one more is refused
//! at once ([`ActorError::Overloaded`]), before it is queued anywhere.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use crate::bus::EventBus;
use crate::domain::{Committed, Sku, SkuCode};
use crate::domain::{HoldAction, WriteMeta};
use crate::handle::{ChangeSlot, SkuHandle};
use crate::messages::{Claim, InjectedFaults, SkuMsg, SupervisorMsg, WriteRequest};
use crate::metrics;
use crate::sku_actor::{CommitStats, Pinning, SkuActor, SkuContext};
use crate::store::Idempotency;
use crate::store::{AdjustmentLine, SkuStore, StoreError, WriteJob, WriteOutcome};

/// Why the registry could not serve a request. Each variant says whether
/// the request can have reached the store (API.md v1 additions).
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request waited `RegistryConfig::call_timeout` in the SKU actor's
    /// mailbox and was withdrawn: nothing was done (503 `overloaded`).
    #[error("the SKU actor did not take the request in time; nothing was done")]
    Timeout,
    /// The SKU already held [`RegistryConfig::mailbox`] writes not yet
    /// answered: refused at once, nothing was done (503 `overloaded`).
    #[error("the SKU has too many writes waiting; nothing was done")]
    Overloaded,
    /// No actor could take the request: nothing was done.
    #[error("the SKU actor is unavailable: {0}")]
    Unavailable(String),
    /// The write was started and then its answer was lost (the actor
    /// stopped, or the batch task failed): it may or may not have
    /// committed (503 `outcome_unknown`). Never retried here.
    #[error("the outcome of the write is unknown: {0}")]
    OutcomeUnknown(String),
}

/// Tuning of the actor system.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// An actor unused this long is passivated.
    pub idle: Duration,
    /// How long a request may wait in a SKU actor's mailbox (and for the
    /// supervisor to activate the actor). Past it a request not yet started
    /// is withdrawn (nothing done); a started one is awaited, as the store
    /// bounds its own waits (pool acquire, lock timeout).
    pub call_timeout: Duration,
    /// Restarts allowed per SKU within `restart_window`; past that a failing
    /// SKU is left inactive until its next use.
    pub max_restarts: u32,
    pub restart_window: Duration,
    /// Most writes one SKU may hold at once: sent to its actor, and their
    /// callers still waiting (queued in the mailbox, pending, or
    /// committing). ractor's mailboxes are unbounded; this bound stands in
    /// front of them (`SKUWATCH_ACTOR_MAILBOX`). A write whose caller gave
    /// up while it commits stops counting; its commit call (at most 256
    /// writes) still ends in its own time.
    pub mailbox: usize,
    /// Subscribed SKUs pin their actors, up to a cap (see [`Pinning`]).
    pub pinning: Pinning,
    /// Test-only fault injection; never read from the environment.
    #[doc(hidden)]
    pub faults: InjectedFaults,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        Self {
            idle: Duration::from_secs(300),
            call_timeout: Duration::from_secs(20),
            max_restarts: 5,
            restart_window: Duration::from_secs(60),
            mailbox: DEFAULT_MAILBOX,
            pinning: Pinning::default(),
            faults: InjectedFaults::default(),
        }
    }
}

/// Default of [`RegistryConfig::mailbox`] (`SKUWATCH_ACTOR_MAILBOX`).
pub const DEFAULT_MAILBOX: usize = 1024;

/// The `dashmap` of active SKU actors plus their supervisor.
#[derive(Clone)]
pub struct Registry {
    actors: Arc<DashMap<SkuCode, SkuHandle>>,
    /// Writes each SKU holds (sent, not yet answered); a SKU holding none
    /// has no entry. Counted per SKU, not per actor, so a restart does not
    /// reset it while the old actor's callers still wait.
    held: Arc<DashMap<SkuCode, usize>>,
    supervisor: ActorRef<SupervisorMsg>,
    ctx: SkuContext,
    config: RegistryConfig,
}

/// How often a request is sent when its actor stopped (passivation, a
/// not-found stop, a restart) before starting it; it was not run then.
const SEND_ATTEMPTS: usize = 4;

/// Withdraws a queued request when the caller stops waiting for it (its
/// future is dropped, e.g. by the request timeout), so a write the client
/// was told nothing about does not run later unless it had started.
struct WithdrawOnDrop(Claim);

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        self.0.withdraw();
    }
}

/// One write a SKU holds, from before it is sent until its caller has the
/// answer or stops waiting.
struct WriteSlot {
    held: Arc<DashMap<SkuCode, usize>>,
    sku: SkuCode,
}

impl Drop for WriteSlot {
    fn drop(&mut self) {
        self.held.remove_if_mut(&self.sku, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

impl Registry {
    /// Starts the supervisor. A SKU actor activates from the database.
    pub async fn start(
        store: Arc<dyn SkuStore>,
        bus: Arc<dyn EventBus>,
        config: RegistryConfig,
    ) -> Result<Self, ActorError> {
        let actors = Arc::new(DashMap::new());
        let ctx = SkuContext {
            store,
            bus,
            actors: actors.clone(),
            idle: config.idle,
            stats: Arc::new(CommitStats::default()),
            pinning: config.pinning.clone(),
            faults: config.faults.clone(),
        };
        let (supervisor, _) = Actor::spawn(None, SkuSupervisor, (ctx.clone(), config.clone()))
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))?;
        Ok(Self {
            actors,
            held: Arc::new(DashMap::new()),
            supervisor,
            ctx,
            config,
        })
    }

    /// Number of active SKU actors.
    pub fn active(&self) -> usize {
        self.actors.len()
    }

    /// Whether the SKU has an active actor right now.
    pub fn is_active(&self, sku: &SkuCode) -> bool {
        self.actors.contains_key(sku)
    }

    /// The SKU actors' commit calls and the writes they carried so far
    /// (`(calls, writes)`): writes per commit, for tests and benchmarks.
    pub fn commit_stats(&self) -> (u64, u64) {
        self.ctx.stats.snapshot()
    }

    /// Writes the SKU holds now: sent to its actor and not yet answered.
    pub fn held(&self, sku: &SkuCode) -> usize {
        self.held.get(sku).map_or(0, |n| *n)
    }

    /// Takes one of the SKU's [`RegistryConfig::mailbox`] write slots, or
    /// refuses at once when all are held. The check and the count are one
    /// step under the map's shard lock, so concurrent writers cannot pass
    /// the bound together.
    fn take_write_slot(&self, sku: &SkuCode) -> Result<WriteSlot, ActorError> {
        let mut held = self.held.entry(sku.clone()).or_insert(0);
        if *held >= self.config.mailbox.max(1) {
            drop(held);
            ::metrics::counter!(metrics::ACTOR_MAILBOX_REFUSED).increment(1);
            return Err(ActorError::Overloaded);
        }
        *held += 1;
        Ok(WriteSlot {
            held: self.held.clone(),
            sku: sku.clone(),
        })
    }

    async fn actor(&self, sku: &SkuCode) -> Result<ActorRef<SkuMsg>, ActorError> {
        if let Some(handle) = self.actors.get(sku) {
            return Ok(handle.actor.clone());
        }
        let reply = self
            .supervisor
            .call(
                |port| SupervisorMsg::Activate(sku.clone(), port),
                Some(self.config.call_timeout),
            )
            .await
            .map_err(|e| ActorError::Unavailable(e.to_string()))?;
        match reply {
            CallResult::Success(Ok(actor)) => Ok(actor),
            CallResult::Success(Err(e)) => Err(ActorError::Unavailable(e.to_string())),
            CallResult::Timeout => Err(ActorError::Timeout),
            CallResult::SenderError => Err(ActorError::Unavailable("supervisor stopped".into())),
        }
    }

    /// Sends a request to the SKU's actor. A request the actor never
    /// started (it stopped first: passivation, not-found stop, failure) goes
    /// to a fresh actor; one it started and did not answer is never sent
    /// again: a write may have committed ([`ActorError::OutcomeUnknown`]).
    /// Reads are always safe to send again.
    async fn ask<T: Send + 'static>(
        &self,
        sku: &SkuCode,
        write: bool,
        build: impl Fn(Claim, ractor::RpcReplyPort<Result<T, StoreError>>) -> SkuMsg,
    ) -> Result<T, ActorError> {
        let mut last = String::new();
        for _ in 0..SEND_ATTEMPTS {
            let actor = self.actor(sku).await?;
            let claim = Claim::default();
            let _withdraw = WithdrawOnDrop(claim.clone());
            let call = actor.call(|port| build(claim.clone(), port), None);
            tokio::pin!(call);
            let answer = tokio::select! {
                answer = &mut call => answer,
                _ = tokio::time::sleep(self.config.call_timeout) => {
                    if claim.withdraw() {
                        return Err(ActorError::Timeout);
                    }
                    // Started: the store bounds the rest of the wait.
                    call.await
                }
            };
            match answer {
                Ok(CallResult::Success(result)) => return result.map_err(ActorError::from),
                // No timeout was given to the call itself.
                Ok(CallResult::Timeout) => return Err(ActorError::Timeout),
                Ok(CallResult::SenderError) => last = "actor stopped".into(),
                Err(e) => last = e.to_string(),
            }
            if write && !claim.withdraw() {
                tracing::warn!(%sku, "SKU actor stopped while running a write; its outcome is unknown");
                return Err(ActorError::OutcomeUnknown(format!(
                    "the SKU actor stopped while running the write ({last})"
                )));
            }
            // The stopped actor may still be registered for a moment.
            let id = actor.get_id();
            self.actors.remove_if(sku, |_, h| h.actor.get_id() == id);
        }
        Err(ActorError::Unavailable(last))
    }

    /// The SKU as its actor caches it (API.md: served from the actor),
    /// answered at once, never behind the SKU's writes in flight. An
    /// unknown code is answered `None` and keeps no actor.
    #[tracing::instrument(level = "debug", skip_all, fields(sku = %sku))]
    pub async fn get(&self, sku: &SkuCode) -> Result<Option<Sku>, ActorError> {
        self.ask(sku, false, SkuMsg::Get).await
    }

    /// Runs a single-SKU write through the SKU's actor, in its next commit
    /// call.
    #[tracing::instrument(level = "debug", skip_all, fields(sku = %sku))]
    pub async fn write(
        &self,
        sku: &SkuCode,
        request: WriteRequest,
    ) -> Result<WriteOutcome, ActorError> {
        let _slot = self.take_write_slot(sku)?;
        let job = WriteJob::Single {
            sku: sku.clone(),
            request,
        };
        self.ask(sku, true, |claim, port| {
            SkuMsg::Write(Box::new(job.clone()), claim, port)
        })
        .await
    }

    /// Runs an atomic multi-SKU adjustment through the actor of its lowest
    /// SKU code, which commits it as one job of its pipeline, in order
    /// with that SKU's single writes, then offers the result to the actors
    /// of the other lines before answering (so a GET after the answer reads
    /// it, on every line).
    ///
    /// Why one coordinating actor and not a hold on every line's actor:
    /// the order of one SKU's changes is the order their transactions lock
    /// its row, whichever actor sent them, and every actor's cache only
    /// takes a newer version (reloading on a version gap). A batch and a
    /// single write on one of its other lines that race are not ordered
    /// by anyone but the database either way, and each is acknowledged
    /// only after its commit, so an acknowledged write always precedes the
    /// writes sent after it. Holding several pipelines instead would make
    /// one order's lines wait for every other SKU's commits (and risk
    /// waits in a cycle between two batches); routing through one actor
    /// costs one mailbox and keeps the lowest SKU's writes in order with
    /// the batch. The batch counts against that SKU's mailbox bound.
    #[tracing::instrument(level = "debug", skip_all, fields(sku = tracing::field::Empty, lines = lines.len()))]
    pub async fn write_batch(
        &self,
        lines: Vec<AdjustmentLine>,
        meta: WriteMeta,
        idempotency: Option<Idempotency>,
    ) -> Result<WriteOutcome, ActorError> {
        let Some(lead) = lines.iter().map(|l| &l.sku).min().cloned() else {
            // Nothing to adjust (the HTTP layer refuses empty batches).
            return Ok(WriteOutcome::Committed(Vec::new()));
        };
        tracing::Span::current().record("sku", tracing::field::display(&lead));
        let _slot = self.take_write_slot(&lead)?;
        let job = WriteJob::Batch {
            lines,
            meta,
            idempotency,
        };
        self.ask(&lead, true, |claim, port| {
            SkuMsg::Write(Box::new(job.clone()), claim, port)
        })
        .await
    }

    /// Runs a hold job (issue 17) through the actor of `lead`, the lowest
    /// SKU code among the hold's lines, like an atomic batch
    /// ([`Registry::write_batch`] says why one coordinating actor), so a
    /// hold's creation, extension, release and commit all queue in one
    /// pipeline, in the order sent. The sweeper's expiries go to the store
    /// directly (`src/holds.rs` says why).
    #[tracing::instrument(level = "debug", skip_all, fields(sku = %lead))]
    pub async fn write_hold(
        &self,
        lead: &SkuCode,
        action: HoldAction,
        meta: WriteMeta,
        idempotency: Option<Idempotency>,
    ) -> Result<WriteOutcome, ActorError> {
        let _slot = self.take_write_slot(lead)?;
        let job = WriteJob::Hold {
            action,
            meta,
            idempotency,
        };
        self.ask(lead, true, |claim, port| {
            SkuMsg::Write(Box::new(job.clone()), claim, port)
        })
        .await
    }

    /// Offers a change from the ordered feed to the SKU's actor if it is
    /// active (conflated with any still waiting for it: [`crate::handle`]);
    /// an inactive SKU reads the database when it is next activated.
    pub fn apply(&self, change: &Arc<Committed>) {
        if let Some(handle) = self.actors.get(&change.sku.sku) {
            handle.offer(&change.sku, true);
        }
    }

    /// Offers states this instance read from the database, before it shows
    /// them, to the SKUs' active actors ([`SkuHandle::offer`]): a `GET` served
    /// from an actor afterwards is never older than a snapshot, list page or
    /// replay the same instance already answered. Inactive SKUs read the
    /// database on activation anyway.
    pub fn offer<'a>(&self, states: impl IntoIterator<Item = &'a Sku>) {
        for state in states {
            if let Some(handle) = self.actors.get(&state.sku) {
                handle.offer(state, false);
            }
        }
    }

    /// Fault injection for supervision tests: makes the SKU's actor fail.
    #[doc(hidden)]
    pub async fn fail_actor(&self, sku: &SkuCode) -> Result<(), ActorError> {
        let actor = self.actor(sku).await?;
        actor
            .cast(SkuMsg::Fail)
            .map_err(|e| ActorError::Unavailable(e.to_string()))
    }

    /// Stops the supervisor and with it every SKU actor.
    pub fn stop(&self) {
        self.supervisor.stop(None);
    }
}

/// Supervises the SKU actors: spawns them, and restarts a failed one (which
/// reloads from the database on its first message) within a bounded budget.
struct SkuSupervisor;

struct SupervisorState {
    ctx: SkuContext,
    config: RegistryConfig,
    /// Which SKU each child serves, to know what to restart.
    children: HashMap<ActorId, SkuCode>,
    /// Recent restarts per SKU: count and start of the window.
    restarts: HashMap<SkuCode, (u32, Instant)>,
}

impl SupervisorState {
    /// Starts the SKU's actor unless one is active. `restart` only picks
    /// the counter: activation (first use) or restart (after a failure).
    async fn spawn(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        sku: SkuCode,
        restart: bool,
    ) -> Result<ActorRef<SkuMsg>, ractor::SpawnErr> {
        if let Some(handle) = self.ctx.actors.get(&sku) {
            return Ok(handle.actor.clone());
        }
        let changes = Arc::new(ChangeSlot::default());
        let (actor, _) = Actor::spawn_linked(
            None,
            SkuActor,
            (sku.clone(), self.ctx.clone(), changes.clone()),
            myself.get_cell(),
        )
        .await?;
        self.children.insert(actor.get_id(), sku.clone());
        self.ctx.actors.insert(
            sku,
            SkuHandle {
                actor: actor.clone(),
                changes,
            },
        );
        let counter = if restart {
            metrics::ACTOR_RESTARTS
        } else {
            metrics::ACTOR_ACTIVATIONS
        };
        ::metrics::counter!(counter).increment(1);
        metrics::set_active(self.ctx.actors.len());
        Ok(actor)
    }
}

impl Actor for SkuSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = (SkuContext, RegistryConfig);

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        (ctx, config): (SkuContext, RegistryConfig),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            ctx,
            config,
            children: HashMap::new(),
            restarts: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Activate(sku, reply) => {
                let _ = reply.send(state.spawn(&myself, sku, false).await);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error)),
            _ => return Ok(()),
        };
        let id = cell.get_id();
        let Some(sku) = state.children.remove(&id) else {
            return Ok(());
        };
        state
            .ctx
            .actors
            .remove_if(&sku, |_, h| h.actor.get_id() == id);
        metrics::set_active(state.ctx.actors.len());
        let Some(error) = failure else {
            return Ok(());
        };
        let now = Instant::now();
        let window = state.restarts.entry(sku.clone()).or_insert((0, now));
        if now.duration_since(window.1) > state.config.restart_window {
            *window = (0, now);
        }
        window.0 += 1;
        if window.0 > state.config.max_restarts {
            tracing::error!(%sku, %error, "SKU actor failed too often; left inactive until next use");
            return Ok(());
        }
        tracing::warn!(%sku, %error, "SKU actor failed; restarting");
        if let Err(e) = state.spawn(&myself, sku.clone(), true).await {
            tracing::error!(%sku, error = %e, "could not restart SKU actor");
        }
        Ok(())
    }
}
