//! Metrics and graceful shutdown, against the real `skuwatch` binary: the
//! metrics recorder is process-wide, so a server of its own process keeps
//! other tests' series out, and shutdown is about signals and exit codes.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{
    client_with, login, Backend, TestDb, ADMIN_PASSWORD, JWT_SECRET, TEST_DEADLINE,
};

/// `skuwatch serve` in a process of its own, on a random port.
pub(crate) struct Binary {
    child: Child,
    pub(crate) base: String,
    addr: String,
}

impl Binary {
    /// `skuwatch migrate`, then `skuwatch serve`: the two steps of a start.
    pub(crate) async fn spawn(database_url: &str, env: &[(&str, &str)]) -> Self {
        let migrated = Command::new(env!("CARGO_BIN_EXE_skuwatch"))
            .arg("migrate")
            .env("DATABASE_URL", database_url)
            .output()
            .await
            .expect("skuwatch migrate");
        assert!(migrated.status.success(), "{migrated:?}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_skuwatch"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            .env("SKUWATCH_BIND", "127.0.0.1:0")
            .env("SKUWATCH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SKUWATCH_JWT_SECRET", JWT_SECRET)
            .env("SKUWATCH_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn skuwatch");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let base = loop {
            let line = lines
                .next_line()
                .await
                .expect("read stdout")
                .expect("skuwatch exited before listening");
            if let Some(url) = line.strip_prefix("skuwatch listening on ") {
                break url.trim().to_owned();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let addr = base.trim_start_matches("http://").to_owned();
        Self { child, base, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A WebSocket session on the binary, authenticated with `token`.
    async fn ws(
        &self,
        token: &str,
    ) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>
    {
        let mut request = format!("ws://{}/ws", self.addr)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
        tokio_tungstenite::connect_async(request)
            .await
            .expect("ws")
            .0
    }

    /// SIGKILL: the process ends at once, nothing of it runs any more.
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

/// The series of a `/metrics` page: name and labels, without values.
fn series(page: &str) -> BTreeSet<String> {
    page.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

async fn scrape(client: &reqwest::Client, server: &Binary) -> String {
    let response = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("scrape");
    assert_eq!(response.status(), 200);
    response.text().await.expect("text")
}

fn catalog_csv(prefix: &str, rows: std::ops::Range<usize>) -> String {
    let mut csv = String::from("sku,name,price,currency,stock\n");
    for i in rows {
        csv.push_str(&format!("{prefix}{i:05},Item {i},1.00,GBP,50\n"));
    }
    csv
}

/// Every request shape the test makes, on the SKUs `prefix00000..`: the
/// warm-up and the big run touch the same routes and statuses.
async fn exercise(client: &reqwest::Client, server: &Binary, prefix: &str, n: usize) {
    // In requests of 1,000 rows: each stays far within the client's
    // timeout on a busy machine.
    for start in (0..n).step_by(1000) {
        let response = client
            .post(server.url("/api/v1/import"))
            .header("content-type", "text/csv")
            .body(catalog_csv(prefix, start..(start + 1000).min(n)))
            .send()
            .await
            .expect("import");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
    }
    let codes: Vec<String> = (0..n).map(|i| format!("{prefix}{i:05}")).collect();
    for chunk in codes.chunks(1000) {
        let lines: Vec<Value> = chunk
            .iter()
            .map(|sku| json!({ "sku": sku, "delta": -45 }))
            .collect();
        let response = client
            .post(server.url("/api/v1/stock/adjustments"))
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
    let first = &codes[0];
    let get = client
        .get(server.url(&format!("/api/v1/skus/{first}")))
        .send()
        .await
        .expect("get");
    assert_eq!(get.status(), 200);
    let missing = client
        .get(server.url("/api/v1/skus/NO-SUCH-SKU"))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let nowhere = client
        .get(server.url(&format!("/api/v1/no/such/route/{prefix}")))
        .send()
        .await
        .expect("get");
    assert_eq!(nowhere.status(), 404);
    let summary = client
        .get(server.url("/api/v1/summary"))
        .send()
        .await
        .expect("summary");
    assert_eq!(summary.status(), 200);
}

/// Issue 7: `/metrics` keeps the same series after 10,000 distinct SKUs
/// changed (no label grows with the catalog).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_series_do_not_grow_with_the_catalog() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let db = TestDb::new(Backend::Sqlite).await;
        let server = Binary::spawn(&db.url, &[("SKUWATCH_METRICS_REFRESH_SECS", "1")]).await;
        let token = login(&server.base, "admin", ADMIN_PASSWORD).await;
        let client = client_with(&token);
        // A watching dashboard, so the push path's series are in play.
        let mut ws = server.ws(&token).await;
        ws.send(Message::Text(
            json!({"type": "subscribe", "all": true, "alerts": true})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe");
        let reader = tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} });

        exercise(&client, &server, "WARM", 5).await;
        scrape(&client, &server).await;
        let before = series(&scrape(&client, &server).await);
        assert!(
            before
                .iter()
                .any(|s| s.starts_with("skuwatch_http_requests_total{")),
            "no HTTP series in {before:?}"
        );

        exercise(&client, &server, "BIG", 10_000).await;
        let page = scrape(&client, &server).await;
        let after = series(&page);
        let added: Vec<_> = after.difference(&before).collect();
        let removed: Vec<_> = before.difference(&after).collect();
        assert!(
            added.is_empty() && removed.is_empty(),
            "added {added:?}, removed {removed:?}"
        );
        // The 10,000 changes were seen: the counters moved, not the series.
        let published = page
            .lines()
            .find_map(|l| l.strip_prefix("skuwatch_bus_events_published_total "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .expect("published counter");
        assert!(published >= 20_000.0, "published {published}");
        reader.abort();
    })
    .await
    .expect("test finished before its deadline");
}

/// Issue 7: SIGTERM during a burst of writes with open WebSockets: every
/// write answered 2xx is in the database, nothing is half-done, clients get
/// close 1001, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_mid_burst_loses_no_acknowledged_write() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let db = TestDb::new(Backend::Postgres).await;
        let server = Binary::spawn(&db.url, &[("SKUWATCH_SHUTDOWN_TIMEOUT_SECS", "30")]).await;
        let token = login(&server.base, "admin", ADMIN_PASSWORD).await;
        let client = client_with(&token);
        let skus: Vec<String> = (0..8).map(|i| format!("BURST-{i}")).collect();
        for sku in &skus {
            let response = client
                .post(server.url("/api/v1/skus"))
                .json(&json!({ "sku": sku, "name": "burst", "currency": "GBP", "price": "1.00", "stock": 1_000_000 }))
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), 201);
        }

        let mut sockets = Vec::new();
        for _ in 0..3 {
            let mut ws = server.ws(&token).await;
            ws.send(Message::Text(json!({"type": "subscribe", "skus": skus}).to_string().into()))
                .await
                .expect("subscribe");
            // The snapshot answers the subscription: the session is live.
            loop {
                match ws.next().await.expect("open").expect("frame") {
                    Message::Text(text) if text.contains("\"snapshot\"") => break,
                    _ => {}
                }
            }
            sockets.push(tokio::spawn(async move {
                while let Some(frame) = ws.next().await {
                    if let Ok(Message::Close(frame)) = frame {
                        return frame.map(|f| f.code);
                    }
                    if frame.is_err() {
                        return None;
                    }
                }
                None
            }));
        }

        // 16 writers; each records the event id of every 2xx answer and
        // stops at the first refusal or broken connection.
        let acknowledged = Arc::new(std::sync::Mutex::new(Vec::<(String, i64)>::new()));
        let (progress, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut writers = Vec::new();
        for w in 0..16 {
            let client = client.clone();
            let sku = skus[w % skus.len()].clone();
            let url = server.url(&format!("/api/v1/skus/{sku}/stock/adjustments"));
            let acknowledged = acknowledged.clone();
            let progress = progress.clone();
            writers.push(tokio::spawn(async move {
                loop {
                    let Ok(response) = client.post(&url).json(&json!({ "delta": -1, "reason": "burst" })).send().await
                    else {
                        return;
                    };
                    if !response.status().is_success() {
                        return;
                    }
                    let Ok(body) = response.json::<Value>().await else { return };
                    let id = body["event_id"].as_i64().expect("event_id");
                    acknowledged.lock().expect("lock").push((sku.clone(), id));
                    let _ = progress.send(());
                }
            }));
        }
        drop(progress);
        for _ in 0..300 {
            progress_rx.recv().await.expect("writes are being acknowledged");
        }
        server.terminate();

        for writer in writers {
            writer.await.expect("writer");
        }
        for socket in sockets {
            let code = socket.await.expect("socket");
            assert_eq!(code, Some(CloseCode::Away), "WebSocket close code");
        }
        let mut child = server.child;
        let status = tokio::time::timeout(Duration::from_secs(120), child.wait())
            .await
            .expect("the process exited")
            .expect("wait");
        assert_eq!(status.code(), Some(0), "exit status {status:?}");

        let acknowledged = acknowledged.lock().expect("lock").clone();
        assert!(acknowledged.len() >= 300);
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("db");
        for (sku, id) in &acknowledged {
            let found: Option<(String,)> = sqlx::query_as("SELECT sku FROM events WHERE event_id = $1")
                .bind(id)
                .fetch_optional(&mut conn)
                .await
                .expect("query");
            assert_eq!(found.as_ref().map(|r| r.0.as_str()), Some(sku.as_str()), "event {id}");
        }
        // Nothing half-done: every SKU row agrees with its events.
        for sku in &skus {
            let (stock, version): (i64, i64) = sqlx::query_as("SELECT stock, version FROM skus WHERE sku = $1")
                .bind(sku)
                .fetch_one(&mut conn)
                .await
                .expect("row");
            let (events, deltas): (i64, Option<i64>) =
                sqlx::query_as("SELECT COUNT(*), SUM(delta)::BIGINT FROM events WHERE sku = $1")
                    .bind(sku)
                    .fetch_one(&mut conn)
                    .await
                    .expect("events");
            assert_eq!(events, version, "{sku}: one event per version");
            assert_eq!(stock, 1_000_000 + deltas.unwrap_or(0), "{sku}: stock is the sum of its events");
            let acked = acknowledged.iter().filter(|(s, _)| s == sku).count() as i64;
            assert!(-deltas.unwrap_or(0) >= acked, "{sku}: fewer sales than acknowledged");
        }
    })
    .await
    .expect("test finished before its deadline");
}

/// Every answer carries a request id: the client's own, or a fresh one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_answer_carries_a_request_id() {
    let app = crate::helpers::TestApp::spawn(Backend::Sqlite).await;
    let given = app
        .client
        .get(app.url("/api/v1/skus/NOPE"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .expect("get");
    assert_eq!(given.status(), 404);
    assert_eq!(given.headers()["x-request-id"], "abc-123");
    let fresh = app
        .client
        .get(app.url("/healthz"))
        .send()
        .await
        .expect("get");
    let id = fresh.headers()["x-request-id"].to_str().expect("ascii");
    assert_eq!(id.len(), 36, "a UUID: {id}");
}

/// With SKUWATCH_METRICS_BIND, /metrics moves to its own listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metrics_can_have_a_listener_of_their_own() {
    let app = crate::helpers::TestApp::spawn_with(Backend::Sqlite, |s| {
        s.metrics_bind = Some("127.0.0.1:0".parse().expect("addr"));
    })
    .await;
    let on_api = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("get");
    assert_eq!(on_api.status(), 404);
    let wrong = app
        .client
        .delete(app.url("/healthz"))
        .send()
        .await
        .expect("delete");
    assert_eq!(wrong.status(), 405);
    let addr = app.app().metrics_addr().expect("metrics listener");
    let page = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape");
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/plain"));
    let text = page.text().await.expect("text");
    assert!(
        text.contains("# TYPE skuwatch_http_requests_total counter"),
        "{text}"
    );
    // Labelled by template: the 405 by the route it matched, the 404 by
    // the fixed label, never by the raw path.
    assert!(text.contains(r#"method="DELETE",route="/healthz",status="405""#));
    assert!(text.contains(r#"method="GET",route="unmatched",status="404""#));
}

/// Issue 15, target 5: when the load (SKU actors plus sessions) falls to
/// half of its peak, the binary asks its threads to give their free pages
/// back, and counts it; an instance that never had a load never does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_binary_releases_memory_when_its_load_ends() {
    tokio::time::timeout(TEST_DEADLINE, async {
        let db = TestDb::new(Backend::Sqlite).await;
        let server = Binary::spawn(&db.url, &[("SKUWATCH_METRICS_REFRESH_SECS", "1")]).await;
        let token = login(&server.base, "admin", ADMIN_PASSWORD).await;
        let client = client_with(&token);
        let releases = |page: &str| {
            crate::helpers::metric(page, "skuwatch_memory_releases_total").expect("series")
        };
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            releases(&scrape(&client, &server).await),
            0.0,
            "no load yet"
        );
        let mut sockets = Vec::new();
        for _ in 0..6 {
            sockets.push(server.ws(&token).await);
        }
        // The refresher samples the load once a second: let it see the six.
        loop {
            let page = scrape(&client, &server).await;
            if crate::helpers::metric(&page, "skuwatch_ws_sessions_open") == Some(6.0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert_eq!(
            releases(&scrape(&client, &server).await),
            0.0,
            "the load lasts"
        );
        for mut socket in sockets {
            let _ = socket.close(None).await;
        }
        loop {
            if releases(&scrape(&client, &server).await) >= 1.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("within the test deadline");
}
