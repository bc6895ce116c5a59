//! Users: the rows behind login (auth issue).
//! The user part of [`skuwatch_actors::store::SkuStore`] for [`SqlStore`].

use skuwatch_actors::domain::Micros;
use skuwatch_actors::store::{StoreError, UserRecord};
use sqlx::Row;

use super::sql::db_error;
use super::SqlStore;

/// Inserts a user; `false` when the name is taken.
pub(super) async fn create_user(store: &SqlStore, user: &UserRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO users (username, password_hash, role, created_us, disabled) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (username) DO NOTHING",
    )
    .bind(&user.username)
    .bind(&user.password_hash)
    .bind(&user.role)
    .bind(user.created_at.0)
    .bind(i64::from(user.disabled))
    .execute(store.writer())
    .await
    .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

/// Replaces a user's password hash and enables it; `false` if unknown.
pub(super) async fn set_password(
    store: &SqlStore,
    username: &str,
    hash: &str,
) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE users SET password_hash = $2, disabled = 0 WHERE username = $1")
        .bind(username)
        .bind(hash)
        .execute(store.writer())
        .await
        .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn find_user(
    store: &SqlStore,
    username: &str,
) -> Result<Option<UserRecord>, StoreError> {
    let row = sqlx::query(
        "SELECT username, password_hash, role, created_us, disabled FROM users WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(store.reader())
    .await
    .map_err(db_error)?;
    row.map(|row| user_from_row(&row)).transpose()
}

pub(super) async fn list_users(store: &SqlStore) -> Result<Vec<UserRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT username, password_hash, role, created_us, disabled FROM users ORDER BY username",
    )
    .fetch_all(store.reader())
    .await
    .map_err(db_error)?;
    rows.iter().map(user_from_row).collect()
}

/// `false` when the user does not exist.
pub(super) async fn disable_user(store: &SqlStore, username: &str) -> Result<bool, StoreError> {
    let done = sqlx::query("UPDATE users SET disabled = 1 WHERE username = $1")
        .bind(username)
        .execute(store.writer())
        .await
        .map_err(db_error)?;
    Ok(done.rows_affected() == 1)
}

pub(super) async fn count_users(store: &SqlStore) -> Result<i64, StoreError> {
    sqlx::query("SELECT COUNT(*) FROM users")
        .fetch_one(store.reader())
        .await
        .map_err(db_error)?
        .try_get::<i64, _>(0)
        .map_err(db_error)
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        username: row.try_get("username").map_err(db_error)?,
        password_hash: row.try_get("password_hash").map_err(db_error)?,
        role: row.try_get("role").map_err(db_error)?,
        created_at: Micros(row.try_get("created_us").map_err(db_error)?),
        disabled: row.try_get::<i64, _>("disabled").map_err(db_error)? != 0,
    })
}
