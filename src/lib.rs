//! # skuwatch
//!
//! Real-time inventory and price monitoring: every change to a SKU's stock
//! or price is committed to the database, then pushed to every dashboard.
//!
//! # Layout
//! - [`config`]: settings (defaults, environment, flags).
//! - [`store`]: the `SkuStore` implementation, PostgreSQL or SQLite.
//! - [`bus`]: the event bus between instances: in process, or Redis pub/sub
//!   with the shared SKU state cache.
//! - [`feed`]: the bus made into a gap-free, ordered stream of changes.
//! - [`catalog`]: the catalog actor, owner of the `all` and `alerts`
//!   subscriptions.
//! - [`session`]: one supervised actor per WebSocket session.
//! - [`outbox`]: a session's bounded queue with conflation.
//! - [`http`]: the REST API; [`ws`]: the WebSocket upgrade and messages.
//! - [`import`]: CSV catalog import; [`replay`]: the real-data replay client.
//! - [`webhooks`]: signed webhooks: the outbox's workers, signing, the
//!   address rules.
//! - [`metrics`]: every Prometheus metric name, its help text and buckets.
//!
//! The domain, the SKU actors, their supervisor and registry live in the
//! `skuwatch-actors` crate.
//!
//! Write path: handler -> SKU actor -> one transaction (row + event with the
//! next global `event_id`) -> bus. Push path: bus -> [`feed`] (order, gaps
//! filled from the database) -> SKU actor cache, and through the subscriber
//! sets of the SKU actors and the [`catalog`] actor -> session [`outbox`] ->
//! [`session`] actor -> WebSocket.

pub mod auth;
pub mod bus;
pub mod catalog;
pub mod config;
pub mod cursor;
pub mod evaluate;
pub mod external;
pub mod feed;
pub mod forecast;
pub mod holds;
pub mod http;
pub mod import;
pub mod memory;
pub mod metrics;
pub mod outbox;
pub mod replay;
pub mod session;
pub mod store;
pub mod webhooks;
pub mod ws;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use skuwatch_actors::bus::EventBus;
use skuwatch_actors::registry::{ActorError, Registry, RegistryConfig};
use skuwatch_actors::sku_actor::Pinning;
use skuwatch_actors::store::{SkuStore, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::Settings;
use http::{AppInner, AppState};

/// Events the in-process bus buffers per receiver before it lags.
const BUS_CAPACITY: usize = 65_536;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("actors: {0}")]
    Actors(#[from] ActorError),
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
}

/// Shortest accepted JWT secret, in bytes (HS256 wants a 256-bit key).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// The signing keys from the settings; see `Settings::jwt_secret`.
fn jwt_keys(settings: &Settings) -> Result<auth::JwtKeys, StartError> {
    let secret = match &settings.jwt_secret {
        Some(secret) if secret.0.len() >= MIN_JWT_SECRET_BYTES => secret.0.as_bytes().to_vec(),
        Some(_) => {
            return Err(StartError::Config(format!(
                "SKUWATCH_JWT_SECRET must be at least {MIN_JWT_SECRET_BYTES} bytes"
            )))
        }
        None if settings.env == "production" => {
            return Err(StartError::Config(
                "SKUWATCH_ENV=production needs SKUWATCH_JWT_SECRET".into(),
            ))
        }
        None => {
            tracing::warn!(
                "no SKUWATCH_JWT_SECRET: using a random one for this process; \
                 tokens will not survive a restart"
            );
            let mut secret = vec![0u8; 32];
            getrandom::fill(&mut secret).map_err(|e| StartError::Config(e.to_string()))?;
            secret
        }
    };
    auth::JwtKeys::hs256(
        &secret,
        &settings.jwt_issuer,
        &settings.jwt_audience,
        settings.token_ttl_secs.max(1),
    )
    .map_err(|e| StartError::Config(e.to_string()))
}

/// With no users yet and `SKUWATCH_ADMIN_PASSWORD` set, creates `admin`.
async fn bootstrap_admin(store: &dyn SkuStore, settings: &Settings) -> Result<(), StartError> {
    let Some(password) = &settings.admin_password else {
        return Ok(());
    };
    if store.count_users().await? > 0 {
        return Ok(());
    }
    if !auth::valid_password(&password.0) {
        return Err(StartError::Config(
            "SKUWATCH_ADMIN_PASSWORD must be 8-1024 characters".into(),
        ));
    }
    let user = http::new_user("admin".into(), password.0.clone(), auth::Role::Admin)
        .await
        .map_err(|_| StartError::Config("cannot hash the admin password".into()))?;
    store.create_user(&user).await?;
    tracing::info!("created the admin user from SKUWATCH_ADMIN_PASSWORD");
    Ok(())
}

/// Creates the `demo` admin, or resets its password, and returns the new
/// random password (`serve --demo` prints it once).
pub async fn demo_admin(app: &AppState) -> Result<String, StartError> {
    let password = uuid::Uuid::new_v4().simple().to_string();
    let user = http::new_user("demo".into(), password.clone(), auth::Role::Admin)
        .await
        .map_err(|_| StartError::Config("cannot hash the demo password".into()))?;
    if !app.store.create_user(&user).await? {
        app.store.set_password("demo", &user.password_hash).await?;
    }
    Ok(password)
}

/// The bus of the settings (Redis with `REDIS_URL`, else in process).
fn event_bus(
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Result<Arc<dyn EventBus>, StartError> {
    let Some(url) = &settings.redis_url else {
        return Ok(Arc::new(bus::InProcessBus::new(BUS_CAPACITY)));
    };
    let redis = bus::RedisBus::start(
        bus::RedisConfig {
            url: url.0.clone(),
            prefix: settings.redis_prefix.clone(),
            heartbeat: Duration::from_millis(settings.redis_heartbeat_ms),
            capacity: BUS_CAPACITY,
        },
        shutdown.clone(),
    )
    .map_err(|e| StartError::Config(format!("REDIS_URL: {e}")))?;
    Ok(redis)
}

/// A running server.
pub struct App {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    state: AppState,
    server: JoinHandle<std::io::Result<()>>,
    /// The `SKUWATCH_METRICS_BIND` listener, if any.
    metrics_server: Option<JoinHandle<std::io::Result<()>>>,
    feed: JoinHandle<()>,
    refresher: JoinHandle<()>,
}

/// Refreshes the gauges that are read rather than counted: stock health
/// and open alerts from the store's summary, and the pool occupancy. Every
/// instance reports the same stock numbers (dashboards take `max`).
///
/// Also the sizes of the per-key structures clients can grow (login
/// throttle, subscribed codes); the purge of expired idempotency keys is
/// the hold sweeper's ([`holds`]). `/metrics` only renders what this collected, so
/// it never waits on the database.
fn spawn_refresher(
    state: AppState,
    every: Duration,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let store = state.store.clone();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut load = memory::LoadWatch::new();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            metrics::set_pool_stats(&store.pool_stats());
            ::metrics::gauge!(metrics::LOGIN_THROTTLE_KEYS).set(state.throttle.keys() as f64);
            ::metrics::gauge!(metrics::WS_SUBSCRIBED_SKUS).set(state.subscribers.skus() as f64);
            metrics::set_resident_memory();
            let active = state.registry.active() + state.ws_sessions.total();
            if load.observe(active, std::time::Instant::now()) {
                memory::release_soon();
                ::metrics::counter!(metrics::MEMORY_RELEASES).increment(1);
            }
            match store.summary().await {
                Ok(summary) => metrics::set_stock_health(&summary),
                Err(error) => tracing::warn!(%error, "stock-health gauges not refreshed"),
            }
        }
    })
}

/// Keeps the pre-aggregated history blocks up with the events table
/// ([`SkuStore::roll_up_history`]): a round every
/// [`HISTORY_ROLLUP_EVERY`], and rounds [`HISTORY_CATCH_UP_PAUSE`] apart
/// while it is behind (a restart on a long events table). A failed round is retried at the
/// next tick; a chart reads what no block covers event by event, so a late
/// roll-up makes charts slower, never wrong.
fn spawn_history_rollup(state: &AppState, shutdown: CancellationToken) {
    let store = state.store.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(HISTORY_ROLLUP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            loop {
                match store.roll_up_history().await {
                    Ok(round) => {
                        ::metrics::counter!(metrics::HISTORY_BLOCKS_BUILT).increment(round.blocks);
                        ::metrics::gauge!(metrics::HISTORY_ROLLUP_BEHIND).set(round.behind as f64);
                        // Another instance leading the catch-up: next tick.
                        if round.behind == 0 || round.looked == 0 || shutdown.is_cancelled() {
                            break;
                        }
                        // Catching up (a restart, or migration 0006 on a long
                        // events table) leaves room for the writes.
                        tokio::time::sleep(HISTORY_CATCH_UP_PAUSE).await;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "history roll-up failed; retried at the next tick");
                        break;
                    }
                }
            }
        }
    });
}

/// How often the history roll-up looks for new events.
const HISTORY_ROLLUP_EVERY: Duration = Duration::from_secs(1);

/// The pause between catch-up rounds (each looks at up to 50,000 events).
const HISTORY_CATCH_UP_PAUSE: Duration = Duration::from_millis(20);

/// Sets `seen` once the bus listener has connected for the first time, so
/// `/readyz` can tell a starting instance (`"starting"`) from one that lost
/// its connection (`"unreachable"`).
fn watch_first_connect(
    bus: &Arc<dyn EventBus>,
    seen: Arc<std::sync::atomic::AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut connected = bus.connected();
    tokio::spawn(async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            up = connected.wait_for(|up| *up) => {
                if up.is_ok() {
                    seen.store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
    });
}

/// Builds everything from `settings` and serves on an already bound
/// `listener` (port 0 in tests): when this returns, the server accepts.
pub async fn start(settings: Settings, listener: TcpListener) -> Result<App, StartError> {
    skuwatch_actors::domain::set_forecast_config(forecast::config(&settings)).map_err(|in_use| {
        StartError::Config(format!(
            "the forecast settings differ from those another server in this process uses ({in_use:?})"
        ))
    })?;
    let metrics_handle = metrics::install();
    // Bound before anything else starts, so a taken port fails the start.
    let metrics_listener = match settings.metrics_bind {
        Some(bind) => Some(TcpListener::bind(bind).await?),
        None => None,
    };
    let jwt = jwt_keys(&settings)?;
    let store = store::connect_with(
        &settings.database_url.0,
        store::PoolSettings {
            max_connections: settings.db_max_connections,
            acquire_timeout: Duration::from_millis(settings.db_acquire_timeout_ms.max(1)),
            lock_timeout: Duration::from_millis(settings.db_lock_timeout_ms.max(1)),
            write_queue: settings.write_queue.max(1),
            migrate_on_start: settings.migrate_on_start,
        },
    )
    .await?;
    let store = store::as_dyn(&store);
    bootstrap_admin(store.as_ref(), &settings).await?;
    let shutdown = CancellationToken::new();
    let bus = event_bus(&settings, &shutdown)?;
    let subscribers = Arc::new(outbox::SkuSubscribers::default());
    let registry = Registry::start(
        store.clone(),
        bus.clone(),
        RegistryConfig {
            idle: Duration::from_secs(settings.actor_idle_secs.max(1)),
            pinning: Pinning {
                pins: Some(subscribers.clone()),
                max: settings.actor_max_pinned,
                ..Pinning::default()
            },
            call_timeout: Duration::from_millis(settings.actor_queue_timeout_ms.max(1)),
            mailbox: settings.actor_mailbox.max(1),
            faults: settings.inject_faults.clone(),
            ..RegistryConfig::default()
        },
    )
    .await?;
    let catalog = catalog::Catalog::start()
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))?;
    let sessions = session::Sessions::start()
        .await
        .map_err(|e| ActorError::Unavailable(e.to_string()))?;
    let (db_newest, db_newest_seen) = tokio::sync::watch::channel(0);
    let feed = feed::Feed::start(
        store.clone(),
        bus.clone(),
        registry.clone(),
        subscribers.clone(),
        catalog.clone(),
        db_newest_seen,
        shutdown.clone(),
    )
    .await?;
    let bus_seen_up = Arc::new(std::sync::atomic::AtomicBool::new(false));
    watch_first_connect(&bus, bus_seen_up.clone(), shutdown.clone());
    let webhooks = webhooks::Webhooks::new(
        store.clone(),
        webhooks::WebhookSettings::from_settings(&settings),
        webhooks::sealer(&settings).map_err(StartError::Config)?,
    );
    let state = AppState::new(AppInner {
        bus_seen_up,
        store,
        jwt,
        throttle: auth::LoginThrottle::default(),
        client_addr: auth::ClientAddr::new(
            settings.trusted_proxies.clone(),
            settings.forwarded_header,
        ),
        registry,
        subscribers,
        catalog,
        sessions,
        bus,
        settings,
        ws_sessions: Default::default(),
        shutdown: shutdown.clone(),
        tasks: tokio_util::task::TaskTracker::new(),
        webhooks,
    });
    spawn_history_rollup(&state, shutdown.clone());
    webhooks::spawn(
        state.webhooks.clone(),
        &state.bus,
        &state.tasks,
        shutdown.clone(),
    );
    holds::spawn(&state, shutdown.clone());
    external::spawn(
        &state.settings.database_url.0,
        state.store.clone(),
        db_newest,
        &state.tasks,
        shutdown.clone(),
    );
    let refresher = spawn_refresher(
        state.clone(),
        Duration::from_secs(state.settings.metrics_refresh_secs.max(1)),
        shutdown.clone(),
    );
    let (router, metrics_addr, metrics_server) = match metrics_listener {
        None => (
            http::router(state.clone(), Some(metrics_handle)),
            None,
            None,
        ),
        Some(listener) => {
            let addr = listener.local_addr()?;
            let router = http::observe::metrics_router(metrics_handle);
            let stop = shutdown.clone();
            let server = tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            });
            tracing::info!(%addr, "metrics listening");
            (http::router(state.clone(), None), Some(addr), Some(server))
        }
    };
    let addr = listener.local_addr()?;
    let send_buffer = state.settings.tcp_send_buffer_bytes;
    let listener = axum::serve::ListenerExt::tap_io(listener, move |stream| {
        // Pushes are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = send_buffer {
            let _ = socket2::SockRef::from(&*stream).set_send_buffer_size(bytes);
        }
    });
    let server = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
    });
    tracing::info!(%addr, "skuwatch listening");
    Ok(App {
        addr,
        metrics_addr,
        state,
        server,
        metrics_server,
        feed,
        refresher,
    })
}

impl App {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where `/metrics` is served when `SKUWATCH_METRICS_BIND` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A token that, when cancelled, shuts the server down.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.state.shutdown.clone()
    }

    /// Stops accepting, closes sessions with 1001, waits for in-flight
    /// requests and for the sessions' close frames (together at most
    /// `deadline`), then stops the actors and closes the pools.
    ///
    /// Every write runs in one transaction that is committed before its
    /// answer is sent, so a write still running at the deadline is rolled
    /// back by the database when the process exits: nothing half-done
    /// stays, and nothing answered 2xx is lost.
    pub async fn shutdown(self, deadline: Duration) {
        self.state.shutdown.cancel();
        let stop_at = tokio::time::Instant::now() + deadline;
        let drained = async {
            let _ = self.server.await;
            self.state.tasks.close();
            self.state.tasks.wait().await;
        };
        if tokio::time::timeout_at(stop_at, drained).await.is_err() {
            tracing::warn!("in-flight requests did not finish before the shutdown deadline");
        }
        if let Some(server) = self.metrics_server {
            let _ = tokio::time::timeout_at(stop_at, server).await;
        }
        let _ = self.feed.await;
        let _ = self.refresher.await;
        self.state.sessions.stop();
        self.state.catalog.stop();
        self.state.registry.stop();
        // A write past the deadline may still hold a connection; closing
        // waits for it, so this too is bounded (see above for why that is
        // safe).
        if tokio::time::timeout_at(stop_at + Duration::from_secs(1), self.state.store.close())
            .await
            .is_err()
        {
            tracing::warn!("database connections still busy at the shutdown deadline");
        }
    }

    /// Runs until the server stops by itself (it does not, short of an error).
    pub async fn wait(self) {
        let _ = (&mut { self.server }).await;
    }
}
