//! Fan-out of the ordered change stream to this instance's sessions.
//!
//! Subscriptions live here, not in the SKU actors: a SKU actor can be
//! passivated or restarted without any session losing its subscription,
//! and a change is serialised once however many sessions receive it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;
use skuwatch_actors::domain::{Committed, SkuCode};

use crate::outbox::{Outbox, Outgoing};

/// Identifies a WebSocket session within this instance.
pub type SessionId = u64;

#[derive(Default)]
pub struct Hub {
    all: DashMap<SessionId, Arc<Outbox>>,
    /// Sessions subscribed with `alerts: true`.
    alerts: DashMap<SessionId, Arc<Outbox>>,
    by_sku: DashMap<SkuCode, HashMap<SessionId, Arc<Outbox>>>,
    /// The last `event_id` dispatched (the feed's position).
    position: AtomicI64,
    next_session: AtomicU64,
}

impl Hub {
    pub fn new_session(&self) -> SessionId {
        self.next_session.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn position(&self) -> i64 {
        self.position.load(Ordering::Acquire)
    }

    pub fn set_position(&self, event_id: i64) {
        self.position.store(event_id, Ordering::Release);
    }

    /// Number of open sessions subscribed to all changes.
    /// Distinct SKU codes with a subscriber (the `skuwatch_ws_subscribed_skus`
    /// gauge): bounded by `SKUWATCH_WS_MAX_SUBSCRIPTIONS` per session and
    /// `SKUWATCH_WS_MAX_SESSIONS_PER_USER` per user.
    pub fn subscribed_skus(&self) -> usize {
        self.by_sku.len()
    }

    pub fn all_subscribers(&self) -> usize {
        self.all.len()
    }

    pub fn subscribe_all(&self, session: SessionId, outbox: &Arc<Outbox>) {
        self.all.insert(session, outbox.clone());
    }

    pub fn unsubscribe_all(&self, session: SessionId) {
        self.all.remove(&session);
    }

    pub fn subscribe_alerts(&self, session: SessionId, outbox: &Arc<Outbox>) {
        self.alerts.insert(session, outbox.clone());
    }

    pub fn unsubscribe_alerts(&self, session: SessionId) {
        self.alerts.remove(&session);
    }

    pub fn subscribe(&self, session: SessionId, outbox: &Arc<Outbox>, skus: &[SkuCode]) {
        for sku in skus {
            self.by_sku
                .entry(sku.clone())
                .or_default()
                .insert(session, outbox.clone());
        }
    }

    pub fn unsubscribe<'a>(&self, session: SessionId, skus: impl IntoIterator<Item = &'a SkuCode>) {
        for sku in skus {
            self.by_sku.remove_if_mut(sku, |_, sessions| {
                sessions.remove(&session);
                sessions.is_empty()
            });
        }
    }

    /// Delivers one change, in `event_id` order (the feed guarantees it).
    pub fn dispatch(&self, change: &Committed) {
        let message = Arc::new(Outgoing::new(change));
        for outbox in self.all.iter() {
            outbox.push(&message);
        }
        if let Some(sessions) = self.by_sku.get(&change.sku.sku) {
            for outbox in sessions.values() {
                outbox.push(&message);
            }
        }
        for alert in &change.alerts {
            let text: Arc<str> = serde_json::json!({ "type": "alert", "alert": alert })
                .to_string()
                .into();
            for outbox in self.alerts.iter() {
                outbox.push_alert(&text);
            }
        }
        self.set_position(change.event.event_id);
    }
}
