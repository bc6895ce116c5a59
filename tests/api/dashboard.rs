//! `GET /`: the embedded dashboard (README, "Dashboard").

use crate::helpers::{Backend, TestApp};

#[tokio::test]
async fn the_dashboard_is_served_with_its_types_and_cache_rules() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let index = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(index.status(), 200);
    assert_eq!(index.headers()["content-type"], "text/html");
    assert_eq!(index.headers()["cache-control"], "no-cache");
    assert!(index.headers().contains_key("content-security-policy"));
    let html = index.text().await.unwrap();
    let script = html
        .split("src=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("index.html names its script");
    assert!(script.starts_with("/assets/"), "{script}");

    let asset = app.client.get(app.url(script)).send().await.unwrap();
    assert_eq!(asset.status(), 200);
    assert_eq!(asset.headers()["content-type"], "text/javascript");
    assert_eq!(
        asset.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );

    // Client routes get the page; a missing file does not.
    let route = app
        .client
        .get(app.url("/skus/85123A"))
        .send()
        .await
        .unwrap();
    assert_eq!(route.status(), 200);
    assert_eq!(route.text().await.unwrap(), html);
    let missing = app
        .client
        .get(app.url("/assets/nope-123.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn server_paths_keep_their_problem_documents() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    // (`/docs/*` belongs to Swagger UI, which answers its own 404s.)
    for path in ["/api/v1/nope", "/api", "/metrics/x", "/ws/x"] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let post = app.client.post(app.url("/")).send().await.unwrap();
    assert_eq!(post.status(), 405);
}
