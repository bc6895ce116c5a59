//! A real server on a random port over a database of its own, driven over
//! real HTTP and WebSocket connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use skuwatch::Settings;
use sqlx::Connection;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Where the per-test PostgreSQL databases are created. CI and the README
/// use the local server; a missing server fails the tests, never skips them.
pub fn postgres_admin_url() -> String {
    std::env::var("SKUWATCH_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

fn unique_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "skuwatch_test_{}_{}_{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u32>()
    )
}

/// A database used by one test only; dropped afterwards.
pub struct TestDb {
    pub url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Postgres { name: String },
    Sqlite { path: std::path::PathBuf },
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let name = unique_name();
        match backend {
            Backend::Postgres => {
                let admin = postgres_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .expect("PostgreSQL must be running for the tests (see README)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
                Self {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                Self {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::Sqlite { path },
                }
            }
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::Postgres { name } => {
                let name = name.clone();
                // Drop runs outside async; a thread with its own runtime.
                let _ = std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    rt.block_on(async {
                        if let Ok(mut conn) =
                            sqlx::PgConnection::connect(&postgres_admin_url()).await
                        {
                            let _ = sqlx::query(&format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            ))
                            .execute(&mut conn)
                            .await;
                        }
                    });
                })
                .join();
            }
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
        }
    }
}

/// The bootstrap admin of every test server.
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";
/// The JWT secret of every test server (tests forge tokens with it).
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

pub fn test_settings(database_url: &str) -> Settings {
    Settings {
        database_url: skuwatch::config::Secret(database_url.to_owned()),
        bind: "127.0.0.1:0".parse().expect("addr"),
        db_max_connections: 8,
        admin_password: Some(skuwatch::config::Secret(ADMIN_PASSWORD.to_owned())),
        jwt_secret: Some(skuwatch::config::Secret(JWT_SECRET.to_owned())),
        // Each test's database is new: migrated as `skuwatch migrate` would.
        migrate_on_start: true,
        ..Settings::default()
    }
}

/// A client that sends `token` with every request.
pub fn client_with(token: &str) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .expect("client")
}

pub struct TestApp {
    pub app: Option<skuwatch::App>,
    pub base: String,
    /// Sends the admin's token.
    pub client: reqwest::Client,
    /// The admin's token.
    pub token: String,
    pub db: std::sync::Arc<TestDb>,
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, |_| {}).await
    }

    pub async fn spawn_with(backend: Backend, tweak: impl FnOnce(&mut Settings)) -> Self {
        let db = std::sync::Arc::new(TestDb::new(backend).await);
        let mut settings = test_settings(&db.url);
        tweak(&mut settings);
        Self::start_on(db, settings).await
    }

    /// Another server instance on this one's database (scale-out tests).
    pub async fn another(&self, tweak: impl FnOnce(&mut Settings)) -> Self {
        let mut settings = test_settings(&self.db.url);
        tweak(&mut settings);
        Self::start_on(self.db.clone(), settings).await
    }

    async fn start_on(db: std::sync::Arc<TestDb>, settings: Settings) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let app = skuwatch::start(settings, listener).await.expect("start");
        let base = app.base_url();
        let token = login(&base, "admin", ADMIN_PASSWORD).await;
        Self {
            base,
            app: Some(app),
            client: client_with(&token),
            token,
            db,
        }
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart(mut self, tweak: impl FnOnce(&mut Settings)) -> Self {
        if let Some(app) = self.app.take() {
            app.shutdown(Duration::from_secs(5)).await;
        }
        let mut settings = test_settings(&self.db.url);
        tweak(&mut settings);
        Self::start_on(self.db.clone(), settings).await
    }

    pub fn app(&self) -> &skuwatch::App {
        self.app.as_ref().expect("running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `/metrics` page (Prometheus text format).
    pub async fn metrics_page(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// Waits until `/readyz` answers `want` (200 or 503), at most `within`.
    pub async fn wait_ready(&self, want: u16, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let status = self
                .client
                .get(self.url("/readyz"))
                .send()
                .await
                .expect("readyz")
                .status();
            if status == want {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/readyz stayed {status}, wanted {want}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn create_sku(&self, sku: &str, currency: &str, price: &str, stock: i64) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/skus"))
            .json(&json!({ "sku": sku, "name": format!("Item {sku}"), "currency": currency, "price": price, "stock": stock }))
            .send()
            .await
            .expect("create");
        assert_eq!(
            response.status(),
            201,
            "{}",
            response.text().await.unwrap_or_default()
        );
        response.json().await.expect("json")
    }

    /// `POST /api/v1/import` of `csv`, which must answer 200; the report.
    /// Imports on a loaded test machine may take longer than the client's
    /// default minute; correctness, not speed, is under test.
    pub async fn import(&self, csv: String) -> Value {
        let response = self
            .client
            .post(self.url("/api/v1/import"))
            .timeout(Duration::from_secs(200))
            .header("content-type", "text/csv")
            .body(csv)
            .send()
            .await
            .expect("import");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).expect("json")
    }

    /// The points of `GET /api/v1/skus/{sku}/history?field=&limit=`.
    pub async fn history(&self, sku: &str, field: &str, limit: usize) -> Vec<Value> {
        let page: Value = self
            .client
            .get(self.url(&format!(
                "/api/v1/skus/{sku}/history?field={field}&limit={limit}"
            )))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        page["points"].as_array().cloned().expect("points")
    }

    pub async fn get_sku(&self, sku: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.url(&format!("/api/v1/skus/{sku}")))
            .send()
            .await
            .expect("get");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    pub async fn adjust(&self, sku: &str, delta: i64) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(&format!("/api/v1/skus/{sku}/stock/adjustments")))
            .json(&json!({ "delta": delta, "reason": "test" }))
            .send()
            .await
            .expect("adjust");
        (
            response.status().as_u16(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// `GET path` (with the admin's token); the JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> Value {
        self.client
            .get(self.url(path))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Every event of the feed, page by page.
    pub async fn all_events(&self) -> Vec<Value> {
        let mut after = 0;
        let mut events = Vec::new();
        loop {
            let page: Value = self
                .client
                .get(self.url(&format!("/api/v1/events?after={after}&limit=1000")))
                .send()
                .await
                .expect("events")
                .json()
                .await
                .expect("json");
            let batch = page["events"].as_array().cloned().unwrap_or_default();
            if batch.is_empty() {
                return events;
            }
            after = page["next_after"].as_i64().expect("next_after");
            events.extend(batch);
        }
    }

    /// The SKU row as committed, read straight from the database.
    pub async fn db_stock(&self, sku: &str) -> (i64, i64) {
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&self.db.url)
            .await
            .expect("db");
        let row: (i64, i64) = sqlx::query_as("SELECT stock, version FROM skus WHERE sku = $1")
            .bind(sku)
            .fetch_one(&mut conn)
            .await
            .expect("row");
        row
    }

    /// A WebSocket authenticated with the admin's token on the upgrade.
    pub async fn ws(&self) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(self.ws_request(Some(&self.token)))
            .await
            .expect("ws connect");
        Ws { stream }
    }

    /// The upgrade request for `/ws`, with a bearer token if given.
    pub fn ws_request(
        &self,
        token: Option<&str>,
    ) -> tokio_tungstenite::tungstenite::handshake::client::Request {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let mut request = format!("ws://{}/ws", self.app().addr())
            .into_client_request()
            .expect("request");
        if let Some(token) = token {
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {token}").parse().expect("header"),
            );
        }
        request
    }
}

/// Logs in and returns the access token.
pub async fn login(base: &str, username: &str, password: &str) -> String {
    let response: Value = reqwest::Client::new()
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("login failed: {response}"))
        .to_owned()
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown_token().cancel();
        }
    }
}

/// A WebSocket client.
pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub const WS_WAIT: Duration = Duration::from_secs(20);

impl Ws {
    pub async fn send(&mut self, value: Value) {
        self.stream
            .send(Message::Text(value.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON text message (pings are answered by tungstenite). One
    /// deadline for the whole wait: server pings must not extend it.
    pub async fn next_json(&mut self) -> Value {
        let deadline = tokio::time::Instant::now() + WS_WAIT;
        loop {
            let message = tokio::time::timeout_at(deadline, self.stream.next())
                .await
                .expect("a WebSocket message in time")
                .expect("stream open")
                .expect("message");
            match message {
                Message::Text(text) => return serde_json::from_str(&text).expect("json"),
                Message::Close(frame) => panic!("closed: {frame:?}"),
                _ => {}
            }
        }
    }

    /// Reads `sku` messages until one has `event_id >= last`.
    pub async fn changes_until(&mut self, last: i64) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let message = self.next_json().await;
            if message["type"] == "sku" {
                let id = message["event_id"].as_i64().expect("event_id");
                out.push(message);
                if id >= last {
                    return out;
                }
            }
        }
    }
}

/// A test that has not finished by then fails instead of hanging CI.
pub const TEST_DEADLINE: Duration = Duration::from_secs(240);

/// Runs a test body once on PostgreSQL and once on SQLite.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                tokio::time::timeout(
                    $crate::helpers::TEST_DEADLINE,
                    ($body)($crate::helpers::Backend::Postgres),
                )
                .await
                .expect("test finished before its deadline")
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                tokio::time::timeout(
                    $crate::helpers::TEST_DEADLINE,
                    ($body)($crate::helpers::Backend::Sqlite),
                )
                .await
                .expect("test finished before its deadline")
            }
        }
    };
}

/// The value of one series (its exact name and labels) on a `/metrics`
/// page, if the page has it.
pub fn metric(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| {
        line.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until `check` holds, at most `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
