//! The hold rows (issue 17): read and locked by the write transaction,
//! written from its plan, listed and swept (pruned in `upkeep`). Every change of a hold
//! goes through [`super::write::transaction_with`]; nothing here changes
//! `skus`.

use std::collections::{BTreeMap, BTreeSet};

use skuwatch_actors::domain::{Hold, HoldId, HoldLine, HoldStatus, Micros};
use skuwatch_actors::plan::HoldWrite;
use skuwatch_actors::store::{HoldQuery, StoreError};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::write::Locking;
use super::{corrupt, db_error, placeholders, SqlStore, Tx};
use crate::store::Backend;

const HOLD_COLUMNS: &str =
    "id, status, lines, reference, actor, created_us, expires_us, ended_us, event_ids";

/// The database's clock in microseconds since the Unix epoch: every
/// instance judges a hold's expiry on this one clock.
fn clock_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint",
        Backend::Sqlite => "CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER)",
    }
}

/// Reads the database's clock inside the write transaction.
pub(super) async fn clock(store: &SqlStore, tx: &mut Tx) -> Result<Micros, StoreError> {
    let row = sqlx::query(&format!("SELECT {} AS now_us", clock_sql(store.backend)))
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok(Micros(row.try_get("now_us").map_err(db_error)?))
}

fn hold_from_row(row: &AnyRow) -> Result<Hold, StoreError> {
    let text = |name: &str| row.try_get::<String, _>(name).map_err(db_error);
    let status = text("status")?;
    let id = text("id")?;
    Ok(Hold {
        id: HoldId::parse(&id).ok_or_else(|| corrupt("hold id"))?,
        status: HoldStatus::parse(&status).ok_or_else(|| corrupt("hold status"))?,
        lines: serde_json::from_str::<Vec<HoldLine>>(&text("lines")?)
            .map_err(|_| corrupt("hold lines"))?,
        reference: row.try_get("reference").map_err(db_error)?,
        actor: row.try_get("actor").map_err(db_error)?,
        created_at: Micros(row.try_get("created_us").map_err(db_error)?),
        expires_at: Micros(row.try_get("expires_us").map_err(db_error)?),
        ended_at: row
            .try_get::<Option<i64>, _>("ended_us")
            .map_err(db_error)?
            .map(Micros),
        event_ids: serde_json::from_str(&text("event_ids")?)
            .map_err(|_| corrupt("hold event ids"))?,
    })
}

/// Reads and locks the hold rows of `ids`, in id order (the order every
/// writer locks holds in, before any SKU row).
pub(super) async fn lock(
    store: &SqlStore,
    tx: &mut Tx,
    ids: &BTreeSet<&HoldId>,
) -> Result<BTreeMap<HoldId, Hold>, StoreError> {
    let mut rows = BTreeMap::new();
    if ids.is_empty() {
        return Ok(rows);
    }
    let sql = format!(
        "SELECT {HOLD_COLUMNS} FROM holds WHERE id IN ({}) ORDER BY id{}",
        placeholders(1, ids.len()),
        store.lock_clause(Locking::Wait)
    );
    let mut query = sqlx::query(&sql);
    for id in ids {
        query = query.bind(id.as_str().to_owned());
    }
    for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
        let hold = hold_from_row(&row)?;
        rows.insert(hold.id.clone(), hold);
    }
    Ok(rows)
}

/// Writes the plan's hold rows, in order: a new hold with its lines, or
/// the changed status, expiry, end and events of a stored one.
pub(super) async fn write(tx: &mut Tx, writes: &[HoldWrite]) -> Result<(), StoreError> {
    for write in writes {
        let hold = &write.hold;
        let event_ids = serde_json::to_string(&hold.event_ids).map_err(|_| corrupt("event ids"))?;
        if write.insert {
            let lines = serde_json::to_string(&hold.lines).map_err(|_| corrupt("hold lines"))?;
            sqlx::query(&format!(
                "INSERT INTO holds ({HOLD_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
            ))
            .bind(hold.id.as_str())
            .bind(hold.status.as_str())
            .bind(lines)
            .bind(hold.reference.clone())
            .bind(hold.actor.clone())
            .bind(hold.created_at.0)
            .bind(hold.expires_at.0)
            .bind(hold.ended_at.map(|at| at.0))
            .bind(event_ids)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            let values: Vec<String> = (0..hold.lines.len())
                .map(|i| format!("({})", placeholders(i * 3 + 1, 3)))
                .collect();
            let sql = format!(
                "INSERT INTO hold_lines (hold_id, sku, quantity) VALUES {}",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for line in &hold.lines {
                query = query
                    .bind(hold.id.as_str())
                    .bind(line.sku.as_str())
                    .bind(line.quantity);
            }
            query.execute(&mut **tx).await.map_err(db_error)?;
        } else {
            let done = sqlx::query(
                "UPDATE holds SET status = $2, expires_us = $3, ended_us = $4, event_ids = $5 \
                 WHERE id = $1",
            )
            .bind(hold.id.as_str())
            .bind(hold.status.as_str())
            .bind(hold.expires_at.0)
            .bind(hold.ended_at.map(|at| at.0))
            .bind(event_ids)
            .execute(&mut **tx)
            .await
            .map_err(db_error)?;
            if done.rows_affected() != 1 {
                return Err(corrupt("a locked hold row went missing"));
            }
        }
    }
    Ok(())
}

/// [`skuwatch_actors::store::SkuStore::load_hold`].
pub(super) async fn load(store: &SqlStore, id: &HoldId) -> Result<Option<Hold>, StoreError> {
    let row = sqlx::query(&format!("SELECT {HOLD_COLUMNS} FROM holds WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(store.reader())
        .await
        .map_err(db_error)?;
    row.as_ref().map(hold_from_row).transpose()
}

/// [`skuwatch_actors::store::SkuStore::list_holds`].
pub(super) async fn list(store: &SqlStore, query: &HoldQuery) -> Result<Vec<Hold>, StoreError> {
    let mut sql = format!("SELECT {HOLD_COLUMNS} FROM holds WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let next = |value: String, binds: &mut Vec<String>| {
        binds.push(value);
        format!("${}", binds.len())
    };
    if let Some(after) = &query.after {
        let p = next(after.as_str().to_owned(), &mut binds);
        sql.push_str(&format!(" AND id > {p}"));
    }
    if let Some(status) = query.status {
        let p = next(status.as_str().to_owned(), &mut binds);
        sql.push_str(&format!(" AND status = {p}"));
    }
    if let Some(sku) = &query.sku {
        let p = next(sku.as_str().to_owned(), &mut binds);
        sql.push_str(&format!(
            " AND id IN (SELECT hold_id FROM hold_lines WHERE sku = {p})"
        ));
    }
    // The caller asks for one more than a page to tell whether another
    // follows: no cap here (the HTTP layer bounds `limit`).
    sql.push_str(&format!(" ORDER BY id LIMIT {}", query.limit.max(1)));
    let mut select = sqlx::query(&sql);
    for value in binds {
        select = select.bind(value);
    }
    let rows = select.fetch_all(store.reader()).await.map_err(db_error)?;
    rows.iter().map(hold_from_row).collect()
}

/// [`skuwatch_actors::store::SkuStore::due_holds`].
pub(super) async fn due(store: &SqlStore, limit: i64) -> Result<Vec<HoldId>, StoreError> {
    let sql = format!(
        "SELECT id FROM holds WHERE status = 'active' AND expires_us <= {} \
         ORDER BY expires_us LIMIT $1",
        clock_sql(store.backend)
    );
    let rows = sqlx::query(&sql)
        .bind(limit)
        .fetch_all(store.reader())
        .await
        .map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let id: String = row.try_get("id").map_err(db_error)?;
            HoldId::parse(&id).ok_or_else(|| corrupt("hold id"))
        })
        .collect()
}

/// [`skuwatch_actors::store::SkuStore::count_active_holds`].
pub(super) async fn count_active(store: &SqlStore) -> Result<i64, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM holds WHERE status = 'active'")
        .fetch_one(store.reader())
        .await
        .map_err(db_error)?;
    row.try_get("n").map_err(db_error)
}
