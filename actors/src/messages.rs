//! Messages of the SKU actor and its supervisor.

use std::sync::Arc;

use ractor::{ActorRef, RpcReplyPort, SpawnErr};

use crate::domain::{Command, Committed, Sku, SkuCode, WriteMeta};
use crate::store::{Idempotency, StoreError, WriteOutcome};

/// One single-SKU write, as the HTTP layer hands it to the SKU's actor.
#[derive(Debug, Clone)]
pub struct WriteRequest {
    pub command: Command,
    pub meta: WriteMeta,
    pub idempotency: Option<Idempotency>,
}

/// What a SKU actor handles. Replies carry the store's error unchanged.
#[derive(Debug)]
pub enum SkuMsg {
    /// The cached state (loaded from the database on first use).
    Get(RpcReplyPort<Result<Option<Sku>, StoreError>>),
    /// Runs one write transaction, then caches and publishes the result.
    Write(
        Box<WriteRequest>,
        RpcReplyPort<Result<WriteOutcome, StoreError>>,
    ),
    /// A change committed elsewhere (batch path, another instance): cached
    /// if newer than what the actor holds.
    Apply(Arc<Committed>),
    /// Passivation timer: stop when unused for the idle time.
    IdleCheck,
    /// Fault injection for supervision tests: the actor fails as a panic would.
    #[doc(hidden)]
    Fail,
}

/// What the supervisor handles.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// The actor for a SKU: the registered one, or a new one spawned and
    /// registered. Serialised through the supervisor so a SKU never has two.
    Activate(SkuCode, RpcReplyPort<Result<ActorRef<SkuMsg>, SpawnErr>>),
}
