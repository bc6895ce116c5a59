//! `GET /`: the operator dashboard (`dashboard/`, README "Dashboard").
//!
//! The Vite build output in `dashboard/dist` is compiled into the binary, so
//! a machine with only Rust serves the dashboard from `cargo run`. Any path
//! that is not an asset gets `index.html` (the dashboard routes on the
//! client), except the server's own prefixes, which keep their 404 problem
//! document so a mistyped API path never answers with HTML.

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

use super::error::{ApiError, ProblemKind};

#[derive(Embed)]
#[folder = "dashboard/dist"]
struct Assets;

/// Paths the dashboard never answers: the API, the socket and the operations
/// routes (some of them added by other modules; they win over this fallback
/// when they exist, and get a problem document when they do not).
const SERVER_PREFIXES: &[&str] = &[
    "/api",
    "/ws",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/healthz",
    "/readyz",
];

/// Vite names every file under `assets/` after a hash of its content, so a
/// browser may keep them for a year; `index.html` names the current ones and
/// must be revalidated on every load, or a deploy would serve stale pages.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
const NO_CACHE: &str = "no-cache";

/// Scripts and styles from the server only; the socket on the same origin.
/// Inline styles are allowed because the chart library sets element styles.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

fn is_server_path(path: &str) -> bool {
    SERVER_PREFIXES.iter().any(|prefix| {
        path == *prefix
            || path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('/'))
    })
}

/// The router's fallback: an embedded asset, `index.html` for client routes,
/// or the API's 404/405 problem documents.
pub async fn serve(method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if is_server_path(path) {
        return super::no_route().await.into_response();
    }
    if method != Method::GET && method != Method::HEAD {
        return ApiError::new(
            ProblemKind::MethodNotAllowed,
            "the dashboard only answers GET",
        )
        .into_response();
    }
    let name = path.trim_start_matches('/');
    if let Some(file) = (!name.is_empty()).then(|| Assets::get(name)).flatten() {
        let cache = if name.starts_with("assets/") {
            IMMUTABLE
        } else {
            NO_CACHE
        };
        return asset(file, cache, method);
    }
    // A missing file with an extension (a stale hashed asset, a favicon) is a
    // 404, not the page: a browser would otherwise parse HTML as script.
    if name
        .rsplit('/')
        .next()
        .is_some_and(|last| last.contains('.'))
    {
        return ApiError::not_found("no such file").into_response();
    }
    match Assets::get("index.html") {
        Some(index) => {
            let mut response = asset(index, NO_CACHE, method);
            response.headers_mut().insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            );
            response
        }
        None => ApiError::not_found("the dashboard is not built into this binary").into_response(),
    }
}

fn asset(file: rust_embed::EmbeddedFile, cache: &'static str, method: Method) -> Response {
    let mime = file.metadata.mimetype();
    let length = file.data.len();
    let body = if method == Method::HEAD {
        Body::empty()
    } else {
        Body::from(file.data)
    };
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::is_server_path;

    #[test]
    fn server_prefixes_are_never_the_dashboard() {
        for path in [
            "/api",
            "/api/v1/nope",
            "/ws",
            "/metrics",
            "/docs/x",
            "/healthz",
        ] {
            assert!(is_server_path(path), "{path}");
        }
        for path in [
            "/",
            "/skus/85123A",
            "/alerts",
            "/apis",
            "/wsx",
            "/index.html",
        ] {
            assert!(!is_server_path(path), "{path}");
        }
    }
}
