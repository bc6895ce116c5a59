//! The REST API of `../shared/API.md`. Handlers are thin: they validate into
//! domain types, hand the work to the SKU actors or the store, and map the
//! outcome; every error goes through [`error::ApiError`].

mod alerts;
mod auth;
mod dashboard;
pub mod error;
mod events;
pub(crate) mod extract;
mod holds;
pub mod links;
pub mod observe;
pub mod openapi;
mod skus;
mod stock;
mod validate;
mod webhooks;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use skuwatch_actors::domain::{Command, Sku, SkuCode, WriteMeta};
use skuwatch_actors::messages::WriteRequest;
use skuwatch_actors::registry::Registry;
use skuwatch_actors::store::SkuStore;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
pub use auth::new_user;
use error::{committed_or_error, ApiError, ErrorResponse, ProblemKind};
pub use skus::DEFAULT_LOW_STOCK_THRESHOLD;

/// Shared by every handler and WebSocket session.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    /// Everything HTTP reads and writes outside the actors goes through the
    /// one storage trait (PostgreSQL, SQLite, or in memory in unit tests).
    pub store: Arc<dyn SkuStore>,
    pub jwt: crate::auth::JwtKeys,
    pub throttle: crate::auth::LoginThrottle,
    /// The client's address: the peer, or what a trusted proxy says.
    pub client_addr: crate::auth::ClientAddr,
    /// Whether the bus listener has connected at least once (`/readyz`
    /// says `"starting"` until then).
    pub bus_seen_up: Arc<std::sync::atomic::AtomicBool>,
    pub registry: Registry,
    /// Per-SKU subscriber sets of this instance's sessions, kept for the
    /// SKU actors by their supervisor's side (`skuwatch_actors::subscribers`).
    pub subscribers: Arc<crate::outbox::SkuSubscribers>,
    /// The catalog actor: `all` and `alerts` subscriptions.
    pub catalog: crate::catalog::Catalog,
    /// The supervisor of the session actors.
    pub sessions: crate::session::Sessions,
    /// For its connection state (`/readyz`, WebSocket notices).
    pub bus: Arc<dyn skuwatch_actors::bus::EventBus>,
    pub settings: Settings,
    /// Open WebSocket sessions per user (`SKUWATCH_WS_MAX_SESSIONS_PER_USER`).
    pub ws_sessions: crate::ws::SessionCounts,
    /// Cancelled on SIGTERM/SIGINT: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Upgraded WebSocket sessions, which the HTTP server no longer tracks:
    /// graceful shutdown waits for them to send their close frame.
    pub tasks: tokio_util::task::TaskTracker,
    /// Webhook endpoints' sealing key, the test sends, the worker's wake.
    pub webhooks: crate::webhooks::Webhooks,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;
    fn deref(&self) -> &AppInner {
        &self.0
    }
}

impl AppState {
    pub fn new(inner: AppInner) -> Self {
        Self(Arc::new(inner))
    }
}

/// Runs a single-SKU write through its actor and returns the new state, or
/// the problem document of a refusal.
async fn write_one(
    app: &AppState,
    sku: &SkuCode,
    command: Command,
    meta: WriteMeta,
) -> Result<Sku, ErrorResponse> {
    let request = WriteRequest {
        command,
        meta,
        idempotency: None,
    };
    let outcome = app.registry.write(sku, request).await?;
    let changes = committed_or_error(outcome)?;
    changes
        .last()
        .map(|c| c.sku.clone())
        .ok_or_else(|| ApiError::internal().into())
}

/// `POST /api/v1/import` (admin), body `text/csv`.
#[utoipa::path(
    post, path = "/api/v1/import", tag = "skus", security(("bearer" = [])),
    request_body(
        content = String, content_type = "text/csv",
        description = "Header row `sku,name,price,currency[,stock][,low_stock_threshold]`, RFC 4180 quoting, optional UTF-8 BOM; at most `SKUWATCH_IMPORT_MAX_ROWS` rows and `SKUWATCH_IMPORT_LIMIT_BYTES` bytes."
    ),
    responses(
        (status = 200, description = "Good rows landed; bad rows are reported by line and skipped", body = openapi::ImportReport),
        (status = 400, response = openapi::BadRequest),
        (status = 401, response = openapi::Unauthorized),
        (status = 403, response = openapi::Forbidden),
        (status = 413, response = openapi::PayloadTooLarge),
        (status = 415, response = openapi::UnsupportedMediaType),
        (status = 422, response = openapi::Invalid),
        (status = 503, response = openapi::Unavailable),
    )
)]
async fn import(
    State(app): State<AppState>,
    crate::auth::Admin(caller): crate::auth::Admin,
    request: Request,
) -> Result<Response, ApiError> {
    let body = extract::body_of_type(request, &(), "csv").await?;
    // Once the server has the whole file, the import runs to its end in a
    // task of its own whether or not the client stays (a dropped handler
    // would otherwise stop it between two rows), and logs its report. The
    // task is tracked, so a graceful shutdown waits for it.
    let max_rows = app.settings.import_max_rows;
    let registry = app.registry.clone();
    let store = app.store.clone();
    let bus = app.bus.clone();
    let task = app.tasks.spawn(async move {
        let started = std::time::Instant::now();
        let (rows, errors) =
            crate::import::parse_limited(&body, max_rows).map_err(|e| match e {
                crate::import::FileError::Header(e) => ApiError::field("header", e),
                crate::import::FileError::TooManyRows(e) => {
                    ApiError::new(ProblemKind::PayloadTooLarge, e.to_string())
                }
            })?;
        let rows_in_file = rows.len() + errors.len();
        let user = caller.username;
        let report =
            crate::import::apply(&registry, &*store, &*bus, rows, errors, Some(user.clone()))
                .await
                .inspect_err(|error| tracing::warn!(%error, by = %user, "import failed"))?;
        tracing::info!(
            by = %user,
            rows = rows_in_file,
            created = report.created,
            updated = report.updated,
            unchanged = report.unchanged,
            errors = report.errors.len(),
            seconds = started.elapsed().as_secs_f64(),
            "import finished"
        );
        Ok::<_, ApiError>(report)
    });
    let report = task.await.map_err(|error| {
        tracing::error!(%error, "import task failed");
        ApiError::internal()
    })??;
    Ok(Json(report).into_response())
}

/// `GET /healthz`: the process is alive.
#[utoipa::path(
    get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = openapi::Health))
)]
async fn healthz() -> Response {
    Json(json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the database answers and, with `REDIS_URL`, the Redis
/// listener is subscribed (API.md, Operations); 503 otherwise, with
/// `"redis": "starting"` until the listener's first connection. The
/// database is probed on a connection of its own with a short timeout, so
/// this answers while the shared pool is exhausted.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = openapi::Readiness),
        (status = 503, description = "Not ready (or still starting)", body = openapi::Readiness),
    )
)]
async fn readyz(State(app): State<AppState>) -> Response {
    let database = app.store.ping().await;
    if let Err(error) = &database {
        tracing::warn!(%error, "not ready: database");
    }
    let mut body = json!({
        "status": "ready",
        "database": if database.is_ok() { "ok" } else { "unreachable" },
    });
    let mut ready = database.is_ok();
    if app.settings.redis_url.is_some() {
        let listening = *app.bus.connected().borrow();
        let redis = if listening {
            "ok"
        } else if app.bus_seen_up.load(std::sync::atomic::Ordering::Acquire) {
            tracing::warn!("not ready: the Redis listener is not subscribed");
            "unreachable"
        } else {
            tracing::info!("not ready yet: the Redis listener is starting");
            "starting"
        };
        body["redis"] = json!(redis);
        ready &= listening;
    }
    if ready {
        Json(body).into_response()
    } else {
        body["status"] = json!("not_ready");
        (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
    }
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route")
}

/// 405; labelled with the route's template in the metrics, since the path
/// matched (a route layer does not see method fallbacks).
async fn wrong_method(matched: Option<axum::extract::MatchedPath>) -> Response {
    let response = ApiError::new(
        ProblemKind::MethodNotAllowed,
        "this route does not take that method",
    )
    .into_response();
    observe::with_route_label(response, matched)
}

/// Answers 503 when a request takes longer than
/// `SKUWATCH_REQUEST_TIMEOUT_MS` (the handler's future is dropped): a write
/// (any method but GET, HEAD, OPTIONS; not a login) gets `outcome_unknown`, since it may
/// have committed (a write still queued at a SKU actor is withdrawn, one
/// already started runs to its end); a read gets `timeout` with
/// `Retry-After`. CSV import is exempt: it runs to its end in a task of its
/// own either way (see [`import`]), and its report is worth the wait; its
/// size and row count are limited instead.
async fn request_timeout(
    State(limit): State<std::time::Duration>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    if request.uri().path() == "/api/v1/import" {
        return next.run(request).await;
    }
    // A login changes nothing stored (a token is only issued), so it is
    // answered like a read.
    let write = !request.method().is_safe() && request.uri().path() != "/api/v1/auth/token";
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) if write => ApiError::outcome_unknown(&format!(
            "the request took longer than {} ms",
            limit.as_millis()
        ))
        .into_response(),
        Err(_) => ApiError::new(
            ProblemKind::Timeout,
            format!(
                "the request took longer than {} ms; nothing was changed, retry later",
                limit.as_millis()
            ),
        )
        .retry_after(error::OVERLOADED_RETRY_AFTER_SECS)
        .into_response(),
    }
}

/// The whole HTTP surface. `metrics`: serve `GET /metrics` here (`None`
/// when it has a listener of its own, `SKUWATCH_METRICS_BIND`).
pub fn router(
    app: AppState,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> Router {
    let settings = &app.settings;
    let api = Router::new()
        .route("/skus", get(skus::list).post(skus::create))
        .route("/skus/{sku}", get(skus::get).patch(skus::patch))
        .route("/skus/{sku}/price", put(skus::set_price))
        .route("/skus/{sku}/stock", put(skus::set_stock))
        .route("/skus/{sku}/stock/adjustments", post(stock::adjust))
        .route("/skus/{sku}/history", get(events::history))
        .route("/stock/adjustments", post(stock::adjust_batch))
        .route("/events", get(events::feed))
        .route("/alerts", get(alerts::list))
        .route("/alerts/{id}/ack", post(alerts::acknowledge))
        .route("/summary", get(alerts::summary))
        .route("/holds", get(holds::list).post(holds::create))
        .route("/holds/{id}", get(holds::get))
        .route("/holds/{id}/extend", post(holds::extend))
        .route("/holds/{id}/release", post(holds::release))
        .route("/holds/{id}/commit", post(holds::commit))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{id}",
            get(webhooks::get)
                .patch(webhooks::patch)
                .delete(webhooks::delete),
        )
        .route(
            "/webhooks/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{id}/test", post(webhooks::test))
        .route("/webhooks/{id}/deliveries", get(webhooks::deliveries))
        .route("/auth/token", post(auth::token))
        .route("/users", post(auth::create_user))
        .route(
            "/import",
            post(import).layer(DefaultBodyLimit::max(settings.import_limit_bytes)),
        )
        .method_not_allowed_fallback(wrong_method);
    let mut routes = Router::new()
        .nest("/api/v1", api)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws", get(crate::ws::upgrade))
        .merge(openapi::router());
    if let Some(handle) = metrics {
        routes = routes.route("/metrics", get(observe::metrics).with_state(handle));
    }
    routes
        // Before the fallbacks: only matched routes get their template.
        .route_layer(axum::middleware::from_fn(observe::route_label))
        .route_layer(axum::middleware::from_fn(
            extract::refuse_unsupported_preconditions,
        ))
        // Everything else: the dashboard (README "Dashboard"), which keeps
        // the problem-document 404 for the server's own prefixes.
        .fallback(dashboard::serve)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(axum::Extension(extract::JsonDepth(settings.json_max_depth)))
        .layer(axum::middleware::from_fn_with_state(
            std::time::Duration::from_millis(settings.request_timeout_ms.max(1)),
            request_timeout,
        ))
        // Spans name the path only: a query string may carry what must not
        // be logged (API.md: no token in the URL, but clients try).
        .layer(
            tower_http::trace::TraceLayer::new_for_http()
                .make_span_with(observe::span)
                .on_failure(observe::on_failure),
        )
        .layer(axum::middleware::from_fn(observe::track))
        .layer(observe::propagate_request_id())
        .layer(observe::set_request_id())
        .with_state(app)
}
