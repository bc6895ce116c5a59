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
//! - [`sku_actor`]: one actor per active SKU: cached state, serial writer.
//! - [`registry`]: finds or activates a SKU's actor; the supervisor that
//!   restarts failed actors; passivation of idle ones.
//! - [`subscribers`]: the per-SKU subscriber sets the supervisor keeps;
//!   they pin SKU actors and survive their restarts.
//! - [`messages`]: what the actors understand.
//! - [`metrics`]: names of the actor metrics (no per-SKU labels).

pub mod bus;
pub mod domain;
pub mod messages;
pub mod metrics;
pub mod registry;
pub mod sku_actor;
pub mod store;
pub mod subscribers;
