//! Session actors: one supervised ractor actor per WebSocket session.
//!
//! The actor owns everything of its session: its subscriptions, its bounded
//! [`Outbox`] (with conflation) and the socket's writing half. Its mailbox
//! is its only input:
//! - client frames, read by a small reader task that also forwards the
//!   shutdown signal and the bus's connection state. The reader holds one of
//!   [`READ_AHEAD`] permits per frame it forwards, released when the actor
//!   has handled it, so a client that floods the socket is slowed down by
//!   TCP, never buffered here;
//! - [`SessionMsg::Ready`] from its outbox, at most one queued (the outbox
//!   wakes its session once until it is drained);
//! - its timers (ping, auth deadline / token expiry).
//!
//! Subscribing puts the session into the subscriber sets first (the
//! instance's per-SKU table, or the catalog actor's `all` / `alerts`) and only then reads the database (snapshot or `since` replay),
//! so nothing committed in between is missed; what the outbox then holds
//! twice is dropped by version (per SKU) or event id (all). Changes reach
//! the outbox from the ordered feed, in `event_id` order (see `crate::feed`).
//!
//! A failure of the actor (a bug: an error or a panic in a handler) closes
//! its socket with 1011 and nothing else: the supervisor counts it, the
//! session's state is dropped, which leaves every subscriber set and the
//! per-user count and closes the socket with 1011 (see `Writer`).

use std::collections::{HashMap, HashSet};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use serde_json::json;
use skuwatch_actors::domain::SkuCode;
use skuwatch_actors::subscribers::SubscriberId;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::Instrument;

use crate::auth::Claims;
use crate::cursor::{Cursor, Refused};
use crate::http::AppState;
use crate::metrics::{self as m, DropReason};
use crate::outbox::{Drained, Outbox, OutboxLimits, Outgoing};
use crate::ws::{
    authorize, close, expiry, parse_client_message, parse_skus, ClientMessage, SessionSlot, Since,
};

/// Client frames forwarded to the actor and not yet handled.
const READ_AHEAD: usize = 8;
/// Events read from the database per page of a `since` replay.
const REPLAY_PAGE: i64 = 500;
/// 1011: the server met an unexpected condition (RFC 6455).
const INTERNAL_ERROR: u16 = 1011;

/// The writing half of a session's socket. Boxed rather than axum's
/// `SplitSink<WebSocket, Message>` so that the unit tests can drive a
/// session actor through channels (a fake client), with no network.
pub type SocketSink = Pin<Box<dyn futures_util::Sink<Message, Error = axum::Error> + Send>>;

/// The reading half of a session's socket; boxed for the same reason as
/// [`SocketSink`].
pub type SocketStream =
    Pin<Box<dyn futures_util::Stream<Item = Result<Message, axum::Error>> + Send>>;

/// The socket a session actor serves: an upgraded [`WebSocket`] (see the
/// `From` impl), or in the unit tests a fake client made of two channels.
/// Two small boxes a session (BENCHMARKS.md, target 4: RSS a session).
pub struct Socket {
    /// Frames to the client.
    pub sink: SocketSink,
    /// Frames from the client; an `Err` ends the session (see `read`).
    pub stream: SocketStream,
}

impl From<WebSocket> for Socket {
    fn from(socket: WebSocket) -> Self {
        let (sink, stream) = socket.split();
        Self {
            sink: Box::pin(sink),
            stream: Box::pin(stream),
        }
    }
}

/// What a session actor handles.
pub enum SessionMsg {
    /// A frame from the client, with its read-ahead permit.
    Frame(Message, OwnedSemaphorePermit),
    /// The client's side ended: closed, or a message over the size limit.
    ReadEnd(Option<(u16, &'static str)>),
    /// The outbox holds something.
    Ready,
    Ping,
    /// The auth deadline or the token's expiry may have passed.
    Deadline,
    /// The bus's connection state changed.
    Bus(bool),
    /// The server is shutting down: close with 1001.
    Shutdown,
    /// Fault injection for supervision tests: the actor fails as a bug would.
    #[doc(hidden)]
    Fail,
}

/// The session's deadline (auth deadline, then the token's expiry), shared
/// with the reader task, whose timer it drives: a timer in the reader costs
/// no task of its own (BENCHMARKS.md, target 4: RSS a session). Whole
/// milliseconds after `base`, rounded up, so the timer never fires before
/// the deadline the actor checks.
pub struct SharedDeadline {
    base: tokio::time::Instant,
    after_ms: AtomicU64,
}

impl SharedDeadline {
    fn new(at: tokio::time::Instant) -> Self {
        let shared = Self {
            base: tokio::time::Instant::now(),
            after_ms: AtomicU64::new(0),
        };
        shared.set(at);
        shared
    }

    fn set(&self, at: tokio::time::Instant) {
        let ms = at.saturating_duration_since(self.base).as_millis() + 1;
        self.after_ms
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn get(&self) -> tokio::time::Instant {
        self.base + Duration::from_millis(self.after_ms.load(Ordering::Relaxed))
    }
}

/// Why the session ends.
enum End {
    Closed,
    Close(u16, &'static str),
}

/// Starts the session actor of one upgraded socket and returns: the
/// upgrade task, which is sized for the whole socket, ends at once
/// (BENCHMARKS.md, target 4: RSS a session). `running` (a token of the
/// server's task tracker) is kept in the actor's state, so graceful
/// shutdown waits until the session has sent its close frame (1001, or 1011
/// after a failure).
pub async fn start(
    app: AppState,
    socket: Socket,
    claims: Option<Claims>,
    slot: Option<SessionSlot>,
    running: TaskTrackerToken,
) {
    let args = SessionArgs {
        id: app.sessions.next_id(),
        app: app.clone(),
        socket,
        claims,
        slot,
        span: tracing::Span::current(),
        running,
    };
    app.sessions.spawn(args).await;
}

pub struct SessionArgs {
    id: SubscriberId,
    app: AppState,
    socket: Socket,
    claims: Option<Claims>,
    slot: Option<SessionSlot>,
    /// The upgrade request's span (and request id), for the log lines.
    span: tracing::Span,
    running: TaskTrackerToken,
}

/// The socket's writing half. However the actor ends without closing the
/// socket itself (a failure: an error or a panic), dropping its state
/// closes the socket with 1011, from a task the graceful shutdown waits for.
struct Writer {
    sink: Option<SocketSink>,
    tasks: tokio_util::task::TaskTracker,
}

impl Drop for Writer {
    fn drop(&mut self) {
        let Some(mut sink) = self.sink.take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.tasks.spawn(async move {
            let frame = CloseFrame {
                code: INTERNAL_ERROR,
                reason: Utf8Bytes::from_static("internal error"),
            };
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                sink.send(Message::Close(Some(frame))),
            )
            .await;
        });
    }
}

pub struct SessionActor;

pub struct SessionState {
    app: AppState,
    id: SubscriberId,
    span: tracing::Span,
    writer: Writer,
    reader: tokio::task::JoinHandle<()>,
    /// Before auth: the auth deadline; after: the token's expiry. Either
    /// way the session closes with 4401 when it passes. Shared with the
    /// reader task, whose timer it drives.
    shared_deadline: Arc<SharedDeadline>,
    outbox: Arc<Outbox>,
    skus: HashSet<SkuCode>,
    all: bool,
    alerts: bool,
    /// Per SKU: the version a snapshot or replay already delivered.
    delivered_version: HashMap<SkuCode, i64>,
    /// For `all` with `since`: the last event id the replay delivered.
    delivered_event: i64,
    last_seen: Instant,
    ping_every: Duration,
    /// Who is watching; `None` until authenticated.
    claims: Option<Claims>,
    /// This session's place in the per-user count; `None` until authenticated.
    slot: Option<SessionSlot>,
    /// Whether the session was last told the bus is up (the default, said
    /// by saying nothing): a notice goes out only when this changes, so an
    /// outage gives one `bus_down` however many reconnects it takes.
    bus_up_told: bool,
    /// The session has closed; later messages are ignored.
    ended: bool,
    /// Held until the state is dropped, after `writer` (fields drop in
    /// order), so graceful shutdown also waits for a 1011 close frame.
    _running: TaskTrackerToken,
}

/// However the session ends (closed, failed), it leaves every subscriber set
/// and the open-sessions gauge, and its reader stops, so nothing leaks.
impl Drop for SessionState {
    fn drop(&mut self) {
        self.leave();
        self.reader.abort();
        metrics::gauge!(m::WS_SESSIONS_OPEN).decrement(1.0);
    }
}

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<SessionMsg>,
        args: SessionArgs,
    ) -> Result<SessionState, ActorProcessingErr> {
        let SessionArgs {
            id,
            app,
            socket,
            claims,
            slot,
            span,
            running,
        } = args;
        let deadline = match &claims {
            Some(claims) => expiry(claims),
            None => {
                tokio::time::Instant::now()
                    + Duration::from_secs(app.settings.ws_auth_timeout_secs.max(1))
            }
        };
        let limits = OutboxLimits {
            queue: app.settings.ws_queue,
            conflated: app.settings.ws_conflate_max,
        };
        let wake = myself.clone();
        let outbox = Arc::new(Outbox::new(
            limits,
            Box::new(move || {
                let _ = wake.cast(SessionMsg::Ready);
            }),
        ));
        let Socket { sink, stream } = socket;
        let shared_deadline = Arc::new(SharedDeadline::new(deadline));
        let tasks = app.tasks.clone();
        let ping_every = Duration::from_secs(app.settings.ws_ping_secs.max(1));
        let reader = tokio::spawn(
            read(
                stream,
                myself.clone(),
                Arc::new(Semaphore::new(READ_AHEAD)),
                app.shutdown.clone(),
                app.bus.connected(),
                ping_every,
                shared_deadline.clone(),
            )
            .instrument(span.clone()),
        );
        // Balanced in `Drop`, which runs however the session ends.
        metrics::gauge!(m::WS_SESSIONS_OPEN).increment(1.0);
        Ok(SessionState {
            app,
            id,
            span,
            writer: Writer {
                sink: Some(sink),
                tasks,
            },
            reader,
            shared_deadline,
            outbox,
            skus: HashSet::new(),
            all: false,
            alerts: false,
            delivered_version: HashMap::new(),
            delivered_event: 0,
            last_seen: Instant::now(),
            ping_every,
            claims,
            slot,
            bus_up_told: true,
            ended: false,
            _running: running,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SessionMsg>,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.claims.is_some() && !*state.app.bus.connected().borrow() {
            let span = state.span.clone();
            if let Err(end) = state.send_bus_notice(false).instrument(span.clone()).await {
                state.finish(end).instrument(span).await;
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SessionMsg>,
        message: SessionMsg,
        state: &mut SessionState,
    ) -> Result<(), ActorProcessingErr> {
        if state.ended {
            return Ok(());
        }
        if let SessionMsg::Fail = message {
            return Err("fault injected".into());
        }
        let span = state.span.clone();
        async {
            if let Err(end) = state.on_message(message).await {
                state.finish(end).await;
                myself.stop(None);
            }
        }
        .instrument(span)
        .await;
        Ok(())
    }
}

/// Reads client frames and forwards them, with the shutdown signal and the
/// bus's state, to the session actor.
async fn read(
    mut stream: SocketStream,
    session: ActorRef<SessionMsg>,
    permits: Arc<Semaphore>,
    shutdown: CancellationToken,
    mut bus: tokio::sync::watch::Receiver<bool>,
    ping_every: Duration,
    deadline: Arc<SharedDeadline>,
) {
    let expiry = tokio::time::sleep_until(deadline.get());
    tokio::pin!(expiry);
    // The ping timer lives here rather than in a timer task of its own: one
    // task fewer a session (BENCHMARKS.md, target 4).
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let next = async {
            let permit = permits.clone().acquire_owned().await;
            (permit, stream.next().await)
        };
        let message = tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = session.cast(SessionMsg::Shutdown);
                return;
            }
            Ok(()) = bus.changed() => SessionMsg::Bus(*bus.borrow_and_update()),
            _ = ping.tick() => SessionMsg::Ping,
            () = &mut expiry => {
                let at = deadline.get();
                let now = tokio::time::Instant::now();
                // Moved by a fresh token: sleep on. Else tell the actor, and
                // look again in a second should it not close.
                expiry.as_mut().reset(if at > now { at } else { now + Duration::from_secs(1) });
                if at > now {
                    continue;
                }
                SessionMsg::Deadline
            }
            (permit, frame) = next => {
                let Ok(permit) = permit else { return };
                match frame {
                    Some(Ok(frame)) => SessionMsg::Frame(frame, permit),
                    // tungstenite's capacity error: over the size limit,
                    // checked before the message is buffered (RFC 6455 1009).
                    Some(Err(e)) if e.to_string().contains("too long") => {
                        SessionMsg::ReadEnd(Some((close::TOO_BIG, "message too big")))
                    }
                    _ => SessionMsg::ReadEnd(None),
                }
            }
        };
        let last = matches!(message, SessionMsg::ReadEnd(_));
        if session.cast(message).is_err() || last {
            return;
        }
    }
}

impl SessionState {
    async fn on_message(&mut self, message: SessionMsg) -> Result<(), End> {
        match message {
            SessionMsg::Frame(frame, _permit) => {
                self.last_seen = Instant::now();
                match frame {
                    Message::Text(text) => self.on_text(&text).await,
                    Message::Binary(_) => {
                        self.send_error("bad_message", "messages are JSON text")
                            .await
                    }
                    Message::Close(_) => Err(End::Closed),
                    Message::Ping(_) | Message::Pong(_) => Ok(()),
                }
            }
            SessionMsg::ReadEnd(None) => Err(End::Closed),
            SessionMsg::ReadEnd(Some((code, reason))) => Err(End::Close(code, reason)),
            SessionMsg::Ready => self.flush().await,
            SessionMsg::Ping => {
                if self.last_seen.elapsed() > self.ping_every * 2 {
                    tracing::info!(session = self.id, "dropping a dead WebSocket peer");
                    m::ws_session_dropped(DropReason::DeadPeer);
                    return Err(End::Closed);
                }
                self.send(Message::Ping(Default::default())).await
            }
            SessionMsg::Deadline => {
                let now = tokio::time::Instant::now();
                if now >= self.shared_deadline.get() {
                    let reason = if self.claims.is_some() {
                        "token expired"
                    } else {
                        "authenticate first"
                    };
                    return Err(End::Close(close::UNAUTHENTICATED, reason));
                }
                // A fresh token moved the deadline; the reader's timer
                // follows `shared_deadline`.
                Ok(())
            }
            SessionMsg::Bus(connected) => {
                if self.claims.is_some() {
                    self.send_bus_notice(connected).await?;
                }
                Ok(())
            }
            SessionMsg::Shutdown => Err(End::Close(close::GOING_AWAY, "server shutting down")),
            SessionMsg::Fail => unreachable!("a fault is raised in `handle`"),
        }
    }

    /// Leaves every subscriber set; safe to repeat.
    fn leave(&mut self) {
        self.app.catalog.unsubscribe(self.id, self.all, self.alerts);
        self.all = false;
        self.alerts = false;
        self.app.subscribers.unsubscribe(self.id, &self.skus);
        self.skus.clear();
    }

    /// Stops queueing for this client, then closes the socket.
    async fn finish(&mut self, end: End) {
        self.ended = true;
        self.leave();
        if let End::Close(code, reason) = end {
            if let Some(dropped) = drop_reason(code) {
                m::ws_session_dropped(dropped);
            }
            if let Some(sink) = &mut self.writer.sink {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    sink.send(Message::Close(Some(frame))),
                )
                .await;
            }
        }
        // Closed on purpose: nothing to hand back.
        self.writer.sink = None;
    }

    /// The socket's writing half, unless the session closed it.
    fn sink(&mut self) -> Result<&mut SocketSink, End> {
        self.writer.sink.as_mut().ok_or(End::Closed)
    }

    fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.app.settings.ws_send_timeout_secs)
    }

    /// Sends with a deadline: a peer that accepts nothing for that long is
    /// too slow (4408), however much the outbox conflates.
    async fn send(&mut self, message: Message) -> Result<(), End> {
        let timeout = self.send_timeout();
        within(timeout, self.sink()?.send(message)).await
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
    /// ends with one flush). Counted by `kind`.
    async fn feed(&mut self, text: Utf8Bytes, kind: &'static str) -> Result<(), End> {
        let timeout = self.send_timeout();
        within(timeout, SinkExt::feed(self.sink()?, Message::Text(text))).await?;
        m::ws_message_sent(kind);
        Ok(())
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
        let timeout = self.send_timeout();
        within(timeout, SinkExt::flush(self.sink()?)).await
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
                let same_user = self.slot.as_ref().is_some_and(|s| s.user() == claims.sub);
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
                self.shared_deadline.set(expiry(&claims));
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
        let alerts = message.alerts.unwrap_or(false);
        if alerts && !self.alerts {
            if !self
                .app
                .catalog
                .subscribe(self.id, &self.outbox, false, true)
                .await
            {
                return self
                    .send_error("unavailable", "the server is busy; subscribe again")
                    .await;
            }
            self.alerts = true;
        }
        if skus.is_empty() && !all && !alerts {
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
        if all && !self.all {
            if !self
                .app
                .catalog
                .subscribe(self.id, &self.outbox, true, false)
                .await
            {
                return self
                    .send_error("unavailable", "the server is busy; subscribe again")
                    .await;
            }
            self.all = true;
        }
        if !skus.is_empty() {
            self.skus.extend(skus.iter().cloned());
            self.app.subscribers.subscribe(self.id, &self.outbox, &skus);
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
        let all = message.all.unwrap_or(false) && self.all;
        let alerts = message.alerts.unwrap_or(false) && self.alerts;
        self.app.catalog.unsubscribe(self.id, all, alerts);
        self.all &= !all;
        self.alerts &= !alerts;
        self.app.subscribers.unsubscribe(self.id, &skus);
        for sku in &skus {
            self.skus.remove(sku);
            self.delivered_version.remove(sku);
        }
        Ok(())
    }
}

/// One socket write with the send deadline: past it, the client is too slow.
async fn within(
    timeout: Duration,
    write: impl std::future::Future<Output = Result<(), axum::Error>>,
) -> Result<(), End> {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Closed),
        Err(_) => Err(End::Close(close::TOO_SLOW, "client too slow")),
    }
}

/// The metric reason of a close code the server sends.
pub(crate) fn drop_reason(code: u16) -> Option<DropReason> {
    match code {
        close::GOING_AWAY => Some(DropReason::Shutdown),
        close::UNAUTHENTICATED => Some(DropReason::Unauthenticated),
        close::FORBIDDEN => Some(DropReason::Forbidden),
        close::TOO_SLOW => Some(DropReason::TooSlow),
        close::TOO_BIG => Some(DropReason::TooBig),
        INTERNAL_ERROR => Some(DropReason::Failed),
        _ => None,
    }
}

/// The supervisor of this instance's session actors, and the handle to it.
#[derive(Clone)]
pub struct Sessions {
    supervisor: ActorRef<SupervisorMsg>,
    next: Arc<AtomicU64>,
}

pub enum SupervisorMsg {
    /// Spawns a session actor linked to the supervisor; answers once it
    /// runs (or could not be started: the socket is then dropped).
    Spawn(Box<SessionArgs>, RpcReplyPort<()>),
    /// Fault injection for supervision tests: makes a session fail.
    #[doc(hidden)]
    Fail(SubscriberId),
    /// The ids of the open sessions, oldest first (tests).
    #[doc(hidden)]
    Open(RpcReplyPort<Vec<SubscriberId>>),
}

impl Sessions {
    pub async fn start() -> Result<Self, ractor::SpawnErr> {
        let (supervisor, _) = Actor::spawn(None, SessionSupervisor, ()).await?;
        Ok(Self {
            supervisor,
            next: Arc::default(),
        })
    }

    fn next_id(&self) -> SubscriberId {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    async fn spawn(&self, args: SessionArgs) {
        let _ = self
            .supervisor
            .call(
                |reply| SupervisorMsg::Spawn(Box::new(args), reply),
                Some(Duration::from_secs(5)),
            )
            .await;
    }

    /// Fault injection for supervision tests: makes session `id` fail.
    #[doc(hidden)]
    pub fn fail(&self, id: SubscriberId) {
        let _ = self.supervisor.cast(SupervisorMsg::Fail(id));
    }

    /// The ids of the open sessions, oldest first.
    #[doc(hidden)]
    pub async fn open(&self) -> Vec<SubscriberId> {
        match self.supervisor.call(SupervisorMsg::Open, None).await {
            Ok(ractor::rpc::CallResult::Success(ids)) => ids,
            _ => Vec::new(),
        }
    }

    pub fn stop(&self) {
        self.supervisor.stop(None);
    }
}

struct SessionSupervisor;

pub struct SupervisorState {
    /// Each child's session id.
    children: HashMap<ActorId, SubscriberId>,
    by_session: HashMap<SubscriberId, ActorCell>,
}

impl Actor for SessionSupervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        _: (),
    ) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(SupervisorState {
            children: HashMap::new(),
            by_session: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMsg>,
        message: SupervisorMsg,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Spawn(args, reply) => {
                let id = args.id;
                match Actor::spawn_linked(None, SessionActor, *args, myself.get_cell()).await {
                    Ok((actor, _)) => {
                        state.children.insert(actor.get_id(), id);
                        state.by_session.insert(id, actor.get_cell());
                    }
                    Err(error) => {
                        tracing::warn!(%error, "could not start a session actor");
                    }
                }
                let _ = reply.send(());
            }
            SupervisorMsg::Fail(id) => {
                if let Some(cell) = state.by_session.get(&id) {
                    let _ = cell.send_message(SessionMsg::Fail);
                }
            }
            SupervisorMsg::Open(reply) => {
                let mut ids: Vec<_> = state.by_session.keys().copied().collect();
                ids.sort_unstable();
                let _ = reply.send(ids);
            }
        }
        Ok(())
    }

    /// A session that ends, however, is forgotten; one that failed is
    /// logged and counted, and is not restarted: its socket is closed with
    /// 1011 and the client reconnects (with `since`) as after any close.
    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<SupervisorMsg>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, failure) = match event {
            SupervisionEvent::ActorTerminated(cell, _, _) => (cell, None),
            SupervisionEvent::ActorFailed(cell, error) => (cell, Some(error)),
            _ => return Ok(()),
        };
        let Some(id) = state.children.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.by_session.remove(&id);
        if let Some(error) = failure {
            tracing::error!(session = id, %error, "WebSocket session actor failed; closing its socket with 1011");
            m::ws_session_dropped(DropReason::Failed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
