//! Collects field errors so a client learns every problem at once.

use std::fmt::Display;

use serde::Deserialize;
use serde_json::value::RawValue;
use skuwatch_actors::domain::{AlertRule, Currency, DomainError, GuardPatch, Money, PriceGuard};

use super::error::{ApiError, FieldError};

#[derive(Default)]
pub struct Checks {
    errors: Vec<FieldError>,
}

/// Longest SKU name accepted, in characters.
pub const MAX_NAME_CHARS: usize = 500;
/// Most items a list route answers at once, and the size of a page when
/// the client names none.
pub const MAX_PAGE: i64 = 1000;
pub const DEFAULT_PAGE: i64 = 100;
/// Longest `reason`, in characters.
pub const MAX_REASON_CHARS: usize = 200;

impl Checks {
    /// Keeps the value, or notes the error under `field`.
    pub fn check<T, E: Display>(&mut self, field: &str, result: Result<T, E>) -> Option<T> {
        result
            .map_err(|e| self.errors.push(FieldError::new(field, e)))
            .ok()
    }

    pub fn fail(&mut self, field: &str, message: impl ToString) {
        self.errors.push(FieldError::new(field, message));
    }

    /// 422 with every error noted, or `Ok` when there is none.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }

    pub fn name(&mut self, field: &str, raw: &str) -> Option<String> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            self.fail(field, format!("must be 1-{MAX_NAME_CHARS} characters"));
            None
        } else if name.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
            None
        } else {
            Some(name.to_owned())
        }
    }

    pub fn reason(&mut self, raw: Option<String>) -> Option<String> {
        let reason = raw?.trim().to_owned();
        if reason.chars().count() > MAX_REASON_CHARS || reason.chars().any(char::is_control) {
            self.fail(
                "reason",
                format!("must be at most {MAX_REASON_CHARS} printable characters"),
            );
            return None;
        }
        (!reason.is_empty()).then_some(reason)
    }

    /// A page size (`limit` of the list routes): 1-[`MAX_PAGE`], default
    /// [`DEFAULT_PAGE`].
    pub fn page_limit(&mut self, limit: Option<i64>) -> i64 {
        let limit = limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            self.fail("limit", format!("must be 1-{MAX_PAGE}"));
        }
        limit
    }

    pub fn non_negative(&mut self, field: &str, value: i64) -> Option<i64> {
        if value < 0 {
            self.fail(field, "must be 0 or more");
            None
        } else {
            Some(value)
        }
    }

    /// A lead time in days (issue 18): 0-365, as the database's CHECK.
    pub fn lead_time_days(&mut self, days: i64) -> Option<i64> {
        if (0..=365).contains(&days) {
            Some(days)
        } else {
            self.fail(
                "lead_time_days",
                "must be a whole number of days from 0 to 365",
            );
            None
        }
    }

    /// An alert rule (API.md v1 additions): `threshold`, `forecast`, `both`.
    pub fn alert_rule(&mut self, raw: &str) -> Option<AlertRule> {
        let rule = AlertRule::parse(raw);
        if rule.is_none() {
            self.fail("alert_rule", "must be threshold, forecast or both");
        }
        rule
    }

    /// A price: exact in the currency's minor units, and > 0.
    pub fn price(&mut self, field: &str, raw: &RawValue, currency: Currency) -> Option<Money> {
        let money = self.check(field, Money::parse_json(raw.get(), currency))?;
        if money.minor <= 0 {
            self.fail(field, "must be greater than 0");
            return None;
        }
        Some(money)
    }

    /// The guard change `raw` describes, each field checked on its own: a
    /// field left out keeps the stored value, `null` clears it. Merging it
    /// (and checking that the bounds do not cross) is left to
    /// [`GuardPatch::merge`], which `PATCH` runs against the row locked in
    /// its transaction; bounds are in `currency`, fixed at creation.
    pub fn price_guard(&mut self, raw: &GuardInput, currency: Currency) -> GuardPatch {
        let max_change_pct = match raw.max_change_pct {
            None => None,
            Some(None) => Some(None),
            Some(Some(pct)) if (1..=10_000).contains(&pct) => Some(Some(pct)),
            Some(Some(_)) => {
                self.fail("price_guard.max_change_pct", "must be 1-10000 (percent)");
                None
            }
        };
        let mut bound = |field: &str, raw: &Option<Option<Box<RawValue>>>| match raw {
            None => None,
            Some(None) => Some(None),
            Some(Some(raw)) => self.price(field, raw, currency).map(|m| Some(m.minor)),
        };
        GuardPatch {
            max_change_pct,
            min_price: bound("price_guard.min_price", &raw.min_price),
            max_price: bound("price_guard.max_price", &raw.max_price),
        }
    }

    /// The guard of a new SKU: `raw` on top of the default (API.md).
    pub fn new_price_guard(&mut self, raw: &GuardInput, currency: Currency) -> PriceGuard {
        let patch = self.price_guard(raw, currency);
        match patch.merge(&PriceGuard::default(), currency) {
            Ok(guard) => guard,
            Err(DomainError::Invalid { field, message }) => {
                self.fail(&field, message);
                PriceGuard::default()
            }
            Err(other) => {
                self.fail("price_guard", other);
                PriceGuard::default()
            }
        }
    }
}

/// The `price_guard` object of a request (API.md, SKUs). Each field:
/// absent (`None`), `null` (`Some(None)`), or a value.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = PriceGuardInput)]
pub struct GuardInput {
    /// Largest change against the current price, 1-10000 percent; `null`: no limit.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 10000)]
    pub max_change_pct: Option<Option<i64>>,
    /// Lowest price; `null`: no bound. Not above `max_price`.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = super::openapi::PriceBoundInput)]
    pub min_price: Option<Option<Box<RawValue>>>,
    /// Highest price; `null`: no bound.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = super::openapi::PriceBoundInput)]
    pub max_price: Option<Option<Box<RawValue>>>,
}

/// Tells a field sent as `null` from one left out.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}
