//! The SKU actor: the cached state of one SKU and the serial writer for it
//! on this instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::bus::EventBus;
use crate::domain::{DomainError, Sku, SkuCode};
use crate::messages::{InjectedFaults, SkuMsg};
use crate::store::{SkuStore, StoreError, WriteOutcome};

/// Everything a SKU actor needs; shared by all actors of an instance.
#[derive(Clone)]
pub struct SkuContext {
    pub store: Arc<dyn SkuStore>,
    pub bus: Arc<dyn EventBus>,
    /// The registry's map, so a passivating actor can take itself out.
    pub actors: Arc<DashMap<SkuCode, ActorRef<SkuMsg>>>,
    /// Unused this long, the actor stops (passivation).
    pub idle: Duration,
    /// Test-only faults (none in production).
    #[doc(hidden)]
    pub faults: InjectedFaults,
}

pub struct SkuActor;

pub struct SkuActorState {
    sku: SkuCode,
    ctx: SkuContext,
    /// `None` until the first message: the state is read from the database
    /// only once the actor is registered, so no change committed before that
    /// read can be missed (later ones arrive as `Apply` or via writes).
    cached: Option<Option<Sku>>,
    last_used: Instant,
    /// A [`SkuMsg::StopIfAbsent`] is queued.
    stop_pending: bool,
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
    /// in its mailbox are dropped unstarted; the registry sends them to a
    /// fresh actor.
    fn leave(&self, myself: &ActorRef<SkuMsg>, why: &str) {
        let id = myself.get_id();
        self.ctx
            .actors
            .remove_if(&self.sku, |_, a| a.get_id() == id);
        ::metrics::counter!(crate::metrics::ACTOR_PASSIVATIONS).increment(1);
        myself.stop(Some(why.into()));
    }
}

impl Actor for SkuActor {
    type Msg = SkuMsg;
    type State = SkuActorState;
    type Arguments = (SkuCode, SkuContext);

    async fn pre_start(
        &self,
        myself: ActorRef<SkuMsg>,
        (sku, ctx): (SkuCode, SkuContext),
    ) -> Result<SkuActorState, ActorProcessingErr> {
        // The timer task ends by itself once the actor is gone.
        myself.send_interval(ctx.idle / 2, || SkuMsg::IdleCheck);
        Ok(SkuActorState {
            sku,
            ctx,
            cached: None,
            last_used: Instant::now(),
            stop_pending: false,
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
                let _ = reply.send(state.loaded().await.map(Option::<&Sku>::cloned));
                state.stop_if_absent(&myself);
            }
            SkuMsg::Write(request, claim, reply) => {
                let faults = &state.ctx.faults;
                let reason = request.meta.reason.as_deref();
                if faults
                    .fail_before_start
                    .as_ref()
                    .is_some_and(|f| f.fires(reason))
                {
                    return Err("fault injected before the write started".into());
                }
                // Past this point the write may reach the store: the
                // registry never sends it again (see `Claim`).
                if !claim.start() {
                    return Ok(());
                }
                state.last_used = Instant::now();
                let outcome = state
                    .ctx
                    .store
                    .write(
                        &state.sku,
                        &request.command,
                        &request.meta,
                        request.idempotency.as_ref(),
                    )
                    .await;
                if let Ok(WriteOutcome::Committed(changes)) = &outcome {
                    if faults
                        .panic_after_commit
                        .as_ref()
                        .is_some_and(|f| f.fires(reason))
                    {
                        panic!("fault injected after commit");
                    }
                    let changes: Vec<_> = changes.iter().cloned().map(Arc::new).collect();
                    if let Some(last) = changes.last() {
                        state.offer(&last.sku);
                    }
                    state.ctx.bus.publish(&changes);
                } else if matches!(
                    outcome,
                    Ok(WriteOutcome::Rejected(DomainError::NotFound(_)))
                ) {
                    // Only a SKU that does not exist: a refusal (409, 412,
                    // 422) or a busy store says nothing about absence, and
                    // stopping then would restart a sold-out SKU's actor on
                    // every refused sale.
                    state.stop_if_absent(&myself);
                }
                let _ = reply.send(outcome);
            }
            SkuMsg::Apply(change) => state.apply(&change.sku).await,
            SkuMsg::Offer(sku) => state.offer(&sku),
            SkuMsg::IdleCheck => {
                if state.last_used.elapsed() >= state.ctx.idle {
                    state.leave(&myself, "passivated");
                }
            }
            SkuMsg::StopIfAbsent => {
                state.stop_pending = false;
                if !matches!(state.cached, Some(Some(_))) {
                    state.leave(&myself, "absent");
                }
            }
            SkuMsg::Fail => return Err("fault injected".into()),
        }
        Ok(())
    }
}
