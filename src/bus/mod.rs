//! Implementations of [`EventBus`](skuwatch_actors::bus::EventBus): in
//! process for one instance, Redis pub/sub for several.

mod memory;
mod redis;

pub use self::redis::{RedisBus, RedisConfig};
pub use memory::InProcessBus;
