//! The event bus between committed writes and every instance's fan-out.

use std::sync::Arc;

use tokio::sync::{broadcast, watch};

use crate::domain::Committed;

/// Carries committed changes to every server instance (in-process, or Redis
/// pub/sub across instances). Delivery is at-most-once and may reorder or
/// drop; receivers restore order and fill gaps from the database, using the
/// gap-free global `event_id`.
pub trait EventBus: Send + Sync + 'static {
    /// Publishes changes that are already committed. Never blocks.
    fn publish(&self, changes: &[Arc<Committed>]);

    /// A receiver of everything published from now on, by any instance.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>>;

    /// Whether changes from other instances currently arrive (the Redis
    /// listener is subscribed and its heartbeat comes back). Always `true`
    /// for a bus that serves one instance.
    fn connected(&self) -> watch::Receiver<bool>;

    /// Told by the feed, before it dispatches a change it had to read from
    /// the database because the bus did not deliver it, so that a bus with
    /// a shared cache can bring that cache up to date. Never blocks.
    fn missed(&self, _change: &Arc<Committed>) {}
}
