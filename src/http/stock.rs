//! Stock adjustments: single (`/skus/{sku}/stock/adjustments`) and atomic
//! batch (`/stock/adjustments`), both with `Idempotency-Key`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use skuwatch_actors::domain::{Command, SkuCode, WriteMeta};
use skuwatch_actors::messages::WriteRequest;
use skuwatch_actors::store::{AdjustmentLine, StoredResponse, WriteOutcome};

use super::error::{committed_or_error, stored_rejection, ErrorResponse};
use super::extract::{idempotency, if_match, ApiJson, SkuPath};
use super::validate::Checks;
use super::AppState;
use crate::auth::Admin;

/// Most lines in one batch adjustment.
pub const MAX_BATCH_LINES: usize = 1000;

/// Body of `POST /api/v1/skus/{sku}/stock/adjustments`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Adjustment)]
pub struct AdjustBody {
    /// Units to add (> 0) or take (< 0); not 0.
    #[schema(example = -3)]
    delta: i64,
    #[schema(max_length = 200, example = "sale")]
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

/// Keys of both adjustment routes share one namespace per user: a key
/// reused on the other route is a different request (422), not a second
/// write.
const IDEMPOTENCY_SCOPE: &str = "stock_adjustments";

/// `POST /api/v1/skus/{sku}/stock/adjustments` -> `{"sku": SKU, "event_id": n}`.
#[utoipa::path(
    post, path = "/api/v1/skus/{sku}/stock/adjustments", tag = "stock", security(("bearer" = [])),
    params(super::skus::SkuParam, ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r#"^([!-~]+|"([ !#-\[\]-~]|\\[\\"])+")$"#, description = "1-255 visible ASCII characters, bare or as a quoted string (`\"order-1001\"`, draft-ietf-httpapi-idempotency-key-header). Keys are per user. A retry with the same key and body within 24 h returns the first response (with `Idempotent-Replayed: true`) and changes nothing; the same key with another body is 422 `idempotency_mismatch`."), ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"(, ?(W/)?"[0-9]{1,18}")*|[0-9]{1,18})$"#, description = "`\"<version>\"`, a list of them, or `*` (RFC 9110 §13.1.1): refuse with 412 unless the SKU is at one of the listed versions. Strong comparison: a weak tag (`W/\"5\"`) never matches. A bare version (`5`) is read as `\"5\"`; other malformed values are 422.")),
    request_body(content = AdjustBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Adjusted", body = super::openapi::Adjusted),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 412, response = super::openapi::PreconditionFailed),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
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
        IDEMPOTENCY_SCOPE,
        &caller.username,
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

/// One line of a batch adjustment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = AdjustmentLine)]
pub struct BatchLine {
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$"
    )]
    sku: String,
    /// Not 0.
    delta: i64,
}

/// Body of `POST /api/v1/stock/adjustments`: all lines or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = BatchAdjustment)]
pub struct BatchBody {
    #[schema(min_items = 1, max_items = 1000)]
    #[serde(deserialize_with = "super::extract::objects")]
    adjustments: Vec<BatchLine>,
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// `POST /api/v1/stock/adjustments`: all lines or none (an order's lines);
/// 409 names every SKU that lacked stock.
#[utoipa::path(
    post, path = "/api/v1/stock/adjustments", tag = "stock", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r#"^([!-~]+|"([ !#-\[\]-~]|\\[\\"])+")$"#, description = "1-255 visible ASCII characters, bare or as a quoted string (`\"order-1001\"`, draft-ietf-httpapi-idempotency-key-header). Keys are per user. A retry with the same key and body within 24 h returns the first response (with `Idempotent-Replayed: true`) and changes nothing; the same key with another body is 422 `idempotency_mismatch`.")),
    request_body(content = BatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Every line adjusted", body = super::openapi::BatchAdjusted),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
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
    // Per SKU, the sum of its lines so far: a sum past the 64-bit range is
    // refused here, naming the line, rather than wrapping in the store.
    let mut totals: HashMap<SkuCode, i64> = HashMap::new();
    for (i, line) in lines.iter().enumerate() {
        let sku = checks.check(&format!("adjustments[{i}].sku"), SkuCode::parse(&line.sku));
        if line.delta == 0 {
            checks.fail(&format!("adjustments[{i}].delta"), "must not be 0");
        }
        if let Some(sku) = &sku {
            let total = totals.entry(sku.clone()).or_insert(0);
            match total.checked_add(line.delta) {
                Some(sum) => *total = sum,
                None => checks.fail(
                    &format!("adjustments[{i}].delta"),
                    format!(
                        "with the lines before it for {sku}, the total passes the 64-bit range"
                    ),
                ),
            }
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
    let user = meta.actor.as_deref().unwrap_or_default();
    let idem = idempotency(
        &headers,
        IDEMPOTENCY_SCOPE,
        user,
        &format!("batch|{request}"),
        render_batch,
    )?;
    let outcome = app.registry.write_batch(parsed, meta, idem).await?;
    let body = batch_body(&outcome);
    committed_or_error(outcome)?;
    Ok((StatusCode::OK, axum::Json(body)).into_response())
}
