//! Webhook endpoints (issue 19; API.md "v1 additions", Webhooks):
//! `/api/v1/webhooks`, admins only. The rules of what an endpoint is sent
//! are in `actors/src/domain/webhook.rs`; sending is `crate::webhooks`.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use skuwatch_actors::domain::{
    AlertKind, DeliveryStatus, Endpoint, EndpointPatch, Micros, SkuCode, WebhookEvent,
    WebhookFormat,
};

use super::error::ApiError;
use super::extract::{ApiJson, ApiQuery};
use super::validate::Checks;
use super::AppState;
use crate::auth::Admin;
use crate::webhooks::{address, secret};

/// Longest `description`, in characters.
const MAX_DESCRIPTION_CHARS: usize = 500;
/// Most SKUs in an endpoint's filter.
const MAX_FILTER_SKUS: usize = 1000;
/// How long a rotated-out secret still signs (issue 19: 24 h).
const ROTATION_OVERLAP_US: i64 = 24 * 3600 * 1_000_000;

/// The fields of a webhook body, as a create and a patch share them
/// (declared in each body for its schema: serde's `flatten` cannot be
/// combined with `deny_unknown_fields`).
macro_rules! webhook_body {
    ($(#[doc = $doc:literal])* $name:ident as $schema:ident, $url:ty) => {
        $(#[doc = $doc])*
        #[derive(Debug, Deserialize, utoipa::ToSchema)]
        #[schema(as = $schema)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// A public `https` URL (any `http(s)` URL with
            /// `SKUWATCH_WEBHOOK_ALLOW_PRIVATE=true`); at most 2048 bytes.
            #[schema(max_length = 2048, example = "https://hooks.example.com/skuwatch")]
            url: $url,
            /// Up to 500 characters.
            #[schema(max_length = 500)]
            description: Option<String>,
            /// What to send: `alert.raised`, `alert.acknowledged`,
            /// `alert.resolved` (the default: all three), `sku.changed`
            /// (opt-in: every change of the endpoint's SKUs).
            #[schema(min_items = 1, max_items = 4)]
            events: Option<Vec<String>>,
            /// Alert kinds to send; `null` (the default): every kind.
            #[serde(default, deserialize_with = "super::extract::nullable")]
            #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 4)]
            kinds: Option<Option<Vec<String>>>,
            /// SKU codes to send about; `null` (the default): every SKU.
            #[serde(default, deserialize_with = "super::extract::nullable")]
            #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 1000)]
            skus: Option<Option<Vec<String>>>,
            /// `standard` (the default) or `slack`.
            #[schema(pattern = "^(standard|slack)$")]
            format: Option<String>,
            /// Default `true`. `false` stops deliveries (`disabled_reason:
            /// "admin"`); `true` starts them again.
            enabled: Option<bool>,
        }

        impl $name {
            fn fields(&self) -> Fields<'_> {
                Fields {
                    description: self.description.as_deref(),
                    events: self.events.as_deref(),
                    kinds: self.kinds.as_ref().map(Option::as_deref),
                    skus: self.skus.as_ref().map(Option::as_deref),
                    format: self.format.as_deref(),
                    enabled: self.enabled,
                }
            }
        }
    };
}

webhook_body!(
    /// Body of `POST /api/v1/webhooks`.
    CreateBody as NewWebhook,
    String
);

webhook_body!(
    /// Body of `PATCH /api/v1/webhooks/{id}`: any of the fields of a new
    /// endpoint; at least one.
    PatchBody as WebhookPatch,
    Option<String>
);

/// The fields a create and a patch share, borrowed from either body.
struct Fields<'a> {
    description: Option<&'a str>,
    events: Option<&'a [String]>,
    kinds: Option<Option<&'a [String]>>,
    skus: Option<Option<&'a [String]>>,
    format: Option<&'a str>,
    enabled: Option<bool>,
}

/// Query of `GET /api/v1/webhooks/{id}/deliveries`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// 1-1000, default 100.
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
    /// Only deliveries in this status.
    #[param(
        pattern = "^(pending|delivered|failed|digested|cancelled)$",
        nullable = false
    )]
    status: Option<String>,
}

impl Fields<'_> {
    /// Validated into a patch (`url` set by the caller).
    fn patch(&self, checks: &mut Checks) -> EndpointPatch {
        let description = self.description.and_then(|raw| {
            let text = raw.trim();
            if text.chars().count() > MAX_DESCRIPTION_CHARS {
                checks.fail("description", "must be at most 500 characters");
                None
            } else if text.chars().any(char::is_control) {
                checks.fail("description", "must not contain control characters");
                None
            } else {
                Some(text.to_owned())
            }
        });
        let events = self.events.and_then(|raw| {
            let parsed: Option<BTreeSet<WebhookEvent>> =
                raw.iter().map(|e| WebhookEvent::parse(e)).collect();
            match parsed {
                None => checks.fail(
                    "events",
                    "each must be alert.raised, alert.acknowledged, alert.resolved or sku.changed",
                ),
                Some(set) if set.is_empty() => {
                    checks.fail("events", "must name at least one event")
                }
                Some(set) => return Some(set.into_iter().collect()),
            }
            None
        });
        let kinds = self.kinds.and_then(|raw| match raw {
            None => Some(None),
            Some(list) => {
                let parsed: Option<BTreeSet<&str>> = list
                    .iter()
                    .map(|k| AlertKind::parse(k).map(AlertKind::as_str))
                    .collect();
                match parsed {
                    None => checks.fail(
                        "kinds",
                        "each must be low_stock, out_of_stock, price_anomaly or stockout_forecast",
                    ),
                    Some(set) if set.is_empty() => {
                        checks.fail("kinds", "must name at least one kind, or be null for all")
                    }
                    Some(_) => {
                        let kinds = AlertKind::ALL
                            .into_iter()
                            .filter(|k| list.iter().any(|raw| raw == k.as_str()))
                            .collect();
                        return Some(Some(kinds));
                    }
                }
                None
            }
        });
        let skus = self.skus.and_then(|raw| match raw {
            None => Some(None),
            Some([]) => {
                checks.fail("skus", "must name at least one SKU, or be null for all");
                None
            }
            Some(list) if list.len() > MAX_FILTER_SKUS => {
                checks.fail("skus", "must name at most 1000 SKUs");
                None
            }
            Some(list) => {
                let parsed: Result<BTreeSet<SkuCode>, _> =
                    list.iter().map(|s| SkuCode::parse(s)).collect();
                checks
                    .check("skus", parsed)
                    .map(|set| Some(set.into_iter().collect()))
            }
        });
        let format = self.format.and_then(|raw| {
            let format = WebhookFormat::parse(raw);
            if format.is_none() {
                checks.fail("format", "must be standard or slack");
            }
            format
        });
        EndpointPatch {
            url: None,
            description,
            events,
            kinds,
            skus,
            format,
            enabled: self.enabled,
        }
    }

    fn is_empty(&self) -> bool {
        self.description.is_none()
            && self.events.is_none()
            && self.kinds.is_none()
            && self.skus.is_none()
            && self.format.is_none()
            && self.enabled.is_none()
    }
}

fn check_url(app: &AppState, checks: &mut Checks, raw: &str) -> Option<String> {
    checks
        .check(
            "url",
            address::check_url(raw.trim(), app.webhooks.settings().allow_private),
        )
        .map(|url| url.to_string())
}

/// An endpoint id from the path: 32 lower-case hex digits, else 404.
fn endpoint_id(raw: &str) -> Result<&str, ApiError> {
    if raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(raw)
    } else {
        Err(not_found(raw))
    }
}

fn not_found(id: &str) -> ApiError {
    let shown: String = id.chars().take(64).collect();
    ApiError::not_found(format!("webhook endpoint {shown:?} does not exist"))
}

/// An endpoint with its secret, as a create or rotation answers it: the
/// only time the secret is shown.
fn with_secret(endpoint: &Endpoint, secret: &str, extra: Option<(&str, Value)>) -> Value {
    let mut body = serde_json::to_value(endpoint).expect("an endpoint serialises");
    body["secret"] = json!(secret);
    if let Some((name, value)) = extra {
        body[name] = value;
    }
    body
}

/// `GET /api/v1/webhooks`: every endpoint, newest first.
#[utoipa::path(
    get, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    responses(
        (status = 200, description = "The endpoints", body = WebhookList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn list(State(app): State<AppState>, _: Admin) -> Result<Response, ApiError> {
    let webhooks = app.store.list_webhooks().await?;
    Ok(Json(json!({ "webhooks": webhooks })).into_response())
}

/// `POST /api/v1/webhooks`: 201 with the endpoint and its secret.
#[utoipa::path(
    post, path = "/api/v1/webhooks", tag = "webhooks", security(("bearer" = [])),
    request_body(content = CreateBody, content_type = "application/json"),
    responses(
        (status = 201, description = "The endpoint, with its secret (shown only here)", body = WebhookWithSecret),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
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
) -> Result<Response, ApiError> {
    let body = body.value;
    let mut checks = Checks::default();
    let url = check_url(&app, &mut checks, &body.url);
    let patch = body.fields().patch(&mut checks);
    checks.finish()?;
    let now = Micros::now();
    let mut endpoint = Endpoint::new(
        uuid::Uuid::new_v4().simple().to_string(),
        url.unwrap_or_default(),
        now,
    );
    patch.apply(&mut endpoint, now);
    let secret = secret::generate();
    let sealed = app.webhooks.sealer().seal(&endpoint.id, &secret);
    app.store
        .create_webhook(&endpoint, &sealed, &caller.username)
        .await?;
    let location = format!("/api/v1/webhooks/{}", endpoint.id);
    Ok((
        StatusCode::CREATED,
        [(axum::http::header::LOCATION, location)],
        Json(with_secret(&endpoint, &secret, None)),
    )
        .into_response())
}

/// `GET /api/v1/webhooks/{id}`.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint", body = WebhookDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn get(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    match app.store.load_webhook(id).await? {
        Some(endpoint) => Ok(Json(endpoint).into_response()),
        None => Err(not_found(id)),
    }
}

/// `PATCH /api/v1/webhooks/{id}`.
#[utoipa::path(
    patch, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    request_body(content = PatchBody, content_type = "application/json"),
    responses(
        (status = 200, description = "The endpoint after the change", body = WebhookDoc),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn patch(
    State(app): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
    body: ApiJson<PatchBody>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let body = body.value;
    let mut checks = Checks::default();
    let url = body
        .url
        .as_deref()
        .and_then(|raw| check_url(&app, &mut checks, raw));
    let mut patch = body.fields().patch(&mut checks);
    if body.url.is_none() && body.fields().is_empty() {
        checks.fail(
            "body",
            "give at least one of url, description, events, kinds, skus, format, enabled",
        );
    }
    checks.finish()?;
    patch.url = url;
    match app
        .store
        .update_webhook(id, &patch, &caller.username)
        .await?
    {
        Some(endpoint) => Ok(Json(endpoint).into_response()),
        None => Err(not_found(id)),
    }
}

/// `DELETE /api/v1/webhooks/{id}`: 204; its deliveries go with it.
#[utoipa::path(
    delete, path = "/api/v1/webhooks/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn delete(
    State(app): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    if app.store.delete_webhook(id, &caller.username).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(id))
    }
}

/// `POST /api/v1/webhooks/{id}/rotate-secret`: a new secret; the old one
/// still signs for 24 hours (both signatures are sent).
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The endpoint with its new secret (shown only here)", body = WebhookRotated),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn rotate_secret(
    State(app): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let secret = secret::generate();
    let sealed = app.webhooks.sealer().seal(id, &secret);
    let until = Micros(Micros::now().0 + ROTATION_OVERLAP_US);
    match app
        .store
        .rotate_webhook_secret(id, &sealed, until, &caller.username)
        .await?
    {
        Some(endpoint) => Ok(Json(with_secret(
            &endpoint,
            &secret,
            Some(("previous_secret_expires_at", json!(until))),
        ))
        .into_response()),
        None => Err(not_found(id)),
    }
}

/// `POST /api/v1/webhooks/{id}/test`: sends a `webhook.test` message now
/// (one attempt, no retries; also to a disabled endpoint) and answers its
/// delivery.
#[utoipa::path(
    post, path = "/api/v1/webhooks/{id}/test", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id")),
    responses(
        (status = 200, description = "The test delivery after its attempt", body = DeliveryDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn test(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    match app.webhooks.send_test(id).await? {
        Some(delivery) => Ok(Json(delivery).into_response()),
        None => Err(not_found(id)),
    }
}

/// `GET /api/v1/webhooks/{id}/deliveries`: the delivery log, newest first.
#[utoipa::path(
    get, path = "/api/v1/webhooks/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = String, Path, description = "Endpoint id"), DeliveryParams),
    responses(
        (status = 200, description = "The endpoint's deliveries", body = DeliveryList),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn deliveries(
    State(app): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<DeliveryParams>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&id)?;
    let mut checks = Checks::default();
    let status = params.status.as_deref().and_then(|raw| {
        let status = DeliveryStatus::parse(raw);
        if status.is_none() {
            checks.fail(
                "status",
                "must be pending, delivered, failed, digested or cancelled",
            );
        }
        status
    });
    let limit = checks.page_limit(params.limit);
    checks.finish()?;
    if app.store.load_webhook(id).await?.is_none() {
        return Err(not_found(id));
    }
    let deliveries = app.store.list_deliveries(id, status, limit).await?;
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

// --- OpenAPI shapes of the answers.

/// A webhook endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = Webhook)]
#[allow(dead_code)]
pub struct WebhookDoc {
    /// 32 hex digits.
    #[schema(pattern = "^[0-9a-f]{32}$")]
    id: String,
    url: String,
    description: String,
    #[schema(inline)]
    events: Vec<EventName>,
    /// `null`: every alert kind.
    #[schema(required = true)]
    kinds: Option<Vec<String>>,
    /// `null`: every SKU.
    #[schema(required = true)]
    skus: Option<Vec<String>>,
    #[schema(pattern = "^(standard|slack)$")]
    format: String,
    enabled: bool,
    /// `gone` (the receiver answered 410), `failing` (every attempt failed
    /// for 3 days), `admin`; `null` while enabled.
    #[schema(required = true, pattern = "^(gone|failing|admin)$")]
    disabled_reason: Option<String>,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(format = DateTime)]
    updated_at: String,
    #[schema(required = true, format = DateTime)]
    secret_rotated_at: Option<String>,
}

/// A subscribable event.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub enum EventName {
    #[schema(rename = "alert.raised")]
    AlertRaised,
    #[schema(rename = "alert.acknowledged")]
    AlertAcknowledged,
    #[schema(rename = "alert.resolved")]
    AlertResolved,
    #[schema(rename = "sku.changed")]
    SkuChanged,
}

/// An endpoint as created, with its secret (shown only here).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WebhookWithSecret {
    #[schema(inline)]
    #[serde(flatten)]
    endpoint: WebhookDoc,
    /// `whsec_` and the base64 of 32 bytes: the key of the signatures.
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    secret: String,
}

/// An endpoint after a rotation, with its new secret.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WebhookRotated {
    #[schema(inline)]
    #[serde(flatten)]
    endpoint: WebhookDoc,
    #[schema(pattern = "^whsec_[A-Za-z0-9+/=]+$")]
    secret: String,
    /// Until then, messages carry the old secret's signature too.
    #[schema(format = DateTime)]
    previous_secret_expires_at: String,
}

/// The endpoints.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct WebhookList {
    webhooks: Vec<WebhookDoc>,
}

/// One message to one endpoint.
#[derive(utoipa::ToSchema)]
#[schema(as = WebhookDelivery)]
#[allow(dead_code)]
pub struct DeliveryDoc {
    /// The `webhook-id` header, the same on every retry.
    #[schema(pattern = "^msg_[0-9a-f]{32}$")]
    id: String,
    /// `alert.raised`, `alert.acknowledged`, `alert.resolved`,
    /// `sku.changed`, `alert.digest` or `webhook.test`.
    #[serde(rename = "type")]
    kind: String,
    #[schema(pattern = "^(pending|delivered|failed|digested|cancelled)$")]
    status: String,
    #[schema(minimum = 0)]
    attempts: i64,
    #[schema(format = DateTime)]
    created_at: String,
    #[schema(required = true, format = DateTime)]
    last_attempt_at: Option<String>,
    #[schema(required = true)]
    last_status_code: Option<i64>,
    #[schema(required = true)]
    last_error: Option<String>,
    #[schema(required = true, format = DateTime)]
    next_attempt_at: Option<String>,
    #[schema(required = true)]
    alert_id: Option<i64>,
    #[schema(required = true)]
    event_id: Option<i64>,
    /// Only on `digested` deliveries: the digest message that carried it.
    digest_id: Option<String>,
}

/// An endpoint's deliveries, newest first.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeliveryList {
    deliveries: Vec<DeliveryDoc>,
}

/// What an endpoint is sent (`format: standard`): the body of each POST,
/// signed per the Standard Webhooks specification (headers `webhook-id`,
/// `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
/// "id.timestamp.body">`, space-separated during a rotation); the same
/// `webhook-id` on every retry. Alert messages carry `alert` and `sku`;
/// `sku.changed` carries `event` and `sku`; `alert.digest` carries
/// `count` and `messages` (`{"id", "type", "alert"}` each).
#[derive(utoipa::ToSchema)]
#[schema(example = json!({
    "type": "alert.raised",
    "timestamp": "2026-12-01T03:00:00.123456Z",
    "data": {"alert": {"id": 17, "sku": "MUG-01", "kind": "low_stock", "status": "open",
                       "message": "MUG-01 is low: 3 left (threshold 5)", "value": 3, "threshold": 5,
                       "raised_at": "2026-12-01T03:00:00.123456Z", "acknowledged_by": null,
                       "resolved_at": null},
             "sku": {"sku": "MUG-01", "name": "Mug", "stock": 3}}
}))]
#[allow(dead_code)]
pub struct WebhookMessage {
    /// `alert.raised`, `alert.acknowledged`, `alert.resolved`,
    /// `sku.changed`, `alert.digest` or `webhook.test`.
    #[serde(rename = "type")]
    kind: String,
    /// When the alert changed (the event's time for `sku.changed`).
    #[schema(format = DateTime)]
    timestamp: String,
    #[schema(value_type = Object)]
    data: serde_json::Value,
}
