//! Alerts as HTTP reads and acknowledges them, and the dashboard summary.
//! (Alerts are raised and resolved by the write path, in its transaction.)

use skuwatch_actors::domain::{Alert, AlertStatus, Message, Micros, SkuCode, WebhookEvent};
use skuwatch_actors::store::{StoreError, Summary};
use sqlx::Row;

use super::{alert_from_row, db_error, sku_from_row, SqlStore, ALERT_COLUMNS, SKU_COLUMNS};

/// [`skuwatch_actors::store::SkuStore::list_alerts`].
pub(super) async fn list_alerts(
    store: &SqlStore,
    status: Option<AlertStatus>,
    sku: Option<&SkuCode>,
    limit: i64,
) -> Result<Vec<Alert>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE ($1 = '' OR status = $1) \
         AND ($2 = '' OR sku = $2) ORDER BY id DESC LIMIT $3"
    ))
    .bind(status.map_or("", AlertStatus::as_str))
    .bind(sku.map_or("", SkuCode::as_str))
    .bind(limit)
    .fetch_all(&store.read)
    .await
    .map_err(db_error)?;
    rows.iter().map(alert_from_row).collect()
}

/// [`skuwatch_actors::store::SkuStore::acknowledge_alert`]: with the
/// `alert.acknowledged` webhook messages in the same transaction (issue 19).
pub(super) async fn acknowledge_alert(
    store: &SqlStore,
    id: i64,
    by: &str,
) -> Result<Option<Alert>, StoreError> {
    let mut tx = store.begin().await?;
    let now = Micros::now();
    let acknowledged = sqlx::query(&format!(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2, acknowledged_us = $3 \
         WHERE id = $1 AND status = 'open' RETURNING {ALERT_COLUMNS}"
    ))
    .bind(id)
    .bind(by)
    .bind(now.0)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let alert = match acknowledged {
        Some(row) => {
            let alert = alert_from_row(&row)?;
            let sku = sqlx::query(&format!("SELECT {SKU_COLUMNS} FROM skus WHERE sku = $1"))
                .bind(alert.sku.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(db_error)?;
            let sku = sku_from_row(&sku)?;
            let message = Message::alert(WebhookEvent::AlertAcknowledged, &alert, &sku, now);
            super::webhooks::enqueue(&mut tx, &[message]).await?;
            Some(alert)
        }
        None => sqlx::query(&format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
            .as_ref()
            .map(alert_from_row)
            .transpose()?,
    };
    tx.commit().await.map_err(super::commit_error)?;
    Ok(alert)
}

/// [`skuwatch_actors::store::SkuStore::summary`].
pub(super) async fn summary(store: &SqlStore) -> Result<Summary, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS skus, \
         COALESCE(SUM(CASE WHEN stock - reserved < low_stock_threshold THEN 1 ELSE 0 END), 0) \
         AS below, \
         COALESCE(SUM(CASE WHEN stock - reserved <= 0 THEN 1 ELSE 0 END), 0) AS out FROM skus",
    )
    .fetch_one(&store.read)
    .await
    .map_err(db_error)?;
    let count = |name: &str| row.try_get::<i64, _>(name).map_err(db_error);
    let mut summary = Summary {
        skus: count("skus")?,
        below_threshold: count("below")?,
        out_of_stock: count("out")?,
        ..Summary::empty()
    };
    let rows =
        sqlx::query("SELECT kind, COUNT(*) AS n FROM alerts WHERE status = 'open' GROUP BY kind")
            .fetch_all(&store.read)
            .await
            .map_err(db_error)?;
    for row in rows {
        let kind: String = row.try_get("kind").map_err(db_error)?;
        let kind = skuwatch_actors::domain::AlertKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt("alert kind".into()))?;
        summary
            .open_alerts
            .insert(kind.as_str(), row.try_get::<i64, _>("n").map_err(db_error)?);
    }
    Ok(summary)
}
