//! Two server instances on one PostgreSQL and one Redis (issue 5): changes
//! through one reach clients of the other, in order, across Redis outages
//! and silent network cuts, and the Redis cache never falls behind.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{Backend, TestApp, Ws, TEST_DEADLINE};
use crate::redis_proxy::{cleanup, test_prefix, Mode, RedisProxy, REDIS_ADDR};

/// How long the tests wait for convergence before failing.
const CONVERGE: Duration = Duration::from_secs(60);

/// Two instances sharing a PostgreSQL database and, through `proxy`, Redis.
struct Pair {
    a: Arc<TestApp>,
    b: Arc<TestApp>,
    prefix: String,
    proxy: RedisProxy,
}

impl Pair {
    async fn start() -> Self {
        let prefix = test_prefix();
        let proxy = RedisProxy::start().await;
        let settings = |s: &mut skuwatch::Settings| {
            s.redis_url = Some(skuwatch::config::Secret(proxy.url()));
            s.redis_prefix = prefix.clone();
            s.redis_heartbeat_ms = 100;
        };
        let a = TestApp::spawn_with(Backend::Postgres, settings).await;
        let b = a.another(settings).await;
        let pair = Self {
            a: Arc::new(a),
            b: Arc::new(b),
            prefix,
            proxy,
        };
        pair.wait_ready(true).await;
        pair
    }

    /// Waits until `/readyz` of both instances says `ready` (or not).
    async fn wait_ready(&self, ready: bool) {
        for app in [&self.a, &self.b] {
            app.wait_ready(if ready { 200 } else { 503 }, CONVERGE)
                .await;
        }
    }

    async fn create_skus(&self, count: usize, stock: i64) -> Vec<String> {
        let skus: Vec<String> = (0..count).map(|i| format!("S{i:02}")).collect();
        for sku in &skus {
            self.a.create_sku(sku, "GBP", "1.00", stock).await;
        }
        skus
    }

    async fn finish(self) {
        cleanup(&self.prefix).await;
    }
}

/// Everything a WebSocket client received, collected in the background.
struct Watcher {
    seen: watch::Receiver<Vec<Value>>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    /// Subscribes `app`'s client to all changes and starts collecting.
    async fn all(app: &TestApp) -> Self {
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "all": true })).await;
        // Answered only after the subscription is in place.
        ws.send(json!({ "type": "nonsense" })).await;
        assert_eq!(ws.next_json().await["type"], "error");
        Self::collect(ws)
    }

    fn collect(mut ws: Ws) -> Self {
        let (sender, seen) = watch::channel(Vec::new());
        let task = tokio::spawn(async move {
            while let Some(Ok(message)) = ws.stream.next().await {
                if let Message::Text(text) = message {
                    let value: Value = serde_json::from_str(&text).expect("json");
                    sender.send_modify(|seen| seen.push(value));
                }
            }
        });
        Self { seen, task }
    }

    fn of_type(&self, kind: &str) -> Vec<Value> {
        self.seen
            .borrow()
            .iter()
            .filter(|m| m["type"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until the newest version seen of every SKU in `want` is the
    /// wanted one, then checks the whole sequence.
    async fn converge(&mut self, want: &HashMap<String, (i64, i64)>, name: &str) {
        let reached = tokio::time::timeout(
            CONVERGE,
            self.seen.wait_for(|seen| {
                let newest = newest_states(seen);
                want.iter()
                    .all(|(sku, (_, version))| newest.get(sku).map(|s| s.1) == Some(*version))
            }),
        )
        .await
        .is_ok();
        let seen = self.seen.borrow().clone();
        assert!(
            reached,
            "{name}: did not converge: newest seen {:?}, database {want:?}",
            newest_states(&seen)
        );
        assert_ordered_without_duplicates(&seen, name);
        let newest = newest_states(&seen);
        for (sku, state) in want {
            assert_eq!(newest.get(sku), Some(state), "{name}: {sku}");
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Per SKU, (stock, version) of the newest `sku` message.
fn newest_states(seen: &[Value]) -> HashMap<String, (i64, i64)> {
    let mut newest = HashMap::new();
    for message in seen.iter().filter(|m| m["type"] == "sku") {
        let sku = message["sku"]["sku"].as_str().expect("sku").to_owned();
        let state = (
            message["sku"]["stock"].as_i64().expect("stock"),
            message["sku"]["version"].as_i64().expect("version"),
        );
        let entry = newest.entry(sku).or_insert(state);
        if state.1 > entry.1 {
            *entry = state;
        }
    }
    newest
}

/// Every SKU's versions go up by exactly one per message, except after an
/// explicit conflation; event ids only go up; nothing twice.
fn assert_ordered_without_duplicates(seen: &[Value], name: &str) {
    let mut versions: HashMap<String, i64> = HashMap::new();
    let mut last_event = 0;
    for message in seen.iter().filter(|m| m["type"] == "sku") {
        let sku = message["sku"]["sku"].as_str().expect("sku").to_owned();
        let version = message["sku"]["version"].as_i64().expect("version");
        let event_id = message["event_id"].as_i64().expect("event_id");
        let conflated = message["conflated"] == true;
        if !conflated {
            assert!(
                event_id > last_event,
                "{name}: event {event_id} after {last_event}"
            );
        }
        last_event = last_event.max(event_id);
        if let Some(previous) = versions.get(&sku) {
            if conflated {
                assert!(
                    version > *previous,
                    "{name}: {sku} v{version} after v{previous}"
                );
            } else {
                assert_eq!(
                    version,
                    previous + 1,
                    "{name}: {sku} v{version} after v{previous}"
                );
            }
        }
        versions.insert(sku, version);
    }
}

/// The committed (stock, version) of each SKU.
async fn database_states(app: &TestApp, skus: &[String]) -> HashMap<String, (i64, i64)> {
    let mut states = HashMap::new();
    for sku in skus {
        states.insert(sku.clone(), app.db_stock(sku).await);
    }
    states
}

/// Writers alternating sales and returns over `skus` on `app` until `stop`;
/// every write must succeed (the database is the truth, Redis or not).
fn writers(
    app: &Arc<TestApp>,
    skus: &[String],
    count: usize,
    stop: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<usize>> {
    (0..count)
        .map(|w| {
            let app = app.clone();
            let skus = skus.to_vec();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut done = 0;
                while !*stop.borrow() {
                    let sku = &skus[(w * 7 + done * 3) % skus.len()];
                    let delta = if done % 2 == 0 { -1 } else { 1 };
                    let (status, body) = app.adjust(sku, delta).await;
                    assert_eq!(status, 200, "{body}");
                    done += 1;
                }
                done
            })
        })
        .collect()
}

async fn run_for(
    pair: &Pair,
    skus: &[String],
    per_instance: usize,
    during: impl std::future::Future<Output = ()>,
) -> usize {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = writers(&pair.a, skus, per_instance, &stopped);
    tasks.extend(writers(&pair.b, skus, per_instance, &stopped));
    during.await;
    stop.send_replace(true);
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.expect("writer"))
        .sum()
}

async fn redis_hash_version(prefix: &str, sku: &str) -> Option<i64> {
    let client = redis::Client::open(format!("redis://{REDIS_ADDR}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("HGET")
        .arg(format!("{prefix}:sku:{sku}"))
        .arg("version")
        .query_async(&mut conn)
        .await
        .expect("hget")
}

/// Waits until Redis holds each SKU's committed version; it must never
/// hold a newer one than the database, nor stay on an older one.
async fn assert_cache_matches(pair: &Pair, want: &HashMap<String, (i64, i64)>) {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    for (sku, (_, version)) in want {
        loop {
            let cached = redis_hash_version(&pair.prefix, sku).await;
            assert!(
                cached.unwrap_or(0) <= *version,
                "{sku}: Redis has v{cached:?}, the database v{version}"
            );
            if cached == Some(*version) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{sku}: Redis stayed at v{cached:?}, the database is at v{version}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn within_deadline(test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test finished before its deadline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_change_through_a_reaches_a_client_on_b_in_version_order() {
    within_deadline(async {
        let pair = Pair::start().await;
        pair.a.create_sku("AB-1", "GBP", "1.00", 1_000).await;
        let mut on_b = pair.b.ws().await;
        on_b.send(json!({ "type": "subscribe", "skus": ["AB-1"] }))
            .await;
        assert_eq!(on_b.next_json().await["type"], "snapshot");
        for _ in 0..30 {
            let (status, body) = pair.a.adjust("AB-1", -1).await;
            assert_eq!(status, 200, "{body}");
        }
        let (_, last) = pair.a.db_stock("AB-1").await;
        let mut expected = 2;
        while expected <= last {
            let message = on_b.next_json().await;
            assert_eq!(message["type"], "sku", "{message}");
            assert_eq!(message["sku"]["version"], expected, "{message}");
            assert_eq!(message["sku"]["stock"], 1_000 - (expected - 1), "{message}");
            expected += 1;
        }
        // B's own actor (activated from the Redis cache or the database)
        // serves the newest state.
        let (status, state) = pair.b.get_sku("AB-1").await;
        assert_eq!(status, 200);
        assert_eq!(state["version"], last);
        pair.finish().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_writers_on_each_instance_leave_every_client_with_the_database_state() {
    within_deadline(async {
        let pair = Pair::start().await;
        let skus = pair.create_skus(20, 1_000_000).await;
        let mut watchers = vec![
            ("a1", Watcher::all(&pair.a).await),
            ("a2", Watcher::all(&pair.a).await),
            ("b1", Watcher::all(&pair.b).await),
            ("b2", Watcher::all(&pair.b).await),
        ];
        let written = run_for(&pair, &skus, 8, tokio::time::sleep(Duration::from_secs(3))).await;
        assert!(written > 0);
        let want = database_states(&pair.a, &skus).await;
        for (name, watcher) in &mut watchers {
            watcher.converge(&want, name).await;
        }
        assert_cache_matches(&pair, &want).await;
        pair.finish().await;
    })
    .await;
}

/// Takes Redis away (`mode`) for three seconds while both instances keep
/// writing, then gives it back.
async fn outage(mode: Mode) {
    let pair = Pair::start().await;
    let skus = pair.create_skus(20, 1_000_000).await;
    let mut watchers = vec![
        ("a", Watcher::all(&pair.a).await),
        ("b", Watcher::all(&pair.b).await),
    ];
    let written = run_for(&pair, &skus, 4, async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pair.proxy.set(mode);
        // Both notice on their own (a refused connection at once, a silent
        // cut by the missing heartbeat) and say so.
        pair.wait_ready(false).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        pair.proxy.set(Mode::Pass);
        pair.wait_ready(true).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
    assert!(written > 0);
    let want = database_states(&pair.a, &skus).await;
    for (name, watcher) in &mut watchers {
        watcher.converge(&want, name).await;
        let notices: Vec<Value> = watcher.of_type("notice");
        let codes: Vec<&str> = notices.iter().filter_map(|n| n["code"].as_str()).collect();
        assert!(
            codes.windows(2).any(|w| w == ["bus_down", "bus_up"]),
            "{name}: notices {codes:?}"
        );
    }
    // The cache caught up with what was written while Redis was away.
    assert_cache_matches(&pair, &want).await;
    // A client connecting now starts from the right state on either side.
    for app in [&pair.a, &pair.b] {
        for sku in skus.iter().take(5) {
            let (_, state) = app.get_sku(sku).await;
            assert_eq!(state["version"], want[sku].1, "{sku}");
            assert_eq!(state["stock"], want[sku].0, "{sku}");
        }
    }
    pair.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_while_both_instances_write_then_every_client_converges() {
    within_deadline(outage(Mode::Refuse)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_silent_network_cut_is_noticed_by_the_heartbeat_and_every_client_converges() {
    within_deadline(outage(Mode::Blackhole)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_actor_activated_on_b_never_keeps_a_state_older_than_a_change_b_has_dispatched() {
    within_deadline(async {
        // Actors passivate after a second, so B activates SKUs again and
        // again, from the Redis cache when it can.
        let prefix = test_prefix();
        let proxy = RedisProxy::start().await;
        let settings = |s: &mut skuwatch::Settings| {
            s.redis_url = Some(skuwatch::config::Secret(proxy.url()));
            s.redis_prefix = prefix.clone();
            s.redis_heartbeat_ms = 100;
            s.actor_idle_secs = 1;
        };
        let a = TestApp::spawn_with(Backend::Postgres, settings).await;
        // B reaches Redis directly: only A loses it, so the hashes go stale
        // while B's listener stays up.
        let b = a
            .another(|s| {
                s.redis_url = Some(skuwatch::config::Secret(format!("redis://{REDIS_ADDR}/")));
                s.redis_prefix = prefix.clone();
                s.redis_heartbeat_ms = 100;
                s.actor_idle_secs = 1;
            })
            .await;
        a.create_sku("C-1", "GBP", "1.00", 100).await;
        assert_eq!(b.get_sku("C-1").await.1["version"], 1);
        proxy.set(Mode::Refuse);
        for _ in 0..5 {
            assert_eq!(a.adjust("C-1", -1).await.0, 200);
        }
        let (stock, version) = a.db_stock("C-1").await;
        // B learns of A's changes from the database (A could not publish);
        // whether its actor is active or activates later, from the cache
        // or not, it must end at the committed state.
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let (_, state) = b.get_sku("C-1").await;
            if state["version"] == version {
                assert_eq!(state["stock"], stock);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "B stayed at {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Passivated and activated again on B: still the committed state,
        // although Redis may still hold version 1 (A is cut off).
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let code = skuwatch_actors::domain::SkuCode::parse("C-1").expect("sku");
        assert!(!b.app().state().registry.is_active(&code));
        let (_, state) = b.get_sku("C-1").await;
        assert_eq!(state["version"], version, "{state}");
        proxy.set(Mode::Pass);
        cleanup(&prefix).await;
    })
    .await;
}

/// A committed change of `sku` at `version`, as the store would produce it.
fn change(
    sku: &str,
    version: i64,
    stock: i64,
    event_id: i64,
) -> Arc<skuwatch_actors::domain::Committed> {
    let at = "2026-11-29T10:00:00.000000Z";
    let state = json!({
        "sku": sku, "name": "Item", "currency": "GBP", "price": "1.00", "stock": stock,
        "low_stock_threshold": 10,
        "price_guard": { "max_change_pct": 50, "min_price": null, "max_price": null },
        "version": version, "updated_at": at,
    });
    let event = json!({
        "event_id": event_id, "sku": sku, "version": version, "at": at, "field": "stock",
        "old": stock + 1, "new": stock, "delta": -1, "reason": "sale", "actor": "test",
    });
    Arc::new(
        serde_json::from_value(json!({ "event": event, "sku": state, "alerts": [] }))
            .expect("a committed change"),
    )
}

fn redis_bus(
    prefix: &str,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Arc<skuwatch::bus::RedisBus> {
    skuwatch::bus::RedisBus::start(
        skuwatch::bus::RedisConfig {
            url: format!("redis://{REDIS_ADDR}/"),
            prefix: prefix.to_owned(),
            heartbeat: Duration::from_millis(100),
            capacity: 1024,
        },
        shutdown.clone(),
    )
    .expect("bus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_bus_carries_changes_between_instances_and_the_cache_never_goes_back() {
    use skuwatch_actors::bus::EventBus;
    within_deadline(async {
        let prefix = test_prefix();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (one, two) = (redis_bus(&prefix, &shutdown), redis_bus(&prefix, &shutdown));
        let mut on_two = two.subscribe();
        for bus in [&one, &two] {
            let mut connected = bus.connected();
            tokio::time::timeout(CONVERGE, connected.wait_for(|up| *up))
                .await
                .expect("listener subscribed in time")
                .expect("bus running");
        }
        // Published on one, delivered to two through Redis (there is no
        // database here to fill gaps from).
        one.publish(&[change("BUS-1", 5, 95, 41)]);
        let received = tokio::time::timeout(CONVERGE, on_two.recv())
            .await
            .expect("delivered in time")
            .expect("delivered");
        // As the API shows it: the SKU travels as its API object, so what
        // follows the server's settings arrives as the values it shows.
        let json = |c: &skuwatch_actors::domain::Committed| serde_json::to_value(c).expect("json");
        assert_eq!(json(&received), json(&change("BUS-1", 5, 95, 41)));
        // A late, older change never overwrites the cached newer one.
        two.publish(&[change("BUS-1", 3, 97, 39)]);
        let late = tokio::time::timeout(CONVERGE, on_two.recv())
            .await
            .expect("local");
        assert_eq!(late.expect("local").sku.version, 3);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(redis_hash_version(&prefix, "BUS-1").await, Some(5));
        let code = skuwatch_actors::domain::SkuCode::parse("BUS-1").expect("sku");
        let cached = one.cached_state(&code).await.expect("cached state");
        assert_eq!((cached.version, cached.stock), (5, 95));
        // A change the bus missed (the feed read it from the database) is
        // not served from the cache until the cache has it.
        two.missed(&change("BUS-1", 6, 94, 42));
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            match two.cached_state(&code).await {
                Some(state) if state.version == 6 => break,
                Some(state) => panic!("served v{} while v6 is committed", state.version),
                None => {}
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cache never caught up"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        cleanup(&prefix).await;
    })
    .await;
}
