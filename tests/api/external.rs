//! Changes written straight into the database (issue 16): an UPDATE or
//! INSERT of `skus` from another connection (an ERP sync, `psql`, the
//! `sqlite3` shell) becomes events like an API change, is pushed with its
//! alerts, and keeps `event_id` gap-free and per-SKU order.

use std::collections::BTreeMap;

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Ws};
use crate::redis_proxy::{test_prefix, REDIS_ADDR};

/// A connection of its own, as an external writer has.
pub(crate) async fn external(app: &TestApp) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(&app.db.url)
        .await
        .expect("external connection")
}

pub(crate) async fn exec(conn: &mut sqlx::AnyConnection, sql: &str) {
    conn.execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A socket subscribed to every change and every alert; `ready` names a
/// SKU it creates to know the subscriptions are in place.
async fn watch_all(app: &TestApp, ready: &str) -> Ws {
    let mut ws = app.ws().await;
    ws.send(json!({ "type": "subscribe", "all": true })).await;
    ws.send(json!({ "type": "subscribe", "alerts": true }))
        .await;
    app.create_sku(ready, "GBP", "1.00", 50).await;
    // A subscription is not acknowledged: on a loaded machine the creation
    // may be dispatched before it is in place. Then another SKU, created
    // later, shows it is (`ready` itself keeps its version for the caller).
    let mut signals = vec![ready.to_owned()];
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next_json()).await {
            Ok(message) => {
                let code = message["sku"]["sku"].as_str().unwrap_or_default();
                if message["type"] == "sku" && signals.iter().any(|s| s == code) {
                    return ws;
                }
            }
            Err(_) => {
                let next = format!("{ready}-{}", signals.len());
                app.create_sku(&next, "GBP", "1.00", 50).await;
                signals.push(next);
            }
        }
    }
}

/// Reads messages until each of `wanted` has held for one; returns all of
/// them. (A session sends alerts ahead of queued changes.)
async fn read_until_all(ws: &mut Ws, wanted: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
    let mut seen = Vec::new();
    let mut met = vec![false; wanted.len()];
    while !met.iter().all(|m| *m) {
        let message = ws.next_json().await;
        for (i, want) in wanted.iter().enumerate() {
            met[i] |= want(&message);
        }
        seen.push(message);
    }
    seen
}

fn is_change_of(code: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["type"] == "sku" && m["sku"]["sku"] == code
}

fn is_alert(code: &'static str, kind: &'static str) -> impl Fn(&Value) -> bool {
    move |m: &Value| m["type"] == "alert" && m["alert"]["sku"] == code && m["alert"]["kind"] == kind
}

/// Reads messages until `until` holds for one; returns all of them.
async fn read_until(ws: &mut Ws, until: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    loop {
        let message = ws.next_json().await;
        let done = until(&message);
        seen.push(message);
        if done {
            return seen;
        }
    }
}

fn role(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "postgres",
        Backend::Sqlite => "sqlite",
    }
}

both_backends!(
    an_external_update_is_pushed_with_its_alerts_and_reads_like_an_api_change,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut ws = watch_all(&app, "WS-READY").await;
        // Twins: one changed through the API, one straight in SQL, with
        // the same values; their events and states must read the same.
        for code in ["API-1", "EXT-1"] {
            let response = app
                .client
                .post(app.url("/api/v1/skus"))
                .json(
                    &json!({ "sku": code, "name": "Brass Mug", "currency": "KWD",
                               "price": "1.250", "stock": 20, "low_stock_threshold": 10 }),
                )
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), 201);
        }
        let send = |method: reqwest::Method, path: &str, body: Value| {
            app.client.request(method, app.url(path)).json(&body).send()
        };
        for (method, path, body) in [
            (
                reqwest::Method::PUT,
                "/api/v1/skus/API-1/price",
                json!({ "price": "1.500" }),
            ),
            (
                reqwest::Method::PATCH,
                "/api/v1/skus/API-1",
                json!({ "name": "Brass Mug XL",
                "price_guard": { "min_price": "0.750" } }),
            ),
            (
                reqwest::Method::PUT,
                "/api/v1/skus/API-1/stock",
                json!({ "stock": 0 }),
            ),
        ] {
            let response = send(method, path, body).await.expect("api write");
            assert_eq!(response.status(), 200, "{path}");
        }
        let mut conn = external(&app).await;
        // One statement, three events (price, name and guard, stock), as
        // the API's upsert orders them.
        exec(
            &mut conn,
            "UPDATE skus SET price_minor = 1500, name = 'Brass Mug XL', guard_min_price = 750, \
             stock = 0 WHERE sku = 'EXT-1'",
        )
        .await;

        let seen = read_until_all(
            &mut ws,
            &[
                &|m: &Value| is_change_of("EXT-1")(m) && m["change"]["field"] == "stock",
                &is_alert("EXT-1", "low_stock"),
            ],
        )
        .await;
        let ext: Vec<&Value> = seen
            .iter()
            .filter(|m| is_change_of("EXT-1")(m) && m["change"]["reason"] == "external")
            .collect();
        assert_eq!(ext.len(), 3, "{seen:?}");
        for (message, version) in ext.iter().zip(2..) {
            assert_eq!(message["change"]["actor"], role(backend));
            assert_eq!(message["sku"]["version"], version);
        }
        // Its alerts are pushed too (out of stock, low stock), once.
        let kinds: Vec<&Value> = seen
            .iter()
            .filter(|m| m["type"] == "alert" && m["alert"]["sku"] == "EXT-1")
            .map(|m| &m["alert"]["kind"])
            .collect();
        assert_eq!(kinds, [&json!("out_of_stock"), &json!("low_stock")]);

        // The events read the same as the API's, field for field.
        let events = app.all_events().await;
        let of = |code: &str| -> Vec<Value> {
            events
                .iter()
                .filter(|e| e["sku"] == code)
                .map(|e| json!([e["version"], e["field"], e["old"], e["new"], e["delta"]]))
                .collect()
        };
        assert_eq!(of("EXT-1")[1..], of("API-1")[1..]);
        // The SKU objects too (the derived price strings, the guard), and
        // the actor's cache has the external change.
        let (_, api) = app.get_sku("API-1").await;
        let (status, ext_sku) = app.get_sku("EXT-1").await;
        assert_eq!(status, 200);
        let comparable = |mut sku: Value| {
            if let Some(o) = sku.as_object_mut() {
                o.remove("sku");
                o.remove("updated_at");
                // The forecast is as of updated_at.
                o["forecast"]
                    .as_object_mut()
                    .expect("forecast")
                    .remove("as_of");
            }
            sku
        };
        assert_eq!(comparable(ext_sku.clone()), comparable(api));
        assert_eq!(
            &ext[2]["sku"], &ext_sku,
            "the pushed state is the stored one"
        );
        // The search text is the server's for both writers (Unicode case
        // rules, which SQLite's lower() lacks).
        exec(
            &mut conn,
            "UPDATE skus SET name = 'BRASS MUG ÉTÉ' WHERE sku = 'EXT-1'",
        )
        .await;
        read_until_all(
            &mut ws,
            &[&|m: &Value| is_change_of("EXT-1")(m) && m["sku"]["version"] == 5],
        )
        .await;
        for code in ["API-1"] {
            let response = send(
                reqwest::Method::PATCH,
                &format!("/api/v1/skus/{code}"),
                json!({ "name": "BRASS MUG ÉTÉ" }),
            )
            .await
            .expect("patch");
            assert_eq!(response.status(), 200);
        }
        let found = app.get_json("/api/v1/skus?q=mug%20%C3%A9t%C3%A9").await;
        assert_eq!(found["items"].as_array().map(Vec::len), Some(2), "{found}");
        // Exactly one alert of each kind, and the events carry them.
        let open = app.get_json("/api/v1/alerts?status=open&sku=EXT-1").await;
        assert_eq!(open["alerts"].as_array().map(Vec::len), Some(2), "{open}");
    }
);

both_backends!(
    an_external_insert_is_a_new_sku_and_broken_rules_are_refused_by_the_database,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut ws = watch_all(&app, "WS-READY").await;
        let mut conn = external(&app).await;
        exec(
            &mut conn,
            "INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold, \
             guard_max_change_pct) VALUES ('NEW-1', 'Tea Towel', 'JPY', 399, 8, 10, 50)",
        )
        .await;
        // Stock 8 below its threshold of 10: raised as for an API create.
        let seen = read_until_all(
            &mut ws,
            &[&is_change_of("NEW-1"), &is_alert("NEW-1", "low_stock")],
        )
        .await;
        let created = seen
            .iter()
            .find(|m| is_change_of("NEW-1")(m))
            .expect("change");
        assert_eq!(created["change"]["field"], "meta");
        assert_eq!(created["change"]["reason"], "external");
        assert_eq!(created["sku"]["price"], "399");
        assert_eq!(created["sku"]["version"], 1);
        let (status, sku) = app.get_sku("NEW-1").await;
        assert_eq!((status, &sku["stock"]), (200, &json!(8)));

        for (sql, names) in [
            (
                "UPDATE skus SET stock = -1 WHERE sku = 'NEW-1'",
                "stock_never_negative",
            ),
            (
                "UPDATE skus SET price_minor = 0 WHERE sku = 'NEW-1'",
                "price_minor",
            ),
            (
                "UPDATE skus SET currency = 'GBP' WHERE sku = 'NEW-1'",
                "cannot change",
            ),
            ("DELETE FROM skus WHERE sku = 'NEW-1'", "cannot be deleted"),
            (
                "UPDATE skus SET name = ' Tea Towel' WHERE sku = 'NEW-1'",
                "name_valid",
            ),
            (
                "UPDATE skus SET guard_max_change_pct = 0 WHERE sku = 'NEW-1'",
                "guard_valid",
            ),
            (
                "UPDATE skus SET reserved = 1 WHERE sku = 'NEW-1'",
                "only through holds",
            ),
            (
                "UPDATE skus SET lead_time_days = 3 WHERE sku = 'NEW-1'",
                "forecast settings",
            ),
            (
                "INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold) \
                 VALUES ('NEW-2', 'x', 'ZZZ', 1, 1, 1)",
                "currency_known",
            ),
            (
                "INSERT INTO skus (sku, name, currency, price_minor, stock, low_stock_threshold) \
                 VALUES ('NEW 3', 'x', 'GBP', 1, 1, 1)",
                "sku_code_valid",
            ),
        ] {
            let error = conn.execute(sql).await.expect_err(sql).to_string();
            assert!(error.contains(names), "{sql}: {error}");
        }
        if backend == Backend::Postgres {
            // Refused as a CHECK constraint refuses, whether the rule is
            // one (stock) or is checked by the trigger (name): a SQL client
            // reads the same SQLSTATE and constraint name.
            for (sql, rule) in [
                (
                    "UPDATE skus SET stock = -1 WHERE sku = 'NEW-1'",
                    "stock_never_negative",
                ),
                (
                    "UPDATE skus SET name = E'Tea\\tTowel' WHERE sku = 'NEW-1'",
                    "name_valid",
                ),
                (
                    "INSERT INTO skus (sku, name, currency, price_minor, stock, \
                     low_stock_threshold, lead_time_days) VALUES ('NEW-4', 'x', 'GBP', 1, 1, 1, 400)",
                    "lead_time_valid",
                ),
            ] {
                let error = conn.execute(sql).await.expect_err(sql);
                let error = error.as_database_error().expect("a database error");
                assert_eq!(error.code().as_deref(), Some("23514"), "{sql}");
                assert_eq!(error.constraint(), Some(rule), "{sql}");
            }
        }
        // Nothing of the refused writes is there.
        let (_, after) = app.get_sku("NEW-1").await;
        assert_eq!(after, sku);
        assert_eq!(app.get_sku("NEW-2").await.0, 404);
    }
);

both_backends!(
    external_bursts_interleaved_with_api_writes_keep_ids_gap_free_and_per_sku_order,
    |backend: Backend| async move {
        let app = std::sync::Arc::new(TestApp::spawn(backend).await);
        let codes = ["MIX-0", "MIX-1", "MIX-2", "MIX-3"];
        for code in codes {
            app.create_sku(code, "GBP", "1.00", 1000).await;
        }
        let mut ws = watch_all(&app, "WS-READY").await;
        let start = app
            .app()
            .state()
            .store
            .last_event_id()
            .await
            .expect("last id");
        let api = {
            let app = app.clone();
            tokio::spawn(async move {
                for round in 0..30 {
                    let (status, body) = app.adjust(codes[round % 4], 1).await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        };
        let mut conn = external(&app).await;
        for _ in 0..10 {
            // Transactions of several rows, as a sync job writes them.
            exec(&mut conn, "BEGIN").await;
            for code in &codes[..3] {
                exec(
                    &mut conn,
                    &format!("UPDATE skus SET stock = stock + 1 WHERE sku = '{code}'"),
                )
                .await;
            }
            exec(&mut conn, "COMMIT").await;
        }
        api.await.expect("api writers");
        let last = start + 30 + 30;
        let pushed = ws.changes_until(last).await;

        let ids: Vec<i64> = pushed
            .iter()
            .map(|m| m["event_id"].as_i64().unwrap())
            .collect();
        let expected: Vec<i64> = (start + 1..=last).collect();
        assert_eq!(ids, expected, "every change pushed once, in event_id order");
        let mut versions: BTreeMap<String, i64> = BTreeMap::new();
        for message in &pushed {
            let code = message["sku"]["sku"].as_str().unwrap().to_owned();
            let version = message["sku"]["version"].as_i64().unwrap();
            let previous = versions.insert(code.clone(), version).unwrap_or(1);
            assert_eq!(version, previous + 1, "{code}: versions consecutive");
        }
        let events = app.all_events().await;
        let all_ids: Vec<i64> = events
            .iter()
            .map(|e| e["event_id"].as_i64().unwrap())
            .collect();
        assert_eq!(all_ids, (1..=last).collect::<Vec<_>>(), "gap-free");
        let external = events.iter().filter(|e| e["reason"] == "external").count();
        assert_eq!(external, 30);
        let mut total = 0;
        for code in codes {
            total += app.get_sku(code).await.1["stock"].as_i64().unwrap();
        }
        assert_eq!(total, 4 * 1000 + 30 + 30);
    }
);

/// The listener's connection is killed while external commits arrive: the
/// reconnect reads what it missed from the events table, so every change
/// is still pushed once and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_listener_connection_loses_nothing() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.create_sku("KILL-1", "GBP", "1.00", 0).await;
    let mut ws = watch_all(&app, "WS-READY").await;
    let start = app
        .app()
        .state()
        .store
        .last_event_id()
        .await
        .expect("last id");
    let mut conn = external(&app).await;
    let mut admin = external(&app).await;
    let first = listener_pid(&mut admin, None).await;
    for i in 0..40 {
        exec(
            &mut conn,
            "UPDATE skus SET stock = stock + 1 WHERE sku = 'KILL-1'",
        )
        .await;
        if i == 20 {
            let killed: bool = sqlx::query_scalar(&format!("SELECT pg_terminate_backend({first})"))
                .fetch_one(&mut admin)
                .await
                .expect("terminate");
            assert!(killed, "the listener's backend was killed");
        }
    }
    let pushed = ws.changes_until(start + 40).await;
    let stocks: Vec<i64> = pushed
        .iter()
        .map(|m| m["sku"]["stock"].as_i64().unwrap())
        .collect();
    assert_eq!(stocks, (1..=40).collect::<Vec<_>>());
    // This server's listener is back, on a connection of its own.
    assert_ne!(listener_pid(&mut admin, Some(first)).await, first);
}

/// The backend pid of the external-change listener of the test's
/// database, once there is one other than `not`.
async fn listener_pid(admin: &mut sqlx::AnyConnection, not: Option<i32>) -> i32 {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '{}' \
         AND datname = current_database() AND pid <> {}",
        skuwatch::external::LISTENER_NAME,
        not.unwrap_or(0)
    );
    for _ in 0..400 {
        if let Some(pid) = sqlx::query_scalar::<_, i32>(&sql)
            .fetch_optional(&mut *admin)
            .await
            .expect("pg_stat_activity")
        {
            return pid;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no external-change listener connected to the test's database");
}

/// Two instances on one database and one Redis: both push an external
/// change, each once, and its alert is raised once between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_each_push_an_external_change_once_and_raise_its_alert_once() {
    let prefix = test_prefix();
    let settings = |s: &mut skuwatch::Settings| {
        s.redis_url = Some(skuwatch::config::Secret(format!("redis://{REDIS_ADDR}/")));
        s.redis_prefix = prefix.clone();
    };
    let a = TestApp::spawn_with(Backend::Postgres, settings).await;
    let b = a.another(settings).await;
    a.create_sku("TWO-1", "GBP", "1.00", 30).await;
    let mut on_a = watch_all(&a, "READY-A").await;
    let mut on_b = watch_all(&b, "READY-B").await;
    let mut conn = external(&a).await;
    exec(&mut conn, "UPDATE skus SET stock = 0 WHERE sku = 'TWO-1'").await;
    for ws in [&mut on_a, &mut on_b] {
        let seen = read_until_all(
            ws,
            &[&is_change_of("TWO-1"), &is_alert("TWO-1", "low_stock")],
        )
        .await;
        let changes = seen
            .iter()
            .filter(|m| m["type"] == "sku" && m["sku"]["sku"] == "TWO-1")
            .count();
        assert_eq!(changes, 1, "{seen:?}");
    }
    // Nothing more for TWO-1 follows on either socket.
    a.adjust("READY-A", -1).await;
    for ws in [&mut on_a, &mut on_b] {
        let rest = read_until(ws, |m| {
            m["type"] == "sku" && m["sku"]["sku"] == "READY-A" && m["sku"]["version"] == 2
        })
        .await;
        assert!(rest
            .iter()
            .all(|m| m["sku"]["sku"] != "TWO-1" && m["alert"]["sku"] != "TWO-1"));
    }
    let all = a.get_json("/api/v1/alerts?sku=TWO-1").await;
    assert_eq!(all["alerts"].as_array().map(Vec::len), Some(2), "{all}");
}

/// An operator's `BEGIN; UPDATE skus ...` left open in psql holds that
/// row, and nothing else: the event clock is taken at its COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_open_external_transaction_does_not_block_api_writes() {
    // A write held up by a lock would be refused after this (503), not
    // left waiting: the test fails rather than hangs.
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.db_lock_timeout_ms = 2_000).await;
    app.create_sku("IDLE-1", "GBP", "1.00", 10).await;
    app.create_sku("BUSY-1", "GBP", "1.00", 10).await;
    let mut ws = watch_all(&app, "WS-READY").await;
    let mut conn = external(&app).await;
    exec(&mut conn, "BEGIN").await;
    exec(&mut conn, "UPDATE skus SET stock = 3 WHERE sku = 'IDLE-1'").await;
    for _ in 0..5 {
        let (status, body) = app.adjust("BUSY-1", 1).await;
        assert_eq!(status, 200, "{body}");
    }
    exec(&mut conn, "COMMIT").await;
    let seen = read_until(&mut ws, |m| {
        m["type"] == "sku" && m["sku"]["sku"] == "IDLE-1"
    })
    .await;
    let ids: Vec<i64> = seen
        .iter()
        .filter(|m| m["type"] == "sku")
        .map(|m| m["event_id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "{ids:?}");
    assert_eq!(seen.last().unwrap()["sku"]["stock"], 3);
}

/// The `currencies` table the database checks external writes against is
/// the server's own list (the `iso_currency` crate's codes with a minor
/// unit), code for code and exponent for exponent.
#[tokio::test]
async fn the_databases_currencies_are_the_servers() {
    let mut known = BTreeMap::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            for c in b'A'..=b'Z' {
                let code = String::from_utf8(vec![a, b, c]).unwrap();
                if let Ok(currency) = skuwatch_actors::domain::Currency::parse(&code) {
                    let exponent = currency.exponent();
                    known.insert(code, (i64::from(exponent), 10_i64.pow(exponent)));
                }
            }
        }
    }
    // The list is written out in each backend's migration.
    for backend in [Backend::Postgres, Backend::Sqlite] {
        let db = crate::helpers::TestDb::new(backend).await;
        skuwatch::store::migrate(&db.url).await.expect("migrate");
        let mut conn = sqlx::AnyConnection::connect(&db.url).await.expect("db");
        let rows: Vec<(String, i64, i64)> =
            sqlx::query_as("SELECT code, CAST(exponent AS BIGINT), factor FROM currencies")
                .fetch_all(&mut conn)
                .await
                .expect("currencies");
        let stored: BTreeMap<String, (i64, i64)> =
            rows.into_iter().map(|(c, e, f)| (c, (e, f))).collect();
        assert_eq!(stored, known, "{backend:?}");
    }
}

/// Migrations are a step of their own on PostgreSQL (`skuwatch migrate`):
/// a server refuses to start while they are pending, and, in a rolling
/// upgrade, an old server refuses a schema newer than it knows (it would
/// write changes the new triggers take for external ones).
#[tokio::test]
async fn a_server_refuses_a_pending_or_a_newer_schema() {
    let db = crate::helpers::TestDb::new(Backend::Postgres).await;
    let without_migrating = skuwatch::store::PoolSettings {
        migrate_on_start: false,
        ..Default::default()
    };
    let pending = skuwatch::store::connect_with(&db.url, without_migrating)
        .await
        .err()
        .expect("refused while migrations are pending")
        .to_string();
    assert!(pending.contains("skuwatch migrate"), "{pending}");

    let version = skuwatch::store::migrate(&db.url).await.expect("migrate");
    assert!(version >= 7);
    skuwatch::store::connect_with(&db.url, without_migrating)
        .await
        .expect("starts once migrated");

    let mut conn = sqlx::AnyConnection::connect(&db.url).await.expect("db");
    exec(
        &mut conn,
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         SELECT 99999, 'from a newer build', true, checksum, 0 FROM _sqlx_migrations LIMIT 1",
    )
    .await;
    for attempt in [
        skuwatch::store::connect_with(&db.url, without_migrating)
            .await
            .err(),
        skuwatch::store::migrate(&db.url).await.err(),
    ] {
        let refused = attempt.expect("a newer schema is refused").to_string();
        assert!(refused.contains("newer than this build"), "{refused}");
    }
}

/// The same open transaction, while the API also writes the row it holds,
/// in one group transaction with rows of other SKUs (a CSV import chunk is
/// one call of the group commit): the other rows land at once; only the
/// held row's write waits for the operator's COMMIT.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_to_a_row_held_in_psql_waits_alone() {
    // Long enough that a group waiting on the lock would not give up
    // before the check below fails it.
    let app = TestApp::spawn_with(Backend::Postgres, |s| s.db_lock_timeout_ms = 60_000).await;
    let mut csv = String::from("sku,name,price,currency,stock\n");
    for code in ["FREE-0", "FREE-1", "HELD-1", "FREE-2", "FREE-3"] {
        app.create_sku(code, "GBP", "1.00", 10).await;
        csv.push_str(&format!("{code},Item {code},1.00,GBP,99\n"));
    }
    let mut conn = external(&app).await;
    exec(&mut conn, "BEGIN").await;
    exec(&mut conn, "UPDATE skus SET stock = 3 WHERE sku = 'HELD-1'").await;
    let import = {
        let request = app
            .client
            .post(app.url("/api/v1/import"))
            .header("content-type", "text/csv")
            .body(csv);
        tokio::spawn(async move {
            let response = request.send().await.expect("import");
            (
                response.status().as_u16(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    // While HELD-1 stays locked, the rest of the chunk lands.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    for code in ["FREE-0", "FREE-1", "FREE-2", "FREE-3"] {
        loop {
            let (_, sku) = app.get_sku(code).await;
            if sku["stock"] == 99 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{code} waited for the row held in psql: {sku}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    assert_eq!(app.get_sku("HELD-1").await.1["stock"], 10, "still held");
    exec(&mut conn, "COMMIT").await;
    let (status, report) = import.await.expect("task");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["updated"], 5, "{report}");
    // The import's count came after the operator's: it is the stock now.
    assert_eq!(app.get_sku("HELD-1").await.1["stock"], 99);
}
