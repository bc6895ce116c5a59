//! The Redis bus: scale-out across instances, plus the shared SKU state
//! cache.
//!
//! Keys and channels, all under `SKUWATCH_REDIS_PREFIX` (`{p}` below):
//! - `{p}:events`: pub/sub channel; one message per committed change, JSON
//!   `{"origin": instance, "change": {"event", "sku", "alerts"}}`.
//! - `{p}:sku:{code}`: hash with the newest committed state of a SKU:
//!   `version`, `event_id`, `stock` (units), `price_minor` (minor units),
//!   `price` (decimal string), `currency` (ISO 4217), `state` (the API.md SKU
//!   object as JSON). Never overwritten by an older version: writes compare
//!   `version` inside one Lua script.
//! - `{p}:heartbeat:{instance}`: channel each listener pings itself on.
//!
//! Delivery: a change goes to this instance's feed at once (in process), and
//! to Redis by a publisher task that updates the SKU hash and publishes in
//! the same script, so a reader that saw an older hash is subscribed before
//! the newer change is published. What cannot reach Redis (it is down) is
//! kept as the newest state per SKU and written when Redis is back; other
//! instances get such changes from the database, through their feed's gap
//! filling, which never depends on Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisResult};
use serde::{Deserialize, Serialize};
use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{Committed, Micros, Sku, SkuCode};
use tokio::sync::{broadcast, mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Changes waiting for the publisher; past this, a change skips pub/sub
/// (other instances read it from the database) but still reaches the cache.
const OUTGOING_CAPACITY: usize = 65_536;
/// Changes per Lua script call.
const BATCH: usize = 256;
/// Every Redis command's deadline: a silent network cut must not stall
/// writers or activations.
const COMMAND_TIMEOUT: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Compare-on-version write of each SKU hash, then (unless the channel is
/// empty) the publication of each change. One call, so atomic in Redis.
const PUBLISH_SCRIPT: &str = r#"
-- KEYS[i]: the hash of change i. ARGV[1]: the channel, or '' to only cache.
-- Per change, 8 values: version, event_id, stock, price_minor, price,
-- currency, state, message.
for i, key in ipairs(KEYS) do
  local a = 1 + (i - 1) * 8
  local current = tonumber(redis.call('HGET', key, 'version') or '-1')
  if tonumber(ARGV[a + 1]) > current then
    redis.call('HSET', key, 'version', ARGV[a + 1], 'event_id', ARGV[a + 2],
      'stock', ARGV[a + 3], 'price_minor', ARGV[a + 4], 'price', ARGV[a + 5],
      'currency', ARGV[a + 6], 'state', ARGV[a + 7])
  end
  if ARGV[1] ~= '' then
    redis.call('PUBLISH', ARGV[1], ARGV[a + 8])
  end
end
return #KEYS
"#;

/// Where and how to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    pub url: String,
    /// `SKUWATCH_REDIS_PREFIX`.
    pub prefix: String,
    /// Listener heartbeat period; three missed in a row mean the connection is dead.
    pub heartbeat: Duration,
    /// Events the in-process side buffers per receiver before it lags.
    pub capacity: usize,
}

#[derive(Serialize)]
struct WireOut<'a> {
    origin: &'a str,
    change: &'a Committed,
}

#[derive(Deserialize)]
struct WireIn {
    origin: String,
    change: Committed,
}

/// The Redis bus; see the module documentation.
pub struct RedisBus {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// The command connection (publisher, cache reads, heartbeats); `None`
    /// after an error, re-opened on next use.
    commands: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    local: broadcast::Sender<Arc<Committed>>,
    outgoing: mpsc::Sender<Arc<Committed>>,
    /// Newest state per SKU that is committed but not yet in the Redis
    /// hash. The cache is not read for these SKUs.
    dirty: Mutex<HashMap<SkuCode, Arc<Committed>>>,
    flush: Notify,
    connected: watch::Sender<bool>,
    script: redis::Script,
    instance: String,
    events_channel: String,
    heartbeat_channel: String,
    prefix: String,
    heartbeat: Duration,
}

impl RedisBus {
    /// Starts the publisher and the listener. Redis need not be up: the
    /// listener keeps trying, and until it is subscribed the bus reports
    /// not connected (`/readyz` 503) while writes go on.
    pub fn start(config: RedisConfig, shutdown: CancellationToken) -> RedisResult<Arc<Self>> {
        let client = Client::open(config.url.as_str())?;
        let instance = uuid::Uuid::new_v4().simple().to_string();
        let (outgoing, receiver) = mpsc::channel(OUTGOING_CAPACITY);
        let shared = Arc::new(Shared {
            client,
            commands: tokio::sync::Mutex::new(None),
            local: broadcast::channel(config.capacity).0,
            outgoing,
            dirty: Mutex::new(HashMap::new()),
            flush: Notify::new(),
            connected: watch::Sender::new(false),
            script: redis::Script::new(PUBLISH_SCRIPT),
            events_channel: format!("{}:events", config.prefix),
            heartbeat_channel: format!("{}:heartbeat:{instance}", config.prefix),
            instance,
            prefix: config.prefix,
            heartbeat: config.heartbeat.max(Duration::from_millis(10)),
        });
        metrics::gauge!(crate::metrics::BUS_LISTENER_UP).set(0.0);
        tokio::spawn(publisher(shared.clone(), receiver, shutdown.clone()));
        tokio::spawn(listener(shared.clone(), shutdown));
        Ok(Arc::new(Self { shared }))
    }

    /// The hash key of a SKU's cached state.
    pub fn sku_key(prefix: &str, sku: &SkuCode) -> String {
        format!("{prefix}:sku:{sku}")
    }
}

impl EventBus for RedisBus {
    fn publish(&self, changes: &[Arc<Committed>]) {
        for change in changes {
            let _ = self.shared.local.send(change.clone());
            if self.shared.outgoing.try_send(change.clone()).is_err() {
                // Backpressure: the publisher is far behind (Redis slow or
                // down). Other instances read this change from the
                // database; the cache gets it with the next flush.
                self.shared.mark_dirty(change);
            }
        }
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.shared.local.subscribe()
    }

    fn connected(&self) -> watch::Receiver<bool> {
        self.shared.connected.subscribe()
    }

    fn missed(&self, change: &Arc<Committed>) {
        // The bus lost it, so the hash may lack it too: no cache read for
        // this SKU until the flush has written it.
        self.shared.mark_dirty(change);
    }
}

impl RedisBus {
    /// The state the SKU's hash holds, or `None` when this instance cannot
    /// vouch for it (the listener is down, or the SKU has a change the hash
    /// may lack). For other services and tests: the server itself never
    /// serves reads from the hash, which can be older than the database
    /// (a restored dump); see `SkuActorState::loaded`.
    pub async fn cached_state(&self, sku: &SkuCode) -> Option<Sku> {
        let shared = &self.shared;
        if !*shared.connected.borrow() || shared.dirty().contains_key(sku) {
            return None;
        }
        let mut connection = shared.connection().await.ok()?;
        let state: Option<String> = redis::cmd("HGET")
            .arg(Self::sku_key(&shared.prefix, sku))
            .arg("state")
            .query_async(&mut connection)
            .await
            .map_err(|e| shared.connection_failed(&e))
            .ok()?;
        serde_json::from_str(&state?).ok()
    }
}

impl Shared {
    fn dirty(&self) -> std::sync::MutexGuard<'_, HashMap<SkuCode, Arc<Committed>>> {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the newest change per SKU until its hash is written.
    fn mark_dirty(&self, change: &Arc<Committed>) {
        let mut dirty = self.dirty();
        let kept = dirty
            .entry(change.sku.sku.clone())
            .or_insert_with(|| change.clone());
        if kept.sku.version < change.sku.version {
            *kept = change.clone();
        }
        drop(dirty);
        self.flush.notify_one();
    }

    async fn connection(&self) -> RedisResult<MultiplexedConnection> {
        let mut slot = self.commands.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(CONNECT_TIMEOUT)
            .set_response_timeout(COMMAND_TIMEOUT);
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the command connection after an error, so the next use opens
    /// a new one (a timed-out connection may be silently dead).
    fn connection_failed(&self, error: &redis::RedisError) {
        tracing::debug!(%error, "Redis command failed");
        if let Ok(mut slot) = self.commands.try_lock() {
            *slot = None;
        }
    }

    /// Runs the script for `changes`: updates their hashes and, with
    /// `publish`, publishes them.
    async fn write(&self, changes: &[Arc<Committed>], publish: bool) -> RedisResult<()> {
        let mut invocation = self.script.prepare_invoke();
        invocation.arg(if publish {
            self.events_channel.as_str()
        } else {
            ""
        });
        for change in changes {
            let sku = &change.sku;
            let message = if publish {
                serde_json::to_string(&WireOut {
                    origin: &self.instance,
                    change,
                })
                .expect("a committed change serialises")
            } else {
                String::new()
            };
            invocation
                .key(RedisBus::sku_key(&self.prefix, &sku.sku))
                .arg(sku.version)
                .arg(change.event.event_id)
                .arg(sku.stock)
                .arg(sku.price_minor)
                .arg(sku.price().to_decimal_string())
                .arg(sku.currency.to_string())
                .arg(sku.to_json_text())
                .arg(message);
        }
        let mut connection = self.connection().await?;
        let result: RedisResult<i64> = invocation.invoke_async(&mut connection).await;
        result
            .map(|_| ())
            .inspect_err(|e| self.connection_failed(e))
    }

    /// Writes the dirty states to their hashes; keeps those that changed
    /// meanwhile or could not be written.
    async fn flush_dirty(&self) -> RedisResult<()> {
        loop {
            let batch: Vec<Arc<Committed>> = self.dirty().values().take(BATCH).cloned().collect();
            if batch.is_empty() {
                return Ok(());
            }
            self.write(&batch, false).await?;
            let mut dirty = self.dirty();
            for written in &batch {
                if dirty
                    .get(&written.sku.sku)
                    .is_some_and(|kept| kept.sku.version == written.sku.version)
                {
                    dirty.remove(&written.sku.sku);
                }
            }
        }
    }
}

/// Takes committed changes in batches, caches and publishes each batch with
/// one script call; on failure keeps their states for the next flush.
async fn publisher(
    shared: Arc<Shared>,
    mut receiver: mpsc::Receiver<Arc<Committed>>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut retry = tokio::time::interval(BACKOFF_FIRST * 5);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // Best effort: what is committed and unpublished reaches
                // other instances through the database anyway.
                let _ = tokio::time::timeout(COMMAND_TIMEOUT, shared.flush_dirty()).await;
                return;
            }
            count = receiver.recv_many(&mut batch, BATCH) => {
                if count == 0 {
                    return;
                }
                publish_batch(&shared, &batch).await;
                batch.clear();
            }
            _ = shared.flush.notified() => {
                let _ = shared.flush_dirty().await;
            }
            _ = retry.tick() => {
                let has_dirty = !shared.dirty().is_empty();
                if has_dirty && *shared.connected.borrow() {
                    let _ = shared.flush_dirty().await;
                }
            }
        }
    }
}

async fn publish_batch(shared: &Shared, batch: &[Arc<Committed>]) {
    match shared.write(batch, true).await {
        Ok(()) => {
            metrics::counter!(crate::metrics::BUS_PUBLISHED).increment(batch.len() as u64);
        }
        Err(error) => {
            tracing::debug!(%error, changes = batch.len(), "could not publish to Redis; other instances will read the database");
            metrics::counter!(crate::metrics::BUS_PUBLISH_FAILURES).increment(batch.len() as u64);
            for change in batch {
                shared.mark_dirty(change);
            }
        }
    }
}

/// Subscribes, forwards other instances' changes to the local feed, and
/// checks the subscription with its own heartbeat; on any failure, goes
/// through bounded exponential backoff and subscribes again.
async fn listener(shared: Arc<Shared>, shutdown: CancellationToken) {
    let mut backoff = BACKOFF_FIRST;
    let mut was_up = false;
    let mut down_since = Instant::now();
    loop {
        let session = tokio::select! {
            _ = shutdown.cancelled() => return,
            session = listen(&shared, &shutdown, || {
                backoff = BACKOFF_FIRST;
                if !was_up {
                    tracing::info!(down_ms = down_since.elapsed().as_millis() as u64, "Redis listener subscribed");
                }
                was_up = true;
            }) => session,
        };
        if shutdown.is_cancelled() {
            return;
        }
        // Told only on the change from up to down: a failed reconnect
        // attempt is no news (one `bus_down` notice per outage).
        let went_down = shared
            .connected
            .send_if_modified(|up| std::mem::replace(up, false));
        if went_down {
            down_since = Instant::now();
            metrics::gauge!(crate::metrics::BUS_LISTENER_UP).set(0.0);
            metrics::counter!(crate::metrics::BUS_RECONNECTS).increment(1);
            let reason = session.err().unwrap_or_else(|| "connection closed".into());
            tracing::warn!(%reason, "Redis listener lost its subscription; changes from other instances now come from the database");
        } else if backoff == BACKOFF_FIRST {
            let reason = session.err().unwrap_or_default();
            tracing::warn!(%reason, "Redis unreachable; retrying with backoff");
        }
        was_up = false;
        let jitter = Duration::from_millis(u64::from(rand_u8()) % 50);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff + jitter) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn rand_u8() -> u8 {
    let mut byte = [0u8];
    let _ = getrandom::fill(&mut byte);
    byte[0]
}

/// One subscription, until it fails: `Ok(())` when the stream ended.
async fn listen(
    shared: &Shared,
    shutdown: &CancellationToken,
    mut on_subscribed: impl FnMut(),
) -> Result<(), String> {
    let connect = async {
        let mut pubsub = shared.client.get_async_pubsub().await?;
        pubsub.subscribe(&shared.events_channel).await?;
        pubsub.subscribe(&shared.heartbeat_channel).await?;
        RedisResult::Ok(pubsub)
    };
    let pubsub = tokio::time::timeout(CONNECT_TIMEOUT * 2, connect)
        .await
        .map_err(|_| "subscribing timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let mut messages = pubsub.into_on_message();
    // Changes published while this instance was not subscribed reach the
    // feed from the database: marking connected wakes its catch-up.
    shared
        .connected
        .send_if_modified(|up| !std::mem::replace(up, true));
    metrics::gauge!(crate::metrics::BUS_LISTENER_UP).set(1.0);
    on_subscribed();
    shared.flush.notify_one();

    let mut beat = tokio::time::interval(shared.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beat = Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            message = messages.next() => {
                let Some(message) = message else { return Ok(()) };
                if message.get_channel_name() == shared.heartbeat_channel {
                    last_beat = Instant::now();
                    continue;
                }
                receive(shared, message.get_payload_bytes());
            }
            _ = beat.tick() => {
                if last_beat.elapsed() > shared.heartbeat * 3 {
                    return Err("no heartbeat for three periods".into());
                }
                send_heartbeat(shared).await;
            }
        }
    }
}

/// Publishes a heartbeat on this instance's own channel. Failures only
/// show as heartbeats that do not come back.
async fn send_heartbeat(shared: &Shared) {
    let Ok(mut connection) = shared.connection().await else {
        return;
    };
    let sent: RedisResult<i64> = redis::cmd("PUBLISH")
        .arg(&shared.heartbeat_channel)
        .arg(Micros::now().0)
        .query_async(&mut connection)
        .await;
    if let Err(error) = sent {
        shared.connection_failed(&error);
    }
}

fn receive(shared: &Shared, payload: &[u8]) {
    let wire: WireIn = match serde_json::from_slice(payload) {
        Ok(wire) => wire,
        Err(error) => {
            tracing::warn!(%error, "ignoring an unreadable bus message");
            return;
        }
    };
    if wire.origin == shared.instance {
        return; // already delivered in process
    }
    crate::metrics::bus_received(&wire.change);
    let _ = shared.local.send(Arc::new(wire.change));
}
