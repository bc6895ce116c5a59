//! # skuwatch-actors
//!
//! The domain and the actor system of skuwatch, independent of HTTP and of
//! any particular database.
//!
//! # Layout
//! - [`domain`]: validated types (`SkuCode`, `Money`, `Sku`, `Event`) and the
//!   one function that decides every change ([`domain::decide`]).
//! - [`store`]: the [`store::SkuStore`] trait the actors write through.
//! - [`bus`]: the [`bus::EventBus`] trait committed changes travel on.
//! - [`plan`]: the write planner, pure: what a group of writes does to
//!   the rows, alerts and events (the store only executes it).
//! - [`sku_actor`]: one actor per active SKU: cached state, pipelined writer.
//! - [`registry`]: finds or activates a SKU's actor; the supervisor that
//!   restarts failed actors; passivation of idle ones.
//! - [`subscribers`]: the per-SKU subscriber sets of an instance; they pin
//!   SKU actors and outlive their restarts.
//! - [`messages`]: what the actors understand.
//! - [`metrics`]: names of the actor metrics (no per-SKU labels).
//! - `testing` (tests, or the `testing` feature): an in-memory store and a
//!   bus that misbehaves on demand, for unit tests without a database.

pub mod bus;
pub mod domain;
pub mod handle;
pub mod messages;
pub mod metrics;
pub mod plan;
pub mod registry;
pub mod sku_actor;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod core_tests;
pub mod subscribers;
