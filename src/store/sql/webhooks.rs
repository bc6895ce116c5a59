//! Webhook endpoints, the outbox of their deliveries, and the audit log
//! (issue 19; `migrations/*/0010_webhooks.sql`).
//!
//! The outbox is transactional: [`enqueue`] writes an alert message's
//! delivery rows, body frozen, inside the transaction that raised,
//! acknowledged or resolved the alert, so a message exists exactly when its
//! change committed. Workers of every instance then [`claim`] due rows
//! under a lease (PostgreSQL `FOR UPDATE SKIP LOCKED`, and a conditional
//! update either way), so each attempt is made by one worker; a worker
//! that died leaves its claim to lapse, and the delivery is attempted again
//! with the same `webhook-id`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use skuwatch_actors::domain::{
    new_message_id, redact_url, AlertKind, Delivery, DeliveryStatus, DisabledReason, Endpoint,
    EndpointPatch, Message, Micros, SkuCode, WebhookEvent, WebhookFormat, DIGEST_TYPE, TEST_TYPE,
};
use skuwatch_actors::store::{
    AttemptResult, ClaimRules, Claimed, OutboxStats, StoreError, StoredSecrets,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{corrupt, db_error, placeholders, SqlStore, Tx};
use crate::store::Backend;

const ENDPOINT_COLUMNS: &str = "id, url, description, events, kinds, skus, format, enabled, \
     disabled_reason, created_us, updated_us, secret_rotated_us";

const DELIVERY_COLUMNS: &str = "d.id AS row_id, d.message_id, d.type, d.status, d.attempts, \
     d.created_us, d.last_attempt_us, d.last_status, d.last_error, d.next_attempt_us, \
     d.alert_id, d.event_id, g.message_id AS digest_message_id";

/// The length of the rate cap's window (µs).
const RATE_WINDOW_US: i64 = 60_000_000;

fn endpoint_from_row(row: &AnyRow) -> Result<Endpoint, StoreError> {
    let text = |name: &str| row.try_get::<Option<String>, _>(name).map_err(db_error);
    let list = |name: &str| -> Result<Option<Vec<String>>, StoreError> {
        text(name)?
            .map(|raw| serde_json::from_str(&raw).map_err(|_| corrupt(name)))
            .transpose()
    };
    let events = list("events")?
        .unwrap_or_default()
        .iter()
        .map(|e| WebhookEvent::parse(e).ok_or_else(|| corrupt("webhook event")))
        .collect::<Result<_, _>>()?;
    let kinds = list("kinds")?
        .map(|kinds| {
            kinds
                .iter()
                .map(|k| AlertKind::parse(k).ok_or_else(|| corrupt("webhook kind")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let skus = list("skus")?
        .map(|skus| {
            skus.iter()
                .map(|s| SkuCode::parse(s).map_err(|_| corrupt("webhook sku")))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let format: String = row.try_get("format").map_err(db_error)?;
    let reason = text("disabled_reason")?;
    Ok(Endpoint {
        id: row.try_get("id").map_err(db_error)?,
        url: row.try_get("url").map_err(db_error)?,
        description: row.try_get("description").map_err(db_error)?,
        events,
        kinds,
        skus,
        format: WebhookFormat::parse(&format).ok_or_else(|| corrupt("webhook format"))?,
        enabled: row.try_get::<i64, _>("enabled").map_err(db_error)? == 1,
        disabled_reason: reason
            .map(|r| DisabledReason::parse(&r).ok_or_else(|| corrupt("disabled reason")))
            .transpose()?,
        created_at: Micros(row.try_get("created_us").map_err(db_error)?),
        updated_at: Micros(row.try_get("updated_us").map_err(db_error)?),
        secret_rotated_at: row
            .try_get::<Option<i64>, _>("secret_rotated_us")
            .map_err(db_error)?
            .map(Micros),
    })
}

fn delivery_from_row(row: &AnyRow) -> Result<Delivery, StoreError> {
    let opt = |name: &str| row.try_get::<Option<i64>, _>(name).map_err(db_error);
    let status: String = row.try_get("status").map_err(db_error)?;
    Ok(Delivery {
        id: row.try_get("message_id").map_err(db_error)?,
        kind: row.try_get("type").map_err(db_error)?,
        status: DeliveryStatus::parse(&status).ok_or_else(|| corrupt("delivery status"))?,
        attempts: row.try_get("attempts").map_err(db_error)?,
        created_at: Micros(row.try_get("created_us").map_err(db_error)?),
        last_attempt_at: opt("last_attempt_us")?.map(Micros),
        last_status_code: opt("last_status")?,
        last_error: row.try_get("last_error").map_err(db_error)?,
        next_attempt_at: opt("next_attempt_us")?.map(Micros),
        alert_id: opt("alert_id")?,
        event_id: opt("event_id")?,
        digest_id: row.try_get("digest_message_id").map_err(db_error)?,
    })
}

fn json_list<T: serde::Serialize>(list: &Option<Vec<T>>) -> Option<String> {
    list.as_ref()
        .map(|l| serde_json::to_string(l).expect("a list serialises"))
}

async fn audit(
    tx: &mut Tx,
    endpoint: &str,
    actor: &str,
    action: &str,
    detail: &Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO webhook_audit (endpoint_id, actor, action, detail, at_us) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(endpoint)
    .bind(actor)
    .bind(action)
    .bind(detail.to_string())
    .bind(Micros::now().0)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// Writes the delivery rows of `messages` for every enabled endpoint that
/// wants each (its events, kinds and SKUs), in the caller's transaction.
/// Reads the endpoints only when there is a message: most write
/// transactions change no alert and pay nothing.
pub(super) async fn enqueue(tx: &mut Tx, messages: &[Message]) -> Result<u64, StoreError> {
    if messages.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE enabled = 1"
    ))
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    if rows.is_empty() {
        return Ok(0);
    }
    let endpoints = rows
        .iter()
        .map(endpoint_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let now = Micros::now().0;
    let mut written = 0;
    for message in messages {
        let Some(alert) = &message.alert else {
            continue;
        };
        for endpoint in endpoints
            .iter()
            .filter(|e| e.wants_alert(message.event, alert))
        {
            insert_delivery(
                tx,
                &endpoint.id,
                message.event.as_str(),
                &message.body,
                Some(alert.id),
                message.event_id,
                now,
            )
            .await?;
            written += 1;
        }
    }
    if written > 0 {
        metrics::counter!(crate::metrics::WEBHOOK_ENQUEUED).increment(written);
    }
    Ok(written)
}

async fn insert_delivery(
    tx: &mut Tx,
    endpoint: &str,
    kind: &str,
    body: &str,
    alert_id: Option<i64>,
    event_id: Option<i64>,
    now: i64,
) -> Result<i64, StoreError> {
    sqlx::query(
        "INSERT INTO webhook_deliveries (message_id, endpoint_id, type, body, status, attempts, \
         next_attempt_us, alert_id, event_id, created_us) \
         VALUES ($1, $2, $3, $4, 'pending', 0, $5, $6, $7, $5) RETURNING id",
    )
    .bind(new_message_id())
    .bind(endpoint)
    .bind(kind)
    .bind(body)
    .bind(now)
    .bind(alert_id)
    .bind(event_id)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?
    .try_get(0)
    .map_err(db_error)
}

/// Binds the endpoint's fields from `url` to `disabled_reason`, in the
/// order of the table (what a create and an update both write).
fn bind_fields<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    endpoint: &Endpoint,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(endpoint.url.clone())
        .bind(endpoint.description.clone())
        .bind(serde_json::to_string(&endpoint.events).expect("events serialise"))
        .bind(json_list(&endpoint.kinds))
        .bind(json_list(&endpoint.skus))
        .bind(endpoint.format.as_str())
        .bind(i64::from(endpoint.enabled))
        .bind(endpoint.disabled_reason.map(DisabledReason::as_str))
}

/// [`skuwatch_actors::store::SkuStore::create_webhook`]. A `sku.changed`
/// endpoint starts at the newest event: it is sent changes from now on.
pub(super) async fn create(
    store: &SqlStore,
    endpoint: &Endpoint,
    secret: &str,
    actor: &str,
) -> Result<(), StoreError> {
    let mut tx = store.begin().await?;
    let insert = sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, description, events, kinds, skus, format, \
         enabled, disabled_reason, secret, events_cursor, created_us, updated_us) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         (SELECT last_event_id FROM event_clock WHERE id = 1), $11, $11)",
    )
    .bind(&endpoint.id);
    bind_fields(insert, endpoint)
        .bind(secret)
        .bind(endpoint.created_at.0)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let detail = json!({
        "url": redact_url(&endpoint.url), "description": endpoint.description, "events": endpoint.events,
        "kinds": endpoint.kinds, "skus": endpoint.skus, "format": endpoint.format,
        "enabled": endpoint.enabled,
    });
    audit(&mut tx, &endpoint.id, actor, "created", &detail).await?;
    tx.commit().await.map_err(super::commit_error)
}

pub(super) async fn list(store: &SqlStore) -> Result<Vec<Endpoint>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_us DESC, id"
    ))
    .fetch_all(store.reader())
    .await
    .map_err(db_error)?;
    rows.iter().map(endpoint_from_row).collect()
}

pub(super) async fn load(store: &SqlStore, id: &str) -> Result<Option<Endpoint>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(store.reader())
    .await
    .map_err(db_error)?;
    row.as_ref().map(endpoint_from_row).transpose()
}

/// The row lock an endpoint is taken with. PostgreSQL `FOR NO KEY
/// UPDATE`: it excludes the other writers of the endpoint row, but not
/// the key-share lock a delivery INSERT of the write path takes on it, so
/// an admin's edit or a worker's record never holds up a stock write.
/// Every transaction that locks an endpoint and its deliveries takes the
/// endpoint first (update, record); a claim, which has its deliveries
/// already, skips an endpoint another transaction holds (`skip`).
fn endpoint_lock(store: &SqlStore, skip: bool) -> &'static str {
    match (store.backend, skip) {
        (Backend::Postgres, false) => " FOR NO KEY UPDATE",
        (Backend::Postgres, true) => " FOR NO KEY UPDATE SKIP LOCKED",
        (Backend::Sqlite, _) => "",
    }
}

/// The endpoint's row, locked for the rest of `tx`.
async fn lock(store: &SqlStore, tx: &mut Tx, id: &str) -> Result<Option<Endpoint>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1{}",
        endpoint_lock(store, false)
    ))
    .bind(id)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    row.as_ref().map(endpoint_from_row).transpose()
}

/// Ends the pending deliveries of a disabled endpoint (`cancelled`).
async fn cancel_pending(tx: &mut Tx, id: &str, now: i64) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE webhook_deliveries SET status = 'cancelled', next_attempt_us = NULL, \
         ended_us = $2 WHERE endpoint_id = $1 AND status = 'pending'",
    )
    .bind(id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// [`skuwatch_actors::store::SkuStore::update_webhook`]. An endpoint that
/// starts receiving `sku.changed` (newly, or by being enabled again) starts
/// at the newest event: changes made while it did not are not sent.
pub(super) async fn update(
    store: &SqlStore,
    id: &str,
    patch: &EndpointPatch,
    actor: &str,
) -> Result<Option<Endpoint>, StoreError> {
    let mut tx = store.begin().await?;
    let Some(mut endpoint) = lock(store, &mut tx, id).await? else {
        tx.rollback().await.map_err(db_error)?;
        return Ok(None);
    };
    let was_enabled = endpoint.enabled;
    let changes_before = endpoint.enabled && endpoint.events.contains(&WebhookEvent::SkuChanged);
    let now = Micros::now();
    patch.apply(&mut endpoint, now);
    let changes_after = endpoint.enabled && endpoint.events.contains(&WebhookEvent::SkuChanged);
    let query = sqlx::query(
        "UPDATE webhook_endpoints SET url = $2, description = $3, events = $4, kinds = $5, \
         skus = $6, format = $7, enabled = $8, disabled_reason = $9, updated_us = $10, \
         failing_since_us = CASE WHEN $12 = 1 THEN NULL ELSE failing_since_us END, \
         events_cursor = CASE WHEN $11 = 1 \
             THEN (SELECT last_event_id FROM event_clock WHERE id = 1) ELSE events_cursor END \
         WHERE id = $1",
    )
    .bind(id);
    bind_fields(query, &endpoint)
        .bind(now.0)
        .bind(i64::from(changes_after && !changes_before))
        // Enabled or disabled: a failing streak starts again.
        .bind(i64::from(was_enabled != endpoint.enabled))
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    // Disabled: nothing pending is sent. Enabled again: what is pending
    // was written while it was disabled (a write that read the endpoints
    // just before the disable), and "from then on" excludes it too.
    if was_enabled != endpoint.enabled || !endpoint.enabled {
        cancel_pending(&mut tx, id, now.0).await?;
    }
    audit(&mut tx, id, actor, "updated", &patch.audit_detail()).await?;
    tx.commit().await.map_err(super::commit_error)?;
    Ok(Some(endpoint))
}

pub(super) async fn delete(store: &SqlStore, id: &str, actor: &str) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    let done = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
    if done.rows_affected() == 0 {
        tx.rollback().await.map_err(db_error)?;
        return Ok(false);
    }
    audit(&mut tx, id, actor, "deleted", &json!({})).await?;
    tx.commit().await.map_err(super::commit_error)?;
    Ok(true)
}

pub(super) async fn rotate(
    store: &SqlStore,
    id: &str,
    secret: &str,
    previous_until: Micros,
    actor: &str,
) -> Result<Option<Endpoint>, StoreError> {
    let mut tx = store.begin().await?;
    let now = Micros::now();
    let done = sqlx::query(
        "UPDATE webhook_endpoints SET previous_secret = secret, \
         previous_secret_until_us = $3, secret = $2, secret_rotated_us = $4, updated_us = $4 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(secret)
    .bind(previous_until.0)
    .bind(now.0)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        tx.rollback().await.map_err(db_error)?;
        return Ok(None);
    }
    let detail = json!({"previous_secret_expires_at": previous_until});
    audit(&mut tx, id, actor, "secret_rotated", &detail).await?;
    let endpoint = lock(store, &mut tx, id).await?;
    tx.commit().await.map_err(super::commit_error)?;
    Ok(endpoint)
}

pub(super) async fn deliveries(
    store: &SqlStore,
    endpoint: &str,
    status: Option<DeliveryStatus>,
    limit: i64,
) -> Result<Vec<Delivery>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         LEFT JOIN webhook_deliveries g ON g.id = d.digest_id \
         WHERE d.endpoint_id = $1 AND ($2 = '' OR d.status = $2) ORDER BY d.id DESC LIMIT $3"
    ))
    .bind(endpoint)
    .bind(status.map_or("", DeliveryStatus::as_str))
    .bind(limit)
    .fetch_all(store.reader())
    .await
    .map_err(db_error)?;
    rows.iter().map(delivery_from_row).collect()
}

/// [`skuwatch_actors::store::SkuStore::load_delivery`].
pub(super) async fn delivery(
    store: &SqlStore,
    message_id: &str,
) -> Result<Option<Delivery>, StoreError> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d \
         LEFT JOIN webhook_deliveries g ON g.id = d.digest_id WHERE d.message_id = $1"
    ))
    .bind(message_id)
    .fetch_optional(store.reader())
    .await
    .map_err(db_error)?;
    row.as_ref().map(delivery_from_row).transpose()
}

/// A due row, as the claim first reads it.
struct Due {
    row: i64,
    endpoint: String,
    attempts: i64,
    kind: String,
}

/// Whether a message may be folded into a digest: a fresh alert or change
/// message (a retry has been sent before; a test is the admin's own).
fn foldable(kind: &str, attempts: i64) -> bool {
    attempts == 0 && kind != TEST_TYPE && kind != DIGEST_TYPE
}

/// [`skuwatch_actors::store::SkuStore::claim_deliveries`].
///
/// One transaction: read the due rows of enabled endpoints (PostgreSQL
/// skips rows another worker's claim has locked), apply each endpoint's
/// rate cap (folding its fresh messages into digests past it), then take
/// the rows with a conditional update (`lease_until_us` past), which is
/// what makes a claim exclusive on SQLite too (another process may share
/// the file).
pub(super) async fn claim(
    store: &SqlStore,
    rules: &ClaimRules,
) -> Result<Vec<Claimed>, StoreError> {
    // Most rounds find nothing: ask before taking the write lock.
    let any: Option<i64> = sqlx::query(
        "SELECT d.id FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.status = 'pending' AND d.next_attempt_us <= $1 AND d.lease_until_us <= $1 \
         AND e.enabled = 1 LIMIT 1",
    )
    .bind(rules.now.0)
    .fetch_optional(store.reader())
    .await
    .map_err(db_error)?
    .map(|row| row.try_get(0))
    .transpose()
    .map_err(db_error)?;
    if any.is_none() {
        return Ok(Vec::new());
    }
    let mut tx = store.begin().await?;
    // The lease runs from now, not from before the wait for a connection.
    let rules = &ClaimRules {
        now: Micros::now(),
        ..*rules
    };
    let now = rules.now.0;
    let skip_locked = match store.backend {
        Backend::Postgres => " FOR UPDATE OF d SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let due = sqlx::query(&format!(
        "SELECT d.id, d.endpoint_id, d.attempts, d.type FROM webhook_deliveries d \
         JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.status = 'pending' AND d.next_attempt_us <= $1 AND d.lease_until_us <= $1 \
         AND e.enabled = 1 ORDER BY d.next_attempt_us, d.id LIMIT $2{skip_locked}"
    ))
    .bind(now)
    .bind(rules.limit)
    .fetch_all(&mut *tx)
    .await
    .map_err(db_error)?
    .iter()
    .map(|row| {
        Ok(Due {
            row: row.try_get(0).map_err(db_error)?,
            endpoint: row.try_get(1).map_err(db_error)?,
            attempts: row.try_get(2).map_err(db_error)?,
            kind: row.try_get(3).map_err(db_error)?,
        })
    })
    .collect::<Result<Vec<Due>, StoreError>>()?;
    if due.is_empty() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(Vec::new());
    }
    let mut rows: BTreeSet<i64> = due.iter().map(|d| d.row).collect();
    if let Some(cap) = rules.rate_cap {
        let mut fresh: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
        for d in due.iter().filter(|d| foldable(&d.kind, d.attempts)) {
            fresh.entry(d.endpoint.as_str()).or_default().push(d.row);
        }
        for (endpoint, batch) in fresh {
            match rate_cap(store, &mut tx, endpoint, &batch, cap, rules).await? {
                RateCap::Within => {}
                RateCap::Folded(digest) => {
                    for folded in &digest.folded {
                        rows.remove(folded);
                    }
                    rows.insert(digest.row);
                }
                RateCap::Busy => {
                    for row in &batch {
                        rows.remove(row);
                    }
                }
            }
        }
    }
    let rows: Vec<i64> = rows.into_iter().collect();
    let claimed = take(&mut tx, &rows, rules).await?;
    tx.commit().await.map_err(super::commit_error)?;
    Ok(claimed)
}

/// What [`rate_cap`] did with an endpoint's fresh messages.
enum RateCap {
    /// Within the cap: sent as they are.
    Within,
    /// Past it: folded into this digest.
    Folded(Digest),
    /// The endpoint row is locked by another transaction: left for the
    /// next claim.
    Busy,
}

/// A digest written by [`rate_cap`].
struct Digest {
    row: i64,
    folded: Vec<i64>,
}

/// Counts `batch` (the endpoint's fresh messages in this claim) against the
/// endpoint's messages of the current minute. Within the cap they are sent
/// as they are; past it, every fresh message of the endpoint that is due
/// (up to `digest_max`, oldest first, `batch` included) is folded into one
/// new `alert.digest` message: each folded row becomes `digested`, naming
/// the digest, in this transaction, so every message is sent exactly once,
/// alone or in one digest.
async fn rate_cap(
    store: &SqlStore,
    tx: &mut Tx,
    endpoint: &str,
    batch: &[i64],
    cap: i64,
    rules: &ClaimRules,
) -> Result<RateCap, StoreError> {
    let now = rules.now.0;
    let row = sqlx::query(&format!(
        "SELECT window_start_us, window_count FROM webhook_endpoints WHERE id = $1{}",
        endpoint_lock(store, true)
    ))
    .bind(endpoint)
    .fetch_optional(&mut **tx)
    .await
    .map_err(db_error)?;
    // Held by an admin's edit or a record: this endpoint's fresh messages
    // wait for the next claim (waiting here, with the deliveries locked,
    // would take the locks in the other order).
    let Some(row) = row else {
        return Ok(RateCap::Busy);
    };
    let (mut start, mut count): (i64, i64) = (
        row.try_get(0).map_err(db_error)?,
        row.try_get(1).map_err(db_error)?,
    );
    if now - start >= RATE_WINDOW_US {
        (start, count) = (now, 0);
    }
    let within = count + batch.len() as i64 <= cap;
    let capped = if within {
        count += batch.len() as i64;
        RateCap::Within
    } else {
        count += 1;
        RateCap::Folded(fold(store, tx, endpoint, rules).await?)
    };
    sqlx::query(
        "UPDATE webhook_endpoints SET window_start_us = $2, window_count = $3 WHERE id = $1",
    )
    .bind(endpoint)
    .bind(start)
    .bind(count)
    .execute(&mut **tx)
    .await
    .map_err(db_error)?;
    Ok(capped)
}

/// Folds the endpoint's due fresh messages into one digest message; see
/// [`rate_cap`].
async fn fold(
    store: &SqlStore,
    tx: &mut Tx,
    endpoint: &str,
    rules: &ClaimRules,
) -> Result<Digest, StoreError> {
    let now = rules.now.0;
    let skip_locked = match store.backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let rows = sqlx::query(&format!(
        "SELECT id, message_id, type, body FROM webhook_deliveries \
         WHERE endpoint_id = $1 AND status = 'pending' AND attempts = 0 \
         AND type <> $2 AND type <> $3 AND next_attempt_us <= $4 AND lease_until_us <= $4 \
         ORDER BY id LIMIT $5{skip_locked}"
    ))
    .bind(endpoint)
    .bind(TEST_TYPE)
    .bind(DIGEST_TYPE)
    .bind(now)
    .bind(rules.digest_max)
    .fetch_all(&mut **tx)
    .await
    .map_err(db_error)?;
    let mut folded = Vec::with_capacity(rows.len());
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        folded.push(row.try_get::<i64, _>("id").map_err(db_error)?);
        let body: String = row.try_get("body").map_err(db_error)?;
        let body: Value = serde_json::from_str(&body).map_err(|_| corrupt("delivery body"))?;
        let mut entry = json!({
            "id": row.try_get::<String, _>("message_id").map_err(db_error)?,
            "type": row.try_get::<String, _>("type").map_err(db_error)?,
        });
        // The digest names each message and carries its subject (the
        // alert, or the event), not every message's copy of the SKU.
        if let Some(data) = body.get("data").and_then(Value::as_object) {
            for (name, value) in data.iter().filter(|(name, _)| *name != "sku") {
                entry[name] = value.clone();
            }
        }
        messages.push(entry);
    }
    let body = json!({
        "type": DIGEST_TYPE,
        "timestamp": rules.now,
        "data": {"count": messages.len(), "messages": messages},
    });
    let digest = insert_delivery(
        tx,
        endpoint,
        DIGEST_TYPE,
        &body.to_string(),
        None,
        None,
        now,
    )
    .await?;
    for chunk in folded.chunks(500) {
        let sql = format!(
            "UPDATE webhook_deliveries SET status = 'digested', digest_id = $1, \
             next_attempt_us = NULL, ended_us = $2 WHERE id IN ({})",
            placeholders(3, chunk.len())
        );
        let mut query = sqlx::query(&sql).bind(digest).bind(now);
        for id in chunk {
            query = query.bind(*id);
        }
        query.execute(&mut **tx).await.map_err(db_error)?;
    }
    metrics::counter!(crate::metrics::WEBHOOK_DIGESTS).increment(1);
    metrics::counter!(crate::metrics::WEBHOOK_DIGESTED).increment(folded.len() as u64);
    Ok(Digest {
        row: digest,
        folded,
    })
}

/// Takes `rows` for one attempt each (the conditional update that makes a
/// claim exclusive) and reads what their attempts need.
async fn take(tx: &mut Tx, rows: &[i64], rules: &ClaimRules) -> Result<Vec<Claimed>, StoreError> {
    let mut claimed = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(500) {
        let sql = format!(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, lease_until_us = $1 \
             WHERE status = 'pending' AND lease_until_us <= $2 AND id IN ({}) \
             RETURNING id, message_id, endpoint_id, type, body, attempts, created_us",
            placeholders(3, chunk.len())
        );
        let mut query = sqlx::query(&sql)
            .bind(rules.now.0.saturating_add(rules.lease_us))
            .bind(rules.now.0);
        for id in chunk {
            query = query.bind(*id);
        }
        for row in query.fetch_all(&mut **tx).await.map_err(db_error)? {
            claimed.push(Claimed {
                row: row.try_get("id").map_err(db_error)?,
                message_id: row.try_get("message_id").map_err(db_error)?,
                kind: row.try_get("type").map_err(db_error)?,
                body: row.try_get("body").map_err(db_error)?,
                attempt: row.try_get("attempts").map_err(db_error)?,
                created_at: Micros(row.try_get("created_us").map_err(db_error)?),
                endpoint_id: row.try_get("endpoint_id").map_err(db_error)?,
                url: String::new(),
                format: WebhookFormat::Standard,
                secrets: StoredSecrets {
                    current: String::new(),
                    previous: None,
                },
            });
        }
    }
    fill_endpoints(tx, &mut claimed).await?;
    claimed.sort_by_key(|c| c.row);
    Ok(claimed)
}

/// Sets each claimed delivery's URL, format and secrets from its endpoint.
async fn fill_endpoints(tx: &mut Tx, claimed: &mut [Claimed]) -> Result<(), StoreError> {
    let ids: BTreeSet<String> = claimed.iter().map(|c| c.endpoint_id.clone()).collect();
    if ids.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT id, url, format, secret, previous_secret, previous_secret_until_us \
         FROM webhook_endpoints WHERE id IN ({})",
        placeholders(1, ids.len())
    );
    type EndpointRow = (String, String, String, String, Option<String>, Option<i64>);
    let mut query = sqlx::query_as::<_, EndpointRow>(&sql);
    for id in &ids {
        query = query.bind(id.as_str());
    }
    let mut endpoints = BTreeMap::new();
    for (id, url, format, secret, previous, until) in
        query.fetch_all(&mut **tx).await.map_err(db_error)?
    {
        let format = WebhookFormat::parse(&format).ok_or_else(|| corrupt("webhook format"))?;
        let secrets = StoredSecrets {
            current: secret,
            previous: previous.zip(until.map(Micros)),
        };
        endpoints.insert(id, (url, format, secrets));
    }
    for c in claimed.iter_mut() {
        let (url, format, secrets) = endpoints
            .get(&c.endpoint_id)
            .ok_or_else(|| corrupt("delivery endpoint"))?;
        c.url.clone_from(url);
        c.format = *format;
        c.secrets = secrets.clone();
    }
    Ok(())
}

/// [`skuwatch_actors::store::SkuStore::record_attempt`].
pub(super) async fn record(
    store: &SqlStore,
    claimed: &Claimed,
    result: &AttemptResult,
) -> Result<bool, StoreError> {
    let mut tx = store.begin().await?;
    // The endpoint first, as every transaction that locks both does.
    sqlx::query(&format!(
        "SELECT id FROM webhook_endpoints WHERE id = $1{}",
        endpoint_lock(store, false)
    ))
    .bind(&claimed.endpoint_id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(db_error)?;
    let status = match (&result.error, result.retry_at) {
        (None, _) => DeliveryStatus::Delivered,
        (Some(_), Some(_)) if !result.gone => DeliveryStatus::Pending,
        (Some(_), _) => DeliveryStatus::Failed,
    };
    let next = (status == DeliveryStatus::Pending)
        .then_some(result.retry_at)
        .flatten();
    let ended = (status != DeliveryStatus::Pending).then_some(result.at.0);
    // A delivery cancelled during its attempt (its endpoint disabled)
    // records the attempt; it stays cancelled unless it was delivered.
    let done = sqlx::query(
        "UPDATE webhook_deliveries SET \
         status = CASE WHEN status = 'cancelled' AND $3 <> 'delivered' THEN 'cancelled' ELSE $3 END, \
         next_attempt_us = CASE WHEN status = 'cancelled' AND $3 <> 'delivered' THEN NULL ELSE $4 END, \
         ended_us = CASE WHEN status = 'cancelled' AND $3 <> 'delivered' THEN ended_us ELSE $8 END, \
         lease_until_us = 0, last_attempt_us = $5, last_status = $6, last_error = $7 \
         WHERE id = $1 AND attempts = $2 AND status IN ('pending', 'cancelled')",
    )
    .bind(claimed.row)
    .bind(claimed.attempt)
    .bind(status.as_str())
    .bind(next.map(|t| t.0))
    .bind(result.at.0)
    .bind(result.status_code)
    .bind(result.error.as_deref())
    .bind(ended)
    .execute(&mut *tx)
    .await
    .map_err(db_error)?;
    if done.rows_affected() == 0 {
        tx.rollback().await.map_err(db_error)?;
        return Ok(false);
    }
    let at = result.at.0;
    let disable = if result.error.is_none() {
        sqlx::query("UPDATE webhook_endpoints SET failing_since_us = NULL WHERE id = $1")
            .bind(&claimed.endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        None
    } else if result.gone {
        Some(DisabledReason::Gone)
    } else {
        let since: Option<i64> = sqlx::query(
            "UPDATE webhook_endpoints SET failing_since_us = COALESCE(failing_since_us, $2) \
             WHERE id = $1 RETURNING failing_since_us",
        )
        .bind(&claimed.endpoint_id)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?
        .map(|row| row.try_get(0))
        .transpose()
        .map_err(db_error)?;
        since
            .filter(|since| at - since >= result.disable_failing_after_us)
            .map(|_| DisabledReason::Failing)
    };
    if let Some(reason) = disable {
        let disabled = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $2, updated_us = $3 \
             WHERE id = $1 AND enabled = 1",
        )
        .bind(&claimed.endpoint_id)
        .bind(reason.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if disabled.rows_affected() == 1 {
            cancel_pending(&mut tx, &claimed.endpoint_id, at).await?;
            let detail = json!({"enabled": false, "disabled_reason": reason});
            audit(
                &mut tx,
                &claimed.endpoint_id,
                "skuwatch",
                "disabled",
                &detail,
            )
            .await?;
            metrics::counter!(crate::metrics::WEBHOOK_ENDPOINTS_DISABLED, "reason" => reason.as_str())
                .increment(1);
        }
    }
    tx.commit().await.map_err(super::commit_error)?;
    Ok(true)
}

/// [`skuwatch_actors::store::SkuStore::create_test_delivery`]: written
/// with its one attempt already claimed (and counted), so no worker takes
/// it; a test is sent whether or not the endpoint is enabled.
pub(super) async fn create_test(
    store: &SqlStore,
    endpoint: &str,
    body: &str,
    rules: &ClaimRules,
) -> Result<Option<Claimed>, StoreError> {
    let mut tx = store.begin().await?;
    if lock(store, &mut tx, endpoint).await?.is_none() {
        tx.rollback().await.map_err(db_error)?;
        return Ok(None);
    }
    let row = insert_delivery(&mut tx, endpoint, TEST_TYPE, body, None, None, rules.now.0).await?;
    let claimed = take(&mut tx, &[row], rules).await?;
    tx.commit().await.map_err(super::commit_error)?;
    Ok(claimed.into_iter().next())
}

/// [`skuwatch_actors::store::SkuStore::feed_sku_changes`]. The events are
/// read as every reader reads them (an external change's with its alerts
/// settled); the cursor moves with a conditional update, so two instances
/// feeding the same endpoint at once write its deliveries once.
pub(super) async fn feed_sku_changes(store: &SqlStore, limit: i64) -> Result<u64, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT {ENDPOINT_COLUMNS}, events_cursor FROM webhook_endpoints \
         WHERE enabled = 1 AND events LIKE '%sku.changed%' \
         AND events_cursor < (SELECT last_event_id FROM event_clock WHERE id = 1)"
    ))
    .fetch_all(store.reader())
    .await
    .map_err(db_error)?;
    let mut written = 0;
    for row in &rows {
        let endpoint = endpoint_from_row(row)?;
        let cursor: i64 = row.try_get("events_cursor").map_err(db_error)?;
        let changes = <SqlStore as skuwatch_actors::store::SkuStore>::events_after(
            store, cursor, limit, None,
        )
        .await?;
        let Some(last) = changes.last().map(|c| c.event.event_id) else {
            continue;
        };
        let mut tx = store.begin().await?;
        let moved = sqlx::query(
            "UPDATE webhook_endpoints SET events_cursor = $3 \
             WHERE id = $1 AND events_cursor = $2 AND enabled = 1",
        )
        .bind(&endpoint.id)
        .bind(cursor)
        .bind(last)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        if moved.rows_affected() == 0 {
            tx.rollback().await.map_err(db_error)?;
            continue;
        }
        let now = Micros::now().0;
        for change in changes.iter().filter(|c| endpoint.wants_sku(&c.sku.sku)) {
            let message = Message::sku_changed(change);
            insert_delivery(
                &mut tx,
                &endpoint.id,
                message.event.as_str(),
                &message.body,
                None,
                message.event_id,
                now,
            )
            .await?;
            written += 1;
        }
        tx.commit().await.map_err(super::commit_error)?;
    }
    if written > 0 {
        metrics::counter!(crate::metrics::WEBHOOK_ENQUEUED).increment(written);
    }
    Ok(written)
}

pub(super) async fn stats(store: &SqlStore) -> Result<OutboxStats, StoreError> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n, MIN(d.created_us) AS oldest FROM webhook_deliveries d \
         JOIN webhook_endpoints e ON e.id = d.endpoint_id \
         WHERE d.status = 'pending' AND e.enabled = 1",
    )
    .fetch_one(store.reader())
    .await
    .map_err(db_error)?;
    Ok(OutboxStats {
        pending: row.try_get("n").map_err(db_error)?,
        oldest: row
            .try_get::<Option<i64>, _>("oldest")
            .map_err(db_error)?
            .map(Micros),
    })
}
