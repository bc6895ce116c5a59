//! Messages of the SKU actor and its supervisor.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use ractor::{ActorRef, RpcReplyPort, SpawnErr};

use crate::domain::{Sku, SkuCode};
pub use crate::store::WriteRequest;
use crate::store::{StoreError, WriteJob, WriteOutcome};

/// Where a SKU actor answers a write.
pub type WriteReply = RpcReplyPort<Result<WriteOutcome, StoreError>>;

/// Who owns a request sent to a SKU actor: still its sender (queued), or
/// the actor (started). Exactly one side wins the switch, so the sender
/// knows for certain whether the request can have reached the store:
/// - the actor calls [`Claim::start`] before it touches the store, and
///   skips a request that was withdrawn;
/// - the sender calls [`Claim::withdraw`] when it stops waiting (mailbox
///   wait elapsed, caller gone): success means the request never runs.
///
/// A write whose actor stopped is sent again only if it was never started
/// (issue 13, fault 3: a write that may have committed is never repeated).
#[derive(Debug, Clone, Default)]
pub struct Claim(Arc<AtomicU8>);

const QUEUED: u8 = 0;
const STARTED: u8 = 1;
const WITHDRAWN: u8 = 2;

impl Claim {
    /// Actor side: takes the request; `false` if the sender withdrew it.
    pub fn start(&self) -> bool {
        self.0
            .compare_exchange(QUEUED, STARTED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Sender side: withdraws a request not yet started; `false` if the
    /// actor started it (its outcome is then unknown to the sender).
    pub fn withdraw(&self) -> bool {
        match self
            .0
            .compare_exchange(QUEUED, WITHDRAWN, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == WITHDRAWN,
        }
    }

    /// Whether the actor started the request.
    pub fn started(&self) -> bool {
        self.0.load(Ordering::Acquire) == STARTED
    }
}

/// What a SKU actor handles. Replies carry the store's error unchanged.
#[derive(Debug)]
pub enum SkuMsg {
    /// The cached state (loaded from the database on first use).
    Get(Claim, RpcReplyPort<Result<Option<Sku>, StoreError>>),
    /// A write to run in the actor's next commit call, in the order
    /// received: a single write on the actor's SKU, or an atomic batch
    /// whose lowest SKU is the actor's (the actor coordinates it; see
    /// [`crate::registry::Registry::write_batch`]). Answered once committed,
    /// cached and published.
    Write(Box<WriteJob>, Claim, WriteReply),
    /// Sent by the task running the actor's commit call: one outcome per
    /// job, in order, or `None` when the task ended without outcomes (it
    /// panicked or was cancelled: the jobs may or may not have committed).
    /// The changes were published on the bus already.
    Committed(Option<Vec<Result<WriteOutcome, StoreError>>>),
    /// States are waiting in the actor's [`crate::handle::ChangeSlot`]:
    /// changes committed elsewhere (the feed, a batch's other lines), or
    /// states this instance read from the database and is showing a client
    /// (a snapshot, a list page, a replay; issue 13, fault 11). Cached if
    /// newer. At most one is in the mailbox at a time.
    Changed,
    /// Passivation timer: stop when unused for the idle time.
    IdleCheck,
    /// Sent by the actor to itself after it found its SKU absent (or could
    /// not load it): stop unless the SKU appeared meanwhile, so a read of
    /// an unknown code keeps no actor alive (issue 13, fault 12). Queued
    /// behind the requests already waiting, which are answered first.
    StopIfAbsent,
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

/// Faults the tests inject into the write path; never set from the
/// environment or a flag. Each fires once, for the first write whose
/// `reason` matches.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct InjectedFaults {
    /// The SKU actor panics right after the store committed the write
    /// (before it answers): the outcome is unknown to the caller.
    pub panic_after_commit: Option<Arc<OnceFault>>,
    /// The SKU actor fails when it takes the write from its mailbox, before
    /// starting it: the write never reached the store.
    pub fail_before_start: Option<Arc<OnceFault>>,
}

/// A fault that fires once for a write with a given `reason`.
#[doc(hidden)]
#[derive(Debug)]
pub struct OnceFault {
    reason: String,
    fired: std::sync::atomic::AtomicBool,
}

impl OnceFault {
    pub fn new(reason: &str) -> Arc<Self> {
        Arc::new(Self {
            reason: reason.to_owned(),
            fired: Default::default(),
        })
    }

    /// Whether the fault fires for a write with this reason (at most once).
    pub fn fires(&self, reason: Option<&str>) -> bool {
        reason == Some(self.reason.as_str()) && !self.fired.swap(true, Ordering::AcqRel)
    }

    /// Whether it has fired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Acquire)
    }
}
