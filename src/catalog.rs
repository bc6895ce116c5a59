//! The catalog actor: one per instance, the owner of the catalog-level
//! subscriptions (`{"subscribe", "all": true}` and `"alerts": true`).
//!
//! It is the only writer of those two sets. After each change it publishes
//! them as a read-only snapshot ([`CatalogView`]), through which the ordered
//! feed fans every change out (see `crate::feed` for why delivery follows
//! the feed's `event_id` order rather than each actor's own thread). A
//! subscribe is a call: the session is in the published view when it
//! returns, before it reads the database, so nothing committed in between is
//! missed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use skuwatch_actors::subscribers::SubscriberId;

use crate::outbox::Outbox;

/// How long a session waits for the catalog actor to take its subscribe.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The catalog-level subscribers as last published.
#[derive(Default)]
pub struct CatalogView {
    pub all: Vec<Arc<Outbox>>,
    pub alerts: Vec<Arc<Outbox>>,
}

pub enum CatalogMsg {
    /// Adds the session to `all` and/or `alerts`; answered once published.
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
    view: Arc<RwLock<Arc<CatalogView>>>,
}

impl Catalog {
    pub async fn start() -> Result<Self, ractor::SpawnErr> {
        let view = Arc::new(RwLock::new(Arc::new(CatalogView::default())));
        let (actor, _) = Actor::spawn(None, CatalogActor, view.clone()).await?;
        Ok(Self { actor, view })
    }

    /// The published sets (a reference count, no copy).
    pub fn view(&self) -> Arc<CatalogView> {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Subscribes; `false` if the catalog actor did not answer in time.
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
        matches!(answer, Ok(ractor::rpc::CallResult::Success(())))
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
    all: HashMap<SubscriberId, Arc<Outbox>>,
    alerts: HashMap<SubscriberId, Arc<Outbox>>,
    view: Arc<RwLock<Arc<CatalogView>>>,
}

impl CatalogState {
    fn publish(&self) {
        let view = Arc::new(CatalogView {
            all: self.all.values().cloned().collect(),
            alerts: self.alerts.values().cloned().collect(),
        });
        *self.view.write().unwrap_or_else(|e| e.into_inner()) = view;
    }
}

impl Actor for CatalogActor {
    type Msg = CatalogMsg;
    type State = CatalogState;
    type Arguments = Arc<RwLock<Arc<CatalogView>>>;

    async fn pre_start(
        &self,
        _myself: ActorRef<CatalogMsg>,
        view: Self::Arguments,
    ) -> Result<CatalogState, ActorProcessingErr> {
        Ok(CatalogState {
            all: HashMap::new(),
            alerts: HashMap::new(),
            view,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<CatalogMsg>,
        message: CatalogMsg,
        state: &mut CatalogState,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CatalogMsg::Subscribe {
                id,
                outbox,
                all,
                alerts,
                reply,
            } => {
                if all {
                    state.all.insert(id, outbox.clone());
                }
                if alerts {
                    state.alerts.insert(id, outbox);
                }
                state.publish();
                let _ = reply.send(());
            }
            CatalogMsg::Unsubscribe { id, all, alerts } => {
                let mut changed = false;
                if all {
                    changed |= state.all.remove(&id).is_some();
                }
                if alerts {
                    changed |= state.alerts.remove(&id).is_some();
                }
                if changed {
                    state.publish();
                }
            }
        }
        Ok(())
    }
}
