//! `loadgen`: drives a running skuwatch server through its public API only
//! (HTTP + WebSocket) and prints one JSON report on standard output.
//!
//! Modes (see BENCHMARKS.md for the exact commands of each target):
//! - `writes`: W writers adjust stock over N SKUs (closed loop, or open loop
//!   at `--rate` writes/s in total) for T seconds while C WebSocket clients
//!   watch; reports throughput, write latency, deliveries and end-to-end
//!   latency (request start -> WebSocket arrival, matched by `event_id`).
//! - `hot`: the same with every writer on one SKU; checks no oversell.
//! - `idle`: opens C authenticated WebSocket sessions and holds them;
//!   reports the server's RSS per session.
//! - `cold`: GETs N SKUs that have no actor yet (cold activation); reports
//!   latency and the server's RSS per activated SKU.
//!
//! Times are measured from one process-wide epoch in nanoseconds; samples
//! are kept in preallocated vectors and joined after the run, so the
//! receivers do no per-message work beyond finding `"event_id":`.

mod holds;
mod procstat;
mod webhooks;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use procstat::ProcStat;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Writes,
    Hot,
    Idle,
    Cold,
    /// One CSV file of `--skus` new SKUs posted to `POST /api/v1/import`,
    /// then the same file with every price changed (the update path):
    /// rows/s of each (issue 15, target 3). A tenth of the rows are at or
    /// below their low-stock threshold, so alerts are raised too.
    Import,
    /// `--requests` all-time stock charts (`--limit` points) of the SKU
    /// PREFIX-000000, one at a time: latency and server CPU per chart
    /// (issue 15, target 4). The SKU's history is seeded beforehand
    /// (`bench/seed-history.sh`).
    History,
    /// Only watches: `--ws-clients` sockets subscribed to all changes for
    /// `--duration` seconds while something else writes (an external
    /// writer straight into the database: `pgbench` with
    /// `bench/pgbench-external.sql`, issue 16). Latency is from each
    /// change's `at` (the time it was written, on the database's clock,
    /// the same machine's) to its arrival; every socket's event ids are
    /// checked for gaps, repeats and disorder.
    Watch,
    /// Checkout holds (issue 17): `--writers` loops of create a hold, then
    /// commit, release or let it expire (`--commit-share`,
    /// `--release-share`, `--hold-ttl-secs`), with a share of plain sales
    /// (`--sale-share`); one socket checks every pushed `available`, and
    /// the SKUs are read back afterwards (no oversell: stock fell by what
    /// was sold, nothing left reserved).
    Holds,
    /// Webhooks (issue 19): `--skus` alerts in a burst, delivered to a
    /// receiver in this process (`--receiver-down-secs`: down that long
    /// first); waits up to `--duration` seconds for every alert.
    Webhooks,
}

/// Load generator for skuwatch (public API only). Prints a JSON report.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[arg(long, value_enum, default_value = "writes")]
    mode: Mode,
    /// Server base URL.
    #[arg(long, env = "SKUWATCH_URL", default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Base URL of the instance the WebSocket clients watch (default: --url).
    /// Another instance on the same PostgreSQL and Redis measures the
    /// scale-out path: write on A, receive on B.
    #[arg(long)]
    ws_url: Option<String>,
    /// Bearer token of an admin; otherwise --user/--password log in.
    #[arg(long, env = "SKUWATCH_TOKEN")]
    token: Option<String>,
    #[arg(long, env = "SKUWATCH_USER", default_value = "admin")]
    user: String,
    #[arg(long, env = "SKUWATCH_PASSWORD")]
    password: Option<String>,
    /// SKUs used (created first unless --no-create): PREFIX-000000 ...
    #[arg(long, default_value_t = 10_000)]
    skus: usize,
    #[arg(long, default_value = "LG")]
    sku_prefix: String,
    /// Skip creating the SKUs (they exist already).
    #[arg(long)]
    no_create: bool,
    /// Stock each SKU is created with (writes alternate -1/+1 around it).
    #[arg(long, default_value_t = 1_000_000)]
    initial_stock: i64,
    /// Concurrent HTTP writers (each one connection of the pool).
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Seconds of writing.
    #[arg(long, default_value_t = 30)]
    duration: u64,
    /// Open loop: total writes/s across all writers (0 = closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// WebSocket clients (in `idle` mode: sessions to hold).
    #[arg(long, default_value_t = 0)]
    ws_clients: usize,
    /// Slow readers: each WebSocket client reads only every this many
    /// milliseconds (all that arrived), like a busy browser tab (0: reads
    /// as messages arrive). Issue 15, target 2 uses 100.
    #[arg(long, default_value_t = 0)]
    ws_read_every_ms: u64,
    /// Receive buffer of each WebSocket client's socket in bytes (SO_RCVBUF,
    /// set before connecting; 0: the system's default). Issue 15, target 2
    /// uses 65536.
    #[arg(long, default_value_t = 0)]
    ws_recv_buffer: u32,
    /// SKUs each WebSocket client subscribes to (0 = `all`).
    #[arg(long, default_value_t = 0)]
    ws_skus: usize,
    /// Writes and hot modes: each decrease is a `sale` and each increase a
    /// `return` (the sales rate of issue 18 moves on every write), instead
    /// of the reason `loadgen`, which no forecast counts.
    #[arg(long)]
    sales: bool,
    /// Hot mode: stock the hot SKU is set to before the run (small, so
    /// refusals happen and oversell would show).
    #[arg(long, default_value_t = 20)]
    hot_stock: i64,
    /// PID of the server, for its RSS and CPU time (/proc).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to wait for the last deliveries after the writers stop.
    #[arg(long, default_value_t = 3)]
    drain_secs: u64,
    /// Idle mode: seconds to hold the sessions before measuring.
    #[arg(long, default_value_t = 5)]
    hold_secs: u64,
    /// History mode: charts requested.
    #[arg(long, default_value_t = 100)]
    requests: usize,
    /// History mode: `limit` of each chart.
    #[arg(long, default_value_t = 500)]
    limit: usize,
    /// Holds mode: each hold's `ttl_secs`.
    #[arg(long, default_value_t = 2)]
    hold_ttl_secs: i64,
    /// Holds mode: share of holds committed (the rest are released or expire).
    #[arg(long, default_value_t = 0.5)]
    commit_share: f64,
    /// Holds mode: share of holds released by the client.
    #[arg(long, default_value_t = 0.2)]
    release_share: f64,
    /// Holds mode: share of loop turns that are a plain sale instead.
    #[arg(long, default_value_t = 0.1)]
    sale_share: f64,
    /// Webhooks mode: seconds the receiver refuses connections after the
    /// burst before it comes back.
    #[arg(long, default_value_t = 0)]
    receiver_down_secs: u64,
    /// Connections opened at once (idle mode and WebSocket set-up).
    #[arg(long, default_value_t = 200)]
    connect_parallel: usize,
}

/// The machine's busy CPU seconds and those of the database and Redis.
struct MachineCpu {
    busy: f64,
    postgres: f64,
    redis: f64,
}

impl MachineCpu {
    fn read() -> Option<Self> {
        Some(Self {
            busy: procstat::machine_busy_secs()?,
            postgres: procstat::programme_cpu_secs("postgres"),
            redis: procstat::programme_cpu_secs("redis-server"),
        })
    }
}

static EPOCH: OnceLock<Instant> = OnceLock::new();

fn now_ns() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One successful write, for the join with deliveries.
#[derive(Clone, Copy)]
struct WriteSample {
    event_id: i64,
    sku: u32,
    start_ns: u64,
    /// When the 2xx answer was read: arrival minus this is the fan-out
    /// part of the end-to-end latency (commit excluded).
    answered_ns: u64,
}

struct Shared {
    http: reqwest::Client,
    base: String,
    /// Where the WebSocket clients connect (`--ws-url`, else `base`).
    ws_base: String,
    auth: String,
    stop: AtomicBool,
    ok: AtomicU64,
    delta_sum: AtomicI64,
    errors: Mutex<HashMap<String, u64>>,
    /// `--sales`: the writers' reasons are `sale` and `return`.
    sales: bool,
}

impl Shared {
    fn error(&self, what: String) {
        *self.errors.lock().unwrap().entry(what).or_default() += 1;
    }
}

fn sku_code(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:06}")
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    match run(args).await {
        Ok(report) => println!("{}", serde_json::to_string_pretty(&report).unwrap()),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(1);
        }
    }
}

async fn run(args: Args) -> Result<Value, Error> {
    now_ns();
    let pool = args.writers.max(args.connect_parallel.min(64));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(pool)
        .tcp_nodelay(true)
        .http1_only()
        .timeout(Duration::from_secs(30))
        .build()?;
    let base = args.url.trim_end_matches('/').to_owned();
    let token = match &args.token {
        Some(t) => t.clone(),
        None => login(&http, &base, &args.user, args.password.as_deref()).await?,
    };
    let ws_base = args
        .ws_url
        .as_deref()
        .map_or_else(|| base.clone(), |u| u.trim_end_matches('/').to_owned());
    let shared = Arc::new(Shared {
        http,
        base,
        ws_base,
        auth: format!("Bearer {token}"),
        stop: AtomicBool::new(false),
        ok: AtomicU64::new(0),
        delta_sum: AtomicI64::new(0),
        errors: Mutex::new(HashMap::new()),
        sales: args.sales,
    });
    match args.mode {
        Mode::Writes | Mode::Hot => writes(&args, &shared).await,
        Mode::Idle => idle(&args, &shared).await,
        Mode::Cold => cold(&args, &shared).await,
        Mode::Import => import(&args, &shared).await,
        Mode::History => history(&args, &shared).await,
        Mode::Watch => watch_only(&args, &shared).await,
        Mode::Holds => holds::holds(&args, &shared).await,
        Mode::Webhooks => webhooks::webhooks(&args, &shared).await,
    }
}

async fn login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: Option<&str>,
) -> Result<String, Error> {
    let password = password.ok_or("give --token, or --user and --password")?;
    let response = http
        .post(format!("{base}/api/v1/auth/token"))
        .json(&json!({ "username": user, "password": password }))
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(format!("login failed: {}", response.status()).into());
    }
    let body: Value = response.json().await?;
    Ok(body["access_token"]
        .as_str()
        .ok_or("no access_token")?
        .to_owned())
}

/// Creates PREFIX-000000.. through `POST /api/v1/import`, 2,000 rows a
/// request, 4 requests at a time; existing SKUs are left as they are.
async fn create_skus(args: &Args, shared: &Arc<Shared>, count: usize) -> Result<f64, Error> {
    let started = Instant::now();
    let chunks: Vec<(usize, usize)> = (0..count)
        .step_by(2000)
        .map(|s| (s, (s + 2000).min(count)))
        .collect();
    let results = futures_util::stream::iter(chunks)
        .map(|(from, to)| {
            let shared = shared.clone();
            let prefix = args.sku_prefix.clone();
            let stock = args.initial_stock;
            async move {
                let mut csv = String::from("sku,name,price,currency,stock,low_stock_threshold\n");
                for i in from..to {
                    csv.push_str(&format!(
                        "{},LOADGEN ITEM {i},9.99,GBP,{stock},0\n",
                        sku_code(&prefix, i)
                    ));
                }
                post_import(&shared, csv).await.map(drop)
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    for r in results {
        r?;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Posts a CSV file to `POST /api/v1/import` and returns its report; a
/// non-2xx answer is an error carrying the problem document.
async fn post_import(shared: &Shared, csv: String) -> Result<Value, Error> {
    let response = shared
        .http
        .post(format!("{}/api/v1/import", shared.base))
        .header("authorization", &shared.auth)
        .header("content-type", "text/csv")
        .timeout(Duration::from_secs(3600))
        .body(csv)
        .send()
        .await?;
    let status = response.status();
    let body = response.text().await?;
    if !status.is_success() {
        return Err(format!("import: {status} {body}").into());
    }
    Ok(serde_json::from_str(&body)?)
}

/// Finds `"key":` and parses the integer after it.
fn find_int(text: &[u8], key: &[u8]) -> Option<i64> {
    let at = memfind(text, key)? + key.len();
    let rest = &text[at..];
    let (neg, digits) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        _ => (false, rest),
    };
    let mut n: i64 = 0;
    let mut any = false;
    for &b in digits {
        if !b.is_ascii_digit() {
            break;
        }
        any = true;
        n = n * 10 + i64::from(b - b'0');
    }
    any.then_some(if neg { -n } else { n })
}

/// Microseconds since the Unix epoch, on the wall clock.
fn wall_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The time after `key` in the server's one format
/// (`2026-11-30T16:34:30.374763Z`), as microseconds since the epoch.
fn find_rfc3339_us(hay: &[u8], key: &[u8]) -> Option<u64> {
    let at = memfind(hay, key)? + key.len();
    let t = std::str::from_utf8(hay.get(at..at + 27)?).ok()?;
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let secs = days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?;
    u64::try_from(secs * 1_000_000 + num(20..26)?).ok()
}

fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What one WebSocket client saw.
#[derive(Default)]
struct Received {
    /// (event_id, arrival ns) of every `sku` message.
    arrivals: Vec<(i64, u64)>,
    /// Microseconds from each change's `at` to its arrival (watch mode).
    lags_us: Vec<u64>,
    conflated: u64,
    other: u64,
    /// Lowest `"stock":` seen (hot mode's never-negative check).
    min_stock: Option<i64>,
    /// Lowest `"available":` seen (holds mode), with `check_stock`.
    min_available: Option<i64>,
    closed_by_server: Option<String>,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A session, on a socket whose receive buffer is `recv_buffer` bytes (0:
/// the system's default).
async fn ws_connect(shared: &Shared, recv_buffer: u32) -> Result<WsStream, Error> {
    let url = format!("{}/ws", shared.ws_base.replacen("http", "ws", 1));
    let mut request = url.into_client_request()?;
    request
        .headers_mut()
        .insert("authorization", shared.auth.parse()?);
    if recv_buffer == 0 {
        let (socket, _) = tokio_tungstenite::connect_async(request).await?;
        return Ok(socket);
    }
    let uri = request.uri();
    let host = uri.host().ok_or("no host in --ws-url")?;
    let addr = tokio::net::lookup_host((host, uri.port_u16().unwrap_or(80)))
        .await?
        .next()
        .ok_or("the WebSocket host does not resolve")?;
    let tcp = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // Before connecting: the window scale is agreed in the handshake.
    tcp.set_recv_buffer_size(recv_buffer)?;
    let stream = tcp.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (socket, _) =
        tokio_tungstenite::client_async(request, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await?;
    Ok(socket)
}

/// What one watching client does.
struct Watch {
    /// Its subscribe message.
    subscribe: String,
    /// Arrivals to make room for.
    expect_capacity: usize,
    /// Track the lowest stock seen (hot mode).
    check_stock: bool,
    /// Record the lag from each change's `at` (watch mode).
    lag_from_at: bool,
    /// `--ws-read-every-ms` (zero: prompt).
    read_every: Duration,
    /// `--ws-recv-buffer`.
    recv_buffer: u32,
}

/// One watching client: subscribes, then records arrivals until `stop`
/// and `drain` pass.
async fn watcher(
    shared: Arc<Shared>,
    watch: Watch,
    ready: Arc<Semaphore>,
    done: Arc<AtomicBool>,
    gate: Arc<Semaphore>,
) -> Result<Received, Error> {
    let Watch {
        subscribe,
        expect_capacity,
        check_stock,
        lag_from_at,
        read_every,
        recv_buffer,
    } = watch;
    // Only the connecting is limited, not the watching.
    let permit = gate.acquire_owned().await?;
    let mut socket = ws_connect(&shared, recv_buffer).await?;
    socket.send(Message::text(subscribe)).await?;
    drop(permit);
    ready.add_permits(1);
    let mut got = Received {
        arrivals: Vec::with_capacity(expect_capacity),
        ..Received::default()
    };
    let mut ended = false;
    while !ended {
        // A slow reader sleeps, then takes all that arrived meanwhile.
        if read_every > Duration::ZERO {
            tokio::time::sleep(read_every).await;
        }
        loop {
            let next = if read_every > Duration::ZERO {
                match futures_util::FutureExt::now_or_never(socket.next()) {
                    Some(next) => Ok(next),
                    None => break,
                }
            } else {
                tokio::time::timeout(Duration::from_millis(200), socket.next()).await
            };
            let message = match next {
                Err(_) => break,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(m)) => m?,
            };
            let at = now_ns();
            match message {
                Message::Text(text) => {
                    let bytes = text.as_bytes();
                    if bytes.starts_with(b"{\"type\":\"sku\"") {
                        if bytes[13..].starts_with(b",\"conflated\":true") {
                            got.conflated += 1;
                        }
                        if let Some(id) = find_int(bytes, b"\"event_id\":") {
                            got.arrivals.push((id, at));
                        }
                        if lag_from_at {
                            if let Some(written) = find_rfc3339_us(bytes, b",\"at\":\"") {
                                got.lags_us.push(wall_us().saturating_sub(written));
                            }
                        }
                        if check_stock {
                            // Hot mode's checker: the SKU state's stock.
                            if let Some(stock) = find_int(bytes, b"\"stock\":") {
                                got.min_stock = Some(got.min_stock.map_or(stock, |m| m.min(stock)));
                            }
                            if let Some(n) = find_int(bytes, b"\"available\":") {
                                got.min_available = Some(got.min_available.map_or(n, |m| m.min(n)));
                            }
                        }
                    } else {
                        got.other += 1;
                    }
                }
                Message::Close(frame) => {
                    got.closed_by_server =
                        Some(frame.map_or("none".into(), |f| u16::from(f.code).to_string()));
                    ended = true;
                    break;
                }
                _ => {}
            }
            if done.load(Ordering::Relaxed) {
                break;
            }
        }
        ended |= done.load(Ordering::Relaxed);
    }
    let _ = socket.close(None).await;
    Ok(got)
}

/// Watch mode (see [`Mode::Watch`]).
async fn watch_only(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let ready = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let watchers: Vec<_> = (0..args.ws_clients.max(1))
        .map(|_| {
            let watch = Watch {
                subscribe: r#"{"type":"subscribe","all":true}"#.to_owned(),
                expect_capacity: 1 << 16,
                check_stock: false,
                lag_from_at: true,
                read_every: Duration::from_millis(args.ws_read_every_ms),
                recv_buffer: args.ws_recv_buffer,
            };
            let (shared, ready, done, gate) =
                (shared.clone(), ready.clone(), done.clone(), gate.clone());
            tokio::spawn(watcher(shared, watch, ready, done, gate))
        })
        .collect();
    tokio::time::timeout(
        Duration::from_secs(60),
        ready.acquire_many(watchers.len() as u32),
    )
    .await
    .map_err(|_| "WebSocket clients did not all subscribe within 60 s")??
    .forget();
    eprintln!("loadgen: {} sockets watching", watchers.len());
    let server_before = args.server_pid.and_then(ProcStat::read);
    let machine_before = MachineCpu::read();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration + args.drain_secs)).await;
    done.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let server_after = args.server_pid.and_then(ProcStat::read);
    let machine_after = MachineCpu::read();
    let mut lag = histogram();
    let (mut delivered, mut gaps, mut repeats_or_disorder) = (0u64, 0i64, 0u64);
    for w in watchers {
        let got = w.await??;
        delivered += got.arrivals.len() as u64;
        for pair in got.arrivals.windows(2) {
            let (a, b) = (pair[0].0, pair[1].0);
            if b <= a {
                repeats_or_disorder += 1;
            } else {
                gaps += b - a - 1;
            }
        }
        for us in got.lags_us {
            lag.record(us.max(1) * 1_000).ok();
        }
    }
    let mut report = json!({
        "mode": "watch",
        "config": { "ws_clients": args.ws_clients.max(1), "duration_s": args.duration },
        "deliveries": {
            "received": delivered, "per_s": delivered as f64 / elapsed,
            "ids_missing_between_arrivals": gaps,
            "repeated_or_out_of_order": repeats_or_disorder,
        },
        "lag_from_written": percentiles_ns(&lag),
    });
    if let (Some(b), Some(a)) = (&server_before, &server_after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        report["server"] = json!({
            "cpu_s": cpu,
            "cpu_us_per_delivery": if delivered > 0 { cpu * 1e6 / delivered as f64 } else { 0.0 },
        });
    }
    if let (Some(b), Some(a)) = (&machine_before, &machine_after) {
        report["machine"] = json!({
            "busy_cores": (a.busy - b.busy) / elapsed,
            "postgres_cores": (a.postgres - b.postgres) / elapsed,
        });
    }
    Ok(report)
}

async fn get_json(shared: &Shared, path: &str) -> Result<Value, Error> {
    let response = shared
        .http
        .get(format!("{}{path}", shared.base))
        .header("authorization", &shared.auth)
        .send()
        .await?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("GET {path}: {status}").into());
    }
    Ok(response.json().await?)
}

/// The server's `skuwatch_actor_commit_writes` histogram as `(sum, count)`
/// (writes in SKU actors' commit calls, and the calls), from `/metrics`;
/// `None` when the server does not serve it on its API port.
async fn commit_writes(shared: &Shared) -> Option<(f64, f64)> {
    let page = shared
        .http
        .get(format!("{}/metrics", shared.base))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let value = |series: &str| {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse::<f64>().ok())
    };
    Some((
        value("skuwatch_actor_commit_writes_sum ")?,
        value("skuwatch_actor_commit_writes_count ")?,
    ))
}

fn percentiles_ns(h: &Histogram<u64>) -> Value {
    let ms = |ns: u64| (ns as f64 / 1e6 * 1000.0).round() / 1000.0;
    json!({
        "count": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.50)),
        "p90_ms": ms(h.value_at_quantile(0.90)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "max_ms": ms(h.max()),
    })
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("histogram bounds")
}

async fn writes(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let hot = args.mode == Mode::Hot;
    let sku_count = if hot { 1 } else { args.skus };
    let codes: Arc<Vec<String>> = Arc::new(
        (0..sku_count)
            .map(|i| {
                if hot {
                    format!("{}-HOT", args.sku_prefix)
                } else {
                    sku_code(&args.sku_prefix, i)
                }
            })
            .collect(),
    );
    let mut report = serde_json::Map::new();
    if hot {
        let sku = &codes[0];
        let csv = format!(
            "sku,name,price,currency,stock,low_stock_threshold\n{sku},HOT ITEM,9.99,GBP,0,0\n"
        );
        post_import(shared, csv).await?;
        shared
            .http
            .put(format!("{}/api/v1/skus/{sku}/stock", shared.base))
            .header("authorization", &shared.auth)
            .json(&json!({ "stock": args.hot_stock, "reason": "loadgen hot start" }))
            .send()
            .await?
            .error_for_status()?;
    } else if !args.no_create {
        let secs = create_skus(args, shared, sku_count).await?;
        report.insert("create_secs".into(), json!(secs));
    }
    let initial_stock = if hot {
        get_json(shared, &format!("/api/v1/skus/{}", codes[0])).await?["stock"]
            .as_i64()
            .ok_or("no stock")?
    } else {
        0
    };

    let commits_before = if hot {
        commit_writes(shared).await
    } else {
        None
    };

    // Watchers first, all subscribed before the first write.
    let ready = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let expected_rate = if args.rate > 0.0 { args.rate } else { 2000.0 };
    let capacity = if hot {
        0
    } else {
        let per_client = if args.ws_skus == 0 {
            1.0
        } else {
            args.ws_skus as f64 / sku_count as f64
        };
        ((expected_rate * args.duration as f64 * per_client) as usize).min(4_000_000) + 1024
    };
    let mut watchers = Vec::with_capacity(args.ws_clients);
    let mut subscriptions: Vec<Option<Vec<u32>>> = Vec::with_capacity(args.ws_clients);
    let connect_gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    for c in 0..args.ws_clients {
        let (subscribe, skus) = if args.ws_skus == 0 || hot {
            if hot {
                (
                    json!({"type": "subscribe", "skus": [codes[0]]}).to_string(),
                    None,
                )
            } else {
                (r#"{"type":"subscribe","all":true}"#.to_owned(), None)
            }
        } else {
            let picked: Vec<u32> = (0..args.ws_skus)
                .map(|k| ((c * args.ws_skus + k) % sku_count) as u32)
                .collect();
            let names: Vec<&str> = picked.iter().map(|&i| codes[i as usize].as_str()).collect();
            (
                json!({"type": "subscribe", "skus": names}).to_string(),
                Some(picked),
            )
        };
        subscriptions.push(skus);
        let gate = connect_gate.clone();
        let (shared, ready, done) = (shared.clone(), ready.clone(), done.clone());
        let watch = Watch {
            subscribe,
            expect_capacity: capacity,
            check_stock: hot,
            lag_from_at: false,
            read_every: Duration::from_millis(args.ws_read_every_ms),
            recv_buffer: args.ws_recv_buffer,
        };
        watchers.push(tokio::spawn(watcher(shared, watch, ready, done, gate)));
    }
    if args.ws_clients > 0 {
        tokio::time::timeout(
            Duration::from_secs(60),
            ready.acquire_many(args.ws_clients as u32),
        )
        .await
        .map_err(|_| "WebSocket clients did not all subscribe within 60 s")??
        .forget();
        // Let the subscriptions (and snapshots) settle.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let server_before = args.server_pid.and_then(ProcStat::read);
    let self_before = ProcStat::read_self();
    let machine_before = MachineCpu::read();
    let started = Instant::now();
    let run_for = Duration::from_secs(args.duration);
    let per_writer_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.writers as f64 / args.rate));
    let mut tasks = Vec::with_capacity(args.writers);
    for w in 0..args.writers {
        let shared = shared.clone();
        let codes = codes.clone();
        let expected = if let Some(i) = per_writer_interval {
            (run_for.as_secs_f64() / i.as_secs_f64()) as usize + 16
        } else {
            8192
        };
        tasks.push(tokio::spawn(writer(
            w,
            shared,
            codes,
            started,
            run_for,
            per_writer_interval,
            expected,
            hot,
        )));
    }
    let mut latency = histogram();
    let mut samples: Vec<WriteSample> = Vec::new();
    for t in tasks {
        let (h, s) = t.await?;
        latency.add(&h).ok();
        samples.extend(s);
    }
    let elapsed = started.elapsed().as_secs_f64();
    // Deliveries: wait until they stop coming or the drain time passes.
    tokio::time::sleep(Duration::from_secs(args.drain_secs)).await;
    done.store(true, Ordering::Relaxed);
    let server_after = args.server_pid.and_then(ProcStat::read);
    let self_after = ProcStat::read_self();
    let machine_after = MachineCpu::read();
    let mut received = Vec::with_capacity(watchers.len());
    let mut ws_errors = 0u64;
    for w in watchers {
        match w.await? {
            Ok(r) => received.push(Some(r)),
            Err(e) => {
                ws_errors += 1;
                eprintln!("watcher: {e}");
                received.push(None);
            }
        }
    }

    // Join deliveries with writes by event_id.
    let ok = shared.ok.load(Ordering::Relaxed);
    let mut e2e = histogram();
    // Arrival after the writer read its 2xx (1 us when the push came first).
    let mut after_answer = histogram();
    let (mut delivered, mut expected, mut conflated, mut min_stock) = (0u64, 0u64, 0u64, None);
    let mut closes: HashMap<String, u64> = HashMap::new();
    if !samples.is_empty() {
        let first = samples.iter().map(|s| s.event_id).min().unwrap_or(0);
        let last = samples.iter().map(|s| s.event_id).max().unwrap_or(0);
        let mut by_id: Vec<Option<(u64, u64)>> = vec![None; (last - first + 1) as usize];
        let mut per_sku = vec![0u64; sku_count];
        for s in &samples {
            by_id[(s.event_id - first) as usize] = Some((s.start_ns, s.answered_ns));
            per_sku[s.sku as usize] += 1;
        }
        for (r, subscribed) in received.iter().zip(&subscriptions) {
            expected += match subscribed {
                None => samples.len() as u64,
                Some(picked) => picked.iter().map(|&i| per_sku[i as usize]).sum(),
            };
            let Some(r) = r else { continue };
            conflated += r.conflated;
            if let Some(m) = r.min_stock {
                min_stock = Some(min_stock.map_or(m, |x: i64| x.min(m)));
            }
            if let Some(code) = &r.closed_by_server {
                *closes.entry(code.clone()).or_default() += 1;
            }
            for &(id, at) in &r.arrivals {
                if id < first || id > last {
                    continue;
                }
                if let Some((start, answered)) = by_id[(id - first) as usize] {
                    delivered += 1;
                    e2e.record(at.saturating_sub(start).max(1_000)).ok();
                    after_answer
                        .record(at.saturating_sub(answered).max(1_000))
                        .ok();
                }
            }
        }
    }
    let errors: u64 = shared.errors.lock().unwrap().values().sum();
    report.insert(
        "mode".into(),
        json!(format!("{:?}", args.mode).to_lowercase()),
    );
    report.insert(
        "config".into(),
        json!({
            "skus": sku_count, "writers": args.writers, "duration_s": args.duration,
            "rate": if args.rate > 0.0 { json!(args.rate) } else { json!("closed-loop") },
            "ws_clients": args.ws_clients,
            "ws_skus": if args.ws_skus == 0 { json!("all") } else { json!(args.ws_skus) },
            "ws_read_every_ms": args.ws_read_every_ms, "ws_recv_buffer": args.ws_recv_buffer,
        }),
    );
    report.insert("elapsed_s".into(), json!(elapsed));
    report.insert("writes_ok".into(), json!(ok));
    report.insert("writes_per_s".into(), json!(ok as f64 / elapsed));
    report.insert(
        "attempts_per_s".into(),
        json!((ok + errors) as f64 / elapsed),
    );
    report.insert("write_latency".into(), percentiles_ns(&latency));
    report.insert(
        "errors_by_status".into(),
        json!(shared.errors.lock().unwrap().clone()),
    );
    report.insert(
        "deliveries".into(),
        json!({
            "expected": expected, "received": delivered,
            "ratio": if expected > 0 { delivered as f64 / expected as f64 } else { 1.0 },
            "conflated": conflated, "per_s": delivered as f64 / elapsed,
            "client_errors": ws_errors, "closed_by_server": closes,
        }),
    );
    report.insert("e2e_latency".into(), percentiles_ns(&e2e));
    report.insert(
        "arrival_after_2xx_latency".into(),
        percentiles_ns(&after_answer),
    );
    if let (Some(b), Some(a)) = (&server_before, &server_after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        report.insert(
            "server".into(),
            json!({
                "cpu_s": cpu,
                "cpu_cores": cpu / (elapsed + args.drain_secs as f64),
                "cpu_us_per_write": if ok > 0 { cpu * 1e6 / ok as f64 } else { 0.0 },
                "cpu_us_per_delivery": if delivered > 0 { cpu * 1e6 / delivered as f64 } else { 0.0 },
                "rss_kib": a.rss_kib, "peak_rss_kib": a.hwm_kib,
            }),
        );
    }
    if let (Some(b), Some(a)) = (&machine_before, &machine_after) {
        // Issue 15, target 1: the whole machine's CPU per write (server,
        // PostgreSQL, Redis, this load tool, the kernel's share of each).
        let busy = a.busy - b.busy;
        let per_write = |secs: f64| if ok > 0 { secs * 1e6 / ok as f64 } else { 0.0 };
        report.insert(
            "machine".into(),
            json!({
                "cpu_s": busy,
                "cpu_us_per_write": per_write(busy),
                "postgres_cpu_us_per_write": per_write(a.postgres - b.postgres),
                "redis_cpu_us_per_write": per_write(a.redis - b.redis),
            }),
        );
    }
    if let (Some(b), Some(a)) = (&self_before, &self_after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        report.insert(
            "loadgen".into(),
            json!({
                "cpu_s": cpu, "cpu_cores": cpu / (elapsed + args.drain_secs as f64), "rss_kib": a.rss_kib,
                "cpu_us_per_write": if ok > 0 { cpu * 1e6 / ok as f64 } else { 0.0 },
            }),
        );
    }
    if hot {
        let final_stock = get_json(shared, &format!("/api/v1/skus/{}", codes[0])).await?["stock"]
            .as_i64()
            .ok_or("no stock")?;
        let sum = shared.delta_sum.load(Ordering::Relaxed);
        // Writes per commit call of the hot SKU's actor during the run (the
        // pipelining the issue asks for; 1 means one write per cycle).
        let per_commit = match (commits_before, commit_writes(shared).await) {
            (Some((ws, cs)), Some((wa, ca))) if ca > cs => json!((wa - ws) / (ca - cs)),
            _ => Value::Null,
        };
        report.insert(
            "hot".into(),
            json!({
                "sku": codes[0], "initial_stock": initial_stock, "final_stock": final_stock,
                "sum_of_successful_deltas": sum,
                "refused_409": shared.errors.lock().unwrap().get("409").copied().unwrap_or(0),
                "writes_per_commit": per_commit,
                "min_stock_seen_on_websocket": min_stock,
                "no_oversell": final_stock == initial_stock + sum && final_stock >= 0
                    && min_stock.is_none_or(|m| m >= 0),
            }),
        );
    }
    report.insert("load_average".into(), json!(procstat::load_average()));
    Ok(Value::Object(report))
}

#[allow(clippy::too_many_arguments)]
async fn writer(
    w: usize,
    shared: Arc<Shared>,
    codes: Arc<Vec<String>>,
    started: Instant,
    run_for: Duration,
    interval: Option<Duration>,
    expected: usize,
    hot: bool,
) -> (Histogram<u64>, Vec<WriteSample>) {
    let mut latency = histogram();
    let mut samples = Vec::with_capacity(expected);
    // Cheap deterministic spread over the SKUs (xorshift), different per writer.
    let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let urls: Vec<String> = codes
        .iter()
        .map(|c| format!("{}/api/v1/skus/{c}/stock/adjustments", shared.base))
        .collect();
    let (down_body, up_body) = if shared.sales {
        (
            r#"{"delta":-1,"reason":"sale"}"#,
            r#"{"delta":1,"reason":"return"}"#,
        )
    } else {
        (
            r#"{"delta":-1,"reason":"loadgen"}"#,
            r#"{"delta":1,"reason":"loadgen"}"#,
        )
    };
    let mut n: u64 = w as u64;
    let mut next_at = started;
    while started.elapsed() < run_for && !shared.stop.load(Ordering::Relaxed) {
        // Open loop: latency counts from the scheduled time, so a stalled
        // server is not hidden by writers that wait (coordinated omission).
        let start_ns = if let Some(i) = interval {
            next_at += i;
            let now = Instant::now();
            if next_at > now {
                tokio::time::sleep_until(next_at.into()).await;
            }
            next_at
                .duration_since(*EPOCH.get().expect("epoch"))
                .as_nanos() as u64
        } else {
            now_ns()
        };
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let sku = if hot {
            0
        } else {
            (seed % codes.len() as u64) as usize
        };
        n += 1;
        let down = n % 2 == 0;
        let result = shared
            .http
            .post(&urls[sku])
            .header("authorization", &shared.auth)
            .header("content-type", "application/json")
            .body(if down { down_body } else { up_body })
            .send()
            .await;
        match result {
            Ok(response) => {
                let status = response.status();
                let body = response.bytes().await;
                let end = now_ns();
                latency.record(end.saturating_sub(start_ns).max(1_000)).ok();
                match body {
                    Ok(body) if status.is_success() => {
                        shared.ok.fetch_add(1, Ordering::Relaxed);
                        shared
                            .delta_sum
                            .fetch_add(if down { -1 } else { 1 }, Ordering::Relaxed);
                        if let Some(event_id) = find_int(&body, b"\"event_id\":") {
                            samples.push(WriteSample {
                                event_id,
                                sku: sku as u32,
                                start_ns,
                                answered_ns: end,
                            });
                        }
                    }
                    Ok(_) => shared.error(status.as_u16().to_string()),
                    Err(e) => shared.error(format!("body: {e}")),
                }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connect"
                } else {
                    "transport"
                };
                shared.error(kind.into());
            }
        }
    }
    (latency, samples)
}

/// Opens `ws_clients` sessions, holds them, and reports the server's RSS
/// growth per session.
async fn idle(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let pid = args.server_pid.ok_or("idle mode needs --server-pid")?;
    let before = ProcStat::read(pid).ok_or("cannot read /proc for --server-pid")?;
    let self_before = ProcStat::read_self();
    let gate = Arc::new(Semaphore::new(args.connect_parallel.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.ws_clients);
    for _ in 0..args.ws_clients {
        let gate = gate.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await;
            ws_connect(&shared, 0).await
        }));
    }
    let mut sockets = Vec::with_capacity(args.ws_clients);
    let mut failed = 0u64;
    for t in tasks {
        match t.await? {
            Ok(s) => sockets.push(s),
            Err(e) => {
                if failed == 0 {
                    eprintln!("connect: {e}");
                }
                failed += 1;
            }
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    // Hold them, answering nothing: the server's pings are answered by
    // tungstenite only when read, so read in one task per socket.
    let holders: Vec<_> = sockets
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                while let Some(Ok(m)) = s.next().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let held = ProcStat::read(pid).ok_or("server gone")?;
    let open = holders.iter().filter(|h| !h.is_finished()).count();
    for h in &holders {
        h.abort();
    }
    drop(holders);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = ProcStat::read(pid).ok_or("server gone")?;
    let self_after = ProcStat::read_self();
    let per_session = (held.rss_kib as f64 - before.rss_kib as f64) / open.max(1) as f64;
    Ok(json!({
        "mode": "idle",
        "sessions_requested": args.ws_clients,
        "sessions_open_after_hold": open,
        "connect_failures": failed,
        "open_secs": open_secs,
        "server_rss_kib_before": before.rss_kib,
        "server_rss_kib_held": held.rss_kib,
        "server_rss_kib_after_close": after.rss_kib,
        "server_peak_rss_kib": after.hwm_kib,
        "rss_kib_per_session": per_session,
        "loadgen_cpu_s": match (self_before, self_after) { (Some(b), Some(a)) => a.cpu_secs - b.cpu_secs, _ => 0.0 },
        "load_average": procstat::load_average(),
    }))
}

/// GETs N SKUs once each (cold activation: load from the database and
/// start an actor), `--writers` at a time; RSS growth per activated SKU.
async fn cold(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let mut report = serde_json::Map::new();
    if !args.no_create {
        let secs = create_skus(args, shared, args.skus).await?;
        report.insert("create_secs".into(), json!(secs));
    }
    let before = args.server_pid.and_then(ProcStat::read);
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.writers {
        let (shared, next) = (shared.clone(), next.clone());
        let prefix = args.sku_prefix.clone();
        let count = args.skus as u64;
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let url = format!(
                    "{}/api/v1/skus/{}",
                    shared.base,
                    sku_code(&prefix, i as usize)
                );
                let start = now_ns();
                match shared
                    .http
                    .get(url)
                    .header("authorization", &shared.auth)
                    .send()
                    .await
                {
                    Ok(r) => {
                        let status = r.status();
                        let _ = r.bytes().await;
                        h.record((now_ns() - start).max(1_000)).ok();
                        if status.is_success() {
                            shared.ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            shared.error(status.as_u16().to_string());
                        }
                    }
                    Err(_) => shared.error("transport".into()),
                }
            }
            h
        }));
    }
    let mut latency = histogram();
    for t in tasks {
        latency.add(&t.await?).ok();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let after = args.server_pid.and_then(ProcStat::read);
    let ok = shared.ok.load(Ordering::Relaxed);
    report.insert("mode".into(), json!("cold"));
    report.insert("activated".into(), json!(ok));
    report.insert("gets_per_s".into(), json!(ok as f64 / elapsed));
    report.insert("get_latency".into(), percentiles_ns(&latency));
    report.insert(
        "errors_by_status".into(),
        json!(shared.errors.lock().unwrap().clone()),
    );
    if let (Some(b), Some(a)) = (before, after) {
        report.insert(
            "server".into(),
            json!({
                "rss_kib_before": b.rss_kib, "rss_kib_after": a.rss_kib, "peak_rss_kib": a.hwm_kib,
                "rss_kib_per_activated_sku": (a.rss_kib as f64 - b.rss_kib as f64) / ok.max(1) as f64,
                "cpu_s": a.cpu_secs - b.cpu_secs,
            }),
        );
    }
    report.insert("load_average".into(), json!(procstat::load_average()));
    Ok(Value::Object(report))
}

/// [`Mode::Import`]: a create pass, then an update pass of the same codes.
async fn import(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let mut report = serde_json::Map::new();
    report.insert("mode".into(), json!("import"));
    report.insert("rows".into(), json!(args.skus));
    for (pass, price) in [("create", "9.99"), ("update", "10.49")] {
        let mut csv = String::from("sku,name,price,currency,stock,low_stock_threshold\n");
        for i in 0..args.skus {
            // Stock 0-99 against a threshold of 10: 11 % at or below it.
            csv.push_str(&format!(
                "{},IMPORT ITEM {i},{price},GBP,{},10\n",
                sku_code(&args.sku_prefix, i),
                i % 100
            ));
        }
        let before = args.server_pid.and_then(ProcStat::read);
        let started = Instant::now();
        let body = post_import(shared, csv).await?;
        let secs = started.elapsed().as_secs_f64();
        let after = args.server_pid.and_then(ProcStat::read);
        let errors = body["errors"].as_array().map_or(0, Vec::len);
        let mut result = json!({
            "secs": secs,
            "rows_per_s": args.skus as f64 / secs,
            "created": body["created"],
            "updated": body["updated"],
            "unchanged": body["unchanged"],
            "errors": errors,
        });
        if let (Some(b), Some(a)) = (before, after) {
            let cpu = a.cpu_secs - b.cpu_secs;
            result["server"] = json!({
                "cpu_s": cpu,
                "cpu_us_per_row": cpu * 1e6 / args.skus.max(1) as f64,
                "peak_rss_kib": a.hwm_kib,
            });
        }
        report.insert(pass.into(), result);
    }
    report.insert("load_average".into(), json!(procstat::load_average()));
    Ok(Value::Object(report))
}

/// [`Mode::History`]: one chart at a time, so each latency is the query's.
async fn history(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let url = format!(
        "{}/api/v1/skus/{}/history?field=stock&limit={}",
        shared.base,
        sku_code(&args.sku_prefix, 0),
        args.limit
    );
    let chart = || async {
        let response = shared
            .http
            .get(&url)
            .header("authorization", &shared.auth)
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("history: {}", response.status()).into());
        }
        let body: Value = response.json().await?;
        Ok::<usize, Error>(body["points"].as_array().map_or(0, Vec::len))
    };
    // Warm: connection, plan caches.
    let mut points = 0;
    for _ in 0..3 {
        points = chart().await?;
    }
    let before = args.server_pid.and_then(ProcStat::read);
    let mut latency = histogram();
    for _ in 0..args.requests {
        let start = now_ns();
        chart().await?;
        latency.record((now_ns() - start).max(1_000)).ok();
    }
    let after = args.server_pid.and_then(ProcStat::read);
    let mut report = json!({
        "mode": "history",
        "requests": args.requests,
        "limit": args.limit,
        "points": points,
        "latency": percentiles_ns(&latency),
        "load_average": procstat::load_average(),
    });
    if let (Some(b), Some(a)) = (before, after) {
        report["server"] = json!({
            "cpu_ms_per_chart": (a.cpu_secs - b.cpu_secs) * 1e3 / args.requests.max(1) as f64,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_servers_times_read_back_to_the_microsecond() {
        let message = br#"{"change":{"event_id":7,"at":"2026-11-30T16:34:30.374763Z"}}"#;
        assert_eq!(
            find_rfc3339_us(message, b",\"at\":\""),
            Some(1_796_056_470_374_763)
        );
        let leap = br#"x,"at":"2024-02-29T23:59:59.999999Z""#;
        assert_eq!(
            find_rfc3339_us(leap, b",\"at\":\""),
            Some(1_709_251_199_999_999)
        );
        assert_eq!(find_rfc3339_us(b"no time here", b",\"at\":\""), None);
    }
}
