//! The in-process bus: one instance, no Redis.

use std::sync::Arc;

use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::Committed;
use tokio::sync::{broadcast, watch};

/// A broadcast channel. A receiver that falls more than `capacity` events
/// behind is told it lagged and catches up from the database.
pub struct InProcessBus {
    sender: broadcast::Sender<Arc<Committed>>,
    /// Always `true`: there is no other instance to lose touch with.
    connected: watch::Sender<bool>,
}

impl InProcessBus {
    pub fn new(capacity: usize) -> Self {
        Self {
            sender: broadcast::channel(capacity).0,
            connected: watch::Sender::new(true),
        }
    }
}

impl EventBus for InProcessBus {
    fn publish(&self, changes: &[Arc<Committed>]) {
        metrics::counter!(crate::metrics::BUS_PUBLISHED).increment(changes.len() as u64);
        for change in changes {
            crate::metrics::bus_received(change);
            // No receiver yet is fine: nothing to deliver to.
            let _ = self.sender.send(change.clone());
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        // In-process, a listener is connected as soon as it exists.
        metrics::gauge!(crate::metrics::BUS_LISTENER_UP).set(1.0);
        self.sender.subscribe()
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.connected.subscribe()
    }
}
