//! Extractors that answer bad input with problem documents instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use skuwatch_actors::domain::SkuCode;

use super::error::{ApiError, FieldError};

/// A JSON body: `Content-Type: application/json`, unknown fields refused
/// (422), syntax errors 400, over the body limit 413.
pub struct ApiJson<T> {
    pub value: T,
}

fn read_body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the configured limit",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            rejection.body_text(),
        )
    }
}

/// Reads the body after checking its media type (`expected`, e.g. `json`).
pub async fn body_of_type<S: Send + Sync>(
    req: Request,
    state: &S,
    expected: &str,
) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let matches = essence.eq_ignore_ascii_case(&format!("application/{expected}"))
        || essence.eq_ignore_ascii_case(&format!("text/{expected}"))
        || (expected == "json" && essence.to_ascii_lowercase().ends_with("+json"));
    if !matches {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected Content-Type application/{expected} or text/{expected}, got '{content_type}'"
            ),
        ));
    }
    Bytes::from_request(req, state)
        .await
        .map_err(read_body_error)
}

/// Whether JSON text is an object. serde's derived structs also accept a
/// JSON array of the fields in order (`[null, null]` for a price guard);
/// the API takes objects only (found by schemathesis).
pub fn is_object(text: &[u8]) -> bool {
    text.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// `deserialize_with` for an optional nested struct: a JSON object only
/// (see [`is_object`]); `null` (or absent, with `default`) is `None`.
pub fn optional_object<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    let raw = Box::<serde_json::value::RawValue>::deserialize(deserializer)?;
    if raw.get().trim() == "null" {
        return Ok(None);
    }
    if !is_object(raw.get().as_bytes()) {
        return Err(serde::de::Error::custom("must be a JSON object"));
    }
    serde_json::from_str(raw.get())
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// `deserialize_with` for an array of structs: each a JSON object.
pub fn objects<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    let raw = Vec::<Box<serde_json::value::RawValue>>::deserialize(deserializer)?;
    raw.iter()
        .enumerate()
        .map(|(i, item)| {
            if !is_object(item.get().as_bytes()) {
                return Err(serde::de::Error::custom(format!(
                    "[{i}] must be a JSON object"
                )));
            }
            serde_json::from_str(item.get())
                .map_err(|e| serde::de::Error::custom(format!("[{i}]: {e}")))
        })
        .collect()
}

/// Deserialises JSON, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok() && !is_object(bytes) {
        return Err(ApiError::field("body", "must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut deserializer);
    if result.is_ok() {
        deserializer.end().map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {e}"),
            )
        })?;
    }
    result.map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let message = inner.to_string();
                let message = message
                    .split(" at line ")
                    .next()
                    .unwrap_or(&message)
                    .to_owned();
                let field = match (path.as_str(), unknown_field(&message)) {
                    (".", Some(name)) => name,
                    (".", None) => "body".to_owned(),
                    (path, Some(name)) if !path.ends_with(&name) => format!("{path}.{name}"),
                    (path, _) => path.to_owned(),
                };
                ApiError::validation(vec![FieldError::new(field, message)])
            }
            _ => ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {inner}"),
            ),
        }
    })
}

/// The name in serde's "unknown field `x`, expected ..." message.
fn unknown_field(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    Some(rest.split('`').next()?.to_owned())
}

/// Nesting limit of JSON bodies, put into each request's extensions by
/// the router (`SKUWATCH_JSON_MAX_DEPTH`).
#[derive(Debug, Clone, Copy)]
pub struct JsonDepth(pub usize);

/// Default when the router did not set [`JsonDepth`].
pub const DEFAULT_JSON_DEPTH: usize = 32;

/// Whether `bytes` nest arrays/objects deeper than `max`. A linear scan
/// that tracks strings and escapes, so brackets inside strings do not
/// count; it runs before any parsing, so a hostile body costs O(n) and no
/// recursion. Malformed JSON is left for the parser to report.
pub fn nests_deeper_than(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// 422 for a body nested deeper than the limit.
pub fn check_depth(bytes: &[u8], max: usize) -> Result<(), ApiError> {
    if nests_deeper_than(bytes, max) {
        return Err(ApiError::field(
            "body",
            format!("JSON nested deeper than {max} levels"),
        ));
    }
    Ok(())
}

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let max_depth = req
            .extensions()
            .get::<JsonDepth>()
            .map_or(DEFAULT_JSON_DEPTH, |d| d.0);
        let raw = body_of_type(req, state, "json").await?;
        check_depth(&raw, max_depth)?;
        Ok(Self {
            value: parse_json(&raw)?,
        })
    }
}

/// Query parameters, unknown ones refused.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| ApiQuery(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let message = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                let field = unknown_field(message).unwrap_or_else(|| "query".to_owned());
                ApiError::field(&field, message)
            })
    }
}

/// The `{sku}` path segment, percent-decoded and validated.
pub struct SkuPath(pub SkuCode);

impl<S: Send + Sync> FromRequestParts<S> for SkuPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|r| ApiError::field("sku", r.body_text()))?;
        SkuCode::parse(&raw)
            .map(SkuPath)
            .map_err(|e| ApiError::field("sku", e))
    }
}

/// `If-Match: "<version>"` (API.md, optimistic concurrency); `*` or absent
/// means no condition.
pub fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or("").trim();
    if text == "*" {
        return Ok(None);
    }
    text.strip_prefix("W/")
        .unwrap_or(text)
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::field("If-Match", "must be an ETag such as \"7\""))
}

/// `Idempotency-Key`, 1-255 visible ASCII characters (API.md).
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key) if (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(Some(key.to_owned()))
        }
        _ => Err(ApiError::field(
            "Idempotency-Key",
            "must be 1-255 visible ASCII characters",
        )),
    }
}

/// Hash of what makes two requests "the same" for an idempotency key.
pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}
