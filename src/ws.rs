//! `/ws`: one session per socket (API.md, WebSocket).
//!
//! A session is a `select!` loop owning its socket, its subscriptions and
//! its [`Outbox`]: it reads client messages, drains the outbox the hub fills,
//! pings, and closes on shutdown. Subscribing registers with the hub first
//! and only then reads the database (snapshot or `since` replay), so nothing
//! committed in between is missed; what the outbox then holds twice is
//! dropped by version (per SKU) or event id (all).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use skuwatch_actors::domain::SkuCode;
use skuwatch_actors::store::SkuStore;

use crate::auth::{Claims, Role};
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::hub::SessionId;
use crate::outbox::{Drained, Outbox, OutboxLimits, Outgoing};

/// Most SKUs in one subscribe message (API.md).
pub const MAX_SKUS_PER_MESSAGE: usize = 1000;
/// Bytes read from a socket at a time (BENCHMARKS.md, target 4).
const WS_READ_BUFFER_BYTES: usize = 4 * 1024;
/// Frames are written out once this much is queued, or at the end of a drain.
const WS_WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// Events read from the database per page of a `since` replay.
const REPLAY_PAGE: i64 = 500;

/// Close codes of API.md.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNAUTHENTICATED: u16 = 4401;
    pub const FORBIDDEN: u16 = 4403;
    pub const TOO_SLOW: u16 = 4408;
    pub const TOO_BIG: u16 = 1009;
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
fn authorize(app: &AppState, token: &str) -> Result<Claims, (StatusCode, u16, &'static str)> {
    let claims = app.jwt.verify(token).map_err(|_| {
        (
            StatusCode::UNAUTHORIZED,
            close::UNAUTHENTICATED,
            "the token is invalid or expired",
        )
    })?;
    let role = claims.caller().role;
    if role != Role::Admin && !app.settings.ws_viewers {
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
            StatusCode::BAD_REQUEST,
            "bad_request",
            "tokens in the URL are refused; send Authorization: Bearer or an auth message",
        )
        .into_response();
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        let origin = origin.to_str().unwrap_or("");
        if !origin_allowed(origin, host, &app.settings.allowed_origins) {
            return ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
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
                    "forbidden"
                } else {
                    "unauthorized"
                };
                return ApiError::new(status, kind, detail).into_response();
            }
        },
        None => None,
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(rejection.status(), "bad_request", rejection.body_text())
                .into_response()
        }
    };
    let max_message = app.settings.ws_max_message_bytes;
    // tungstenite's defaults (128 KiB read buffer a socket) would make
    // each idle session cost over 130 KiB RSS; client messages are small, and
    // a larger one still grows the buffer up to `max_message`. The write
    // buffer is where a drained outbox is fed before its one flush.
    ws.max_message_size(max_message)
        .max_frame_size(max_message)
        .read_buffer_size(WS_READ_BUFFER_BYTES)
        .write_buffer_size(WS_WRITE_BUFFER_BYTES)
        .on_upgrade(move |socket| Session::new(app, socket, claims).run())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientMessage {
    #[serde(rename = "type")]
    kind: String,
    skus: Option<Vec<String>>,
    all: Option<bool>,
    alerts: Option<bool>,
    since: Option<i64>,
    /// `{"type": "auth", "token": ...}`: first-message auth, or a fresh
    /// token that extends the session.
    token: Option<String>,
}

/// Why the loop ends.
enum End {
    Closed,
    Close(u16, &'static str),
}

struct Session {
    app: AppState,
    socket: WebSocket,
    id: SessionId,
    outbox: Arc<Outbox>,
    skus: HashSet<SkuCode>,
    all: bool,
    /// Per SKU: the version a snapshot or replay already delivered.
    delivered_version: HashMap<SkuCode, i64>,
    /// For `all` with `since`: the last event id the replay delivered.
    delivered_event: i64,
    last_seen: Instant,
    /// Who is watching; `None` until authenticated.
    claims: Option<Claims>,
    /// Before auth: the auth deadline; after: the token's expiry. Either
    /// way the session closes with 4401 when it passes.
    deadline: tokio::time::Instant,
}

impl Session {
    fn new(app: AppState, socket: WebSocket, claims: Option<Claims>) -> Self {
        let deadline = match &claims {
            Some(claims) => expiry(claims),
            None => tokio::time::Instant::now() + Duration::from_secs(app_auth_timeout(&app)),
        };
        let limits = OutboxLimits {
            queue: app.settings.ws_queue,
            conflated: app.settings.ws_conflate_max,
        };
        Self {
            id: app.hub.new_session(),
            app,
            socket,
            outbox: Arc::new(Outbox::new(limits)),
            skus: HashSet::new(),
            all: false,
            delivered_version: HashMap::new(),
            delivered_event: 0,
            last_seen: Instant::now(),
            deadline,
            claims,
        }
    }

    async fn run(mut self) {
        let end = self.serve().await;
        self.app.hub.unsubscribe_all(self.id);
        self.app.hub.unsubscribe_alerts(self.id);
        self.app.hub.unsubscribe(self.id, &self.skus);
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.socket.send(Message::Close(Some(frame))),
            )
            .await;
        }
    }

    async fn serve(&mut self) -> End {
        let ping_every = Duration::from_secs(self.app.settings.ws_ping_secs.max(1));
        let mut ping = tokio::time::interval(ping_every);
        ping.tick().await;
        let shutdown = self.app.shutdown.clone();
        let outbox = self.outbox.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server shutting down"),
                _ = tokio::time::sleep_until(self.deadline) => {
                    let reason = if self.claims.is_some() { "token expired" } else { "authenticate first" };
                    return End::Close(close::UNAUTHENTICATED, reason);
                }
                frame = self.socket.next() => {
                    let frame = match frame {
                        Some(Ok(frame)) => frame,
                        // tungstenite's capacity error: over the size limit,
                        // checked before the message is buffered (RFC 6455 1009).
                        Some(Err(e)) if e.to_string().contains("too long") => {
                            return End::Close(close::TOO_BIG, "message too big");
                        }
                        _ => return End::Closed,
                    };
                    self.last_seen = Instant::now();
                    match frame {
                        Message::Text(text) => {
                            if let Err(end) = self.on_text(&text).await {
                                return end;
                            }
                        }
                        Message::Binary(_) => {
                            if let Err(end) = self.send_error("bad_message", "messages are JSON text").await {
                                return end;
                            }
                        }
                        Message::Close(_) => return End::Closed,
                        Message::Ping(_) | Message::Pong(_) => {}
                    }
                }
                _ = outbox.ready() => {
                    if let Err(end) = self.flush().await {
                        return end;
                    }
                }
                _ = ping.tick() => {
                    if self.last_seen.elapsed() > ping_every * 2 {
                        tracing::info!(session = self.id, "dropping a dead WebSocket peer");
                        return End::Closed;
                    }
                    if let Err(end) = self.send(Message::Ping(Default::default())).await {
                        return end;
                    }
                }
            }
        }
    }

    /// Sends with a deadline: a peer that accepts nothing for that long is
    /// too slow (4408), however much the outbox conflates.
    async fn send(&mut self, message: Message) -> Result<(), End> {
        let timeout = Duration::from_secs(self.app.settings.ws_send_timeout_secs);
        match tokio::time::timeout(timeout, self.socket.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Close(close::TOO_SLOW, "client too slow")),
        }
    }

    /// Queues a frame without flushing it, so that a whole drain of the
    /// outbox goes out in as few writes as the socket takes ([`Self::flush`]
    /// ends with one flush). Same deadline as [`Self::send`].
    async fn feed(&mut self, message: Message) -> Result<(), End> {
        let timeout = Duration::from_secs(self.app.settings.ws_send_timeout_secs);
        match tokio::time::timeout(timeout, SinkExt::feed(&mut self.socket, message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Close(close::TOO_SLOW, "client too slow")),
        }
    }

    async fn send_json(&mut self, value: serde_json::Value) -> Result<(), End> {
        self.send(Message::Text(value.to_string().into())).await
    }

    async fn send_error(&mut self, code: &str, message: &str) -> Result<(), End> {
        self.send_json(json!({ "type": "error", "code": code, "message": message }))
            .await
    }

    fn already_delivered(&self, message: &Outgoing) -> bool {
        message.event_id <= self.delivered_event
            || self
                .delivered_version
                .get(&message.sku)
                .is_some_and(|v| message.version <= *v)
    }

    /// Sends everything the outbox holds.
    async fn flush(&mut self) -> Result<(), End> {
        let Drained {
            alerts,
            in_order,
            conflated,
            too_slow,
        } = self.outbox.drain();
        if too_slow {
            return Err(End::Close(close::TOO_SLOW, "client too slow"));
        }
        for alert in alerts {
            self.feed(Message::Text(alert.as_ref().into())).await?;
        }
        for message in in_order {
            if !self.already_delivered(&message) {
                self.feed(Message::Text(message.text.clone())).await?;
            }
        }
        for message in conflated {
            if !self.already_delivered(&message) {
                self.feed(Message::Text(message.conflated_text().into()))
                    .await?;
            }
        }
        let timeout = Duration::from_secs(self.app.settings.ws_send_timeout_secs);
        match tokio::time::timeout(timeout, SinkExt::flush(&mut self.socket)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Close(close::TOO_SLOW, "client too slow")),
        }
    }

    async fn on_text(&mut self, text: &str) -> Result<(), End> {
        let message: ClientMessage = match serde_json::from_str(text) {
            Ok(message) => message,
            Err(e) => return self.send_error("bad_message", &e.to_string()).await,
        };
        if message.kind == "auth" {
            return self
                .authenticate(message.token.as_deref().unwrap_or(""))
                .await;
        }
        if self.claims.is_none() {
            return Err(End::Close(close::UNAUTHENTICATED, "authenticate first"));
        }
        match message.kind.as_str() {
            "subscribe" => self.subscribe(message).await,
            "unsubscribe" => self.unsubscribe(message).await,
            other => {
                let text = format!("unknown message type '{other}'");
                self.send_error("bad_message", &text).await
            }
        }
    }

    /// First-message auth, or a fresh token for a session that has one.
    async fn authenticate(&mut self, token: &str) -> Result<(), End> {
        match authorize(&self.app, token) {
            Ok(claims) => {
                self.deadline = expiry(&claims);
                self.claims = Some(claims);
                self.send_json(json!({ "type": "authenticated" })).await
            }
            Err((_, code, reason)) => Err(End::Close(code, reason)),
        }
    }

    /// Parses a `skus` list; `Err` carries the message for the client.
    fn parse_skus(raw: Option<Vec<String>>) -> Result<Vec<SkuCode>, String> {
        let raw = raw.unwrap_or_default();
        if raw.len() > MAX_SKUS_PER_MESSAGE {
            return Err(format!(
                "at most {MAX_SKUS_PER_MESSAGE} SKUs per message, got {}",
                raw.len()
            ));
        }
        let mut skus = Vec::with_capacity(raw.len());
        for code in raw {
            skus.push(SkuCode::parse(&code).map_err(|e| format!("SKU '{code}': {e}"))?);
        }
        skus.sort();
        skus.dedup();
        Ok(skus)
    }

    async fn subscribe(&mut self, message: ClientMessage) -> Result<(), End> {
        let skus = match Self::parse_skus(message.skus) {
            Ok(skus) => skus,
            Err(text) => return self.send_error("bad_subscribe", &text).await,
        };
        let all = message.all.unwrap_or(false);
        if message.alerts.unwrap_or(false) {
            self.app.hub.subscribe_alerts(self.id, &self.outbox);
        }
        if skus.is_empty() && !all && !message.alerts.unwrap_or(false) {
            let text = "give skus, all: true or alerts: true";
            return self.send_error("bad_subscribe", text).await;
        }
        if message.since.is_some_and(|s| s < 0) {
            return self
                .send_error("bad_subscribe", "since must be 0 or more")
                .await;
        }
        // Live first, then the database: see the module docs.
        if all {
            self.all = true;
            self.app.hub.subscribe_all(self.id, &self.outbox);
        }
        if !skus.is_empty() {
            self.skus.extend(skus.iter().cloned());
            self.app.hub.subscribe(self.id, &self.outbox, &skus);
        }
        match (message.since, all) {
            (Some(since), true) => self.replay(since, None).await,
            (Some(since), false) if !skus.is_empty() => self.replay(since, Some(&skus)).await,
            (None, _) if !skus.is_empty() => self.snapshot(&skus).await,
            _ => Ok(()),
        }
    }

    async fn snapshot(&mut self, skus: &[SkuCode]) -> Result<(), End> {
        let store = self.app.store.clone();
        let loaded = async {
            Ok::<_, skuwatch_actors::store::StoreError>((
                store.last_event_id().await?,
                store.load_many(skus).await?,
            ))
        };
        let (event_id, states) = match loaded.await {
            Ok(loaded) => loaded,
            Err(error) => {
                tracing::warn!(%error, "snapshot failed");
                return self
                    .send_error("unavailable", "the database is unavailable")
                    .await;
            }
        };
        for state in &states {
            self.delivered_version
                .insert(state.sku.clone(), state.version);
        }
        self.send_json(json!({ "type": "snapshot", "event_id": event_id, "skus": states }))
            .await
    }

    /// Sends every event after `since` (for `skus`, or all), oldest first.
    async fn replay(&mut self, since: i64, skus: Option<&[SkuCode]>) -> Result<(), End> {
        let store = self.app.store.clone();
        let mut after = since;
        loop {
            let page = match store.events_after(after, REPLAY_PAGE, skus).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "replay failed");
                    return self
                        .send_error("unavailable", "the database is unavailable")
                        .await;
                }
            };
            let full = page.len() as i64 == REPLAY_PAGE;
            for change in page {
                after = change.event.event_id;
                let message = Outgoing::new(&change);
                if self.already_delivered(&message) {
                    continue;
                }
                match skus {
                    Some(_) => {
                        self.delivered_version
                            .insert(message.sku.clone(), message.version);
                    }
                    None => self.delivered_event = message.event_id,
                }
                self.send(Message::Text(message.text.clone())).await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn unsubscribe(&mut self, message: ClientMessage) -> Result<(), End> {
        let skus = match Self::parse_skus(message.skus) {
            Ok(skus) => skus,
            Err(text) => return self.send_error("bad_unsubscribe", &text).await,
        };
        if message.all.unwrap_or(false) {
            self.all = false;
            self.app.hub.unsubscribe_all(self.id);
        }
        if message.alerts.unwrap_or(false) {
            self.app.hub.unsubscribe_alerts(self.id);
        }
        self.app.hub.unsubscribe(self.id, &skus);
        for sku in &skus {
            self.skus.remove(sku);
            self.delivered_version.remove(sku);
        }
        Ok(())
    }
}

fn app_auth_timeout(app: &AppState) -> u64 {
    app.settings.ws_auth_timeout_secs.max(1)
}

/// When the token stops being valid, as a timer deadline.
fn expiry(claims: &Claims) -> tokio::time::Instant {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    tokio::time::Instant::now() + Duration::from_secs(claims.exp.saturating_sub(now))
}

#[cfg(test)]
mod tests {
    use super::origin_allowed;

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
