//! The SKU, its change events, and the rules that turn a command into a
//! change. These rules live here and nowhere else: the store calls
//! [`decide`] on the row it has locked, so every backend and every path
//! (REST, batch, import, replay) obeys the same rules.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    forecast, forecast_alert, forecast_config, AlertRule, Currency, Forecast, ForecastTransition,
    Micros, Money, SalesRate, SkuCode,
};

/// Price guard of a SKU (API.md, SKUs). Enforced from the alerts issue on;
/// stored and shown already.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceGuard {
    /// Largest allowed change against the current price, in whole percent.
    pub max_change_pct: Option<i64>,
    /// Lowest allowed price, in minor units.
    pub min_price: Option<i64>,
    /// Highest allowed price, in minor units.
    pub max_price: Option<i64>,
}

impl Default for PriceGuard {
    /// API.md: `{"max_change_pct": 50}`.
    fn default() -> Self {
        Self {
            max_change_pct: Some(50),
            min_price: None,
            max_price: None,
        }
    }
}

/// The state of one SKU at one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sku {
    pub sku: SkuCode,
    pub name: String,
    pub currency: Currency,
    /// Price in minor units of `currency`; always > 0.
    pub price_minor: i64,
    /// Units on hand; never negative (also a CHECK in the database).
    pub stock: i64,
    /// Units held by active holds (issue 17; a CHECK keeps it >= 0). A
    /// physical count may set `stock` below it: see [`Sku::available`].
    pub reserved: i64,
    pub low_stock_threshold: i64,
    pub price_guard: PriceGuard,
    /// Days a delivery ordered now takes (issue 18); `None` follows the
    /// server's setting ([`ForecastConfig::lead_time_days`]).
    pub lead_time_days: Option<i64>,
    /// Which rules raise stock alerts (issue 18); `None` follows the
    /// server's setting.
    pub alert_rule: Option<AlertRule>,
    /// The running state of the sales rate (issue 18), saved with the row.
    /// `None` when missing (a row from before migration 0009, an external
    /// INSERT, a changed half-life): the write path rebuilds it from the
    /// SKU's events before its next change. Not part of the API object.
    pub sales_rate: Option<SalesRate>,
    /// The forecast as of `updated_at` (API.md v1 additions): derived from
    /// `sales_rate` and `available` by [`Sku::refresh_forecast`] whenever
    /// either changes, so one version has one body.
    pub forecast: Forecast,
    /// Incremented by exactly 1 on every change.
    pub version: i64,
    pub updated_at: Micros,
}

impl Sku {
    /// Lead time in days: the SKU's own, else the server's setting.
    pub fn effective_lead_time_days(&self) -> i64 {
        self.lead_time_days
            .unwrap_or_else(|| forecast_config().lead_time_days)
    }

    /// The alert rule: the SKU's own, else the server's setting.
    pub fn effective_alert_rule(&self) -> AlertRule {
        self.alert_rule
            .unwrap_or_else(|| forecast_config().alert_rule)
    }

    /// Whether re-reading the forecast as of `now` ends an open
    /// `stockout_forecast` alert: with no sales since, the rate falls and
    /// the cover grows until it reaches the resolve level (or the rule no
    /// longer uses the forecast). What the periodic re-evaluation asks
    /// before it writes a [`Command::Reforecast`].
    pub fn reforecast_ends_alert(&self, now: Micros) -> bool {
        if !self.effective_alert_rule().uses_forecast() {
            return true;
        }
        let mut later = self.clone();
        later.updated_at = later.updated_at.max(now);
        later.refresh_forecast();
        forecast_alert(
            &later.forecast,
            self.effective_lead_time_days(),
            true,
            &forecast_config().params,
        ) == Some(ForecastTransition::Resolve)
    }

    /// Recomputes [`Sku::forecast`] as of `updated_at` from the rate and
    /// `available` (no forecast while the rate is missing).
    pub fn refresh_forecast(&mut self) {
        self.forecast = match &self.sales_rate {
            Some(rate) => forecast(
                rate,
                self.available(),
                self.updated_at,
                &forecast_config().params,
            ),
            None => Forecast::none(self.updated_at),
        };
    }

    /// Units that can still be sold or held: `stock - reserved` (API.md v1
    /// additions). Negative after a physical count below what is held;
    /// the stock alerts and `below_threshold` are judged on it.
    pub fn available(&self) -> i64 {
        self.stock.saturating_sub(self.reserved)
    }

    pub fn price(&self) -> Money {
        Money {
            minor: self.price_minor,
            currency: self.currency,
        }
    }

    /// The API.md SKU object, as a `Value` (for code that edits it); its
    /// text comes from the `Serialize` impl, the one definition of it.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a SKU always serialises")
    }

    /// The API.md SKU object as JSON text (the event row, the Redis hash).
    pub fn to_json_text(&self) -> String {
        // Every field is a string, a number or null, and no map has a
        // non-string key: serde_json cannot fail on it.
        serde_json::to_string(self).expect("a SKU always serialises")
    }
}

impl Sku {
    /// Reads back the JSON kept with each event: the API.md object of
    /// [`Sku::to_json`], or the row's own columns (`price_minor`,
    /// `guard_*`, `updated_us`), which the database writes for a change
    /// made straight in SQL (`migrations/*/0007`): the SKU object is then
    /// computed here, by the same code as for every other row.
    pub fn from_json(value: &Value) -> Option<Self> {
        if value.get("price_minor").is_some() {
            return Self::from_row_json(value);
        }
        let text = |key: &str| value.get(key)?.as_str();
        let currency = Currency::parse(text("currency")?).ok()?;
        let money = |v: &Value| -> Option<Option<i64>> {
            match v {
                Value::Null => Some(None),
                Value::String(s) => Money::parse(s, currency).ok().map(|m| Some(m.minor)),
                _ => None,
            }
        };
        let guard = value.get("price_guard")?;
        let updated_at = Micros::parse_rfc3339(text("updated_at")?)?;
        Some(Self {
            sku: SkuCode::parse(text("sku")?).ok()?,
            name: text("name")?.to_owned(),
            currency,
            price_minor: Money::parse(text("price")?, currency).ok()?.minor,
            stock: value.get("stock")?.as_i64()?,
            reserved: reserved(value)?,
            low_stock_threshold: value.get("low_stock_threshold")?.as_i64()?,
            price_guard: PriceGuard {
                max_change_pct: guard.get("max_change_pct")?.as_i64(),
                min_price: money(guard.get("min_price")?)?,
                max_price: money(guard.get("max_price")?)?,
            },
            // As shown (objects from before issue 18 have none: the
            // settings then, no forecast).
            lead_time_days: match value.get("lead_time_days") {
                None => None,
                Some(v) => Some(v.as_i64()?),
            },
            alert_rule: match value.get("alert_rule") {
                None => None,
                Some(v) => Some(AlertRule::parse(v.as_str()?)?),
            },
            sales_rate: None,
            forecast: match value.get("forecast") {
                None => Forecast::none(updated_at),
                Some(v) => serde_json::from_value(v.clone()).ok()?,
            },
            version: value.get("version")?.as_i64()?,
            updated_at,
        })
    }
}

impl Sku {
    /// The `skus` row as a JSON object of its columns.
    fn from_row_json(value: &Value) -> Option<Self> {
        let int = |key: &str| value.get(key)?.as_i64();
        let optional = |key: &str| match value.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(other) => other.as_i64().map(Some),
        };
        // The forecast columns (migration 0009) are absent from states
        // written before it.
        let text = |key: &str| match value.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(other) => other.as_str().map(Some),
        };
        let alert_rule = match text("alert_rule")? {
            None => None,
            Some(raw) => Some(AlertRule::parse(raw)?),
        };
        // As `sku_from_row`: a rate kept under another half-life is missing.
        let sales_rate = text("sales_rate")?
            .and_then(SalesRate::decode)
            .filter(|rate| rate.is_for(&forecast_config().params));
        let mut sku = Self {
            sku: SkuCode::parse(value.get("sku")?.as_str()?).ok()?,
            name: value.get("name")?.as_str()?.to_owned(),
            currency: Currency::parse(value.get("currency")?.as_str()?).ok()?,
            price_minor: int("price_minor")?,
            stock: int("stock")?,
            reserved: reserved(value)?,
            low_stock_threshold: int("low_stock_threshold")?,
            price_guard: PriceGuard {
                max_change_pct: optional("guard_max_change_pct")?,
                min_price: optional("guard_min_price")?,
                max_price: optional("guard_max_price")?,
            },
            lead_time_days: optional("lead_time_days")?,
            alert_rule,
            sales_rate,
            forecast: Forecast::none(Micros(0)),
            version: int("version")?,
            updated_at: Micros(int("updated_us")?),
        };
        sku.refresh_forecast();
        Some(sku)
    }
}

/// `reserved` of a stored SKU object: 0 in those written before holds
/// existed (issue 17).
fn reserved(value: &Value) -> Option<i64> {
    match value.get("reserved") {
        None => Some(0),
        Some(v) => v.as_i64(),
    }
}

/// The API.md SKU object, written field by field: a SKU is serialised
/// several times a write (the event row, the HTTP answer, the bus, the
/// push), and going through a `Value` tree cost an allocation per key each
/// time (issue 15; `../shared/perf` counts `Sku::to_json` among the
/// allocators).
impl Serialize for Sku {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut object = s.serialize_struct("Sku", 14)?;
        object.serialize_field("sku", &self.sku)?;
        object.serialize_field("name", &self.name)?;
        object.serialize_field("currency", &self.currency)?;
        object.serialize_field("price", &self.price().to_decimal_string())?;
        object.serialize_field("stock", &self.stock)?;
        object.serialize_field("reserved", &self.reserved)?;
        object.serialize_field("available", &self.available())?;
        object.serialize_field("low_stock_threshold", &self.low_stock_threshold)?;
        object.serialize_field("price_guard", &GuardJson(self))?;
        object.serialize_field("lead_time_days", &self.effective_lead_time_days())?;
        object.serialize_field("alert_rule", &self.effective_alert_rule())?;
        object.serialize_field("forecast", &self.forecast)?;
        object.serialize_field("version", &self.version)?;
        object.serialize_field("updated_at", &self.updated_at)?;
        object.end()
    }
}

/// A SKU's `price_guard` object: the bounds as decimal strings of its
/// currency.
struct GuardJson<'a>(&'a Sku);

impl Serialize for GuardJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let sku = self.0;
        let money = |minor: Option<i64>| {
            minor.map(|minor| {
                Money {
                    minor,
                    currency: sku.currency,
                }
                .to_decimal_string()
            })
        };
        let mut object = s.serialize_struct("PriceGuard", 3)?;
        object.serialize_field("max_change_pct", &sku.price_guard.max_change_pct)?;
        object.serialize_field("min_price", &money(sku.price_guard.min_price))?;
        object.serialize_field("max_price", &money(sku.price_guard.max_price))?;
        object.end()
    }
}

impl<'de> Deserialize<'de> for Sku {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Self::from_json(&value).ok_or_else(|| serde::de::Error::custom("not a SKU object"))
    }
}

/// Which part of a SKU an event changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Field {
    Stock,
    Price,
    /// Creation, name, threshold or price guard.
    Meta,
    /// The units held by holds (issue 17): `old`/`new` are `reserved`.
    Reserved,
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Stock => "stock",
            Field::Price => "price",
            Field::Meta => "meta",
            Field::Reserved => "reserved",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "stock" => Some(Field::Stock),
            "price" => Some(Field::Price),
            "meta" => Some(Field::Meta),
            "reserved" => Some(Field::Reserved),
            _ => None,
        }
    }
}

/// One change to one SKU (API.md, Events). `event_id` is global and
/// gap-free, assigned by the database in commit order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: i64,
    pub sku: SkuCode,
    pub version: i64,
    pub at: Micros,
    pub field: Field,
    /// Stock as an integer, price as a decimal string, meta as an object.
    pub old: Value,
    pub new: Value,
    pub delta: Option<i64>,
    pub reason: Option<String>,
    pub actor: Option<String>,
}

impl Event {
    /// The SKU right before this event, from the state right after it and
    /// the event's `old` value: what alert rules compare against for a
    /// change the server did not decide (an external write, issue 16).
    /// `None` for a creation (no `old`), or an `old` that cannot be read.
    /// The result's `updated_at` is `after`'s (not recorded per event).
    pub fn state_before(&self, after: &Sku) -> Option<Sku> {
        if self.old.is_null() {
            return None;
        }
        let mut before = after.clone();
        before.version = after.version - 1;
        let money = |v: &Value| match v {
            Value::Null => Some(None),
            Value::String(s) => Money::parse(s, after.currency).ok().map(|m| Some(m.minor)),
            _ => None,
        };
        match self.field {
            Field::Stock => before.stock = self.old.as_i64()?,
            Field::Reserved => before.reserved = self.old.as_i64()?,
            Field::Price => {
                before.price_minor = money(&self.old)??;
            }
            Field::Meta => {
                if let Some(name) = self.old.get("name") {
                    before.name = name.as_str()?.to_owned();
                }
                if let Some(threshold) = self.old.get("low_stock_threshold") {
                    before.low_stock_threshold = threshold.as_i64()?;
                }
                if let Some(days) = self.old.get("lead_time_days") {
                    before.lead_time_days = Some(days.as_i64()?);
                }
                if let Some(rule) = self.old.get("alert_rule") {
                    before.alert_rule = Some(AlertRule::parse(rule.as_str()?)?);
                }
                if let Some(guard) = self.old.get("price_guard") {
                    let pct = guard.get("max_change_pct")?;
                    before.price_guard = PriceGuard {
                        max_change_pct: if pct.is_null() {
                            None
                        } else {
                            Some(pct.as_i64()?)
                        },
                        min_price: money(guard.get("min_price")?)?,
                        max_price: money(guard.get("max_price")?)?,
                    };
                }
            }
        }
        Some(before)
    }
}

/// A committed change: the event, the SKU state right after it, and the
/// alerts it raised or resolved. This is what the bus carries and what a
/// WebSocket client receives. Its JSON (`{"event", "sku", "alerts"}`) is what
/// travels between instances on the Redis bus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Committed {
    pub event: Event,
    pub sku: Sku,
    pub alerts: Vec<super::Alert>,
}

/// Fields of a new SKU (API.md `POST /skus`).
#[derive(Debug, Clone)]
pub struct NewSku {
    pub name: String,
    pub price: Money,
    pub stock: i64,
    pub low_stock_threshold: i64,
    pub price_guard: PriceGuard,
    /// `None`: follow the server's setting (issue 18).
    pub lead_time_days: Option<i64>,
    /// `None`: follow the server's setting (issue 18).
    pub alert_rule: Option<AlertRule>,
}

/// Part of a price guard (`PATCH`): per field, `None` keeps the stored
/// value, `Some(None)` clears it, `Some(Some(v))` sets it. [`decide`] merges
/// it into the guard of the row as locked in the write's transaction, so
/// two PATCHes of different fields cannot lose one another (a copy read
/// before the write would be stale by then).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardPatch {
    pub max_change_pct: Option<Option<i64>>,
    /// Minor units of the SKU's currency (fixed at creation).
    pub min_price: Option<Option<i64>>,
    pub max_price: Option<Option<i64>>,
}

impl GuardPatch {
    /// `base` with this patch applied; refused with the field at fault
    /// ([`DomainError::Invalid`]) when `min_price` would exceed `max_price`.
    pub fn merge(&self, base: &PriceGuard, currency: Currency) -> Result<PriceGuard, DomainError> {
        let guard = PriceGuard {
            max_change_pct: self.max_change_pct.unwrap_or(base.max_change_pct),
            min_price: self.min_price.unwrap_or(base.min_price),
            max_price: self.max_price.unwrap_or(base.max_price),
        };
        if let (Some(min), Some(max)) = (guard.min_price, guard.max_price) {
            if min > max {
                // Name what the client sent: the bound it set, else both.
                let field = match (self.min_price, self.max_price) {
                    (Some(Some(_)), _) => "price_guard.min_price",
                    (_, Some(Some(_))) => "price_guard.max_price",
                    _ => "price_guard",
                };
                let show = |minor| Money { minor, currency }.to_decimal_string();
                return Err(DomainError::Invalid {
                    field: field.to_owned(),
                    message: format!(
                        "min_price {} must not exceed max_price {}",
                        show(min),
                        show(max)
                    ),
                });
            }
        }
        Ok(guard)
    }
}

/// A catalog row (CSV import, API.md `POST /import`): creates the SKU from
/// `new` when it does not exist; otherwise changes what differs from the
/// row as locked in the transaction: the price (inside the guard), then the
/// name and threshold, then the stock. Each is its own event, and all of
/// them one transaction, so a refused price changes nothing of the row and
/// no other write lands between a row's events. Deciding it all against the
/// locked row is what lets two imports of the same new SKUs run at once:
/// one creates, the other finds the row and changes nothing.
#[derive(Debug, Clone)]
pub struct Upsert {
    pub new: NewSku,
    /// The row gave a stock (else the stored stock is kept).
    pub stock_given: bool,
    /// The row gave a threshold (else the stored one is kept).
    pub threshold_given: bool,
}

/// A change asked for by a client, already validated field by field.
#[derive(Debug, Clone)]
pub enum Command {
    Create(NewSku),
    /// Create, or update what differs; see [`Upsert`]. May decide zero,
    /// one or several changes.
    Upsert(Box<Upsert>),
    Patch {
        name: Option<String>,
        low_stock_threshold: Option<i64>,
        price_guard: Option<GuardPatch>,
        /// `Some(None)`: follow the server's setting again.
        lead_time_days: Option<Option<i64>>,
        /// `Some(None)`: follow the server's setting again.
        alert_rule: Option<Option<AlertRule>>,
    },
    /// The forecast re-read as of now (issue 18): time passing with no
    /// sales lowers the rate, which may end a `stockout_forecast` alert. A
    /// `meta` event with reason `forecast` whose `old`/`new` are the
    /// forecasts; the planner computes the new one (it knows the time) and
    /// plans nothing when the alerts would not change.
    Reforecast,
    SetPrice {
        price: Money,
        /// Lets an out-of-guard price through (price guard issue).
        confirm: bool,
    },
    SetStock {
        stock: i64,
    },
    Adjust {
        delta: i64,
    },
}

/// Who asked for a change, and why.
#[derive(Debug, Clone, Default)]
pub struct WriteMeta {
    pub reason: Option<String>,
    pub actor: Option<String>,
    /// `If-Match` (API.md, optimistic concurrency; RFC 9110 §13.1.1): the
    /// versions the SKU must be at, one of them, for the write to go ahead.
    /// `None`: no condition. An empty list never matches (the client named
    /// only tags that cannot match, such as weak ones).
    pub if_match: Option<Vec<i64>>,
}

/// A command refused by the domain rules; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("SKU {0} does not exist")]
    NotFound(SkuCode),
    #[error("SKU {0} already exists")]
    AlreadyExists(SkuCode),
    #[error("SKU {sku} is at version {current}, not {}", versions(.expected))]
    VersionMismatch {
        sku: SkuCode,
        /// The versions `If-Match` named (empty: none it could name).
        expected: Vec<i64>,
        current: i64,
    },
    #[error("not enough stock")]
    InsufficientStock(Vec<Shortfall>),
    #[error("SKU {sku} is priced in {expected}, not {got}")]
    CurrencyMismatch {
        sku: SkuCode,
        expected: Currency,
        got: Currency,
    },
    #[error(
        "the stock of {0} would pass the largest number this server counts (9223372036854775807)"
    )]
    StockOverflow(SkuCode),
    /// A value the domain refuses once merged with the locked row (a
    /// guard whose bounds cross), or a sum of client numbers out of range;
    /// `field` names it as the request did (`price_guard.min_price`,
    /// `adjustments[3].delta`).
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A price outside the SKU's guard without `confirm` (API.md, SKUs).
    #[error("{0}")]
    PriceGuard(String),
    /// A hold's lines asked for more than is available (409
    /// `insufficient_available`, API.md v1 additions); nothing was held.
    #[error("not enough available")]
    InsufficientAvailable(Vec<super::HoldShortfall>),
    /// No hold has this id (404).
    #[error("hold {0} does not exist")]
    HoldNotFound(super::HoldId),
    /// The hold ended (or passed its expiry) before this call (409
    /// `hold_not_active`): says how it ended and, once committed, the
    /// events of its sale.
    #[error("hold {id} is {}", status.as_str())]
    HoldNotActive {
        id: super::HoldId,
        status: super::HoldStatus,
        event_ids: Vec<i64>,
    },
}

/// `4`, `4 or 5`, or what `If-Match` named when it named no version.
fn versions(expected: &[i64]) -> String {
    match expected {
        [] => "one that If-Match can name (a weak or foreign entity-tag never matches)".to_owned(),
        list => list
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

/// One SKU that lacked stock for an adjustment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    pub sku: SkuCode,
    pub stock: i64,
    /// Units held (issue 17): an adjustment may not take `stock` below it.
    #[serde(skip_serializing_if = "is_zero")]
    pub reserved: i64,
    /// What the adjustment took: its delta, or in a batch the lowest sum
    /// the SKU's lines reach.
    pub delta: i64,
    /// In a batch, the index of the line that went below 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// In a hold's commit, the index of the hold's line whose quantity
    /// the stock no longer covers (a count left fewer units than held).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_line: Option<usize>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The outcome of [`decide`]: the new state and the event to append
/// (without its `event_id`, which the database assigns).
#[derive(Debug, Clone)]
pub struct Change {
    /// The state before (`None` for a creation).
    pub previous: Option<Sku>,
    pub state: Sku,
    pub field: Field,
    pub old: Value,
    pub new: Value,
    pub delta: Option<i64>,
    /// Why an accepted price change is outside the guard (it raises a
    /// `price_anomaly` alert).
    pub price_anomaly: Option<String>,
    /// The event's reason when the rule sets it (holds: `hold`,
    /// `hold_expired`, ...); `None` takes the writer's.
    pub reason: Option<&'static str>,
    /// The first of two changes that are one step for the alerts (a
    /// committed hold's release, then its sale: `available` ends where it
    /// was): judged together with the next change of the SKU, from this
    /// one's `previous`, so no alert opens and closes in between.
    pub judged_with_next: bool,
}

/// Applies `command` to `current` (the row as locked in the transaction).
/// Every read-modify-write of a SKU happens here, against that row: what a
/// handler read before the write may be stale by the time the row is
/// locked. Returns the changes in order, each with `version + 1` on the
/// one before and `updated_at = now`: one for most commands, none to
/// several for [`Command::Upsert`].
pub fn decide(
    sku: &SkuCode,
    current: Option<&Sku>,
    command: &Command,
    meta: &WriteMeta,
    now: Micros,
) -> Result<Vec<Change>, DomainError> {
    let Command::Upsert(upsert) = command else {
        return decide_one(sku, current, command, meta, now).map(|c| vec![c]);
    };
    let Some(current) = current else {
        return Ok(vec![create(sku, &upsert.new, now)]);
    };
    check_version(sku, current, meta)?;
    let new = &upsert.new;
    if new.price.currency != current.currency {
        return Err(DomainError::CurrencyMismatch {
            sku: sku.clone(),
            expected: current.currency,
            got: new.price.currency,
        });
    }
    // If-Match holds for the first step; the later ones follow from it.
    let step_meta = WriteMeta {
        if_match: None,
        ..meta.clone()
    };
    let mut steps = Vec::new();
    if new.price.minor != current.price_minor {
        steps.push(Command::SetPrice {
            price: new.price,
            confirm: false,
        });
    }
    let name = (new.name != current.name).then(|| new.name.clone());
    let threshold = (upsert.threshold_given
        && new.low_stock_threshold != current.low_stock_threshold)
        .then_some(new.low_stock_threshold);
    if name.is_some() || threshold.is_some() {
        steps.push(Command::Patch {
            name,
            low_stock_threshold: threshold,
            price_guard: None,
            lead_time_days: None,
            alert_rule: None,
        });
    }
    if upsert.stock_given && new.stock != current.stock {
        steps.push(Command::SetStock { stock: new.stock });
    }
    let mut changes: Vec<Change> = Vec::with_capacity(steps.len());
    for step in &steps {
        let state = changes.last().map_or(current, |c| &c.state);
        changes.push(decide_one(sku, Some(state), step, &step_meta, now)?);
    }
    Ok(changes)
}

fn check_version(sku: &SkuCode, current: &Sku, meta: &WriteMeta) -> Result<(), DomainError> {
    match &meta.if_match {
        Some(expected) if !expected.contains(&current.version) => {
            Err(DomainError::VersionMismatch {
                sku: sku.clone(),
                expected: expected.clone(),
                current: current.version,
            })
        }
        _ => Ok(()),
    }
}

/// [`decide`] for the commands that make exactly one change.
fn decide_one(
    sku: &SkuCode,
    current: Option<&Sku>,
    command: &Command,
    meta: &WriteMeta,
    now: Micros,
) -> Result<Change, DomainError> {
    let current = match (current, command) {
        (None, Command::Create(new)) => return Ok(create(sku, new, now)),
        (Some(_), Command::Create(_)) => return Err(DomainError::AlreadyExists(sku.clone())),
        (None, _) => return Err(DomainError::NotFound(sku.clone())),
        (Some(current), _) => current,
    };
    check_version(sku, current, meta)?;
    let mut state = current.clone();
    state.version += 1;
    state.updated_at = now;
    let mut price_anomaly = None;
    let (field, old, new, delta) = match command {
        Command::Create(_) | Command::Upsert(_) => unreachable!("handled above"),
        Command::Patch {
            name,
            low_stock_threshold,
            price_guard,
            lead_time_days,
            alert_rule,
        } => {
            let mut old = serde_json::Map::new();
            let mut new = serde_json::Map::new();
            if let Some(name) = name {
                old.insert("name".into(), json!(state.name));
                new.insert("name".into(), json!(name));
                state.name = name.clone();
            }
            if let Some(threshold) = low_stock_threshold {
                old.insert(
                    "low_stock_threshold".into(),
                    json!(state.low_stock_threshold),
                );
                new.insert("low_stock_threshold".into(), json!(threshold));
                state.low_stock_threshold = *threshold;
            }
            if let Some(patch) = price_guard {
                old.insert(
                    "price_guard".into(),
                    current.to_json()["price_guard"].clone(),
                );
                state.price_guard = patch.merge(&current.price_guard, current.currency)?;
                new.insert("price_guard".into(), state.to_json()["price_guard"].clone());
            }
            // As shown: the effective values, so a reset to the setting
            // reads as the number it now is.
            if let Some(days) = lead_time_days {
                old.insert(
                    "lead_time_days".into(),
                    json!(state.effective_lead_time_days()),
                );
                state.lead_time_days = *days;
                new.insert(
                    "lead_time_days".into(),
                    json!(state.effective_lead_time_days()),
                );
            }
            if let Some(rule) = alert_rule {
                old.insert("alert_rule".into(), json!(state.effective_alert_rule()));
                state.alert_rule = *rule;
                new.insert("alert_rule".into(), json!(state.effective_alert_rule()));
            }
            (Field::Meta, Value::Object(old), Value::Object(new), None)
        }
        Command::Reforecast => {
            let old = json!({ "forecast": current.forecast });
            return Ok(Change {
                previous: Some(current.clone()),
                state,
                field: Field::Meta,
                // Filled in by the planner with the forecast as of now.
                new: old.clone(),
                old,
                delta: None,
                price_anomaly: None,
                reason: Some(REFORECAST_REASON),
                judged_with_next: false,
            });
        }
        Command::SetPrice { price, confirm } => {
            if price.currency != current.currency {
                return Err(DomainError::CurrencyMismatch {
                    sku: sku.clone(),
                    expected: current.currency,
                    got: price.currency,
                });
            }
            price_anomaly = super::guard_violation(&current.price_guard, current.price(), *price);
            if let (Some(reason), false) = (&price_anomaly, confirm) {
                return Err(DomainError::PriceGuard(reason.clone()));
            }
            state.price_minor = price.minor;
            (
                Field::Price,
                json!(current.price().to_decimal_string()),
                json!(price.to_decimal_string()),
                None,
            )
        }
        Command::SetStock { stock } => {
            state.stock = *stock;
            // Both are >= 0, so this cannot overflow; checked all the same.
            let delta = stock
                .checked_sub(current.stock)
                .ok_or_else(|| DomainError::StockOverflow(sku.clone()))?;
            (
                Field::Stock,
                json!(current.stock),
                json!(stock),
                Some(delta),
            )
        }
        Command::Adjust { delta } => {
            let stock = current
                .stock
                .checked_add(*delta)
                .ok_or_else(|| DomainError::StockOverflow(sku.clone()))?;
            // Held units are sold already: a sale never takes them
            // (issue 17). A physical count (`SetStock`) may.
            if stock < 0 || (*delta < 0 && stock < current.reserved) {
                return Err(DomainError::InsufficientStock(vec![Shortfall {
                    sku: sku.clone(),
                    stock: current.stock,
                    reserved: current.reserved,
                    delta: *delta,
                    line: None,
                    held_line: None,
                }]));
            }
            state.stock = stock;
            (
                Field::Stock,
                json!(current.stock),
                json!(stock),
                Some(*delta),
            )
        }
    };
    Ok(Change {
        previous: Some(current.clone()),
        state,
        field,
        old,
        new,
        delta,
        price_anomaly,
        reason: None,
        judged_with_next: false,
    })
}

/// The reason of a [`Command::Reforecast`] event.
pub const REFORECAST_REASON: &str = "forecast";

fn create(sku: &SkuCode, new: &NewSku, now: Micros) -> Change {
    let mut state = Sku {
        sku: sku.clone(),
        name: new.name.clone(),
        currency: new.price.currency,
        price_minor: new.price.minor,
        stock: new.stock,
        reserved: 0,
        low_stock_threshold: new.low_stock_threshold,
        price_guard: new.price_guard.clone(),
        lead_time_days: new.lead_time_days,
        alert_rule: new.alert_rule,
        sales_rate: Some(SalesRate::new(&forecast_config().params)),
        forecast: Forecast::none(now),
        version: 1,
        updated_at: now,
    };
    state.refresh_forecast();
    let mut created = state.to_json();
    if let Value::Object(map) = &mut created {
        map.remove("version");
        map.remove("updated_at");
    }
    Change {
        previous: None,
        state,
        field: Field::Meta,
        old: Value::Null,
        new: created,
        delta: None,
        price_anomaly: None,
        reason: None,
        judged_with_next: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> SkuCode {
        SkuCode::parse("85123A").unwrap()
    }

    fn sku(stock: i64) -> Sku {
        Sku {
            sku: code(),
            name: "WHITE HANGING HEART T-LIGHT HOLDER".into(),
            currency: Currency::parse("GBP").unwrap(),
            price_minor: 255,
            stock,
            reserved: 0,
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            version: 7,
            updated_at: Micros(0),
            lead_time_days: None,
            alert_rule: None,
            sales_rate: Some(crate::domain::SalesRate::new(
                &crate::domain::RateParams::default(),
            )),
            forecast: crate::domain::Forecast::none(crate::domain::Micros(0)),
        }
    }

    fn adjust(current: &Sku, delta: i64) -> Result<Change, DomainError> {
        one(decide(
            &code(),
            Some(current),
            &Command::Adjust { delta },
            &WriteMeta::default(),
            Micros(1),
        ))
    }

    fn one(decided: Result<Vec<Change>, DomainError>) -> Result<Change, DomainError> {
        decided.map(|mut changes| {
            assert_eq!(changes.len(), 1);
            changes.remove(0)
        })
    }

    fn upsert(price: i64, name: &str, stock: Option<i64>) -> Command {
        Command::Upsert(Box::new(Upsert {
            new: NewSku {
                name: name.into(),
                price: Money {
                    minor: price,
                    currency: Currency::parse("GBP").unwrap(),
                },
                stock: stock.unwrap_or(0),
                low_stock_threshold: 10,
                price_guard: PriceGuard::default(),
                lead_time_days: None,
                alert_rule: None,
            },
            stock_given: stock.is_some(),
            threshold_given: false,
        }))
    }

    #[test]
    fn an_upsert_creates_changes_what_differs_or_nothing() {
        let meta = WriteMeta::default();
        let created = decide(&code(), None, &upsert(255, "x", Some(3)), &meta, Micros(1)).unwrap();
        assert_eq!(created.len(), 1);
        assert_eq!((created[0].state.version, created[0].state.stock), (1, 3));
        let current = sku(5);
        let same = upsert(255, "WHITE HANGING HEART T-LIGHT HOLDER", None);
        assert!(decide(&code(), Some(&current), &same, &meta, Micros(1))
            .unwrap()
            .is_empty());
        let all = decide(
            &code(),
            Some(&current),
            &upsert(260, "y", Some(9)),
            &meta,
            Micros(1),
        )
        .unwrap();
        let fields: Vec<_> = all.iter().map(|c| c.field).collect();
        assert_eq!(fields, [Field::Price, Field::Meta, Field::Stock]);
        let versions: Vec<_> = all.iter().map(|c| c.state.version).collect();
        assert_eq!(versions, [8, 9, 10]);
        assert_eq!(all[2].previous.as_ref().map(|p| p.version), Some(9));
        // A price outside the guard refuses the whole row.
        assert!(matches!(
            decide(
                &code(),
                Some(&current),
                &upsert(9999, "y", Some(9)),
                &meta,
                Micros(1)
            ),
            Err(DomainError::PriceGuard(_))
        ));
    }

    #[test]
    fn a_guard_patch_merges_into_the_locked_guard_and_names_crossed_bounds() {
        let mut current = sku(5);
        current.price_guard.max_price = Some(500);
        let patch = |p: GuardPatch| {
            one(decide(
                &code(),
                Some(&current),
                &Command::Patch {
                    name: None,
                    low_stock_threshold: None,
                    price_guard: Some(p),
                    lead_time_days: None,
                    alert_rule: None,
                },
                &WriteMeta::default(),
                Micros(1),
            ))
        };
        let merged = patch(GuardPatch {
            min_price: Some(Some(100)),
            ..GuardPatch::default()
        })
        .unwrap();
        assert_eq!(
            merged.state.price_guard,
            PriceGuard {
                max_change_pct: Some(50),
                min_price: Some(100),
                max_price: Some(500)
            }
        );
        let crossed = patch(GuardPatch {
            min_price: Some(Some(600)),
            ..GuardPatch::default()
        });
        assert!(
            matches!(&crossed, Err(DomainError::Invalid { field, .. }) if field == "price_guard.min_price"),
            "{crossed:?}"
        );
    }

    #[test]
    fn the_json_form_reads_back_to_the_same_state() {
        let mut s = sku(3);
        s.updated_at = Micros(1_764_410_400_123_456);
        s.price_guard.min_price = Some(50);
        s.lead_time_days = Some(4);
        s.alert_rule = Some(AlertRule::Forecast);
        let rate = s.sales_rate.as_mut().unwrap();
        let params = crate::domain::RateParams::default();
        for i in 0..6 {
            rate.record_sale(2, Micros(s.updated_at.0 - i * 3_600_000_000), &params);
        }
        s.refresh_forecast();
        assert!(s.forecast.days_of_cover.is_some());
        // The rate is not part of the object: what reads back is the
        // object as shown, the forecast included.
        let back = Sku::from_json(&s.to_json()).unwrap();
        assert_eq!(back.to_json(), s.to_json());
        assert_eq!(back.forecast, s.forecast);
        assert_eq!(back.sales_rate, None);
    }

    #[test]
    fn the_state_before_an_event_is_the_state_decide_started_from() {
        let meta = WriteMeta::default();
        let mut current = sku(9);
        current.price_guard.min_price = Some(100);
        let commands = [
            Command::Adjust { delta: -4 },
            Command::SetPrice {
                price: Money::parse("1.50", current.currency).unwrap(),
                confirm: true,
            },
            Command::Patch {
                name: Some("Renamed".into()),
                low_stock_threshold: Some(3),
                price_guard: Some(GuardPatch {
                    max_change_pct: Some(None),
                    min_price: Some(Some(120)),
                    max_price: None,
                }),
                lead_time_days: None,
                alert_rule: None,
            },
        ];
        for command in &commands {
            let change = decide(&current.sku, Some(&current), command, &meta, Micros(5))
                .unwrap()
                .remove(0);
            let event = Event {
                event_id: 1,
                sku: current.sku.clone(),
                version: change.state.version,
                at: Micros(5),
                field: change.field,
                old: change.old,
                new: change.new,
                delta: change.delta,
                reason: None,
                actor: None,
            };
            let mut expected = current.clone();
            expected.updated_at = Micros(5);
            assert_eq!(
                event.state_before(&change.state),
                Some(expected),
                "{command:?}"
            );
            current = change.state;
        }
    }

    #[test]
    fn the_row_form_an_external_change_stores_reads_back_to_the_same_state() {
        let mut s = sku(7);
        s.price_guard.min_price = Some(250);
        let row = json!({
            "sku": s.sku.as_str(), "name": s.name, "currency": s.currency.code(),
            "price_minor": s.price_minor, "stock": 7, "low_stock_threshold": s.low_stock_threshold,
            "guard_max_change_pct": s.price_guard.max_change_pct, "guard_min_price": 250,
            "guard_max_price": null, "version": s.version, "updated_us": s.updated_at.0,
            "sales_rate": s.sales_rate.as_ref().unwrap().encode(),
            "lead_time_days": null, "alert_rule": null,
        });
        s.refresh_forecast();
        assert_eq!(Sku::from_json(&row), Some(s));
    }

    #[test]
    fn an_adjustment_increments_the_version_by_exactly_one() {
        let change = adjust(&sku(5), -3).unwrap();
        assert_eq!(change.state.stock, 2);
        assert_eq!(change.state.version, 8);
        assert_eq!(change.delta, Some(-3));
    }

    #[test]
    fn an_adjustment_below_zero_is_insufficient_stock() {
        assert!(matches!(
            adjust(&sku(2), -3),
            Err(DomainError::InsufficientStock(_))
        ));
        assert_eq!(adjust(&sku(3), -3).unwrap().state.stock, 0);
    }

    #[test]
    fn a_stale_if_match_is_a_version_mismatch() {
        let meta = WriteMeta {
            if_match: Some(vec![6]),
            ..WriteMeta::default()
        };
        let result = one(decide(
            &code(),
            Some(&sku(5)),
            &Command::SetStock { stock: 1 },
            &meta,
            Micros(1),
        ));
        assert!(matches!(
            result,
            Err(DomainError::VersionMismatch { current: 7, .. })
        ));
    }

    #[test]
    fn if_match_goes_ahead_at_any_listed_version_and_never_on_an_empty_list() {
        let at = |if_match: Option<Vec<i64>>| {
            let meta = WriteMeta {
                if_match,
                ..WriteMeta::default()
            };
            decide(
                &code(),
                Some(&sku(5)),
                &Command::SetStock { stock: 1 },
                &meta,
                Micros(1),
            )
            .is_ok()
        };
        let version = sku(5).version;
        assert!(at(None));
        assert!(at(Some(vec![version - 1, version])));
        assert!(!at(Some(vec![version - 1, version + 1])));
        assert!(!at(Some(vec![])));
    }

    #[test]
    fn a_price_in_another_currency_is_refused() {
        let price = Money::parse("2.55", Currency::parse("USD").unwrap()).unwrap();
        let result = one(decide(
            &code(),
            Some(&sku(5)),
            &Command::SetPrice {
                price,
                confirm: false,
            },
            &WriteMeta::default(),
            Micros(1),
        ));
        assert!(matches!(result, Err(DomainError::CurrencyMismatch { .. })));
    }

    #[test]
    fn creating_an_existing_sku_is_refused_and_anything_else_on_a_missing_one_is_not_found() {
        let new = NewSku {
            name: "x".into(),
            price: sku(0).price(),
            stock: 0,
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            lead_time_days: None,
            alert_rule: None,
        };
        let meta = WriteMeta::default();
        assert!(matches!(
            decide(
                &code(),
                Some(&sku(1)),
                &Command::Create(new.clone()),
                &meta,
                Micros(1)
            ),
            Err(DomainError::AlreadyExists(_))
        ));
        assert_eq!(
            one(decide(
                &code(),
                None,
                &Command::Create(new),
                &meta,
                Micros(1)
            ))
            .unwrap()
            .state
            .version,
            1
        );
        assert!(matches!(
            decide(
                &code(),
                None,
                &Command::Adjust { delta: 1 },
                &meta,
                Micros(1)
            ),
            Err(DomainError::NotFound(_))
        ));
    }
}
