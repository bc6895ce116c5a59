//! An active SKU actor as the registry's map holds it: its `ActorRef` and
//! the slot where states from elsewhere wait for it, conflated.
//!
//! ractor's mailboxes are unbounded and tell no length. Writes are bounded
//! in front of the mailbox (`SKUWATCH_ACTOR_MAILBOX`), reads by the callers
//! waiting for them; what remains is the flow nobody waits for: changes
//! dispatched by the feed, a batch's other lines, states the instance
//! showed a client. Those only ever make the cache newer, so they need not
//! queue one by one: they go into one slot per actor, which keeps the
//! newest, and at most one [`SkuMsg::Changed`] wake-up is in the mailbox at
//! a time. A burst on a SKU whose actor is slow (reloading, or busy
//! starting commit calls) costs one message, not one per change, and is
//! counted ([`crate::metrics::ACTOR_CHANGES_CONFLATED`]).

use std::sync::{Arc, Mutex};

use ractor::ActorRef;

use crate::domain::Sku;
use crate::messages::SkuMsg;

/// The newest state offered to an actor and not yet taken.
#[derive(Debug)]
pub struct Offered {
    pub sku: Sku,
    /// The state comes from the ordered feed and nothing was conflated
    /// with it: a version gap against the cache then means a change never
    /// reached the actor, and it reloads. A conflated or shown state skips
    /// versions on purpose and is simply kept if newer.
    pub check_gap: bool,
}

/// One per actor; shared by the actor and every sender.
#[derive(Debug, Default)]
pub struct ChangeSlot(Mutex<Option<Offered>>);

impl ChangeSlot {
    /// What was offered since the last take; called by the actor when it
    /// handles [`SkuMsg::Changed`].
    pub fn take(&self) -> Option<Offered> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// What the registry's map holds per active SKU.
#[derive(Clone)]
pub struct SkuHandle {
    pub actor: ActorRef<SkuMsg>,
    pub changes: Arc<ChangeSlot>,
}

impl SkuHandle {
    /// Offers a newer state to the actor: kept in its slot if newer than
    /// what waits there, and a wake-up sent only when the slot was empty.
    /// The slot is emptied only by the actor handling that wake-up, so a
    /// request sent after this call is handled after the state is taken
    /// (the guarantee `Registry::offer` gives its callers).
    pub fn offer(&self, sku: &Sku, from_feed: bool) {
        let mut slot = self.changes.0.lock().unwrap_or_else(|e| e.into_inner());
        match slot.as_mut() {
            None => {
                *slot = Some(Offered {
                    sku: sku.clone(),
                    check_gap: from_feed,
                });
                drop(slot);
                let _ = self.actor.cast(SkuMsg::Changed);
            }
            Some(waiting) => {
                if waiting.sku.version < sku.version {
                    waiting.sku = sku.clone();
                }
                waiting.check_gap = false;
                drop(slot);
                ::metrics::counter!(crate::metrics::ACTOR_CHANGES_CONFLATED).increment(1);
            }
        }
    }
}
