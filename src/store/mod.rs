//! Storage: the [`SkuStore`] implementation for PostgreSQL and SQLite.
//!
//! The backend is chosen once, from the scheme of `DATABASE_URL`. Both run
//! the same SQL through sqlx's `Any` driver; what differs (row locks, pool
//! shape, migrations) is in [`Backend`].

pub mod history;
mod sql;
mod users;

use std::sync::Arc;
use std::time::Duration;

pub use skuwatch_actors::store::UserRecord;
use skuwatch_actors::store::{SkuStore, StoreError};
pub use sql::{SqlStore, DEFAULT_WRITE_QUEUE};

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    /// `postgres://`/`postgresql://` or `sqlite:`; anything else is refused.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(StoreError::Unavailable(
                "DATABASE_URL must start with postgres:// or sqlite://".into(),
            ))
        }
    }
}

/// The longest `/readyz` waits for its own database connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Size of the pools and the bounds of every wait on them (issue 13,
/// fault 14: a saturated database answers 503 `overloaded` in about these
/// times, not after a client has given up).
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// PostgreSQL pool size (SQLite: readers, at most 8; one writer).
    pub max_connections: u32,
    /// Longest wait for a pooled connection, and for a queued write to be
    /// taken by a group committer (`SKUWATCH_DB_ACQUIRE_TIMEOUT_MS`).
    pub acquire_timeout: Duration,
    /// Longest wait for a row lock or the event clock (PostgreSQL
    /// `lock_timeout`), or for another process's write lock (SQLite
    /// `busy_timeout`) (`SKUWATCH_DB_LOCK_TIMEOUT_MS`).
    pub lock_timeout: Duration,
    /// Most `commit` calls waiting for a group committer; one more is
    /// refused at once, 503 `overloaded` (`SKUWATCH_WRITE_QUEUE`).
    pub write_queue: usize,
    /// Run pending PostgreSQL migrations when connecting, instead of
    /// refusing to start until `skuwatch migrate` has run them
    /// (`SKUWATCH_MIGRATE_ON_START`; SQLite, the embedded default, always
    /// migrates at start). A schema newer than this build is refused
    /// either way.
    pub migrate_on_start: bool,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(10),
            write_queue: DEFAULT_WRITE_QUEUE,
            migrate_on_start: true,
        }
    }
}

/// Connects, runs the backend's migrations, and returns the store.
/// `max_connections` sizes the PostgreSQL pool (SQLite has one writer).
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<SqlStore>, StoreError> {
    Ok(Arc::new(SqlStore::connect(url, max_connections).await?))
}

/// Runs the backend's pending migrations (`skuwatch migrate`); returns
/// the schema's migration version after it. Safe to run while other
/// instances serve: a migration only adds.
pub async fn migrate(url: &str) -> Result<i64, StoreError> {
    SqlStore::migrate(url).await
}

/// [`connect`] with explicit pool settings (`skuwatch serve`).
pub async fn connect_with(url: &str, pool: PoolSettings) -> Result<Arc<SqlStore>, StoreError> {
    Ok(Arc::new(SqlStore::connect_with(url, pool).await?))
}

/// The store as everything else sees it (HTTP, actors, feed, background
/// tasks): [`SkuStore`] is the one storage trait.
pub fn as_dyn(store: &Arc<SqlStore>) -> Arc<dyn SkuStore> {
    store.clone()
}
