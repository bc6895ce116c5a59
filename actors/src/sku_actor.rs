//! The SKU actor: the cached state of one SKU and the serial writer for it
//! on this instance.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use crate::bus::EventBus;
use crate::domain::{DomainError, Sku, SkuCode};
use crate::messages::{InjectedFaults, SkuMsg};
use crate::store::{SkuStore, StoreError, WriteOutcome};
use crate::subscribers::Pins;

/// Everything a SKU actor needs; shared by all actors of an instance.
#[derive(Clone)]
pub struct SkuContext {
    pub store: Arc<dyn SkuStore>,
    pub bus: Arc<dyn EventBus>,
    /// The registry's map, so a passivating actor can take itself out.
    pub actors: Arc<DashMap<SkuCode, ActorRef<SkuMsg>>>,
    /// Unused this long, the actor stops (passivation).
    pub idle: Duration,
    /// Which SKUs are subscribed, and how many actors they may pin.
    pub pinning: Pinning,
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

/// Pinning: a SKU with subscribers is not passivated, so its cached state
/// stays warm for the changes its watchers are shown. The subscriber sets
/// live in the supervisor's table ([`crate::subscribers`]), which outlives
/// the actor: a restarted or re-activated actor finds its set there and
/// pins itself again at its next idle check. Pins are capped
/// ([`Pinning::max`]): past the cap a subscribed SKU's actor passivates as
/// any other (its subscribers still get every change: delivery does not go
/// through the actor), and the refusal is counted.
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
            max: 10_000,
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
                if state.last_used.elapsed() >= state.ctx.idle && !state.stays_pinned() {
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
