//! The shared SKU state cache (Redis, with the scale-out bus): a SKU actor
//! activates from it before falling back to the database.

use async_trait::async_trait;

use crate::domain::{Sku, SkuCode};

/// A cache of the newest committed state per SKU, shared by all instances.
///
/// Contract an implementation must keep: a state it returns is either the
/// newest committed one, or older only by changes that this instance's feed
/// has not dispatched yet (those reach the actor as `Apply` once it is
/// registered, so the actor converges). When it cannot promise that (the
/// cache is unreachable, or a change the feed dispatched has not reached the
/// cache), it returns `None` and the actor reads the database.
#[async_trait]
pub trait SkuCache: Send + Sync + 'static {
    /// The cached state of `sku`, or `None` to read the database instead.
    async fn get(&self, sku: &SkuCode) -> Option<Sku>;
}
