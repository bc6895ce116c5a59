//! Signed webhooks (issue 19): a real HTTP receiver on a local port that
//! verifies every signature with the specification's algorithm (written
//! out here, not the library the server signs with), and can answer 500,
//! 410 or slowly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{eventually, Backend, TestApp};

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Ok,
    Fail,
    Gone,
    /// Waits this long, then answers 200.
    Slow(Duration),
}

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    timestamp: i64,
    signatures: Vec<String>,
    body: String,
    json: Value,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    /// Answers to give, first to last; `answer` when none is left.
    script: Vec<Answer>,
    answer: Option<Answer>,
}

/// A local webhook receiver.
#[derive(Clone)]
struct Receiver {
    url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, state }
    }

    fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().answer = Some(answer);
    }

    fn script(&self, answers: &[Answer]) {
        self.state.lock().unwrap().script = answers.iter().rev().copied().collect();
    }

    fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Waits until `n` requests came in, and returns them.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        eventually(within, &format!("{n} webhook requests"), || async {
            self.received().len() >= n
        })
        .await;
        self.received()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let body = String::from_utf8(body.to_vec()).expect("a UTF-8 body");
    let received = Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp")
            .parse()
            .expect("a numeric timestamp"),
        signatures: header("webhook-signature")
            .split(' ')
            .map(str::to_owned)
            .collect(),
        json: serde_json::from_str(&body).expect("a JSON body"),
        body,
    };
    let answer = {
        let mut state = state.lock().unwrap();
        state.received.push(received);
        state.script.pop().or(state.answer).unwrap_or(Answer::Ok)
    };
    match answer {
        Answer::Ok => StatusCode::NO_CONTENT,
        Answer::Fail => StatusCode::INTERNAL_SERVER_ERROR,
        Answer::Gone => StatusCode::GONE,
        Answer::Slow(wait) => {
            tokio::time::sleep(wait).await;
            StatusCode::OK
        }
    }
}

/// Standard Webhooks, "Verifying webhooks": the key is the base64 after
/// `whsec_`; the signed content is `id.timestamp.body`; the header lists
/// `v1,<base64 HMAC-SHA256>` signatures, space-separated.
fn signed_by(received: &Received, secret: &str) -> bool {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .expect("base64 secret");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("key");
    mac.update(format!("{}.{}.{}", received.id, received.timestamp, received.body).as_bytes());
    let expected = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
    received.signatures.contains(&expected)
}

/// A server that may send to the local receiver, with quick retries.
async fn server(backend: Backend, tweak: impl FnOnce(&mut skuwatch::Settings)) -> TestApp {
    TestApp::spawn_with(backend, |s| {
        s.webhook_allow_private = true;
        s.webhook_retry_schedule = vec![Duration::from_millis(200); 3];
        s.webhook_poll_ms = 100;
        tweak(s);
    })
    .await
}

async fn create_endpoint(app: &TestApp, body: Value) -> Value {
    let response = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .json(&body)
        .send()
        .await
        .expect("create webhook");
    assert_eq!(response.status(), 201);
    response.json().await.expect("json")
}

/// `POST path` with no body, which must answer 200; the JSON answer.
async fn post_ok(app: &TestApp, path: &str) -> Value {
    let response = app.client.post(app.url(path)).send().await.expect(path);
    assert_eq!(response.status(), 200, "{path}");
    response.json().await.expect("json")
}

/// `PATCH /api/v1/webhooks/{id}` with `enabled`, which must answer 200.
async fn set_enabled(app: &TestApp, id: &str, enabled: bool) {
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/webhooks/{id}")))
        .json(&json!({ "enabled": enabled }))
        .send()
        .await
        .expect("patch webhook");
    assert_eq!(response.status(), 200);
}

async fn deliveries(app: &TestApp, endpoint: &Value) -> Vec<Value> {
    let id = endpoint["id"].as_str().expect("id");
    app.get_json(&format!("/api/v1/webhooks/{id}/deliveries?limit=1000"))
        .await["deliveries"]
        .as_array()
        .expect("deliveries")
        .clone()
}

/// A SKU with stock 10 and a low-stock threshold of 5.
async fn sku(app: &TestApp, code: &str) {
    app.create_sku(code, "GBP", "1.00", 10).await;
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/skus/{code}")))
        .json(&json!({ "low_stock_threshold": 5, "alert_rule": "threshold" }))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status(), 200);
}

/// `n` new SKUs PREFIX0.. with stock 10 and a low-stock threshold of 5.
async fn import_skus(app: &TestApp, prefix: &str, n: usize) {
    let mut csv = String::from("sku,name,price,currency,stock,low_stock_threshold\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i},Item {i},1.00,GBP,10,5\n"));
    }
    app.import(csv).await;
}

/// Sells 6 of each SKU in one batch: a `low_stock` alert each.
async fn sell_down(app: &TestApp, skus: impl Iterator<Item = String>) {
    let lines: Vec<Value> = skus.map(|sku| json!({ "sku": sku, "delta": -6 })).collect();
    let response = app
        .client
        .post(app.url("/api/v1/stock/adjustments"))
        .json(&json!({ "adjustments": lines, "reason": "sale" }))
        .send()
        .await
        .expect("batch");
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

both_backends!(
    raised_acknowledged_resolved_each_delivered_once_signed_and_filtered,
    |backend| async move {
        let app = server(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        let all = create_endpoint(&app, json!({ "url": receiver.url, "description": "ops" })).await;
        let secret = all["secret"]
            .as_str()
            .expect("secret shown once")
            .to_owned();
        assert_eq!(
            all["events"],
            json!(["alert.raised", "alert.acknowledged", "alert.resolved"])
        );
        assert_eq!(all["kinds"], Value::Null);
        // Not shown by any read.
        let id = all["id"].as_str().unwrap();
        let read = app.get_json(&format!("/api/v1/webhooks/{id}")).await;
        assert!(read.get("secret").is_none(), "{read}");
        // One endpoint that only wants out_of_stock of another SKU: sent nothing.
        let other = create_endpoint(
            &app,
            json!({ "url": receiver.url, "kinds": ["out_of_stock"], "skus": ["ELSE"] }),
        )
        .await;

        sku(&app, "W1").await;
        let (status, _) = app.adjust("W1", -7).await;
        assert_eq!(status, 200);
        let raised = receiver.wait_for(1, Duration::from_secs(10)).await;
        let alert_id = raised[0].json["data"]["alert"]["id"]
            .as_i64()
            .expect("alert id");
        assert_eq!(raised[0].json["type"], "alert.raised");
        assert_eq!(raised[0].json["data"]["alert"]["kind"], "low_stock");
        assert_eq!(raised[0].json["data"]["sku"]["sku"], "W1");
        assert_eq!(raised[0].json["data"]["sku"]["stock"], 3);
        post_ok(&app, &format!("/api/v1/alerts/{alert_id}/ack")).await;
        let (status, _) = app.adjust("W1", 10).await;
        assert_eq!(status, 200);
        let got = receiver.wait_for(3, Duration::from_secs(10)).await;
        // Nothing more comes (the filtered endpoint, a duplicate).
        tokio::time::sleep(Duration::from_millis(500)).await;
        let got_all = receiver.received();
        assert_eq!(got_all.len(), 3, "{got_all:?}");
        // Sent concurrently: a receiver orders by the alert's own times
        // and status, not by arrival.
        let mut got = got;
        got.sort_by_key(|r| r.json["timestamp"].as_str().unwrap().to_owned());
        let types: Vec<&str> = got
            .iter()
            .map(|r| r.json["type"].as_str().unwrap())
            .collect();
        assert_eq!(
            types,
            ["alert.raised", "alert.acknowledged", "alert.resolved"]
        );
        let mut ids: Vec<&str> = got.iter().map(|r| r.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 3, "a webhook-id per message");
        for r in &got {
            assert!(r.id.starts_with("msg_"), "{}", r.id);
            assert!(signed_by(r, &secret), "signature of {}", r.id);
            assert!(!signed_by(
                r,
                "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
            ));
            assert_eq!(r.json["data"]["alert"]["id"], alert_id);
        }
        assert_eq!(got[1].json["data"]["alert"]["status"], "acknowledged");
        assert_eq!(got[2].json["data"]["alert"]["status"], "resolved");
        let log = deliveries(&app, &all).await;
        assert_eq!(log.len(), 3);
        assert!(
            log.iter()
                .all(|d| d["status"] == "delivered" && d["attempts"] == 1),
            "{log:?}"
        );
        assert!(deliveries(&app, &other).await.is_empty());

        // Rotation: both signatures for a day; a second rotation within
        // it replaces the older one (two signatures at most).
        let rotate = format!("/api/v1/webhooks/{id}/rotate-secret");
        let rotated = post_ok(&app, &rotate).await;
        let new_secret = rotated["secret"].as_str().expect("new secret").to_owned();
        assert_ne!(new_secret, secret);
        assert!(
            rotated["previous_secret_expires_at"].is_string(),
            "{rotated}"
        );
        let test_send = || async {
            let test = post_ok(&app, &format!("/api/v1/webhooks/{id}/test")).await;
            assert_eq!(test["status"], "delivered", "{test}");
            assert_eq!(test["type"], "webhook.test");
            let last = receiver.received().pop().expect("the test");
            assert_eq!(last.id, test["id"].as_str().unwrap());
            last
        };
        let last = test_send().await;
        assert_eq!(last.signatures.len(), 2, "{:?}", last.signatures);
        assert!(signed_by(&last, &secret) && signed_by(&last, &new_secret));
        let newest = post_ok(&app, &rotate).await["secret"]
            .as_str()
            .expect("newest secret")
            .to_owned();
        let last = test_send().await;
        assert_eq!(last.signatures.len(), 2, "{:?}", last.signatures);
        assert!(signed_by(&last, &new_secret) && signed_by(&last, &newest));
        assert!(!signed_by(&last, &secret));
    }
);

both_backends!(
    sku_changed_is_opt_in_and_follows_the_sku_filter,
    |backend| async move {
        let app = server(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        sku(&app, "C1").await;
        sku(&app, "C2").await;
        create_endpoint(
            &app,
            json!({ "url": receiver.url, "events": ["sku.changed"], "skus": ["C1"] }),
        )
        .await;
        app.adjust("C2", -1).await;
        app.adjust("C1", -1).await;
        app.adjust("C1", -1).await;
        receiver.wait_for(2, Duration::from_secs(10)).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut got = receiver.received();
        assert_eq!(got.len(), 2, "{got:?}");
        got.sort_by_key(|r| r.json["data"]["event"]["event_id"].as_i64());
        for (r, stock) in got.iter().zip([9, 8]) {
            assert_eq!(r.json["type"], "sku.changed");
            assert_eq!(r.json["data"]["event"]["sku"], "C1");
            assert_eq!(r.json["data"]["sku"]["stock"], stock);
        }
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_attempt_is_retried_with_the_same_id_and_410_disables() {
    let app = server(Backend::Postgres, |s| {
        s.webhook_disable_after_secs = 2;
        // Attempts spread over 4 s: the failing streak passes the 2 s.
        s.webhook_retry_schedule = vec![Duration::from_secs(1); 4];
    })
    .await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, json!({ "url": receiver.url })).await;
    receiver.script(&[Answer::Fail, Answer::Fail]);
    sku(&app, "R1").await;
    app.adjust("R1", -6).await;
    let got = receiver.wait_for(3, Duration::from_secs(15)).await;
    assert!(
        got.iter().all(|r| r.id == got[0].id),
        "one webhook-id: {got:?}"
    );
    eventually(
        Duration::from_secs(5),
        "delivered on the third try",
        || async {
            let log = deliveries(&app, &endpoint).await;
            log[0]["status"] == "delivered" && log[0]["attempts"] == 3
        },
    )
    .await;

    // 410 Gone: the endpoint is disabled and the delivery fails, no retry.
    receiver.answer(Answer::Gone);
    app.adjust("R1", 10).await; // resolved
    let id = endpoint["id"].as_str().unwrap();
    eventually(Duration::from_secs(10), "disabled as gone", || async {
        app.get_json(&format!("/api/v1/webhooks/{id}")).await["disabled_reason"] == "gone"
    })
    .await;
    let log = deliveries(&app, &endpoint).await;
    assert_eq!(log[0]["status"], "failed", "{log:?}");
    assert_eq!(log[0]["last_status_code"], 410);
    assert_eq!(log[0]["attempts"], 1);
    // Nothing more is sent to it, or written for it.
    let count = receiver.received().len();
    app.adjust("R1", -10).await; // raised again
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        receiver.received().len(),
        count,
        "nothing sent to a gone endpoint"
    );
    assert_eq!(deliveries(&app, &endpoint).await.len(), 2);

    // Enabled again; failing for longer than the setting disables it.
    receiver.answer(Answer::Fail);
    set_enabled(&app, id, true).await;
    app.adjust("R1", 10).await; // resolved: a message that keeps failing
    eventually(Duration::from_secs(15), "disabled as failing", || async {
        app.get_json(&format!("/api/v1/webhooks/{id}")).await["disabled_reason"] == "failing"
    })
    .await;
}

/// Killed mid-delivery (SIGKILL, a process of its own): after the restart,
/// once the dead worker's claim has lapsed, the delivery is attempted again
/// under the same id and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_delivery_delivers_after_restart() {
    let mut app = server(Backend::Postgres, |_| {}).await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, json!({ "url": receiver.url })).await;
    sku(&app, "K1").await;
    // Only the binary below runs a worker now.
    if let Some(running) = app.app.take() {
        running.shutdown(Duration::from_secs(5)).await;
    }
    receiver.answer(Answer::Slow(Duration::from_secs(30)));
    let env = [
        ("SKUWATCH_WEBHOOK_ALLOW_PRIVATE", "true"),
        // A 1 s attempt: its claim lapses 7 s after it started.
        ("SKUWATCH_WEBHOOK_TIMEOUT_MS", "1000"),
        ("SKUWATCH_WEBHOOK_POLL_MS", "100"),
    ];
    let mut doomed = crate::observability::Binary::spawn(&app.db.url, &env).await;
    let token = crate::helpers::login(&doomed.base, "admin", crate::helpers::ADMIN_PASSWORD).await;
    let response = crate::helpers::client_with(&token)
        .post(format!("{}/api/v1/skus/K1/stock/adjustments", doomed.base))
        .json(&json!({ "delta": -6, "reason": "sale" }))
        .send()
        .await
        .expect("adjust");
    assert_eq!(response.status(), 200);
    // The receiver has the request, the server waits for the answer: kill.
    let first = receiver.wait_for(1, Duration::from_secs(10)).await;
    doomed.kill().await;
    receiver.answer(Answer::Ok);
    let app = app
        .restart(|s| {
            s.webhook_allow_private = true;
            s.webhook_poll_ms = 100;
            s.webhook_timeout_ms = 1000;
        })
        .await;
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert_eq!(
        got[1].id, first[0].id,
        "the same webhook-id after the restart"
    );
    eventually(
        Duration::from_secs(5),
        "delivered on the second attempt",
        || async {
            let log = deliveries(&app, &endpoint).await;
            log.len() == 1 && log[0]["status"] == "delivered" && log[0]["attempts"] == 2
        },
    )
    .await;
}

/// Two instances on one database work the same outbox: a burst of alerts
/// is delivered with every id exactly once (no rate cap).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_deliver_a_burst_once_each() {
    let uncapped = |s: &mut skuwatch::Settings| {
        s.webhook_allow_private = true;
        s.webhook_rate_cap = 0;
        s.webhook_poll_ms = 100;
    };
    let first = server(Backend::Postgres, uncapped).await;
    let second = first.another(uncapped).await;
    let receiver = Receiver::start().await;
    create_endpoint(&first, json!({ "url": receiver.url })).await;
    let n = 300;
    import_skus(&first, "B", n).await;
    // Both instances write: half the SKUs through each.
    sell_down(&first, (0..n).step_by(2).map(|i| format!("B{i}"))).await;
    sell_down(&second, (1..n).step_by(2).map(|i| format!("B{i}"))).await;
    receiver.wait_for(n, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = receiver.received();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        *per_id.entry(r.id.clone()).or_default() += 1;
    }
    assert_eq!(per_id.len(), n, "one message per alert");
    assert!(
        per_id.values().all(|&k| k == 1),
        "every id once: {per_id:?}"
    );
    let mut skus: Vec<&str> = got
        .iter()
        .map(|r| r.json["data"]["sku"]["sku"].as_str().unwrap())
        .collect();
    skus.sort();
    skus.dedup();
    assert_eq!(skus.len(), n);
}

both_backends!(
    past_the_rate_cap_every_alert_is_in_exactly_one_message_or_digest,
    |backend| async move {
        let app = server(backend, |s| s.webhook_rate_cap = 5).await;
        let receiver = Receiver::start().await;
        let endpoint =
            create_endpoint(&app, json!({ "url": receiver.url, "format": "standard" })).await;
        let n = 120;
        import_skus(&app, "D", n).await;
        sell_down(&app, (0..n).map(|i| format!("D{i}"))).await;
        // Alert id -> how many messages or digests carried it.
        let count = |received: Vec<Received>| {
            let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
            for r in received {
                match r.json["type"].as_str().unwrap() {
                    "alert.digest" => {
                        let messages = r.json["data"]["messages"].as_array().unwrap();
                        assert_eq!(r.json["data"]["count"], messages.len());
                        for m in messages {
                            *seen.entry(m["alert"]["id"].as_i64().unwrap()).or_default() += 1;
                        }
                    }
                    _ => {
                        *seen
                            .entry(r.json["data"]["alert"]["id"].as_i64().unwrap())
                            .or_default() += 1
                    }
                }
            }
            seen
        };
        eventually(Duration::from_secs(20), "every alert sent", || async {
            count(receiver.received()).len() == n
        })
        .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = count(receiver.received());
        assert!(seen.values().all(|&k| k == 1), "each alert once: {seen:?}");
        let got = receiver.received();
        assert!(
            got.len() <= 5 + 1,
            "at most the cap and one digest: {}",
            got.len()
        );
        assert!(got.iter().any(|r| r.json["type"] == "alert.digest"));
        let log = deliveries(&app, &endpoint).await;
        let digested = log.iter().filter(|d| d["status"] == "digested").count();
        assert!(
            digested > 0 && log.iter().all(|d| d["status"] != "pending"),
            "{log:?}"
        );
        assert!(log
            .iter()
            .filter(|d| d["status"] == "digested")
            .all(|d| d["digest_id"]
                .as_str()
                .is_some_and(|id| id.starts_with("msg_"))));
    }
);

/// Endpoints must be public https addresses unless the server allows
/// private ones; only admins manage them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unsafe_urls_and_bad_fields_are_refused() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    for url in [
        "http://example.com/hook",
        "https://127.0.0.1/hook",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://10.1.2.3/hook",
        "https://169.254.169.254/latest",
        "https://100.64.0.1/",
        "https://[fd00::1]/",
        "https://localhost:8443/hook",
        "https://user:pw@example.com/",
        "ftp://example.com/",
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/webhooks"))
            .json(&json!({ "url": url }))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 422, "{url}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], "url", "{url}: {problem}");
    }
    for (body, field) in [
        (
            json!({ "url": "https://example.com/", "events": [] }),
            "events",
        ),
        (
            json!({ "url": "https://example.com/", "events": ["alert.exploded"] }),
            "events",
        ),
        (
            json!({ "url": "https://example.com/", "kinds": [] }),
            "kinds",
        ),
        (
            json!({ "url": "https://example.com/", "kinds": ["cheap"] }),
            "kinds",
        ),
        (json!({ "url": "https://example.com/", "skus": [] }), "skus"),
        (
            json!({ "url": "https://example.com/", "format": "teams" }),
            "format",
        ),
    ] {
        let response = app
            .client
            .post(app.url("/api/v1/webhooks"))
            .json(&body)
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 422, "{body}");
        let problem: Value = response.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], field, "{body}: {problem}");
    }
    // A public https endpoint is accepted, and deleted.
    let created = create_endpoint(&app, json!({ "url": "https://hooks.example.com/x" })).await;
    let id = created["id"].as_str().unwrap();
    let missing = app
        .client
        .get(app.url("/api/v1/webhooks/0123456789abcdef0123456789abcdef"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 204);
    assert_eq!(
        app.get_json("/api/v1/webhooks").await["webhooks"],
        json!([])
    );
}

/// An endpoint disabled while one of its messages is being sent: the
/// attempt that delivered it is recorded as delivered, not left cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delivery_in_flight_when_its_endpoint_is_disabled_is_recorded() {
    let app = server(Backend::Postgres, |_| {}).await;
    let receiver = Receiver::start().await;
    let endpoint = create_endpoint(&app, json!({ "url": receiver.url })).await;
    let id = endpoint["id"].as_str().unwrap();
    receiver.answer(Answer::Slow(Duration::from_secs(2)));
    sku(&app, "F1").await;
    app.adjust("F1", -6).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    set_enabled(&app, id, false).await;
    eventually(Duration::from_secs(10), "the attempt recorded", || async {
        let log = deliveries(&app, &endpoint).await;
        log[0]["status"] == "delivered" && log[0]["last_status_code"] == 200
    })
    .await;
}

both_backends!(
    an_alert_of_a_change_written_straight_into_the_database_is_delivered,
    |backend| async move {
        let app = server(backend, |_| {}).await;
        let receiver = Receiver::start().await;
        create_endpoint(&app, json!({ "url": receiver.url })).await;
        sku(&app, "X1").await;
        let mut conn = crate::external::external(&app).await;
        crate::external::exec(&mut conn, "UPDATE skus SET stock = 2 WHERE sku = 'X1'").await;
        let got = receiver.wait_for(1, Duration::from_secs(15)).await;
        assert_eq!(got[0].json["type"], "alert.raised");
        assert_eq!(got[0].json["data"]["alert"]["kind"], "low_stock");
        assert_eq!(got[0].json["data"]["sku"]["stock"], 2);
    }
);
