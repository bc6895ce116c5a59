//! The hold sweeper (issue 17): releases holds past their expiry, and
//! prunes what would otherwise grow for ever (idempotency keys past their
//! 24 h window, ended holds, resolved alerts), each after its setting. It
//! also runs the forecast's re-evaluation (`src/forecast.rs`, issue 18)
//! every `SKUWATCH_FORECAST_SWEEP_SECS`.
//!
//! The database holds the truth: an expiry is a [`HoldAction::Expire`]
//! job, decided in the write transaction against the hold row locked
//! there and the database's clock, so a hold expires exactly once however
//! many instances sweep, and a commit racing the expiry finds it either
//! active (the commit wins) or ended (409 `hold_not_active`, `expired`).
//! Every instance sweeps, so holds expire while the instance that created
//! them is down.
//!
//! Why the sweeper commits through the store and not through SKU actors
//! (ARCHITECTURE.md says actor timers only make expiry prompt): a round
//! expires many holds of many SKUs in one transaction, and a passivated
//! SKU does not need its actor started to lose a hold. The transaction is
//! the one every write runs (`src/store/sql/write.rs`, the same planner),
//! taken outside the group-commit queue so that it never waits: it locks
//! as a group commit does (`write::Locking::Probe`) and leaves a hold
//! writing a row another transaction keeps locked for a later round: an
//! operator's `BEGIN; UPDATE skus ...` left
//! open in psql delays only the holds of that SKU, never the others nor,
//! through the rows a waiting sweep would hold, the API's writes. The
//! changes reach the actors' caches and the sessions through the bus, like
//! any other instance's writes. A poll every `SKUWATCH_HOLD_SWEEP_MS` (200 ms)
//! on an index of the active holds' expiry makes expiry prompt without a
//! timer per actor.

use std::sync::Arc;
use std::time::Duration;

use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::Committed;
use skuwatch_actors::store::{Prunable, SkuStore, WriteOutcome};
use tokio_util::sync::CancellationToken;

use crate::http::AppState;
use crate::metrics;

/// Holds expired per round at most; a full round is followed by another
/// at once.
const ROUND: i64 = 256;

/// How often the active-holds gauge is read and old rows are pruned.
const GAUGE_EVERY: Duration = Duration::from_secs(5);
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Starts the sweeper on the state's task tracker.
pub fn spawn(state: &AppState, shutdown: CancellationToken) {
    let store = state.store.clone();
    let bus = state.bus.clone();
    let settings = state.settings.clone();
    state.tasks.spawn(async move {
        let every = Duration::from_millis(settings.hold_sweep_ms.max(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_gauge: Option<tokio::time::Instant> = None;
        let mut last_prune: Option<tokio::time::Instant> = None;
        let reforecast_every = Duration::from_secs(settings.forecast_sweep_secs.max(1));
        let mut last_reforecast: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match sweep(store.as_ref(), bus.as_ref()).await {
                    // A full round that got somewhere: more may be due.
                    Ok((due, expired))
                        if due == ROUND as usize && expired > 0 && !shutdown.is_cancelled() =>
                    {
                        continue
                    }
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "hold sweep failed; retried at the next tick");
                        break;
                    }
                }
            }
            if last_gauge.is_none_or(|at| at.elapsed() >= GAUGE_EVERY) {
                last_gauge = Some(tokio::time::Instant::now());
                match store.count_active_holds().await {
                    Ok(n) => ::metrics::gauge!(metrics::HOLDS_ACTIVE).set(n as f64),
                    Err(error) => tracing::warn!(%error, "active-holds gauge not refreshed"),
                }
            }
            if last_reforecast.is_none_or(|at| at.elapsed() >= reforecast_every) {
                last_reforecast = Some(tokio::time::Instant::now());
                if let Err(error) = crate::forecast::reforecast(store.as_ref(), bus.as_ref()).await
                {
                    tracing::warn!(%error, "forecast re-evaluation failed; retried at the next");
                }
            }
            if last_prune.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
                last_prune = Some(tokio::time::Instant::now());
                prune(store.as_ref(), &settings).await;
            }
        }
    });
}

/// One round: expires up to [`ROUND`] due holds in one transaction
/// ([`SkuStore::expire_holds`]: holds writing a row another transaction
/// keeps locked are left for a later round) and publishes their changes.
/// Returns how many holds were due and how many this round expired.
pub async fn sweep(
    store: &dyn SkuStore,
    bus: &dyn EventBus,
) -> Result<(usize, usize), skuwatch_actors::store::StoreError> {
    let due = store.due_holds(ROUND).await?;
    if due.is_empty() {
        return Ok((0, 0));
    }
    let count = due.len();
    let mut changes: Vec<Arc<Committed>> = Vec::new();
    let mut expired = 0;
    for outcome in store.expire_holds(due).await {
        match outcome {
            Ok(WriteOutcome::Held {
                hold,
                changes: done,
            }) => {
                if let Some(ended) = hold.ended_at {
                    let lag = (ended.0 - hold.expires_at.0).max(0) as f64 / 1e6;
                    ::metrics::histogram!(metrics::HOLD_EXPIRY_LAG).record(lag);
                }
                expired += 1;
                changes.extend(done.into_iter().map(Arc::new));
            }
            // Ended meanwhile (a commit or release won, or another
            // instance's sweeper): nothing to do.
            Ok(_) => {}
            Err(error) => return Err(error),
        }
    }
    if !changes.is_empty() {
        bus.publish(&changes);
    }
    Ok((count, expired))
}

/// Deletes what is past its retention; a failure is logged and retried
/// at the next round.
async fn prune(store: &dyn SkuStore, settings: &crate::Settings) {
    match store.purge_idempotency_keys().await {
        Ok(purged) => ::metrics::counter!(metrics::IDEMPOTENCY_KEYS_PURGED).increment(purged),
        Err(error) => tracing::warn!(%error, "expired idempotency keys not purged"),
    }
    let hour = 3600 * 1_000_000i64;
    let retention = [
        (
            Prunable::EndedHolds,
            (settings.hold_retention_hours as i64).saturating_mul(hour),
        ),
        (
            Prunable::ResolvedAlerts,
            (settings.alert_retention_days as i64).saturating_mul(24 * hour),
        ),
        (
            Prunable::EndedDeliveries,
            (settings.webhook_retention_days as i64).saturating_mul(24 * hour),
        ),
    ];
    for (what, older_than_us) in retention {
        match store.prune(what, older_than_us).await {
            Ok(n) => {
                ::metrics::counter!(metrics::UPKEEP_PRUNED, "what" => what.as_str()).increment(n)
            }
            Err(error) => tracing::warn!(%error, what = what.as_str(), "not pruned"),
        }
    }
}
