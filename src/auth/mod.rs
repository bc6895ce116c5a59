//! Authentication and authorization (API.md, Auth): users with Argon2id
//! password hashes, HS256 JWTs, roles, and the extractors handlers use.

mod client_addr;
mod jwt;
mod password;
pub mod throttle;

use std::fmt;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

pub use client_addr::{ClientAddr, ForwardedHeader};
pub use jwt::{Audience, Claims, JwtKeys, TokenError, LEEWAY_SECS};
pub use password::{hash_password, verify_password, verify_unknown_user};
pub use throttle::LoginThrottle;

use crate::http::error::{ApiError, ProblemKind};
use crate::http::AppState;

/// What a user may do: `admin` everything, `viewer` read-only REST,
/// `checkout` only the holds routes (issue 17: a shop's checkout service
/// holds and sells units, and needs nothing else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
    Checkout,
}

impl Role {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            "checkout" => Some(Role::Checkout),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
            Role::Checkout => "checkout",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks a username: 1-64 characters of letters, digits, `.`, `_`, `-`, `@`.
pub fn valid_username(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

/// Shortest and longest password accepted, in characters.
pub const PASSWORD_CHARS: std::ops::RangeInclusive<usize> = 8..=1024;

pub fn valid_password(password: &str) -> bool {
    PASSWORD_CHARS.contains(&password.chars().count())
}

/// The caller of a request, from a valid bearer token (any role).
#[derive(Debug, Clone)]
pub struct Caller {
    pub username: String,
    pub role: Role,
}

/// A caller with the `admin` role; a `viewer` gets 403 (API.md, Auth).
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

/// A caller who may read the catalog, events and alerts: `admin` or
/// `viewer`; a `checkout` caller gets 403 (issue 17).
#[derive(Debug, Clone)]
pub struct Reader(pub Caller);

/// A caller who may create and change holds: `admin` or `checkout`; a
/// `viewer` gets 403 (API.md v1 additions, Holds).
#[derive(Debug, Clone)]
pub struct HoldWriter(pub Caller);

pub fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(ProblemKind::Unauthorized, detail)
}

/// The token of an `Authorization: Bearer <token>` header, if any:
/// `credentials = auth-scheme 1*SP token68` (RFC 9110 §11.4), the scheme
/// case-insensitive (§11.1: `bearer`, `BEARER`), one or more spaces before
/// the token (a token68, RFC 6750 §2.1; anything else fails verification,
/// so it is a 401 like a forged token). Another scheme or no token at all
/// is no bearer token.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The challenge every 401 carries (RFC 9110 §11.6.1 and §15.5.2: a 401
/// MUST send `WWW-Authenticate`; RFC 6750 §3 for the Bearer scheme).
pub const BEARER_CHALLENGE: &str = "Bearer realm=\"skuwatch\"";

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token =
            bearer(&parts.headers).ok_or_else(|| unauthorized("a bearer token is required"))?;
        let claims = app
            .jwt
            .verify(token)
            .map_err(|_| unauthorized("the token is invalid or expired"))?;
        Ok(claims.caller())
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        if caller.role != Role::Admin {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "this needs the admin role",
            ));
        }
        Ok(Admin(caller))
    }
}

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        if caller.role == Role::Checkout {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "the checkout role may only use the holds routes",
            ));
        }
        Ok(Reader(caller))
    }
}

impl FromRequestParts<AppState> for HoldWriter {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let caller = Caller::from_request_parts(parts, app).await?;
        if caller.role == Role::Viewer {
            return Err(ApiError::new(
                ProblemKind::Forbidden,
                "this needs the admin or checkout role",
            ));
        }
        Ok(HoldWriter(caller))
    }
}
