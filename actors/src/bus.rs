//! The event bus between committed writes and every instance's fan-out.

use std::sync::Arc;

use tokio::sync::broadcast;

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
}
