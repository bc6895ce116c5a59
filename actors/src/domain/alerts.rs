//! Alert rules (API.md, Events and alerts): low stock with hysteresis, out
//! of stock, and price anomalies; and the price guard.
//!
//! Alerts are edge-triggered: one is raised when a condition starts, none
//! while it lasts, and it is resolved when the condition is over (for low
//! stock only once stock is back at the threshold plus a recovery margin, so
//! a level wobbling around the threshold does not flap).

use serde::{Deserialize, Serialize};

use super::{
    explain_forecast, forecast_alert, forecast_config, ForecastTransition, Micros, Money,
    PriceGuard, Sku, SkuCode,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    LowStock,
    OutOfStock,
    PriceAnomaly,
    /// The projected stock-out falls within the lead time (issue 18):
    /// `value` is the days of cover, `threshold` the lead time in days.
    StockoutForecast,
}

impl AlertKind {
    /// Every kind, in the order dashboards list them.
    pub const ALL: [AlertKind; 4] = [
        AlertKind::LowStock,
        AlertKind::OutOfStock,
        AlertKind::PriceAnomaly,
        AlertKind::StockoutForecast,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::LowStock => "low_stock",
            AlertKind::OutOfStock => "out_of_stock",
            AlertKind::PriceAnomaly => "price_anomaly",
            AlertKind::StockoutForecast => "stockout_forecast",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "low_stock" => Some(AlertKind::LowStock),
            "out_of_stock" => Some(AlertKind::OutOfStock),
            "price_anomaly" => Some(AlertKind::PriceAnomaly),
            "stockout_forecast" => Some(AlertKind::StockoutForecast),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Open,
    Acknowledged,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acknowledged => "acknowledged",
            AlertStatus::Resolved => "resolved",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "open" => Some(AlertStatus::Open),
            "acknowledged" => Some(AlertStatus::Acknowledged),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// An alert (API.md). `value` and `threshold` are stock units, or prices
/// as decimal strings for price anomalies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub sku: SkuCode,
    pub kind: AlertKind,
    pub status: AlertStatus,
    pub message: String,
    pub value: serde_json::Value,
    pub threshold: serde_json::Value,
    pub raised_at: Micros,
    pub acknowledged_by: Option<String>,
    pub resolved_at: Option<Micros>,
}

/// What the store must do with alerts for one change.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertAction {
    Raise {
        kind: AlertKind,
        message: String,
        value: serde_json::Value,
        threshold: serde_json::Value,
    },
    Resolve {
        id: i64,
    },
}

/// The stock at or above which a low-stock alert resolves: the threshold
/// plus 20 % of it, at least 1 (API.md: threshold 10 resolves at 12).
/// Saturating: a threshold near `i64::MAX` once overflowed here, panicked
/// the SKU's actor on every later write and left the SKU answering 503
/// (found by schemathesis).
pub fn recovery_level(threshold: i64) -> i64 {
    threshold.saturating_add((threshold / 5).max(1))
}

/// Why a price is outside the guard, or `None` when it is inside.
pub fn guard_violation(guard: &PriceGuard, current: Money, new: Money) -> Option<String> {
    let show = |minor: i64| {
        Money {
            minor,
            currency: new.currency,
        }
        .to_decimal_string()
    };
    if let Some(min) = guard.min_price {
        if new.minor < min {
            return Some(format!(
                "{} is below the minimum price {}",
                show(new.minor),
                show(min)
            ));
        }
    }
    if let Some(max) = guard.max_price {
        if new.minor > max {
            return Some(format!(
                "{} is above the maximum price {}",
                show(new.minor),
                show(max)
            ));
        }
    }
    if let Some(pct) = guard.max_change_pct {
        // |new - current| / current > pct / 100, in integers: no rounding.
        let change = (i128::from(new.minor) - i128::from(current.minor)).abs() * 100;
        if change > i128::from(pct) * i128::from(current.minor) {
            let actual = change as f64 / current.minor as f64;
            return Some(format!(
                "a change of {actual:.1}% from {} to {} exceeds the guard of {pct}%",
                show(current.minor),
                show(new.minor)
            ));
        }
    }
    None
}

/// The alerts a change from `before` to `after` raises or resolves, given
/// the SKU's active (open or acknowledged) alerts as `(id, kind)`.
/// `price_anomaly` is the guard violation of an accepted price change.
pub fn evaluate(
    before: Option<&Sku>,
    after: &Sku,
    active: &[(i64, AlertKind)],
    price_anomaly: Option<String>,
) -> Vec<AlertAction> {
    let active_of = |kind| active.iter().find(|(_, k)| *k == kind).map(|(id, _)| *id);
    // Judged on `available` (issue 17): held units cannot be sold, so a
    // SKU whose stock is all held is out of stock to a shop.
    let available = after.available();
    let stock_rose = before.is_some_and(|b| available > b.available());
    let threshold_moved =
        before.is_some_and(|b| b.low_stock_threshold != after.low_stock_threshold);
    let mut actions = Vec::new();

    match active_of(AlertKind::OutOfStock) {
        Some(id) if available > 0 => actions.push(AlertAction::Resolve { id }),
        None if available <= 0 && !stock_rose => actions.push(AlertAction::Raise {
            kind: AlertKind::OutOfStock,
            message: format!("{} is out of stock", after.sku),
            value: available.into(),
            threshold: 0.into(),
        }),
        _ => {}
    }

    // Which rules raise stock alerts (issue 18): a rule turned off ends
    // its open alert. Out of stock is a fact, not a rule: always.
    let rule = after.effective_alert_rule();
    let threshold = after.low_stock_threshold;
    match active_of(AlertKind::LowStock) {
        Some(id) if !rule.uses_threshold() || available >= recovery_level(threshold) => {
            actions.push(AlertAction::Resolve { id })
        }
        None if !rule.uses_threshold() => {}
        // Never raised by an increase; a threshold change re-evaluates.
        None if available < threshold && (!stock_rose || threshold_moved) => {
            actions.push(AlertAction::Raise {
                kind: AlertKind::LowStock,
                message: format!(
                    "{} is low: {} left, threshold {}",
                    after.sku, available, threshold
                ),
                value: available.into(),
                threshold: threshold.into(),
            })
        }
        _ => {}
    }

    let open = active_of(AlertKind::StockoutForecast);
    let lead_time = after.effective_lead_time_days();
    let transition = if rule.uses_forecast() {
        forecast_alert(
            &after.forecast,
            lead_time,
            open.is_some(),
            &forecast_config().params,
        )
    } else {
        open.map(|_| ForecastTransition::Resolve)
    };
    match (transition, open) {
        (Some(ForecastTransition::Raise), None) => actions.push(AlertAction::Raise {
            kind: AlertKind::StockoutForecast,
            message: format!(
                "{} will run out before a delivery: {}",
                after.sku,
                explain_forecast(&after.forecast, lead_time)
            ),
            value: serde_json::to_value(after.forecast.days_of_cover)
                .unwrap_or(serde_json::Value::Null),
            threshold: lead_time.into(),
        }),
        (Some(ForecastTransition::Resolve), Some(id)) => actions.push(AlertAction::Resolve { id }),
        _ => {}
    }

    let price_changed = before.is_some_and(|b| b.price_minor != after.price_minor);
    match (price_anomaly, active_of(AlertKind::PriceAnomaly)) {
        (Some(reason), None) => actions.push(AlertAction::Raise {
            kind: AlertKind::PriceAnomaly,
            message: format!("{}: {reason}", after.sku),
            value: after.price().to_decimal_string().into(),
            threshold: serde_json::Value::Null,
        }),
        // A later price inside the guard ends the anomaly.
        (None, Some(id)) if price_changed => actions.push(AlertAction::Resolve { id }),
        _ => {}
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, PriceGuard};

    fn sku(stock: i64) -> Sku {
        Sku {
            sku: SkuCode::parse("85123A").unwrap(),
            name: "x".into(),
            currency: Currency::parse("GBP").unwrap(),
            price_minor: 39900,
            stock,
            reserved: 0,
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            version: 1,
            updated_at: Micros(0),
            lead_time_days: None,
            alert_rule: None,
            sales_rate: Some(crate::domain::SalesRate::new(
                &crate::domain::RateParams::default(),
            )),
            forecast: crate::domain::Forecast::none(crate::domain::Micros(0)),
        }
    }

    /// Runs a stock sequence through `evaluate`, keeping the active alerts
    /// as the store would; returns (raised at stock, resolved at stock).
    fn run(levels: &[i64]) -> (Vec<i64>, Vec<i64>) {
        let mut active: Vec<(i64, AlertKind)> = Vec::new();
        let (mut raised, mut resolved, mut next_id) = (Vec::new(), Vec::new(), 1);
        let mut before = sku(levels[0]);
        for &level in &levels[1..] {
            let after = sku(level);
            for action in evaluate(Some(&before), &after, &active, None) {
                match action {
                    AlertAction::Raise {
                        kind: AlertKind::LowStock,
                        ..
                    } => {
                        raised.push(level);
                        active.push((next_id, AlertKind::LowStock));
                        next_id += 1;
                    }
                    AlertAction::Resolve { id } => {
                        resolved.push(level);
                        active.retain(|(i, _)| *i != id);
                    }
                    _ => {}
                }
            }
            before = after;
        }
        (raised, resolved)
    }

    #[test]
    fn low_stock_is_edge_triggered_with_hysteresis() {
        let (raised, resolved) = run(&[11, 9, 10, 9, 8, 12, 9]);
        assert_eq!(raised, [9, 9]);
        assert_eq!(resolved, [12]);
    }

    #[test]
    fn the_recovery_margin_is_a_fifth_of_the_threshold_and_at_least_one() {
        assert_eq!(recovery_level(10), 12);
        assert_eq!(recovery_level(3), 4);
        assert_eq!(recovery_level(0), 1);
    }

    #[test]
    fn an_increase_never_raises_an_alert() {
        assert!(evaluate(Some(&sku(3)), &sku(5), &[], None).is_empty());
    }

    #[test]
    fn out_of_stock_opens_at_zero_and_resolves_above_it() {
        let actions = evaluate(Some(&sku(1)), &sku(0), &[(7, AlertKind::LowStock)], None);
        assert!(matches!(
            actions[0],
            AlertAction::Raise {
                kind: AlertKind::OutOfStock,
                ..
            }
        ));
        let actions = evaluate(Some(&sku(0)), &sku(1), &[(8, AlertKind::OutOfStock)], None);
        assert_eq!(actions, [AlertAction::Resolve { id: 8 }]);
    }

    #[test]
    fn the_price_guard_refuses_large_changes_and_bounds_but_not_five_percent() {
        let gbp = Currency::parse("GBP").unwrap();
        let money = |minor| Money {
            minor,
            currency: gbp,
        };
        let guard = PriceGuard {
            max_change_pct: Some(50),
            min_price: Some(50),
            max_price: None,
        };
        assert!(guard_violation(&guard, money(39900), money(399)).is_some());
        assert!(guard_violation(&guard, money(39900), money(3990000)).is_some());
        assert!(guard_violation(&guard, money(39900), money(41895)).is_none());
        assert!(
            guard_violation(&guard, money(100), money(49)).is_some(),
            "below min"
        );
        assert!(
            guard_violation(&guard, money(100), money(150)).is_none(),
            "exactly 50%"
        );
    }
}
