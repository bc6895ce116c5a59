//! Implementations of [`EventBus`](skuwatch_actors::bus::EventBus).
//! Redis pub/sub joins this module with the scale-out issue.

mod memory;

pub use memory::InProcessBus;
