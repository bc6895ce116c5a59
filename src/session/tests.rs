//! The session actor driven through channels: a fake client (two tokio
//! channels as its [`Socket`]) and an app built from the in-memory store
//! and the fake bus with the real registry, catalog, feed and session
//! supervisor. No network, no database.
//!
//! The tests run on tokio's current-thread runtime: the feed pushes a change
//! into every subscribed outbox in one synchronous call, so once one
//! session has received a change, every other subscriber's outbox holds it.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes};
use serde_json::{json, Value};
use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{Command, WriteMeta};
use skuwatch_actors::registry::{Registry, RegistryConfig};
use skuwatch_actors::sku_actor::Pinning;
use skuwatch_actors::store::{SkuStore, WriteOutcome, WriteRequest};
use skuwatch_actors::testing::{code_of, BusMode, FakeBus, MemoryStore};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{Sessions, Socket, SocketSink};
use crate::auth::{ClientAddr, JwtKeys, LoginThrottle, Role};
use crate::catalog::Catalog;
use crate::config::Settings;
use crate::feed::Feed;
use crate::http::{AppInner, AppState};
use crate::outbox::SkuSubscribers;
use crate::ws::close;

/// The longest a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(5);
/// Seeded with stock 10 (version 1) in every app.
const SKUS: [&str; 4] = ["S-1", "S-2", "S-3", "S-4"];

/// An app over the in-memory store and the fake bus.
struct Rig {
    app: AppState,
    bus: Arc<FakeBus>,
}

/// What `lib.rs`'s `start` assembles, with the fakes for the store and the
/// bus, and the real feed so that a write reaches subscribed sessions.
async fn rig(tweak: impl FnOnce(&mut Settings)) -> Rig {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    for code in SKUS {
        store.seed(code, 10).await;
    }
    let mut settings = Settings::default();
    tweak(&mut settings);
    let dyn_store: Arc<dyn SkuStore> = store.clone();
    let dyn_bus: Arc<dyn EventBus> = bus.clone();
    let subscribers = Arc::new(SkuSubscribers::default());
    let registry = Registry::start(
        dyn_store.clone(),
        dyn_bus.clone(),
        RegistryConfig {
            pinning: Pinning {
                pins: Some(subscribers.clone()),
                ..Pinning::default()
            },
            ..RegistryConfig::default()
        },
    )
    .await
    .expect("registry");
    let catalog = Catalog::start().await.expect("catalog");
    let sessions = Sessions::start().await.expect("sessions");
    let shutdown = CancellationToken::new();
    Feed::start(
        dyn_store.clone(),
        dyn_bus.clone(),
        registry.clone(),
        subscribers.clone(),
        catalog.clone(),
        tokio::sync::watch::channel(0).1,
        shutdown.clone(),
    )
    .await
    .expect("feed");
    let jwt = JwtKeys::hs256(
        &[7; 32],
        &settings.jwt_issuer,
        &settings.jwt_audience,
        settings.token_ttl_secs,
    )
    .expect("keys");
    let webhooks = crate::webhooks::Webhooks::new(
        dyn_store.clone(),
        crate::webhooks::WebhookSettings::default(),
        crate::webhooks::secret::Sealer::from_material(&[7; 32]),
    );
    let app = AppState::new(AppInner {
        webhooks,
        store: dyn_store,
        jwt,
        throttle: LoginThrottle::default(),
        client_addr: ClientAddr::new(Vec::new(), settings.forwarded_header),
        bus_seen_up: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        registry,
        subscribers,
        catalog,
        sessions,
        bus: dyn_bus,
        settings,
        ws_sessions: Default::default(),
        shutdown,
        tasks: tokio_util::task::TaskTracker::new(),
    });
    Rig { app, bus }
}

impl Rig {
    /// A session on a fake socket, not authenticated yet.
    async fn connect(&self) -> Client {
        let (socket, client) = fake_socket();
        super::start(self.app.clone(), socket, None, None, self.app.tasks.token()).await;
        client
    }

    /// A session that has authenticated as an admin.
    async fn authenticated(&self) -> Client {
        let mut client = self.connect().await;
        client.authenticate(&self.app).await;
        client
    }

    /// Adjusts `code`'s stock by -1 through its SKU actor; returns the
    /// change's event id.
    async fn adjust(&self, code: &str) -> i64 {
        let request = WriteRequest {
            command: Command::Adjust { delta: -1 },
            meta: WriteMeta::default(),
            idempotency: None,
        };
        match self.app.registry.write(&code_of(code), request).await {
            Ok(WriteOutcome::Committed(changes)) => changes[0].event.event_id,
            other => panic!("write to {code}: {other:?}"),
        }
    }

    /// The sessions in `code`'s subscriber set.
    fn members(&self, code: &str) -> usize {
        let mut members = 0;
        self.app
            .subscribers
            .for_each(&code_of(code), |_| members += 1);
        members
    }
}

/// The client's end of a fake socket.
struct Client {
    /// Frames to the server: the session's [`Socket::stream`].
    to_server: mpsc::UnboundedSender<Result<Message, axum::Error>>,
    /// What the session wrote.
    from_server: mpsc::UnboundedReceiver<Message>,
    /// Whether the socket takes what the session writes: `false` is a
    /// client that stopped reading (its TCP window is full).
    reading: watch::Sender<bool>,
    /// How many times a write of the session found the socket full and
    /// waited.
    stalls: watch::Receiver<usize>,
}

/// A socket made of two channels. The sink takes one frame at a time and,
/// while the client is not reading, waits before handing it over, as a
/// write to a socket whose peer does not read.
fn fake_socket() -> (Socket, Client) {
    let (to_server, mut from_client) = mpsc::unbounded_channel();
    let (to_client, from_server) = mpsc::unbounded_channel();
    let (reading, reading_rx) = watch::channel(true);
    let (stalled, stalls) = watch::channel(0);
    let sink: SocketSink = Box::pin(futures_util::sink::unfold(
        (to_client, reading_rx, stalled),
        |(to_client, mut reading, stalled), frame: Message| async move {
            if !*reading.borrow() {
                stalled.send_modify(|n| *n += 1);
            }
            let _ = reading.wait_for(|reading| *reading).await;
            to_client.send(frame).map_err(axum::Error::new)?;
            Ok::<_, axum::Error>((to_client, reading, stalled))
        },
    ));
    let socket = Socket {
        sink,
        stream: Box::pin(futures_util::stream::poll_fn(move |cx| {
            from_client.poll_recv(cx)
        })),
    };
    let client = Client {
        to_server,
        from_server,
        reading,
        stalls,
    };
    (socket, client)
}

impl Client {
    fn send_frame(&self, frame: Message) {
        self.to_server
            .send(Ok(frame))
            .expect("the session reads its socket");
    }

    fn send(&self, value: Value) {
        self.send_frame(Message::Text(value.to_string().into()));
    }

    /// The next frame the session wrote, pings left out.
    async fn next(&mut self) -> Message {
        loop {
            let frame = tokio::time::timeout(WAIT, self.from_server.recv())
                .await
                .expect("a frame in time")
                .expect("the socket is open");
            if !matches!(frame, Message::Ping(_)) {
                return frame;
            }
        }
    }

    async fn next_json(&mut self) -> Value {
        match self.next().await {
            Message::Text(text) => serde_json::from_str(&text).expect("JSON"),
            other => panic!("a text frame, got {other:?}"),
        }
    }

    /// The next frame, which must be a close frame with a code.
    async fn close_code(&mut self) -> u16 {
        match self.next().await {
            Message::Close(Some(frame)) => frame.code,
            other => panic!("a close frame with a code, got {other:?}"),
        }
    }

    async fn authenticate(&mut self, app: &AppState) {
        let (token, _) = app.jwt.issue("alice", Role::Admin).expect("token");
        self.send(json!({ "type": "auth", "token": token }));
        assert_eq!(self.next_json().await["type"], "authenticated");
    }

    /// Subscribes to `skus`; returns the snapshot.
    async fn subscribe(&mut self, skus: &[&str]) -> Value {
        self.send(json!({ "type": "subscribe", "skus": skus }));
        let snapshot = self.next_json().await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        snapshot
    }

    /// The next message, which must be a change; returns (SKU, version,
    /// event id, conflated).
    async fn change(&mut self) -> (String, i64, i64, bool) {
        let message = self.next_json().await;
        assert_eq!(message["type"], "sku", "{message}");
        (
            message["sku"]["sku"].as_str().expect("sku").to_owned(),
            message["sku"]["version"].as_i64().expect("version"),
            message["event_id"].as_i64().expect("event_id"),
            message["conflated"] == true,
        )
    }

    /// Stops taking what the session writes.
    fn stop_reading(&self) {
        self.reading.send_replace(false);
    }

    fn resume_reading(&self) {
        self.reading.send_replace(true);
    }

    /// Waits until a write of the session has found the socket full
    /// `count` times in all.
    async fn stalls_reach(&mut self, count: usize) {
        tokio::time::timeout(WAIT, self.stalls.wait_for(|n| *n >= count))
            .await
            .expect("the session waits on its socket in time")
            .expect("the sink is alive");
    }
}

/// Waits until `condition` holds, polling every 5 ms, for at most `WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the supervisor lists exactly `want` as open sessions.
async fn open_sessions_become(app: &AppState, want: &[super::SubscriberId]) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let open = app.sessions.open().await;
        if open == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "open sessions: {open:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_subscriber_gets_the_snapshot_then_each_live_change_once_in_order() {
    let rig = rig(|_| {}).await;
    let mut client = rig.authenticated().await;
    // Committed, but held back by the bus while the session subscribes: the
    // snapshot shows it, and the feed's copy, delivered after the snapshot,
    // must not reach the client a second time.
    rig.bus.set_mode(BusMode::Hold);
    let held = rig.adjust("S-1").await;
    let snapshot = client.subscribe(&["S-1"]).await;
    assert_eq!(snapshot["event_id"], held);
    assert_eq!(snapshot["skus"][0]["sku"], "S-1");
    assert_eq!(snapshot["skus"][0]["version"], 2);
    rig.bus.set_mode(BusMode::Deliver);
    rig.bus.release_in(&[0]);

    let first = rig.adjust("S-1").await;
    let second = rig.adjust("S-1").await;
    assert_eq!(client.change().await, ("S-1".into(), 3, first, false));
    assert_eq!(client.change().await, ("S-1".into(), 4, second, false));
    assert_eq!(rig.members("S-1"), 1);
}

#[tokio::test]
async fn a_session_that_does_not_authenticate_in_time_is_closed_with_4401() {
    let rig = rig(|s| s.ws_auth_timeout_secs = 1).await;
    let started = tokio::time::Instant::now();
    let mut client = rig.connect().await;
    assert_eq!(client.close_code().await, close::UNAUTHENTICATED);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed before the auth deadline: {:?}",
        started.elapsed()
    );
    open_sessions_become(&rig.app, &[]).await;
}

#[tokio::test]
async fn a_message_before_auth_closes_the_session_with_4401() {
    let rig = rig(|_| {}).await;
    let mut client = rig.connect().await;
    client.send(json!({ "type": "subscribe", "skus": ["S-1"] }));
    assert_eq!(client.close_code().await, close::UNAUTHENTICATED);
    assert_eq!(rig.members("S-1"), 0);
}

#[tokio::test]
async fn shutting_down_closes_every_session_with_1001_and_waits_for_them() {
    let rig = rig(|_| {}).await;
    let mut one = rig.authenticated().await;
    one.subscribe(&["S-1"]).await;
    let mut two = rig.connect().await;
    // What graceful shutdown waits for: open sessions hold it.
    rig.app.tasks.close();
    let waiting = tokio::time::timeout(Duration::from_millis(20), rig.app.tasks.wait()).await;
    assert!(
        waiting.is_err(),
        "graceful shutdown would not wait for the sessions"
    );

    rig.app.shutdown.cancel();
    assert_eq!(one.close_code().await, close::GOING_AWAY);
    assert_eq!(two.close_code().await, close::GOING_AWAY);
    assert_eq!(rig.members("S-1"), 0);
    tokio::time::timeout(WAIT, rig.app.tasks.wait())
        .await
        .expect("the sessions ended");
}

#[tokio::test]
async fn a_failed_session_actor_closes_its_socket_with_1011_and_nothing_else() {
    let rig = rig(|_| {}).await;
    let mut failing = rig.authenticated().await;
    failing.send(json!({ "type": "subscribe", "skus": ["S-1"], "all": true, "alerts": true }));
    assert_eq!(failing.next_json().await["type"], "snapshot");
    let mut other = rig.authenticated().await;
    other.subscribe(&["S-1"]).await;
    let sets = rig.app.catalog.sets();
    assert_eq!((sets.all.len(), sets.alerts.len()), (1, 1));
    assert_eq!(rig.members("S-1"), 2);
    let open = rig.app.sessions.open().await;
    assert_eq!(open.len(), 2);

    rig.app.sessions.fail(open[0]);
    assert_eq!(failing.close_code().await, 1011);
    // Its state is dropped: it left every subscriber set (the catalog actor
    // takes the unsubscribe from its mailbox) and its user's count.
    assert_eq!(rig.members("S-1"), 1);
    eventually("the catalog sets emptied", || {
        sets.all.is_empty() && sets.alerts.is_empty()
    })
    .await;
    eventually("one session counted for alice", || {
        rig.app.ws_sessions.open("alice") == 1
    })
    .await;
    open_sessions_become(&rig.app, &[open[1]]).await;

    // The other session goes on.
    let id = rig.adjust("S-1").await;
    assert_eq!(other.change().await, ("S-1".into(), 2, id, false));
}

#[tokio::test]
async fn a_client_that_does_not_read_is_conflated_then_closed_with_4408() {
    let rig = rig(|s| {
        s.ws_queue = 1;
        s.ws_conflate_max = 1;
        s.ws_send_timeout_secs = 60;
    })
    .await;
    let mut slow = rig.authenticated().await;
    slow.subscribe(&SKUS).await;
    // A client that reads everything, to know when the feed has pushed a
    // change into every subscriber's outbox.
    let mut witness = rig.authenticated().await;
    witness.subscribe(&SKUS).await;

    // The slow session takes S-1's change and waits on its socket...
    slow.stop_reading();
    let s1 = rig.adjust("S-1").await;
    slow.stalls_reach(1).await;
    // ...while one change is queued in order, then S-3's two conflated.
    let s2 = rig.adjust("S-2").await;
    rig.adjust("S-3").await;
    let s3 = rig.adjust("S-3").await;
    for want in [s1, s2, s3 - 1, s3] {
        assert_eq!(witness.change().await.2, want);
    }
    // The client reads again: what was written, what was queued, then
    // only the newest of S-3, marked conflated.
    slow.resume_reading();
    assert_eq!(slow.change().await, ("S-1".into(), 2, s1, false));
    assert_eq!(slow.change().await, ("S-2".into(), 2, s2, false));
    assert_eq!(slow.change().await, ("S-3".into(), 3, s3, true));

    // Again, with more distinct SKUs waiting than may be conflated.
    slow.stop_reading();
    let s1 = rig.adjust("S-1").await;
    slow.stalls_reach(2).await;
    for sku in ["S-2", "S-3", "S-4"] {
        rig.adjust(sku).await;
    }
    for want in s1..s1 + 4 {
        assert_eq!(witness.change().await.2, want);
    }
    slow.resume_reading();
    assert_eq!(slow.change().await, ("S-1".into(), 3, s1, false));
    assert_eq!(slow.close_code().await, close::TOO_SLOW);
    assert_eq!(rig.members("S-4"), 1, "the slow session left the set");
}

#[tokio::test]
async fn a_bad_message_gets_an_error_and_the_session_stays_open() {
    let rig = rig(|_| {}).await;
    let mut client = rig.authenticated().await;
    let bad = [
        Message::Text(Utf8Bytes::from_static("not json")),
        Message::Text(Utf8Bytes::from_static("[1, 2]")),
        Message::Text(json!({ "type": "nonsense" }).to_string().into()),
        Message::Text(
            json!({ "type": "subscribe", "skus": ["S-1"], "x": 1 })
                .to_string()
                .into(),
        ),
        Message::Binary(vec![1, 2, 3].into()),
    ];
    for frame in bad {
        client.send_frame(frame.clone());
        let reply = client.next_json().await;
        assert_eq!(reply["type"], "error", "{frame:?}: {reply}");
        assert_eq!(reply["code"], "bad_message", "{frame:?}: {reply}");
    }
    client.send(json!({ "type": "subscribe", "skus": ["not a code!"] }));
    let reply = client.next_json().await;
    assert_eq!(reply["code"], "bad_subscribe", "{reply}");
    assert_eq!(rig.members("S-1"), 0);

    client.subscribe(&["S-1"]).await;
    let id = rig.adjust("S-1").await;
    assert_eq!(client.change().await, ("S-1".into(), 2, id, false));
    assert_eq!(rig.app.sessions.open().await.len(), 1);
}
