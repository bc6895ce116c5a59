//! HTTP observability: request metrics labelled by matched route, request
//! ids, the request span, and `GET /metrics`.
//!
//! The route label comes from axum's [`MatchedPath`], which exists only
//! inside the router (after routing). [`route_label`] runs there (as a
//! route layer) and copies it into the response; [`track`] runs outside
//! everything, so it also sees 404 fallbacks, 405s and 413s, and reads the
//! label back from the response, or uses [`UNMATCHED_ROUTE`]. The 405
//! fallback labels its answer itself ([`with_route_label`]).

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::metrics::{HTTP_DURATION, HTTP_IN_FLIGHT, HTTP_REQUESTS, UNMATCHED_ROUTE};

/// The header carrying the request id, taken from the client when present.
pub const REQUEST_ID: &str = "x-request-id";

/// The matched route template, carried from the route layer to [`track`].
#[derive(Clone)]
struct RouteLabel(MatchedPath);

/// Route layer: remembers which route template served the request.
pub async fn route_label(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    let mut response = next.run(request).await;
    if let Some(matched) = matched {
        response.extensions_mut().insert(RouteLabel(matched));
    }
    response
}

/// Labels a response produced outside the route layer (the 405 fallback).
pub fn with_route_label(mut response: Response, matched: Option<MatchedPath>) -> Response {
    if let Some(matched) = matched {
        response.extensions_mut().insert(RouteLabel(matched));
    }
    response
}

/// Outermost metrics layer: counts and times every request by method,
/// route template and status. Methods outside the standard set are one
/// label (`other`), so a client cannot mint series.
pub async fn track(request: Request, next: Next) -> Response {
    let method: &'static str = match request.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let started = Instant::now();
    metrics::gauge!(HTTP_IN_FLIGHT).increment(1.0);
    let response = next.run(request).await;
    metrics::gauge!(HTTP_IN_FLIGHT).decrement(1.0);
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or(UNMATCHED_ROUTE.to_owned(), |r| r.0.as_str().to_owned());
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
    metrics::histogram!(HTTP_DURATION, &labels).record(started.elapsed().as_secs_f64());
    response
}

/// The request span: method, path (never the query, which may carry what
/// must not be logged) and the request id.
pub fn span(request: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
}

/// Logs a failed response. A 503 is a deliberate refusal (overloaded, not
/// ready yet, outcome unknown) whose cause the code refusing it logs at its
/// own level, so it is only a debug line here; any other 5xx, or a failure
/// of the connection, is an error.
pub fn on_failure(
    failure: tower_http::classify::ServerErrorsFailureClass,
    latency: std::time::Duration,
    _span: &tracing::Span,
) {
    use tower_http::classify::ServerErrorsFailureClass as Class;
    let latency_ms = latency.as_millis() as u64;
    match failure {
        Class::StatusCode(status) if status == axum::http::StatusCode::SERVICE_UNAVAILABLE => {
            tracing::debug!(%status, latency_ms, "refused with 503");
        }
        Class::StatusCode(status) => tracing::error!(%status, latency_ms, "response failed"),
        Class::Error(error) => tracing::error!(%error, latency_ms, "response failed"),
    }
}

/// Gives each request an `x-request-id` (a UUID unless the client sent one).
pub fn set_request_id() -> SetRequestIdLayer<MakeRequestUuid> {
    SetRequestIdLayer::x_request_id(MakeRequestUuid)
}

/// Copies the request id into the response.
pub fn propagate_request_id() -> PropagateRequestIdLayer {
    PropagateRequestIdLayer::x_request_id()
}

/// `GET /metrics`: Prometheus text exposition format 0.0.4.
pub async fn metrics(State(handle): State<PrometheusHandle>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        handle.render(),
    )
        .into_response()
}

/// A router serving only `GET /metrics` (merged into the API, or served on
/// `SKUWATCH_METRICS_BIND`).
pub fn metrics_router(handle: PrometheusHandle) -> axum::Router {
    axum::Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(handle)
}
