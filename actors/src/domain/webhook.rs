//! Webhook endpoints and their deliveries (issue 19; API.md "v1 additions",
//! Webhooks): which messages an endpoint wants, and the frozen body of
//! each. Sending, signing and the address rules are the server's
//! (`src/webhooks`); the outbox rows are written by the store in the
//! transaction that changed the alert.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{Alert, AlertKind, Committed, Micros, Sku, SkuCode};

/// A subscribable event (an endpoint's `events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum WebhookEvent {
    #[serde(rename = "alert.raised")]
    AlertRaised,
    #[serde(rename = "alert.acknowledged")]
    AlertAcknowledged,
    #[serde(rename = "alert.resolved")]
    AlertResolved,
    /// Every change of a subscribed SKU; opt-in, fed from the events table.
    #[serde(rename = "sku.changed")]
    SkuChanged,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 4] = [
        WebhookEvent::AlertRaised,
        WebhookEvent::AlertAcknowledged,
        WebhookEvent::AlertResolved,
        WebhookEvent::SkuChanged,
    ];

    /// An endpoint created without `events` gets the alert events.
    pub const DEFAULT: [WebhookEvent; 3] = [
        WebhookEvent::AlertRaised,
        WebhookEvent::AlertAcknowledged,
        WebhookEvent::AlertResolved,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::AlertRaised => "alert.raised",
            WebhookEvent::AlertAcknowledged => "alert.acknowledged",
            WebhookEvent::AlertResolved => "alert.resolved",
            WebhookEvent::SkuChanged => "sku.changed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == raw)
    }
}

/// A message's `type`: a subscribable event, or one of the server's own.
pub const DIGEST_TYPE: &str = "alert.digest";
/// The `type` of `POST /webhooks/{id}/test`'s message.
pub const TEST_TYPE: &str = "webhook.test";

/// How a message is laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"type", "timestamp", "data"}` (API.md).
    Standard,
    /// A Slack incoming-webhook message (`{"text", "blocks"}`).
    Slack,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Standard => "standard",
            WebhookFormat::Slack => "slack",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "standard" => Some(WebhookFormat::Standard),
            "slack" => Some(WebhookFormat::Slack),
            _ => None,
        }
    }
}

/// Why an endpoint is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisabledReason {
    /// The receiver answered 410 Gone.
    Gone,
    /// Every attempt failed for `SKUWATCH_WEBHOOK_DISABLE_AFTER_SECS`.
    Failing,
    /// An admin set `enabled: false`.
    Admin,
}

impl DisabledReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DisabledReason::Gone => "gone",
            DisabledReason::Failing => "failing",
            DisabledReason::Admin => "admin",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "gone" => Some(DisabledReason::Gone),
            "failing" => Some(DisabledReason::Failing),
            "admin" => Some(DisabledReason::Admin),
            _ => None,
        }
    }
}

/// A webhook endpoint as every read shows it (the secret never is).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Endpoint {
    /// 32 hex digits.
    pub id: String,
    pub url: String,
    pub description: String,
    pub events: Vec<WebhookEvent>,
    /// `None`: every alert kind.
    pub kinds: Option<Vec<AlertKind>>,
    /// `None`: every SKU.
    pub skus: Option<Vec<SkuCode>>,
    pub format: WebhookFormat,
    pub enabled: bool,
    pub disabled_reason: Option<DisabledReason>,
    pub created_at: Micros,
    pub updated_at: Micros,
    pub secret_rotated_at: Option<Micros>,
}

impl Endpoint {
    /// A new endpoint with the API's defaults: enabled, the alert events,
    /// every kind and SKU, `standard`.
    pub fn new(id: String, url: String, now: Micros) -> Self {
        Self {
            id,
            url,
            description: String::new(),
            events: WebhookEvent::DEFAULT.to_vec(),
            kinds: None,
            skus: None,
            format: WebhookFormat::Standard,
            enabled: true,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
            secret_rotated_at: None,
        }
    }

    /// Whether this endpoint is sent `event` about `alert`.
    pub fn wants_alert(&self, event: WebhookEvent, alert: &Alert) -> bool {
        self.enabled
            && self.events.contains(&event)
            && self.kinds.as_ref().is_none_or(|k| k.contains(&alert.kind))
            && self.wants_sku(&alert.sku)
    }

    /// Whether `sku` passes the endpoint's SKU filter.
    pub fn wants_sku(&self, sku: &SkuCode) -> bool {
        self.skus.as_ref().is_none_or(|s| s.contains(sku))
    }
}

/// A change of an endpoint's configuration (`PATCH`): `None` keeps a
/// field; for `kinds` and `skus`, `Some(None)` means "all".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPatch {
    pub url: Option<String>,
    pub description: Option<String>,
    pub events: Option<Vec<WebhookEvent>>,
    pub kinds: Option<Option<Vec<AlertKind>>>,
    pub skus: Option<Option<Vec<SkuCode>>>,
    pub format: Option<WebhookFormat>,
    pub enabled: Option<bool>,
}

impl EndpointPatch {
    /// Applies the patch as of `now`. `enabled: true` clears the disabled
    /// reason, `enabled: false` sets it to `admin`; the same value again
    /// keeps the reason the endpoint has.
    pub fn apply(&self, endpoint: &mut Endpoint, now: Micros) {
        if let Some(url) = &self.url {
            endpoint.url = url.clone();
        }
        if let Some(description) = &self.description {
            endpoint.description = description.clone();
        }
        if let Some(events) = &self.events {
            endpoint.events = events.clone();
        }
        if let Some(kinds) = &self.kinds {
            endpoint.kinds = kinds.clone();
        }
        if let Some(skus) = &self.skus {
            endpoint.skus = skus.clone();
        }
        if let Some(format) = self.format {
            endpoint.format = format;
        }
        match self.enabled {
            Some(true) if !endpoint.enabled => {
                endpoint.enabled = true;
                endpoint.disabled_reason = None;
            }
            Some(false) if endpoint.enabled => {
                endpoint.enabled = false;
                endpoint.disabled_reason = Some(DisabledReason::Admin);
            }
            _ => {}
        }
        endpoint.updated_at = now;
    }

    /// The audit log's record of the change: the fields set (an endpoint
    /// holds no secret in its readable fields).
    pub fn audit_detail(&self) -> Value {
        let mut detail = serde_json::Map::new();
        let mut put = |name: &str, value: Value| {
            detail.insert(name.into(), value);
        };
        if let Some(v) = &self.url {
            put("url", json!(redact_url(v)));
        }
        if let Some(v) = &self.description {
            put("description", json!(v));
        }
        if let Some(v) = &self.events {
            put("events", json!(v));
        }
        if let Some(v) = &self.kinds {
            put("kinds", json!(v));
        }
        if let Some(v) = &self.skus {
            put("skus", json!(v));
        }
        if let Some(v) = self.format {
            put("format", json!(v));
        }
        if let Some(v) = self.enabled {
            put("enabled", json!(v));
        }
        Value::Object(detail)
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    Delivered,
    /// Every attempt of the retry schedule failed (or the receiver refused
    /// it for good).
    Failed,
    /// Sent inside an `alert.digest` message (the endpoint's rate cap).
    Digested,
    /// Its endpoint was disabled before it could be sent.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Digested => "digested",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "failed" => Some(DeliveryStatus::Failed),
            "digested" => Some(DeliveryStatus::Digested),
            "cancelled" => Some(DeliveryStatus::Cancelled),
            _ => None,
        }
    }
}

/// One message to one endpoint, as the delivery log shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// `msg_` and 32 hex digits: the `webhook-id` header, the same on every
    /// retry.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub status: DeliveryStatus,
    pub attempts: i64,
    pub created_at: Micros,
    pub last_attempt_at: Option<Micros>,
    pub last_status_code: Option<i64>,
    pub last_error: Option<String>,
    pub next_attempt_at: Option<Micros>,
    pub alert_id: Option<i64>,
    pub event_id: Option<i64>,
    /// A `digested` delivery: the id of the digest message that carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest_id: Option<String>,
}

/// An endpoint URL as the audit log keeps it: scheme and host only. The
/// path and query may be a credential (a Slack webhook URL is one), and the
/// audit log outlives the endpoint.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/…")
}

/// A new `webhook-id`.
pub fn new_message_id() -> String {
    format!("msg_{}", uuid::Uuid::new_v4().simple())
}

/// A message to put in the outbox: its type, frozen body and what it is
/// about. The store adds one row per endpoint that wants it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub event: WebhookEvent,
    pub body: String,
    pub alert: Option<Alert>,
    pub event_id: Option<i64>,
}

impl Message {
    /// An alert message: `{"type", "timestamp", "data": {"alert", "sku"}}`
    /// (API.md), `timestamp` being when the alert changed.
    pub fn alert(event: WebhookEvent, alert: &Alert, sku: &Sku, at: Micros) -> Self {
        let body = json!({
            "type": event.as_str(),
            "timestamp": at,
            "data": {"alert": alert, "sku": sku},
        });
        Self {
            event,
            body: body.to_string(),
            alert: Some(alert.clone()),
            event_id: None,
        }
    }

    /// A `sku.changed` message: the Event and the SKU right after it.
    pub fn sku_changed(change: &Committed) -> Self {
        let body = json!({
            "type": WebhookEvent::SkuChanged.as_str(),
            "timestamp": change.event.at,
            "data": {"event": change.event, "sku": change.sku},
        });
        Self {
            event: WebhookEvent::SkuChanged,
            body: body.to_string(),
            alert: None,
            event_id: Some(change.event.event_id),
        }
    }
}

/// The alert messages of committed changes: `alert.raised` for an alert
/// raised open, `alert.resolved` for one resolved (an alert raised and
/// resolved in one write, as a batch may, sends both).
pub fn alert_messages(changes: &[Committed]) -> Vec<Message> {
    let mut out = Vec::new();
    for change in changes {
        for alert in &change.alerts {
            let event = match alert.resolved_at {
                Some(_) => WebhookEvent::AlertResolved,
                None => WebhookEvent::AlertRaised,
            };
            let at = alert.resolved_at.unwrap_or(alert.raised_at);
            out.push(Message::alert(event, alert, &change.sku, at));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::AlertStatus;

    fn alert(kind: AlertKind, sku: &str) -> Alert {
        Alert {
            id: 1,
            sku: SkuCode::parse(sku).unwrap(),
            kind,
            status: AlertStatus::Open,
            message: "m".into(),
            value: json!(1),
            threshold: json!(2),
            raised_at: Micros(1),
            acknowledged_by: None,
            resolved_at: None,
        }
    }

    fn endpoint() -> Endpoint {
        Endpoint::new("e".into(), "https://example.com/".into(), Micros(0))
    }

    #[test]
    fn filters_by_event_kind_sku_and_enabled() {
        let mut e = endpoint();
        let low = alert(AlertKind::LowStock, "A");
        assert!(e.wants_alert(WebhookEvent::AlertRaised, &low));
        e.events = vec![WebhookEvent::AlertResolved];
        assert!(!e.wants_alert(WebhookEvent::AlertRaised, &low));
        e.events = WebhookEvent::DEFAULT.to_vec();
        e.kinds = Some(vec![AlertKind::OutOfStock]);
        assert!(!e.wants_alert(WebhookEvent::AlertRaised, &low));
        e.kinds = Some(vec![AlertKind::LowStock]);
        e.skus = Some(vec![SkuCode::parse("B").unwrap()]);
        assert!(!e.wants_alert(WebhookEvent::AlertRaised, &low));
        e.skus = Some(vec![SkuCode::parse("A").unwrap()]);
        assert!(e.wants_alert(WebhookEvent::AlertRaised, &low));
        e.enabled = false;
        assert!(!e.wants_alert(WebhookEvent::AlertRaised, &low));
    }

    #[test]
    fn the_audit_log_keeps_scheme_and_host_only() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/secret?x=1"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000/…"
        );
    }

    #[test]
    fn patch_enabled_sets_and_clears_the_reason() {
        let mut e = endpoint();
        let off = EndpointPatch {
            enabled: Some(false),
            ..EndpointPatch::default()
        };
        off.apply(&mut e, Micros(5));
        assert_eq!(e.disabled_reason, Some(DisabledReason::Admin));
        assert_eq!(e.updated_at, Micros(5));
        // Disabled by the receiver: a PATCH that leaves `enabled` false
        // keeps the receiver's reason.
        e.disabled_reason = Some(DisabledReason::Gone);
        off.apply(&mut e, Micros(6));
        assert_eq!(e.disabled_reason, Some(DisabledReason::Gone));
        EndpointPatch {
            enabled: Some(true),
            ..EndpointPatch::default()
        }
        .apply(&mut e, Micros(7));
        assert!(e.enabled);
        assert_eq!(e.disabled_reason, None);
    }
}
