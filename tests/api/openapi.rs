//! The OpenAPI document against the router, and the offline docs.

use std::collections::BTreeSet;

use axum::routing::get;
use serde_json::Value;

use crate::helpers::{Backend, TestApp};

/// Routes served but deliberately not in the API document: the Swagger UI
/// page and its assets behind the documented `GET /docs`, and the
/// dashboard's static files (`/` and what it loads).
const OUTSIDE_THE_DOCUMENT: [&str; 3] = ["/docs/", "/docs/{*rest}", "/"];

fn outside_the_document(path: &str) -> bool {
    OUTSIDE_THE_DOCUMENT.contains(&path) || path.starts_with("/assets")
}

/// `(METHOD, path)` of every explicit route of `router`. axum has no API
/// to list routes, but its `Debug` output names each route's path and its
/// `Allow` header (the methods it serves); this reads that. `HEAD` is left
/// out where `GET` serves it.
fn router_operations(router: &axum::Router) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    let path_router = text
        .split(", fallback_router:")
        .next()
        .expect("a Router's Debug output");
    let (routes, node) = path_router
        .split_once("node: Node { paths: {")
        .expect("the route table in the Router's Debug output");
    let mut paths = std::collections::HashMap::new();
    for entry in node.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): \"").expect("RouteId(n): \"path\"");
        let path = rest.split('"').next().expect("closing quote");
        paths.insert(id.to_owned(), path.to_owned());
    }
    let mut out = BTreeSet::new();
    for entry in routes.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): ").expect("RouteId(n): endpoint");
        let path = paths
            .get(id)
            .unwrap_or_else(|| panic!("a path for route {id}"));
        if outside_the_document(path) {
            continue;
        }
        let methods = match rest.split_once("allow_header: Bytes(b\"") {
            Some((_, allow)) => allow.split('"').next().unwrap_or("").to_owned(),
            // A nested service: every method.
            None => "ANY".to_owned(),
        };
        let methods: Vec<&str> = methods.split(',').filter(|m| !m.is_empty()).collect();
        for method in &methods {
            if *method == "HEAD" && methods.contains(&"GET") {
                continue;
            }
            out.insert(((*method).to_owned(), path.clone()));
        }
    }
    assert!(!out.is_empty(), "no routes read from {text}");
    out
}

fn document_operations() -> BTreeSet<(String, String)> {
    let doc = skuwatch::http::openapi::document();
    skuwatch::http::openapi::operations(&doc)
        .into_iter()
        .collect()
}

/// What only one side has, as readable lines; empty when they agree.
fn differences(
    router: &BTreeSet<(String, String)>,
    document: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let mut out: Vec<String> = router
        .difference(document)
        .map(|(m, p)| format!("{m} {p} is routed but not in the OpenAPI document"))
        .collect();
    out.extend(
        document
            .difference(router)
            .map(|(m, p)| format!("{m} {p} is in the OpenAPI document but not routed")),
    );
    out
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document_and_every_operation_is_routed() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let router = skuwatch::http::router(
        app.app().state().clone(),
        Some(skuwatch::metrics::install()),
    );
    let routed = router_operations(&router);
    let documented = document_operations();
    let problems = differences(&routed, &documented);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(routed.contains(&("PATCH".into(), "/api/v1/skus/{sku}".into())));
    assert!(routed.contains(&("GET".into(), "/ws".into())));

    // The comparison can fail, both ways.
    let extra = router.route("/api/v1/undocumented", get(|| async { "x" }));
    let problems = differences(&router_operations(&extra), &documented);
    assert_eq!(
        problems,
        ["GET /api/v1/undocumented is routed but not in the OpenAPI document"]
    );
    let mut more = documented.clone();
    more.insert(("DELETE".into(), "/api/v1/skus/{sku}".into()));
    let problems = differences(&routed, &more);
    assert_eq!(
        problems,
        ["DELETE /api/v1/skus/{sku} is in the OpenAPI document but not routed"]
    );
}

#[tokio::test]
async fn the_served_document_is_openapi_3_1_with_bearer_auth_and_problem_errors() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let response = reqwest::get(app.url("/openapi.json")).await.expect("get");
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.expect("json");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let create = &doc["paths"]["/api/v1/skus"]["post"];
    assert_eq!(create["security"][0]["bearer"], serde_json::json!([]));
    for status in ["400", "401", "403", "409", "413", "415", "422", "503"] {
        let reference = create["responses"][status]["$ref"].as_str().unwrap_or("");
        let name = reference.rsplit('/').next().unwrap_or("");
        let problem = &doc["components"]["responses"][name]["content"]["application/problem+json"];
        assert!(problem.is_object(), "POST /skus {status}: {reference}");
    }
    let adjust = &doc["paths"]["/api/v1/skus/{sku}/stock/adjustments"]["post"];
    let headers: Vec<&str> = adjust["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .filter(|p| p["in"] == "header")
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(headers, ["Idempotency-Key", "If-Match"]);
    let get = &doc["paths"]["/api/v1/skus/{sku}"]["get"];
    assert!(get["responses"]["200"]["headers"]["ETag"].is_object());
    let ws = doc["paths"]["/ws"]["get"]["description"]
        .as_str()
        .expect("ws description");
    for word in [
        "subscribe",
        "snapshot",
        "4401",
        "4408",
        "1009",
        "\"type\": \"error\"",
    ] {
        assert!(ws.contains(word), "the /ws description explains {word}");
    }
}

#[tokio::test]
async fn docs_are_served_from_the_binary_with_persistent_authorization() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let page = reqwest::get(app.url("/docs/")).await.expect("get");
    assert_eq!(page.status(), 200);
    let html = page.text().await.expect("html");
    assert!(html.contains("swagger-ui-bundle.js"));
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "no asset comes from elsewhere: {html}"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let response = reqwest::get(app.url(&format!("/docs/{asset}")))
            .await
            .expect("asset");
        assert_eq!(response.status(), 200, "{asset}");
        let body = response.text().await.expect("body");
        assert!(body.len() > 100, "{asset}");
        if asset == "swagger-initializer.js" {
            assert!(body.contains("/openapi.json"), "{body}");
            assert!(body.contains("\"persistAuthorization\": true"), "{body}");
        }
    }
}
