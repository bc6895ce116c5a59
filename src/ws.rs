//! `/ws`: the upgrade (auth, Origin, per-user session caps) and the client
//! message parsers (API.md, WebSocket). Each upgraded socket is served by
//! its session actor (`crate::session`).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use skuwatch_actors::domain::SkuCode;
use tracing::Instrument;

use crate::auth::{Claims, Role};
use crate::http::error::{ApiError, ProblemKind};
use crate::http::AppState;

/// Bytes read from a socket at a time (BENCHMARKS.md, target 4).
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Frames are written out once this much is queued, or at the end of a drain.
const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;

/// Close codes of API.md.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const TOO_SLOW: u16 = 4408;
    pub const TOO_BIG: u16 = 1009;
    /// RFC 6455 policy violation: too many sessions for the user.
    pub const POLICY: u16 = 1008;
}

/// Open WebSocket sessions per user (`SKUWATCH_WS_MAX_SESSIONS_PER_USER`).
#[derive(Debug, Default, Clone)]
pub struct SessionCounts(Arc<dashmap::DashMap<String, usize>>);

/// One counted session; the count drops with it.
#[derive(Debug)]
pub struct SessionSlot {
    counts: SessionCounts,
    user: String,
}

impl SessionSlot {
    /// Whose slot this is.
    pub fn user(&self) -> &str {
        &self.user
    }
}

impl SessionCounts {
    /// Open sessions of every user.
    pub fn total(&self) -> usize {
        self.0.iter().map(|entry| *entry.value()).sum()
    }

    /// A slot for `user`, or `None` when `max` sessions are open already.
    pub fn acquire(&self, user: &str, max: usize) -> Option<SessionSlot> {
        let mut count = self.0.entry(user.to_owned()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(SessionSlot {
            counts: self.clone(),
            user: user.to_owned(),
        })
    }

    /// Sessions `user` has open.
    pub fn open(&self, user: &str) -> usize {
        self.0.get(user).map_or(0, |c| *c)
    }
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.counts.0.remove_if_mut(&self.user, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

/// Whether a browser page from `origin` may open the socket: the server's
/// own origin (same `Host`) or one of `SKUWATCH_ALLOWED_ORIGINS`.
fn origin_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = origin.trim_end_matches('/');
    let same_host = host.is_some_and(|host| {
        origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host))
    });
    same_host
        || allowed
            .iter()
            .any(|a| a.trim().trim_end_matches('/').eq_ignore_ascii_case(origin))
}

/// Checks a token for the live view: valid, and a role allowed to watch.
pub(crate) fn authorize(
    app: &AppState,
    token: &str,
) -> Result<Claims, (StatusCode, u16, &'static str)> {
    let claims = app.jwt.verify(token).map_err(|_| {
        (
            StatusCode::UNAUTHORIZED,
            close::UNAUTHENTICATED,
            "the token is invalid or expired",
        )
    })?;
    let role = claims.caller().role;
    // A checkout caller never watches (issue 17: holds routes only).
    if !(role == Role::Admin || (role == Role::Viewer && app.settings.ws_viewers)) {
        return Err((
            StatusCode::FORBIDDEN,
            close::FORBIDDEN,
            "the live view needs the admin role",
        ));
    }
    Ok(claims)
}

/// `GET /ws`; a request that is not a WebSocket upgrade gets a problem
/// document like every other error.
#[utoipa::path(
    get, path = "/ws", tag = "live",
    description = include_str!("http/ws_protocol.md"),
    security((), ("bearer" = [])),
    responses(
        (status = 101, description = "Switching Protocols: the WebSocket session (see the description)"),
        (status = 400, response = crate::http::openapi::BadRequest),
        (status = 401, response = crate::http::openapi::Unauthorized),
        (status = 403, response = crate::http::openapi::Forbidden),
        (status = 426, description = "Upgrade Required: the connection cannot be upgraded", body = crate::http::openapi::Problem, content_type = "application/problem+json"),
        (status = 429, description = "`too_many_requests`: the user has `SKUWATCH_WS_MAX_SESSIONS_PER_USER` sessions open", body = crate::http::openapi::Problem, content_type = "application/problem+json"),
    )
)]
pub async fn upgrade(
    State(app): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Before anything else: a token in the URL ends up in logs and history.
    let query = uri.query().unwrap_or("");
    if query.split('&').any(|pair| {
        let name = pair.split('=').next().unwrap_or("");
        name.eq_ignore_ascii_case("token") || name.eq_ignore_ascii_case("access_token")
    }) {
        return ApiError::new(
            ProblemKind::BadRequest,
            "tokens in the URL are refused; send Authorization: Bearer or an auth message",
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(origin, host, &app.settings.allowed_origins) {
            return ApiError::new(
                ProblemKind::Forbidden,
                "this Origin may not open the live view",
            )
            .into_response();
        }
    }
    let claims = match crate::auth::bearer(&headers) {
        Some(token) => match authorize(&app, token) {
            Ok(claims) => Some(claims),
            Err((status, _, detail)) => {
                let kind = if status == StatusCode::FORBIDDEN {
                    ProblemKind::Forbidden
                } else {
                    ProblemKind::Unauthorized
                };
                return ApiError::new(kind, detail).into_response();
            }
        },
        None => None,
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                ProblemKind::UpgradeRefused(rejection.status()),
                rejection.body_text(),
            )
            .into_response()
        }
    };
    let slot = match &claims {
        Some(claims) => match app
            .ws_sessions
            .acquire(&claims.sub, app.settings.ws_max_sessions_per_user)
        {
            Some(slot) => Some(slot),
            None => {
                return ApiError::new(
                    ProblemKind::TooManyRequests,
                    "this user has too many live sessions open",
                )
                .into_response()
            }
        },
        None => None,
    };
    // tungstenite checks both on the frame header, before reading the
    // payload: an oversized frame costs nothing to refuse (1009).
    let max_message = app.settings.ws_max_message_bytes;
    let max_frame = app.settings.ws_max_frame_bytes.min(max_message);
    // The session outlives the request: it keeps the request's span (and
    // request id) for its log lines, and a tracker token so that graceful
    // shutdown waits for its close frame.
    let span = tracing::Span::current();
    let running = app.tasks.token();
    // tungstenite's defaults (128 KiB read buffer a socket) would make
    // each idle session cost over 130 KiB RSS; client messages are small, and
    // a larger one still grows the buffer up to `max_message`. The write
    // buffer is where a drained outbox is fed before its one flush.
    ws.max_message_size(max_message)
        .max_frame_size(max_frame)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| {
            async move {
                crate::session::start(app, socket.into(), claims, slot, running).await;
            }
            .instrument(span)
        })
}

/// A message from the client (API.md, WebSocket), as parsed by
/// [`parse_client_message`].
#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ClientMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub skus: Option<Vec<String>>,
    pub all: Option<bool>,
    pub alerts: Option<bool>,
    /// Replay from here: an event id or a cursor string (API.md v1
    /// additions, Cursors).
    pub since: Option<Since>,
    /// `{"type": "auth", "token": ...}`: first-message auth, or a fresh
    /// token that extends the session.
    pub token: Option<String>,
}

/// Where a subscription resumes: an event id, or a cursor (`next_cursor`
/// of `/events`) that also names the exact event.
#[derive(Debug, Deserialize, PartialEq)]
#[serde(
    untagged,
    expecting = "since: an event id (an integer, 0 or more) or a cursor string"
)]
pub enum Since {
    Id(i64),
    Cursor(String),
}

/// Parses one text message; `Err` is the text of the `bad_message` error.
/// Pure (no session state), so it can be fuzzed on its own.
pub fn parse_client_message(text: &str, max_depth: usize) -> Result<ClientMessage, String> {
    if crate::http::extract::nests_deeper_than(text.as_bytes(), max_depth) {
        return Err(format!("JSON nested deeper than {max_depth} levels"));
    }
    if !crate::http::extract::is_object(text.as_bytes()) {
        return Err("a message is a JSON object".to_owned());
    }
    serde_json::from_str(text).map_err(|e| e.to_string())
}

/// Parses a `skus` list: at most `max` codes, each valid; sorted and
/// deduplicated. `Err` carries the message for the client.
pub fn parse_skus(raw: Option<Vec<String>>, max: usize) -> Result<Vec<SkuCode>, String> {
    let raw = raw.unwrap_or_default();
    if raw.len() > max {
        return Err(format!("at most {max} SKUs per message, got {}", raw.len()));
    }
    let mut skus = Vec::with_capacity(raw.len());
    for code in raw {
        skus.push(SkuCode::parse(&code).map_err(|e| {
            let shown: String = code.chars().take(64).collect();
            format!("SKU '{shown}': {e}")
        })?);
    }
    skus.sort();
    skus.dedup();
    Ok(skus)
}

/// When the token stops being valid, as a timer deadline.
pub(crate) fn expiry(claims: &Claims) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::time::Instant::now() + Duration::from_secs(claims.exp.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::{close, origin_allowed};
    use crate::metrics::DropReason;
    use crate::session::drop_reason;

    #[test]
    fn every_close_code_the_server_sends_has_a_drop_reason() {
        assert_eq!(drop_reason(close::GOING_AWAY), Some(DropReason::Shutdown));
        assert_eq!(drop_reason(close::TOO_SLOW), Some(DropReason::TooSlow));
        assert_eq!(
            drop_reason(close::UNAUTHENTICATED),
            Some(DropReason::Unauthenticated)
        );
        assert_eq!(drop_reason(close::FORBIDDEN), Some(DropReason::Forbidden));
        assert_eq!(drop_reason(close::TOO_BIG), Some(DropReason::TooBig));
        assert_eq!(drop_reason(1011), Some(DropReason::Failed));
        assert_eq!(drop_reason(1000), None);
    }

    #[test]
    fn the_servers_own_origin_and_listed_ones_are_allowed() {
        let allowed = vec!["https://ops.example.com".to_owned()];
        assert!(origin_allowed(
            "http://127.0.0.1:8000",
            Some("127.0.0.1:8000"),
            &[]
        ));
        assert!(origin_allowed(
            "https://ops.example.com",
            Some("skuwatch:8000"),
            &allowed
        ));
        assert!(!origin_allowed(
            "https://evil.example",
            Some("127.0.0.1:8000"),
            &allowed
        ));
        assert!(!origin_allowed("null", None, &allowed));
    }
}

/// Property-based fuzzing of the client-message parser (proptest; see
/// README, Fuzzing): bounded cases (`SKUWATCH_FUZZ_CASES`, default 500).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::{parse_client_message, parse_skus};
    use crate::http::extract::nests_deeper_than;

    fn config() -> ProptestConfig {
        let cases = std::env::var("SKUWATCH_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// Arbitrary JSON values, nested up to a few levels.
    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            ".{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[a-z\\[\\]{}\"]{0,6}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn depth(value: &Value) -> usize {
        match value {
            Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,300}") {
            let _ = parse_client_message(&text, 32);
        }

        #[test]
        fn arbitrary_json_never_panics(value in json_value(), max_depth in 0usize..8) {
            let text = value.to_string();
            let parsed = parse_client_message(&text, max_depth);
            if depth(&value) > max_depth {
                prop_assert!(parsed.is_err());
            }
            if !value.is_object() {
                prop_assert!(parsed.is_err(), "only objects are messages: {}", text);
            }
        }

        #[test]
        fn the_depth_scan_agrees_with_the_parsed_depth(value in json_value(), max in 0usize..8) {
            let text = value.to_string();
            prop_assert_eq!(nests_deeper_than(text.as_bytes(), max), depth(&value) > max, "{}", text);
        }

        #[test]
        fn subscribe_messages_round_trip(
            skus in prop::collection::vec("[!-.0-~]{1,64}", 0..20),
            since in prop::option::of(0i64..i64::MAX),
            all in prop::option::of(any::<bool>()),
        ) {
            let mut message = json!({ "type": "subscribe", "skus": skus });
            if let Some(since) = since {
                message["since"] = json!(since);
            }
            if let Some(all) = all {
                message["all"] = json!(all);
            }
            let parsed = parse_client_message(&message.to_string(), 32).expect("a valid message");
            prop_assert_eq!(parsed.kind.as_str(), "subscribe");
            prop_assert_eq!(parsed.since, since.map(super::Since::Id));
            prop_assert_eq!(parsed.all, all);
            prop_assert_eq!(parsed.skus.as_ref(), Some(&skus));
            let codes = skus.iter().filter(|s| *s != "." && *s != "..").cloned().collect::<Vec<_>>();
            let valid = parse_skus(Some(codes.clone()), 1000).expect("valid codes");
            let mut want = codes;
            want.sort();
            want.dedup();
            prop_assert_eq!(valid.iter().map(|s| s.as_str().to_owned()).collect::<Vec<_>>(), want);
        }

        #[test]
        fn sku_lists_never_panic_and_respect_the_limit(
            skus in prop::collection::vec(".{0,70}", 0..40),
            max in 0usize..30,
        ) {
            match parse_skus(Some(skus.clone()), max) {
                Ok(parsed) => prop_assert!(skus.len() <= max && parsed.len() <= skus.len()),
                Err(message) => prop_assert!(!message.is_empty()),
            }
        }
    }
}
