//! `/api/v1/alerts`, `/api/v1/alerts/{id}/ack` and `/api/v1/summary`.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use skuwatch_actors::domain::{AlertStatus, SkuCode};

use super::error::ApiError;
use super::extract::ApiQuery;
use super::validate::Checks;
use super::AppState;
use crate::auth::{Admin, Reader};

/// Query of `GET /api/v1/alerts`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertParams {
    /// `open`, `acknowledged` or `resolved`.
    #[param(pattern = "^(open|acknowledged|resolved)$", nullable = false)]
    status: Option<String>,
    /// Only this SKU's alerts.
    #[param(
        pattern = r"^[^\s/\x00-\x1f\x7f-\x9f\u00ad\u200b-\u200f\u202a-\u202e\u2060-\u2064\ufeff]{1,64}$",
        nullable = false
    )]
    sku: Option<String>,
    /// 1-1000 (default 100).
    #[param(minimum = 1, maximum = 1000, nullable = false)]
    limit: Option<i64>,
}

/// `GET /api/v1/alerts?status=open&sku=...&limit=...`, newest first.
#[utoipa::path(
    get, path = "/api/v1/alerts", tag = "alerts", params(AlertParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "Alerts, newest first", body = super::openapi::AlertList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn list(
    State(app): State<AppState>,
    _: Reader,
    ApiQuery(params): ApiQuery<AlertParams>,
) -> Result<Response, ApiError> {
    let mut checks = Checks::default();
    let status = params.status.as_deref().and_then(|s| {
        let parsed = AlertStatus::parse(s);
        if parsed.is_none() {
            checks.fail("status", "must be open, acknowledged or resolved");
        }
        parsed
    });
    let sku = params
        .sku
        .as_deref()
        .and_then(|s| checks.check("sku", SkuCode::parse(s)));
    let limit = checks.page_limit(params.limit);
    checks.finish()?;
    let alerts = app.store.list_alerts(status, sku.as_ref(), limit).await?;
    Ok(Json(json!({ "alerts": alerts })).into_response())
}

/// `POST /api/v1/alerts/{id}/ack` (admin): open -> acknowledged; doing it
/// again, or on a resolved alert, changes nothing and answers the alert.
#[utoipa::path(
    post, path = "/api/v1/alerts/{id}/ack", tag = "alerts", security(("bearer" = [])),
    params(("id" = i64, Path, description = "Alert id")),
    responses(
        (status = 200, description = "The alert", body = super::openapi::AlertDoc),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn acknowledge(
    State(app): State<AppState>,
    Admin(caller): Admin,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: i64 = id
        .parse()
        .map_err(|_| ApiError::field("id", "must be an alert id"))?;
    match app.store.acknowledge_alert(id, &caller.username).await? {
        Some(alert) => {
            // Its webhook messages, if any, are due now (issue 19).
            app.webhooks.wake();
            Ok(Json(alert).into_response())
        }
        None => Err(ApiError::not_found(format!("alert {id} does not exist"))),
    }
}

/// `GET /api/v1/summary`: counts for a dashboard header.
#[utoipa::path(
    get, path = "/api/v1/summary", tag = "alerts", security(("bearer" = [])),
    responses(
        (status = 200, description = "Counts", body = super::openapi::Summary),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn summary(State(app): State<AppState>, _: Reader) -> Result<Response, ApiError> {
    Ok(Json(app.store.summary().await?).into_response())
}
