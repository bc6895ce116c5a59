//! The feed: turns what the bus delivers (possibly late, out of order, or
//! lost) into the gap-free stream of changes in `event_id` order, and hands
//! each change to the SKU actors' caches and to their subscribers.
//!
//! Event ids are assigned by the database without gaps and become visible in
//! id order (see `migrations/*/0001_core.sql`), so a missing id is a change
//! still on its way or lost by the bus; after a short wait it is read from
//! the database.
//!
//! # Delivery follows this order
//! A client resumes with `since` = the last `event_id` it saw, so a session
//! must receive the changes of all its SKUs in `event_id` order: one that
//! saw 12 before 11 and then reconnects with `since: 12` never gets 11. If
//! each SKU actor forwarded its own changes, two actors on two threads would
//! reorder changes across SKUs. So this feed, the one place that knows the
//! order, drives delivery through the subscriber sets: the per-SKU table
//! ([`skuwatch_actors::subscribers`], shared by the sessions, which join and
//! leave it, and the SKU actors, which read it to stay pinned) and the
//! catalog actor's `all`/`alerts` ([`crate::catalog`]): each change is serialised once and the shared
//! bytes are pushed into each subscribed session's bounded outbox, in id
//! order. Nothing here waits for a session.
//!
//! # Bounds
//! The bus hands changes over through a bounded queue; when it overflows
//! ([`RecvError::Lagged`]) the missed changes are read from the database
//! (counted, `skuwatch_push_dropped_total{queue="feed"}`). A session's
//! outbox is bounded and conflates (`crate::outbox`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::Committed;
use skuwatch_actors::registry::Registry;
use skuwatch_actors::store::SkuStore;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::catalog::Catalog;
use crate::outbox::{Outgoing, SkuSubscribers};

/// How long an id may be missing before it is read from the database.
const GAP_WAIT: Duration = Duration::from_millis(100);
/// How often the database is asked whether the bus lost the newest changes.
const TAIL_CHECK: Duration = Duration::from_secs(1);
const PAGE: i64 = 500;
/// The `reason` of a change written straight into the database.
const EXTERNAL: &str = "external";

pub struct Feed {
    store: Arc<dyn SkuStore>,
    bus: Arc<dyn EventBus>,
    registry: Registry,
    subscribers: Arc<SkuSubscribers>,
    catalog: Catalog,
    /// The next `event_id` to dispatch.
    next: i64,
    pending: BTreeMap<i64, Arc<Committed>>,
    gap_since: Option<Instant>,
    /// The newest `event_id` the database is known to hold, told by its
    /// listener ([`crate::external`]): changes written straight into it,
    /// which no bus carries. `i64::MAX` when the listener cannot tell.
    newest: tokio::sync::watch::Receiver<i64>,
}

impl Feed {
    /// Subscribes to the bus and starts at the database's newest event;
    /// reads the database at once when `newest` goes past what it has.
    pub async fn start(
        store: Arc<dyn SkuStore>,
        bus: Arc<dyn EventBus>,
        registry: Registry,
        subscribers: Arc<SkuSubscribers>,
        catalog: Catalog,
        newest: tokio::sync::watch::Receiver<i64>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, skuwatch_actors::store::StoreError> {
        let receiver = bus.subscribe();
        let last = store.last_event_id().await?;
        let feed = Feed {
            store,
            bus,
            registry,
            subscribers,
            catalog,
            next: last + 1,
            pending: BTreeMap::new(),
            gap_since: None,
            newest,
        };
        Ok(tokio::spawn(feed.run(receiver, shutdown)))
    }

    async fn run(
        mut self,
        mut receiver: tokio::sync::broadcast::Receiver<Arc<Committed>>,
        shutdown: CancellationToken,
    ) {
        let mut gap_timer = tokio::time::interval(GAP_WAIT / 2);
        let mut last_tail_check = Instant::now();
        let mut connected = self.bus.connected();
        let mut newest = self.newest.clone();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // Back in touch with the other instances: read at once what
                // they committed meanwhile rather than at the next tail check.
                Ok(()) = connected.changed() => {
                    if *connected.borrow_and_update() {
                        last_tail_check = Instant::now();
                        self.catch_up().await;
                    }
                }
                // A change written straight into the database.
                Ok(()) = newest.changed() => {
                    if *newest.borrow_and_update() >= self.next {
                        metrics::counter!(crate::metrics::EXTERNAL_WAKEUPS).increment(1);
                        last_tail_check = Instant::now();
                        self.catch_up().await;
                    }
                }
                received = receiver.recv() => match received {
                    Ok(change) => self.offer(change),
                    Err(RecvError::Lagged(missed)) => {
                        crate::metrics::push_dropped("feed", missed);
                        tracing::warn!(missed, "feed lagged behind the bus; catching up from the database");
                        self.catch_up().await;
                    }
                    Err(RecvError::Closed) => return,
                },
                _ = gap_timer.tick() => {
                    let gap_is_old = self.gap_since.is_some_and(|t| t.elapsed() >= GAP_WAIT);
                    if gap_is_old || last_tail_check.elapsed() >= TAIL_CHECK {
                        last_tail_check = Instant::now();
                        self.catch_up().await;
                    }
                }
            }
        }
    }

    fn offer(&mut self, change: Arc<Committed>) {
        if change.event.event_id >= self.next {
            self.pending.insert(change.event.event_id, change);
        }
        self.drain_ready();
    }

    fn drain_ready(&mut self) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            let change = entry.remove();
            self.dispatch(&change);
        }
        if self.pending.is_empty() {
            self.gap_since = None;
        } else {
            self.gap_since.get_or_insert_with(Instant::now);
        }
    }

    /// Hands one change, in `event_id` order, to its SKU's actor (cache)
    /// and to every subscriber: serialised once, the bytes shared.
    fn dispatch(&mut self, change: &Arc<Committed>) {
        if change.event.reason.as_deref() == Some(EXTERNAL) {
            metrics::counter!(crate::metrics::EXTERNAL_EVENTS).increment(1);
        }
        self.registry.apply(change);
        let message = Arc::new(Outgoing::new(change));
        let catalog = self.catalog.sets();
        for outbox in catalog.all.iter() {
            outbox.push(&message);
        }
        self.subscribers
            .for_each(&change.sku.sku, |outbox| outbox.push(&message));
        if !change.alerts.is_empty() && !catalog.alerts.is_empty() {
            for alert in &change.alerts {
                let text: Arc<str> = serde_json::json!({ "type": "alert", "alert": alert })
                    .to_string()
                    .into();
                for outbox in catalog.alerts.iter() {
                    outbox.push_alert(&text);
                }
            }
        }
        self.next = change.event.event_id + 1;
    }

    /// The feed's own position can be ahead of the database, as a client's
    /// can (issue 13, fault 5): after a restore or a failover to a replica
    /// that lagged, ids up to the old position are given to new changes,
    /// which the feed would skip as already dispatched. It goes back to the
    /// database's newest event instead, and says so loudly.
    async fn check_rewound(&mut self) {
        let Ok(newest) = self.store.last_event_id().await else {
            return;
        };
        if newest < self.next - 1 {
            tracing::error!(
                position = self.next - 1,
                newest,
                "the database's newest event is behind this instance's feed (restored or \
                 failed over?); following the database from its newest event"
            );
            metrics::counter!(crate::metrics::CURSOR_REFUSED, "code" => "cursor_ahead", "via" => "feed")
                .increment(1);
            self.next = newest + 1;
            self.pending.clear();
        }
    }

    /// Reads what is missing from the database, then resumes from the bus.
    /// The bus hears of each such change before it is dispatched, so that
    /// a bus with a shared state hash (Redis) brings that hash up to date.
    /// What is read back carries the alerts pushed with it live (the
    /// `events.alerts` column), so `alerts` sessions miss none.
    #[tracing::instrument(level = "debug", skip_all, fields(from = self.next))]
    async fn catch_up(&mut self) {
        loop {
            let page = match self.store.events_after(self.next - 1, PAGE, None).await {
                Ok(page) => page,
                Err(error) => {
                    tracing::warn!(%error, "feed could not read missed events; will retry");
                    return;
                }
            };
            if page.is_empty() {
                self.check_rewound().await;
            }
            let full = page.len() as i64 == PAGE;
            let mut caught_up = 0u64;
            for change in page {
                if change.event.event_id == self.next {
                    self.pending.remove(&change.event.event_id);
                    let change = Arc::new(change);
                    self.bus.missed(&change);
                    self.dispatch(&change);
                    caught_up += 1;
                }
            }
            if caught_up > 0 {
                metrics::counter!(crate::metrics::BUS_CATCHUP_EVENTS).increment(caught_up);
            }
            if !full {
                break;
            }
        }
        let next = self.next;
        self.pending.retain(|id, _| *id >= next);
        self.drain_ready();
    }
}

#[cfg(test)]
mod tests {
    //! The feed against the in-memory store and a bus that drops, holds
    //! back and reorders, observed through what reaches the SKU actors
    //! (their cache, and whether they had to read the store) and what the
    //! feed reported as read from the database (`EventBus::missed`).

    use std::sync::Arc;
    use std::time::Duration;

    use skuwatch_actors::bus::EventBus;
    use skuwatch_actors::registry::{Registry, RegistryConfig};
    use skuwatch_actors::store::SkuStore;
    use skuwatch_actors::testing::{code_of, BusMode, FakeBus, MemoryStore};
    use tokio_util::sync::CancellationToken;

    use super::*;

    struct Rig {
        store: Arc<MemoryStore>,
        bus: Arc<FakeBus>,
        registry: Registry,
        shutdown: CancellationToken,
    }

    /// A feed over SKU `A-1` (stock 10, version 1), whose actor is active
    /// and has loaded it.
    async fn rig() -> Rig {
        let (store, bus) = (MemoryStore::new(), FakeBus::new());
        store.seed("A-1", 10).await;
        let dyn_store: Arc<dyn SkuStore> = store.clone();
        let dyn_bus: Arc<dyn EventBus> = bus.clone();
        let registry = Registry::start(
            dyn_store.clone(),
            dyn_bus.clone(),
            RegistryConfig::default(),
        )
        .await
        .unwrap();
        let shutdown = CancellationToken::new();
        Feed::start(
            dyn_store,
            dyn_bus,
            registry.clone(),
            Arc::new(SkuSubscribers::default()),
            Catalog::start().await.unwrap(),
            tokio::sync::watch::channel(0).1,
            shutdown.clone(),
        )
        .await
        .unwrap();
        registry.get(&code_of("A-1")).await.unwrap();
        Rig {
            store,
            bus,
            registry,
            shutdown,
        }
    }

    /// Three changes of `A-1` committed and published (versions 2 to 4).
    async fn publish_three(rig: &Rig) -> Vec<Arc<Committed>> {
        let mut changes = Vec::new();
        for _ in 0..3 {
            changes.push(rig.store.adjust_behind_the_back("A-1", 1).await);
        }
        rig.bus.publish(&changes);
        changes
    }

    /// Waits (bounded) until the actor of `A-1` caches `version`.
    async fn cached_version_reaches(rig: &Rig, version: i64) -> i64 {
        let sku = code_of("A-1");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let cached = rig.registry.get(&sku).await.unwrap().unwrap().version;
            if cached >= version || tokio::time::Instant::now() > deadline {
                return cached;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn changes_the_bus_reorders_reach_the_actors_in_event_id_order() {
        let rig = rig().await;
        let loads = rig.store.load_calls();
        rig.bus.set_mode(BusMode::Hold);
        publish_three(&rig).await;
        rig.bus.release_reversed();

        assert_eq!(cached_version_reaches(&rig, 4).await, 4);
        // Out of order, the actor would have seen a version gap and read
        // the store; nothing had to be read from the database either.
        assert_eq!(
            rig.store.load_calls(),
            loads,
            "a change reached the actor out of order"
        );
        assert!(rig.bus.missed_changes().is_empty());
        rig.shutdown.cancel();
    }

    #[tokio::test]
    async fn changes_the_bus_loses_are_read_from_the_database_in_order() {
        let rig = rig().await;
        let loads = rig.store.load_calls();
        rig.bus.set_mode(BusMode::Hold);
        let changes = publish_three(&rig).await;
        // The middle one is lost; the others arrive reversed.
        rig.bus.release_in(&[2, 0]);

        assert_eq!(cached_version_reaches(&rig, 4).await, 4);
        assert_eq!(
            rig.store.load_calls(),
            loads,
            "a change reached the actor out of order"
        );
        let missed: Vec<i64> = rig
            .bus
            .missed_changes()
            .iter()
            .map(|c| c.event.event_id)
            .collect();
        assert_eq!(
            missed,
            vec![changes[1].event.event_id, changes[2].event.event_id]
        );
        rig.shutdown.cancel();
    }

    #[tokio::test]
    async fn duplicates_from_the_bus_are_dispatched_once() {
        let rig = rig().await;
        let loads = rig.store.load_calls();
        rig.bus.set_mode(BusMode::Duplicate);
        publish_three(&rig).await;

        assert_eq!(cached_version_reaches(&rig, 4).await, 4);
        assert_eq!(rig.store.load_calls(), loads);
        assert!(rig.bus.missed_changes().is_empty());
        rig.shutdown.cancel();
    }
}
