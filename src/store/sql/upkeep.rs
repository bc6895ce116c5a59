//! Background upkeep of what clients make the database hold.

use skuwatch_actors::domain::Micros;
use skuwatch_actors::store::{Prunable, StoreError};

use super::{db_error, SqlStore, IDEMPOTENCY_WINDOW_US};

/// [`skuwatch_actors::store::SkuStore::purge_idempotency_keys`]: deletes
/// idempotency keys past their 24 h window (API.md, Conventions); a key
/// older than the window is already treated as new when reused.
pub(super) async fn purge_idempotency_keys(store: &SqlStore) -> Result<u64, StoreError> {
    let cutoff = Micros::now().0 - IDEMPOTENCY_WINDOW_US;
    let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_us < $1")
        .bind(cutoff)
        .execute(store.writer())
        .await
        .map_err(db_error)?;
    Ok(done.rows_affected())
}

/// `ANALYZE alerts` (see `SkuStore::refresh_statistics`), which also
/// invalidates every connection's cached plans of statements on it: the
/// write transaction's read of the active alerts by code. SKU rows are
/// read by primary key, which every plan of theirs used, and analysing
/// `skus` cost 57 ms a time at 100,000 rows for nothing. PostgreSQL only:
/// SQLite's planner uses the indexes without statistics, and measured no
/// slowdown as the tables grew.
pub(super) async fn refresh_statistics(store: &SqlStore) -> Result<(), StoreError> {
    if store.backend != crate::store::Backend::Postgres {
        return Ok(());
    }
    sqlx::query("ANALYZE alerts")
        .execute(store.writer())
        .await
        .map_err(db_error)?;
    Ok(())
}

/// [`skuwatch_actors::store::SkuStore::prune`]: one transaction, so an
/// ended hold goes with its lines.
pub(super) async fn prune(
    store: &SqlStore,
    what: Prunable,
    older_than_us: i64,
) -> Result<u64, StoreError> {
    let cutoff = Micros::now().0.saturating_sub(older_than_us);
    let mut tx = store.writer().begin().await.map_err(db_error)?;
    let done = match what {
        Prunable::EndedHolds => {
            sqlx::query(
                "DELETE FROM hold_lines WHERE hold_id IN \
                 (SELECT id FROM holds WHERE status <> 'active' AND ended_us < $1)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
            sqlx::query("DELETE FROM holds WHERE status <> 'active' AND ended_us < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
        }
        Prunable::ResolvedAlerts => {
            sqlx::query("DELETE FROM alerts WHERE status = 'resolved' AND resolved_us < $1")
                .bind(cutoff)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?
        }
        Prunable::EndedDeliveries => {
            // And the rows of deleted endpoints (a write that read the
            // endpoints just before the DELETE).
            sqlx::query(
                "DELETE FROM webhook_deliveries WHERE (status <> 'pending' AND ended_us < $1) \
                 OR endpoint_id NOT IN (SELECT id FROM webhook_endpoints)",
            )
            .bind(cutoff)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?
        }
    };
    tx.commit().await.map_err(db_error)?;
    Ok(done.rows_affected())
}
