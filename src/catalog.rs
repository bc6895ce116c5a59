//! The catalog actor: one per instance, the owner of the catalog-level
//! subscriptions (`{"subscribe", "all": true}` and `"alerts": true`).
//!
//! It is the only writer of those two sets, which the ordered feed reads to
//! fan every change out (see `crate::feed` for why delivery follows the
//! feed's `event_id` order rather than each actor's own thread). They are
//! concurrent maps, so a subscribe costs one insert, not a copy of the set.
//! A subscribe is a call: the session is in the set when it returns, before
//! it reads the database, so nothing committed in between is missed.

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use skuwatch_actors::subscribers::SubscriberId;

use crate::outbox::Outbox;

/// How long a session waits for the catalog actor to take its subscribe.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The catalog-level subscribers: written by the catalog actor only,
/// read by the feed.
#[derive(Default)]
pub struct CatalogSets {
    pub all: DashMap<SubscriberId, Arc<Outbox>>,
    pub alerts: DashMap<SubscriberId, Arc<Outbox>>,
}

pub enum CatalogMsg {
    /// Adds the session to `all` and/or `alerts`; answered once it is in.
    Subscribe {
        id: SubscriberId,
        outbox: Arc<Outbox>,
        all: bool,
        alerts: bool,
        reply: RpcReplyPort<()>,
    },
    /// Takes the session out of `all` and/or `alerts`.
    Unsubscribe {
        id: SubscriberId,
        all: bool,
        alerts: bool,
    },
}

/// The handle the sessions and the feed use.
#[derive(Clone)]
pub struct Catalog {
    actor: ActorRef<CatalogMsg>,
    sets: Arc<CatalogSets>,
}

impl Catalog {
    pub async fn start() -> Result<Self, ractor::SpawnErr> {
        let sets = Arc::new(CatalogSets::default());
        let (actor, _) = Actor::spawn(None, CatalogActor, sets.clone()).await?;
        Ok(Self { actor, sets })
    }

    /// The sets, for the feed to deliver through.
    pub fn sets(&self) -> &CatalogSets {
        &self.sets
    }

    /// Subscribes; `false` if the catalog actor did not answer in time.
    /// The subscribe may still be in its mailbox then; an unsubscribe queued
    /// behind it takes it back, so a session that was told "busy" (and
    /// whose `leave` therefore skips the catalog) is never left in a set.
    pub async fn subscribe(
        &self,
        id: SubscriberId,
        outbox: &Arc<Outbox>,
        all: bool,
        alerts: bool,
    ) -> bool {
        let outbox = outbox.clone();
        let answer = self
            .actor
            .call(
                |reply| CatalogMsg::Subscribe {
                    id,
                    outbox,
                    all,
                    alerts,
                    reply,
                },
                Some(CALL_TIMEOUT),
            )
            .await;
        let subscribed = matches!(answer, Ok(ractor::rpc::CallResult::Success(())));
        if !subscribed {
            self.unsubscribe(id, all, alerts);
        }
        subscribed
    }

    /// Never waits: also called from a session's `Drop`.
    pub fn unsubscribe(&self, id: SubscriberId, all: bool, alerts: bool) {
        if all || alerts {
            let _ = self.actor.cast(CatalogMsg::Unsubscribe { id, all, alerts });
        }
    }

    pub fn stop(&self) {
        self.actor.stop(None);
    }
}

struct CatalogActor;

pub struct CatalogState {
    sets: Arc<CatalogSets>,
}

impl Actor for CatalogActor {
    type Msg = CatalogMsg;
    type State = CatalogState;
    type Arguments = Arc<CatalogSets>;

    async fn pre_start(
        &self,
        _myself: ActorRef<CatalogMsg>,
        sets: Self::Arguments,
    ) -> Result<CatalogState, ActorProcessingErr> {
        Ok(CatalogState { sets })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CatalogMsg>,
        message: CatalogMsg,
        state: &mut CatalogState,
    ) -> Result<(), ActorProcessingErr> {
        let sets = &state.sets;
        match message {
            CatalogMsg::Subscribe {
                id,
                outbox,
                all,
                alerts,
                reply,
            } => {
                if all {
                    sets.all.insert(id, outbox.clone());
                }
                if alerts {
                    sets.alerts.insert(id, outbox);
                }
                let _ = reply.send(());
            }
            CatalogMsg::Unsubscribe { id, all, alerts } => {
                if all {
                    sets.all.remove(&id);
                }
                if alerts {
                    sets.alerts.remove(&id);
                }
            }
        }
        Ok(())
    }
}
