//! JWTs (RFC 7519): HS256 only, `exp`/`iss`/`aud`/`sub`/`role` required,
//! a small leeway.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Caller, Role};

/// Clock skew tolerated on `exp` and `nbf`, in seconds. Small on purpose: a
/// token expired a minute ago is expired.
pub const LEEWAY_SECS: u64 = 30;

/// The claims skuwatch issues and requires. Required: `sub`, `role` (a
/// private claim, `admin` or `viewer`), `iss`, `aud`, `exp`; `iat`, `nbf`
/// and `jti` are optional, as RFC 7519 §4.1 makes every registered claim.
/// Dates are NumericDate (RFC 7519 §2): seconds since the epoch, which may
/// have a fraction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iss: String,
    /// One audience or several (RFC 7519 §4.1.3); ours must be among them.
    pub aud: Audience,
    /// Issued at, seconds since the epoch (0 when the token has none).
    #[serde(default, deserialize_with = "numeric_date")]
    pub iat: u64,
    /// Expiry, seconds since the epoch (a fraction is dropped: a token
    /// never lives longer here than its issuer said).
    #[serde(deserialize_with = "numeric_date")]
    pub exp: u64,
    #[serde(
        default,
        deserialize_with = "optional_numeric_date",
        skip_serializing_if = "Option::is_none"
    )]
    pub nbf: Option<u64>,
    /// Unique token id (empty when the token has none).
    #[serde(default)]
    pub jti: String,
}

/// The `aud` claim: "either an array of case-sensitive strings ... or a
/// single case-sensitive string" (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

/// A NumericDate (RFC 7519 §2): an integer or a finite, non-negative
/// number of seconds, floored to whole seconds.
fn numeric_date<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let value = serde_json::Number::deserialize(deserializer)?;
    if let Some(seconds) = value.as_u64() {
        return Ok(seconds);
    }
    match value.as_f64() {
        Some(seconds) if seconds.is_finite() && (0.0..1.8e19).contains(&seconds) => {
            // In range and finite: the cast is exact for the floor.
            Ok(seconds.floor() as u64)
        }
        _ => Err(serde::de::Error::custom(
            "a NumericDate is a non-negative number of seconds",
        )),
    }
}

fn optional_numeric_date<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<u64>, D::Error> {
    numeric_date(deserializer).map(Some)
}

impl Claims {
    pub fn caller(&self) -> Caller {
        Caller {
            username: self.sub.clone(),
            role: Role::parse(&self.role).unwrap_or(Role::Viewer),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid token")]
    Invalid,
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// Signing and verification keys with the pinned algorithm.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
    /// Lifetime of an issued token, in seconds.
    pub ttl_secs: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl JwtKeys {
    /// HS256 with `secret` (at least 32 bytes; checked by the caller).
    pub fn hs256(
        secret: &[u8],
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
    ) -> Result<Self, TokenError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        let key_error = |e: jsonwebtoken::errors::Error| TokenError::Signing(e.to_string());
        Ok(Self {
            encoding: EncodingKey::from_secret(secret).map_err(key_error)?,
            decoding: DecodingKey::from_secret(secret).map_err(key_error)?,
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
        })
    }

    /// A token for `username` with `role`, valid for `ttl_secs`.
    pub fn issue(&self, username: &str, role: Role) -> Result<(String, Claims), TokenError> {
        let iat = now_secs();
        let claims = Claims {
            sub: username.to_owned(),
            role: role.as_str().to_owned(),
            iss: self.issuer.clone(),
            aud: Audience::One(self.audience.clone()),
            iat,
            exp: iat + self.ttl_secs,
            nbf: None,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| TokenError::Signing(e.to_string()))?;
        Ok((token, claims))
    }

    /// Verifies signature, algorithm, `exp`, `nbf`, `iss`, `aud` and the role.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?;
        if Role::parse(&data.claims.role).is_none() {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}
