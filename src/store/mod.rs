//! Storage: the [`SkuStore`] implementation for PostgreSQL and SQLite.
//!
//! The backend is chosen once, from the scheme of `DATABASE_URL`. Both run
//! the same SQL through sqlx's `Any` driver; what differs (row locks, pool
//! shape, migrations) is in [`Backend`].

mod sql;
mod users;

use std::sync::Arc;

use skuwatch_actors::store::{SkuStore, StoreError};
pub use sql::SqlStore;
pub use users::UserRecord;

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

/// Connects, runs the backend's migrations, and returns the store.
/// `max_connections` sizes the PostgreSQL pool (SQLite has one writer).
pub async fn connect(url: &str, max_connections: u32) -> Result<Arc<SqlStore>, StoreError> {
    Ok(Arc::new(SqlStore::connect(url, max_connections).await?))
}

/// The store as the actors see it.
pub fn as_dyn(store: &Arc<SqlStore>) -> Arc<dyn SkuStore> {
    store.clone()
}
