//! Issue 13, the write side: read-modify-writes against the locked row
//! (fault 2), refusals that name what is at fault and checked arithmetic on
//! client numbers (fault 4), charts that end at now (fault 6), work a
//! leaving client cannot cut off (fault 7), and imports that cannot race
//! each other (fault 8).

use std::process::Stdio;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::Connection;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::both_backends;
use crate::helpers::{
    client_with, login, metric, Backend, TestApp, TestDb, ADMIN_PASSWORD, JWT_SECRET,
};

async fn patch(app: &TestApp, sku: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/skus/{sku}")))
        .json(&body)
        .send()
        .await
        .expect("patch");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn batch(app: &TestApp, lines: Value) -> (u16, Value) {
    let response = app
        .client
        .post(app.url("/api/v1/stock/adjustments"))
        .json(&json!({ "adjustments": lines }))
        .send()
        .await
        .expect("batch");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

async fn put_stock(app: &TestApp, sku: &str, stock: i64) {
    let response = app
        .client
        .put(app.url(&format!("/api/v1/skus/{sku}/stock")))
        .json(&json!({ "stock": stock }))
        .send()
        .await
        .expect("put stock");
    assert_eq!(response.status(), 200);
}

fn catalog(prefix: &str, n: usize) -> String {
    let mut csv = String::from("sku,name,price,currency,stock\n");
    for i in 0..n {
        csv.push_str(&format!("{prefix}{i:05},Item {i},1.00,GBP,50\n"));
    }
    csv
}

/// Fields named in a problem document's `errors`.
fn fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// Fault 2: PATCHes of different fields, each merged with the row as locked
// in its own transaction: none is lost, whatever the interleaving.
both_backends!(
    concurrent_patches_of_different_fields_all_land,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("G1", "GBP", "10.00", 5).await;
        for round in 1..=25i64 {
            let bodies = [
                json!({ "price_guard": { "max_change_pct": 10 + round } }),
                json!({ "price_guard": { "min_price": format!("1.{round:02}") } }),
                json!({ "price_guard": { "max_price": format!("50.{round:02}") } }),
                json!({ "name": format!("Round {round}") }),
                json!({ "low_stock_threshold": round }),
            ];
            let answers = join_all(bodies.into_iter().map(|b| patch(&app, "G1", b))).await;
            for (status, body) in answers {
                assert_eq!(status, 200, "{body}");
            }
            let (_, sku) = app.get_sku("G1").await;
            let want = json!({
                "max_change_pct": 10 + round,
                "min_price": format!("1.{round:02}"),
                "max_price": format!("50.{round:02}"),
            });
            assert_eq!(sku["price_guard"], want, "round {round}: {sku}");
            assert_eq!(sku["name"], format!("Round {round}"), "round {round}");
            assert_eq!(sku["low_stock_threshold"], round, "round {round}");
        }
        // The bounds are checked against the merged guard in the
        // transaction, and the refusal names the field sent.
        let (status, body) = patch(
            &app,
            "G1",
            json!({ "price_guard": { "min_price": "60.00" } }),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["price_guard.min_price"], "{body}");
        let (status, body) = patch(
            &app,
            "G1",
            json!({ "price_guard": { "max_price": "1.00" } }),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["price_guard.max_price"], "{body}");
        // `null` clears a bound; a left-out field is kept.
        let (status, body) =
            patch(&app, "G1", json!({ "price_guard": { "min_price": null } })).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["price_guard"],
            json!({ "max_change_pct": 35, "min_price": null, "max_price": "50.25" })
        );
    }
);

// Fault 4: every refusal names the SKU or the field at fault, and sums of
// client numbers never wrap.
both_backends!(
    a_batch_refusal_names_the_skus_and_lines_at_fault,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("X", "GBP", "1.00", 5).await;
        app.create_sku("Y", "GBP", "1.00", 5).await;

        // Lines of one SKU that go below 0 on the way, though their total is 0.
        let (status, body) = batch(
            &app,
            json!([{"sku": "X", "delta": -10}, {"sku": "X", "delta": 10}]),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["skus"], json!(["X"]), "{body}");
        assert_eq!(fields(&body), ["adjustments[0].delta"], "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| d.ends_with(" X")),
            "{body}"
        );

        // Only the SKU that is short is named.
        let (status, body) = batch(
            &app,
            json!([{"sku": "Y", "delta": -1}, {"sku": "X", "delta": -3}, {"sku": "X", "delta": -3}]),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["skus"], json!(["X"]), "{body}");
        assert_eq!(fields(&body), ["adjustments[2].delta"], "{body}");

        // A sum past the 64-bit range is a 422 naming the line, never a wrap.
        let (status, body) = batch(
            &app,
            json!([{"sku": "X", "delta": -1}, {"sku": "X", "delta": i64::MIN}]),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["adjustments[1].delta"], "{body}");
        let (status, body) = batch(
            &app,
            json!([{"sku": "X", "delta": i64::MAX}, {"sku": "X", "delta": 1}]),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["adjustments[1].delta"], "{body}");
        // Stock plus a line past the range.
        let (status, body) = batch(
            &app,
            json!([{"sku": "Y", "delta": 1}, {"sku": "X", "delta": i64::MAX}]),
        )
        .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["adjustments[1].delta"], "{body}");
        // i64::MIN alone is simply more than there is.
        let (status, body) = batch(&app, json!([{"sku": "X", "delta": i64::MIN}])).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["skus"], json!(["X"]), "{body}");

        // The single route alike.
        let (status, body) = app.adjust("X", i64::MAX).await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(fields(&body), ["delta"], "{body}");
        let (status, body) = app.adjust("X", i64::MIN).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["skus"], json!(["X"]), "{body}");

        // Lines that stay at 0 or above all the way are fine.
        let (status, body) = batch(
            &app,
            json!([{"sku": "X", "delta": 10}, {"sku": "X", "delta": -15}]),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(app.get_sku("X").await.1["stock"], 0);
        assert_eq!(app.get_sku("Y").await.1["stock"], 5);

        // A create of an existing SKU names it.
        let response = app
            .client
            .post(app.url("/api/v1/skus"))
            .json(&json!({"sku": "X", "name": "again", "currency": "GBP", "price": "1.00"}))
            .send()
            .await
            .expect("create");
        assert_eq!(response.status(), 409);
        let body: Value = response.json().await.expect("json");
        assert_eq!(fields(&body), ["sku"], "{body}");
    }
);

async fn history(app: &TestApp, sku: &str, limit: usize) -> Vec<Value> {
    app.history(sku, "stock", limit).await
}

/// Every limit from 1 to past the number of points: never more than the
/// limit, the first point of the range (version 1) from 2 on, always the
/// current value at the current version last, and from 4 on the lowest and
/// highest value.
async fn check_history(app: &TestApp, sku: &str, values: &[i64]) {
    let version = values.len() as i64;
    let low = *values.iter().min().expect("values");
    let high = *values.iter().max().expect("values");
    for limit in 1..=values.len() + 1 {
        let points = history(app, sku, limit).await;
        let got: Vec<i64> = points
            .iter()
            .map(|p| p["value"].as_i64().unwrap_or(-1))
            .collect();
        assert!(
            !points.is_empty() && points.len() <= limit,
            "limit {limit}: {got:?}"
        );
        let last = points.last().expect("a point");
        assert_eq!(
            (last["value"].as_i64(), last["version"].as_i64()),
            (values.last().copied(), Some(version)),
            "limit {limit} ends at now: {got:?}"
        );
        if limit >= 2 {
            assert_eq!(
                points[0]["version"], 1,
                "limit {limit} starts at the start: {got:?}"
            );
        }
        if limit >= 4 {
            assert!(
                got.contains(&low) && got.contains(&high),
                "limit {limit}: {got:?}"
            );
        }
        let versions: Vec<i64> = points
            .iter()
            .map(|p| p["version"].as_i64().unwrap_or(0))
            .collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "oldest first: {versions:?}"
        );
    }
}

// Fault 6: the chart ends at the current value, for both downsampling
// queries (the packed aggregate, and the window functions it falls back to
// when packing would overflow).
both_backends!(
    downsampled_history_ends_at_the_current_value,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("H1", "GBP", "1.00", 100).await;
        for delta in [-100, 100, -100, 100] {
            assert_eq!(app.adjust("H1", delta).await.0, 200);
        }
        put_stock(&app, "H1", 57).await;
        let points = history(&app, "H1", 4).await;
        let last = points.last().expect("points");
        assert_eq!(
            (last["value"].as_i64(), last["version"].as_i64()),
            (Some(57), Some(6)),
            "{points:?}"
        );
        check_history(&app, "H1", &[100, 0, 100, 0, 100, 57]).await;

        // Values this large make the packed aggregate overflow.
        let big = 4_000_000_000_000_000_000i64;
        app.create_sku("H2", "GBP", "1.00", big).await;
        let mut values = vec![big];
        for delta in [-big, big, -big, big] {
            assert_eq!(app.adjust("H2", delta).await.0, 200);
            values.push(values.last().copied().unwrap_or(0) + delta);
        }
        put_stock(&app, "H2", 57).await;
        values.push(57);
        check_history(&app, "H2", &values).await;

        // A longer run with other SKUs' events in between.
        app.create_sku("H3", "GBP", "1.00", 50).await;
        let mut values = vec![50];
        for i in 0..30i64 {
            let delta = if i % 3 == 0 { 7 } else { -3 };
            assert_eq!(app.adjust("H3", delta).await.0, 200);
            assert_eq!(app.adjust("H1", 1).await.0, 200);
            values.push(values.last().copied().unwrap_or(0) + delta);
        }
        check_history(&app, "H3", &values).await;
    }
);

/// Report fields as (created, updated, unchanged, errors).
fn counts(report: &Value) -> (u64, u64, u64, usize) {
    (
        report["created"].as_u64().unwrap_or(0),
        report["updated"].as_u64().unwrap_or(0),
        report["unchanged"].as_u64().unwrap_or(0),
        report["errors"].as_array().map_or(usize::MAX, Vec::len),
    )
}

async fn creations(app: &TestApp) -> i64 {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events WHERE version = 1")
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

fn check_two_imports(a: &Value, b: &Value, n: u64) {
    let (ca, ua, na, ea) = counts(a);
    let (cb, ub, nb, eb) = counts(b);
    assert_eq!((ea, eb), (0, 0), "no row errors: {a} {b}");
    assert_eq!(ca + cb, n, "each SKU created once: {a} {b}");
    assert_eq!(ca + ua + na, n, "{a}");
    assert_eq!(cb + ub + nb, n, "{b}");
    assert_eq!(
        ua + ub,
        0,
        "the same rows: the second is unchanged: {a} {b}"
    );
}

// Fault 8: two imports of the same new SKUs at once (a double click).
both_backends!(
    concurrent_imports_of_the_same_new_skus_create_each_once,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let csv = catalog("D", 2000);
        let (a, b) = tokio::join!(app.import(csv.clone()), app.import(csv));
        check_two_imports(&a, &b, 2000);
        assert_eq!(creations(&app).await, 2000);
    }
);

// Fault 8 across two instances (two schedulers), on PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_imports_on_two_instances_create_each_sku_once() {
    tokio::time::timeout(crate::helpers::TEST_DEADLINE, async {
        let a = TestApp::spawn(Backend::Postgres).await;
        let b = a.another(|_| {}).await;
        let csv = catalog("E", 2000);
        let (ra, rb) = tokio::join!(a.import(csv.clone()), b.import(csv));
        check_two_imports(&ra, &rb, 2000);
        assert_eq!(creations(&a).await, 2000);
        // Both instances serve the state the other created.
        assert_eq!(b.get_sku("E00000").await.0, 200);
        assert_eq!(a.get_sku("E01999").await.0, 200);
    })
    .await
    .expect("test finished before its deadline")
}

/// `skuwatch serve` in a process of its own (its metrics are its own), with
/// its log lines sent to `log`.
struct Server {
    _child: tokio::process::Child,
    base: String,
    addr: String,
    log: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Server {
    async fn spawn(database_url: &str) -> Self {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_skuwatch"));
        command
            .arg("serve")
            .env("DATABASE_URL", database_url)
            // A new database: migrated at start rather than by `skuwatch migrate`.
            .env("SKUWATCH_MIGRATE_ON_START", "true")
            .env("SKUWATCH_BIND", "127.0.0.1:0")
            .env("SKUWATCH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SKUWATCH_JWT_SECRET", JWT_SECRET)
            .env("SKUWATCH_LOG", "warn,skuwatch=info")
            .env("SKUWATCH_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn skuwatch");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let base = loop {
            let line = stdout
                .next_line()
                .await
                .expect("read stdout")
                .expect("skuwatch exited before listening");
            if let Some(url) = line.strip_prefix("skuwatch listening on ") {
                break url.trim().to_owned();
            }
        };
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        let (send, log) = tokio::sync::mpsc::unbounded_channel();
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let _ = send.send(line);
            }
        });
        let addr = base.trim_start_matches("http://").to_owned();
        Self {
            _child: child,
            base,
            addr,
            log,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(180);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// Fault 7: a client that leaves during an import cuts nothing off: the
// import runs to its end and logs its report, the request is counted as
// aborted (499), and the in-flight gauge does not leak.
both_backends!(
    an_import_runs_to_its_end_when_the_client_leaves,
    |backend: Backend| async move {
        const ROWS: usize = 4_000;
        let db = TestDb::new(backend).await;
        let mut server = Server::spawn(&db.url).await;
        let token = login(&server.base, "admin", ADMIN_PASSWORD).await;
        let client = client_with(&token);
        let skus = || async {
            let summary: Value = client
                .get(server.url("/api/v1/summary"))
                .send()
                .await
                .expect("summary")
                .json()
                .await
                .expect("json");
            summary["skus"].as_u64().unwrap_or(0)
        };

        let body = catalog("L", ROWS);
        let mut stream = tokio::net::TcpStream::connect(&server.addr)
            .await
            .expect("connect");
        let head = format!(
            "POST /api/v1/import HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: text/csv\r\nContent-Length: {}\r\n\r\n",
            server.addr,
            body.len()
        );
        stream.write_all(head.as_bytes()).await.expect("head");
        stream.write_all(body.as_bytes()).await.expect("body");
        // Leave once the import has begun.
        wait_for("the import to begin", || async { skus().await > 0 }).await;
        stream.shutdown().await.expect("shutdown");
        drop(stream);

        wait_for("every row to land", || async {
            skus().await == ROWS as u64
        })
        .await;
        let scrape = || async {
            client
                .get(server.url("/metrics"))
                .send()
                .await
                .expect("scrape")
                .text()
                .await
                .expect("text")
        };
        // The scrape itself is the one request in flight.
        wait_for("the gauge to drain", || async {
            metric(&scrape().await, "skuwatch_http_requests_in_flight") == Some(1.0)
        })
        .await;
        let page = scrape().await;
        assert_eq!(
            metric(
                &page,
                r#"skuwatch_http_requests_total{method="POST",route="/api/v1/import",status="499"}"#
            ),
            Some(1.0),
            "{}",
            page.lines()
                .filter(|l| l.contains("requests_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // The report is logged.
        let logged = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = server.log.recv().await {
                if line.contains("import finished") && line.contains(&format!("\"created\":{ROWS}"))
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(logged, Ok(true), "the import's report is logged");
    }
);

// Issue 14: an import commits in chunks beside the SKU actors and starts
// none of them (a 100,000-row file must not activate 100,000 SKUs); the
// actors already running see its changes.
both_backends!(
    an_import_starts_no_sku_actor_and_running_ones_see_its_changes,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("I00000", "GBP", "1.00", 1).await;
        assert_eq!(app.get_sku("I00000").await.1["stock"], 1);
        let registry = &app.app().state().registry;
        let before = registry.active();
        assert!(
            registry.is_active(&skuwatch_actors::domain::SkuCode::parse("I00000").expect("code"))
        );
        // I00000 is in the catalog with stock 50; 1,199 other rows create.
        let report = app.import(catalog("I", 1200)).await;
        assert_eq!(report["created"], 1199, "{report}");
        assert_eq!(report["updated"], 1, "{report}");
        assert_eq!(registry.active(), before, "no actor was started");
        let (_, sku) = app.get_sku("I00000").await;
        assert_eq!(
            sku["stock"], 50,
            "the running actor has the import's change"
        );
        assert_eq!(creations(&app).await, 1200);
    }
);

// Import commits several chunks at once (issue 15): chunks that share a SKU
// code never fly together, so a SKU listed on several lines of a file takes
// them in file order, whichever chunks they fall into.
both_backends!(
    an_import_applies_the_lines_of_one_sku_in_file_order_across_chunks,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        // 1,200 lines over 400 codes: every code on 3 lines, 400 apart,
        // so each chunk of 256 shares codes with its neighbours.
        let (codes, lines) = (400, 1200);
        let mut csv = String::from("sku,name,price,currency,stock\n");
        for line in 0..lines {
            csv.push_str(&format!("ORD{:04},Item,1.00,GBP,{line}\n", line % codes));
        }
        let report = app.import(csv).await;
        assert_eq!(
            (&report["created"], &report["updated"]),
            (&json!(codes), &json!(lines - codes)),
            "{report}"
        );
        for code in 0..codes {
            let sku = format!("ORD{code:04}");
            let (_, state) = app.get_sku(&sku).await;
            let want = [code, code + codes, code + 2 * codes];
            assert_eq!(
                (&state["stock"], &state["version"]),
                (&json!(want[2]), &json!(3)),
                "{sku}: the last line must win: {state}"
            );
            if code % 40 == 0 {
                let got: Vec<i64> = history(&app, &sku, 10)
                    .await
                    .iter()
                    .map(|p| p["value"].as_i64().unwrap_or(-1))
                    .collect();
                assert_eq!(got, want.map(|v| v as i64), "{sku}: not in file order");
            }
        }
    }
);
