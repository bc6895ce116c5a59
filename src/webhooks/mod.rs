//! Signed webhooks (issue 19; API.md "v1 additions", Webhooks): alert
//! notifications and, opt-in, SKU changes, POSTed to admins' endpoints.
//!
//! - The outbox rows are written by the store in the transaction that
//!   raised, acknowledged or resolved the alert (`store/sql/webhooks.rs`);
//!   `sku.changed` rows are made from the events table by the worker.
//! - [`spawn`] runs this instance's worker: woken by the bus when a change
//!   carries alerts (and by an acknowledgement on this instance), with a
//!   poll as the net, it claims due deliveries (each attempt is made by one
//!   worker of one instance), sends up to `concurrency` at once, and
//!   records each attempt with the next one per the retry schedule.
//! - [`address`]: where a webhook may go; [`secret`]: secrets sealed at
//!   rest and the Standard Webhooks signature; [`send`]: one attempt.

pub mod address;
pub mod secret;
pub mod send;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{Micros, TEST_TYPE};
use skuwatch_actors::store::{ClaimRules, Claimed, SkuStore, StoreError};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;

/// The webhook settings (`SKUWATCH_WEBHOOK_*`, `SKUWATCH_PUBLIC_URL`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Allow `http` and non-public addresses.
    pub allow_private: bool,
    /// The waits before the 2nd, 3rd, ... attempt; one more attempt than
    /// waits in all.
    pub retry_schedule: Vec<Duration>,
    /// An endpoint failing for this long is disabled (`failing`).
    pub disable_after: Duration,
    /// One attempt's limit (connect, send, response).
    pub timeout: Duration,
    /// Messages an endpoint is sent per minute before the rest are folded
    /// into digests; `None`: no cap.
    pub rate_cap: Option<i64>,
    /// The worker's poll, the net under the bus's wake-ups.
    pub poll: Duration,
    /// Attempts in flight per instance.
    pub concurrency: usize,
    /// Base of the links in Slack messages (`SKUWATCH_PUBLIC_URL`).
    pub public_url: Option<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self {
            allow_private: false,
            retry_schedule: DEFAULT_RETRY_SCHEDULE
                .split(',')
                .map(|w| humantime::parse_duration(w).expect("the default schedule parses"))
                .collect(),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            timeout: Duration::from_secs(10),
            rate_cap: Some(60),
            poll: Duration::from_secs(1),
            concurrency: 16,
            public_url: None,
        }
    }
}

/// About 5 s, 30 s, 2 min, 10 min, 1 h, 6 h and 24 h (issue 19): eight
/// attempts over about 31 hours.
pub const DEFAULT_RETRY_SCHEDULE: &str = "5s,30s,2m,10m,1h,6h,24h";

/// Most messages one digest carries.
const DIGEST_MAX: i64 = 1000;
/// Events one `sku.changed` round reads per endpoint.
const SKU_CHANGES_ROUND: i64 = 500;

impl WebhookSettings {
    /// From the server settings.
    pub fn from_settings(settings: &crate::Settings) -> Self {
        Self {
            allow_private: settings.webhook_allow_private,
            retry_schedule: settings.webhook_retry_schedule.clone(),
            disable_after: Duration::from_secs(settings.webhook_disable_after_secs),
            timeout: Duration::from_millis(settings.webhook_timeout_ms.max(1)),
            rate_cap: (settings.webhook_rate_cap > 0).then_some(settings.webhook_rate_cap as i64),
            poll: Duration::from_millis(settings.webhook_poll_ms.max(10)),
            concurrency: settings.webhook_concurrency.max(1) as usize,
            public_url: settings.public_url.clone(),
        }
    }

    /// A claim keeps other workers off a delivery this long: well past an
    /// attempt's timeout, so only a dead worker's claim lapses.
    fn lease(&self) -> Duration {
        self.timeout * 2 + Duration::from_secs(5)
    }

    fn rules(&self, limit: i64) -> ClaimRules {
        ClaimRules {
            now: Micros::now(),
            lease_us: self.lease().as_micros() as i64,
            limit,
            rate_cap: self.rate_cap,
            digest_max: DIGEST_MAX,
        }
    }
}

/// The webhook service of an instance: what the HTTP handlers and the
/// worker share.
#[derive(Clone)]
pub struct Webhooks {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn SkuStore>,
    settings: WebhookSettings,
    sealer: secret::Sealer,
    client: reqwest::Client,
    wake: Notify,
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn SkuStore>,
        settings: WebhookSettings,
        sealer: secret::Sealer,
    ) -> Self {
        let client = send::client(&settings);
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                sealer,
                client,
                wake: Notify::new(),
            }),
        }
    }

    pub fn settings(&self) -> &WebhookSettings {
        &self.inner.settings
    }

    pub fn sealer(&self) -> &secret::Sealer {
        &self.inner.sealer
    }

    /// Wakes this instance's worker (an acknowledgement wrote messages).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// `POST /webhooks/{id}/test`: writes a `webhook.test` message and
    /// makes its one attempt now; `None` when the endpoint is unknown.
    pub async fn send_test(
        &self,
        endpoint: &str,
    ) -> Result<Option<skuwatch_actors::domain::Delivery>, StoreError> {
        let inner = &self.inner;
        let body = json!({
            "type": TEST_TYPE,
            "timestamp": Micros::now(),
            "data": {"endpoint_id": endpoint,
                     "message": "A test message from skuwatch: this endpoint is reachable."},
        });
        let rules = inner.settings.rules(1);
        let Some(claimed) = inner
            .store
            .create_test_delivery(endpoint, &body.to_string(), &rules)
            .await?
        else {
            return Ok(None);
        };
        // A task of its own: a client that goes away does not cut the
        // attempt short (it would be left claimed, and sent again once
        // the claim lapsed).
        let sender = self.clone();
        let id = claimed.message_id.clone();
        let _ = tokio::spawn(async move { sender.deliver(&claimed).await }).await;
        inner.store.load_delivery(&id).await
    }

    /// One attempt of a claimed delivery, recorded.
    async fn deliver(&self, claimed: &Claimed) {
        let inner = &self.inner;
        if claimed.attempt == 1 {
            let waited = Micros::now().0.saturating_sub(claimed.created_at.0).max(0);
            metrics::histogram!(m::WEBHOOK_FIRST_ATTEMPT_DELAY).record(waited as f64 / 1e6);
        }
        let outcome = send::attempt(&inner.client, &inner.sealer, &inner.settings, claimed).await;
        let result = send::result(claimed, &outcome, &inner.settings, Micros::now());
        let label = match (
            &outcome.error,
            outcome.refused,
            outcome.gone,
            result.retry_at,
        ) {
            (None, ..) => "delivered",
            (Some(_), true, ..) => "refused",
            (Some(_), _, true, _) => "gone",
            (Some(_), _, _, Some(_)) => "retry",
            (Some(_), _, _, None) => "failed",
        };
        metrics::counter!(m::WEBHOOK_ATTEMPTS, "result" => label).increment(1);
        if let Some(error) = &outcome.error {
            // The endpoint's id, never its URL (it may carry a token). A
            // retry is routine (a receiver down: one line per message and
            // round), an end or a refusal is not.
            let (endpoint, id, attempt) =
                (&claimed.endpoint_id, &claimed.message_id, claimed.attempt);
            if label == "retry" {
                tracing::debug!(%endpoint, %id, attempt, %error, "webhook attempt failed; retried later");
            } else {
                tracing::warn!(%endpoint, %id, attempt, %error, result = label, "webhook attempt failed");
            }
        }
        match inner.store.record_attempt(claimed, &result).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(id = %claimed.message_id,
                "a webhook attempt's claim had lapsed; another worker took the delivery"),
            Err(error) => tracing::warn!(%error, id = %claimed.message_id,
                "a webhook attempt was not recorded; it is attempted again when its claim lapses"),
        }
    }
}

/// Starts the worker: delivery rounds until `shutdown`, and the gauges.
pub fn spawn(
    webhooks: Webhooks,
    bus: &Arc<dyn EventBus>,
    tasks: &tokio_util::task::TaskTracker,
    shutdown: CancellationToken,
) {
    let wants_changes = Arc::new(AtomicBool::new(false));
    watch_bus(
        &webhooks,
        bus.subscribe(),
        wants_changes.clone(),
        shutdown.clone(),
    );
    tasks.spawn(async move {
        let inner = &webhooks.inner;
        let permits = Arc::new(Semaphore::new(inner.settings.concurrency));
        let mut poll = tokio::time::interval(inner.settings.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_stats = tokio::time::Instant::now() - inner.settings.poll;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = poll.tick() => {}
                _ = inner.wake.notified() => {}
            }
            match inner.store.feed_sku_changes(SKU_CHANGES_ROUND).await {
                Ok(written) => wants_changes.store(written > 0, Ordering::Relaxed),
                Err(error) => tracing::warn!(%error, "sku.changed deliveries not written"),
            }
            round(&webhooks, &permits, &shutdown).await;
            // The gauges at most once a poll: an attempt's end wakes the
            // worker too, and a burst would count the queue per attempt.
            if last_stats.elapsed() < inner.settings.poll {
                continue;
            }
            last_stats = tokio::time::Instant::now();
            match inner.store.outbox_stats().await {
                Ok(stats) => {
                    metrics::gauge!(m::WEBHOOK_QUEUE).set(stats.pending as f64);
                    let age = stats
                        .oldest
                        .map_or(0.0, |t| (Micros::now().0 - t.0).max(0) as f64 / 1e6);
                    metrics::gauge!(m::WEBHOOK_OLDEST).set(age);
                }
                Err(error) => tracing::debug!(%error, "webhook gauges not refreshed"),
            }
        }
        // Attempts in flight finish (each within the timeout) and are
        // recorded; what is left is retried after the restart.
        let _ = permits
            .acquire_many(inner.settings.concurrency as u32)
            .await;
    });
}

/// Claims and starts attempts while there are due deliveries and free
/// permits; an attempt that ends wakes the worker for more.
async fn round(webhooks: &Webhooks, permits: &Arc<Semaphore>, shutdown: &CancellationToken) {
    let inner = &webhooks.inner;
    while !shutdown.is_cancelled() {
        let free = permits.available_permits();
        if free == 0 {
            return;
        }
        let claimed = match inner
            .store
            .claim_deliveries(&inner.settings.rules(free as i64))
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::warn!(%error, "webhook deliveries not claimed");
                return;
            }
        };
        let full = claimed.len() >= free;
        for delivery in claimed {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                // Cannot happen (claimed at most `free`); the claim lapses
                // and the delivery is attempted later.
                break;
            };
            let webhooks = webhooks.clone();
            tokio::spawn(async move {
                webhooks.deliver(&delivery).await;
                drop(permit);
                webhooks.wake();
            });
        }
        if !full {
            return;
        }
    }
}

/// Wakes the worker when a committed change carries alerts (or any change,
/// while the last round found `sku.changed` messages to write): a message
/// is then due at once, and waits for no poll. A `sku.changed` endpoint
/// that has been quiet is found by the next poll.
fn watch_bus(
    webhooks: &Webhooks,
    mut changes: tokio::sync::broadcast::Receiver<Arc<skuwatch_actors::domain::Committed>>,
    wants_changes: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let webhooks = webhooks.clone();
    tokio::spawn(async move {
        loop {
            let change = tokio::select! {
                _ = shutdown.cancelled() => return,
                change = changes.recv() => change,
            };
            match change {
                Ok(change) => {
                    if !change.alerts.is_empty() || wants_changes.load(Ordering::Relaxed) {
                        webhooks.wake();
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => webhooks.wake(),
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}

/// The key that seals secrets: from `SKUWATCH_WEBHOOK_SECRET_KEY`, else
/// the JWT secret; with neither (development only, as the JWT secret is
/// required in production), a random key for this process, so secrets
/// made now cannot be read after a restart (their endpoints need a
/// rotation), which the log says.
pub fn sealer(settings: &crate::Settings) -> Result<secret::Sealer, String> {
    match (&settings.webhook_secret_key, &settings.jwt_secret) {
        (Some(key), _) if key.0.len() < 32 => {
            Err("SKUWATCH_WEBHOOK_SECRET_KEY must be at least 32 bytes".into())
        }
        (Some(key), _) => Ok(secret::Sealer::from_material(key.0.as_bytes())),
        (None, Some(jwt)) => Ok(secret::Sealer::from_material(jwt.0.as_bytes())),
        (None, None) => {
            tracing::warn!(
                "no SKUWATCH_WEBHOOK_SECRET_KEY or SKUWATCH_JWT_SECRET: webhook secrets made \
                 by this process cannot be read after a restart"
            );
            let mut key = [0u8; 32];
            getrandom::fill(&mut key).map_err(|e| e.to_string())?;
            Ok(secret::Sealer::from_material(&key))
        }
    }
}
