//! Request limits (issue 9): each limit answers with a problem document or a
//! WebSocket error/close code, and hostile traffic on some sessions leaves
//! the others and the server's memory alone.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::helpers::{
    client_with, login, test_settings, Backend, TestApp, TestDb, Ws, ADMIN_PASSWORD, JWT_SECRET,
    WS_WAIT,
};

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = response.json().await.expect("a JSON problem document");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{body}");
    (status, body)
}

/// `[[[...]]]` nested `depth` deep.
fn nested(depth: usize) -> String {
    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
}

both_backends!(
    bodies_over_the_limits_get_413_and_422_problem_documents,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| {
            s.body_limit_bytes = 4096;
            s.import_limit_bytes = 8192;
            s.import_max_rows = 3;
            s.json_max_depth = 8;
        })
        .await;
        app.create_sku("L1", "GBP", "1.00", 5).await;
        let adjust = app.url("/api/v1/skus/L1/stock/adjustments");
        let json_post = |url: &str, body: String| {
            app.client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };

        // Over the body limit.
        let big = format!("{{\"delta\": -1, \"reason\": \"{}\"}}", "x".repeat(5000));
        let (status, body) = problem(json_post(&adjust, big).await.expect("post")).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (413, Some("payload_too_large"))
        );

        // Too deep: 422 naming the body, even when the nesting is in a
        // value serde would have rejected anyway; brackets inside strings
        // do not count.
        let deep = format!("{{\"delta\": -1, \"reason\": {}}}", nested(9));
        let (status, body) = problem(json_post(&adjust, deep).await.expect("post")).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (422, Some("validation")),
            "{body}"
        );
        assert_eq!(body["errors"][0]["field"], "body");
        assert!(body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("deeper than 8"));
        let in_string = format!("{{\"delta\": -1, \"reason\": \"{}\"}}", "[".repeat(250));
        let (status, body) = problem(json_post(&adjust, in_string).await.expect("post")).await;
        assert_eq!(
            (status, body["errors"][0]["field"].as_str()),
            (422, Some("reason")),
            "too long a reason, not too deep: {body}"
        );
        let ok = json!({ "delta": -1, "reason": "[[[[[[[[[[" }).to_string();
        assert_eq!(json_post(&adjust, ok).await.expect("post").status(), 200);

        // CSV: bytes over SKUWATCH_IMPORT_LIMIT_BYTES, rows over SKUWATCH_IMPORT_MAX_ROWS.
        let csv_post = |body: String| {
            app.client
                .post(app.url("/api/v1/import"))
                .header("content-type", "text/csv")
                .body(body)
                .send()
        };
        let header = "sku,name,price,currency\n";
        let wide = format!("{header}W1,{},1.00,GBP\n", "n".repeat(9000));
        let (status, _) = problem(csv_post(wide).await.expect("import")).await;
        assert_eq!(status, 413);
        let rows = |n: usize| {
            let mut csv = header.to_owned();
            for i in 0..n {
                csv.push_str(&format!("R{i},Row {i},1.00,GBP\n\n"));
            }
            csv
        };
        let (status, body) = problem(csv_post(rows(4)).await.expect("import")).await;
        assert_eq!(
            (status, body["type"].as_str()),
            (413, Some("payload_too_large"))
        );
        assert!(body["detail"]
            .as_str()
            .unwrap_or("")
            .contains("more than 3 rows"));
        assert_eq!(
            app.get_sku("R0").await.0,
            404,
            "nothing of a refused file lands"
        );
        let response = csv_post(rows(3)).await.expect("import");
        assert_eq!(response.status(), 200, "blank lines do not count as rows");
        let report: Value = response.json().await.expect("json");
        assert_eq!(report["created"], 3);
    }
);

#[tokio::test]
async fn a_request_over_the_timeout_gets_a_503_problem_document() {
    let db = TestDb::new(Backend::Sqlite).await;
    let mut settings = test_settings(&db.url);
    settings.request_timeout_ms = 1;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let app = skuwatch::start(settings, listener).await.expect("start");
    let client = reqwest::Client::new();
    // A login hashes with Argon2 on a blocking thread: far beyond 1 ms.
    let response = client
        .post(format!("{}/api/v1/auth/token", app.base_url()))
        .json(&json!({ "username": "nobody", "password": "wrong-password" }))
        .send()
        .await
        .expect("post");
    let (status, body) = problem(response).await;
    assert_eq!(
        (status, body["type"].as_str()),
        (503, Some("timeout")),
        "{body}"
    );
    // What answers at once is not affected.
    let health = client
        .get(format!("{}/healthz", app.base_url()))
        .send()
        .await
        .expect("get");
    assert_eq!(health.status(), 200);
    app.shutdown(Duration::from_secs(5)).await;
}

/// A WebSocket opened by hand over TCP, so a test can send frames that no
/// client library would.
struct RawWs {
    stream: TcpStream,
}

impl RawWs {
    async fn open(addr: std::net::SocketAddr, token: &str) -> Self {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Authorization: Bearer {token}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await.expect("read");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self { stream }
    }

    /// A masked text frame header announcing `len` payload bytes.
    fn header(len: u64) -> Vec<u8> {
        let mut frame = vec![0x81, 0x80 | 127];
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]); // mask key 0: payload as is
        frame
    }

    /// The close code of the next frame from the server (skipping pings).
    async fn close_code(&mut self) -> Option<u16> {
        loop {
            let mut head = [0u8; 2];
            tokio::time::timeout(WS_WAIT, self.stream.read_exact(&mut head))
                .await
                .expect("an answer in time")
                .ok()?;
            let len = usize::from(head[1] & 0x7f);
            let mut payload = vec![0u8; len];
            self.stream.read_exact(&mut payload).await.ok()?;
            if head[0] & 0x0f == 0x8 {
                return (len >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
    }
}

fn server_addr(app: &TestApp) -> std::net::SocketAddr {
    app.app().addr()
}

both_backends!(
    a_frame_over_the_limit_closes_1009_before_its_payload_is_read,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| {
            s.ws_max_frame_bytes = 1024;
            s.ws_max_message_bytes = 4096;
        })
        .await;
        // The header announces 1 GiB; not one payload byte follows, so the
        // close proves the server decided on the header alone.
        let mut raw = RawWs::open(server_addr(&app), &app.token).await;
        raw.stream
            .write_all(&RawWs::header(1 << 30))
            .await
            .expect("write");
        assert_eq!(raw.close_code().await, Some(1009));
        // A frame just over the frame limit (but under the message limit).
        let mut raw = RawWs::open(server_addr(&app), &app.token).await;
        let mut frame = RawWs::header(1025);
        frame.extend(std::iter::repeat_n(b' ', 1025));
        raw.stream.write_all(&frame).await.expect("write");
        assert_eq!(raw.close_code().await, Some(1009));
        // A message over the limits from a client library, as one frame.
        let mut ws = app.ws().await;
        let part = "x".repeat(1000);
        let _ = ws.stream.send(Message::Text(part.repeat(5).into())).await;
        let code = loop {
            match tokio::time::timeout(WS_WAIT, ws.stream.next())
                .await
                .expect("in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => break Some(u16::from(frame.code)),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        };
        assert_eq!(code, Some(1009));
        // Other sessions go on.
        let mut other = app.ws().await;
        other
            .send(json!({ "type": "subscribe", "all": true }))
            .await;
        other.send(json!({ "type": "ping?" })).await;
        assert_eq!(other.next_json().await["type"], "error");
    }
);

both_backends!(
    subscription_limits_answer_errors_and_keep_the_socket_open,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| {
            s.ws_max_skus_per_message = 3;
            s.ws_max_subscriptions = 4;
            s.json_max_depth = 6;
        })
        .await;
        for sku in ["S1", "S2", "S3", "S4", "S5"] {
            app.create_sku(sku, "GBP", "1.00", 10).await;
        }
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["S1", "S2", "S3", "S4"] }))
            .await;
        let error = ws.next_json().await;
        assert_eq!(
            (error["type"].as_str(), error["code"].as_str()),
            (Some("error"), Some("bad_subscribe")),
            "{error}"
        );
        assert!(error["message"]
            .as_str()
            .unwrap_or("")
            .contains("at most 3"));
        ws.send(json!({ "type": "subscribe", "skus": ["S1", "S2", "S3"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");
        // Two more would make 5 > 4: refused whole, nothing subscribed.
        ws.send(json!({ "type": "subscribe", "skus": ["S4", "S5"] }))
            .await;
        let error = ws.next_json().await;
        assert_eq!(error["code"], "too_many_subscriptions", "{error}");
        // Already held SKUs do not count twice.
        ws.send(json!({ "type": "subscribe", "skus": ["S1", "S4"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");
        // Too deep a message is a bad message, not a closed socket.
        ws.stream
            .send(Message::Text(nested(7).into()))
            .await
            .expect("send");
        let error = ws.next_json().await;
        assert_eq!(error["code"], "bad_message");
        assert!(error["message"]
            .as_str()
            .unwrap_or("")
            .contains("deeper than 6"));
        // Still subscribed: S5 is not, S4 is.
        app.adjust("S5", -1).await;
        app.adjust("S4", -1).await;
        let change = ws.next_json().await;
        assert_eq!(
            (change["type"].as_str(), change["sku"]["sku"].as_str()),
            (Some("sku"), Some("S4")),
            "{change}"
        );
    }
);

both_backends!(
    sessions_per_user_are_limited_and_freed_on_close,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| s.ws_max_sessions_per_user = 2).await;
        let first = app.ws().await;
        let _second = app.ws().await;
        // A third with the token on the upgrade: 429 problem document.
        let refused = tokio_tungstenite::connect_async(app.ws_request(Some(&app.token))).await;
        match refused {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 429);
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or(b"{}"))
                        .expect("json");
                assert_eq!(body["type"], "too_many_requests");
            }
            other => panic!("expected 429, got {other:?}"),
        }
        // A third with first-message auth: closed with 1008.
        let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
            .await
            .expect("connect");
        let mut third = Ws { stream };
        third
            .send(json!({ "type": "auth", "token": app.token }))
            .await;
        let code = loop {
            match tokio::time::timeout(WS_WAIT, third.stream.next())
                .await
                .expect("in time")
            {
                Some(Ok(Message::Close(Some(frame)))) => break Some(u16::from(frame.code)),
                Some(Ok(_)) => continue,
                _ => break None,
            }
        };
        assert_eq!(code, Some(1008));
        // Closing one frees its place (the server notices the close first).
        drop(first);
        let deadline = tokio::time::Instant::now() + WS_WAIT;
        loop {
            if tokio_tungstenite::connect_async(app.ws_request(Some(&app.token)))
                .await
                .is_ok()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the place was never freed"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
);

/// Resident and peak memory of a process, in KiB (`/proc/PID/status`).
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// The server binary on its own (so its memory is its own), on SQLite.
struct Server {
    child: std::process::Child,
    base: String,
    addr: std::net::SocketAddr,
    _db: TestDb,
}

impl Server {
    async fn start(env: &[(&str, &str)]) -> Self {
        let db = TestDb::new(Backend::Sqlite).await;
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
            probe.local_addr().expect("addr").port()
        };
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_skuwatch"));
        command
            .arg("serve")
            .env("DATABASE_URL", &db.url)
            .env("SKUWATCH_BIND", format!("127.0.0.1:{port}"))
            .env("SKUWATCH_JWT_SECRET", JWT_SECRET)
            .env("SKUWATCH_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env("SKUWATCH_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let server = Self {
            child: command.spawn().expect("server"),
            addr: format!("127.0.0.1:{port}").parse().expect("addr"),
            base: format!("http://127.0.0.1:{port}"),
            _db: db,
        };
        for _ in 0..300 {
            if reqwest::get(format!("{}/readyz", server.base))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the server did not come up");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A session that sends garbage, each answered with an error message.
async fn garbage_session(addr: std::net::SocketAddr, token: String, rounds: usize) {
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://{addr}/ws"
        ))
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("ws");
    let mut ws = Ws { stream };
    let too_many: Vec<String> = (0..1001).map(|i| format!("G{i}")).collect();
    let garbage = [
        "{not json".to_owned(),
        nested(10_000),
        json!({ "type": "subscribe", "skus": too_many }).to_string(),
        json!({ "type": "subscribe", "skus": ["bad code"] }).to_string(),
        json!({ "type": "launch" }).to_string(),
        "\u{0}\u{1}\u{2}".repeat(1000),
    ];
    for round in 0..rounds {
        let text = &garbage[round % garbage.len()];
        ws.stream
            .send(Message::Text(text.clone().into()))
            .await
            .expect("send garbage");
        assert_eq!(ws.next_json().await["type"], "error");
    }
    // Still open and working.
    ws.send(json!({ "type": "subscribe", "skus": ["BURST"] }))
        .await;
    assert_eq!(ws.next_json().await["type"], "snapshot");
}

/// A session that sends one frame of `bytes` over the limit; it must be
/// closed with 1009 (or reset) without the server reading the payload.
async fn oversized_session(addr: std::net::SocketAddr, token: String, bytes: usize) -> Option<u16> {
    let mut raw = RawWs::open(addr, &token).await;
    let _ = raw.stream.write_all(&RawWs::header(bytes as u64)).await;
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0;
    while sent < bytes {
        match tokio::time::timeout(Duration::from_secs(2), raw.stream.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    raw.close_code().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_hostile_sessions_leaves_other_sessions_and_memory_alone() {
    tokio::time::timeout(crate::helpers::TEST_DEADLINE, async {
        let server = Server::start(&[
            ("SKUWATCH_WS_MAX_FRAME_BYTES", "65536"),
            ("SKUWATCH_WS_MAX_MESSAGE_BYTES", "131072"),
            ("SKUWATCH_WS_MAX_SESSIONS_PER_USER", "500"),
        ])
        .await;
        let token = login(&server.base, "admin", ADMIN_PASSWORD).await;
        let client = client_with(&token);
        let created = client
            .post(format!("{}/api/v1/skus", server.base))
            .json(&json!({ "sku": "BURST", "name": "Burst", "currency": "GBP", "price": "1.00", "stock": 100000 }))
            .send()
            .await
            .expect("create");
        assert_eq!(created.status(), 201);
        let adjust = |client: reqwest::Client, base: String| async move {
            let response = client
                .post(format!("{base}/api/v1/skus/BURST/stock/adjustments"))
                .json(&json!({ "delta": -1, "reason": "burst" }))
                .send()
                .await
                .expect("adjust");
            assert_eq!(response.status(), 200);
        };

        // Warm up every path once, then take the baseline.
        garbage_session(server.addr, token.clone(), 6).await;
        assert_eq!(oversized_session(server.addr, token.clone(), 1 << 20).await.unwrap_or(1009), 1009);
        adjust(client.clone(), server.base.clone()).await;
        let pid = server.child.id();
        let (rss_before, _) = memory_kib(pid);

        let mut watcher = {
            let mut request = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/ws", server.addr),
            )
            .expect("request");
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
            Ws { stream: tokio_tungstenite::connect_async(request).await.expect("ws").0 }
        };
        watcher.send(json!({ "type": "subscribe", "skus": ["BURST"] })).await;
        let snapshot = watcher.next_json().await;
        let start_stock = snapshot["skus"][0]["stock"].as_i64().expect("stock");

        // The burst: 20 garbage sessions x 60 messages, 20 sessions each
        // pushing a 16 MiB frame (320 MiB if anything buffered them), and
        // 200 writes the watcher must see, all at once.
        const WRITES: i64 = 200;
        let mut tasks = Vec::new();
        for _ in 0..20 {
            tasks.push(tokio::spawn(garbage_session(server.addr, token.clone(), 60)));
        }
        let mut oversized = Vec::new();
        for _ in 0..20 {
            oversized.push(tokio::spawn(oversized_session(server.addr, token.clone(), 16 << 20)));
        }
        let writer = {
            let (client, base) = (client.clone(), server.base.clone());
            tokio::spawn(async move {
                for _ in 0..WRITES {
                    adjust(client.clone(), base.clone()).await;
                }
            })
        };
        let mut expected = start_stock;
        let mut seen = 0;
        while seen < WRITES {
            let message = watcher.next_json().await;
            assert_eq!(message["type"], "sku", "{message}");
            assert_ne!(message["conflated"], true, "the watcher kept up");
            expected -= 1;
            assert_eq!(message["sku"]["stock"], expected, "every change, in order");
            seen += 1;
        }
        writer.await.expect("writer");
        for task in tasks {
            task.await.expect("a garbage session stayed open and answered");
        }
        for task in oversized {
            let code = task.await.expect("oversized session");
            assert!(matches!(code, Some(1009) | None), "closed with {code:?}");
        }
        let (rss_after, peak) = memory_kib(pid);
        // Generous bounds: buffering the oversized frames alone would take
        // 320 MiB; the garbage is answered and dropped message by message.
        assert!(
            rss_after < rss_before + 64 * 1024,
            "resident memory grew from {rss_before} KiB to {rss_after} KiB"
        );
        assert!(
            peak < rss_before + 160 * 1024,
            "peak memory {peak} KiB against {rss_before} KiB before the burst"
        );
        println!("burst: RSS {rss_before} KiB -> {rss_after} KiB, peak {peak} KiB");
    })
    .await
    .expect("test finished before its deadline");
}
