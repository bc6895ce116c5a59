//! The forecast's re-evaluation (issue 18): a SKU's forecast is computed
//! as of its last event, so a SKU that stops selling would keep the rate,
//! the cover and the `stockout_forecast` alert of its last sale for ever.
//! Every `SKUWATCH_FORECAST_SWEEP_SECS` the sweeper (`src/holds.rs`) asks
//! the store which SKUs with an open forecast alert would see it end if
//! their forecast were read as of now, and writes a
//! [`Command::Reforecast`] for each: a `meta` event with reason
//! `forecast` and the forecast as of now (the rate decayed), which
//! resolves the alert in the same transaction, through the one write path
//! (the planner re-decides under the row lock and writes nothing when a
//! sale came in meanwhile).
//!
//! Time passing with no sales only lowers a rate, so it can only end
//! forecast alerts, never raise one: only SKUs with an open alert are
//! looked at (an index of them), passivated or not. The store answers,
//! not the actors; the changes reach caches and sessions through the bus.

use std::sync::Arc;

use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{
    Command, Committed, ForecastConfig, Micros, RateParams, WriteMeta, REFORECAST_REASON,
};
use skuwatch_actors::store::{SkuStore, StoreError, WriteJob, WriteOutcome, WriteRequest};

use crate::metrics;

/// The process's forecast settings from the server's (see
/// [`skuwatch_actors::domain::ForecastConfig`] for why they are per
/// process).
pub fn config(settings: &crate::Settings) -> ForecastConfig {
    let reasons = |raw: &str| -> Vec<String> {
        raw.split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let defaults = ForecastConfig::default();
    ForecastConfig {
        params: RateParams {
            half_life_us: (settings.forecast_half_life_secs as i64).saturating_mul(1_000_000),
            min_sales: settings.forecast_min_sales as i64,
            ..defaults.params
        },
        lead_time_days: settings.lead_time_days as i64,
        alert_rule: settings.alert_rule,
        sale_reasons: reasons(&settings.forecast_sale_reasons),
        return_reasons: reasons(&settings.forecast_return_reasons),
    }
}

/// SKUs re-read per round at most.
const ROUND: i64 = 256;

/// One round; returns how many forecasts were written.
pub async fn reforecast(store: &dyn SkuStore, bus: &dyn EventBus) -> Result<usize, StoreError> {
    let due = store.due_reforecasts(Micros::now(), ROUND).await?;
    if due.is_empty() {
        return Ok(0);
    }
    let jobs = due
        .into_iter()
        .map(|sku| WriteJob::Single {
            sku,
            request: WriteRequest {
                command: Command::Reforecast,
                meta: WriteMeta {
                    reason: Some(REFORECAST_REASON.to_owned()),
                    actor: Some("skuwatch".into()),
                    if_match: None,
                },
                idempotency: None,
            },
        })
        .collect();
    let mut changes: Vec<Arc<Committed>> = Vec::new();
    for outcome in store.commit(jobs).await {
        // Unchanged (a sale came in), or gone: nothing to write.
        if let WriteOutcome::Committed(done) = outcome? {
            changes.extend(done.into_iter().map(Arc::new));
        }
    }
    let written = changes.len();
    if written > 0 {
        ::metrics::counter!(metrics::FORECAST_REFORECASTS).increment(written as u64);
        bus.publish(&changes);
    }
    Ok(written)
}
