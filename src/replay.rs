//! The real-data replay: turns the UCI Online Retail invoice lines into a
//! catalog and a time-ordered stream of stock adjustments and price changes,
//! and sends them to a running server over its public HTTP API.
//!
//! # The mapping (deterministic; `data/README.md` says the same)
//! 1. Files are read in name order, rows in file order; a row is identified
//!    by its file name and line number.
//! 2. Only product codes are replayed: a `StockCode` starting with five
//!    digits (`85123A`, `15056bl`). Postage, fees, manual lines, samples,
//!    discounts and gift vouchers (`POST`, `DOT`, `M`, `AMAZONFEE`,
//!    `gift_0001_10`, ...) are skipped, as are rows with `Quantity` 0.
//! 3. Each kept row is one stock adjustment at its `InvoiceDate`: an invoice
//!    starting with `C` is a return (`+|Quantity|`, reason `return`); any
//!    other positive quantity a sale (`-Quantity`, `sale`); any other
//!    negative quantity a write-off (`Quantity`, `write_off`).
//! 4. Reference price of a SKU on a day: the most frequent `UnitPrice`
//!    (ties: the lowest) among that day's sale rows with a `CustomerID` and
//!    a price > 0 written with at most 2 decimals. The catalog price is the
//!    first day's reference price (without one ever: the first price > 0 of
//!    any row; without that either, the SKU is skipped). On a later day whose
//!    reference price differs from the current one, a price change is sent
//!    at the time of that day's first such row, before its adjustment.
//! 5. Name: the first non-empty, trimmed `Description` of the code, else the
//!    code itself. Currency: GBP.
//! 6. Initial stock ([`initial_stock`]): days of cover at the SKU's own
//!    sales rate, so that the alerts a replay raises are the meaningful
//!    ones (issue 18): `ceil(cover_days × units sold / replay days)`
//!    ([`cover_stock`]). The units sold are the SKU's `sale` units in the
//!    replay; the replay days are the calendar days from its first row's
//!    date to its last row's, both included ([`replay_days`]; 6 for the
//!    bundled slice); `cover_days` is 3 to 42, fixed per SKU by the 64-bit
//!    FNV-1a hash of its code ([`cover_days`]; the same on every run and
//!    platform, unlike Rust's seeded hasher). So a few SKUs start with less
//!    than a lead time's cover (7 days by default) and run short within
//!    the replay, most do not. The initial stock is never below the least
//!    stock that keeps the running stock >= 0 through the whole replay, so
//!    every adjustment still succeeds (a SKU sold in a few large orders
//!    starts with enough for them, and its stock touches 0). Final stock =
//!    initial + sum of deltas, so it is computed from the files alone.
//!
//! The catalog goes in through `POST /api/v1/import` (an upsert that resets
//! stock to the initial value, so a rerun ends at the same final stock).
//! Adjustments carry an `Idempotency-Key` naming the run, file and line, so
//! a retried request never counts twice.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use chrono::NaiveDateTime;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::json;
use skuwatch_actors::domain::{Currency, Money, SkuCode};

/// The slice of the data set bundled with the binary (see `data/README.md`).
pub const BUNDLED: [(&str, &[u8]); 5] = [
    (
        "2010-12-01.csv",
        include_bytes!("../data/online-retail/2010-12-01.csv"),
    ),
    (
        "2010-12-02.csv",
        include_bytes!("../data/online-retail/2010-12-02.csv"),
    ),
    (
        "2010-12-03.csv",
        include_bytes!("../data/online-retail/2010-12-03.csv"),
    ),
    (
        "2010-12-05.csv",
        include_bytes!("../data/online-retail/2010-12-05.csv"),
    ),
    (
        "2010-12-06.csv",
        include_bytes!("../data/online-retail/2010-12-06.csv"),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{file}: {message}")]
    Data { file: String, message: String },
    #[error("reading {0}: {1}")]
    Io(String, std::io::Error),
    #[error("server: {0}")]
    Server(String),
}

/// A SKU of the derived catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    pub sku: SkuCode,
    pub name: String,
    pub price: Money,
    pub initial_stock: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Adjust { delta: i64, reason: &'static str },
    SetPrice { price: Money },
}

/// One request of the replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `InvoiceDate` as microseconds (read as UTC; only differences matter).
    pub at: i64,
    pub sku: SkuCode,
    /// `FILE:LINE` of the source row.
    pub source: String,
    pub action: Action,
}

/// Everything the replay sends, and the stock it must end with.
#[derive(Debug, Clone)]
pub struct Plan {
    pub catalog: Vec<CatalogEntry>,
    pub steps: Vec<Step>,
    pub expected_stock: BTreeMap<SkuCode, i64>,
    pub rows_read: u64,
    pub rows_skipped: u64,
}

struct Row {
    source: String,
    invoice: String,
    code: String,
    description: String,
    quantity: i64,
    at: NaiveDateTime,
    price: Option<i64>,
    has_customer: bool,
}

fn is_product_code(code: &str) -> bool {
    code.len() >= 5 && code.as_bytes()[..5].iter().all(u8::is_ascii_digit)
}

fn gbp() -> Currency {
    Currency::parse("GBP").expect("GBP is ISO 4217")
}

/// `UnitPrice` in pence, when exact (`"2.55"`, `"25.0"`) and > 0.
fn price_pence(raw: &str) -> Option<i64> {
    let value: Decimal = raw.trim().parse().ok()?;
    let pence = value.checked_mul(Decimal::from(100))?;
    if !pence.fract().is_zero() || pence <= Decimal::ZERO {
        return None;
    }
    i64::try_from(pence.trunc()).ok()
}

fn read_rows(name: &str, bytes: &[u8]) -> Result<Vec<Row>, ReplayError> {
    let bad = |message: String| ReplayError::Data {
        file: name.to_owned(),
        message,
    };
    let mut reader = csv::Reader::from_reader(bytes);
    let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
    let column = |n: &str| {
        headers
            .iter()
            .position(|h| h == n)
            .ok_or_else(|| bad(format!("no column {n}")))
    };
    let [invoice, code, description, quantity, date, price, customer] = [
        column("InvoiceNo")?,
        column("StockCode")?,
        column("Description")?,
        column("Quantity")?,
        column("InvoiceDate")?,
        column("UnitPrice")?,
        column("CustomerID")?,
    ];
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| bad(e.to_string()))?;
        let line = record.position().map_or(0, |p| p.line());
        let field = |i: usize| record.get(i).unwrap_or("");
        let at = NaiveDateTime::parse_from_str(field(date), "%Y-%m-%d %H:%M:%S")
            .map_err(|e| bad(format!("line {line}: InvoiceDate: {e}")))?;
        rows.push(Row {
            source: format!("{name}:{line}"),
            invoice: field(invoice).to_owned(),
            code: field(code).to_owned(),
            description: field(description).trim().to_owned(),
            quantity: field(quantity)
                .parse()
                .map_err(|_| bad(format!("line {line}: bad Quantity")))?,
            at,
            price: price_pence(field(price)),
            has_customer: !field(customer).trim().is_empty(),
        });
    }
    Ok(rows)
}

/// Most frequent price, ties to the lowest.
fn modal(prices: &[i64]) -> Option<i64> {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for p in prices {
        *counts.entry(*p).or_default() += 1;
    }
    let best = counts.values().copied().max()?;
    counts.into_iter().find(|(_, c)| *c == best).map(|(p, _)| p)
}

/// Builds the plan from files given as `(name, contents)`, in name order.
/// Largest invoice-line quantity replayed (the bundled data's largest is
/// 80,995); a line beyond it is skipped, so the per-SKU sums below (and the
/// negations of `abs` and `-quantity`) stay far inside the 64-bit range
/// whatever a file holds.
const MAX_QUANTITY: u64 = 1_000_000_000;

pub fn plan(files: &[(String, Vec<u8>)]) -> Result<Plan, ReplayError> {
    let mut files: Vec<_> = files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut rows = Vec::new();
    for (name, bytes) in files {
        rows.extend(read_rows(name, bytes)?);
    }
    let rows_read = rows.len() as u64;
    let rows: Vec<(Row, SkuCode)> = rows
        .into_iter()
        .filter(|r| {
            r.quantity != 0 && r.quantity.unsigned_abs() <= MAX_QUANTITY && is_product_code(&r.code)
        })
        .filter_map(|r| SkuCode::parse(&r.code).ok().map(|c| (r, c)))
        .collect();

    // Reference price per SKU per day (rule 4).
    let mut day_prices: HashMap<(SkuCode, chrono::NaiveDate), Vec<i64>> = HashMap::new();
    for (row, sku) in &rows {
        let sale = !row.invoice.starts_with('C') && row.quantity > 0;
        if let (true, true, Some(p)) = (sale, row.has_customer, row.price) {
            day_prices
                .entry((sku.clone(), row.at.date()))
                .or_default()
                .push(p);
        }
    }
    let reference: HashMap<_, _> = day_prices
        .into_iter()
        .filter_map(|(k, v)| modal(&v).map(|p| (k, p)))
        .collect();

    let mut catalog: BTreeMap<SkuCode, (String, Option<i64>, Option<i64>)> = BTreeMap::new();
    for (row, sku) in &rows {
        let entry = catalog
            .entry(sku.clone())
            .or_insert((String::new(), None, None));
        if entry.0.is_empty() {
            entry.0.clone_from(&row.description);
        }
        if entry.1.is_none() {
            entry.1 = reference.get(&(sku.clone(), row.at.date())).copied();
        }
        if entry.2.is_none() {
            entry.2 = row.price;
        }
    }

    let mut steps = Vec::new();
    let mut current_price: HashMap<SkuCode, i64> = HashMap::new();
    let mut running: HashMap<SkuCode, (i64, i64)> = HashMap::new(); // (sum, lowest)
    let mut sold: HashMap<SkuCode, i64> = HashMap::new();
    let mut skipped = rows_read - rows.len() as u64;
    for (row, sku) in rows {
        let Some((_, first_reference, first_any)) = catalog.get(&sku) else {
            continue;
        };
        let Some(start_price) = first_reference.or(*first_any) else {
            skipped += 1;
            continue;
        };
        let at = row.at.and_utc().timestamp_micros();
        let price = current_price.entry(sku.clone()).or_insert(start_price);
        if let Some(day_price) = reference.get(&(sku.clone(), row.at.date())) {
            let counts = !row.invoice.starts_with('C') && row.quantity > 0 && row.has_customer;
            if counts && row.price.is_some() && *day_price != *price {
                *price = *day_price;
                steps.push(Step {
                    at,
                    sku: sku.clone(),
                    source: row.source.clone(),
                    action: Action::SetPrice {
                        price: Money {
                            minor: *day_price,
                            currency: gbp(),
                        },
                    },
                });
            }
        }
        let (delta, reason) = if row.invoice.starts_with('C') {
            (row.quantity.abs(), "return")
        } else if row.quantity > 0 {
            (-row.quantity, "sale")
        } else {
            (row.quantity, "write_off")
        };
        if reason == "sale" {
            *sold.entry(sku.clone()).or_default() -= delta;
        }
        let (sum, lowest) = running.entry(sku.clone()).or_insert((0, 0));
        *sum += delta;
        *lowest = (*lowest).min(*sum);
        steps.push(Step {
            at,
            sku,
            source: row.source,
            action: Action::Adjust { delta, reason },
        });
    }
    let days = replay_days(&steps);
    let mut entries = Vec::new();
    let mut expected_stock = BTreeMap::new();
    for (sku, (name, first_reference, first_any)) in catalog {
        let (Some(price), Some((sum, lowest))) = (first_reference.or(first_any), running.get(&sku))
        else {
            continue;
        };
        let initial_stock =
            initial_stock(&sku, *lowest, sold.get(&sku).copied().unwrap_or(0), days);
        expected_stock.insert(sku.clone(), initial_stock + sum);
        entries.push(CatalogEntry {
            name: if name.is_empty() {
                sku.to_string()
            } else {
                name
            },
            sku,
            price: Money {
                minor: price,
                currency: gbp(),
            },
            initial_stock,
        });
    }
    Ok(Plan {
        catalog: entries,
        steps,
        expected_stock,
        rows_read,
        rows_skipped: skipped,
    })
}

/// Fewest and most days of cover a SKU's initial stock holds (rule 6).
pub const COVER_DAYS: std::ops::RangeInclusive<i64> = 3..=42;

/// The days of cover of a SKU's initial stock (rule 6): spread evenly over
/// [`COVER_DAYS`] by the 64-bit FNV-1a hash of the code's bytes (offset
/// basis `0xcbf29ce484222325`, prime `0x100000001b3`), so it is the same
/// on every run, build and platform.
pub fn cover_days(sku: &SkuCode) -> i64 {
    let span = (COVER_DAYS.end() - COVER_DAYS.start() + 1) as u64;
    COVER_DAYS.start() + (fnv1a_64(sku.as_str().as_bytes()) % span) as i64
}

/// 64-bit FNV-1a (Fowler, Noll, Vo).
fn fnv1a_64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// `ceil(cover_days(sku) × units_sold / days)`: [`cover_days`] of the
/// SKU's mean daily sales over a replay of `days` calendar days (at least
/// 1). 0 for a SKU that sells nothing; saturating.
pub fn cover_stock(sku: &SkuCode, units_sold: i64, days: i64) -> i64 {
    let units = i128::from(units_sold.max(0)) * i128::from(cover_days(sku));
    let days = i128::from(days.max(1));
    ((units + days - 1) / days).min(i128::from(i64::MAX)) as i64
}

/// A SKU's initial stock (rule 6): [`cover_stock`], and at least
/// `-lowest`, where `lowest` (<= 0) is the lowest running sum of its
/// deltas from 0, so no adjustment of the replay takes the stock below 0.
pub fn initial_stock(sku: &SkuCode, lowest: i64, units_sold: i64, days: i64) -> i64 {
    cover_stock(sku, units_sold, days).max(lowest.saturating_neg())
}

/// The calendar days a replay spans: from the (UTC) date of its first
/// step to that of its last, both included; 1 when there are none.
pub fn replay_days(steps: &[Step]) -> i64 {
    let date = |at: i64| chrono::DateTime::from_timestamp_micros(at).map(|t| t.date_naive());
    let first = steps.iter().map(|s| s.at).min().and_then(date);
    let last = steps.iter().map(|s| s.at).max().and_then(date);
    match (first, last) {
        (Some(first), Some(last)) => (last - first).num_days().max(0) + 1,
        _ => 1,
    }
}

/// The bundled slice as `(name, contents)`.
pub fn bundled() -> Vec<(String, Vec<u8>)> {
    BUNDLED
        .iter()
        .map(|(name, bytes)| ((*name).to_owned(), bytes.to_vec()))
        .collect()
}

/// A CSV file, or every `*.csv` in a folder.
pub fn read_path(path: &Path) -> Result<Vec<(String, Vec<u8>)>, ReplayError> {
    let io = |e| ReplayError::Io(path.display().to_string(), e);
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io)? {
            let entry = entry.map_err(io)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".csv") {
                files.push((name, std::fs::read(entry.path()).map_err(io)?));
            }
        }
    } else {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        files.push((name, std::fs::read(path).map_err(io)?));
    }
    Ok(files)
}

impl Plan {
    /// The catalog as the import CSV of API.md.
    pub fn catalog_csv(&self) -> String {
        let mut writer = csv::Writer::from_writer(Vec::new());
        let _ = writer.write_record(["sku", "name", "price", "currency", "stock"]);
        for entry in &self.catalog {
            let _ = writer.write_record([
                entry.sku.as_str(),
                &entry.name,
                &entry.price.to_decimal_string(),
                entry.price.currency.code(),
                &entry.initial_stock.to_string(),
            ]);
        }
        String::from_utf8(writer.into_inner().unwrap_or_default()).unwrap_or_default()
    }
}

/// How to send the plan.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// `http://HOST:PORT` of a running server.
    pub server: String,
    /// N times real time; `None` sends as fast as the server takes it.
    pub speed: Option<f64>,
    /// Concurrent requests; each SKU stays on one worker, in order.
    pub concurrency: usize,
    /// Read every SKU back at the end and compare with the expected stock.
    pub verify: bool,
    /// Bearer token of an admin (see [`login`]).
    pub token: String,
}

/// Logs in with `POST /api/v1/auth/token` and returns the access token.
pub async fn login(server: &str, username: &str, password: &str) -> Result<String, ReplayError> {
    let response = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/auth/token",
            server.trim_end_matches('/')
        ))
        .json(&json!({ "username": username, "password": password }))
        .send()
        .await
        .map_err(|e| ReplayError::Server(e.to_string()))?;
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    match body["access_token"].as_str() {
        Some(token) if status.is_success() => Ok(token.to_owned()),
        _ => Err(ReplayError::Server(format!(
            "login as {username}: HTTP {status}: {}",
            body["detail"].as_str().unwrap_or("")
        ))),
    }
}

/// What a replay did (the closing note quotes these).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub skus: usize,
    pub adjustments: u64,
    pub price_changes: u64,
    pub failed: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub verified: bool,
    pub mismatches: Vec<String>,
}

fn sku_url(server: &str, sku: &SkuCode, tail: &str) -> String {
    format!("{server}{}{tail}", crate::http::links::sku_path(sku))
}

/// Whether a request may be sent again after a transport error or a 5xx
/// without risking a double apply (issue 13, fault 3): reads and `PUT`
/// (idempotent per RFC 9110 §9.2.2: the replay's PUTs set absolute
/// prices), a request with an `Idempotency-Key` (the server replays the
/// first answer), and the catalog import, which sets absolute values so a
/// second run changes nothing. Anything else is sent once.
fn safe_to_resend(request: &reqwest::Request) -> bool {
    let method = request.method();
    method.is_idempotent()
        || request.headers().contains_key("idempotency-key")
        || (method == reqwest::Method::POST && request.url().path().ends_with("/api/v1/import"))
}

/// Sends one request, retrying transport errors and 5xx with backoff when
/// that is safe ([`safe_to_resend`]); an answer `outcome_unknown` is
/// retried the same way (the key or the idempotent method makes it safe).
async fn send(build: impl Fn() -> reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
    let resend = match build().build() {
        Ok(request) => safe_to_resend(&request),
        Err(e) => return Err(e.to_string()),
    };
    let attempt = || async {
        let response = build().send().await.map_err(|e| e.to_string())?;
        if response.status().is_server_error() {
            return Err(format!("HTTP {}", response.status()));
        }
        Ok(response)
    };
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_times(if resend { 6 } else { 0 }),
        )
        .await
}

/// Runs the plan against a server.
pub async fn run(plan: &Plan, options: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let mut headers = reqwest::header::HeaderMap::new();
    let bearer = format!("Bearer {}", options.token);
    let mut value = reqwest::header::HeaderValue::from_str(&bearer)
        .map_err(|_| ReplayError::Server("the token is not a valid header value".into()))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .map_err(|e| ReplayError::Server(e.to_string()))?;
    let server = options.server.trim_end_matches('/').to_owned();
    let started = Instant::now();

    let csv = plan.catalog_csv();
    let response = send(|| {
        client
            .post(format!("{server}/api/v1/import"))
            .header("content-type", "text/csv")
            .body(csv.clone())
    })
    .await
    .map_err(ReplayError::Server)?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        return Err(ReplayError::Server(format!(
            "import: HTTP {status}: {body}"
        )));
    }

    let run_id = format!("{:x}", chrono::Utc::now().timestamp_micros());
    let workers = options.concurrency.max(1);
    let mut lanes: Vec<Vec<&Step>> = vec![Vec::new(); workers];
    for step in &plan.steps {
        let lane = step
            .sku
            .as_str()
            .bytes()
            .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
        lanes[lane % workers].push(step);
    }
    let first_at = plan.steps.first().map_or(0, |s| s.at);
    let (adjustments, prices, failed) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let lane_runs = lanes.into_iter().map(|lane| {
        let (client, server, run_id) = (&client, &server, &run_id);
        let (adjustments, prices, failed, failures) = (&adjustments, &prices, &failed, failures.clone());
        async move {
            for step in lane {
                if let Some(speed) = options.speed.filter(|s| *s > 0.0) {
                    let due = Duration::from_secs_f64((step.at - first_at) as f64 / 1e6 / speed);
                    tokio::time::sleep_until((started + due).into()).await;
                }
                let result = match &step.action {
                    Action::Adjust { delta, reason } => {
                        adjustments.fetch_add(1, Ordering::Relaxed);
                        let body = json!({ "delta": delta, "reason": reason });
                        let key = format!("replay-{run_id}-{}", step.source);
                        send(|| {
                            client
                                .post(sku_url(server, &step.sku, "/stock/adjustments"))
                                .header("idempotency-key", &key)
                                .json(&body)
                        })
                        .await
                    }
                    Action::SetPrice { price } => {
                        prices.fetch_add(1, Ordering::Relaxed);
                        let body = json!({ "price": price.to_decimal_string(), "reason": "reference_price", "confirm": true });
                        send(|| client.put(sku_url(server, &step.sku, "/price")).json(&body)).await
                    }
                };
                let problem = match result {
                    Ok(r) if r.status().is_success() => None,
                    Ok(r) => Some(format!("{} {}: HTTP {}: {}", step.source, step.sku, r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Some(format!("{} {}: {e}", step.source, step.sku)),
                };
                if let Some(problem) = problem {
                    failed.fetch_add(1, Ordering::Relaxed);
                    let mut failures = failures.lock().unwrap_or_else(|e| e.into_inner());
                    if failures.len() < 20 {
                        failures.push(problem);
                    }
                }
            }
        }
    });
    futures_util::future::join_all(lane_runs).await;
    let seconds = started.elapsed().as_secs_f64();
    let sent = adjustments.load(Ordering::Relaxed) + prices.load(Ordering::Relaxed);
    let mut report = ReplayReport {
        skus: plan.catalog.len(),
        adjustments: adjustments.load(Ordering::Relaxed),
        price_changes: prices.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        seconds,
        events_per_second: sent as f64 / seconds.max(1e-9),
        verified: false,
        mismatches: failures.lock().unwrap_or_else(|e| e.into_inner()).clone(),
    };
    if options.verify {
        let actual = read_stock(&client, &server).await?;
        for (sku, expected) in &plan.expected_stock {
            let got = actual.get(sku.as_str()).copied();
            if got != Some(*expected) {
                report.mismatches.push(format!(
                    "{sku}: expected stock {expected}, server has {got:?}"
                ));
            }
        }
        report.verified = report.mismatches.is_empty() && report.failed == 0;
    }
    Ok(report)
}

/// Every SKU's stock, read page by page from `GET /api/v1/skus`.
pub async fn read_stock(
    client: &reqwest::Client,
    server: &str,
) -> Result<HashMap<String, i64>, ReplayError> {
    let mut stock = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{server}/api/v1/skus?limit=1000");
        if let Some(c) = &cursor {
            // Opaque: encoded as any query value would be.
            url.push_str(&format!("&cursor={}", crate::http::links::component(c)));
        }
        let page: serde_json::Value = send(|| client.get(&url))
            .await
            .map_err(ReplayError::Server)?
            .json()
            .await
            .map_err(|e| ReplayError::Server(e.to_string()))?;
        for item in page["items"].as_array().into_iter().flatten() {
            if let (Some(sku), Some(s)) = (item["sku"].as_str(), item["stock"].as_i64()) {
                stock.insert(sku.to_owned(), s);
            }
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(stock),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_requests_that_cannot_apply_twice_are_sent_again() {
        let client = reqwest::Client::new();
        let base = "http://127.0.0.1:1/api/v1";
        let resend = |b: reqwest::RequestBuilder| safe_to_resend(&b.build().unwrap());
        assert!(resend(client.get(format!("{base}/skus"))));
        assert!(resend(client.put(format!("{base}/skus/A/price"))));
        assert!(resend(client.post(format!("{base}/import"))));
        assert!(resend(
            client
                .post(format!("{base}/skus/A/stock/adjustments"))
                .header("idempotency-key", "k")
        ));
        assert!(!resend(
            client.post(format!("{base}/skus/A/stock/adjustments"))
        ));
        assert!(!resend(client.post(format!("{base}/skus"))));
    }

    const HEADER: &str =
        "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n";

    fn plan_of(rows: &str) -> Plan {
        plan(&[("d.csv".into(), format!("{HEADER}{rows}").into_bytes())]).unwrap()
    }

    #[test]
    fn sales_returns_and_write_offs_map_to_deltas_and_initial_stock_is_days_of_cover() {
        let p = plan_of(
            "1,85123A,HEART,6,2010-12-01 08:26:00,2.55,17850.0,UK\n\
             C2,85123A,HEART,-2,2010-12-01 09:00:00,2.55,17850.0,UK\n\
             3,85123A,,-1,2010-12-01 10:00:00,0.0,,UK\n\
             4,POST,POSTAGE,1,2010-12-01 10:00:00,18.0,12583.0,France\n",
        );
        let deltas: Vec<_> = p
            .steps
            .iter()
            .map(|s| match s.action {
                Action::Adjust { delta, reason } => (delta, reason),
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(deltas, [(-6, "sale"), (2, "return"), (-1, "write_off")]);
        assert_eq!(p.catalog.len(), 1);
        assert_eq!(
            p.catalog[0].initial_stock,
            12 * 6,
            "cover_days(85123A) = 12 days of 6 units sold in a 1-day replay"
        );
        assert_eq!(p.catalog[0].price.minor, 255);
        assert_eq!(
            p.expected_stock.values().copied().collect::<Vec<_>>(),
            [72 - 5]
        );
    }

    fn code(raw: &str) -> SkuCode {
        SkuCode::parse(raw).unwrap()
    }

    #[test]
    fn cover_days_are_fnv_1a_of_the_code_spread_over_3_to_42() {
        // The published FNV-1a 64 test vectors.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
        // Pinned: a change here changes every demo's stock.
        assert_eq!(cover_days(&code("85123A")), 12);
        assert_eq!(cover_days(&code("22423")), 27);
        assert_eq!(cover_days(&code("84029G")), 6);
        let p = plan(&bundled()).unwrap();
        let days: Vec<i64> = p.catalog.iter().map(|e| cover_days(&e.sku)).collect();
        assert!(days.iter().all(|d| COVER_DAYS.contains(d)));
        let short = days.iter().filter(|d| **d < 7).count();
        assert!(
            short * 20 > days.len() && short * 5 < days.len(),
            "{short} of {} under 7 days",
            days.len()
        );
    }

    #[test]
    fn initial_stock_is_the_cover_at_the_replay_rate_and_never_below_the_deepest_dip() {
        let sku = code("22423"); // 27 days
        assert_eq!(cover_stock(&sku, 60, 6), 270);
        assert_eq!(cover_stock(&sku, 1, 6), 5, "4.5 rounds up");
        assert_eq!(cover_stock(&sku, 0, 6), 0);
        assert_eq!(cover_stock(&sku, 60, 0), 27 * 60, "at least a day");
        assert_eq!(initial_stock(&sku, -100, 60, 6), 270);
        assert_eq!(initial_stock(&sku, -500, 60, 6), 500);
        assert_eq!(initial_stock(&sku, 0, 0, 6), 0);
        // A single wholesale order of a month's sales: the dip wins.
        let p = plan_of(
            "1,22423,CAKESTAND,1,2010-12-01 08:00:00,12.75,1.0,UK\n\
             2,22423,CAKESTAND,500,2010-12-03 09:00:00,12.75,2.0,UK\n\
             3,22423,CAKESTAND,5,2010-12-06 09:00:00,12.75,2.0,UK\n",
        );
        // 506 sold over 6 days: 27 days of cover is 2277 units.
        assert_eq!(p.catalog[0].initial_stock, 2277);
        assert_eq!(replay_days(&p.steps), 6);
        let p = plan_of(
            "1,22423,CAKESTAND,1,2010-12-01 08:00:00,12.75,1.0,UK\n\
             2,22423,CAKESTAND,500,2010-12-01 09:00:00,12.75,2.0,UK\n\
             C3,22423,CAKESTAND,-500,2010-12-30 09:00:00,12.75,2.0,UK\n",
        );
        // 501 sold over 30 days is 450.9 units for 27 days; the dip is 501.
        assert_eq!(p.catalog[0].initial_stock, 501);
        assert_eq!(p.expected_stock[&sku], 500);
    }

    #[test]
    fn a_new_modal_customer_price_on_a_later_day_is_a_price_change() {
        let p = plan_of(
            "1,22423,CAKESTAND,1,2010-12-01 08:00:00,12.75,1.0,UK\n\
             2,22423,CAKESTAND,1,2010-12-02 08:00:00,10.95,,UK\n\
             3,22423,CAKESTAND,1,2010-12-02 09:00:00,12.75,2.0,UK\n\
             4,22423,CAKESTAND,1,2010-12-03 09:00:00,10.95,2.0,UK\n",
        );
        let prices: Vec<_> = p
            .steps
            .iter()
            .filter_map(|s| match s.action {
                Action::SetPrice { price } => Some(price.minor),
                _ => None,
            })
            .collect();
        assert_eq!(prices, [1095]);
    }

    #[test]
    fn the_bundled_slice_plans_without_errors() {
        let p = plan(&bundled()).unwrap();
        assert!(p.catalog.len() > 2000, "{}", p.catalog.len());
        assert!(p.steps.len() > 12_000);
        assert!(p.expected_stock.values().all(|s| *s >= 0));
    }
}
