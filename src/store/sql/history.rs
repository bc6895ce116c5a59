//! The SQL of charts: the history query over pre-aggregated blocks, and
//! the roll-up that builds the blocks from the events table. The rules
//! (which blocks, which points) are in [`crate::store::history`].

use std::collections::{BTreeMap, HashMap};

use skuwatch_actors::domain::{Field, Micros, SkuCode};
use skuwatch_actors::store::{HistoryPoint, HistoryQuery, HistoryRollup, SkuStore, StoreError};
use sqlx::Row;

use super::{corrupt, db_error, placeholders, SqlStore};
use crate::store::history::{
    block_size, chart_ids, cover, top_level, Piece, Span, BASE, FANOUT, LEVELS,
};

/// Events the roll-up looks at in one round (an index range of the events
/// table; only every 256th version of a SKU leads to work).
const ROLLUP_SCAN: i64 = 50_000;

/// The advisory lock key of the roll-up's leader (PostgreSQL): any fixed
/// number no other lock of this database uses.
const ROLLUP_LOCK: i64 = 0x736b_7577_6869_7374; // "skuwhist"

/// Which events are points of a field: its own changes, and the SKU's
/// creation (version 1), which carries the first value of both.
const POINTS_OF_FIELD: &str = "(field = $2 OR (field = 'meta' AND version = 1))";

fn column(field: Field) -> &'static str {
    match field {
        Field::Price => "price_after",
        _ => "stock_after",
    }
}

/// The stored fields, in the order of a block's spans.
const FIELDS: [Field; 2] = [Field::Stock, Field::Price];

/// [`SkuStore::history`]: see [`crate::store::history`]. A time range is
/// first resolved to the SKU's versions at its ends (per SKU, `at` follows
/// `version`: it is read after the row is locked).
pub(super) async fn history(
    store: &SqlStore,
    query: &HistoryQuery,
) -> Result<Vec<HistoryPoint>, StoreError> {
    let Some((lo, hi)) = version_range(store, query).await? else {
        return Ok(Vec::new());
    };
    let versions = hi - lo + 1;
    if versions <= query.limit {
        return points_between(store, query, lo, hi).await;
    }
    let pieces = cover(lo, hi, top_level(versions, (query.limit - 2) / 2));
    let blocks = read_blocks(store, &query.sku, query.field, &pieces).await?;
    // What no stored block answers is read event by event.
    let mut singles: Vec<(i64, i64)> = Vec::new();
    for piece in &pieces {
        let (from, to) = match *piece {
            Piece::Block { level, index } if blocks.contains_key(&(level, index)) => continue,
            Piece::Block { level, index } => {
                let start = index * block_size(level);
                (start, start + block_size(level) - 1)
            }
            Piece::Events { from, to } => (from, to),
        };
        match singles.last_mut() {
            Some((_, end)) if *end + 1 == from => *end = to,
            _ => singles.push((from, to)),
        }
    }
    let events = read_points(store, &query.sku, query.field, &singles).await?;
    let mut events = events.into_iter().peekable();
    let mut parts: Vec<(i64, Span)> = Vec::new();
    for piece in &pieces {
        match *piece {
            Piece::Block { level, index } if blocks.contains_key(&(level, index)) => {
                if let Some(span) = blocks[&(level, index)] {
                    parts.push((piece.start(), span));
                }
            }
            Piece::Block { level, index } => {
                // Joined as the block would have been: a chart is the same
                // whether or not the roll-up has caught up.
                let end = (index + 1) * block_size(level);
                let span = Span::join(
                    std::iter::from_fn(|| events.next_if(|(v, _)| *v < end)).map(|(_, s)| Some(s)),
                );
                if let Some(span) = span {
                    parts.push((piece.start(), span));
                }
            }
            Piece::Events { to, .. } => {
                while let Some((version, span)) = events.next_if(|(v, _)| *v <= to) {
                    parts.push((version, span));
                }
            }
        }
    }
    let points: i64 = parts.iter().map(|(_, span)| span.points).sum();
    if points <= query.limit {
        return points_between(store, query, lo, hi).await;
    }
    points_by_id(
        store,
        query.field,
        &chart_ids(&parts, lo, versions, query.limit),
    )
    .await
}

/// The SKU's first and last version in the query's time range (both
/// bounds inclusive); `None` when the range holds no event.
async fn version_range(
    store: &SqlStore,
    query: &HistoryQuery,
) -> Result<Option<(i64, i64)>, StoreError> {
    let sku = query.sku.as_str();
    let one = |sql: &'static str, at: Option<Micros>| async move {
        let mut select = sqlx::query(sql).bind(sku);
        if let Some(at) = at {
            select = select.bind(at.0);
        }
        select
            .fetch_optional(&store.read)
            .await
            .map_err(db_error)?
            .map(|row| row.try_get::<Option<i64>, _>(0).map_err(db_error))
            .transpose()
            .map(Option::flatten)
    };
    let lo = match query.from {
        None => Some(1),
        Some(from) => {
            one(
                "SELECT version FROM events WHERE sku = $1 AND at_us >= $2 \
                 ORDER BY at_us, version LIMIT 1",
                Some(from),
            )
            .await?
        }
    };
    let hi = match query.to {
        None => one("SELECT MAX(version) FROM events WHERE sku = $1", None).await?,
        Some(to) => {
            one(
                "SELECT version FROM events WHERE sku = $1 AND at_us <= $2 \
                 ORDER BY at_us DESC, version DESC LIMIT 1",
                Some(to),
            )
            .await?
        }
    };
    Ok(match (lo, hi) {
        (Some(lo), Some(hi)) if lo <= hi => Some((lo, hi)),
        _ => None,
    })
}

const POINT_COLUMNS: &str = "event_id, at_us, version, reason";

fn point_from_row(row: &sqlx::any::AnyRow) -> Result<HistoryPoint, StoreError> {
    Ok(HistoryPoint {
        at: Micros(row.try_get("at_us").map_err(db_error)?),
        value: row
            .try_get::<Option<i64>, _>("v")
            .map_err(db_error)?
            .unwrap_or(0),
        version: row.try_get("version").map_err(db_error)?,
        event_id: row.try_get("event_id").map_err(db_error)?,
        reason: row.try_get("reason").map_err(db_error)?,
    })
}

/// Every point of versions `lo..=hi` in the query's time range.
async fn points_between(
    store: &SqlStore,
    query: &HistoryQuery,
    lo: i64,
    hi: i64,
) -> Result<Vec<HistoryPoint>, StoreError> {
    let sql = format!(
        "SELECT {POINT_COLUMNS}, {} AS v FROM events WHERE sku = $1 AND {POINTS_OF_FIELD} \
         AND version >= $3 AND version <= $4 AND at_us >= $5 AND at_us <= $6 ORDER BY version",
        column(query.field)
    );
    let rows = sqlx::query(&sql)
        .bind(query.sku.as_str())
        .bind(query.field.as_str())
        .bind(lo)
        .bind(hi)
        .bind(query.from.map_or(i64::MIN, |t| t.0))
        .bind(query.to.map_or(i64::MAX, |t| t.0))
        .fetch_all(&store.read)
        .await
        .map_err(db_error)?;
    rows.iter().map(point_from_row).collect()
}

/// The points with these event ids, oldest first.
async fn points_by_id(
    store: &SqlStore,
    field: Field,
    ids: &[i64],
) -> Result<Vec<HistoryPoint>, StoreError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {POINT_COLUMNS}, {} AS v FROM events WHERE event_id IN ({}) ORDER BY event_id",
        column(field),
        placeholders(1, ids.len())
    );
    let mut select = sqlx::query(&sql);
    for id in ids {
        select = select.bind(*id);
    }
    let rows = select.fetch_all(&store.read).await.map_err(db_error)?;
    rows.iter().map(point_from_row).collect()
}

/// The stored blocks among `pieces` of one field: `(level, index)` to its
/// span (`None`: a block without a point of the field). One statement: the
/// blocks of a level in a cover form at most two runs.
async fn read_blocks(
    store: &SqlStore,
    sku: &SkuCode,
    field: Field,
    pieces: &[Piece],
) -> Result<HashMap<(u32, i64), Option<Span>>, StoreError> {
    let mut runs: Vec<(u32, i64, i64)> = Vec::new();
    for piece in pieces {
        if let Piece::Block { level, index } = *piece {
            match runs.last_mut() {
                Some((l, _, last)) if *l == level && *last + 1 == index => *last = index,
                _ => runs.push((level, index, index)),
            }
        }
    }
    if runs.is_empty() {
        return Ok(HashMap::new());
    }
    // One branch per run, each a range of the primary key, for the same
    // reason as in `read_points`.
    let branches: Vec<String> = (0..runs.len())
        .map(|i| {
            let n = 3 + 3 * i;
            format!(
                "SELECT level, block, {SPAN_COLUMNS} FROM history_blocks WHERE sku = $1 \
                 AND field = $2 AND level = ${n} AND block >= ${} AND block <= ${}",
                n + 1,
                n + 2
            )
        })
        .collect();
    let sql = branches.join(" UNION ALL ");
    let mut select = sqlx::query(&sql).bind(sku.as_str()).bind(field.as_str());
    for (level, first, last) in &runs {
        select = select.bind(i64::from(*level)).bind(*first).bind(*last);
    }
    let rows = select.fetch_all(&store.read).await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let level: i64 = row.try_get("level").map_err(db_error)?;
            let block: i64 = row.try_get("block").map_err(db_error)?;
            Ok(((level as u32, block), span_from_row(row)?))
        })
        .collect()
}

const SPAN_COLUMNS: &str =
    "points, first_event, last_event, low_value, low_event, high_value, high_event";

fn span_from_row(row: &sqlx::any::AnyRow) -> Result<Option<Span>, StoreError> {
    let points: i64 = row.try_get("points").map_err(db_error)?;
    if points == 0 {
        return Ok(None);
    }
    let get = |name: &str| -> Result<i64, StoreError> {
        row.try_get::<Option<i64>, _>(name)
            .map_err(db_error)?
            .ok_or_else(|| corrupt("history block"))
    };
    Ok(Some(Span {
        points,
        first: get("first_event")?,
        last: get("last_event")?,
        low: (get("low_value")?, get("low_event")?),
        high: (get("high_value")?, get("high_event")?),
    }))
}

/// The points of one field in the version ranges (inclusive, ascending),
/// each as `(version, span of one point)`, in version order.
async fn read_points(
    store: &SqlStore,
    sku: &SkuCode,
    field: Field,
    ranges: &[(i64, i64)],
) -> Result<Vec<(i64, Span)>, StoreError> {
    if ranges.is_empty() {
        return Ok(Vec::new());
    }
    // One branch per range, each a plain range of the (sku, version)
    // index: with an OR of ranges a planner without fresh statistics
    // scanned all the SKU's events (248 ms for a million, PostgreSQL).
    let branches: Vec<String> = (0..ranges.len())
        .map(|i| {
            format!(
                "SELECT event_id, version, {} AS v FROM events WHERE sku = $1 \
                 AND version >= ${} AND version <= ${} AND {POINTS_OF_FIELD}",
                column(field),
                3 + 2 * i,
                4 + 2 * i
            )
        })
        .collect();
    let sql = format!("{} ORDER BY version", branches.join(" UNION ALL "));
    let mut select = sqlx::query(&sql).bind(sku.as_str()).bind(field.as_str());
    for (from, to) in ranges {
        select = select.bind(*from).bind(*to);
    }
    let rows = select.fetch_all(&store.read).await.map_err(db_error)?;
    rows.iter()
        .map(|row| {
            let version: i64 = row.try_get("version").map_err(db_error)?;
            let event_id: i64 = row.try_get("event_id").map_err(db_error)?;
            let value = row.try_get::<Option<i64>, _>("v").map_err(db_error)?;
            Ok((version, Span::point(event_id, value.unwrap_or(0))))
        })
        .collect()
}

/// A block's spans, in the order of [`FIELDS`].
type Spans = [Option<Span>; 2];

/// [`SkuStore::roll_up_history`]: looks at up to [`ROLLUP_SCAN`] events
/// after the stored cursor; each event that begins a level-1 block (its
/// version a multiple of [`BASE`]) closes the SKU's previous one, which is
/// built from its events, and each block that completes its parent builds
/// the parent from its children. On PostgreSQL one instance does a round
/// at a time (an advisory lock held by the round's transaction); were two
/// to overlap anyway, blocks are immutable, so both would write the same
/// rows (the second insert does nothing).
pub(super) async fn roll_up(store: &SqlStore) -> Result<HistoryRollup, StoreError> {
    let cursor = || async {
        sqlx::query("SELECT upto FROM history_rollup WHERE id = 1")
            .fetch_one(&store.read)
            .await
            .map_err(db_error)?
            .try_get::<i64, _>(0)
            .map_err(db_error)
    };
    let newest = store.last_event_id().await?;
    let mut upto = cursor().await?;
    if upto >= newest {
        return Ok(HistoryRollup::default());
    }
    // On PostgreSQL one instance at a time does a round (the others would
    // repeat its reads and wait on its inserts); the lock goes with the
    // transaction that advances the cursor. SQLite has one instance.
    let mut leader = None;
    if store.backend == crate::store::Backend::Postgres {
        let mut tx = store.writer().begin().await.map_err(db_error)?;
        let won: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1)")
            .bind(ROLLUP_LOCK)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?
            .try_get(0)
            .map_err(db_error)?;
        if !won {
            tx.rollback().await.map_err(db_error)?;
            // Another instance is at it; the lag is the same for all.
            return Ok(HistoryRollup {
                behind: newest - upto,
                ..HistoryRollup::default()
            });
        }
        leader = Some(tx);
        // The previous leader may have moved it since.
        upto = cursor().await?;
    }
    let end = newest.min(upto.saturating_add(ROLLUP_SCAN));
    if end <= upto {
        return Ok(HistoryRollup::default());
    }
    let closing = sqlx::query(
        "SELECT sku, version FROM events WHERE event_id > $1 AND event_id <= $2 \
         AND version % $3 = 0 ORDER BY event_id",
    )
    .bind(upto)
    .bind(end)
    .bind(BASE)
    .fetch_all(&store.read)
    .await
    .map_err(db_error)?;
    let mut built: BTreeMap<(String, u32, i64), Spans> = BTreeMap::new();
    for row in &closing {
        let sku: String = row.try_get("sku").map_err(db_error)?;
        let version: i64 = row.try_get("version").map_err(db_error)?;
        let (mut level, mut index) = (1, version / BASE - 1);
        loop {
            let spans = build_block(store, &mut built, &sku, level, index).await?;
            built.insert((sku.clone(), level, index), spans);
            if level == LEVELS || (index + 1) % FANOUT != 0 {
                break;
            }
            (level, index) = (level + 1, index / FANOUT);
        }
    }
    let mut tx = match leader {
        Some(tx) => tx,
        None => store.begin().await?,
    };
    let rows: Vec<_> = built.iter().collect();
    for chunk in rows.chunks(200) {
        let values: Vec<String> = (0..chunk.len() * FIELDS.len())
            .map(|i| format!("({})", placeholders(1 + 11 * i, 11)))
            .collect();
        let sql = format!(
            "INSERT INTO history_blocks (sku, field, level, block, {SPAN_COLUMNS}) \
             VALUES {} ON CONFLICT (sku, field, level, block) DO NOTHING",
            values.join(", ")
        );
        let mut insert = sqlx::query(&sql);
        for ((sku, level, index), spans) in chunk {
            for (field, span) in FIELDS.iter().zip(spans.iter()) {
                insert = insert
                    .bind(sku.as_str())
                    .bind(field.as_str())
                    .bind(i64::from(*level))
                    .bind(*index)
                    .bind(span.map_or(0, |s| s.points))
                    .bind(span.map(|s| s.first))
                    .bind(span.map(|s| s.last))
                    .bind(span.map(|s| s.low.0))
                    .bind(span.map(|s| s.low.1))
                    .bind(span.map(|s| s.high.0))
                    .bind(span.map(|s| s.high.1));
            }
        }
        insert.execute(&mut *tx).await.map_err(db_error)?;
    }
    sqlx::query("UPDATE history_rollup SET upto = $1 WHERE id = 1 AND upto < $1")
        .bind(end)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    tx.commit().await.map_err(db_error)?;
    Ok(HistoryRollup {
        blocks: built.len() as u64,
        looked: end - upto,
        behind: newest - end,
    })
}

/// One block's spans: a level-1 block from its events, a higher one from
/// its children: built this round, stored, or (a roll-up that started
/// after them) built now, each the same way. Never a whole high block from
/// its events: at level 8 that would be 4 million rows.
fn build_block<'a>(
    store: &'a SqlStore,
    built: &'a mut BTreeMap<(String, u32, i64), Spans>,
    sku: &'a str,
    level: u32,
    index: i64,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Spans, StoreError>> + Send + 'a>> {
    Box::pin(async move {
        if level == 1 {
            return level_one(store, sku, index).await;
        }
        let first = index * FANOUT;
        let mut children: Vec<Option<Spans>> = (first..first + FANOUT)
            .map(|child| built.get(&(sku.to_owned(), level - 1, child)).copied())
            .collect();
        if children.iter().any(Option::is_none) {
            let stored = stored_children(store, sku, level - 1, first).await?;
            for (child, found) in children.iter_mut().zip(stored) {
                if child.is_none() {
                    *child = found;
                }
            }
        }
        let mut spans = Vec::with_capacity(FANOUT as usize);
        for (offset, child) in children.into_iter().enumerate() {
            let child = match child {
                Some(child) => child,
                None => {
                    let at = first + offset as i64;
                    let child = build_block(store, built, sku, level - 1, at).await?;
                    built.insert((sku.to_owned(), level - 1, at), child);
                    child
                }
            };
            spans.push(child);
        }
        Ok([0, 1].map(|f| Span::join(spans.iter().map(|c| c[f]))))
    })
}

/// A level-1 block from its [`BASE`] versions' events.
async fn level_one(store: &SqlStore, sku: &str, index: i64) -> Result<Spans, StoreError> {
    let start = index * BASE;
    let rows = sqlx::query(
        "SELECT event_id, version, field, stock_after, price_after FROM events \
         WHERE sku = $1 AND version >= $2 AND version <= $3 ORDER BY version",
    )
    .bind(sku)
    .bind(start)
    .bind(start + BASE - 1)
    .fetch_all(&store.read)
    .await
    .map_err(db_error)?;
    let mut spans: Spans = [None, None];
    for row in &rows {
        let event_id: i64 = row.try_get("event_id").map_err(db_error)?;
        let version: i64 = row.try_get("version").map_err(db_error)?;
        let field: String = row.try_get("field").map_err(db_error)?;
        for (i, f) in FIELDS.iter().enumerate() {
            if field == f.as_str() || (field == "meta" && version == 1) {
                let value: Option<i64> = row.try_get(column(*f)).map_err(db_error)?;
                let point = Span::point(event_id, value.unwrap_or(0));
                spans[i] = Some(spans[i].map_or(point, |s| s.then(point)));
            }
        }
    }
    Ok(spans)
}

/// The [`FANOUT`] blocks of `level` from `first` on, each if stored (both
/// fields).
async fn stored_children(
    store: &SqlStore,
    sku: &str,
    level: u32,
    first: i64,
) -> Result<Vec<Option<Spans>>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT field, block, {SPAN_COLUMNS} FROM history_blocks \
         WHERE sku = $1 AND level = $2 AND block >= $3 AND block <= $4"
    ))
    .bind(sku)
    .bind(i64::from(level))
    .bind(first)
    .bind(first + FANOUT - 1)
    .fetch_all(&store.read)
    .await
    .map_err(db_error)?;
    let mut children = vec![[None, None]; FANOUT as usize];
    let mut found = vec![0; FANOUT as usize];
    for row in &rows {
        let field: String = row.try_get("field").map_err(db_error)?;
        let block: i64 = row.try_get("block").map_err(db_error)?;
        let Some(f) = FIELDS.iter().position(|f| f.as_str() == field) else {
            continue;
        };
        let Some(child) = usize::try_from(block - first)
            .ok()
            .filter(|&c| c < children.len())
        else {
            continue;
        };
        children[child][f] = span_from_row(row)?;
        found[child] += 1;
    }
    Ok(children
        .into_iter()
        .zip(found)
        .map(|(spans, n)| (n == FIELDS.len()).then_some(spans))
        .collect())
}
