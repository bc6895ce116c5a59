//! The alerts of changes written straight into the database (issue 16).
//!
//! The database writes an external change's events in the writer's own
//! transaction (`migrations/*/0007_external_changes.sql`), marked
//! `alerts_pending`; it cannot run the alert rules, which live in Rust
//! ([`evaluate_alerts`]). [`settle`] runs them in a follow-up transaction:
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

use std::collections::{BTreeMap, BTreeSet};

use skuwatch_actors::domain::{
    evaluate_alerts, guard_violation, AlertAction, AlertKind, Committed, Field, Micros, Sku,
    SkuCode,
};
use skuwatch_actors::plan::{AlertOp, AlertRef};
use skuwatch_actors::store::StoreError;
use sqlx::Row;

use super::{
    alerts_json, committed_from_row, corrupt, db_error, placeholders, search_text, sku_from_row,
    SqlStore, Tx, EVENT_COLUMNS, SKU_COLUMNS,
};
use crate::store::Backend;

/// The advisory lock (PostgreSQL) that makes instances settle one at a time.
const SETTLE_LOCK: i64 = 0x736b_7577_6578_7431; // "skuwext1"

/// SKUs whose pending events one round settles.
const ROUND_SKUS: i64 = 200;

/// Settles the pending events of `skus` (all pending events when `None`,
/// up to [`ROUND_SKUS`] SKUs a round); returns how many this call claimed
/// (0 when another instance had settled them).
pub(super) async fn settle(store: &SqlStore, skus: Option<&[SkuCode]>) -> Result<u64, StoreError> {
    let mut tx = store.begin().await?;
    if store.backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(SETTLE_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    let codes: BTreeSet<SkuCode> = match skus {
        Some(skus) => skus.iter().cloned().collect(),
        None => pending_skus(&mut tx).await?,
    };
    if codes.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(0);
    }
    let events = pending_events(&mut tx, &codes).await?;
    if events.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(0);
    }
    let touched: BTreeSet<&SkuCode> = events.iter().map(|c| &c.sku.sku).collect();
    let rows = lock_rows(store, &mut tx, &touched).await?;
    let mut active = super::write::active_alerts(&mut tx, &touched).await?;
    let now = Micros::now();
    let mut settled: Vec<Committed> = Vec::with_capacity(events.len());
    for (i, change) in events.iter().enumerate() {
        let code = &change.sku.sku;
        let row = rows
            .get(code)
            .ok_or_else(|| corrupt("external event of a missing SKU"))?;
        let active = active.entry(code.clone()).or_default();
        let mut alerts = Vec::new();
        let before = change.event.state_before(&change.sku);
        let anomaly = match (&before, change.event.field) {
            (Some(before), Field::Price) => {
                guard_violation(&before.price_guard, before.price(), change.sku.price())
            }
            _ => None,
        };
        let actions = evaluate_alerts(before.as_ref(), &change.sku, active, anomaly);
        alerts.extend(apply(&mut tx, code, actions, active, now).await?);
        // The SKU's last pending event: an API write committed since was
        // judged against the alerts as they were before this settlement,
        // so the step from here to the row as it is now is judged too, and
        // the alerts end up describing the SKU's current state.
        let last_of_sku = events.get(i + 1).is_none_or(|next| &next.sku.sku != code);
        if last_of_sku && row.version > change.sku.version {
            let actions = evaluate_alerts(Some(&change.sku), row, active, None);
            alerts.extend(apply(&mut tx, code, actions, active, now).await?);
        }
        let claimed = sqlx::query(
            "UPDATE events SET alerts_pending = 0, alerts = $2 \
             WHERE event_id = $1 AND alerts_pending = 1",
        )
        .bind(change.event.event_id)
        .bind(alerts_json(&alerts))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if claimed.rows_affected() != 1 {
            return Err(corrupt("a pending external event was claimed twice"));
        }
        let mut done = change.clone();
        done.alerts = alerts;
        settled.push(done);
    }
    // The search text, as the server computes it for its own writes
    // (Unicode's case rules; the trigger could only use SQL's lower()).
    for row in rows.values() {
        sqlx::query("UPDATE skus SET search_text = $2 WHERE sku = $1")
            .bind(row.sku.as_str())
            .bind(search_text(row))
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
    }
    tx.commit().await.map_err(super::commit_error)?;
    crate::metrics::alerts_raised(&settled);
    Ok(settled.len() as u64)
}

/// The SKUs with pending events, oldest events first.
async fn pending_skus(tx: &mut Tx) -> Result<BTreeSet<SkuCode>, StoreError> {
    let rows =
        sqlx::query("SELECT sku FROM events WHERE alerts_pending = 1 ORDER BY event_id LIMIT $1")
            .bind(ROUND_SKUS * 4)
            .fetch_all(&mut **tx)
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

async fn lock_rows(
    store: &SqlStore,
    tx: &mut Tx,
    codes: &BTreeSet<&SkuCode>,
) -> Result<BTreeMap<SkuCode, Sku>, StoreError> {
    let sql = format!(
        "SELECT {SKU_COLUMNS} FROM skus WHERE sku IN ({}) ORDER BY sku{}",
        placeholders(1, codes.len()),
        store.for_update()
    );
    let mut query = sqlx::query(&sql);
    for code in codes {
        query = query.bind(code.as_str());
    }
    let mut rows = BTreeMap::new();
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let sku = sku_from_row(&row)?;
        rows.insert(sku.sku.clone(), sku);
    }
    Ok(rows)
}

/// Writes `actions` and keeps `active` in step; returns the alert rows.
async fn apply(
    tx: &mut Tx,
    code: &SkuCode,
    actions: Vec<AlertAction>,
    active: &mut Vec<(i64, AlertKind)>,
    now: Micros,
) -> Result<Vec<skuwatch_actors::domain::Alert>, StoreError> {
    let ops: Vec<AlertOp> = actions
        .into_iter()
        .map(|action| match action {
            AlertAction::Raise {
                kind,
                message,
                value,
                threshold,
            } => AlertOp::Raise {
                sku: code.clone(),
                kind,
                message,
                value,
                threshold,
            },
            AlertAction::Resolve { id } => AlertOp::Resolve(AlertRef::Existing(id)),
        })
        .collect();
    let alerts = super::write::apply_alerts(tx, &ops, now).await?;
    for alert in &alerts {
        match alert.status {
            skuwatch_actors::domain::AlertStatus::Resolved => {
                active.retain(|(id, _)| *id != alert.id)
            }
            _ => active.push((alert.id, alert.kind)),
        }
    }
    Ok(alerts)
}
