//! The bounded outgoing queue of one WebSocket session, with conflation.
//!
//! The ordered feed pushes without ever waiting: a slow client costs its own
//! session memory (bounded here), never the feed's time. Up to `queue` messages are
//! kept in order; past that, only the newest message per SKU is kept
//! (conflation, sent with `"conflated": true`); past `conflated` distinct
//! SKUs the session is marked too slow and is closed with 4408.
//!
//! The outbox wakes its session actor with one message (`wake`) when it
//! goes from idle to holding something, and not again until the session has
//! drained it: however fast changes arrive, the session's mailbox holds at
//! most one such message.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use indexmap::IndexMap;
use skuwatch_actors::domain::{Committed, SkuCode};

/// The per-SKU subscriber sets of this instance's sessions.
pub type SkuSubscribers = skuwatch_actors::subscribers::SubscriberTable<Arc<Outbox>>;

/// One change, serialised once for every session that receives it.
#[derive(Debug)]
pub struct Outgoing {
    pub event_id: i64,
    pub sku: SkuCode,
    pub version: i64,
    /// The change's commit time (`event.at`, µs since the epoch), for the
    /// push-latency histogram.
    pub at_micros: i64,
    /// `{"type":"sku","event_id":..,"sku":SKU,"change":Event}`. Shared
    /// bytes: each session's frame borrows them (a reference count, no copy
    /// per client).
    pub text: Utf8Bytes,
}

const SKU_MESSAGE_PREFIX: &str = "{\"type\":\"sku\",";

/// A change as pushed to a session (API.md, WebSocket `sku` message),
/// serialised straight to text, with no `Value` tree in between.
#[derive(serde::Serialize)]
struct SkuMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    event_id: i64,
    sku: &'a skuwatch_actors::domain::Sku,
    change: &'a skuwatch_actors::domain::Event,
}

impl Outgoing {
    pub fn new(change: &Committed) -> Self {
        let text = serde_json::to_string(&SkuMessage {
            kind: "sku",
            event_id: change.event.event_id,
            sku: &change.sku,
            change: &change.event,
        })
        .expect("a sku message always serialises");
        debug_assert!(text.starts_with(SKU_MESSAGE_PREFIX));
        Self {
            event_id: change.event.event_id,
            sku: change.sku.sku.clone(),
            version: change.sku.version,
            at_micros: change.event.at.0,
            text: text.into(),
        }
    }

    /// The same message marked `"conflated": true`, without re-serialising.
    pub fn conflated_text(&self) -> String {
        let rest = self
            .text
            .as_str()
            .strip_prefix(SKU_MESSAGE_PREFIX)
            .unwrap_or(self.text.as_str());
        format!("{SKU_MESSAGE_PREFIX}\"conflated\":true,{rest}")
    }
}

/// Limits of one session's queue.
#[derive(Debug, Clone, Copy)]
pub struct OutboxLimits {
    /// Messages kept in order before conflating.
    pub queue: usize,
    /// Distinct SKUs kept while conflating before the session is too slow.
    pub conflated: usize,
}

/// What the session's writer takes out in one go.
#[derive(Debug, Default)]
pub struct Drained {
    /// Alert messages: never conflated (each is a distinct event).
    pub alerts: Vec<Arc<str>>,
    pub in_order: Vec<Arc<Outgoing>>,
    /// Newest message per SKU, to be sent marked as conflated.
    pub conflated: Vec<Arc<Outgoing>>,
    pub too_slow: bool,
}

#[derive(Default)]
struct State {
    alerts: VecDeque<Arc<str>>,
    queue: VecDeque<Arc<Outgoing>>,
    conflated: IndexMap<SkuCode, Arc<Outgoing>>,
    /// The feed dispatches in `event_id` order; anything not newer is a
    /// duplicate (a session subscribed to a SKU and to all).
    last_event_id: i64,
    too_slow: bool,
}

/// Tells the session that its outbox holds something (sends it a message).
pub type Wake = Box<dyn Fn() + Send + Sync>;

pub struct Outbox {
    state: Mutex<State>,
    /// A wake is sent and the session has not drained since.
    woken: AtomicBool,
    wake: Wake,
    limits: OutboxLimits,
}

impl Outbox {
    pub fn new(limits: OutboxLimits, wake: Wake) -> Self {
        Self {
            state: Mutex::new(State::default()),
            woken: AtomicBool::new(false),
            wake,
            limits,
        }
    }

    fn notify(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            (self.wake)();
        }
    }

    /// Queues a message; never blocks on the client.
    pub fn push(&self, message: &Arc<Outgoing>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if message.event_id <= state.last_event_id || state.too_slow {
                return;
            }
            state.last_event_id = message.event_id;
            if state.conflated.is_empty() && state.queue.len() < self.limits.queue {
                state.queue.push_back(message.clone());
            } else {
                if state
                    .conflated
                    .insert(message.sku.clone(), message.clone())
                    .is_some()
                {
                    metrics::counter!(crate::metrics::WS_UPDATES_CONFLATED).increment(1);
                }
                if state.conflated.len() > self.limits.conflated {
                    // Free the memory now; the session closes with 4408.
                    state.too_slow = true;
                    state.queue = VecDeque::new();
                    state.conflated = IndexMap::new();
                }
            }
        }
        self.notify();
    }

    /// Queues an alert message. Alerts are rare (one per threshold
    /// crossing) but still bounded: past the queue limit the session is too
    /// slow.
    pub fn push_alert(&self, text: &Arc<str>) {
        {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if state.too_slow {
                return;
            }
            if state.alerts.len() >= self.limits.queue {
                state.too_slow = true;
                state.alerts = VecDeque::new();
                state.queue = VecDeque::new();
                state.conflated = IndexMap::new();
            } else {
                state.alerts.push_back(text.clone());
            }
        }
        self.notify();
    }

    /// Takes everything queued; the next push wakes the session again.
    pub fn drain(&self) -> Drained {
        self.woken.store(false, Ordering::Release);
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        Drained {
            alerts: state.alerts.drain(..).collect(),
            in_order: state.queue.drain(..).collect(),
            conflated: state.conflated.drain(..).map(|(_, m)| m).collect(),
            too_slow: state.too_slow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(event_id: i64, sku: &str) -> Arc<Outgoing> {
        Arc::new(Outgoing {
            event_id,
            sku: SkuCode::parse(sku).unwrap(),
            version: event_id,
            at_micros: 0,
            text: format!("{SKU_MESSAGE_PREFIX}\"event_id\":{event_id}}}").into(),
        })
    }

    #[test]
    fn a_slow_session_keeps_only_the_newest_message_per_sku_past_its_queue() {
        let outbox = Outbox::new(
            OutboxLimits {
                queue: 2,
                conflated: 10,
            },
            Box::new(|| {}),
        );
        for (id, sku) in [(1, "A"), (2, "B"), (3, "A"), (4, "B"), (5, "A")] {
            outbox.push(&message(id, sku));
        }
        let drained = outbox.drain();
        let ids = |v: &[Arc<Outgoing>]| v.iter().map(|m| m.event_id).collect::<Vec<_>>();
        assert_eq!(ids(&drained.in_order), [1, 2]);
        assert_eq!(ids(&drained.conflated), [5, 4]);
        assert!(!drained.too_slow);
        assert_eq!(
            drained.conflated[0].conflated_text(),
            "{\"type\":\"sku\",\"conflated\":true,\"event_id\":5}"
        );
    }

    #[test]
    fn too_many_conflated_skus_mark_the_session_too_slow_and_free_the_queue() {
        let outbox = Outbox::new(
            OutboxLimits {
                queue: 1,
                conflated: 2,
            },
            Box::new(|| {}),
        );
        for (id, sku) in [(1, "A"), (2, "B"), (3, "C"), (4, "D")] {
            outbox.push(&message(id, sku));
        }
        let drained = outbox.drain();
        assert!(drained.too_slow);
        assert!(drained.in_order.is_empty() && drained.conflated.is_empty());
    }

    #[test]
    fn a_message_seen_twice_is_queued_once() {
        let outbox = Outbox::new(
            OutboxLimits {
                queue: 10,
                conflated: 10,
            },
            Box::new(|| {}),
        );
        outbox.push(&message(1, "A"));
        outbox.push(&message(1, "A"));
        assert_eq!(outbox.drain().in_order.len(), 1);
    }

    #[test]
    fn the_session_is_woken_once_until_it_drains() {
        let wakes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = wakes.clone();
        let outbox = Outbox::new(
            OutboxLimits {
                queue: 10,
                conflated: 10,
            },
            Box::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        );
        outbox.push(&message(1, "A"));
        outbox.push(&message(2, "B"));
        assert_eq!(wakes.load(Ordering::Relaxed), 1);
        outbox.drain();
        outbox.push(&message(3, "A"));
        assert_eq!(wakes.load(Ordering::Relaxed), 2);
    }
}
