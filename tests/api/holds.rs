//! Holds (issue 17): checkout reservations that never oversell, expire
//! exactly once on the database's clock, survive restarts and instance
//! deaths, and retry idempotently.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::both_backends;
use crate::helpers::{client_with, eventually, login, TestApp, Ws};

/// `POST /api/v1/holds`: (status, body, `Idempotent-Replayed`).
async fn hold_with(
    client: &reqwest::Client,
    app: &TestApp,
    body: Value,
    key: Option<&str>,
) -> (u16, Value, bool) {
    let mut request = client.post(app.url("/api/v1/holds")).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("hold");
    let status = response.status().as_u16();
    let replayed = response.headers().contains_key("idempotent-replayed");
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        replayed,
    )
}

async fn hold(app: &TestApp, lines: Value, ttl_secs: i64) -> (u16, Value) {
    let (status, body, _) = hold_with(
        &app.client,
        app,
        json!({ "lines": lines, "ttl_secs": ttl_secs, "reference": "cart" }),
        None,
    )
    .await;
    (status, body)
}

/// `POST /api/v1/holds/{id}/{action}`: (status, body).
async fn act(app: &TestApp, id: &str, action: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/holds/{id}/{action}")));
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.expect("hold action");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// (stock, reserved, available) as the API answers them.
async fn quantities(app: &TestApp, sku: &str) -> (i64, i64, i64) {
    let (status, body) = app.get_sku(sku).await;
    assert_eq!(status, 200, "{body}");
    let n = |k: &str| body[k].as_i64().unwrap_or_else(|| panic!("{k} in {body}"));
    (n("stock"), n("reserved"), n("available"))
}

/// The SKU's `reserved` column and the sum of its active holds' lines,
/// read straight from the database: the two must always agree.
async fn reserved_in_db(app: &TestApp, sku: &str) -> (i64, i64) {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
    let column: (i64,) = sqlx::query_as("SELECT reserved FROM skus WHERE sku = $1")
        .bind(sku)
        .fetch_one(&mut conn)
        .await
        .expect("reserved");
    let held: (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(l.quantity), 0) AS BIGINT) FROM hold_lines l \
         JOIN holds h ON h.id = l.hold_id WHERE h.status = 'active' AND l.sku = $1",
    )
    .bind(sku)
    .fetch_one(&mut conn)
    .await
    .expect("held");
    (column.0, held.0)
}

/// The feed's events of `field` for `sku` with their reasons, in order.
async fn reasons(app: &TestApp, sku: &str, field: &str) -> Vec<String> {
    app.all_events()
        .await
        .into_iter()
        .filter(|e| e["sku"] == sku && e["field"] == field)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Reads `ws` (subscribed to `sku`) up to the SKU's last event and checks
/// that no pushed state shows `available` below 0; returns how many
/// changes were read.
async fn assert_available_never_negative(app: &TestApp, ws: &mut Ws, sku: &str) -> usize {
    let last = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["sku"] == sku)
        .filter_map(|e| e["event_id"].as_i64())
        .max()
        .unwrap_or_else(|| panic!("{sku} changed"));
    let pushed = ws.changes_until(last).await;
    for message in &pushed {
        let available = message["sku"]["available"].as_i64().expect("available");
        assert!(available >= 0, "{message}");
    }
    pushed.len()
}

both_backends!(
    a_hold_reserves_is_pushed_and_commits_as_a_sale,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("MUG-01", "GBP", "9.99", 5).await;
        app.create_sku("CUP-02", "GBP", "4.50", 3).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["MUG-01"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");

        let (status, held) = hold(
            &app,
            json!([{ "sku": "MUG-01", "quantity": 2 }, { "sku": "CUP-02", "quantity": 1 }]),
            600,
        )
        .await;
        assert_eq!(status, 201, "{held}");
        assert_eq!(held["status"], "active");
        assert_eq!(held["reference"], "cart");
        assert_eq!(held["event_ids"].as_array().map(Vec::len), Some(2));
        let id = held["id"].as_str().expect("id").to_owned();
        assert_eq!(quantities(&app, "MUG-01").await, (5, 2, 3));
        assert_eq!(quantities(&app, "CUP-02").await, (3, 1, 2));

        // Pushed like any change: field `reserved`, reason `hold`.
        let pushed = ws.next_json().await;
        assert_eq!(pushed["type"], "sku", "{pushed}");
        assert_eq!(pushed["change"]["field"], "reserved");
        assert_eq!(pushed["change"]["reason"], "hold");
        assert_eq!(pushed["change"]["delta"], 2);
        assert_eq!(pushed["sku"]["available"], 3);

        // A sale may not take held units; a physical count may.
        let (status, refused) = app.adjust("MUG-01", -4).await;
        assert_eq!(status, 409, "{refused}");
        assert_eq!(refused["type"], "insufficient_stock");
        let (status, _) = app.adjust("MUG-01", -3).await;
        assert_eq!(status, 200);
        assert_eq!(quantities(&app, "MUG-01").await, (2, 2, 0));
        let (status, short) = hold(&app, json!([{ "sku": "MUG-01", "quantity": 1 }]), 60).await;
        assert_eq!(status, 409, "{short}");
        assert_eq!(short["type"], "insufficient_available");
        assert_eq!(short["errors"][0]["field"], "lines[0].quantity");

        // All available units held: out of stock to the shop.
        let alerts = app.get_json("/api/v1/alerts?status=open&sku=MUG-01").await;
        assert!(
            alerts["alerts"]
                .as_array()
                .expect("alerts")
                .iter()
                .any(|a| a["kind"] == "out_of_stock"),
            "{alerts}"
        );

        // Commit: the held units become sale adjustments in one go.
        let (status, committed) = act(&app, &id, "commit", None).await;
        assert_eq!(status, 200, "{committed}");
        assert_eq!(committed["status"], "committed");
        let event_ids = committed["event_ids"].as_array().expect("ids").clone();
        assert_eq!(event_ids.len(), 4, "a release and a sale per line");
        // Every state pushed, also the one between the release and the
        // sale, keeps `available` at 0 or above (2 in stock, 2 held).
        assert_available_never_negative(&app, &mut ws, "MUG-01").await;
        assert_eq!(quantities(&app, "MUG-01").await, (0, 0, 0));
        assert_eq!(quantities(&app, "CUP-02").await, (2, 0, 2));
        assert_eq!(
            reasons(&app, "MUG-01", "stock").await,
            vec!["test", "sale"],
            "the created SKU's meta event aside, the count and the sale"
        );
        assert_eq!(
            reasons(&app, "MUG-01", "reserved").await,
            vec!["hold", "hold_committed"]
        );
        // No other call on a committed hold; the answer names the sale.
        for action in ["commit", "release"] {
            let (status, again) = act(&app, &id, action, None).await;
            assert_eq!(status, 409, "{again}");
            assert_eq!(again["type"], "hold_not_active");
            assert_eq!(again["hold_status"], "committed");
            assert_eq!(
                again["status"], 409,
                "the problem's own status stays the code"
            );
            assert_eq!(again["event_ids"].as_array(), Some(&event_ids));
        }
        assert_eq!(reserved_in_db(&app, "MUG-01").await, (0, 0));

        // Lists, filtered by SKU and status.
        let page = app
            .get_json("/api/v1/holds?sku=CUP-02&status=committed")
            .await;
        assert_eq!(page["items"][0]["id"], id.as_str(), "{page}");
        let none = app.get_json("/api/v1/holds?status=active").await;
        assert_eq!(none["items"], json!([]));
    }
);

both_backends!(
    holds_refuse_bad_input_and_roles_limit_who_holds,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("A", "GBP", "1.00", 5).await;
        for (body, field) in [
            (json!({ "lines": [] }), "lines"),
            (
                json!({ "lines": [{ "sku": "A", "quantity": 0 }] }),
                "lines[0].quantity",
            ),
            (
                json!({ "lines": [{ "sku": "A", "quantity": 1 }, { "sku": "A", "quantity": 1 }] }),
                "lines[1].sku",
            ),
            (
                json!({ "lines": [{ "sku": "A", "quantity": 1 }], "ttl_secs": 0 }),
                "ttl_secs",
            ),
            (
                json!({ "lines": [{ "sku": "A", "quantity": 1 }], "ttl_secs": 86401 }),
                "ttl_secs",
            ),
            (
                json!({ "lines": [{ "sku": "a b", "quantity": 1 }] }),
                "lines[0].sku",
            ),
        ] {
            let (status, problem, _) = hold_with(&app.client, &app, body.clone(), None).await;
            assert_eq!(status, 422, "{body}: {problem}");
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
        let (status, missing) = hold(&app, json!([{ "sku": "NOPE", "quantity": 1 }]), 60).await;
        assert_eq!(status, 404, "{missing}");
        let (status, _) = act(&app, "not-a-uuid", "release", None).await;
        assert_eq!(status, 404);
        let unknown = uuid_like();
        let (status, _) = act(&app, &unknown, "commit", None).await;
        assert_eq!(status, 404);

        // checkout: holds only; viewer: reads holds, holds nothing.
        for (user, role) in [("till", "checkout"), ("watcher", "viewer")] {
            let created = app
                .client
                .post(app.url("/api/v1/users"))
                .json(&json!({ "username": user, "password": "a long password", "role": role }))
                .send()
                .await
                .expect("user");
            assert_eq!(created.status(), 201);
        }
        let till = client_with(&login(&app.base, "till", "a long password").await);
        let watcher = client_with(&login(&app.base, "watcher", "a long password").await);
        let body = json!({ "lines": [{ "sku": "A", "quantity": 1 }] });
        let (status, held, _) = hold_with(&till, &app, body.clone(), None).await;
        assert_eq!(status, 201, "{held}");
        assert_eq!(held["actor"], "till");
        let (status, _, _) = hold_with(&watcher, &app, body, None).await;
        assert_eq!(status, 403);
        let status = |r: reqwest::Response| r.status().as_u16();
        let path = format!("/api/v1/holds/{}", held["id"].as_str().expect("id"));
        assert_eq!(
            status(watcher.get(app.url(&path)).send().await.unwrap()),
            200
        );
        assert_eq!(
            status(till.get(app.url("/api/v1/skus/A")).send().await.unwrap()),
            403
        );
        assert_eq!(
            status(till.get(app.url("/api/v1/events")).send().await.unwrap()),
            403
        );
        let release = till
            .post(app.url(&format!("{path}/release")))
            .send()
            .await
            .unwrap();
        assert_eq!(status(release), 200);
        assert_eq!(quantities(&app, "A").await, (5, 0, 5));
    }
);

fn uuid_like() -> String {
    "0190f0f0-0000-7000-8000-000000000000".to_owned()
}

both_backends!(
    concurrent_holds_on_the_last_unit_one_wins_and_nothing_oversells,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("LAST", "GBP", "1.00", 1).await;
        app.create_sku("FEW", "GBP", "1.00", 10).await;
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let client = app.client.clone();
            let url = app.url("/api/v1/holds");
            tasks.push(tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({ "lines": [{ "sku": "LAST", "quantity": 1 }] }))
                    .send()
                    .await
                    .expect("hold")
                    .status()
                    .as_u16()
            }));
        }
        let mut statuses = BTreeMap::new();
        for task in tasks {
            *statuses.entry(task.await.expect("task")).or_insert(0) += 1;
        }
        assert_eq!(statuses, BTreeMap::from([(201, 1), (409, 15)]));
        assert_eq!(quantities(&app, "LAST").await, (1, 1, 0));

        // Holds, sales and commits racing on FEW: available never below 0
        // (in every state pushed, including those between a commit's
        // release and its sale), and the final stock is the initial less
        // what was sold.
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["FEW"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");
        let mut tasks = Vec::new();
        for i in 0..24 {
            let client = app.client.clone();
            let base = app.base.clone();
            tasks.push(tokio::spawn(async move {
                if i % 3 == 0 {
                    let r = client
                        .post(format!("{base}/api/v1/skus/FEW/stock/adjustments"))
                        .json(&json!({ "delta": -1, "reason": "sale" }))
                        .send()
                        .await
                        .expect("sale");
                    return i64::from(r.status() == 200);
                }
                let r = client
                    .post(format!("{base}/api/v1/holds"))
                    .json(&json!({ "lines": [{ "sku": "FEW", "quantity": 1 }] }))
                    .send()
                    .await
                    .expect("hold");
                if r.status() != 201 {
                    return 0;
                }
                let held: Value = r.json().await.expect("json");
                let id = held["id"].as_str().expect("id");
                let action = if i % 2 == 0 { "commit" } else { "release" };
                let r = client
                    .post(format!("{base}/api/v1/holds/{id}/{action}"))
                    .send()
                    .await
                    .expect("action");
                assert_eq!(r.status(), 200);
                i64::from(action == "commit")
            }));
        }
        let mut sold = 0;
        for task in tasks {
            sold += task.await.expect("task");
        }
        let (stock, reserved, available) = quantities(&app, "FEW").await;
        assert_eq!((stock, reserved), (10 - sold, 0));
        assert!(available >= 0);
        for event in app.all_events().await {
            if event["sku"] == "FEW" && event["field"] == "reserved" {
                let reserved = event["new"].as_i64().expect("new");
                assert!(reserved >= 0, "{event}");
            }
        }
        assert_eq!(reserved_in_db(&app, "FEW").await, (0, 0));
        assert_eq!(reserved_in_db(&app, "LAST").await, (1, 1));
        let pushed = assert_available_never_negative(&app, &mut ws, "FEW").await;
        assert!(pushed >= 8, "{pushed} changes pushed");
    }
);

both_backends!(
    retries_with_the_same_key_replay_create_and_commit,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("K", "GBP", "1.00", 10).await;
        let body = json!({ "lines": [{ "sku": "K", "quantity": 3 }], "ttl_secs": 600 });
        let (status, first, replayed) =
            hold_with(&app.client, &app, body.clone(), Some("cart-1")).await;
        assert_eq!((status, replayed), (201, false), "{first}");
        let (status, again, replayed) =
            hold_with(&app.client, &app, body.clone(), Some("cart-1")).await;
        assert_eq!((status, replayed), (201, true));
        assert_eq!(again, first, "the same hold, not a second one");
        assert_eq!(quantities(&app, "K").await, (10, 3, 7));
        let other = json!({ "lines": [{ "sku": "K", "quantity": 4 }] });
        let (status, mismatch, _) = hold_with(&app.client, &app, other, Some("cart-1")).await;
        assert_eq!(status, 422, "{mismatch}");
        assert_eq!(mismatch["type"], "idempotency_mismatch");

        let id = first["id"].as_str().expect("id");
        let (status, committed) = act(&app, id, "commit", Some("pay-1")).await;
        assert_eq!(status, 200, "{committed}");
        let (status, retried) = act(&app, id, "commit", Some("pay-1")).await;
        assert_eq!(status, 200, "a retry replays the first answer: {retried}");
        assert_eq!(retried, committed);
        assert_eq!(quantities(&app, "K").await, (7, 0, 7), "sold once");
        let (status, late) = act(&app, id, "commit", Some("pay-2")).await;
        assert_eq!(status, 409, "{late}");
        assert_eq!(late["event_ids"], committed["event_ids"]);
    }
);

both_backends!(
    expiry_releases_once_and_a_commit_racing_it_has_one_winner,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("EXP", "GBP", "1.00", 100).await;
        // Commits sent around the moment each hold expires.
        let mut holds = Vec::new();
        for _ in 0..12 {
            let (status, held) = hold(&app, json!([{ "sku": "EXP", "quantity": 2 }]), 1).await;
            assert_eq!(status, 201, "{held}");
            holds.push(held["id"].as_str().expect("id").to_owned());
        }
        let mut tasks = Vec::new();
        for (i, id) in holds.iter().enumerate() {
            let client = app.client.clone();
            let url = app.url(&format!("/api/v1/holds/{id}/commit"));
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(850 + 25 * i as u64)).await;
                let r = client.post(url).send().await.expect("commit");
                let status = r.status().as_u16();
                (status, r.json::<Value>().await.expect("json"))
            }));
        }
        let mut committed = 0;
        for task in tasks {
            let (status, body) = task.await.expect("task");
            match status {
                200 => committed += 1,
                409 => assert_eq!(body["hold_status"], "expired", "{body}"),
                other => panic!("{other}: {body}"),
            }
        }
        eventually(Duration::from_secs(10), "every hold ended", || async {
            quantities(&app, "EXP").await.1 == 0
        })
        .await;
        let reasons = reasons(&app, "EXP", "reserved").await;
        let expired = reasons.iter().filter(|r| *r == "hold_expired").count();
        let done = reasons.iter().filter(|r| *r == "hold_committed").count();
        assert_eq!((done, expired), (committed, 12 - committed), "{reasons:?}");
        assert_eq!(quantities(&app, "EXP").await.0, 100 - 2 * committed as i64);
        for id in &holds {
            let hold = app.get_json(&format!("/api/v1/holds/{id}")).await;
            let status = hold["status"].as_str().expect("status");
            assert!(status == "committed" || status == "expired", "{hold}");
        }
        let page = app.metrics_page().await;
        assert!(
            crate::helpers::metric(&page, "skuwatch_hold_expiry_lag_seconds_count")
                .is_some_and(|n| n >= 1.0)
                || committed == 12,
            "expiries are measured"
        );
    }
);

both_backends!(
    holds_outlive_their_instance_and_expire_once_with_two_running,
    |backend| async move {
        let first = TestApp::spawn(backend).await;
        first.create_sku("TWO", "GBP", "1.00", 50).await;
        let second = first.another(|_| {}).await;
        // Both instances sweep: every hold expires exactly once.
        let mut ids = Vec::new();
        for _ in 0..10 {
            let (status, held) = hold(&first, json!([{ "sku": "TWO", "quantity": 1 }]), 1).await;
            assert_eq!(status, 201, "{held}");
            ids.push(held["id"].as_str().expect("id").to_owned());
        }
        // One that lives on: it survives a restart of its instance.
        let (_, kept) = hold(&first, json!([{ "sku": "TWO", "quantity": 5 }]), 600).await;
        eventually(
            Duration::from_secs(10),
            "the short holds expired",
            || async { quantities(&second, "TWO").await.1 == 5 },
        )
        .await;
        let expired = reasons(&second, "TWO", "reserved")
            .await
            .into_iter()
            .filter(|r| r == "hold_expired")
            .count();
        assert_eq!(expired, 10, "each hold expired once");

        // The creating instance is killed (SIGKILL, a process of its
        // own); its hold expires all the same.
        let mut doomed = crate::observability::Binary::spawn(&first.db.url, &[]).await;
        let token = login(&doomed.base, "admin", crate::helpers::ADMIN_PASSWORD).await;
        let doomed_client = client_with(&token);
        let orphan: Value = doomed_client
            .post(format!("{}/api/v1/holds", doomed.base))
            .json(&json!({ "lines": [{ "sku": "TWO", "quantity": 3 }], "ttl_secs": 1 }))
            .send()
            .await
            .expect("hold on the doomed instance")
            .json()
            .await
            .expect("json");
        assert_eq!(orphan["status"], "active", "{orphan}");
        doomed.kill().await;
        // And the first instance restarts: its long hold survives.
        let first = first.restart(|_| {}).await;
        drop(first);
        eventually(Duration::from_secs(10), "the orphan expired", || async {
            second
                .get_json(&format!("/api/v1/holds/{}", orphan["id"].as_str().unwrap()))
                .await["status"]
                == "expired"
        })
        .await;
        let expired = reasons(&second, "TWO", "reserved")
            .await
            .into_iter()
            .filter(|r| r == "hold_expired")
            .count();
        assert_eq!(expired, 11, "the orphan expired once too");
        // The long hold survived the restart and still commits.
        let kept_id = kept["id"].as_str().expect("id");
        let now = second.get_json(&format!("/api/v1/holds/{kept_id}")).await;
        assert_eq!(now["status"], "active", "{now}");
        let (status, body) = act(&second, kept_id, "commit", None).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(quantities(&second, "TWO").await, (45, 0, 45));
        assert_eq!(reserved_in_db(&second, "TWO").await, (0, 0));
    }
);

both_backends!(
    a_count_below_what_is_held_shows_negative_available_and_only_holds_touch_reserved,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("CNT", "GBP", "1.00", 20).await;
        let (status, held) = hold(&app, json!([{ "sku": "CNT", "quantity": 5 }]), 600).await;
        assert_eq!(status, 201, "{held}");
        let set = app
            .client
            .put(app.url("/api/v1/skus/CNT/stock"))
            .json(&json!({ "stock": 2, "reason": "cycle_count" }))
            .send()
            .await
            .expect("count");
        assert_eq!(set.status(), 200);
        assert_eq!(quantities(&app, "CNT").await, (2, 5, -3));
        let below = app.get_json("/api/v1/skus?below_threshold=true").await;
        assert_eq!(below["items"][0]["sku"], "CNT", "{below}");
        let summary = app.get_json("/api/v1/summary").await;
        assert_eq!(summary["out_of_stock"], 1, "{summary}");
        // The count left 2 of the 5 held: the sale cannot happen as held.
        let id = held["id"].as_str().expect("id");
        let (status, short) = act(&app, id, "commit", None).await;
        assert_eq!(status, 409, "{short}");
        assert_eq!(short["type"], "insufficient_stock");
        assert_eq!(short["errors"][0]["field"], "lines[0].quantity", "{short}");
        let still = app.get_json(&format!("/api/v1/holds/{id}")).await;
        assert_eq!(still["status"], "active", "the hold stays: {still}");

        // An external writer may count stock, never touch `reserved`.
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.db.url)
            .await
            .expect("external");
        let refused = conn
            .execute("UPDATE skus SET reserved = 0 WHERE sku = 'CNT'")
            .await;
        let message = refused.expect_err("reserved is the holds' own").to_string();
        assert!(message.contains("reserved"), "{message}");
        conn.execute("UPDATE skus SET stock = 30 WHERE sku = 'CNT'")
            .await
            .expect("external count");
        eventually(
            Duration::from_secs(10),
            "the external count shows",
            || async { quantities(&app, "CNT").await == (30, 5, 25) },
        )
        .await;
        let external = app
            .all_events()
            .await
            .into_iter()
            .rfind(|e| e["reason"] == "external")
            .expect("the external event");
        assert_eq!(external["new"], 30);
    }
);

/// An operator's `BEGIN; UPDATE skus ...` left open in psql locks one
/// SKU's row: the holds of the other SKUs still expire on time, and sales
/// of them go through; that SKU's hold expires once the row is free
/// (PostgreSQL: SQLite's one writer lock stops every writer alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_row_locked_in_psql_delays_only_its_own_holds() {
    // Waits held up by the lock fail after 2 s instead of 10 (a 503).
    let app = TestApp::spawn_with(crate::helpers::Backend::Postgres, |s| {
        s.db_lock_timeout_ms = 2_000
    })
    .await;
    for code in ["LK-0", "LK-1", "LK-2"] {
        app.create_sku(code, "GBP", "1.00", 10).await;
    }
    let mut ids = Vec::new();
    for code in ["LK-0", "LK-1", "LK-2"] {
        let (status, held) = hold(&app, json!([{ "sku": code, "quantity": 1 }]), 1).await;
        assert_eq!(status, 201, "{held}");
        ids.push(held["id"].as_str().expect("id").to_owned());
    }
    sqlx::any::install_default_drivers();
    let mut psql = sqlx::AnyConnection::connect(&app.db.url)
        .await
        .expect("external");
    psql.execute("BEGIN").await.expect("begin");
    psql.execute("UPDATE skus SET stock = stock + 1 WHERE sku = 'LK-1'")
        .await
        .expect("lock LK-1");
    let status_of = |i: usize| {
        let path = format!("/api/v1/holds/{}", ids[i]);
        let app = &app;
        async move { app.get_json(&path).await["status"].clone() }
    };
    eventually(Duration::from_secs(2), "LK-0 and LK-2 expired", || async {
        status_of(0).await == "expired" && status_of(2).await == "expired"
    })
    .await;
    assert_eq!(status_of(1).await, "active", "LK-1's row is still locked");
    let (status, body) = app.adjust("LK-0", -1).await;
    assert_eq!(status, 200, "a sale of another SKU goes through: {body}");
    psql.execute("COMMIT").await.expect("commit");
    eventually(Duration::from_secs(5), "LK-1 expired", || async {
        status_of(1).await == "expired"
    })
    .await;
    assert_eq!(quantities(&app, "LK-1").await, (11, 0, 11));
}
