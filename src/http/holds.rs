//! Holds (issue 17; API.md v1 additions, Holds): `/api/v1/holds` and the
//! actions on one hold. Writes go through the actor of the hold's lowest
//! SKU code ([`skuwatch_actors::registry::Registry::write_hold`]); the
//! rules are in `actors/src/domain/hold.rs`.

use std::collections::HashSet;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use skuwatch_actors::domain::{
    Hold, HoldAction, HoldId, HoldLine, HoldStatus, SkuCode, WriteMeta, DEFAULT_HOLD_TTL_US,
    MAX_HOLD_TTL_US,
};
use skuwatch_actors::store::{HoldQuery, StoredResponse, WriteOutcome};

use super::error::{committed_or_error, stored_rejection, ApiError, ErrorResponse};
use super::extract::{idempotency, ApiJson, ApiQuery};
use super::validate::{Checks, MAX_REASON_CHARS};
use super::AppState;
use crate::auth::{Caller, HoldWriter};

/// Most lines in one hold (an order's lines).
pub const MAX_HOLD_LINES: usize = 100;

/// Largest quantity of one line: far above any real stock, small enough
/// that sums of many holds stay far inside the 64-bit range.
pub const MAX_HOLD_QUANTITY: i64 = 1_000_000_000_000;

/// One line of `POST /api/v1/holds`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HoldLineInput)]
pub struct LineBody {
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$"
    )]
    sku: String,
    /// Units to hold, 1 or more.
    #[schema(minimum = 1, maximum = 1_000_000_000_000_i64)]
    quantity: i64,
}

/// Body of `POST /api/v1/holds`: all lines or none.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewHold)]
pub struct CreateBody {
    /// 1-100 lines, each SKU at most once.
    #[schema(min_items = 1, max_items = 100)]
    #[serde(deserialize_with = "super::extract::objects")]
    lines: Vec<LineBody>,
    /// Seconds until the hold expires: 1-86400, default 900 (15 min).
    #[schema(minimum = 1, maximum = 86400)]
    ttl_secs: Option<i64>,
    /// The client's label (a cart or order id), up to 200 characters.
    #[schema(max_length = 200, example = "cart-77")]
    reference: Option<String>,
}

/// Body of `POST /api/v1/holds/{id}/extend`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = HoldExtension)]
pub struct ExtendBody {
    /// Seconds from now until the hold expires: 1-86400.
    #[schema(minimum = 1, maximum = 86400)]
    ttl_secs: i64,
}

/// Query of `GET /api/v1/holds`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only holds with a line of this SKU.
    #[param(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$",
        nullable = false
    )]
    sku: Option<String>,
    /// `active`, `released`, `expired` or `committed`.
    #[param(pattern = "^(active|released|expired|committed)$", nullable = false)]
    status: Option<String>,
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false)]
    cursor: Option<String>,
}

/// `ttl_secs` as microseconds, or the error noted.
fn ttl(checks: &mut Checks, ttl_secs: Option<i64>) -> i64 {
    let max = MAX_HOLD_TTL_US / 1_000_000;
    match ttl_secs {
        None => DEFAULT_HOLD_TTL_US,
        Some(secs) if (1..=max).contains(&secs) => secs * 1_000_000,
        Some(_) => {
            checks.fail("ttl_secs", format!("must be 1-{max} seconds"));
            0
        }
    }
}

fn hold_body(outcome: &WriteOutcome) -> Option<&Hold> {
    match outcome {
        WriteOutcome::Held { hold, .. } => Some(hold),
        _ => None,
    }
}

fn render(outcome: &WriteOutcome, status: u16) -> StoredResponse {
    stored_rejection(outcome).unwrap_or_else(|| StoredResponse {
        status,
        body: json!(hold_body(outcome)).to_string(),
    })
}

fn render_created(outcome: &WriteOutcome) -> StoredResponse {
    render(outcome, 201)
}

fn render_committed(outcome: &WriteOutcome) -> StoredResponse {
    render(outcome, 200)
}

/// The hold of a hold job's outcome, or the problem (a refusal, a replay).
fn held(outcome: WriteOutcome) -> Result<Hold, ErrorResponse> {
    let hold = hold_body(&outcome).cloned();
    committed_or_error(outcome)?;
    // A hold job that was accepted always answers its hold.
    hold.ok_or_else(|| bug("a hold job answered without its hold").into())
}

/// A 500 for what cannot happen; logged, never shown.
fn bug(what: &str) -> ApiError {
    tracing::error!(what, "holds: broken invariant");
    ApiError::internal()
}

fn location(hold: &Hold) -> String {
    format!("/api/v1/holds/{}", hold.id)
}

/// `POST /api/v1/holds` (admin or checkout) -> 201 Hold with `Location`.
#[utoipa::path(
    post, path = "/api/v1/holds", tag = "holds", security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r#"^([!-~]+|"([ !#-\[\]-~]|\\[\\"])+")$"#, description = "As for stock adjustments: a retry with the same key and body within 24 h answers the first response (the same hold) and holds nothing more.")),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Held", body = super::openapi::HoldDoc,
         headers(("Location" = String, description = "`/api/v1/holds/{id}`"))),
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
pub async fn create(
    State(app): State<AppState>,
    HoldWriter(caller): HoldWriter,
    headers: HeaderMap,
    body: ApiJson<CreateBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    let mut checks = Checks::default();
    if body.lines.is_empty() || body.lines.len() > MAX_HOLD_LINES {
        checks.fail("lines", format!("must have 1-{MAX_HOLD_LINES} lines"));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    let mut seen = HashSet::new();
    for (i, line) in body.lines.iter().enumerate() {
        let sku = checks.check(&format!("lines[{i}].sku"), SkuCode::parse(&line.sku));
        if !(1..=MAX_HOLD_QUANTITY).contains(&line.quantity) {
            checks.fail(
                &format!("lines[{i}].quantity"),
                format!("must be 1-{MAX_HOLD_QUANTITY}"),
            );
        }
        if let Some(sku) = sku {
            if !seen.insert(sku.clone()) {
                checks.fail(
                    &format!("lines[{i}].sku"),
                    format!("{sku} is on an earlier line; one line per SKU"),
                );
            }
            lines.push(HoldLine {
                sku,
                quantity: line.quantity,
            });
        }
    }
    let ttl_us = ttl(&mut checks, body.ttl_secs);
    let reference = body.reference.map(|r| r.trim().to_owned());
    if let Some(r) = &reference {
        if r.is_empty() || r.chars().count() > MAX_REASON_CHARS || r.chars().any(char::is_control) {
            checks.fail(
                "reference",
                format!("must be 1-{MAX_REASON_CHARS} printable characters"),
            );
        }
    }
    checks.finish()?;
    let request = format!("{lines:?}|{ttl_us}|{reference:?}");
    let idem = idempotency(
        &headers,
        "holds",
        &caller.username,
        &request,
        render_created,
    )?;
    let lead = lines
        .iter()
        .map(|l| &l.sku)
        .min()
        .cloned()
        .ok_or_else(|| ApiError::field("lines", "must have 1 or more lines"))?;
    let action = HoldAction::Create {
        id: HoldId::generate(),
        lines,
        ttl_us,
        reference,
    };
    let outcome = app
        .registry
        .write_hold(&lead, action, meta(caller), idem)
        .await?;
    let hold = held(outcome)?;
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location(&hold))],
        Json(hold),
    )
        .into_response())
}

fn meta(caller: Caller) -> WriteMeta {
    WriteMeta {
        reason: None,
        actor: Some(caller.username),
        if_match: None,
    }
}

/// The hold named in the path, as stored: a 404 for an id no hold has.
async fn stored(app: &AppState, raw: &str) -> Result<Hold, ApiError> {
    let missing = || ApiError::not_found(format!("hold {raw} does not exist"));
    let id = HoldId::parse(raw).ok_or_else(missing)?;
    app.store.load_hold(&id).await?.ok_or_else(missing)
}

/// Runs `action` on a stored hold through its lead SKU's actor.
async fn act(
    app: &AppState,
    caller: Caller,
    hold: &Hold,
    action: HoldAction,
    headers: &HeaderMap,
    key_route: Option<&str>,
) -> Result<Response, ErrorResponse> {
    let lead = hold
        .lines
        .iter()
        .map(|l| &l.sku)
        .min()
        .cloned()
        .ok_or_else(|| bug("a stored hold without lines"))?;
    let idem = match key_route {
        Some(route) => idempotency(
            headers,
            route,
            &caller.username,
            hold.id.as_str(),
            render_committed,
        )?,
        None => None,
    };
    let outcome = app
        .registry
        .write_hold(&lead, action, meta(caller), idem)
        .await?;
    Ok(Json(held(outcome)?).into_response())
}

/// `GET /api/v1/holds/{id}` (any role).
#[utoipa::path(
    get, path = "/api/v1/holds/{id}", tag = "holds", security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id (a UUID)")),
    responses(
        (status = 200, description = "The hold", body = super::openapi::HoldDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    _: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(stored(&app, &id).await?).into_response())
}

/// `POST /api/v1/holds/{id}/extend` (admin or checkout): the hold expires
/// `ttl_secs` from now (on the database's clock).
#[utoipa::path(
    post, path = "/api/v1/holds/{id}/extend", tag = "holds", security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id (a UUID)")),
    request_body(content = ExtendBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The hold", body = super::openapi::HoldDoc),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn extend(
    State(app): State<AppState>,
    HoldWriter(caller): HoldWriter,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: ApiJson<ExtendBody>,
) -> Result<Response, ErrorResponse> {
    let mut checks = Checks::default();
    let ttl_us = ttl(&mut checks, Some(body.value.ttl_secs));
    checks.finish()?;
    let hold = stored(&app, &id).await?;
    let action = HoldAction::Extend {
        id: hold.id.clone(),
        ttl_us,
    };
    act(&app, caller, &hold, action, &headers, None).await
}

/// `POST /api/v1/holds/{id}/release` (admin or checkout): the units go
/// back to `available`.
#[utoipa::path(
    post, path = "/api/v1/holds/{id}/release", tag = "holds", security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id (a UUID)")),
    responses(
        (status = 200, description = "The hold, released", body = super::openapi::HoldDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn release(
    State(app): State<AppState>,
    HoldWriter(caller): HoldWriter,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorResponse> {
    let hold = stored(&app, &id).await?;
    let action = HoldAction::Release {
        id: hold.id.clone(),
    };
    act(&app, caller, &hold, action, &headers, None).await
}

/// `POST /api/v1/holds/{id}/commit` (admin or checkout): the held units
/// become `sale` adjustments, in one transaction.
#[utoipa::path(
    post, path = "/api/v1/holds/{id}/commit", tag = "holds", security(("bearer" = [])),
    params(("id" = String, Path, description = "Hold id (a UUID)"),
           ("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = r#"^([!-~]+|"([ !#-\[\]-~]|\\[\\"])+")$"#, description = "A retry with the same key within 24 h answers the first response (`Idempotent-Replayed: true`); without a key, a second commit answers 409 `hold_not_active` with the sale's `event_ids`.")),
    responses(
        (status = 200, description = "The hold, committed: `status` and the sale's `event_ids`", body = super::openapi::HoldDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn commit(
    State(app): State<AppState>,
    HoldWriter(caller): HoldWriter,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ErrorResponse> {
    let hold = stored(&app, &id).await?;
    let action = HoldAction::Commit {
        id: hold.id.clone(),
    };
    act(&app, caller, &hold, action, &headers, Some("hold_commit")).await
}

/// `GET /api/v1/holds?sku=&status=&limit=&cursor=` (any role): holds in
/// creation order, keyset pages.
#[utoipa::path(
    get, path = "/api/v1/holds", tag = "holds", params(ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of holds", body = super::openapi::HoldPage),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    _: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let sku = params
        .sku
        .as_deref()
        .and_then(|s| checks.check("sku", SkuCode::parse(s)));
    let status = params.status.as_deref().and_then(|s| {
        let parsed = HoldStatus::parse(s);
        if parsed.is_none() {
            checks.fail("status", "must be active, released, expired or committed");
        }
        parsed
    });
    let limit = checks.page_limit(params.limit);
    let after = params
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|c| {
            let id = HoldId::parse(c);
            if id.is_none() {
                checks.fail("cursor", "is not a cursor this server returned");
            }
            id
        });
    checks.finish()?;
    let mut items = app
        .store
        .list_holds(&HoldQuery {
            after,
            sku,
            status,
            limit: limit + 1,
        })
        .await?;
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|h| h.id.to_string())
    } else {
        None
    };
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}
