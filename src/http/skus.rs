//! `/api/v1/skus`: list, get, create, patch, price, stock.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use skuwatch_actors::domain::{Command, Currency, NewSku, PriceGuard, Sku, SkuCode, WriteMeta};
use skuwatch_actors::store::{ListQuery, SkuStore};

use super::error::{ApiError, ErrorResponse};
use super::extract::{if_match, ApiJson, ApiQuery, SkuPath};
use super::validate::{Checks, GuardInput};
use super::{write_one, AppState};
use crate::auth::{Admin, Caller};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    limit: Option<i64>,
    cursor: Option<String>,
    q: Option<String>,
    below_threshold: Option<bool>,
}

/// `GET /api/v1/skus`: keyset pages ordered by `sku`; the cursor is opaque.
pub async fn list(
    State(app): State<AppState>,
    _: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        checks.fail("limit", "must be 1-1000");
    }
    let after = params.cursor.as_deref().and_then(|cursor| {
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
pub async fn get(
    State(app): State<AppState>,
    _: Caller,
    SkuPath(sku): SkuPath,
) -> Result<Response, ApiError> {
    Ok(sku_response(StatusCode::OK, &current(&app, &sku).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    sku: String,
    name: String,
    currency: String,
    price: Box<RawValue>,
    stock: Option<i64>,
    low_stock_threshold: Option<i64>,
    price_guard: Option<GuardInput>,
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
        (Some(raw), Some(currency)) => checks.price_guard(raw, currency, &PriceGuard::default()),
        _ => PriceGuard::default(),
    };
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
            },
        )),
        _ => Err(ApiError::internal()),
    }
}

/// `POST /api/v1/skus` -> 201 with `Location`.
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
    let location = format!(
        "/api/v1/skus/{}",
        percent_encoding::utf8_percent_encode(sku.as_str(), percent_encoding::NON_ALPHANUMERIC)
    );
    if let Ok(location) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    name: Option<String>,
    low_stock_threshold: Option<i64>,
    price_guard: Option<GuardInput>,
    reason: Option<String>,
}

/// `PATCH /api/v1/skus/{sku}`: name, threshold, price guard.
pub async fn patch(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<PatchBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    let current = current(&app, &sku).await?;
    let mut checks = Checks::default();
    let name = body.name.as_deref().and_then(|n| checks.name("name", n));
    let threshold = body
        .low_stock_threshold
        .and_then(|t| checks.non_negative("low_stock_threshold", t));
    let guard = body
        .price_guard
        .as_ref()
        .map(|g| checks.price_guard(g, current.currency, &current.price_guard));
    if body.name.is_none() && body.low_stock_threshold.is_none() && body.price_guard.is_none() {
        checks.fail(
            "body",
            "give at least one of name, low_stock_threshold, price_guard",
        );
    }
    let reason = checks.reason(body.reason);
    checks.finish()?;
    let command = Command::Patch {
        name,
        low_stock_threshold: threshold,
        price_guard: guard,
    };
    edit(&app, caller, &sku, &headers, command, reason).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    price: Box<RawValue>,
    reason: Option<String>,
    #[serde(default)]
    confirm: bool,
}

/// `PUT /api/v1/skus/{sku}/price`, in the SKU's currency.
pub async fn set_price(
    State(app): State<AppState>,
    Admin(caller): Admin,
    SkuPath(sku): SkuPath,
    headers: HeaderMap,
    body: ApiJson<PriceBody>,
) -> Result<Response, ErrorResponse> {
    let body = body.value;
    let current = current(&app, &sku).await?;
    let mut checks = Checks::default();
    let price = checks.price("price", &body.price, current.currency);
    let reason = checks.reason(body.reason);
    checks.finish()?;
    let command = Command::SetPrice {
        price: price.ok_or_else(ApiError::internal)?,
        confirm: body.confirm,
    };
    edit(&app, caller, &sku, &headers, command, reason).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockBody {
    stock: i64,
    reason: Option<String>,
}

/// `PUT /api/v1/skus/{sku}/stock`: a counted stock level, >= 0.
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
