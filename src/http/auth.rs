//! `POST /api/v1/auth/token` (login) and `POST /api/v1/users` (admin).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use skuwatch_actors::domain::Micros;

use super::error::{ApiError, ProblemKind};
use super::extract::ApiJson;
use super::validate::Checks;
use super::AppState;
use crate::auth::{self, Admin, Role};
use crate::store::UserRecord;

/// Body of `POST /api/v1/auth/token`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Login)]
pub struct LoginBody {
    username: String,
    password: String,
}

/// The same answer for an unknown user, a wrong password and a disabled
/// user (API.md, Auth).
fn bad_credentials() -> ApiError {
    auth::unauthorized("unknown username or wrong password")
}

/// Issues an access token; failed attempts are rate limited per username
/// and client address, with per-address and per-username limits that spare
/// pairs that logged in before (`auth::throttle`; 429 with `Retry-After`).
/// The client address is the peer's, or what a trusted proxy forwarded
/// (`SKUWATCH_TRUSTED_PROXIES`).
#[utoipa::path(
    post, path = "/api/v1/auth/token", tag = "auth",
    request_body(content = LoginBody, content_type = "application/json"),
    responses(
        (status = 200, description = "A token", body = super::openapi::TokenResponse),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn token(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let LoginBody { username, password } = body.value;
    let address = app.client_addr.resolve(peer.ip(), &headers);
    // Debug-formatted: a username from the body is escaped in the log.
    let shown = if auth::valid_username(&username) {
        username.as_str()
    } else {
        "<invalid>"
    };
    if let Err(blocked) = app.throttle.attempt(&username, address) {
        metrics::counter!(crate::metrics::LOGIN_THROTTLED, "scope" => blocked.scope.as_str())
            .increment(1);
        tracing::warn!(user = ?shown, %address, scope = blocked.scope.as_str(), "login throttled");
        let detail = match blocked.scope {
            auth::throttle::Scope::Pair => "too many failed logins for this username from this address; retry later",
            auth::throttle::Scope::Address => "too many failed logins from this address; retry later",
            auth::throttle::Scope::User => "too many failed logins for this username; retry later (or from an address it logged in from before)",
        };
        let mut response = ApiError::new(ProblemKind::TooManyRequests, detail).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(blocked.retry_after));
        return Ok(response);
    }
    let user = if auth::valid_username(&username) {
        app.store.find_user(&username).await?
    } else {
        None
    };
    let verified = match &user {
        Some(user) => auth::verify_password(password, user.password_hash.clone()).await,
        None => {
            auth::verify_unknown_user(password).await;
            false
        }
    };
    let role = user
        .as_ref()
        .filter(|u| verified && !u.disabled)
        .and_then(|u| Role::parse(&u.role));
    let Some(role) = role else {
        // Already counted by `attempt`.
        tracing::info!(user = ?shown, %address, "failed login");
        return Err(bad_credentials());
    };
    app.throttle.succeeded(&username, address);
    let (token, claims) = app.jwt.issue(&username, role).map_err(|e| {
        tracing::error!(error = %e, "cannot sign a token");
        ApiError::internal()
    })?;
    tracing::info!(user = %username, %role, jti = %claims.jti, "token issued");
    Ok(Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": claims.exp - claims.iat,
        "role": role,
    }))
    .into_response())
}

/// Body of `POST /api/v1/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = NewUser)]
pub struct NewUserBody {
    /// 1-64 letters, digits, `.`, `_`, `-` or `@`.
    #[schema(pattern = "^[A-Za-z0-9._@-]{1,64}$")]
    username: String,
    /// 8-1024 characters.
    #[schema(min_length = 8, max_length = 1024)]
    password: String,
    #[schema(pattern = "^(admin|viewer|checkout)$")]
    role: String,
}

/// The public view of a user: never the hash.
pub fn user_json(user: &UserRecord) -> serde_json::Value {
    json!({
        "username": user.username,
        "role": user.role,
        "created_at": user.created_at,
        "disabled": user.disabled,
    })
}

/// Creates a user; hashing runs off the async runtime.
#[utoipa::path(
    post, path = "/api/v1/users", tag = "auth", security(("bearer" = [])),
    request_body(content = NewUserBody, content_type = "application/json"),
    responses(
        (status = 201, description = "Created", body = super::openapi::UserDoc),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 403, response = super::openapi::Forbidden),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 415, response = super::openapi::UnsupportedMediaType),
        (status = 422, response = super::openapi::Invalid),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn create_user(
    State(app): State<AppState>,
    Admin(caller): Admin,
    body: ApiJson<NewUserBody>,
) -> Result<Response, ApiError> {
    let NewUserBody {
        username,
        password,
        role,
    } = body.value;
    let mut checks = Checks::default();
    if !auth::valid_username(&username) {
        checks.fail(
            "username",
            "must be 1-64 letters, digits, '.', '_', '-' or '@'",
        );
    }
    if !auth::valid_password(&password) {
        checks.fail("password", "must be 8-1024 characters");
    }
    let role = Role::parse(&role);
    if role.is_none() {
        checks.fail("role", "must be admin, viewer or checkout");
    }
    checks.finish()?;
    let user = new_user(username, password, role.unwrap_or(Role::Viewer)).await?;
    if !app.store.create_user(&user).await? {
        return Err(ApiError::new(
            ProblemKind::AlreadyExists,
            format!("user {} already exists", user.username),
        ));
    }
    tracing::info!(user = %user.username, role = %user.role, by = %caller.username, "user created");
    Ok((StatusCode::CREATED, Json(user_json(&user))).into_response())
}

/// A new user record with a fresh Argon2id hash.
pub async fn new_user(
    username: String,
    password: String,
    role: Role,
) -> Result<UserRecord, ApiError> {
    let password_hash = auth::hash_password(password).await.map_err(|e| {
        tracing::error!(error = %e, "cannot hash a password");
        ApiError::internal()
    })?;
    Ok(UserRecord {
        username,
        password_hash,
        role: role.as_str().to_owned(),
        created_at: Micros::now(),
        disabled: false,
    })
}
