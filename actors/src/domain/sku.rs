//! The SKU, its change events, and the rules that turn a command into a
//! change. These rules live here and nowhere else: the store calls
//! [`decide`] on the row it has locked, so every backend and every path
//! (REST, batch, import, replay) obeys the same rules.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Currency, Micros, Money, SkuCode};

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
    pub low_stock_threshold: i64,
    pub price_guard: PriceGuard,
    /// Incremented by exactly 1 on every change.
    pub version: i64,
    pub updated_at: Micros,
}

impl Sku {
    pub fn price(&self) -> Money {
        Money {
            minor: self.price_minor,
            currency: self.currency,
        }
    }

    fn money_json(&self, minor: Option<i64>) -> Value {
        minor.map_or(Value::Null, |minor| {
            Value::String(
                Money {
                    minor,
                    currency: self.currency,
                }
                .to_decimal_string(),
            )
        })
    }

    /// The API.md SKU object.
    pub fn to_json(&self) -> Value {
        json!({
            "sku": self.sku,
            "name": self.name,
            "currency": self.currency,
            "price": self.price().to_decimal_string(),
            "stock": self.stock,
            "low_stock_threshold": self.low_stock_threshold,
            "price_guard": {
                "max_change_pct": self.price_guard.max_change_pct,
                "min_price": self.money_json(self.price_guard.min_price),
                "max_price": self.money_json(self.price_guard.max_price),
            },
            "version": self.version,
            "updated_at": self.updated_at,
        })
    }
}

impl Sku {
    /// Reads back the JSON of [`Sku::to_json`], as kept with each event.
    pub fn from_json(value: &Value) -> Option<Self> {
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
        Some(Self {
            sku: SkuCode::parse(text("sku")?).ok()?,
            name: text("name")?.to_owned(),
            currency,
            price_minor: Money::parse(text("price")?, currency).ok()?.minor,
            stock: value.get("stock")?.as_i64()?,
            low_stock_threshold: value.get("low_stock_threshold")?.as_i64()?,
            price_guard: PriceGuard {
                max_change_pct: guard.get("max_change_pct")?.as_i64(),
                min_price: money(guard.get("min_price")?)?,
                max_price: money(guard.get("max_price")?)?,
            },
            version: value.get("version")?.as_i64()?,
            updated_at: Micros::parse_rfc3339(text("updated_at")?)?,
        })
    }
}

impl Serialize for Sku {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
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
}

impl Field {
    pub fn as_str(self) -> &'static str {
        match self {
            Field::Stock => "stock",
            Field::Price => "price",
            Field::Meta => "meta",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "stock" => Some(Field::Stock),
            "price" => Some(Field::Price),
            "meta" => Some(Field::Meta),
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
}

/// A change asked for by a client, already validated field by field.
#[derive(Debug, Clone)]
pub enum Command {
    Create(NewSku),
    Patch {
        name: Option<String>,
        low_stock_threshold: Option<i64>,
        price_guard: Option<PriceGuard>,
    },
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
    #[error("stock would overflow")]
    StockOverflow(SkuCode),
    /// A price outside the SKU's guard without `confirm` (API.md, SKUs).
    #[error("{0}")]
    PriceGuard(String),
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
    pub delta: i64,
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
}

/// Applies `command` to `current` (the row as locked in the transaction).
/// Returns the new state with `version + 1` and `updated_at = now`.
pub fn decide(
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
    if let Some(expected) = &meta.if_match {
        if !expected.contains(&current.version) {
            return Err(DomainError::VersionMismatch {
                sku: sku.clone(),
                expected: expected.clone(),
                current: current.version,
            });
        }
    }
    let mut state = current.clone();
    state.version += 1;
    state.updated_at = now;
    let mut price_anomaly = None;
    let (field, old, new, delta) = match command {
        Command::Create(_) => unreachable!("handled above"),
        Command::Patch {
            name,
            low_stock_threshold,
            price_guard,
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
            if let Some(guard) = price_guard {
                old.insert(
                    "price_guard".into(),
                    current.to_json()["price_guard"].clone(),
                );
                state.price_guard = guard.clone();
                new.insert("price_guard".into(), state.to_json()["price_guard"].clone());
            }
            (Field::Meta, Value::Object(old), Value::Object(new), None)
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
            (
                Field::Stock,
                json!(current.stock),
                json!(stock),
                Some(stock - current.stock),
            )
        }
        Command::Adjust { delta } => {
            let stock = current
                .stock
                .checked_add(*delta)
                .ok_or_else(|| DomainError::StockOverflow(sku.clone()))?;
            if stock < 0 {
                return Err(DomainError::InsufficientStock(vec![Shortfall {
                    sku: sku.clone(),
                    stock: current.stock,
                    delta: *delta,
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
    })
}

fn create(sku: &SkuCode, new: &NewSku, now: Micros) -> Change {
    let state = Sku {
        sku: sku.clone(),
        name: new.name.clone(),
        currency: new.price.currency,
        price_minor: new.price.minor,
        stock: new.stock,
        low_stock_threshold: new.low_stock_threshold,
        price_guard: new.price_guard.clone(),
        version: 1,
        updated_at: now,
    };
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
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            version: 7,
            updated_at: Micros(0),
        }
    }

    fn adjust(current: &Sku, delta: i64) -> Result<Change, DomainError> {
        decide(
            &code(),
            Some(current),
            &Command::Adjust { delta },
            &WriteMeta::default(),
            Micros(1),
        )
    }

    #[test]
    fn the_json_form_reads_back_to_the_same_state() {
        let mut s = sku(3);
        s.updated_at = Micros(1_764_410_400_123_456);
        s.price_guard.min_price = Some(50);
        assert_eq!(Sku::from_json(&s.to_json()), Some(s));
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
        let result = decide(
            &code(),
            Some(&sku(5)),
            &Command::SetStock { stock: 1 },
            &meta,
            Micros(1),
        );
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
        let result = decide(
            &code(),
            Some(&sku(5)),
            &Command::SetPrice {
                price,
                confirm: false,
            },
            &WriteMeta::default(),
            Micros(1),
        );
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
            decide(&code(), None, &Command::Create(new), &meta, Micros(1))
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
