//! Issue 13, the push path: every alert reaches every `alerts` subscriber
//! exactly once whatever path its event took (fault 1), cursors ahead of
//! the server are detected (fault 5), no cached read is older than the
//! database (fault 11), and one `bus_down` notice per outage.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Ws};
use crate::redis_proxy::{cleanup, test_prefix, Mode, RedisProxy, REDIS_ADDR};

/// How long a test waits for a condition before failing.
const CONVERGE: Duration = Duration::from_secs(60);

/// A session subscribed to alerts, answered once the subscription holds.
async fn alert_session(app: &TestApp) -> Ws {
    let mut ws = app.ws().await;
    ws.send(json!({ "type": "subscribe", "alerts": true }))
        .await;
    // Answered only after the subscription is in place.
    ws.send(json!({ "type": "nonsense" })).await;
    loop {
        if ws.next_json().await["type"] == "error" {
            return ws;
        }
    }
}

/// Reads alerts until one for `last_sku` arrives; returns them all, in
/// order. Everything else (notices, changes) is skipped.
async fn alerts_until(ws: &mut Ws, last_sku: &str) -> Vec<Value> {
    let mut alerts = Vec::new();
    loop {
        let message = tokio::time::timeout(CONVERGE, ws.next_json())
            .await
            .expect("alerts in time");
        if message["type"] == "alert" {
            let done = message["alert"]["sku"] == last_sku;
            alerts.push(message["alert"].clone());
            if done {
                return alerts;
            }
        }
    }
}

/// Each raised `low_stock` alert of `skus` exactly once, and nothing else.
fn assert_once_each(alerts: &[Value], skus: &[String], name: &str) {
    let mut count: HashMap<String, usize> = HashMap::new();
    for alert in alerts {
        assert_eq!(alert["kind"], "low_stock", "{name}: {alert}");
        *count
            .entry(alert["sku"].as_str().unwrap_or("").to_owned())
            .or_default() += 1;
    }
    let missing: Vec<&String> = skus.iter().filter(|s| !count.contains_key(*s)).collect();
    let twice: Vec<(&String, &usize)> = count.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        missing.is_empty() && twice.is_empty(),
        "{name}: {} of {} alerts; missing {missing:?}, more than once {twice:?}",
        count.len(),
        skus.len()
    );
}

/// Creates `count` SKUs at stock 10 (threshold 10) with one CSV import.
async fn import_skus(app: &TestApp, prefix: &str, count: usize) -> Vec<String> {
    let skus: Vec<String> = (0..count).map(|i| format!("{prefix}{i:04}")).collect();
    let mut csv = String::from("sku,name,price,currency,stock,low_stock_threshold\n");
    for sku in &skus {
        csv.push_str(&format!("{sku},Item {sku},1.00,GBP,10,10\n"));
    }
    app.import(csv).await;
    skus
}

fn redis_settings(s: &mut skuwatch::Settings, url: String, prefix: &str) {
    s.redis_url = Some(skuwatch::config::Secret(url));
    s.redis_prefix = prefix.to_owned();
    s.redis_heartbeat_ms = 100;
}

/// Waits until `/readyz` answers `want`.
async fn wait_ready(app: &TestApp, want: u16) {
    app.wait_ready(want, CONVERGE).await;
}

// Fault 1: B's Redis connection is cut, so every change A commits reaches
// B's feed from the database (tail check and gap fill) and never from the
// bus; the alerts must still reach B's sessions, once each, and A's too.
both_backends!(
    alerts_raised_on_a_reach_sessions_on_b_that_reads_them_from_the_database,
    |backend: Backend| async move {
        let prefix = test_prefix();
        let proxy = RedisProxy::start().await;
        let a_url = format!("redis://{REDIS_ADDR}/");
        let a = TestApp::spawn_with(backend, |s| {
            redis_settings(s, a_url.clone(), &prefix);
        })
        .await;
        let b = a
            .another(|s| {
                redis_settings(s, proxy.url(), &prefix);
            })
            .await;
        wait_ready(&a, 200).await;
        wait_ready(&b, 200).await;
        let skus = import_skus(&a, "AL", 40).await;
        let sentinel = "ZZ-SENTINEL";
        a.create_sku(sentinel, "GBP", "1.00", 10).await;
        let mut on_a = alert_session(&a).await;
        let mut on_b = alert_session(&b).await;

        proxy.set(Mode::Refuse);
        wait_ready(&b, 503).await;
        let writes = skus.iter().map(|sku| a.adjust(sku, -1));
        for (status, body) in join_all(writes).await {
            assert_eq!(status, 200, "{body}");
        }
        // The sentinel's alert comes after every other in event order.
        assert_eq!(a.adjust(sentinel, -1).await.0, 200);
        let mut want = skus.clone();
        want.push(sentinel.to_owned());
        let seen_b = alerts_until(&mut on_b, sentinel).await;
        assert_once_each(&seen_b, &want, "B, Redis cut");
        let seen_a = alerts_until(&mut on_a, sentinel).await;
        assert_once_each(&seen_a, &want, "A");

        // Back in touch: nothing is delivered twice (a second sentinel
        // marks the end of what B can have been sent meanwhile).
        proxy.set(Mode::Pass);
        wait_ready(&b, 200).await;
        let second = "ZZ-SENTINEL-2";
        a.create_sku(second, "GBP", "1.00", 10).await;
        assert_eq!(a.adjust(second, -1).await.0, 200);
        let after = alerts_until(&mut on_b, second).await;
        assert_once_each(&after, &[second.to_owned()], "B, after the outage");
        cleanup(&prefix).await;
    }
);

// Fault 1, one instance (the input): concurrent sales on many SKUs
// make the feed fill gaps from the database; each alert is pushed once.
both_backends!(
    every_low_stock_alert_of_concurrent_sales_is_pushed_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let count = if backend == Backend::Postgres {
            600
        } else {
            200
        };
        let skus = import_skus(&app, "C", count).await;
        let mut ws = alert_session(&app).await;
        let app = std::sync::Arc::new(app);
        let lanes: Vec<_> = skus
            .chunks(count.div_ceil(32))
            .map(|lane| {
                let (app, lane) = (app.clone(), lane.to_vec());
                tokio::spawn(async move {
                    for sku in lane {
                        assert_eq!(app.adjust(&sku, -1).await.0, 200);
                    }
                })
            })
            .collect();
        for lane in join_all(lanes).await {
            lane.expect("writer");
        }
        let sentinel = "ZZ-END";
        app.create_sku(sentinel, "GBP", "1.00", 10).await;
        assert_eq!(app.adjust(sentinel, -1).await.0, 200);
        let mut want = skus.clone();
        want.push(sentinel.to_owned());
        let seen = alerts_until(&mut ws, sentinel).await;
        assert_once_each(&seen, &want, "one instance");
    }
);

// Fault 1: an event read back from the database carries the alerts that
// were pushed with it (the feed's catch-up, `since` replays).
both_backends!(
    events_read_back_from_the_database_carry_their_alerts,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("RB", "GBP", "1.00", 10).await;
        let mut ws = alert_session(&app).await;
        let (_, body) = app.adjust("RB", -1).await;
        let pushed = alerts_until(&mut ws, "RB").await;
        let event_id = body["event_id"].as_i64().expect("event_id");
        let store = app.app().state().store.clone();
        let read = skuwatch_actors::store::SkuStore::events_after(&*store, event_id - 1, 1, None)
            .await
            .expect("read");
        assert_eq!(read.len(), 1);
        let read_back: Vec<Value> = read[0]
            .alerts
            .iter()
            .map(|a| serde_json::to_value(a).expect("json"))
            .collect();
        assert_eq!(read_back, pushed);
    }
);

/// One `/events` request; returns status and body.
async fn events(app: &TestApp, query: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(&format!("/api/v1/events?{query}")))
        .send()
        .await
        .expect("events");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// Rewinds the database to `keep` events, as a restore from an older
/// backup (or a lagging replica promoted) would.
async fn rewind_events(app: &TestApp, keep: i64) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
    sqlx::query("DELETE FROM events WHERE event_id > $1")
        .bind(keep)
        .execute(&mut conn)
        .await
        .expect("delete");
    sqlx::query("UPDATE event_clock SET last_event_id = $1 WHERE id = 1")
        .bind(keep)
        .execute(&mut conn)
        .await
        .expect("clock");
}

// Fault 5: `/events` with a position beyond the newest event, and a cursor
// whose event is no longer the one the client saw.
both_backends!(
    events_refuse_a_position_ahead_of_the_server_and_a_cursor_it_does_not_know,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("CU", "GBP", "1.00", 100).await;
        for _ in 0..4 {
            assert_eq!(app.adjust("CU", -1).await.0, 200);
        }
        // Five events. At the newest: an empty page, not an error.
        let (status, page) = events(&app, "after=5").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["next_after"], 5);
        let (status, problem) = events(&app, "after=9").await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(
            problem["type"]
                .as_str()
                .map(|t| t.ends_with("cursor_ahead")),
            Some(true),
            "{problem}"
        );
        assert_eq!(problem["newest_event_id"], 5, "{problem}");

        // Cursors page like `after` and name the exact event.
        let (status, first) = events(&app, "limit=3").await;
        assert_eq!(status, 200);
        let cursor = first["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_owned();
        let (status, second) = events(&app, &format!("cursor={cursor}&limit=3")).await;
        assert_eq!(status, 200, "{second}");
        let ids: Vec<i64> = second["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["event_id"].as_i64().expect("id"))
            .collect();
        assert_eq!(ids, [4, 5]);
        let at_five = second["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_owned();
        let (status, empty) = events(&app, &format!("cursor={at_five}")).await;
        assert_eq!(
            (status, empty["events"].as_array().map(Vec::len)),
            (200, Some(0))
        );
        assert_eq!(empty["next_cursor"], at_five.as_str());

        // Bad forms are named.
        for query in [
            format!("cursor={cursor}&after=1"),
            "cursor=nonsense".to_owned(),
            "cursor=".to_owned(),
        ] {
            let (status, problem) = events(&app, &query).await;
            assert_eq!(status, 422, "{query}: {problem}");
            assert_eq!(
                problem["errors"][0]["field"], "cursor",
                "{query}: {problem}"
            );
        }

        // Restored from a backup taken at event 3, then new writes pass 5:
        // ids 4 and 5 now name other events than the client saw.
        rewind_events(&app, 3).await;
        let (status, problem) = events(&app, "after=5").await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(problem["newest_event_id"], 3, "{problem}");
        for _ in 0..3 {
            assert_eq!(app.adjust("CU", -2).await.0, 200);
        }
        let (status, problem) = events(&app, &format!("cursor={at_five}")).await;
        assert_eq!(status, 409, "{problem}");
        assert_eq!(
            problem["type"]
                .as_str()
                .map(|t| t.ends_with("cursor_unknown")),
            Some(true),
            "{problem}"
        );
        // A cursor at an event that is still the same goes on working.
        let (status, page) = events(&app, &format!("cursor={cursor}")).await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["events"].as_array().map(Vec::len), Some(3));
    }
);

/// The next message that is not a bus notice.
async fn next_not_bus(ws: &mut Ws) -> Value {
    loop {
        let message = ws.next_json().await;
        let bus = message["type"] == "notice"
            && matches!(message["code"].as_str(), Some("bus_down" | "bus_up"));
        if !bus {
            return message;
        }
    }
}

// Fault 5: the WebSocket `since`, as an id or a cursor.
both_backends!(
    a_websocket_since_ahead_or_unknown_gets_a_notice_and_a_fresh_snapshot,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("WS", "GBP", "1.00", 100).await;
        for _ in 0..4 {
            assert_eq!(app.adjust("WS", -1).await.0, 200);
        }
        let (_, page) = events(&app, "limit=2").await;
        let at_two = page["next_cursor"].as_str().expect("cursor").to_owned();

        // A cursor string replays like the id it names.
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["WS"], "since": at_two }))
            .await;
        let mut got = Vec::new();
        for _ in 0..3 {
            let message = next_not_bus(&mut ws).await;
            assert_eq!(message["type"], "sku", "{message}");
            got.push(message["event_id"].as_i64().expect("id"));
        }
        assert_eq!(got, [3, 4, 5]);

        // Ahead of the server: a notice, then a snapshot at the newest.
        for since in [json!(9), json!("oops")] {
            let mut ws = app.ws().await;
            ws.send(json!({ "type": "subscribe", "skus": ["WS"], "since": since }))
                .await;
            let notice = next_not_bus(&mut ws).await;
            if since == json!("oops") {
                assert_eq!(notice["type"], "error", "{notice}");
                assert_eq!(notice["code"], "bad_subscribe", "{notice}");
                continue;
            }
            assert_eq!(notice["type"], "notice", "{notice}");
            assert_eq!(notice["code"], "cursor_ahead", "{notice}");
            assert_eq!(notice["newest_event_id"], 5, "{notice}");
            let snapshot = next_not_bus(&mut ws).await;
            assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
            assert_eq!(snapshot["event_id"], 5);
            assert_eq!(snapshot["skus"][0]["version"], 5);
        }

        // Restored to event 3, written past 5: the cursor at 5 is unknown.
        let (_, page) = events(&app, "after=4").await;
        let at_five = page["next_cursor"].as_str().expect("cursor").to_owned();
        rewind_events(&app, 3).await;
        for _ in 0..3 {
            assert_eq!(app.adjust("WS", -2).await.0, 200);
        }
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["WS"], "since": at_five }))
            .await;
        let notice = next_not_bus(&mut ws).await;
        assert_eq!(notice["code"], "cursor_unknown", "{notice}");
        assert_eq!(notice["newest_event_id"], 6, "{notice}");
        let snapshot = next_not_bus(&mut ws).await;
        assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
        assert_eq!(snapshot["event_id"], 6);
        assert_eq!(snapshot["skus"][0]["stock"], 90);
    }
);

/// Writes `fields` into the SKU's Redis hash, as a restored dump would.
async fn restore_hash(prefix: &str, sku: &str, fields: &[(String, String)]) {
    let client = redis::Client::open(format!("redis://{REDIS_ADDR}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let key = format!("{prefix}:sku:{sku}");
    let mut cmd = redis::cmd("HSET");
    cmd.arg(&key);
    for (field, value) in fields {
        cmd.arg(field).arg(value);
    }
    let _: i64 = cmd.query_async(&mut conn).await.expect("hset");
}

async fn read_hash(prefix: &str, sku: &str) -> Vec<(String, String)> {
    let client = redis::Client::open(format!("redis://{REDIS_ADDR}/")).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    redis::cmd("HGETALL")
        .arg(format!("{prefix}:sku:{sku}"))
        .query_async(&mut conn)
        .await
        .expect("hgetall")
}

fn hash_version(fields: &[(String, String)]) -> Option<i64> {
    fields
        .iter()
        .find(|(f, _)| f == "version")
        .and_then(|(_, v)| v.parse().ok())
}

async fn wait_hash_version(prefix: &str, sku: &str, version: i64) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let fields = read_hash(prefix, sku).await;
        if hash_version(&fields) == Some(version) {
            return fields;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hash stayed {fields:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Fault 11: Redis comes back from an older dump; a SKU actor that
// activates afterwards (after passivation, or on another instance) must
// serve the database's version, in GET and in a snapshot alike.
both_backends!(
    a_redis_hash_restored_from_an_older_dump_is_never_served,
    |backend: Backend| async move {
        let prefix = test_prefix();
        let url = format!("redis://{REDIS_ADDR}/");
        let settings = |s: &mut skuwatch::Settings| {
            redis_settings(s, url.clone(), &prefix);
            s.actor_idle_secs = 1;
        };
        let a = TestApp::spawn_with(backend, settings).await;
        wait_ready(&a, 200).await;
        a.create_sku("OLD", "GBP", "1.00", 100).await;
        for _ in 0..4 {
            assert_eq!(a.adjust("OLD", -1).await.0, 200);
        }
        let dump = wait_hash_version(&prefix, "OLD", 5).await;
        for _ in 0..4 {
            assert_eq!(a.adjust("OLD", -1).await.0, 200);
        }
        wait_hash_version(&prefix, "OLD", 9).await;
        assert_eq!(a.get_sku("OLD").await.1["version"], 9);
        restore_hash(&prefix, "OLD", &dump).await;
        assert_eq!(hash_version(&read_hash(&prefix, "OLD").await), Some(5));

        // Passivated, then activated again.
        let code = skuwatch_actors::domain::SkuCode::parse("OLD").expect("sku");
        let deadline = tokio::time::Instant::now() + CONVERGE;
        while a.app().state().registry.is_active(&code) {
            assert!(tokio::time::Instant::now() < deadline, "never passivated");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (_, state) = a.get_sku("OLD").await;
        assert_eq!(
            (state["version"].as_i64(), state["stock"].as_i64()),
            (Some(9), Some(92)),
            "{state}"
        );
        let mut ws = a.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["OLD"] }))
            .await;
        let snapshot = next_not_bus(&mut ws).await;
        assert_eq!(snapshot["skus"][0]["version"], 9, "{snapshot}");

        // Another instance activates it for the first time.
        let b = a.another(settings).await;
        wait_ready(&b, 200).await;
        let (_, state) = b.get_sku("OLD").await;
        assert_eq!(state["version"], 9, "{state}");
        // A write on top of the database state, not of the stale hash.
        let (status, body) = b.adjust("OLD", -1).await;
        assert_eq!(
            (status, body["sku"]["version"].as_i64()),
            (200, Some(10)),
            "{body}"
        );
        cleanup(&prefix).await;
    }
);

// Also noticed: one `bus_down` notice per outage, however many reconnect
// attempts it takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_outage_gives_one_bus_down_notice_however_many_reconnects() {
    tokio::time::timeout(crate::helpers::TEST_DEADLINE, async {
        let prefix = test_prefix();
        let proxy = RedisProxy::start().await;
        let url = proxy.url();
        let app = TestApp::spawn_with(Backend::Postgres, |s| {
            redis_settings(s, url.clone(), &prefix);
        })
        .await;
        wait_ready(&app, 200).await;
        let mut ws = app.ws().await;
        proxy.set(Mode::Refuse);
        wait_ready(&app, 503).await;
        // Backoff doubles from 100 ms: about five attempts fail in 3 s.
        tokio::time::sleep(Duration::from_secs(3)).await;
        proxy.set(Mode::Pass);
        let mut notices = Vec::new();
        loop {
            let message = ws.next_json().await;
            if message["type"] == "notice" {
                let code = message["code"].as_str().unwrap_or("").to_owned();
                notices.push(code.clone());
                if code == "bus_up" {
                    break;
                }
            }
        }
        assert_eq!(notices, ["bus_down", "bus_up"]);
        cleanup(&prefix).await;
    })
    .await
    .expect("test finished before its deadline");
}

// Fault 11, same kind: a state this instance read from the database and
// showed (a list page here; snapshots, replays and `/events` pages alike)
// is offered to the SKU's actor, so a `GET` served from the actor right
// after is never older. The row is changed behind the feed's back, which
// is how a change the feed has not dispatched yet looks to the actor.
both_backends!(
    a_get_is_never_older_than_a_list_the_same_instance_showed,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("SEEN", "GBP", "1.00", 10).await;
        let (status, before) = app.get_sku("SEEN").await;
        assert_eq!((status, before["version"].as_i64()), (200, Some(1)));

        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
        sqlx::query("UPDATE skus SET stock = 7, version = version + 1 WHERE sku = 'SEEN'")
            .execute(&mut conn)
            .await
            .expect("update");
        conn.close().await.expect("close");

        let listed: Value = app
            .client
            .get(app.url("/api/v1/skus?q=SEEN"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(listed["items"][0]["version"], 2, "{listed}");
        let (status, after) = app.get_sku("SEEN").await;
        assert_eq!(status, 200);
        assert_eq!(after["version"], 2, "a GET after the list: {after}");
        assert_eq!(after["stock"], 7);
    }
);
