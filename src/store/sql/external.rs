//! The alerts of changes written straight into the database (issue 16).
//!
//! The database writes an external change's events in the writer's own
//! transaction (`migrations/*/0007_external_changes.sql`), marked
//! `alerts_pending`; it cannot run the alert rules, which live in Rust
//! ([`external_alerts`]). [`settle`] runs them in a follow-up transaction:
//! it claims the pending events with a conditional update (`alerts_pending
//! = 1` -> 0, so exactly one instance raises them, PostgreSQL instances
//! taking turns on an advisory lock), evaluates them against the locked
//! SKU rows and the active alerts, writes the alerts and each event's
//! `alerts` and the SKU's search text (Rust's, as for every write), and
//! commits. Nothing hands out a pending event: the events
//! read ([`super::SqlStore::events_after`]) settles the ones it meets first,
//! so every reader (the feed of every instance, `/events`, a `since`
//! replay) sees an external event with the alerts it raised, as for an API
//! change.

use std::collections::BTreeSet;

use skuwatch_actors::domain::{alert_messages, Committed, Field, Micros, SkuCode};
use skuwatch_actors::plan::external_alerts;
use skuwatch_actors::store::StoreError;
use sqlx::Row;

use super::write::{active_alerts, apply_alerts, lock_rows};
use super::{
    alerts_json, committed_from_row, corrupt, db_error, placeholders, search_text, SqlStore, Tx,
    EVENT_COLUMNS,
};
use crate::store::Backend;

/// The advisory lock (PostgreSQL) that makes instances settle one at a time.
const SETTLE_LOCK: i64 = 0x736b_7577_6578_7431; // "skuwext1"

/// SKUs whose pending events one round settles.
const ROUND_SKUS: i64 = 200;

/// Settles the pending events of `skus` (when `None`: of the SKUs with the
/// oldest pending events, up to [`ROUND_SKUS`]); returns how many this call
/// claimed (0 when another instance had settled them).
pub(super) async fn settle(store: &SqlStore, skus: Option<&[SkuCode]>) -> Result<u64, StoreError> {
    // Looked for outside a transaction: the sweep finds nothing nearly
    // always, and should not take the write lock (SQLite) or the
    // settlement lock (PostgreSQL) to learn it.
    let codes: BTreeSet<SkuCode> = match skus {
        Some(skus) => skus.iter().cloned().collect(),
        None => pending_skus(store).await?,
    };
    if codes.is_empty() {
        return Ok(0);
    }
    let mut tx = store.begin().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SETTLE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    let changes = pending_events(&mut tx, &codes).await?;
    if changes.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(0);
    }
    let touched: BTreeSet<&SkuCode> = changes.iter().map(|c| &c.sku.sku).collect();
    let rows = lock_rows(store, &mut tx, &touched).await?;
    let active = active_alerts(&mut tx, &touched).await?;
    let (ops, ranges) = external_alerts(&changes, &rows, active);
    let alerts = apply_alerts(&mut tx, &ops, Micros::now()).await?;
    claim(&mut tx, &changes).await?;
    let mut settled: Vec<Committed> = Vec::with_capacity(changes.len());
    for (mut change, range) in changes.into_iter().zip(ranges) {
        change.alerts = alerts[range].to_vec();
        if !change.alerts.is_empty() {
            sqlx::query("UPDATE events SET alerts = $2 WHERE event_id = $1")
                .bind(change.event.event_id)
                .bind(alerts_json(&change.alerts))
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        settled.push(change);
    }
    // The search text, as the server computes it for its own writes
    // (Unicode's case rules; the trigger could only use SQL's lower()):
    // for the SKUs an external change created or renamed.
    let renamed: BTreeSet<&SkuCode> = settled
        .iter()
        .filter(|c| c.event.field == Field::Meta && c.event.new.get("name").is_some())
        .map(|c| &c.sku.sku)
        .collect();
    for row in renamed.iter().filter_map(|code| rows.get(*code)) {
        sqlx::query("UPDATE skus SET search_text = $2 WHERE sku = $1")
            .bind(row.sku.as_str())
            .bind(search_text(row))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    // The days of cover `/summary` counts (issue 18), as of each SKU's
    // row now: an external stock change moves it.
    let restocked: BTreeSet<&SkuCode> = settled
        .iter()
        .filter(|c| c.event.field == Field::Stock)
        .map(|c| &c.sku.sku)
        .collect();
    for row in restocked.iter().filter_map(|code| rows.get(*code)) {
        sqlx::query("UPDATE skus SET cover_tenths = $2 WHERE sku = $1")
            .bind(row.sku.as_str())
            .bind(row.forecast.days_of_cover.map(|cover| cover.0))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    super::webhooks::enqueue(&mut tx, &alert_messages(&settled)).await?;
    tx.commit().await.map_err(super::commit_error)?;
    crate::metrics::alerts_raised(&settled);
    metrics::counter!(crate::metrics::EXTERNAL_SETTLED).increment(settled.len() as u64);
    Ok(settled.len() as u64)
}

/// Claims `changes` for this transaction: the conditional update that
/// makes their alerts this instance's to raise. All or none: fewer rows
/// means another instance claimed some (it cannot under the settlement
/// lock and SQLite's one writer, so that is a fault).
async fn claim(tx: &mut Tx, changes: &[Committed]) -> Result<(), StoreError> {
    let sql = format!(
        "UPDATE events SET alerts_pending = 0 WHERE alerts_pending = 1 AND event_id IN ({})",
        placeholders(1, changes.len())
    );
    let mut query = sqlx::query(&sql);
    for change in changes {
        query = query.bind(change.event.event_id);
    }
    let claimed = query.execute(&mut **tx).await.map_err(db_error)?;
    if claimed.rows_affected() != changes.len() as u64 {
        return Err(corrupt("a pending external event was claimed twice"));
    }
    Ok(())
}

/// The SKUs with pending events, oldest events first.
async fn pending_skus(store: &SqlStore) -> Result<BTreeSet<SkuCode>, StoreError> {
    let rows =
        sqlx::query("SELECT sku FROM events WHERE alerts_pending = 1 ORDER BY event_id LIMIT $1")
            .bind(ROUND_SKUS * 4)
            .fetch_all(store.reader())
            .await
            .map_err(db_error)?;
    let mut codes = BTreeSet::new();
    for row in rows {
        let code: String = row.try_get("sku").map_err(db_error)?;
        codes.insert(SkuCode::parse(&code).map_err(|_| corrupt("event sku"))?);
        if codes.len() as i64 >= ROUND_SKUS {
            break;
        }
    }
    Ok(codes)
}

/// Every pending event of `codes`, in id order (per SKU: version order).
async fn pending_events(
    tx: &mut Tx,
    codes: &BTreeSet<SkuCode>,
) -> Result<Vec<Committed>, StoreError> {
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE alerts_pending = 1 AND sku IN ({}) \
         ORDER BY event_id",
        placeholders(1, codes.len())
    );
    let mut query = sqlx::query(&sql);
    for code in codes {
        query = query.bind(code.as_str());
    }
    let rows = query.fetch_all(&mut **tx).await.map_err(db_error)?;
    rows.iter().map(committed_from_row).collect()
}
