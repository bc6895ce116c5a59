//! Who is subscribed to each SKU: one table per instance, created at
//! start-up and shared by the sessions (which join and leave it), the feed
//! (which delivers through it) and the SKU actors (which read it, through
//! [`Pins`], to stay pinned).
//!
//! # Why the sets live here and not in each actor's `State`
//! A session that subscribes must be registered before it reads the
//! database (snapshot or `since` replay), or a change committed in between
//! is missed; it must then receive every change of those SKUs in `event_id`
//! order, together with the changes of its other SKUs, because a client
//! resumes with `since` = the last id it saw. Two SKU actors forwarding on
//! their own run on two threads and reorder changes across SKUs, and a
//! resume after such a reordering skips an event. So the ordered feed
//! (`src/feed.rs` in the server) drives delivery: for each change, in id
//! order, it looks up the SKU's set here and pushes the change, serialised
//! once, into each subscriber's bounded outbox.
//!
//! Keeping the set in this table rather than in the actor's `State` also
//! gives the other guarantees for free: a restarted or passivated actor
//! never drops a subscription (the table outlives it, and a new actor of
//! the SKU finds its set here), and a subscription to a code
//! that does not exist keeps no actor. A SKU actor reads its own set to
//! decide whether it is pinned (not passivated while subscribed; see
//! [`Pins`]). Each set is changed atomically under its map entry's lock, so
//! a subscribe is complete when [`SubscriberTable::subscribe`] returns.

use std::collections::HashMap;

use dashmap::DashMap;

use crate::domain::SkuCode;

/// Identifies a subscriber (a WebSocket session) within this instance.
pub type SubscriberId = u64;

/// Whether a SKU has subscribers on this instance: read by its actor to
/// decide whether it is pinned.
pub trait Pins: Send + Sync {
    fn is_subscribed(&self, sku: &SkuCode) -> bool;
}

/// Subscriber sets per SKU. `S` is what a change is pushed to (the server's
/// session outbox); the actors only need [`Pins`].
pub struct SubscriberTable<S> {
    by_sku: DashMap<SkuCode, HashMap<SubscriberId, S>>,
}

impl<S> Default for SubscriberTable<S> {
    fn default() -> Self {
        Self {
            by_sku: DashMap::new(),
        }
    }
}

impl<S: Clone> SubscriberTable<S> {
    /// Adds `subscriber` to the set of each SKU; done when this returns.
    pub fn subscribe(&self, id: SubscriberId, subscriber: &S, skus: &[SkuCode]) {
        for sku in skus {
            self.by_sku
                .entry(sku.clone())
                .or_default()
                .insert(id, subscriber.clone());
        }
    }

    /// Takes `id` out of the sets of `skus`; an emptied set is removed, so
    /// the table holds only codes someone watches.
    pub fn unsubscribe<'a>(&self, id: SubscriberId, skus: impl IntoIterator<Item = &'a SkuCode>) {
        for sku in skus {
            self.by_sku.remove_if_mut(sku, |_, set| {
                set.remove(&id);
                set.is_empty()
            });
        }
    }

    /// Calls `push` for each subscriber of `sku`. Called by the ordered feed
    /// only, so every subscriber sees the changes of all its SKUs in
    /// `event_id` order; `push` must never wait.
    pub fn for_each(&self, sku: &SkuCode, mut push: impl FnMut(&S)) {
        if let Some(set) = self.by_sku.get(sku) {
            set.values().for_each(&mut push);
        }
    }

    /// Distinct SKU codes with at least one subscriber.
    pub fn skus(&self) -> usize {
        self.by_sku.len()
    }
}

impl<S: Send + Sync> Pins for SubscriberTable<S> {
    fn is_subscribed(&self, sku: &SkuCode) -> bool {
        self.by_sku.contains_key(sku)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> SkuCode {
        SkuCode::parse(s).unwrap()
    }

    #[test]
    fn a_set_emptied_by_unsubscribing_leaves_the_table() {
        let table = SubscriberTable::<&str>::default();
        table.subscribe(1, &"one", &[code("A"), code("B")]);
        table.subscribe(2, &"two", &[code("A")]);
        table.unsubscribe(1, &[code("A"), code("B")]);
        assert_eq!(table.skus(), 1);
        assert!(table.is_subscribed(&code("A")));
        assert!(!table.is_subscribed(&code("B")));
        let mut seen = Vec::new();
        table.for_each(&code("A"), |s| seen.push(*s));
        assert_eq!(seen, ["two"]);
    }
}
