//! Every error a client can see, as an RFC 9457 problem document
//! (`application/problem+json`, API.md Conventions). This is the one place
//! where errors become HTTP.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{json, Value};
use skuwatch_actors::domain::DomainError;
use skuwatch_actors::registry::ActorError;
use skuwatch_actors::store::{StoreError, StoredResponse, WriteOutcome};

/// One field-level complaint.
#[derive(Debug, Clone, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl ToString) -> Self {
        Self {
            field: field.into(),
            message: message.to_string(),
        }
    }
}

/// `Retry-After` of a 503 `overloaded` or `unavailable`: the waits that
/// overflowed are bounded at a few seconds, so a second or two frees them.
pub const OVERLOADED_RETRY_AFTER_SECS: u64 = 1;

/// Every kind of problem a client can see. Its `type` (a stable machine
/// code, API.md Conventions), its status and its title come from the one
/// exhaustive `match` in [`ProblemKind::describe`], so a kind cannot be
/// sent with another status or spelled two ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProblemKind {
    /// 400: a request that is not HTTP this API takes (see also
    /// [`ProblemKind::UpgradeRefused`]).
    BadRequest,
    /// 400: the body is not JSON, or not the JSON shape of the route.
    MalformedJson,
    /// 401, with `WWW-Authenticate`.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409.
    AlreadyExists,
    /// 409, with `skus`.
    InsufficientStock,
    /// 409, with `lines` (issue 17).
    InsufficientAvailable,
    /// 409, with `status` and `event_ids` (issue 17).
    HoldNotActive,
    /// 409, with `newest_event_id`.
    CursorAhead,
    /// 409, with `newest_event_id`.
    CursorUnknown,
    /// 412, with `current_version`.
    VersionMismatch,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 422, with `errors`.
    Validation,
    /// 422: a price outside the guard without `confirm`.
    PriceGuard,
    /// 422: an `Idempotency-Key` reused with another request.
    IdempotencyMismatch,
    /// 429, with `Retry-After`.
    TooManyRequests,
    /// 500; the error is logged, never sent.
    Internal,
    /// 503: the database or the SKU's actor cannot be reached; nothing done.
    Unavailable,
    /// 503 with `Retry-After`: a bounded queue or wait was full; nothing done.
    Overloaded,
    /// 503: the write may or may not have happened.
    OutcomeUnknown,
    /// 503: the request took longer than the request timeout.
    Timeout,
    /// A WebSocket upgrade refused by axum: `bad_request` at the status
    /// the refusal names (400, 405 for a method other than GET, 426 when
    /// the connection cannot be upgraded).
    UpgradeRefused(StatusCode),
}

impl ProblemKind {
    /// Status, `type` and `title`: the one mapping.
    fn describe(self) -> (StatusCode, &'static str, &'static str) {
        use ProblemKind as K;
        match self {
            K::BadRequest => (StatusCode::BAD_REQUEST, "bad_request", "Bad request"),
            K::MalformedJson => (StatusCode::BAD_REQUEST, "malformed_json", "Malformed JSON"),
            K::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized"),
            K::Forbidden => (StatusCode::FORBIDDEN, "forbidden", "Forbidden"),
            K::NotFound => (StatusCode::NOT_FOUND, "not_found", "Not found"),
            K::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed",
            ),
            K::AlreadyExists => (StatusCode::CONFLICT, "already_exists", "Already exists"),
            K::InsufficientStock => (
                StatusCode::CONFLICT,
                "insufficient_stock",
                "Insufficient stock",
            ),
            K::InsufficientAvailable => (
                StatusCode::CONFLICT,
                "insufficient_available",
                "Not enough available",
            ),
            K::HoldNotActive => (StatusCode::CONFLICT, "hold_not_active", "Hold not active"),
            K::CursorAhead => (
                StatusCode::CONFLICT,
                "cursor_ahead",
                "Cursor ahead of the server",
            ),
            K::CursorUnknown => (StatusCode::CONFLICT, "cursor_unknown", "Cursor unknown"),
            K::VersionMismatch => (
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "Version mismatch",
            ),
            K::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Payload too large",
            ),
            K::UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
            ),
            K::Validation => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "validation",
                "Invalid request",
            ),
            K::PriceGuard => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "price_guard",
                "Price outside the guard",
            ),
            K::IdempotencyMismatch => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_mismatch",
                "Idempotency key reused with another request",
            ),
            K::TooManyRequests => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_requests",
                "Too many requests",
            ),
            K::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "Internal server error",
            ),
            K::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "Service unavailable",
            ),
            K::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded", "Overloaded"),
            K::OutcomeUnknown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "Outcome unknown",
            ),
            K::Timeout => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                "Request timed out",
            ),
            K::UpgradeRefused(status) => (status, "bad_request", "Bad request"),
        }
    }

    pub fn status(self) -> StatusCode {
        self.describe().0
    }

    /// The `type` member: a stable machine code such as `insufficient_stock`.
    pub fn code(self) -> &'static str {
        self.describe().1
    }

    pub fn title(self) -> &'static str {
        self.describe().2
    }
}

/// A problem document (boxed: errors travel through many `Result`s).
#[derive(Debug)]
pub struct ApiError(Box<Problem>);

#[derive(Debug)]
struct Problem {
    kind: ProblemKind,
    detail: String,
    errors: Vec<FieldError>,
    /// Extension members, e.g. the SKUs that lacked stock.
    extra: Vec<(&'static str, Value)>,
    /// `Retry-After` in seconds (RFC 9110 §10.2.3), for 429 and 503s where
    /// nothing was done.
    retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(kind: ProblemKind, detail: impl Into<String>) -> Self {
        Self(Box::new(Problem {
            kind,
            detail: detail.into(),
            errors: Vec::new(),
            extra: Vec::new(),
            retry_after: None,
        }))
    }

    /// Adds `Retry-After: seconds` to the response.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.0.retry_after = Some(seconds.max(1));
        self
    }

    /// 503 `overloaded` (API.md v1 additions): a bounded queue or pool was
    /// full; nothing was done; retry after `Retry-After` seconds.
    pub fn overloaded(detail: impl Into<String>) -> Self {
        metrics::counter!(crate::metrics::REFUSED_503, "kind" => "overloaded").increment(1);
        Self::new(ProblemKind::Overloaded, detail).retry_after(OVERLOADED_RETRY_AFTER_SECS)
    }

    /// 503 `outcome_unknown` (API.md v1 additions): the write may or may
    /// not have happened.
    pub fn outcome_unknown(why: &str) -> Self {
        metrics::counter!(crate::metrics::REFUSED_503, "kind" => "outcome_unknown").increment(1);
        Self::new(
            ProblemKind::OutcomeUnknown,
            format!(
                "{why}; the write may or may not have happened: read the resource again, \
                 then retry with If-Match or the same Idempotency-Key"
            ),
        )
    }

    fn with_errors(mut self, errors: Vec<FieldError>) -> Self {
        self.0.errors = errors;
        self
    }

    fn with_extra(mut self, key: &'static str, value: Value) -> Self {
        // RFC 9457 §3.1 members keep their meaning: an extension never
        // overwrites them (a hold's status went out as `status` once).
        debug_assert!(
            !["type", "title", "status", "detail", "instance", "errors"].contains(&key),
            "problem extension {key} shadows a standard member"
        );
        self.0.extra.push((key, value));
        self
    }

    /// 422 `validation` with the fields at fault.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        Self::new(ProblemKind::Validation, detail).with_errors(errors)
    }

    pub fn field(field: &str, message: impl ToString) -> Self {
        Self::validation(vec![FieldError::new(field, message)])
    }

    /// 409 `cursor_ahead` (API.md v1 additions): the client's position is
    /// beyond the newest event, as after a restore or a failover.
    pub fn cursor_ahead(newest_event_id: i64) -> Self {
        Self::new(
            ProblemKind::CursorAhead,
            format!(
                "the position is beyond the newest event ({newest_event_id}); the server was \
                 restored or failed over: reset and take a snapshot"
            ),
        )
        .with_extra("newest_event_id", json!(newest_event_id))
    }

    /// 409 `cursor_unknown` (API.md v1 additions): the cursor names an event
    /// this server has as another one (restored, then written past it).
    pub fn cursor_unknown(newest_event_id: i64) -> Self {
        Self::new(
            ProblemKind::CursorUnknown,
            "the cursor names an event this server does not have as you saw it; it was \
             restored or failed over: reset and take a snapshot",
        )
        .with_extra("newest_event_id", json!(newest_event_id))
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ProblemKind::NotFound, detail)
    }

    pub fn internal() -> Self {
        Self::new(
            ProblemKind::Internal,
            "the server failed; the error is logged",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.0.kind.status()
    }

    pub fn kind(&self) -> ProblemKind {
        self.0.kind
    }

    pub fn to_json(&self) -> Value {
        let problem = &self.0;
        let mut body = json!({
            "type": problem.kind.code(),
            "title": problem.kind.title(),
            "status": problem.kind.status().as_u16(),
            "detail": problem.detail,
        });
        if !problem.errors.is_empty() {
            body["errors"] = json!(problem.errors);
        }
        for (key, value) in &problem.extra {
            body[*key] = value.clone();
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            self.to_json().to_string(),
        )
            .into_response();
        if let Some(seconds) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        if self.0.kind == ProblemKind::Unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static(crate::auth::BEARER_CHALLENGE),
            );
        }
        response
    }
}

impl From<DomainError> for ApiError {
    fn from(error: DomainError) -> Self {
        let detail = error.to_string();
        match error {
            DomainError::NotFound(_) => Self::not_found(detail),
            DomainError::AlreadyExists(_) => Self::new(ProblemKind::AlreadyExists, detail.clone())
                .with_errors(vec![FieldError::new("sku", detail)]),
            DomainError::VersionMismatch { current, .. } => {
                Self::new(ProblemKind::VersionMismatch, detail)
                    .with_extra("current_version", json!(current))
            }
            DomainError::InsufficientStock(lacking) => {
                // A batch's shortfall names its line; a single adjustment
                // has the one `delta`.
                let errors = lacking
                    .iter()
                    .map(|s| {
                        let field = match (s.line, s.held_line) {
                            (Some(i), _) => format!("adjustments[{i}].delta"),
                            (None, Some(i)) => format!("lines[{i}].quantity"),
                            (None, None) => "delta".to_owned(),
                        };
                        FieldError::new(
                            field,
                            if s.held_line.is_some() {
                                format!(
                                    "SKU {} has {} in stock, fewer than the {} this hold \
                                     keeps (a count since): release the hold, or restock \
                                     and commit again",
                                    s.sku, s.stock, -s.delta
                                )
                            } else if s.reserved > 0 {
                                format!(
                                    "SKU {} has {} in stock, {} of them held; {} would take \
                                     it below the held units",
                                    s.sku, s.stock, s.reserved, s.delta
                                )
                            } else {
                                format!(
                                    "SKU {} has {} in stock; {} would take it below 0",
                                    s.sku, s.stock, s.delta
                                )
                            },
                        )
                    })
                    .collect();
                let skus: Vec<_> = lacking.iter().map(|s| s.sku.as_str()).collect();
                let detail = if skus.is_empty() {
                    "not enough stock".to_owned()
                } else {
                    format!("not enough stock for {}", skus.join(", "))
                };
                Self::new(ProblemKind::InsufficientStock, detail)
                    .with_errors(errors)
                    .with_extra("skus", json!(skus))
            }
            DomainError::InsufficientAvailable(short) => {
                let errors = short
                    .iter()
                    .map(|s| {
                        FieldError::new(
                            format!("lines[{}].quantity", s.line),
                            format!(
                                "SKU {} has {} available; {} asked for",
                                s.sku, s.available, s.quantity
                            ),
                        )
                    })
                    .collect();
                let skus: Vec<_> = short.iter().map(|s| s.sku.as_str()).collect();
                Self::new(
                    ProblemKind::InsufficientAvailable,
                    format!("not enough available for {}", skus.join(", ")),
                )
                .with_errors(errors)
                .with_extra("lines", json!(short))
            }
            DomainError::HoldNotFound(_) => Self::not_found(detail),
            DomainError::HoldNotActive {
                status, event_ids, ..
            } => Self::new(ProblemKind::HoldNotActive, detail)
                // Not `status`: RFC 9457 §3.1.3 keeps that member for the
                // HTTP status code.
                .with_extra("hold_status", json!(status))
                .with_extra("event_ids", json!(event_ids)),
            DomainError::CurrencyMismatch { .. } => Self::field("currency", detail),
            DomainError::StockOverflow(_) => Self::field("delta", detail),
            DomainError::Invalid { field, message } => Self::field(&field, message),
            DomainError::PriceGuard(_) => Self::new(ProblemKind::PriceGuard, detail.clone())
                .with_errors(vec![FieldError::new(
                    "price",
                    format!("{detail}; send \"confirm\": true to set it anyway"),
                )]),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "database unavailable");
                Self::new(
                    ProblemKind::Unavailable,
                    "the database is unavailable; nothing was changed, retry later",
                )
                .retry_after(OVERLOADED_RETRY_AFTER_SECS)
            }
            StoreError::Busy(reason) => {
                tracing::warn!(%reason, "database busy; request refused");
                Self::overloaded("the database is busy; nothing was changed, retry later")
            }
            StoreError::OutcomeUnknown(reason) => {
                tracing::error!(%reason, "commit interrupted; outcome unknown");
                Self::outcome_unknown("the database connection failed during commit")
            }
            other => {
                tracing::error!(error = %other, "storage failure");
                Self::internal()
            }
        }
    }
}

impl From<ActorError> for ApiError {
    fn from(error: ActorError) -> Self {
        match error {
            ActorError::Store(e) => e.into(),
            ActorError::Timeout => {
                tracing::warn!(%error, "SKU actor busy; request withdrawn");
                Self::overloaded("the SKU is busy; nothing was changed, retry later")
            }
            // Counted as `skuwatch_actor_mailbox_refused_total` where refused.
            ActorError::Overloaded => Self::overloaded(
                "the SKU has too many writes waiting; nothing was changed, retry later",
            ),
            ActorError::Unavailable(_) => {
                tracing::warn!(%error, "SKU actor unavailable");
                Self::new(
                    ProblemKind::Unavailable,
                    "the SKU is unavailable; nothing was changed, retry later",
                )
                .retry_after(OVERLOADED_RETRY_AFTER_SECS)
            }
            ActorError::OutcomeUnknown(_) => {
                tracing::warn!(%error, "write outcome unknown");
                Self::outcome_unknown("the server failed while running the write")
            }
        }
    }
}

/// A ready-made error response: a problem document, or a response kept
/// for an idempotency key. Handlers that write return it.
pub struct ErrorResponse(Box<Response>);

impl<E: Into<ApiError>> From<E> for ErrorResponse {
    fn from(error: E) -> Self {
        Self(Box::new(error.into().into_response()))
    }
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The changes of a commit, or the response for any other outcome.
pub fn committed_or_error(
    outcome: WriteOutcome,
) -> Result<Vec<skuwatch_actors::domain::Committed>, ErrorResponse> {
    match outcome {
        WriteOutcome::Committed(changes) | WriteOutcome::Held { changes, .. } => Ok(changes),
        WriteOutcome::Rejected(error) => Err(error.into()),
        WriteOutcome::IdempotencyMismatch => Err(ApiError::new(
            ProblemKind::IdempotencyMismatch,
            "this Idempotency-Key was used with a different request",
        )
        .with_errors(vec![FieldError::new(
            "Idempotency-Key",
            "was used with a different request; use a new key for a new request",
        )])
        .into()),
        WriteOutcome::Replayed(stored) => Err(ErrorResponse(Box::new(replayed(stored)))),
    }
}

/// A kept response, returned verbatim.
pub fn replayed(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    (
        status,
        [
            (header::CONTENT_TYPE, content_type),
            (
                header::HeaderName::from_static("idempotent-replayed"),
                "true",
            ),
        ],
        stored.body,
    )
        .into_response()
}

/// Renders a rejected outcome the way [`committed_or_error`] would, for
/// keeping with an idempotency key.
pub fn stored_rejection(outcome: &WriteOutcome) -> Option<StoredResponse> {
    let error = match outcome {
        WriteOutcome::Rejected(error) => ApiError::from(error.clone()),
        _ => return None,
    };
    Some(StoredResponse {
        status: error.status().as_u16(),
        body: error.to_json().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(response: Response) -> (StatusCode, axum::http::HeaderMap) {
        (response.status(), response.headers().clone())
    }

    #[test]
    fn a_problem_document_carries_its_kinds_type_title_and_status() {
        let error = ApiError::from(DomainError::VersionMismatch {
            sku: skuwatch_actors::domain::SkuCode::parse("A-1").unwrap(),
            expected: vec![3],
            current: 4,
        });
        let json = error.to_json();
        assert_eq!(json["type"], "version_mismatch");
        assert_eq!(json["title"], "Version mismatch");
        assert_eq!(json["status"], 412);
        assert_eq!(json["current_version"], 4);
        assert_eq!(error.status(), StatusCode::PRECONDITION_FAILED);
    }

    #[test]
    fn an_upgrade_refusal_is_a_bad_request_at_the_status_axum_chose() {
        let kind = ProblemKind::UpgradeRefused(StatusCode::UPGRADE_REQUIRED);
        let json = ApiError::new(kind, "cannot upgrade").to_json();
        assert_eq!(
            (json["type"].as_str(), json["status"].as_u64()),
            (Some("bad_request"), Some(426))
        );
        assert_eq!(json["title"], ProblemKind::BadRequest.title());
    }

    #[test]
    fn unauthorized_challenges_for_a_bearer_token_and_overloaded_says_when_to_retry() {
        let (status, headers) =
            body(ApiError::new(ProblemKind::Unauthorized, "no").into_response());
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(headers.contains_key(header::WWW_AUTHENTICATE));
        let (status, headers) = body(ApiError::overloaded("full").into_response());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(headers[header::RETRY_AFTER], "1");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    }

    #[test]
    fn a_busy_store_is_overloaded_and_a_lost_commit_outcome_unknown() {
        let busy = ApiError::from(StoreError::Busy("pool".into()));
        assert_eq!(busy.kind(), ProblemKind::Overloaded);
        let lost = ApiError::from(StoreError::OutcomeUnknown("reset".into()));
        assert_eq!(lost.kind(), ProblemKind::OutcomeUnknown);
        let broken = ApiError::from(StoreError::Corrupt("row".into()));
        assert_eq!(
            broken.to_json()["detail"],
            "the server failed; the error is logged"
        );
    }
}
