//! Extractors that answer bad input with problem documents instead of
//! axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use skuwatch_actors::domain::{Micros, SkuCode};
use skuwatch_actors::store::{Idempotency, StoredResponse, WriteOutcome};

use super::error::{ApiError, FieldError, ProblemKind};

/// A JSON body: `Content-Type: application/json`, unknown fields refused
/// (422), syntax errors 400, over the body limit 413.
pub struct ApiJson<T> {
    pub value: T,
}

fn read_body_error(rejection: axum::extract::rejection::BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ProblemKind::PayloadTooLarge,
            "the request body is larger than the configured limit",
        )
    } else {
        ApiError::new(ProblemKind::BadRequest, rejection.body_text())
    }
}

/// Whether a `Content-Type` value names the media type `expected` (`json`
/// or `csv`) in UTF-8, per RFC 9110 §8.3: type, subtype and parameter names
/// are case-insensitive, parameters follow `;` with optional whitespace,
/// values may be quoted. `Err` is why not, for the 415's detail.
///
/// - `json`: `application/json` and any `application/<name>+json` (RFC 6839
///   structured suffix, e.g. `application/merge-patch+json`). Leniency:
///   `text/json`, which some clients send (README, Standards and leniencies).
/// - `csv`: `text/csv` (RFC 7111). Leniency: `application/csv`.
/// - `charset`: absent, `utf-8` or `us-ascii` (a subset of UTF-8). JSON is
///   UTF-8 (RFC 8259 §8.1) and CSV is read as UTF-8; a body declared in
///   another charset would be misread, so it is refused rather than guessed.
pub fn media_type_matches(content_type: &str, expected: &str) -> Result<(), String> {
    let media = MediaType::parse(content_type)
        .ok_or_else(|| "it is not a media type (RFC 9110 §8.3.1)".to_owned())?;
    let kind = media.kind.as_str();
    let (subtype, suffix) = match media.subtype.split_once('+') {
        Some((_, suffix)) => (media.subtype.as_str(), Some(suffix)),
        None => (media.subtype.as_str(), None),
    };
    let matches = match expected {
        "json" => {
            (kind == "application" && (subtype == "json" || suffix == Some("json")))
                || (kind == "text" && subtype == "json")
        }
        _ => (kind == "text" || kind == "application") && subtype == expected,
    };
    if !matches {
        return Err(format!("it is not {expected}"));
    }
    match media.param("charset") {
        Some(charset)
            if !charset.eq_ignore_ascii_case("utf-8")
                && !charset.eq_ignore_ascii_case("us-ascii") =>
        {
            Err(format!(
                "charset={charset} is not UTF-8; send the body in UTF-8"
            ))
        }
        _ => Ok(()),
    }
}

/// A parsed `media-type` (RFC 9110 §8.3.1): type and subtype lower-cased,
/// parameter names lower-cased, values unquoted.
#[derive(Debug, PartialEq)]
struct MediaType {
    kind: String,
    subtype: String,
    params: Vec<(String, String)>,
}

impl MediaType {
    /// `type "/" subtype *( OWS ";" OWS [ name "=" ( token / quoted-string ) ] )`;
    /// `None` for anything else.
    fn parse(text: &str) -> Option<Self> {
        fn token(text: &str) -> (&str, &str) {
            let end = text
                .find(|c: char| !(c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)))
                .unwrap_or(text.len());
            text.split_at(end)
        }
        let ows = |t: &str| t.trim_start_matches([' ', '\t']).len();
        let text = text.trim_matches([' ', '\t']);
        let (kind, rest) = token(text);
        let rest = rest.strip_prefix('/')?;
        let (subtype, mut rest) = token(rest);
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let mut params = Vec::new();
        loop {
            rest = &rest[rest.len() - ows(rest)..];
            if rest.is_empty() {
                break;
            }
            rest = rest.strip_prefix(';')?;
            rest = &rest[rest.len() - ows(rest)..];
            if rest.is_empty() || rest.starts_with(';') {
                continue;
            }
            let (name, after) = token(rest);
            let after = after.strip_prefix('=')?;
            if name.is_empty() {
                return None;
            }
            let (value, after) = if let Some(quoted) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let end = loop {
                    match chars.next()? {
                        (_, '\\') => value.push(chars.next()?.1),
                        (i, '"') => break i + 1,
                        (_, c) if c == '\t' || (' '..='~').contains(&c) => value.push(c),
                        _ => return None,
                    }
                };
                (value, &quoted[end..])
            } else {
                let (value, after) = token(after);
                if value.is_empty() {
                    return None;
                }
                (value.to_owned(), after)
            };
            params.push((name.to_ascii_lowercase(), value));
            rest = after;
        }
        Some(Self {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params,
        })
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads the body after checking its media type (`expected`, e.g. `json`;
/// see [`media_type_matches`]).
pub async fn body_of_type<S: Send + Sync>(
    req: Request,
    state: &S,
    expected: &str,
) -> Result<Bytes, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let verdict = match &content_type {
        Some(value) => media_type_matches(value, expected),
        None => Err("there is none".to_owned()),
    };
    if let Err(why) = verdict {
        let accepted = if expected == "json" {
            "application/json (or application/*+json, text/json)"
        } else {
            "text/csv (or application/csv)"
        };
        return Err(ApiError::new(
            ProblemKind::UnsupportedMediaType,
            format!(
                "expected Content-Type {accepted} in UTF-8; got '{}': {why}",
                content_type.unwrap_or_default()
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

/// `deserialize_with` (with `default`) for a field where absent, `null`
/// and a value differ: absent is `None`, `null` is `Some(None)` (a PATCH
/// resetting the field to the server's setting).
pub fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    use serde::Deserialize;
    Option::<T>::deserialize(deserializer).map(Some)
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
                ProblemKind::MalformedJson,
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
                ProblemKind::MalformedJson,
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
                let (field, message) = query_field(message);
                ApiError::field(&field, message)
            })
    }
}

/// The parameter a query-string error is about, and the message without
/// it: serde's "unknown field `x`" and "duplicate field `x`", or
/// serde_path_to_error's "x: invalid digit found in string"; `query` when
/// none is named.
fn query_field(message: &str) -> (String, &str) {
    if let Some(name) = unknown_field(message) {
        return (name, message);
    }
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        if let Some(name) = rest.split('`').next() {
            return (name.to_owned(), "must be given once");
        }
    }
    match message.split_once(": ") {
        Some((name, rest))
            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            (name.to_owned(), rest)
        }
        _ => ("query".to_owned(), message),
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

/// `If-Match` (RFC 9110 §13.1.1) on a SKU's version, whose `ETag` is the
/// strong entity-tag `"<version>"` (API.md, optimistic concurrency).
///
/// - absent or `*`: no condition. `*` asks that the SKU exist, and every
///   route that honours `If-Match` answers 404 for a SKU that does not, and
///   RFC 9110 §13.2.1 has a server ignore preconditions when it would
///   answer other than 2xx or 412 anyway.
/// - a list of entity-tags (several fields are one list, RFC 9110 §5.3;
///   empty elements are skipped, §5.6.1): `Some(versions)`, the versions
///   named by strong tags. The write goes ahead only at one of them
///   ([`WriteMeta::if_match`](skuwatch_actors::domain::WriteMeta)).
///   If-Match uses the strong comparison (§8.8.3.2), so a weak tag
///   (`W/"5"`) never matches, nor does a strong tag this server does not
///   issue (`"abc"`, `"05"`): such tags are well-formed but name no version,
///   and an empty list fails (412) whatever the SKU's version.
/// - anything else (a missing quote, `*` in a list, a control character):
///   422 naming `If-Match`. Leniency: a bare version (`If-Match: 5`) is read
///   as `"5"` (README, Standards and leniencies).
pub fn if_match(headers: &HeaderMap) -> Result<Option<Vec<i64>>, ApiError> {
    let mut fields = headers.get_all(header::IF_MATCH).iter().peekable();
    if fields.peek().is_none() {
        return Ok(None);
    }
    let mut elements = Vec::new();
    for field in fields {
        elements.extend(list_elements(field.as_bytes()).ok_or_else(malformed_if_match)?);
    }
    // An empty field (or only commas) names nothing to compare; refused
    // rather than read as "no precondition" or as one that never matches.
    if elements.is_empty() {
        return Err(malformed_if_match());
    }
    if elements == [Element::Star] {
        return Ok(None);
    }
    let mut versions = Vec::new();
    for element in elements {
        match element {
            Element::Star => return Err(malformed_if_match()),
            Element::Weak(_) => {}
            Element::Strong(tag) | Element::Bare(tag) => versions.extend(version_of(tag)),
        }
    }
    Ok(Some(versions))
}

fn malformed_if_match() -> ApiError {
    ApiError::field(
        "If-Match",
        "must be * or a list of entity-tags such as \"7\" (RFC 9110 §13.1.1)",
    )
}

/// One element of an `If-Match` list.
#[derive(Debug, PartialEq)]
enum Element<'a> {
    Star,
    /// `"<opaque>"`: the bytes between the quotes.
    Strong(&'a [u8]),
    Weak(&'a [u8]),
    /// Digits without quotes (the leniency of [`if_match`]).
    Bare(&'a [u8]),
}

/// Splits `If-Match = "*" / #entity-tag` into elements; `None` when it is
/// not that syntax. Quotes are tracked, since `etagc` includes `,`.
fn list_elements(value: &[u8]) -> Option<Vec<Element<'_>>> {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let mut elements = Vec::new();
    let mut rest = value;
    loop {
        while rest.first().is_some_and(|b| is_ows(b) || *b == b',') {
            rest = &rest[1..];
        }
        if rest.is_empty() {
            return Some(elements);
        }
        let (element, tail) = if rest[0] == b'*' {
            (Element::Star, &rest[1..])
        } else if rest[0].is_ascii_digit() {
            let end = rest
                .iter()
                .position(|b| !b.is_ascii_digit())
                .unwrap_or(rest.len());
            (Element::Bare(&rest[..end]), &rest[end..])
        } else {
            let (weak, quoted) = match rest.strip_prefix(b"W/") {
                Some(quoted) => (true, quoted),
                None => (false, rest),
            };
            let body = quoted.strip_prefix(b"\"")?;
            let end = body.iter().position(|b| *b == b'"')?;
            let opaque = &body[..end];
            // etagc = %x21 / %x23-7E / obs-text (RFC 9110 §8.8.3)
            if !opaque
                .iter()
                .all(|b| *b == 0x21 || (0x23..=0x7e).contains(b) || *b >= 0x80)
            {
                return None;
            }
            let element = if weak {
                Element::Weak(opaque)
            } else {
                Element::Strong(opaque)
            };
            (element, &body[end + 1..])
        };
        elements.push(element);
        rest = tail;
        while rest.first().is_some_and(is_ows) {
            rest = &rest[1..];
        }
        match rest.first() {
            None => return Some(elements),
            Some(b',') => {}
            Some(_) => return None,
        }
    }
}

/// The version an opaque-tag names, if it is one this server issues: the
/// decimal form of `version` and nothing else, since strong comparison is
/// octet by octet (`"05"` is not `"5"`).
fn version_of(tag: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(tag).ok()?;
    let canonical = text == "0" || (text.starts_with(|c: char| ('1'..='9').contains(&c)));
    if !canonical || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Longest `Idempotency-Key`, in characters (API.md).
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;

/// `Idempotency-Key` (API.md: 1-255 characters). Its standard form is an
/// RFC 8941 sf-string (draft-ietf-httpapi-idempotency-key-header §2):
/// `"order-1001"`, which is read as the key `order-1001` (the escapes `\"`
/// and `\\` decoded; space allowed inside the quotes). Leniency: a bare
/// token of visible ASCII (`order-1001`, as most clients send it) is the
/// same key. Anything else is 422 naming `Idempotency-Key`.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut fields = headers.get_all("idempotency-key").iter();
    let Some(value) = fields.next() else {
        return Ok(None);
    };
    let invalid = || {
        ApiError::field(
            "Idempotency-Key",
            format!(
                "must be one key of 1-{MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters, \
                 bare or as a quoted string (\"order-1001\")"
            ),
        )
    };
    if fields.next().is_some() {
        return Err(invalid());
    }
    let key = parse_idempotency_key(value.as_bytes()).ok_or_else(invalid)?;
    if (1..=MAX_IDEMPOTENCY_KEY_CHARS).contains(&key.len()) {
        Ok(Some(key))
    } else {
        Err(invalid())
    }
}

/// An sf-string (RFC 8941 §3.3.3, surrounding spaces allowed by §4.2) or a
/// bare run of visible ASCII; `None` for anything else.
fn parse_idempotency_key(value: &[u8]) -> Option<String> {
    let value = value.trim_ascii();
    let Some(quoted) = value.strip_prefix(b"\"") else {
        return value
            .iter()
            .all(u8::is_ascii_graphic)
            .then(|| String::from_utf8_lossy(value).into_owned());
    };
    let mut key = String::new();
    let mut bytes = quoted.iter();
    while let Some(&b) = bytes.next() {
        match b {
            b'\\' => match bytes.next() {
                Some(&escaped @ (b'"' | b'\\')) => key.push(char::from(escaped)),
                _ => return None,
            },
            b'"' => return bytes.next().is_none().then_some(key),
            0x20..=0x7e => key.push(char::from(b)),
            _ => return None,
        }
    }
    None
}

/// Hash of what makes two requests "the same" for an idempotency key.
/// The request's `Idempotency-Key`, if any, with what identifies the
/// request: `route` (routes that share keys share one), the user (keys
/// are per user: the token's `sub`, since each client makes its own, and
/// a key must never hand one user the answer to another's write, nor let
/// one user's key block another's; README, Standards and leniencies; a
/// username has no `:`, so scopes cannot collide), and the validated
/// request (so key order, spacing and trimmed blanks do not matter).
pub fn idempotency(
    headers: &HeaderMap,
    route: &str,
    username: &str,
    request: &str,
    render: fn(&WriteOutcome) -> StoredResponse,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = idempotency_key(headers)? else {
        return Ok(None);
    };
    Ok(Some(Idempotency {
        key,
        scope: format!("{route}:{username}"),
        fingerprint: fingerprint(&[request.as_bytes()]),
        render,
    }))
}

pub fn fingerprint(parts: &[&[u8]]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hex::encode(hasher.finalize())
}

/// The routes that evaluate `If-Match` themselves (method, route template).
const IF_MATCH_ROUTES: [(&str, &str); 5] = [
    ("GET", "/api/v1/skus/{sku}"),
    ("PATCH", "/api/v1/skus/{sku}"),
    ("PUT", "/api/v1/skus/{sku}/price"),
    ("PUT", "/api/v1/skus/{sku}/stock"),
    ("POST", "/api/v1/skus/{sku}/stock/adjustments"),
];

/// Route layer: a precondition the route does not evaluate is refused
/// (422 naming the header) rather than ignored. RFC 9110 §13.1 has a server
/// that receives `If-Match`, `If-None-Match` or `If-Unmodified-Since` on a
/// request that changes state evaluate it before acting; a write done
/// without the condition its client asked for (a batch adjustment with
/// `If-Match`) is what that rule exists to prevent. `If-Match` is honoured
/// by the routes of [`IF_MATCH_ROUTES`], `If-None-Match` by
/// `GET /api/v1/skus/{sku}`; on reads, `If-None-Match` elsewhere and
/// `If-Modified-Since`/`If-Range` are ignored, as RFC 9110 §13.2.1 lets a
/// server that keeps no such validators do (they only ever make a
/// response smaller).
pub async fn refuse_unsupported_preconditions(
    matched: Option<axum::extract::MatchedPath>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let method = request.method().clone();
    let template = matched.as_ref().map_or("", |m| m.as_str());
    // A method the route does not serve is the router's to answer (405):
    // there is nothing to act on, so nothing to refuse.
    if !declared(&method, template) {
        return next.run(request).await;
    }
    let headers = request.headers();
    let safe = method == axum::http::Method::GET || method == axum::http::Method::HEAD;
    // HEAD is GET without the body (RFC 9110 §9.3.2).
    let as_method = if method == axum::http::Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    let refused = if headers.contains_key(header::IF_MATCH)
        && !IF_MATCH_ROUTES
            .iter()
            .any(|(m, t)| as_method == *m && template == *t)
    {
        Some("If-Match")
    } else if !safe && headers.contains_key(header::IF_NONE_MATCH) {
        Some("If-None-Match")
    } else if !safe && headers.contains_key(header::IF_UNMODIFIED_SINCE) {
        Some("If-Unmodified-Since")
    } else {
        None
    };
    match refused {
        Some(name) => ApiError::field(
            name,
            "this route does not evaluate this precondition, so it refuses it \
             rather than act without it (RFC 9110 §13.1); If-Match is taken by \
             PATCH /skus/{sku}, PUT .../price, PUT .../stock and single adjustments",
        )
        .into_response(),
        None => next.run(request).await,
    }
}

/// Whether the OpenAPI document declares `method` on `template` (HEAD
/// wherever GET is, RFC 9110 §9.3.2). Built once from the document, which
/// `tests/api/openapi.rs` keeps equal to the router.
fn declared(method: &axum::http::Method, template: &str) -> bool {
    use std::collections::HashSet;
    use std::sync::LazyLock;
    static DECLARED: LazyLock<HashSet<(String, String)>> = LazyLock::new(|| {
        let mut declared = HashSet::new();
        for (path, item) in crate::http::openapi::document().paths.paths {
            let operations = [
                ("GET", item.get.is_some()),
                ("HEAD", item.get.is_some() || item.head.is_some()),
                ("POST", item.post.is_some()),
                ("PUT", item.put.is_some()),
                ("PATCH", item.patch.is_some()),
                ("DELETE", item.delete.is_some()),
            ];
            for (name, present) in operations {
                if present {
                    declared.insert((name.to_owned(), path.clone()));
                }
            }
        }
        declared
    });
    DECLARED.contains(&(method.as_str().to_owned(), template.to_owned()))
}

/// `If-None-Match` (RFC 9110 §13.1.2) against a SKU's version: whether it
/// names the current representation, so a `GET` answers 304. Weak
/// comparison (§8.8.3.2): `W/"5"` matches version 5. A malformed field is
/// ignored (the full answer is always a correct answer to a `GET`).
pub fn if_none_match_hits(headers: &HeaderMap, version: i64) -> bool {
    let mut hit = false;
    for field in headers.get_all(header::IF_NONE_MATCH) {
        let Some(elements) = list_elements(field.as_bytes()) else {
            return false;
        };
        hit |= elements.iter().any(|e| match e {
            Element::Star => true,
            Element::Strong(tag) | Element::Weak(tag) => version_of(tag) == Some(version),
            Element::Bare(_) => false,
        });
    }
    hit
}

/// Which way a time with more precision than microseconds is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Round {
    /// For an inclusive upper bound (`to`): an event at .1234560 is at or
    /// before .1234567.
    Down,
    /// For an inclusive lower bound (`from`): an event at .1234560 is before
    /// .1234567, so it is not in the range.
    Up,
}

/// A time in a query parameter (history `from`/`to`): RFC 3339
/// `date-time`, with `Z` or a numeric offset, normalised to UTC
/// microseconds (API.md, Time). What RFC 3339 §5.6 allows is accepted:
/// lower-case `t` and `z` (§5.6 NOTE), any number of fraction digits
/// (rounded by `round` to the microsecond events are stored at), `-00:00`.
///
/// Leniencies (README, Standards and leniencies): a space for `T` (the
/// §5.6 note's readability form), and a space in place of the offset's
/// `+` (`...10:00:00 02:00`), since form decoding turns an unencoded `+`
/// in a query into a space and the time is then unambiguous anyway.
pub fn query_time(raw: &str, round: Round) -> Option<Micros> {
    let time = chrono::DateTime::parse_from_rfc3339(raw)
        .ok()
        .or_else(|| plus_decoded_as_space(raw))?;
    let micros = time.timestamp_micros();
    let sub_micro = time.timestamp_subsec_nanos() % 1000 != 0;
    Some(Micros(if round == Round::Up && sub_micro {
        micros.checked_add(1)?
    } else {
        micros
    }))
}

/// `...10:00:00 02:00` read as `...10:00:00+02:00` (see [`query_time`]).
fn plus_decoded_as_space(raw: &str) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    let offset_at = raw.len().checked_sub(6)?;
    let (time, offset) = (raw.get(..offset_at)?, raw.get(offset_at..)?);
    let bytes = offset.as_bytes();
    let numeric = bytes[0] == b' '
        && bytes[1..3].iter().all(u8::is_ascii_digit)
        && bytes[3] == b':'
        && bytes[4..].iter().all(u8::is_ascii_digit);
    if !numeric {
        return None;
    }
    chrono::DateTime::parse_from_rfc3339(&format!("{time}+{}", &offset[1..])).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(name: &'static str, values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(name, HeaderValue::from_str(value).expect("value"));
        }
        headers
    }

    fn if_match_of(values: &[&str]) -> Result<Option<Vec<i64>>, ()> {
        if_match(&headers("if-match", values)).map_err(|_| ())
    }

    #[test]
    fn if_match_takes_star_lists_and_strong_tags_only() {
        assert_eq!(if_match_of(&[]), Ok(None));
        assert_eq!(if_match_of(&["*"]), Ok(None));
        assert_eq!(if_match_of(&[" * "]), Ok(None));
        assert_eq!(if_match_of(&["\"7\""]), Ok(Some(vec![7])));
        assert_eq!(if_match_of(&["\"7\", \"9\""]), Ok(Some(vec![7, 9])));
        assert_eq!(if_match_of(&["\"7\",\t\"9\""]), Ok(Some(vec![7, 9])));
        assert_eq!(if_match_of(&["\"7\"", "\"9\""]), Ok(Some(vec![7, 9])));
        assert_eq!(if_match_of(&[", \"7\",,"]), Ok(Some(vec![7])));
        // RFC 9110 §8.8.3.2: strong comparison; W/ tags and tags that are
        // not this server's never match.
        assert_eq!(if_match_of(&["W/\"7\""]), Ok(Some(vec![])));
        assert_eq!(if_match_of(&["W/\"7\", \"8\""]), Ok(Some(vec![8])));
        assert_eq!(if_match_of(&["\"07\""]), Ok(Some(vec![])));
        assert_eq!(if_match_of(&["\"+7\""]), Ok(Some(vec![])));
        assert_eq!(if_match_of(&["\"\""]), Ok(Some(vec![])));
        assert_eq!(if_match_of(&["\"a,b\", \"3\""]), Ok(Some(vec![3])));
        assert_eq!(if_match_of(&["\"99999999999999999999\""]), Ok(Some(vec![])));
        // Leniency: a bare version.
        assert_eq!(if_match_of(&["7"]), Ok(Some(vec![7])));
        for malformed in [
            "",
            " , ,",
            "\"7",
            "7\"",
            "W/7",
            "w/\"7\"",
            "*, \"7\"",
            "**",
            "\"7\" \"8\"",
            "\"7\";a=b",
            "'7'",
            "\"a b\"",
        ] {
            assert_eq!(if_match_of(&[malformed]), Err(()), "{malformed}");
        }
        assert_eq!(if_match_of(&["*", "\"7\""]), Err(()));
    }

    #[test]
    fn if_none_match_uses_the_weak_comparison() {
        let hits = |values: &[&str]| if_none_match_hits(&headers("if-none-match", values), 7);
        assert!(hits(&["\"7\""]));
        assert!(hits(&["W/\"7\""]));
        assert!(hits(&["\"1\", W/\"7\""]));
        assert!(hits(&["*"]));
        assert!(!hits(&["\"8\""]));
        assert!(!hits(&[]));
        assert!(!hits(&["\"7"]));
    }

    fn key_of(values: &[&str]) -> Result<Option<String>, ()> {
        idempotency_key(&headers("idempotency-key", values)).map_err(|_| ())
    }

    #[test]
    fn idempotency_keys_are_sf_strings_or_bare_tokens() {
        assert_eq!(key_of(&[]), Ok(None));
        assert_eq!(key_of(&["order-1"]), Ok(Some("order-1".into())));
        assert_eq!(key_of(&["\"order-1\""]), Ok(Some("order-1".into())));
        assert_eq!(key_of(&[" \"order 1\" "]), Ok(Some("order 1".into())));
        assert_eq!(key_of(&[r#""a\"b\\c""#]), Ok(Some(r#"a"b\c"#.into())));
        assert_eq!(key_of(&[&"k".repeat(255)]), Ok(Some("k".repeat(255))));
        assert_eq!(
            key_of(&[&format!("\"{}\"", "k".repeat(255))]),
            Ok(Some("k".repeat(255)))
        );
        for bad in [
            "",
            "\"\"",
            "\"open",
            "\"a\"b\"",
            r#""a\nb""#,
            "a b",
            "\"é\"",
            &"k".repeat(256),
        ] {
            assert_eq!(key_of(&[bad]), Err(()), "{bad}");
        }
        assert_eq!(key_of(&["a", "b"]), Err(()));
    }

    #[test]
    fn media_types_follow_rfc_9110_case_and_parameters() {
        for ok in [
            "application/json",
            "APPLICATION/Json",
            "application/json;charset=utf-8",
            "application/json; charset=\"UTF-8\"",
            "application/json; CHARSET=utf-8; foo=bar",
            "application/problem+json",
            "text/json",
        ] {
            assert_eq!(media_type_matches(ok, "json"), Ok(()), "{ok}");
        }
        for bad in [
            "application/json; charset=latin1",
            "application/jsonp",
            "text/plain",
            "application/",
            "",
            "application/json+xml",
        ] {
            assert!(media_type_matches(bad, "json").is_err(), "{bad}");
        }
        for ok in [
            "application/json ; charset=utf-8",
            "application/json;",
            "application/json;; charset=utf-8 ;",
            "application/json; charset=\"utf\\-8\"",
        ] {
            assert_eq!(media_type_matches(ok, "json"), Ok(()), "{ok}");
        }
        for bad in [
            "application/json; charset",
            "application/json; =utf-8",
            "application/json; charset=\"utf-8",
            "application /json",
            "application/json charset=utf-8",
        ] {
            assert!(media_type_matches(bad, "json").is_err(), "{bad}");
        }
        assert_eq!(
            media_type_matches("text/csv; header=present", "csv"),
            Ok(())
        );
        assert_eq!(media_type_matches("application/csv", "csv"), Ok(()));
        assert!(media_type_matches("text/csv; charset=utf-16", "csv").is_err());
        assert!(media_type_matches("text/tab-separated-values", "csv").is_err());
    }

    #[test]
    fn query_times_are_rfc_3339_in_utc_rounded_inwards() {
        let at = |raw: &str| query_time(raw, Round::Down).map(Micros::to_rfc3339);
        let utc = Some("2026-11-29T10:00:00.123456Z".to_owned());
        assert_eq!(at("2026-11-29T10:00:00.123456Z"), utc);
        assert_eq!(at("2026-11-29T12:00:00.123456+02:00"), utc);
        assert_eq!(at("2026-11-29T04:30:00.123456-05:30"), utc);
        assert_eq!(at("2026-11-29t10:00:00.123456z"), utc);
        assert_eq!(at("2026-11-29T10:00:00.123456-00:00"), utc);
        assert_eq!(at("2026-11-29T10:00:00.1234569Z"), utc);
        assert_eq!(at("2026-11-29T12:00:00.123456 02:00"), utc);
        assert_eq!(at("2026-11-29 10:00:00.123456Z"), utc);
        assert_eq!(
            query_time("2026-11-29T10:00:00.1234561Z", Round::Up).map(Micros::to_rfc3339),
            Some("2026-11-29T10:00:00.123457Z".to_owned())
        );
        assert_eq!(
            query_time("2026-11-29T10:00:00.123456000Z", Round::Up).map(Micros::to_rfc3339),
            utc
        );
        assert_eq!(
            at("2026-11-29T10:00:00Z"),
            Some("2026-11-29T10:00:00.000000Z".to_owned())
        );
        for bad in [
            "2026-11-29",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00Z",
            "2026-11-29T10:00:00+0200",
            "2026-11-29T10:00:00 2:00",
            "2026-11-29T10:00:00  02:00",
            "2026-02-30T10:00:00Z",
            "",
            " ",
            "2026-11-29T10:00:00 02:0é",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_errors_name_their_parameter() {
        assert_eq!(
            query_field("limit: invalid digit found in string"),
            ("limit".to_owned(), "invalid digit found in string")
        );
        assert_eq!(
            query_field("duplicate field `limit`"),
            ("limit".to_owned(), "must be given once")
        );
        assert_eq!(
            query_field("unknown field `colour`, expected one of `limit`").0,
            "colour"
        );
        assert_eq!(query_field("something odd").0, "query");
    }
}
