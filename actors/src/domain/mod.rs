//! Domain types: validated once at the edge, then trusted everywhere.

mod alerts;
mod forecast;
mod hold;
mod money;
mod sku;
mod sku_code;
mod time;
mod webhook;

pub use alerts::{
    evaluate as evaluate_alerts, guard_violation, recovery_level, Alert, AlertAction, AlertKind,
    AlertStatus,
};
pub use forecast::{
    config as forecast_config, explain as explain_forecast, forecast, forecast_alert,
    forecast_resolve_level, set_config as set_forecast_config, AlertRule, Forecast, ForecastConfig,
    ForecastTransition, RateParams, SaleKind, SalesRate, Tenths, UnitsPerDay, DAY_US,
    MIN_HISTORY_US,
};
pub use hold::{
    decide_hold, Hold, HoldAction, HoldDecision, HoldId, HoldLine, HoldShortfall, HoldStatus,
    DEFAULT_HOLD_TTL_US, MAX_HOLD_TTL_US,
};
pub use money::{Currency, Money, MoneyError};
pub use sku::{
    decide, Change, Command, Committed, DomainError, Event, Field, GuardPatch, NewSku, PriceGuard,
    Shortfall, Sku, Upsert, WriteMeta, REFORECAST_REASON,
};
pub use sku_code::{SkuCode, SkuCodeError};
pub use time::Micros;
pub use webhook::{
    alert_messages, new_message_id, redact_url, Delivery, DeliveryStatus, DisabledReason, Endpoint,
    EndpointPatch, Message, WebhookEvent, WebhookFormat, DIGEST_TYPE, TEST_TYPE,
};
