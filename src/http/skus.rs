//! `/api/v1/skus`: list, get, create, patch, price, stock.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use skuwatch_actors::domain::{Command, Currency, NewSku, PriceGuard, Sku, SkuCode, WriteMeta};
use skuwatch_actors::store::ListQuery;

use super::error::{ApiError, ErrorResponse};
use super::extract::{if_match, ApiJson, ApiQuery, SkuPath};
use super::validate::{Checks, GuardInput};
use super::{write_one, AppState};
use crate::auth::{Admin, Caller, Reader};

/// Default `low_stock_threshold` (API.md, SKUs).
pub const DEFAULT_LOW_STOCK_THRESHOLD: i64 = 10;

/// A SKU response with its `ETag` (API.md, optimistic concurrency).
pub fn sku_response(status: StatusCode, sku: &Sku) -> Response {
    let mut response = (status, Json(sku)).into_response();
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", sku.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

/// Query of `GET /api/v1/skus`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Page size, 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(nullable = false)]
    cursor: Option<String>,
    /// Case-insensitive search in code and name; at most 200 characters, no control characters.
    #[param(
        max_length = 200,
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*$",
        nullable = false
    )]
    q: Option<String>,
    /// Only SKUs whose stock is below their `low_stock_threshold`.
    #[param(nullable = false)]
    below_threshold: Option<bool>,
}

/// `GET /api/v1/skus`: keyset pages ordered by `sku`; the cursor is opaque.
#[utoipa::path(
    get, path = "/api/v1/skus", tag = "skus", params(ListParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of SKUs", body = super::openapi::SkuPage),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    _: Reader,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let limit = checks.page_limit(params.limit);
    // An empty cursor is the first page, as an empty `q` is no filter.
    let after = params
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .and_then(|cursor| {
            let code = hex::decode(cursor)
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .and_then(|text| SkuCode::parse(&text).ok());
            if code.is_none() {
                checks.fail("cursor", "is not a cursor this server returned");
            }
            code
        });
    if params
        .q
        .as_deref()
        .is_some_and(|q| q.chars().count() > 200 || q.chars().any(char::is_control))
    {
        checks.fail(
            "q",
            "must be at most 200 characters, without control characters",
        );
    }
    checks.finish()?;
    let mut items = app
        .store
        .list(&ListQuery {
            after,
            q: params.q.filter(|q| !q.is_empty()),
            below_threshold: params.below_threshold.unwrap_or(false),
            limit: limit + 1,
        })
        .await?;
    app.registry.offer(&items);
    let next_cursor = if items.len() as i64 > limit {
        items.truncate(limit as usize);
        items.last().map(|s| hex::encode(s.sku.as_str()))
    } else {
        None
    };
    Ok(Json(json!({ "items": items, "next_cursor": next_cursor })).into_response())
}

/// Runs an admin's edit of one SKU, honouring `If-Match`, and answers the
/// new state with its ETag.
async fn edit(
    app: &AppState,
    caller: Caller,
    sku: &SkuCode,
    headers: &HeaderMap,
    command: Command,
    reason: Option<String>,
) -> Result<Response, ErrorResponse> {
    let meta = WriteMeta {
        reason,
        actor: Some(caller.username),
        if_match: if_match(headers)?,
    };
    let state = write_one(app, sku, command, meta).await?;
    Ok(sku_response(StatusCode::OK, &state))
}

/// The SKU as its actor caches it, or 404.
async fn current(app: &AppState, sku: &SkuCode) -> Result<Sku, ApiError> {
    app.registry
        .get(sku)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("SKU {sku} does not exist")))
}

/// `GET /api/v1/skus/{sku}`, served from the SKU's actor.
#[utoipa::path(
    get, path = "/api/v1/skus/{sku}", tag = "skus", security(("bearer" = [])),
    params(SkuParam,
        ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"(, ?(W/)?"[0-9]{1,18}")*|[0-9]{1,18})$"#, description = "As on the writes: 412 unless the SKU is at one of the listed versions (strong comparison)."),
        ("If-None-Match" = Option<String>, Header, description = "`\"<version>\"`, a list, or `*` (RFC 9110 §13.1.2, weak comparison): 304 when it names the current version.")),
    responses(
        (status = 200, description = "The SKU", body = super::openapi::SkuDoc, headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 304, description = "Not Modified: `If-None-Match` names the current version", headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 412, response = super::openapi::PreconditionFailed),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    _: Reader,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let condition = if_match(&headers)?;
    let state = current(&app, &sku).await?;
    // RFC 9110 §13.2.2: If-Match first, then If-None-Match.
    if let Some(expected) = condition.filter(|e| !e.contains(&state.version)) {
        return Err(skuwatch_actors::domain::DomainError::VersionMismatch {
            sku,
            expected,
            current: state.version,
        }
        .into());
    }
    if super::extract::if_none_match_hits(&headers, state.version) {
        let mut response = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", state.version)) {
            response.headers_mut().insert(header::ETAG, etag);
        }
        return Ok(response);
    }
    Ok(sku_response(StatusCode::OK, &state))
}

/// Body of `POST /api/v1/skus`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewSku)]
pub struct CreateBody {
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$",
        example = "85123A"
    )]
    sku: String,
    /// 1-500 characters, no control characters (trimmed).
    #[schema(
        min_length = 1,
        max_length = 500,
        example = "WHITE HANGING HEART T-LIGHT HOLDER"
    )]
    name: String,
    /// ISO 4217 code, upper-case as the standard writes it (`gbp` is refused).
    #[schema(pattern = "^[A-Z]{3}$", example = "GBP")]
    currency: String,
    #[schema(value_type = super::openapi::PriceInput)]
    price: Box<RawValue>,
    /// Default 0.
    #[schema(minimum = 0)]
    stock: Option<i64>,
    /// Default 10.
    #[schema(minimum = 0)]
    low_stock_threshold: Option<i64>,
    /// Default `{"max_change_pct": 50}`.
    #[serde(default, deserialize_with = "super::extract::optional_object")]
    price_guard: Option<GuardInput>,
    /// Days a delivery takes, 0-365; default (or `null`): the server's
    /// setting (`SKUWATCH_LEAD_TIME_DAYS`).
    #[schema(minimum = 0, maximum = 365)]
    lead_time_days: Option<i64>,
    /// `threshold`, `forecast` or `both`; default (or `null`): the
    /// server's setting (`SKUWATCH_ALERT_RULE`).
    #[schema(pattern = "^(threshold|forecast|both)$")]
    alert_rule: Option<String>,
}

/// Validates a new SKU the same way for REST and CSV import.
pub fn new_sku(body: &CreateBody) -> Result<(SkuCode, NewSku), ApiError> {
    let mut checks = Checks::default();
    let sku = checks.check("sku", SkuCode::parse(&body.sku));
    let name = checks.name("name", &body.name);
    let currency = checks.check("currency", Currency::parse(&body.currency));
    let price = currency.and_then(|c| checks.price("price", &body.price, c));
    let stock = checks.non_negative("stock", body.stock.unwrap_or(0));
    let threshold = checks.non_negative(
        "low_stock_threshold",
        body.low_stock_threshold
            .unwrap_or(DEFAULT_LOW_STOCK_THRESHOLD),
    );
    let guard = match (&body.price_guard, currency) {
        (Some(raw), Some(currency)) => checks.new_price_guard(raw, currency),
        _ => PriceGuard::default(),
    };
    let lead_time_days = body
        .lead_time_days
        .and_then(|days| checks.lead_time_days(days));
    let alert_rule = body
        .alert_rule
        .as_deref()
        .and_then(|rule| checks.alert_rule(rule));
    checks.finish()?;
    match (sku, name, price, stock, threshold) {
        (Some(sku), Some(name), Some(price), Some(stock), Some(low_stock_threshold)) => Ok((
            sku,
            NewSku {
                name,
                price,
                stock,
                low_stock_threshold,
                price_guard: guard,
                lead_time_days,
                alert_rule,
            },
        )),
        _ => Err(ApiError::internal()),
    }
}

/// `POST /api/v1/skus` -> 201 with `Location`.
#[utoipa::path(
    post, path = "/api/v1/skus", tag = "skus", security(("bearer" = [])),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = super::openapi::SkuDoc, headers(
            ("ETag" = String, description = "`\"<version>\"`"),
            ("Location" = String, description = "`/api/v1/skus/{sku}`: the code percent-encoded except for the unreserved characters of RFC 3986 §2.3 (`MUG-01` stays `MUG-01`)"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn create(
    State(app): State<AppState>,
    Admin(caller): Admin,
    body: ApiJson<CreateBody>,
) -> Result<Response, ErrorResponse> {
    let (sku, new) = new_sku(&body.value)?;
    let meta = WriteMeta {
        actor: Some(caller.username),
        ..WriteMeta::default()
    };
    let state = write_one(&app, &sku, Command::Create(new), meta).await?;
    let mut response = sku_response(StatusCode::CREATED, &state);
    if let Ok(location) = HeaderValue::from_str(&super::links::sku_path(&sku)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Body of `PATCH /api/v1/skus/{sku}`: at least one of `name`,
/// `low_stock_threshold`, `price_guard`, `lead_time_days`, `alert_rule`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = SkuPatch)]
pub struct PatchBody {
    #[schema(min_length = 1, max_length = 500)]
    name: Option<String>,
    #[schema(minimum = 0)]
    low_stock_threshold: Option<i64>,
    /// Merged into the current guard: a field left out is kept, `null` clears it.
    #[serde(default, deserialize_with = "super::extract::optional_object")]
    price_guard: Option<GuardInput>,
    /// Days a delivery takes, 0-365 (issue 18); `null` follows the
    /// server's setting again.
    #[serde(default, deserialize_with = "super::extract::nullable")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 365)]
    lead_time_days: Option<Option<i64>>,
    /// Which rules raise stock alerts: `threshold`, `forecast` or `both`;
    /// `null` follows the server's setting again.
    #[serde(default, deserialize_with = "super::extract::nullable")]
    #[schema(value_type = Option<String>, pattern = "^(threshold|forecast|both)$")]
    alert_rule: Option<Option<String>>,
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// `PATCH /api/v1/skus/{sku}`: name, threshold, price guard, lead time,
/// alert rule.
#[utoipa::path(
    patch, path = "/api/v1/skus/{sku}", tag = "skus", security(("bearer" = [])),
    params(SkuParam, ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"(, ?(W/)?"[0-9]{1,18}")*|[0-9]{1,18})$"#, description = "`\"<version>\"`, a list of them, or `*` (RFC 9110 §13.1.1): refuse with 412 unless the SKU is at one of the listed versions. Strong comparison: a weak tag (`W/\"5\"`) never matches. A bare version (`5`) is read as `\"5\"`; other malformed values are 422.")),
    request_body(content = PatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The SKU after the change", body = super::openapi::SkuDoc, headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 412, response = super::openapi::PreconditionFailed),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn patch(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<PatchBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    // Only for the currency of the guard's bounds, which never changes; the
    // guard itself is merged in the write's transaction (decide).
    let currency = current(&app, &sku).await?.currency;
    let mut checks = Checks::default();
    let name = body.name.as_deref().and_then(|n| checks.name("name", n));
    let threshold = body
        .low_stock_threshold
        .and_then(|t| checks.non_negative("low_stock_threshold", t));
    let guard = body
        .price_guard
        .as_ref()
        .map(|g| checks.price_guard(g, currency));
    let lead_time_days = body.lead_time_days.map(|days| match days {
        None => None,
        Some(days) => checks.lead_time_days(days),
    });
    let alert_rule = body.alert_rule.as_ref().map(|rule| match rule {
        None => None,
        Some(rule) => checks.alert_rule(rule),
    });
    if body.name.is_none()
        && body.low_stock_threshold.is_none()
        && body.price_guard.is_none()
        && body.lead_time_days.is_none()
        && body.alert_rule.is_none()
    {
        checks.fail(
            "body",
            "give at least one of name, low_stock_threshold, price_guard, lead_time_days, alert_rule",
        );
    }
    let reason = checks.reason(body.reason);
    checks.finish()?;
    let command = Command::Patch {
        name,
        low_stock_threshold: threshold,
        price_guard: guard,
        lead_time_days,
        alert_rule,
    };
    edit(&app, caller, &sku, &headers, command, reason).await
}

/// Body of `PUT /api/v1/skus/{sku}/price`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PriceChange)]
pub struct PriceBody {
    #[schema(value_type = super::openapi::PriceInput)]
    price: Box<RawValue>,
    #[schema(max_length = 200)]
    reason: Option<String>,
    /// Set a price outside the price guard anyway (raises a `price_anomaly` alert).
    #[serde(default)]
    confirm: bool,
}

/// `PUT /api/v1/skus/{sku}/price`, in the SKU's currency.
#[utoipa::path(
    put, path = "/api/v1/skus/{sku}/price", tag = "skus", security(("bearer" = [])),
    params(SkuParam, ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"(, ?(W/)?"[0-9]{1,18}")*|[0-9]{1,18})$"#, description = "`\"<version>\"`, a list of them, or `*` (RFC 9110 §13.1.1): refuse with 412 unless the SKU is at one of the listed versions. Strong comparison: a weak tag (`W/\"5\"`) never matches. A bare version (`5`) is read as `\"5\"`; other malformed values are 422.")),
    request_body(content = PriceBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The SKU after the change", body = super::openapi::SkuDoc, headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 412, response = super::openapi::PreconditionFailed),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn set_price(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<PriceBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    // The currency never changes; the guard is checked against the price
    // of the row locked in the write's transaction (decide).
    let currency = current(&app, &sku).await?.currency;
    let mut checks = Checks::default();
    let price = checks.price("price", &body.price, currency);
    let reason = checks.reason(body.reason);
    checks.finish()?;
    let command = Command::SetPrice {
        price: price.ok_or_else(ApiError::internal)?,
        confirm: body.confirm,
    };
    edit(&app, caller, &sku, &headers, command, reason).await
}

/// Body of `PUT /api/v1/skus/{sku}/stock`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = StockCount)]
pub struct StockBody {
    #[schema(minimum = 0)]
    stock: i64,
    #[schema(max_length = 200)]
    reason: Option<String>,
}

/// The `{sku}` path parameter (documentation only; [`SkuPath`] parses it).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct SkuParam {
    /// SKU code, percent-encoded.
    #[param(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$",
        example = "85123A"
    )]
    sku: String,
}

/// `PUT /api/v1/skus/{sku}/stock`: a counted stock level, >= 0.
#[utoipa::path(
    put, path = "/api/v1/skus/{sku}/stock", tag = "skus", security(("bearer" = [])),
    params(SkuParam, ("If-Match" = Option<String>, Header, pattern = r#"^(\*|(W/)?"[0-9]{1,18}"(, ?(W/)?"[0-9]{1,18}")*|[0-9]{1,18})$"#, description = "`\"<version>\"`, a list of them, or `*` (RFC 9110 §13.1.1): refuse with 412 unless the SKU is at one of the listed versions. Strong comparison: a weak tag (`W/\"5\"`) never matches. A bare version (`5`) is read as `\"5\"`; other malformed values are 422.")),
    request_body(content = StockBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The SKU after the change", body = super::openapi::SkuDoc, headers(("ETag" = String, description = "`\"<version>\"`"))),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 412, response = super::openapi::PreconditionFailed),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn set_stock(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<StockBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    let mut checks = Checks::default();
    let stock = checks.non_negative("stock", body.stock);
    let reason = checks.reason(body.reason);
    checks.finish()?;
    let command = Command::SetStock {
        stock: stock.ok_or_else(ApiError::internal)?,
    };
    edit(&app, caller, &sku, &headers, command, reason).await
}
