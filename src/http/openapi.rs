//! The OpenAPI 3.1 document (`GET /openapi.json`) and the interactive docs
//! (`GET /docs`, Swagger UI with its assets compiled into the binary).
//!
//! Operations come from the `#[utoipa::path]` annotations on the handlers;
//! request bodies and query parameters from the same structs the handlers
//! deserialise into. Responses are built with `serde_json::json!` in the
//! handlers, so their shapes are described here as wire types; the
//! schemathesis check (`scripts/checks/schemathesis`) validates every
//! response against them. `tests/api/openapi.rs` fails when the router and
//! the document disagree about a route.

use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{Modify, OpenApi, ToResponse, ToSchema};

/// SKU code pattern (API.md, Conventions): 1-64 characters, no whitespace,
/// control or invisible characters, no `/`. ("." and ".." are refused too,
/// which a regular expression without look-ahead cannot say.) Attributes
/// need literals, so the schemas repeat it; a unit test keeps them equal.
pub const SKU_PATTERN: &str =
    r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$";
/// A decimal amount as the API writes it (`"2.55"`, `"1980"`).
pub const MONEY_PATTERN: &str = r"^-?[0-9]+(\.[0-9]+)?$";

/// RFC 9457 problem document (`application/problem+json`), the body of
/// every error. Extension members: `current_version` (412
/// `version_mismatch`), `skus` (409 `insufficient_stock`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct Problem {
    /// Stable machine code: `validation`, `malformed_json`, `not_found`,
    /// `already_exists`, `insufficient_stock`, `version_mismatch`,
    /// `idempotency_mismatch`, `price_guard`, `payload_too_large`,
    /// `unsupported_media_type`, `method_not_allowed`, `unauthorized`,
    /// `forbidden`, `too_many_requests`, `unavailable`, `overloaded`,
    /// `outcome_unknown`, `timeout`, `bad_request`, `internal`.
    #[schema(example = "validation")]
    r#type: String,
    #[schema(example = "Invalid request")]
    title: String,
    #[schema(example = 422, minimum = 400, maximum = 599)]
    status: u16,
    #[schema(example = "price: must be greater than 0")]
    detail: String,
    /// The fields at fault (every 422; 409 `insufficient_stock`, one per short
    /// SKU, in a batch the line where it goes below 0; 409 `already_exists`: `sku`).
    errors: Option<Vec<ProblemField>>,
    /// 412 `version_mismatch`: the SKU's current version.
    current_version: Option<i64>,
    /// 409 `insufficient_stock`: the SKUs that lacked stock (never empty).
    skus: Option<Vec<String>>,
    /// 409 `cursor_ahead` and `cursor_unknown`: the newest event id this
    /// server has.
    newest_event_id: Option<i64>,
}

/// One field-level complaint of a problem document.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ProblemField {
    /// Body field (`price`, `adjustments[2].delta`), query parameter, header
    /// (`If-Match`) or `body`.
    field: String,
    message: String,
}

macro_rules! problem_response {
    ($name:ident, $description:literal) => {
        #[doc = $description]
        #[derive(ToResponse)]
        #[response(description = $description, content_type = "application/problem+json")]
        #[allow(dead_code)]
        pub struct $name(Problem);
    };
}

problem_response!(
    BadRequest,
    "`malformed_json`: the body is not JSON, or `bad_request`."
);
problem_response!(
    Unauthorized,
    "`unauthorized`: no, an invalid or an expired bearer token."
);
problem_response!(
    Forbidden,
    "`forbidden`: the token's role may not do this (admin only)."
);
problem_response!(NotFound, "`not_found`: no such SKU (or alert).");
problem_response!(
    Conflict,
    "`already_exists`, or `insufficient_stock` (with `skus`): nothing was changed."
);
problem_response!(
    CursorConflict,
    "`cursor_ahead` (`after` or `cursor` is beyond the newest event) or `cursor_unknown` (the cursor's event id names another event here), both with `newest_event_id`: the server was restored or failed over; reset and take a snapshot."
);
problem_response!(
    PreconditionFailed,
    "`version_mismatch`: `If-Match` names a stale version (`current_version` has the current one)."
);
problem_response!(
    PayloadTooLarge,
    "`payload_too_large`: the body is over `SKUWATCH_BODY_LIMIT_BYTES` (CSV: `SKUWATCH_IMPORT_LIMIT_BYTES`, or more rows than `SKUWATCH_IMPORT_MAX_ROWS`)."
);
problem_response!(
    UnsupportedMediaType,
    "`unsupported_media_type`: wrong `Content-Type`."
);
problem_response!(
    Invalid,
    "`validation` with `errors` naming each field at fault (also JSON nested deeper than `SKUWATCH_JSON_MAX_DEPTH`), `price_guard`, or `idempotency_mismatch`."
);
/// `too_many_requests`: too many failed logins.
#[derive(ToResponse)]
#[response(
    description = "`too_many_requests`: too many failed logins (`Retry-After` says when to retry).",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait"))
)]
#[allow(dead_code)]
pub struct TooManyRequests(Problem);
/// 503: `overloaded`, `unavailable`, `timeout` (nothing was done) or
/// `outcome_unknown` (a write that may have happened).
#[derive(ToResponse)]
#[response(
    description = "`overloaded`: a bounded wait (database pool, lock, group-commit queue, SKU actor queue) elapsed; nothing was done, retry after `Retry-After`. `unavailable`: the database or the SKU's actor is unavailable; nothing was done. `timeout`: a read took longer than `SKUWATCH_REQUEST_TIMEOUT_MS`. `outcome_unknown`: a write failed after it may have committed, or took longer than `SKUWATCH_REQUEST_TIMEOUT_MS`; re-read, then retry with `If-Match` or the same `Idempotency-Key`.",
    content_type = "application/problem+json",
    headers(("Retry-After" = u64, description = "Seconds to wait (not on `outcome_unknown`)"))
)]
#[allow(dead_code)]
pub struct Unavailable(Problem);

/// `price` in a request: a decimal string in the currency's minor-unit
/// precision, or a JSON number that converts exactly (API.md, Money).
pub struct PriceInput;

impl utoipa::PartialSchema for PriceInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(MONEY_PATTERN))
                    .examples([serde_json::json!("2.55")]),
            )
            .item(ObjectBuilder::new().schema_type(Type::Number))
            .description(Some(
                "Decimal string such as \"2.55\" (GBP) or \"1980\" (JPY), at most the currency's \
                 minor-unit decimals, > 0; a JSON number only when it converts exactly.",
            ))
            .into()
    }
}

impl ToSchema for PriceInput {}

/// A price bound of a price guard in a request: a price, or `null` to clear it.
pub struct PriceBoundInput;

impl utoipa::PartialSchema for PriceBoundInput {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(PriceInput::schema())
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }
}

impl ToSchema for PriceBoundInput {}

/// A SKU (API.md, SKUs). Answers carry `ETag: "<version>"`.
#[derive(ToSchema)]
#[schema(as = Sku)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SkuDoc {
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$",
        example = "85123A"
    )]
    sku: String,
    #[schema(example = "WHITE HANGING HEART T-LIGHT HOLDER")]
    name: String,
    /// ISO 4217.
    #[schema(pattern = "^[A-Z]{3}$", example = "GBP")]
    currency: String,
    /// Decimal string in the currency's minor-unit precision.
    #[schema(pattern = r"^-?[0-9]+(\.[0-9]+)?$", example = "2.55")]
    price: String,
    #[schema(minimum = 0, example = 120)]
    stock: i64,
    /// Units held by active holds (API.md v1 additions).
    #[schema(minimum = 0, example = 2)]
    reserved: i64,
    /// `stock - reserved`; negative after a physical count below what is
    /// held. Stock alerts and `below_threshold` are judged on it.
    #[schema(example = 118)]
    available: i64,
    #[schema(minimum = 0, example = 10)]
    low_stock_threshold: i64,
    price_guard: PriceGuardDoc,
    /// Days a delivery ordered now takes (issue 18): the SKU's own or the
    /// server's setting.
    #[schema(minimum = 0, maximum = 365, example = 7)]
    lead_time_days: i64,
    /// Which rules raise stock alerts: the SKU's own or the server's
    /// setting.
    #[schema(pattern = "^(threshold|forecast|both)$", example = "both")]
    alert_rule: String,
    forecast: ForecastDoc,
    /// Incremented by exactly 1 on every change.
    #[schema(minimum = 1, example = 7)]
    version: i64,
    #[schema(format = DateTime, example = "2026-11-29T10:00:00.123456Z")]
    updated_at: String,
}

/// A SKU's days of cover (API.md v1 additions; README "Days of cover"),
/// computed as of its last event.
#[derive(ToSchema)]
#[schema(as = Forecast)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ForecastDoc {
    /// Units sold per day (exponentially weighted, half-life 7 days), one
    /// decimal.
    #[schema(pattern = r"^[0-9]+\.[0-9]$", example = "12.4")]
    sales_per_day: String,
    /// The weighted count of sales the rate rests on.
    #[schema(minimum = 0, example = 31)]
    based_on_sales: i64,
    /// `available / sales_per_day`, rounded down to a tenth; null with
    /// too few sales (under 5), no rate, or beyond 365 days.
    #[schema(required = true, pattern = r"^[0-9]+\.[0-9]$", example = "3.1")]
    days_of_cover: Option<String>,
    /// When the available units run out at this rate; null when
    /// `days_of_cover` is.
    #[schema(required = true, format = DateTime)]
    stockout_at: Option<String>,
    /// The time the forecast is computed as of (the SKU's last change).
    #[schema(format = DateTime)]
    as_of: String,
}

/// The price guard of a SKU as answered.
#[derive(ToSchema)]
#[schema(as = PriceGuard)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PriceGuardDoc {
    /// Largest change against the current price, in whole percent.
    #[schema(required = true, example = 50)]
    max_change_pct: Option<i64>,
    #[schema(required = true, pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    min_price: Option<String>,
    #[schema(required = true, pattern = r"^-?[0-9]+(\.[0-9]+)?$")]
    max_price: Option<String>,
}

/// One page of SKUs, ordered by `sku`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct SkuPage {
    items: Vec<SkuDoc>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// One change to one SKU (API.md, Events).
#[derive(ToSchema)]
#[schema(as = Event)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventDoc {
    #[schema(minimum = 1)]
    event_id: i64,
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$"
    )]
    sku: String,
    #[schema(minimum = 1)]
    version: i64,
    #[schema(format = DateTime)]
    at: String,
    field: EventField,
    /// Stock or reserved as an integer, price as a decimal string, meta as an object (or `null` on creation).
    #[schema(value_type = Value)]
    old: serde_json::Value,
    #[schema(value_type = Value)]
    new: serde_json::Value,
    /// Stock adjustments only.
    #[schema(required = true)]
    delta: Option<i64>,
    #[schema(required = true)]
    reason: Option<String>,
    /// Who made the change.
    #[schema(required = true)]
    actor: Option<String>,
}

/// What an event changed.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum EventField {
    Stock,
    Price,
    Meta,
    /// Units held (reasons `hold`, `hold_released`, `hold_expired`, `hold_committed`).
    Reserved,
}

/// A hold (API.md v1 additions, Holds).
#[derive(ToSchema)]
#[schema(as = Hold)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HoldDoc {
    /// A UUID; ids sort by creation time.
    #[schema(
        pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
        example = "019ad5a2-7c3e-7d21-9b1a-2f4c8e6d0a11"
    )]
    id: String,
    status: HoldStatusDoc,
    lines: Vec<HoldLineDoc>,
    #[schema(required = true, example = "cart-77")]
    reference: Option<String>,
    /// Who created it.
    #[schema(required = true)]
    actor: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    /// When the sweeper releases it (the database's clock) unless it ended first.
    #[schema(format = DateTime)]
    expires_at: String,
    #[schema(required = true, format = DateTime)]
    ended_at: Option<String>,
    /// The events of its latest change: its creation while active; its
    /// end once ended (for a commit, the `sale` adjustments too).
    event_ids: Vec<i64>,
}

/// One line of a hold.
#[derive(ToSchema)]
#[schema(as = HoldLine)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HoldLineDoc {
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$"
    )]
    sku: String,
    #[schema(minimum = 1)]
    quantity: i64,
}

/// Where a hold is in its life.
#[derive(ToSchema)]
#[schema(as = HoldStatus)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
pub enum HoldStatusDoc {
    Active,
    Released,
    Expired,
    Committed,
}

/// One page of holds, in creation order.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HoldPage {
    items: Vec<HoldDoc>,
    /// Pass as `cursor` for the next page; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// A page of the global change feed.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct EventPage {
    events: Vec<EventDoc>,
    /// Pass as `after` for the next page (unchanged when the page is empty).
    #[schema(minimum = 0)]
    next_after: i64,
    /// Pass as `cursor` for the next page: opaque, names the last event of
    /// the page (or the position given, when the page is empty), so that a
    /// restored or failed-over server can tell it is not its own.
    #[schema(example = "124.9f86d081884c7d65")]
    next_cursor: Option<String>,
}

/// An alert (API.md, Events and alerts).
#[derive(ToSchema)]
#[schema(as = Alert)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AlertDoc {
    id: i64,
    #[schema(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$"
    )]
    sku: String,
    kind: AlertKindDoc,
    status: AlertStatusDoc,
    message: String,
    /// Stock units, a price as a decimal string for `price_anomaly`, or
    /// the days of cover as a decimal string (`"3.1"`) for
    /// `stockout_forecast` (whose `threshold` is the lead time in days).
    #[schema(value_type = Value)]
    value: serde_json::Value,
    #[schema(value_type = Value)]
    threshold: serde_json::Value,
    #[schema(format = DateTime)]
    raised_at: String,
    #[schema(required = true)]
    acknowledged_by: Option<String>,
    #[schema(required = true, format = DateTime)]
    resolved_at: Option<String>,
}

#[derive(ToSchema)]
#[schema(as = AlertKind)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AlertKindDoc {
    LowStock,
    OutOfStock,
    PriceAnomaly,
    StockoutForecast,
}

#[derive(ToSchema)]
#[schema(as = AlertStatus)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum AlertStatusDoc {
    Open,
    Acknowledged,
    Resolved,
}

/// Alerts, newest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct AlertList {
    alerts: Vec<AlertDoc>,
}

/// Counts for a dashboard header.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Summary {
    skus: i64,
    below_threshold: i64,
    out_of_stock: i64,
    open_alerts: OpenAlerts,
    days_of_cover: CoverCounts,
}

/// SKUs by days of cover as of their last change (issue 18). Each SKU
/// with a forecast is in one of `under_7`, `7_to_30`, `30_plus` (days,
/// half-open), and also in `within_lead_time` when its cover is below its
/// lead time; the others are `no_forecast`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CoverCounts {
    within_lead_time: i64,
    under_7: i64,
    #[serde(rename = "7_to_30")]
    from_7_to_30: i64,
    #[serde(rename = "30_plus")]
    from_30: i64,
    no_forecast: i64,
}

/// Open alerts per kind.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct OpenAlerts {
    low_stock: i64,
    out_of_stock: i64,
    price_anomaly: i64,
    stockout_forecast: i64,
}

/// History of one field, oldest first.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct History {
    points: Vec<HistoryPoint>,
}

/// The value of the field right after one change.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct HistoryPoint {
    #[schema(format = DateTime)]
    at: String,
    /// Stock units (integer), or the price as a decimal string.
    #[schema(value_type = Value)]
    value: serde_json::Value,
    version: i64,
    event_id: i64,
    #[schema(required = true)]
    reason: Option<String>,
}

/// The result of one stock adjustment.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Adjusted {
    sku: SkuDoc,
    event_id: i64,
}

/// The results of a batch adjustment, one per line.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct BatchAdjusted {
    results: Vec<Adjusted>,
}

/// The CSV import report.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ImportReport {
    created: u64,
    updated: u64,
    /// Rows equal to the stored SKU already.
    unchanged: u64,
    /// Rows that were not imported.
    errors: Vec<ImportError>,
}

/// A row that was not imported.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ImportError {
    /// 1-based line (the header is line 1).
    line: u64,
    message: String,
}

/// An access token.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct TokenResponse {
    /// HS256 JWT; send as `Authorization: Bearer <token>`.
    access_token: String,
    #[schema(example = "Bearer")]
    token_type: String,
    /// Seconds.
    #[schema(example = 3600)]
    expires_in: u64,
    role: RoleDoc,
}

#[derive(ToSchema)]
#[schema(as = Role)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
/// `admin`: everything; `viewer`: read-only; `checkout`: the holds
/// routes only (issue 17).
pub enum RoleDoc {
    Admin,
    Viewer,
    Checkout,
}

/// A user (never the password hash).
#[derive(ToSchema)]
#[schema(as = User)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct UserDoc {
    username: String,
    role: RoleDoc,
    #[schema(format = DateTime)]
    created_at: String,
    disabled: bool,
}

/// `GET /healthz`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Health {
    #[schema(example = "ok")]
    status: String,
}

/// `GET /readyz`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    status: String,
    /// `ok` or `unreachable`.
    database: String,
    /// With `REDIS_URL` only: `ok` while the Redis listener is subscribed,
    /// `starting` until its first connection, else `unreachable` (the
    /// status is `not_ready` unless `ok`).
    #[schema(nullable = false)]
    redis: Option<String>,
}

/// `GET /metrics`: Prometheus metrics (README, Monitoring). Served here
/// unless `SKUWATCH_METRICS_BIND` moves it to a listener of its own.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String))
)]
#[allow(dead_code)]
fn metrics() {}

/// `GET /openapi.json`: this document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
#[allow(dead_code)]
fn openapi_json() {}

/// `GET /docs`: the interactive docs (Swagger UI, served from the binary:
/// no internet needed). Redirects to `/docs/`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "operations",
    responses((status = 303, description = "Redirect to `/docs/`, the Swagger UI page", headers(("Location" = String))))
)]
#[allow(dead_code)]
fn docs() {}

/// Adds the bearer scheme (tokens from `POST /api/v1/auth/token`).
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "A token from POST /api/v1/auth/token. In /docs: Authorize, paste the access_token.",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "skuwatch",
        description = "Real-time inventory and price monitoring. The contract is ../shared/API.md; \
            errors are RFC 9457 problem documents (application/problem+json). Money is a decimal \
            string in the currency's minor-unit precision; times are RFC 3339 UTC with microseconds.",
        license(name = "MIT")
    ),
    paths(
        super::auth::token,
        super::auth::create_user,
        super::skus::list,
        super::skus::create,
        super::skus::get,
        super::skus::patch,
        super::skus::set_price,
        super::skus::set_stock,
        super::stock::adjust,
        super::stock::adjust_batch,
        super::events::history,
        super::events::feed,
        super::alerts::list,
        super::alerts::acknowledge,
        super::alerts::summary,
        super::holds::create,
        super::holds::list,
        super::holds::get,
        super::holds::extend,
        super::holds::release,
        super::holds::commit,
        super::webhooks::list,
        super::webhooks::create,
        super::webhooks::get,
        super::webhooks::patch,
        super::webhooks::delete,
        super::webhooks::rotate_secret,
        super::webhooks::test,
        super::webhooks::deliveries,
        super::import,
        crate::ws::upgrade,
        super::healthz,
        super::readyz,
        openapi_json,
        docs,
        metrics,
    ),
    components(
        schemas(Problem, ProblemField, super::webhooks::WebhookMessage),
        responses(
            BadRequest, Unauthorized, Forbidden, NotFound, Conflict, PreconditionFailed,
            CursorConflict, PayloadTooLarge, UnsupportedMediaType, Invalid, TooManyRequests, Unavailable
        )
    ),
    modifiers(&Security),
    tags(
        (name = "auth", description = "Tokens and users"),
        (name = "skus", description = "The catalog: SKUs, prices, stock"),
        (name = "stock", description = "Stock adjustments with Idempotency-Key"),
        (name = "events", description = "Change feed and history"),
        (name = "alerts", description = "Low stock, out of stock, price anomalies"),
        (name = "holds", description = "Checkout holds: reserve, extend, release, commit; expiry"),
        (name = "webhooks", description = "Signed alert notifications to admins' endpoints (Standard Webhooks). Each message is a POST of a `WebhookMessage` (see the schema); README \"Webhooks\" has a receiver's verification snippet."),
        (name = "live", description = "WebSocket push"),
        (name = "operations", description = "Health, readiness, this document"),
    )
)]
struct ApiDoc;

/// The document served at `/openapi.json`.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Every `(METHOD, path)` the document describes, paths as in the router
/// (`/api/v1/skus/{sku}`).
pub fn operations(doc: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        let PathItem {
            get,
            put,
            post,
            delete,
            options,
            head,
            patch,
            trace,
            ..
        } = item;
        let methods: [(&str, &Option<Operation>); 8] = [
            ("GET", get),
            ("PUT", put),
            ("POST", post),
            ("DELETE", delete),
            ("OPTIONS", options),
            ("HEAD", head),
            ("PATCH", patch),
            ("TRACE", trace),
        ];
        for (method, operation) in methods {
            if operation.is_some() {
                out.push((method.to_owned(), path.clone()));
            }
        }
    }
    out.sort();
    out
}

/// `/openapi.json` and `/docs` (Swagger UI with "Try it out" and a
/// remembered bearer token).
pub fn router<S: Clone + Send + Sync + 'static>() -> axum::Router<S> {
    let config = utoipa_swagger_ui::Config::from("/openapi.json")
        .persist_authorization(true)
        .try_it_out_enabled(true)
        .display_request_duration(true);
    utoipa_swagger_ui::SwaggerUi::new("/docs")
        .url("/openapi.json", document())
        .config(config)
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attributes need literals, so the patterns are repeated: every copy
    /// in the document must be the constant.
    #[test]
    fn every_sku_and_money_pattern_is_the_constant() {
        let doc = serde_json::to_value(document()).expect("json");
        let mut patterns = Vec::new();
        fn walk(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, value) in map {
                        match (key.as_str(), value.as_str()) {
                            ("pattern", Some(p)) => out.push(p.to_owned()),
                            _ => walk(value, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        walk(&doc, &mut patterns);
        let sku = patterns.iter().filter(|p| p.starts_with(r"^[^\s/")).count();
        assert!(sku >= 5, "{patterns:?}");
        for pattern in &patterns {
            if pattern.starts_with(r"^[^\s/") {
                assert_eq!(pattern, SKU_PATTERN);
            }
            if pattern.starts_with("^-?[0-9]") {
                assert_eq!(pattern, MONEY_PATTERN);
            }
        }
    }
}
