//! CSV catalog import (API.md `POST /import`), shared by the HTTP route and
//! `skuwatch import`: parse every row, report bad ones by line number, upsert
//! the good ones in chunks through the write path (`SkuStore::commit`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use serde::Serialize;
use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{
    Command, Committed, Currency, DomainError, Money, NewSku, PriceGuard, SkuCode, Upsert,
    WriteMeta,
};
use skuwatch_actors::registry::{ActorError, Registry};
use skuwatch_actors::store::{SkuStore, StoreError, WriteJob, WriteOutcome, WriteRequest};

use crate::http::DEFAULT_LOW_STOCK_THRESHOLD;

/// Columns; the last two are optional (API.md).
const REQUIRED: [&str; 4] = ["sku", "name", "price", "currency"];
const OPTIONAL: [&str; 2] = ["stock", "low_stock_threshold"];

/// A row that was not imported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RowError {
    /// 1-based line in the file (the header is line 1).
    pub line: u64,
    pub message: String,
}

/// The import report (API.md `{"created", "updated", "errors"}`), plus rows
/// that matched the stored SKU already.
#[derive(Debug, Default, Clone, Serialize)]
pub struct ImportReport {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub errors: Vec<RowError>,
}

/// The whole file is unusable (no or wrong header, not UTF-8 at all).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HeaderError(pub String);

/// One valid row.
#[derive(Debug, Clone)]
pub struct ImportRow {
    pub line: u64,
    pub sku: SkuCode,
    pub name: String,
    pub price: Money,
    pub stock: Option<i64>,
    pub low_stock_threshold: Option<i64>,
}

/// More data rows than `SKUWATCH_IMPORT_MAX_ROWS`: nothing is imported.
#[derive(Debug, thiserror::Error)]
#[error("the file has more than {0} rows")]
pub struct TooManyRows(pub usize);

/// Why a whole file is refused.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    #[error(transparent)]
    TooManyRows(#[from] TooManyRows),
}

/// [`parse`] that stops at `max_rows` data rows (blank lines do not count):
/// a file with more is refused whole, before any row is applied, so the
/// rows held in memory stay bounded.
pub fn parse_limited(
    bytes: &[u8],
    max_rows: usize,
) -> Result<(Vec<ImportRow>, Vec<RowError>), FileError> {
    parse_rows(bytes, max_rows)
}

/// Parses RFC 4180 CSV with an optional UTF-8 BOM. Bad rows become
/// [`RowError`]s; good rows are returned in file order.
pub fn parse(bytes: &[u8]) -> Result<(Vec<ImportRow>, Vec<RowError>), HeaderError> {
    parse_rows(bytes, usize::MAX).map_err(|e| match e {
        FileError::Header(e) => e,
        FileError::TooManyRows(e) => HeaderError(e.to_string()),
    })
}

fn parse_rows(bytes: &[u8], max_rows: usize) -> Result<(Vec<ImportRow>, Vec<RowError>), FileError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(bytes);
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(HeaderError("the file is empty".into()).into());
    }
    let header = reader
        .headers()
        .map_err(|e| HeaderError(format!("cannot read the header row: {e}")))?
        .clone();
    let mut index = HashMap::new();
    for (i, name) in header.iter().enumerate() {
        let name = name.trim();
        if !REQUIRED.contains(&name) && !OPTIONAL.contains(&name) {
            let name: String = name.chars().take(64).collect();
            return Err(HeaderError(format!(
                "unknown column '{name}'; the header is sku,name,price,currency[,stock][,low_stock_threshold]"
            ))
            .into());
        }
        if index.insert(name.to_owned(), i).is_some() {
            return Err(HeaderError(format!("column '{name}' appears twice")).into());
        }
    }
    if let Some(missing) = REQUIRED.iter().find(|c| !index.contains_key(**c)) {
        return Err(HeaderError(format!("the header lacks the column '{missing}'")).into());
    }
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut record = csv::ByteRecord::new();
    // csv's own line counter is off by one with CRLF line ends; count the
    // LFs before each record's first byte instead.
    let mut lines = LineCounter::new(bytes);
    loop {
        let start = reader.position().byte();
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(start, |p| p.byte());
                errors.push(RowError {
                    line: lines.line_at(at),
                    message: format!("not valid CSV: {e}"),
                });
                // A broken quote swallows the rest of the file; stop there.
                break;
            }
        }
        let line = lines.line_at(record.position().map_or(start, |p| p.byte()));
        if record.iter().all(|f| f.is_empty()) {
            continue;
        }
        if rows.len() + errors.len() >= max_rows {
            return Err(TooManyRows(max_rows).into());
        }
        match parse_row(&record, &index, line, header.len()) {
            Ok(row) => rows.push(row),
            Err(message) => errors.push(RowError { line, message }),
        }
    }
    Ok((rows, errors))
}

/// 1-based line numbers of byte offsets, for offsets that only grow.
struct LineCounter<'a> {
    bytes: &'a [u8],
    offset: usize,
    line: u64,
}

impl<'a> LineCounter<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            offset: 0,
            line: 1,
        }
    }

    fn line_at(&mut self, byte: u64) -> u64 {
        let mut end = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.bytes.len());
        // After a CR, csv starts the next record at the LF of the CRLF.
        if self.bytes.get(end) == Some(&b'\n') {
            end += 1;
        }
        if end > self.offset {
            // A line ends at LF, CRLF, or a CR alone (old Mac files).
            let slice = &self.bytes[self.offset..end];
            self.line += slice
                .iter()
                .enumerate()
                .filter(|(i, b)| {
                    **b == b'\n'
                        || (**b == b'\r' && self.bytes.get(self.offset + i + 1) != Some(&b'\n'))
                })
                .count() as u64;
            self.offset = end;
        }
        self.line
    }
}

fn parse_row(
    record: &csv::ByteRecord,
    index: &HashMap<String, usize>,
    line: u64,
    columns: usize,
) -> Result<ImportRow, String> {
    if record.len() != columns {
        return Err(format!(
            "has {} fields, the header has {columns}",
            record.len()
        ));
    }
    let field = |name: &str| -> Result<Option<&str>, String> {
        match index.get(name) {
            None => Ok(None),
            Some(&i) => std::str::from_utf8(&record[i])
                .map(|s| Some(s.trim()).filter(|s| !s.is_empty()))
                .map_err(|_| format!("{name}: not valid UTF-8")),
        }
    };
    let required = |name: &str| field(name)?.ok_or_else(|| format!("{name}: missing"));
    let integer = |name: &str| -> Result<Option<i64>, String> {
        field(name)?
            .map(|raw| match raw.parse::<i64>() {
                Ok(n) if n >= 0 => Ok(n),
                _ => Err(format!("{name}: '{raw}' is not a whole number >= 0")),
            })
            .transpose()
    };
    let sku = SkuCode::parse(required("sku")?).map_err(|e| format!("sku: {e}"))?;
    let name = required("name")?;
    if name.chars().count() > 500 || name.chars().any(char::is_control) {
        return Err("name: must be 1-500 printable characters".into());
    }
    let currency = Currency::parse(required("currency")?).map_err(|e| format!("currency: {e}"))?;
    let price = Money::parse(required("price")?, currency).map_err(|e| format!("price: {e}"))?;
    if price.minor <= 0 {
        return Err("price: must be greater than 0".into());
    }
    Ok(ImportRow {
        line,
        sku,
        name: name.to_owned(),
        price,
        stock: integer("stock")?,
        low_stock_threshold: integer("low_stock_threshold")?,
    })
}

enum RowResult {
    Created,
    Updated,
    Unchanged,
}

/// Creates or updates each row's SKU. Each row is one [`Command::Upsert`]
/// job, decided against the SKU's row as locked in its transaction: its
/// changes (name/threshold as meta, price, stock) are separate events, and
/// a row equal to the stored SKU changes nothing. The rows go to
/// [`SkuStore::commit`] in chunks of [`CHUNK`], in file order (so rows of
/// one SKU keep it), each chunk one group transaction beside the other
/// writes; the file as a whole is not one transaction (that would hold the
/// event clock, and every other write, for as long as the file takes).
///
/// Committed changes are published on the bus (other instances, sessions)
/// and offered to the SKU actors already running; no actor is started, so
/// a 100,000-row import does not activate 100,000 SKUs.
pub async fn apply(
    registry: &Registry,
    store: &dyn SkuStore,
    bus: &dyn EventBus,
    rows: Vec<ImportRow>,
    mut errors: Vec<RowError>,
    actor: Option<String>,
) -> Result<ImportReport, ActorError> {
    let mut report = ImportReport::default();
    let mut rows = rows.into_iter().peekable();
    let mut imported = 0;
    let mut analyse_at = ANALYSE_FIRST_AT;
    let mut in_flight = FuturesOrdered::new();
    // Codes of the chunks in flight: a chunk sharing one waits, so the
    // rows of one SKU still commit in file order.
    let mut flying: HashSet<SkuCode> = HashSet::new();
    let mut waiting: Option<Vec<ImportRow>> = None;
    loop {
        while in_flight.len() < CHUNKS_IN_FLIGHT {
            let chunk = match waiting.take() {
                Some(chunk) => chunk,
                None if rows.peek().is_some() => rows.by_ref().take(CHUNK).collect(),
                None => break,
            };
            if chunk.iter().any(|row| flying.contains(&row.sku)) {
                waiting = Some(chunk);
                break;
            }
            if imported >= analyse_at {
                analyse_at *= 2;
                // Only slower if it fails: the rows are imported either way.
                if let Err(error) = store.refresh_statistics().await {
                    tracing::warn!(%error, "planner statistics not refreshed during an import");
                }
            }
            imported += chunk.len();
            let lines: Vec<u64> = chunk.iter().map(|row| row.line).collect();
            let codes: HashSet<SkuCode> = chunk.iter().map(|row| row.sku.clone()).collect();
            flying.extend(codes.iter().cloned());
            let jobs: Vec<WriteJob> = chunk
                .into_iter()
                .map(|row| job(row, actor.clone()))
                .collect();
            in_flight.push_back(async move {
                let outcomes = commit_patiently(store, jobs).await;
                (lines, codes, outcomes)
            });
        }
        let Some((lines, codes, outcomes)) = in_flight.next().await else {
            break;
        };
        for code in &codes {
            flying.remove(code);
        }
        let mut committed = Vec::new();
        for (line, outcome) in lines.into_iter().zip(outcomes) {
            match row_result(outcome, &mut committed) {
                Ok(RowResult::Created) => report.created += 1,
                Ok(RowResult::Updated) => report.updated += 1,
                Ok(RowResult::Unchanged) => report.unchanged += 1,
                Err(message) => errors.push(RowError { line, message }),
            }
        }
        if !committed.is_empty() {
            bus.publish(&committed);
            for change in &committed {
                registry.apply(change);
            }
        }
    }
    errors.sort_by_key(|e| e.line);
    report.errors = errors;
    Ok(report)
}

/// Rows after which an import first refreshes the planner statistics
/// ([`SkuStore::refresh_statistics`]), then again each time the count
/// doubles: about 6 times for 100,000 rows, a few milliseconds each, where
/// a plan made on an empty alerts table cost 48 ms a chunk at 100,000
/// SKUs (BENCHMARKS.md, import).
const ANALYSE_FIRST_AT: usize = 2_048;

/// Rows in one [`SkuStore::commit`] call: one group transaction of a few
/// milliseconds, so other writes wait little behind it.
const CHUNK: usize = 256;

/// Chunks committing at once. On PostgreSQL they run as transactions of
/// their own on the group's committers, so one chunk's locks and updates
/// overlap another's event insert and COMMIT (only the event clock, taken
/// last, is held one at a time); SQLite's single writer runs them in turn.
/// Chunks sharing a SKU code never fly together.
const CHUNKS_IN_FLIGHT: usize = 4;

/// Import is server-side bulk work that must run to its end: a chunk
/// refused as a whole with nothing done (the write queue full, a bounded
/// wait elapsed: [`StoreError::Busy`]) is sent again after a backoff
/// (100 ms doubling to 2 s, at most 10 sends); nothing else is.
async fn commit_patiently(
    store: &dyn SkuStore,
    jobs: Vec<WriteJob>,
) -> Vec<Result<WriteOutcome, StoreError>> {
    let mut delay = Duration::from_millis(100);
    for _ in 1..10 {
        let outcomes = store.commit(jobs.clone()).await;
        if !outcomes
            .iter()
            .all(|o| matches!(o, Err(StoreError::Busy(_))))
        {
            return outcomes;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    store.commit(jobs).await
}

fn job(row: ImportRow, actor: Option<String>) -> WriteJob {
    let upsert = Upsert {
        new: NewSku {
            name: row.name,
            price: row.price,
            stock: row.stock.unwrap_or(0),
            low_stock_threshold: row
                .low_stock_threshold
                .unwrap_or(DEFAULT_LOW_STOCK_THRESHOLD),
            price_guard: PriceGuard::default(),
            lead_time_days: None,
            alert_rule: None,
        },
        stock_given: row.stock.is_some(),
        threshold_given: row.low_stock_threshold.is_some(),
    };
    WriteJob::Single {
        sku: row.sku,
        request: WriteRequest {
            command: Command::Upsert(Box::new(upsert)),
            meta: WriteMeta {
                reason: Some("import".into()),
                actor,
                if_match: None,
            },
            idempotency: None,
        },
    }
}

/// What a row did, or its error message; its committed changes go to
/// `committed`.
fn row_result(
    outcome: Result<WriteOutcome, StoreError>,
    committed: &mut Vec<Arc<Committed>>,
) -> Result<RowResult, String> {
    match outcome {
        Ok(WriteOutcome::Committed(changes)) => {
            let result = match changes.first() {
                None => RowResult::Unchanged,
                Some(first) if first.event.version == 1 => RowResult::Created,
                Some(_) => RowResult::Updated,
            };
            committed.extend(changes.into_iter().map(Arc::new));
            Ok(result)
        }
        Ok(WriteOutcome::Rejected(e)) => Err(match e {
            DomainError::PriceGuard(reason) => format!("price: {reason}"),
            DomainError::CurrencyMismatch { .. } => format!("currency: {e}"),
            other => other.to_string(),
        }),
        Ok(_) => Err("unexpected idempotent outcome".to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bom_quoted_commas_and_bad_rows_are_handled_by_line_number() {
        let csv = "\u{feff}sku,name,price,currency,stock\n\
                   85123A,\"HEART, WHITE\",2.55,GBP,120\n\
                   BAD CODE,x,1.00,GBP,1\n\
                   22423,\"REGENCY \"\"CAKESTAND\"\"\",12.75,GBP,\n\
                   X1,y,2.555,GBP,1\n\
                   X2,y,1,JPY,-1\n";
        let (rows, errors) = parse(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].name, "HEART, WHITE");
        assert_eq!(rows[0].stock, Some(120));
        assert_eq!(rows[1].name, "REGENCY \"CAKESTAND\"");
        assert_eq!(rows[1].stock, None);
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [3, 5, 6]);
    }

    #[test]
    fn line_numbers_are_right_with_crlf_line_ends_and_quoted_newlines() {
        let csv =
            "sku,name,price,currency\r\nA,\"two\r\nlines\",1.00,GBP\r\nBAD CODE,x,1.00,GBP\r\n";
        let (rows, errors) = parse(csv.as_bytes()).unwrap();
        assert_eq!(rows.len(), 0, "{rows:?}");
        let lines: Vec<u64> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4], "{errors:?}");
    }

    #[test]
    fn line_numbers_are_right_with_cr_only_line_ends() {
        let (_, errors) =
            parse(b"sku,name,price,currency\rA,b,1.00,GBP\rBAD CODE,x,1.00,GBP\r").unwrap();
        assert_eq!(errors[0].line, 3);
    }

    #[test]
    fn an_unknown_or_missing_column_refuses_the_file() {
        assert!(parse(b"sku,name,price\nA,b,1\n").is_err());
        assert!(parse(b"sku,name,price,currency,colour\n").is_err());
        assert!(parse(b"").is_err());
    }

    #[test]
    fn a_row_with_the_wrong_number_of_fields_is_reported() {
        let (rows, errors) = parse(b"sku,name,price,currency\nA,b,1.00\nB,c,1.00,GBP\n").unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(errors[0].line, 2);
    }
}

/// Property-based fuzzing of the CSV parser (proptest; see README,
/// Fuzzing): bounded cases (`SKUWATCH_FUZZ_CASES`, default 500).
#[cfg(test)]
mod fuzz {
    use proptest::prelude::*;

    use super::*;

    fn config() -> ProptestConfig {
        let cases = std::env::var("SKUWATCH_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// A row as a client would write it.
    #[derive(Debug, Clone)]
    struct Row {
        sku: String,
        name: String,
        minor: i64,
        stock: Option<i64>,
    }

    fn row() -> impl Strategy<Value = Row> {
        (
            "[A-Za-z0-9_-][A-Za-z0-9_.-]{0,19}",
            // Commas, quotes and inner spaces exercise RFC 4180 quoting.
            "[!-~]([ -~]{0,38}[!-~])?",
            1i64..1_000_000_000,
            prop::option::of(0i64..1_000_000),
        )
            .prop_map(|(sku, name, minor, stock)| Row {
                sku,
                name,
                minor,
                stock,
            })
    }

    fn write_csv(rows: &[Row], crlf: bool, bom: bool) -> Vec<u8> {
        let mut writer = csv::WriterBuilder::new()
            .terminator(if crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(Vec::new());
        writer
            .write_record(["sku", "name", "price", "currency", "stock"])
            .expect("header");
        let gbp = Currency::parse("GBP").expect("GBP");
        for row in rows {
            let price = Money {
                minor: row.minor,
                currency: gbp,
            }
            .to_decimal_string();
            let stock = row.stock.map(|s| s.to_string()).unwrap_or_default();
            writer
                .write_record([&row.sku, &row.name, &price, "GBP", &stock])
                .expect("row");
        }
        let mut bytes = if bom {
            b"\xEF\xBB\xBF".to_vec()
        } else {
            Vec::new()
        };
        bytes.extend(writer.into_inner().expect("flush"));
        bytes
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse(&bytes);
            let _ = parse_limited(&bytes, 3);
        }

        #[test]
        fn csv_looking_text_never_panics(
            body in "(sku|name|price|currency|stock|low_stock_threshold|[a-z\"]{1,5})(,[a-z_\"]{1,20}){0,6}\r?\n([A-Za-z0-9 .,\"\r\n-]{0,40}\r?\n){0,20}"
        ) {
            if let Ok((rows, errors)) = parse(body.as_bytes()) {
                let lines = body.lines().count() as u64 + 1;
                for row in &rows {
                    prop_assert!(row.line >= 2 && row.line <= lines, "{:?}", row);
                }
                for error in &errors {
                    prop_assert!(error.line >= 1 && error.line <= lines, "{:?}", error);
                }
            }
        }

        #[test]
        fn written_rows_parse_back_the_same(
            rows in prop::collection::vec(row(), 0..30),
            crlf in any::<bool>(),
            bom in any::<bool>(),
        ) {
            let bytes = write_csv(&rows, crlf, bom);
            let (parsed, errors) = parse(&bytes).expect("a valid header");
            prop_assert!(errors.is_empty(), "{:?}", errors);
            prop_assert_eq!(parsed.len(), rows.len());
            for (i, (got, want)) in parsed.iter().zip(&rows).enumerate() {
                prop_assert_eq!(got.sku.as_str(), want.sku.as_str());
                prop_assert_eq!(&got.name, &want.name);
                prop_assert_eq!(got.price.minor, want.minor);
                prop_assert_eq!(got.stock, want.stock);
                prop_assert_eq!(got.line, i as u64 + 2, "one line per row");
            }
            // The row limit refuses exactly when there are more rows.
            let limited = parse_limited(&bytes, rows.len().max(1) - usize::from(!rows.is_empty()));
            if rows.len() > 1 {
                prop_assert!(matches!(limited, Err(FileError::TooManyRows(_))));
            }
            prop_assert!(parse_limited(&bytes, rows.len()).is_ok());
        }
    }
}
