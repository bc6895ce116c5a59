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
use tracing::Instrument;

use crate::auth::{Claims, Role};
use crate::cursor::{Cursor, Refused};
use crate::http::error::{ApiError, ProblemKind};
use crate::http::AppState;
use crate::hub::SessionId;
use crate::metrics::{self as m, DropReason};
use crate::outbox::{Drained, Outbox, OutboxLimits, Outgoing};

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

impl SessionCounts {
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
                Session::new(app, socket, claims, slot).run().await;
                drop(running);
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
    /// This session's place in the per-user count; `None` until authenticated.
    slot: Option<SessionSlot>,
    /// Whether the session was last told the bus is up (the default, said
    /// by saying nothing): a notice goes out only when this changes, so an
    /// outage gives one `bus_down` however many reconnects it takes.
    bus_up_told: bool,
}

/// However a session ends (its task returned, panicked or was aborted), it
/// leaves the hub and the open-sessions gauge, so neither leaks (issue 13,
/// fault 7's kind: state that outlives the work that owned it).
impl Drop for Session {
    fn drop(&mut self) {
        self.leave_hub();
        metrics::gauge!(m::WS_SESSIONS_OPEN).decrement(1.0);
    }
}

impl Session {
    fn new(
        app: AppState,
        socket: WebSocket,
        claims: Option<Claims>,
        slot: Option<SessionSlot>,
    ) -> Self {
        let deadline = match &claims {
            Some(claims) => expiry(claims),
            None => tokio::time::Instant::now() + Duration::from_secs(app_auth_timeout(&app)),
        };
        let limits = OutboxLimits {
            queue: app.settings.ws_queue,
            conflated: app.settings.ws_conflate_max,
        };
        // Balanced in `Drop`, which runs however the session ends (a panic
        // or an aborted task too), so the gauge cannot leak.
        metrics::gauge!(m::WS_SESSIONS_OPEN).increment(1.0);
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
            slot,
            bus_up_told: true,
        }
    }

    /// Takes the session out of the hub; safe to repeat.
    fn leave_hub(&mut self) {
        self.app.hub.unsubscribe_all(self.id);
        self.app.hub.unsubscribe_alerts(self.id);
        self.app.hub.unsubscribe(self.id, &self.skus);
        self.skus.clear();
    }

    async fn run(mut self) {
        let end = self.serve().await;
        // Stop queueing for this client before the close handshake.
        self.leave_hub();
        if let End::Close(code, reason) = end {
            if let Some(dropped) = drop_reason(code) {
                m::ws_session_dropped(dropped);
            }
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
        let mut bus = self.app.bus.connected();
        if self.claims.is_some() && !*bus.borrow_and_update() {
            if let Err(end) = self.send_bus_notice(false).await {
                return end;
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return End::Close(close::GOING_AWAY, "server shutting down"),
                Ok(()) = bus.changed() => {
                    let connected = *bus.borrow_and_update();
                    if self.claims.is_some() {
                        if let Err(end) = self.send_bus_notice(connected).await {
                            return end;
                        }
                    }
                }
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
                        m::ws_session_dropped(DropReason::DeadPeer);
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

    /// Sends a text message and counts it by `kind` (see
    /// `skuwatch_ws_messages_sent_total`).
    async fn send_text(&mut self, text: Utf8Bytes, kind: &'static str) -> Result<(), End> {
        self.send(Message::Text(text)).await?;
        m::ws_message_sent(kind);
        Ok(())
    }

    /// Queues a frame without flushing it, so that a whole drain of the
    /// outbox goes out in as few writes as the socket takes ([`Self::flush`]
    /// ends with one flush). Same deadline as [`Self::send`]. Counted by
    /// `kind`.
    async fn feed(&mut self, text: Utf8Bytes, kind: &'static str) -> Result<(), End> {
        let timeout = Duration::from_secs(self.app.settings.ws_send_timeout_secs);
        let message = Message::Text(text);
        match tokio::time::timeout(timeout, SinkExt::feed(&mut self.socket, message)).await {
            Ok(Ok(())) => {
                m::ws_message_sent(kind);
                Ok(())
            }
            Ok(Err(_)) => Err(End::Closed),
            Err(_) => Err(End::Close(close::TOO_SLOW, "client too slow")),
        }
    }

    /// A live change: fed, and its commit-to-socket latency recorded.
    async fn feed_change(
        &mut self,
        text: Utf8Bytes,
        at_micros: i64,
        kind: &'static str,
    ) -> Result<(), End> {
        self.feed(text, kind).await?;
        metrics::histogram!(m::WS_PUSH_LATENCY).record(m::seconds_since_micros(at_micros));
        Ok(())
    }

    async fn send_json(&mut self, value: serde_json::Value) -> Result<(), End> {
        self.send_text(value.to_string().into(), "control").await
    }

    /// Tells the operator that changes made through other instances are
    /// late (Redis is unreachable; they come from the database, within a
    /// second or so) or live again. An extension of API.md (README).
    async fn send_bus_notice(&mut self, connected: bool) -> Result<(), End> {
        if connected == self.bus_up_told {
            return Ok(());
        }
        self.bus_up_told = connected;
        let (code, message) = if connected {
            ("bus_up", "live updates from every server instance are back")
        } else {
            (
                "bus_down",
                "Redis is unreachable: changes made through other server instances arrive late, \
                 read from the database",
            )
        };
        self.send_json(json!({ "type": "notice", "code": code, "message": message }))
            .await
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
            self.feed(alert.as_ref().into(), "alert").await?;
        }
        for message in in_order {
            if !self.already_delivered(&message) {
                self.feed_change(message.text.clone(), message.at_micros, "change")
                    .await?;
            }
        }
        for message in conflated {
            if !self.already_delivered(&message) {
                let text = message.conflated_text().into();
                self.feed_change(text, message.at_micros, "conflated")
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
        let message = match parse_client_message(text, self.app.settings.json_max_depth) {
            Ok(message) => message,
            Err(e) => return self.send_error("bad_message", &e).await,
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
                let same_user = self.slot.as_ref().is_some_and(|s| s.user == claims.sub);
                if !same_user {
                    self.slot = None;
                    let max = self.app.settings.ws_max_sessions_per_user;
                    match self.app.ws_sessions.acquire(&claims.sub, max) {
                        Some(slot) => self.slot = Some(slot),
                        None => {
                            return Err(End::Close(
                                close::POLICY,
                                "too many sessions for this user",
                            ))
                        }
                    }
                }
                self.deadline = expiry(&claims);
                let first = self.claims.replace(claims).is_none();
                self.send_json(json!({ "type": "authenticated" })).await?;
                if first && !*self.app.bus.connected().borrow() {
                    self.send_bus_notice(false).await?;
                }
                Ok(())
            }
            Err((_, code, reason)) => Err(End::Close(code, reason)),
        }
    }

    async fn subscribe(&mut self, message: ClientMessage) -> Result<(), End> {
        let skus = match parse_skus(message.skus, self.app.settings.ws_max_skus_per_message) {
            Ok(skus) => skus,
            Err(text) => return self.send_error("bad_subscribe", &text).await,
        };
        let max = self.app.settings.ws_max_subscriptions;
        let added = skus.iter().filter(|s| !self.skus.contains(*s)).count();
        if self.skus.len() + added > max {
            let text = format!(
                "a session may hold at most {max} SKU subscriptions; it holds {}",
                self.skus.len()
            );
            return self.send_error("too_many_subscriptions", &text).await;
        }
        let all = message.all.unwrap_or(false);
        if message.alerts.unwrap_or(false) {
            self.app.hub.subscribe_alerts(self.id, &self.outbox);
        }
        if skus.is_empty() && !all && !message.alerts.unwrap_or(false) {
            let text = "give skus, all: true or alerts: true";
            return self.send_error("bad_subscribe", text).await;
        }
        let since = match message.since {
            None => None,
            Some(Since::Id(id)) if id < 0 => {
                return self
                    .send_error("bad_subscribe", "since must be 0 or more")
                    .await;
            }
            Some(Since::Id(id)) => Some((id, None)),
            Some(Since::Cursor(text)) => match Cursor::parse(&text) {
                Ok(cursor) => Some((cursor.event_id, Some(cursor))),
                Err(reason) => {
                    return self
                        .send_error("bad_subscribe", &format!("since: {reason}"))
                        .await;
                }
            },
        };
        // Live first, then the database: see the module docs.
        if all {
            self.all = true;
            self.app.hub.subscribe_all(self.id, &self.outbox);
        }
        if !skus.is_empty() {
            self.skus.extend(skus.iter().cloned());
            self.app.hub.subscribe(self.id, &self.outbox, &skus);
        }
        if let Some((after, cursor)) = &since {
            if all || !skus.is_empty() {
                let store = self.app.store.clone();
                let verdict = match cursor {
                    Some(cursor) => cursor.verify(store.as_ref()).await,
                    None => crate::cursor::check_position(store.as_ref(), *after).await,
                };
                match verdict {
                    Ok(()) => {}
                    Err(Refused::Store(error)) => {
                        tracing::warn!(%error, "since could not be checked");
                        return self
                            .send_error("unavailable", "the database is unavailable")
                            .await;
                    }
                    Err(Refused::Ahead { newest_event_id }) => {
                        return self.reset(false, newest_event_id, &skus).await
                    }
                    Err(Refused::Unknown { newest_event_id }) => {
                        return self.reset(true, newest_event_id, &skus).await
                    }
                }
            }
        }
        match (since, all) {
            (Some((since, _)), true) => self.replay(since, None).await,
            (Some((since, _)), false) if !skus.is_empty() => self.replay(since, Some(&skus)).await,
            (None, _) if !skus.is_empty() => self.snapshot(&skus).await,
            _ => Ok(()),
        }
    }

    /// `since` names a position this server does not have (restored from a
    /// backup, or failed over to a lagging replica): says so, then sends a
    /// fresh snapshot of the SKUs (API.md v1 additions). Live changes go on
    /// from the newest event; an `all` subscription gets no snapshot (it
    /// would be the whole catalog): its client re-reads `/skus`.
    /// `unknown`: the cursor names another event here (`cursor_unknown`);
    /// else the position is beyond the newest event (`cursor_ahead`).
    async fn reset(&mut self, unknown: bool, newest: i64, skus: &[SkuCode]) -> Result<(), End> {
        let (code, message) = if unknown {
            (
                "cursor_unknown",
                "since names an event this server does not have as you saw it: the server was \
                 restored or failed over; the snapshot that follows replaces what you hold",
            )
        } else {
            (
                "cursor_ahead",
                "since is beyond the newest event: the server was restored or failed over; \
                 the snapshot that follows replaces what you hold",
            )
        };
        m::cursor_refused(code, "ws");
        self.send_json(json!({
            "type": "notice",
            "code": code,
            "newest_event_id": newest,
            "message": message,
        }))
        .await?;
        if skus.is_empty() {
            return Ok(());
        }
        self.snapshot(skus).await
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
        self.app.registry.offer(&states);
        for state in &states {
            self.delivered_version
                .insert(state.sku.clone(), state.version);
        }
        let text = json!({ "type": "snapshot", "event_id": event_id, "skus": states }).to_string();
        self.send_text(text.into(), "replay").await
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
            self.app.registry.offer(page.iter().map(|c| &c.sku));
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
                self.send_text(message.text.clone(), "replay").await?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    async fn unsubscribe(&mut self, message: ClientMessage) -> Result<(), End> {
        let skus = match parse_skus(message.skus, self.app.settings.ws_max_skus_per_message) {
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

/// The metric reason of a close code the server sends.
fn drop_reason(code: u16) -> Option<DropReason> {
    match code {
        close::GOING_AWAY => Some(DropReason::Shutdown),
        close::UNAUTHENTICATED => Some(DropReason::Unauthenticated),
        close::FORBIDDEN => Some(DropReason::Forbidden),
        close::TOO_SLOW => Some(DropReason::TooSlow),
        close::TOO_BIG => Some(DropReason::TooBig),
        _ => None,
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
    use super::{close, drop_reason, origin_allowed};
    use crate::metrics::DropReason;

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
