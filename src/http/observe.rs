//! HTTP observability: request metrics labelled by matched route, request
//! ids, the request span, and `GET /metrics`.
//!
//! The route label comes from axum's [`MatchedPath`], which exists only
//! inside the router (after routing). [`route_label`] runs there (as a
//! route layer) and copies it into the response; [`track`] runs outside
//! everything, so it also sees 404 fallbacks, 405s and 413s, and reads the
//! label back from the response, or uses [`UNMATCHED_ROUTE`]. The 405
//! fallback labels its answer itself ([`with_route_label`]).
//!
//! A request whose client leaves before the answer is dropped mid-way (its
//! future is never polled again): [`track`] counts it with status
//! [`ABORTED_STATUS`] from a drop guard, which is also what keeps the
//! in-flight gauge from leaking one per aborted request.

use std::sync::{Arc, OnceLock};
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

/// Status label of a request whose client left before it was answered
/// (nginx's 499 "client closed request"; no HTTP status is ever sent).
pub const ABORTED_STATUS: &str = "499";

/// The matched route template, carried from the route layer to [`track`].
#[derive(Clone)]
struct RouteLabel(MatchedPath);

/// Where the route layer leaves the template for [`track`] to find even
/// when no response comes (the request was aborted).
#[derive(Clone, Default)]
struct RouteSlot(Arc<OnceLock<MatchedPath>>);

/// Route layer: remembers which route template served the request.
pub async fn route_label(request: Request, next: Next) -> Response {
    let matched = request.extensions().get::<MatchedPath>().cloned();
    if let (Some(matched), Some(slot)) = (&matched, request.extensions().get::<RouteSlot>()) {
        let _ = slot.0.set(matched.clone());
    }
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

/// One request in flight: counted in the gauge from creation to drop, and
/// counted as answered when [`InFlight::answered`] runs, or as aborted
/// ([`ABORTED_STATUS`]) when dropped before that.
struct InFlight {
    method: &'static str,
    started: Instant,
    route: RouteSlot,
    done: bool,
}

impl InFlight {
    fn start(method: &'static str, route: RouteSlot) -> Self {
        metrics::gauge!(HTTP_IN_FLIGHT).increment(1.0);
        Self {
            method,
            started: Instant::now(),
            route,
            done: false,
        }
    }

    fn record(&self, route: String, status: String) {
        let labels = [
            ("method", self.method.to_owned()),
            ("route", route),
            ("status", status),
        ];
        metrics::counter!(HTTP_REQUESTS, &labels).increment(1);
        metrics::histogram!(HTTP_DURATION, &labels).record(self.started.elapsed().as_secs_f64());
    }

    fn answered(mut self, response: &Response) {
        self.done = true;
        let route = response
            .extensions()
            .get::<RouteLabel>()
            .map_or(UNMATCHED_ROUTE.to_owned(), |r| r.0.as_str().to_owned());
        self.record(route, response.status().as_u16().to_string());
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_IN_FLIGHT).decrement(1.0);
        if !self.done {
            let route = self
                .route
                .0
                .get()
                .map_or(UNMATCHED_ROUTE.to_owned(), |m| m.as_str().to_owned());
            self.record(route, ABORTED_STATUS.to_owned());
        }
    }
}

/// Outermost metrics layer: counts and times every request by method,
/// route template and status (`499` when the client left first). Methods
/// outside the standard set are one label (`other`), so a client cannot
/// mint series.
pub async fn track(mut request: Request, next: Next) -> Response {
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
    let slot = RouteSlot::default();
    request.extensions_mut().insert(slot.clone());
    let flight = InFlight::start(method, slot);
    let response = next.run(request).await;
    flight.answered(&response);
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
