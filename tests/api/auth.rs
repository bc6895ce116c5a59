//! Auth: tokens, roles, WebSocket access, secrets kept out of logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::helpers::{
    client_with, login, Backend, TestApp, Ws, ADMIN_PASSWORD, JWT_SECRET, WS_WAIT,
};

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn good_claims() -> Value {
    json!({ "sub": "admin", "role": "admin", "iss": "skuwatch", "aud": "skuwatch-api",
            "iat": now(), "exp": now() + 600, "jti": "t-1" })
}

fn sign(alg: Algorithm, claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    if value.is_null() {
        claims.as_object_mut().expect("object").remove(key);
    } else {
        claims[key] = value;
    }
    claims
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Tokens a server configured for HS256 with [`JWT_SECRET`] must refuse.
fn forged_tokens() -> Vec<(&'static str, String)> {
    let good = sign(Algorithm::HS256, &good_claims(), JWT_SECRET);
    let parts: Vec<&str> = good.split('.').collect();
    let admin_payload = b64(with(good_claims(), "role", json!("admin"))
        .to_string()
        .as_bytes());
    let viewer_to_admin = {
        let viewer = sign(
            Algorithm::HS256,
            &with(good_claims(), "role", json!("viewer")),
            JWT_SECRET,
        );
        let v: Vec<&str> = viewer.split('.').collect();
        format!("{}.{}.{}", v[0], admin_payload, v[2])
    };
    vec![
        (
            "no exp",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "exp", Value::Null),
                JWT_SECRET,
            ),
        ),
        (
            "expired beyond the leeway",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "exp", json!(now() - 120)),
                JWT_SECRET,
            ),
        ),
        (
            "nbf in the future",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "nbf", json!(now() + 300)),
                JWT_SECRET,
            ),
        ),
        (
            "wrong aud",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "aud", json!("someone-else")),
                JWT_SECRET,
            ),
        ),
        (
            "wrong iss",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "iss", json!("evil")),
                JWT_SECRET,
            ),
        ),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
        ),
        ("HS512", sign(Algorithm::HS512, &good_claims(), JWT_SECRET)),
        (
            "RS256 header",
            format!(
                "{}.{}.{}",
                b64(br#"{"alg":"RS256","typ":"JWT"}"#),
                parts[1],
                parts[2]
            ),
        ),
        (
            "another secret",
            sign(
                Algorithm::HS256,
                &good_claims(),
                "another-secret-another-secret-012345",
            ),
        ),
        ("tampered payload", viewer_to_admin),
        (
            "unknown role",
            sign(
                Algorithm::HS256,
                &with(good_claims(), "role", json!("root")),
                JWT_SECRET,
            ),
        ),
        ("garbage", "not.a.token".to_owned()),
    ]
}

both_backends!(
    login_issues_a_token_and_bad_credentials_answer_alike,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let login_as = |username: &str, password: &str| {
            reqwest::Client::new()
                .post(app.url("/api/v1/auth/token"))
                .json(&json!({ "username": username, "password": password }))
                .send()
        };
        let ok: Value = login_as("admin", ADMIN_PASSWORD)
            .await
            .expect("login")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (
                ok["token_type"].as_str(),
                ok["expires_in"].as_i64(),
                ok["role"].as_str()
            ),
            (Some("Bearer"), Some(3600), Some("admin"))
        );
        let wrong = login_as("admin", "wrong password").await.expect("login");
        let unknown = login_as("nobody", "wrong password").await.expect("login");
        assert_eq!(
            (wrong.status().as_u16(), unknown.status().as_u16()),
            (401, 401)
        );
        assert_eq!(
            wrong.text().await.expect("body"),
            unknown.text().await.expect("body")
        );
    }
);

both_backends!(
    forged_and_expired_tokens_get_401_on_rest_and_websocket_alike,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let within_leeway = sign(
            Algorithm::HS256,
            &with(good_claims(), "exp", json!(now() - 5)),
            JWT_SECRET,
        );
        assert_eq!(
            client_with(&within_leeway)
                .get(app.url("/api/v1/skus"))
                .send()
                .await
                .expect("get")
                .status(),
            200,
            "a token expired 5 s ago is within the leeway"
        );
        for (what, token) in forged_tokens() {
            let rest = client_with(&token)
                .get(app.url("/api/v1/skus"))
                .send()
                .await
                .expect("get");
            assert_eq!(rest.status(), 401, "REST, {what}");
            assert_eq!(
                rest.json::<Value>().await.expect("json")["type"],
                "unauthorized"
            );
            match tokio_tungstenite::connect_async(app.ws_request(Some(&token))).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    assert_eq!(response.status(), 401, "WS upgrade, {what}")
                }
                other => panic!(
                    "WS upgrade with {what} must be refused: {:?}",
                    other.map(|_| ())
                ),
            }
            let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
                .await
                .expect("ws");
            let mut ws = Ws { stream };
            ws.send(json!({ "type": "auth", "token": token })).await;
            assert_eq!(
                close_code(&mut ws).await,
                Some(4401),
                "WS auth message, {what}"
            );
        }
        assert_eq!(
            reqwest::Client::new()
                .get(app.url("/api/v1/skus"))
                .send()
                .await
                .expect("get")
                .status(),
            401,
            "no token"
        );
    }
);

async fn close_code(ws: &mut Ws) -> Option<u16> {
    let deadline = tokio::time::Instant::now() + WS_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.stream.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
            Some(Ok(_)) => {}
            _ => return None,
        }
    }
}

both_backends!(
    a_viewer_reads_but_every_write_is_403_and_changes_nothing,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("V1", "GBP", "1.00", 10).await;
        let created = app
            .client
            .post(app.url("/api/v1/users"))
            .json(&json!({ "username": "vera", "password": "viewer-password", "role": "viewer" }))
            .send()
            .await
            .expect("user");
        assert_eq!(created.status(), 201);
        let body = created.text().await.expect("body");
        assert!(
            !body.contains("argon2") && !body.contains("password"),
            "no hash in {body}"
        );
        let viewer = client_with(&login(&app.base, "vera", "viewer-password").await);
        let anonymous = reqwest::Client::new();
        let before = app.all_events().await.len();
        let writes: Vec<(reqwest::Method, &str, Value)> = vec![
            (
                reqwest::Method::POST,
                "/api/v1/skus",
                json!({"sku": "V2", "name": "n", "currency": "GBP", "price": "1"}),
            ),
            (
                reqwest::Method::PATCH,
                "/api/v1/skus/V1",
                json!({"name": "renamed"}),
            ),
            (
                reqwest::Method::PUT,
                "/api/v1/skus/V1/price",
                json!({"price": "2.00"}),
            ),
            (
                reqwest::Method::PUT,
                "/api/v1/skus/V1/stock",
                json!({"stock": 1}),
            ),
            (
                reqwest::Method::POST,
                "/api/v1/skus/V1/stock/adjustments",
                json!({"delta": -1}),
            ),
            (
                reqwest::Method::POST,
                "/api/v1/stock/adjustments",
                json!({"adjustments": [{"sku": "V1", "delta": -1}]}),
            ),
            (
                reqwest::Method::POST,
                "/api/v1/users",
                json!({"username": "x", "password": "password1", "role": "admin"}),
            ),
        ];
        for (method, path, body) in &writes {
            let response = viewer
                .request(method.clone(), app.url(path))
                .json(body)
                .send()
                .await
                .expect("write");
            assert_eq!(response.status(), 403, "viewer {method} {path}");
            assert_eq!(
                response.json::<Value>().await.expect("json")["type"],
                "forbidden"
            );
            let response = anonymous
                .request(method.clone(), app.url(path))
                .json(body)
                .send()
                .await
                .expect("write");
            assert_eq!(response.status(), 401, "anonymous {method} {path}");
        }
        let import = viewer
            .post(app.url("/api/v1/import"))
            .header("content-type", "text/csv")
            .body("sku,name,price,currency\nV3,n,1.00,GBP\n")
            .send()
            .await
            .expect("import");
        assert_eq!(import.status(), 403);
        for path in [
            "/api/v1/skus",
            "/api/v1/skus/V1",
            "/api/v1/events",
            "/api/v1/skus/V1/history",
        ] {
            assert_eq!(
                viewer
                    .get(app.url(path))
                    .send()
                    .await
                    .expect("read")
                    .status(),
                200,
                "viewer reads {path}"
            );
            assert_eq!(
                anonymous
                    .get(app.url(path))
                    .send()
                    .await
                    .expect("read")
                    .status(),
                401,
                "anonymous reads {path}"
            );
        }
        assert_eq!(app.all_events().await.len(), before, "nothing changed");
        let viewer_token = login(&app.base, "vera", "viewer-password").await;
        match tokio_tungstenite::connect_async(app.ws_request(Some(&viewer_token))).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403)
            }
            other => panic!("a viewer may not watch by default: {:?}", other.map(|_| ())),
        }
        let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
            .await
            .expect("ws");
        let mut ws = Ws { stream };
        ws.send(json!({ "type": "auth", "token": viewer_token }))
            .await;
        assert_eq!(close_code(&mut ws).await, Some(4403));
    }
);

both_backends!(websocket_access_rules, |backend: Backend| async move {
    let app = TestApp::spawn_with(backend, |s| {
        s.ws_auth_timeout_secs = 1;
        s.ws_viewers = true;
        s.allowed_origins = vec!["https://ops.example.com".into()];
    })
    .await;
    // No auth message in time: 4401.
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
        .await
        .expect("ws");
    assert_eq!(close_code(&mut Ws { stream }).await, Some(4401));
    // Anything but auth first: 4401.
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
        .await
        .expect("ws");
    let mut ws = Ws { stream };
    ws.send(json!({ "type": "subscribe", "all": true })).await;
    assert_eq!(close_code(&mut ws).await, Some(4401));
    // First-message auth works, then subscriptions do.
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(None))
        .await
        .expect("ws");
    let mut ws = Ws { stream };
    ws.send(json!({ "type": "auth", "token": app.token })).await;
    assert_eq!(ws.next_json().await["type"], "authenticated");
    app.create_sku("WA", "GBP", "1.00", 5).await;
    ws.send(json!({ "type": "subscribe", "skus": ["WA"] }))
        .await;
    assert_eq!(ws.next_json().await["type"], "snapshot");
    // A token in the URL is refused before the upgrade.
    let url = format!("ws://{}/ws?token={}", app.app().addr(), app.token);
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400)
        }
        other => panic!("?token= must be refused: {:?}", other.map(|_| ())),
    }
    // A foreign Origin is refused before the upgrade; a listed one is not.
    for (origin, allowed) in [
        ("https://evil.example", false),
        ("https://ops.example.com", true),
    ] {
        let mut request = app.ws_request(Some(&app.token));
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("origin"));
        match tokio_tungstenite::connect_async(request).await {
            Ok(_) => assert!(allowed, "{origin} must be refused"),
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert!(!allowed, "{origin} must be let in");
                assert_eq!(response.status(), 403);
            }
            Err(e) => panic!("{e}"),
        }
    }
    // With SKUWATCH_WS_VIEWERS=true a viewer may watch.
    app.client
        .post(app.url("/api/v1/users"))
        .json(&json!({ "username": "vic", "password": "viewer-password", "role": "viewer" }))
        .send()
        .await
        .expect("user");
    let viewer = login(&app.base, "vic", "viewer-password").await;
    let (stream, _) = tokio_tungstenite::connect_async(app.ws_request(Some(&viewer)))
        .await
        .expect("viewer may watch");
    let mut ws = Ws { stream };
    ws.send(json!({ "type": "subscribe", "skus": ["WA"] }))
        .await;
    assert_eq!(ws.next_json().await["type"], "snapshot");
});

both_backends!(
    a_session_whose_token_expires_is_closed_with_4401,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| s.token_ttl_secs = 2).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "all": true })).await;
        assert_eq!(close_code(&mut ws).await, Some(4401));
    }
);

both_backends!(
    failed_logins_are_rate_limited_with_retry_after,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let attempt = || {
            reqwest::Client::new()
                .post(app.url("/api/v1/auth/token"))
                .json(&json!({ "username": "admin", "password": "guess" }))
                .send()
        };
        for _ in 0..5 {
            assert_eq!(attempt().await.expect("login").status(), 401);
        }
        let limited = attempt().await.expect("login");
        assert_eq!(limited.status(), 429);
        let wait: u64 = limited.headers()["retry-after"]
            .to_str()
            .expect("header")
            .parse()
            .expect("seconds");
        assert!(wait > 0);
    }
);

/// The CLI creates a user from a password on standard input; the server
/// then lets it log in. Runs the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_adds_lists_and_disables_users_with_the_password_from_stdin() {
    use std::io::Write;
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let cli = |args: &[&str], stdin: &str| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_skuwatch"))
            .args(args)
            .env("DATABASE_URL", &db.url)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("skuwatch");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin.as_bytes())
            .expect("write");
        let output = child.wait_with_output().expect("run");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    assert!(
        cli(
            &["user", "add", "olga", "--role", "admin"],
            "olga-password\n"
        )
        .0
    );
    assert!(
        !cli(
            &["user", "add", "olga", "--role", "admin"],
            "olga-password\n"
        )
        .0,
        "duplicate"
    );
    assert!(
        !cli(&["user", "add", "short", "--role", "admin"], "short\n").0,
        "too short"
    );
    let (ok, listed) = cli(&["user", "list"], "");
    assert!(ok && listed.contains("olga\tadmin\tactive"), "{listed}");
    assert!(!listed.contains("argon2"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut settings = crate::helpers::test_settings(&db.url);
    settings.admin_password = None;
    let app = skuwatch::start(settings, listener).await.expect("start");
    login(&app.base_url(), "olga", "olga-password").await;
    assert!(cli(&["user", "disable", "olga"], "").0);
    let refused = reqwest::Client::new()
        .post(format!("{}/api/v1/auth/token", app.base_url()))
        .json(&json!({ "username": "olga", "password": "olga-password" }))
        .send()
        .await
        .expect("login");
    assert_eq!(refused.status(), 401, "a disabled user gets no token");
    app.shutdown(Duration::from_secs(5)).await;
}

/// Runs the real server at trace level, logs in, watches and writes, and
/// searches every log line for the password, the JWT secret and the token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_password_secret_or_token_appears_in_the_logs() {
    use std::io::Read;
    let db = crate::helpers::TestDb::new(Backend::Sqlite).await;
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
        probe.local_addr().expect("addr").port()
    };
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_skuwatch"))
        .args(["serve"])
        .env("DATABASE_URL", &db.url)
        .env("SKUWATCH_BIND", format!("127.0.0.1:{port}"))
        .env("SKUWATCH_JWT_SECRET", JWT_SECRET)
        .env("SKUWATCH_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SKUWATCH_LOG", "trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("server");
    // Drained while the server runs: a trace log fills a pipe's buffer in
    // seconds, and a server blocked on writing its log answers nothing.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(server.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(server.stderr.take().expect("stderr")));
    let base = format!("http://127.0.0.1:{port}");
    let mut token = None;
    for _ in 0..100 {
        if reqwest::get(format!("{base}/healthz")).await.is_ok() {
            token = Some(login(&base, "admin", ADMIN_PASSWORD).await);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let token = token.expect("the server came up");
    let client = client_with(&token);
    client
        .post(format!("{base}/api/v1/skus"))
        .json(&json!({"sku": "LOG", "name": "n", "currency": "GBP", "price": "1.00"}))
        .send()
        .await
        .expect("create");
    let _ = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({"username": "admin", "password": "a-wrong-password"}))
        .send()
        .await;
    let _ =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws?token={token}")).await;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (stream, _) = tokio_tungstenite::connect_async(request).await.expect("ws");
    let mut ws = Ws { stream };
    ws.send(json!({ "type": "auth", "token": token })).await;
    ws.next_json().await;
    drop(ws);
    let _ = std::process::Command::new("kill")
        .arg(server.id().to_string())
        .status();
    let _ = server.wait();
    let logs = stdout.join().expect("stdout") + &stderr.join().expect("stderr");
    assert!(logs.contains("token issued"), "trace logs were captured");
    for secret in [
        ADMIN_PASSWORD,
        "a-wrong-password",
        JWT_SECRET,
        token.as_str(),
        token.split('.').nth(2).unwrap_or("x"),
    ] {
        assert!(
            !logs.contains(secret),
            "a secret leaked into the logs: {secret}"
        );
    }
}
