//! Stock adjustments: single (`/skus/{sku}/stock/adjustments`) and atomic
//! batch (`/stock/adjustments`), both with `Idempotency-Key`.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use skuwatch_actors::domain::{Command, SkuCode, WriteMeta};
use skuwatch_actors::messages::WriteRequest;
use skuwatch_actors::store::{AdjustmentLine, Idempotency, StoredResponse, WriteOutcome};

use super::error::{committed_or_error, stored_rejection, ApiError, ErrorResponse};
use super::extract::{fingerprint, idempotency_key, if_match, ApiJson, SkuPath};
use super::validate::Checks;
use super::AppState;
use crate::auth::Admin;

/// Most lines in one batch adjustment.
pub const MAX_BATCH_LINES: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustBody {
    delta: i64,
    reason: Option<String>,
}

fn single_body(outcome: &WriteOutcome) -> Value {
    match outcome {
        WriteOutcome::Committed(changes) => changes.last().map_or(
            Value::Null,
            |c| json!({ "sku": c.sku, "event_id": c.event.event_id }),
        ),
        _ => Value::Null,
    }
}

fn batch_body(outcome: &WriteOutcome) -> Value {
    match outcome {
        WriteOutcome::Committed(changes) => json!({
            "results": changes
                .iter()
                .map(|c| json!({ "sku": c.sku, "event_id": c.event.event_id }))
                .collect::<Vec<_>>(),
        }),
        _ => Value::Null,
    }
}

fn render_single(outcome: &WriteOutcome) -> StoredResponse {
    stored_rejection(outcome).unwrap_or_else(|| StoredResponse {
        status: 200,
        body: single_body(outcome).to_string(),
    })
}

fn render_batch(outcome: &WriteOutcome) -> StoredResponse {
    stored_rejection(outcome).unwrap_or_else(|| StoredResponse {
        status: 200,
        body: batch_body(outcome).to_string(),
    })
}

/// Keys of both adjustment routes share one namespace: a key reused on
/// the other route is a different request (422), not a second write.
const IDEMPOTENCY_SCOPE: &str = "stock_adjustments";

/// The key with what identifies the request: the route and the validated
/// request (so key order, spacing and trimmed blanks do not matter).
fn idempotency(
    headers: &HeaderMap,
    request: &str,
    render: fn(&WriteOutcome) -> StoredResponse,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    Ok(Some(Idempotency {
        key,
        scope: IDEMPOTENCY_SCOPE.to_owned(),
        fingerprint: fingerprint(&[request.as_bytes()]),
        render,
    }))
}

/// `POST /api/v1/skus/{sku}/stock/adjustments` -> `{"sku": SKU, "event_id": n}`.
pub async fn adjust(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<AdjustBody>,
) -> Result<Response, ErrorResponse> {
    let mut checks = Checks::default();
    if body.value.delta == 0 {
        checks.fail("delta", "must not be 0");
    }
    let reason = checks.reason(body.value.reason.clone());
    checks.finish()?;
    let idempotency = idempotency(
        &headers,
        &format!("single|{sku}|{}|{:?}", body.value.delta, reason),
        render_single,
    )?;
    let request = WriteRequest {
        command: Command::Adjust {
            delta: body.value.delta,
        },
        meta: WriteMeta {
            reason,
            actor: Some(caller.username),
            if_match: if_match(&headers)?,
        },
        idempotency,
    };
    let outcome = app.registry.write(&sku, request).await?;
    let body = single_body(&outcome);
    committed_or_error(outcome)?;
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchLine {
    sku: String,
    delta: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    adjustments: Vec<BatchLine>,
    reason: Option<String>,
}

/// `POST /api/v1/stock/adjustments`: all lines or none (an order's lines);
/// 409 names every SKU that lacked stock.
pub async fn adjust_batch(
    State(app): State<AppState>,
    Admin(caller): Admin,
    headers: HeaderMap,
    body: ApiJson<BatchBody>,
) -> Result<Response, ErrorResponse> {
    let mut checks = Checks::default();
    let lines = &body.value.adjustments;
    if lines.is_empty() || lines.len() > MAX_BATCH_LINES {
        checks.fail(
            "adjustments",
            format!("must have 1-{MAX_BATCH_LINES} lines"),
        );
    }
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let sku = checks.check(&format!("adjustments[{i}].sku"), SkuCode::parse(&line.sku));
        if line.delta == 0 {
            checks.fail(&format!("adjustments[{i}].delta"), "must not be 0");
        }
        if let Some(sku) = sku {
            parsed.push(AdjustmentLine {
                sku,
                delta: line.delta,
            });
        }
    }
    let reason = checks.reason(body.value.reason.clone());
    checks.finish()?;
    let meta = WriteMeta {
        reason,
        actor: Some(caller.username),
        if_match: None,
    };
    let request = format!("{:?}|{:?}", parsed, meta.reason);
    let idem = idempotency(&headers, &format!("batch|{request}"), render_batch)?;
    let outcome = app.registry.write_batch(parsed, meta, idem).await?;
    let body = batch_body(&outcome);
    committed_or_error(outcome)?;
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
