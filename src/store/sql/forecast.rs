//! Days of cover in the database (issue 18): rebuilding a missing sales
//! rate from the events, finding the forecast alerts time may end, and
//! counting SKUs by days of cover for `/summary`.

use std::collections::BTreeMap;

use sqlx::Row;

use skuwatch_actors::domain::{forecast_config, Micros, SalesRate, Sku, SkuCode};
use skuwatch_actors::store::{CoverCounts, StoreError};

use super::{corrupt, db_error, placeholders, sku_from_row, SqlStore, Tx, SKU_COLUMNS};

/// Gives every row of `rows` whose rate is missing (`None`: never kept,
/// or kept under another half-life) the rate its events give, folded in
/// commit order exactly as the planner folds them live, so the two agree
/// bit for bit. One read for all of them, only when some are missing: a
/// plain write pays nothing. Returns the codes rebuilt, whose rates the
/// write must store.
pub(super) async fn rebuild_missing_rates(
    tx: &mut Tx,
    rows: &mut BTreeMap<SkuCode, Sku>,
) -> Result<Vec<SkuCode>, StoreError> {
    let missing: Vec<SkuCode> = rows
        .values()
        .filter(|sku| sku.sales_rate.is_none())
        .map(|sku| sku.sku.clone())
        .collect();
    if missing.is_empty() {
        return Ok(missing);
    }
    let config = forecast_config();
    let sql = format!(
        "SELECT sku, at_us, delta, reason FROM events \
         WHERE sku IN ({}) AND field = 'stock' AND delta IS NOT NULL AND reason IS NOT NULL \
         ORDER BY event_id",
        placeholders(1, missing.len())
    );
    let mut query = sqlx::query(&sql);
    for code in &missing {
        query = query.bind(code.as_str());
    }
    let mut rates: BTreeMap<SkuCode, SalesRate> = missing
        .iter()
        .map(|code| (code.clone(), SalesRate::new(&config.params)))
        .collect();
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let code: String = row.try_get("sku").map_err(db_error)?;
        let code = SkuCode::parse(&code).map_err(|_| corrupt("event sku"))?;
        let reason: String = row.try_get("reason").map_err(db_error)?;
        let delta: i64 = row.try_get("delta").map_err(db_error)?;
        let at = Micros(row.try_get("at_us").map_err(db_error)?);
        if let (Some(rate), Some((kind, units))) =
            (rates.get_mut(&code), config.sale_of(Some(&reason), delta))
        {
            rate.apply(kind, units, at, &config.params);
        }
    }
    for (code, rate) in rates {
        if let Some(sku) = rows.get_mut(&code) {
            sku.sales_rate = Some(rate);
            sku.refresh_forecast();
        }
    }
    metrics::counter!(crate::metrics::FORECAST_RATES_REBUILT).increment(missing.len() as u64);
    Ok(missing)
}

/// SKUs with an active `stockout_forecast` alert whose forecast, re-read as
/// of `now`, would resolve it (time passing with no sales), up to `limit`,
/// by code; read without locking (the write re-decides under its lock).
pub(super) async fn due_reforecasts(
    store: &SqlStore,
    now: Micros,
    limit: i64,
) -> Result<Vec<SkuCode>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {SKU_COLUMNS} FROM skus WHERE sku IN (SELECT sku FROM alerts \
         WHERE kind = 'stockout_forecast' AND status <> 'resolved') ORDER BY sku"
    ))
    .fetch_all(&store.read)
    .await
    .map_err(db_error)?;
    let mut due = Vec::new();
    for row in rows {
        let sku = sku_from_row(&row)?;
        // A missing rate (a changed half-life) cannot be judged here; the
        // SKU's next write rebuilds it. Listing it would make it due at
        // every round and, past a round's worth, starve the others.
        if sku.sales_rate.is_some() && sku.reforecast_ends_alert(now) {
            due.push(sku.sku);
        }
        if due.len() as i64 >= limit {
            break;
        }
    }
    Ok(due)
}

/// SKUs by days of cover as of their last change (`/summary`).
pub(super) async fn cover_counts(store: &SqlStore) -> Result<CoverCounts, StoreError> {
    let lead = forecast_config().lead_time_days;
    let row = sqlx::query(
        "SELECT \
         COALESCE(SUM(CASE WHEN cover_tenths < 10 * COALESCE(lead_time_days, $1) THEN 1 ELSE 0 END), 0) AS within, \
         COALESCE(SUM(CASE WHEN cover_tenths < 70 THEN 1 ELSE 0 END), 0) AS under_7, \
         COALESCE(SUM(CASE WHEN cover_tenths >= 70 AND cover_tenths < 300 THEN 1 ELSE 0 END), 0) AS d7_30, \
         COALESCE(SUM(CASE WHEN cover_tenths >= 300 THEN 1 ELSE 0 END), 0) AS d30, \
         COALESCE(SUM(CASE WHEN cover_tenths IS NULL THEN 1 ELSE 0 END), 0) AS none \
         FROM skus",
    )
    .bind(lead)
    .fetch_one(&store.read)
    .await
    .map_err(db_error)?;
    let count = |name: &str| row.try_get::<i64, _>(name).map_err(db_error);
    Ok(CoverCounts {
        within_lead_time: count("within")?,
        under_7: count("under_7")?,
        from_7_to_30: count("d7_30")?,
        from_30: count("d30")?,
        no_forecast: count("none")?,
    })
}
