//! Money exactness and hostile input: always a 4xx problem document, never
//! a 500, and nothing changed.

use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(
    jpy_usd_and_kwd_prices_round_trip_exactly,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        for (sku, currency, price) in [
            ("J", "JPY", "1980"),
            ("U", "USD", "19.99"),
            ("K", "KWD", "1.250"),
        ] {
            assert_eq!(
                app.create_sku(sku, currency, price, 1).await["price"],
                price
            );
            assert_eq!(app.get_sku(sku).await.1["price"], price);
        }
        let response = app
            .client
            .put(app.url("/api/v1/skus/U/price"))
            .json(&json!({ "price": 19.5 }))
            .send()
            .await
            .expect("put");
        assert_eq!(response.status(), 200, "an exact JSON number is accepted");
        assert_eq!(
            response.json::<Value>().await.expect("json")["price"],
            "19.50"
        );
    }
);

async fn problem(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let body: Value = response.json().await.expect("a JSON problem document");
    assert_eq!(
        content_type.as_deref(),
        Some("application/problem+json"),
        "{body}"
    );
    assert_eq!(body["status"].as_u64(), Some(u64::from(status)), "{body}");
    (status, body)
}

both_backends!(
    too_precise_prices_are_field_errors,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        for (currency, price) in [
            ("USD", json!("19.999")),
            ("JPY", json!("1000.5")),
            ("USD", json!(19.999)),
            ("GBP", json!("2.550")),
        ] {
            let response = app
                .client
                .post(app.url("/api/v1/skus"))
                .json(&json!({ "sku": "X", "name": "x", "currency": currency, "price": price }))
                .send()
                .await
                .expect("post");
            let (status, body) = problem(response).await;
            assert_eq!(status, 422);
            assert_eq!(body["type"], "validation");
            assert_eq!(body["errors"][0]["field"], "price", "{body}");
        }
        assert_eq!(app.get_sku("X").await.0, 404);
    }
);

both_backends!(
    bad_input_of_every_kind_is_a_4xx_problem_and_changes_nothing,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| s.body_limit_bytes = 64 * 1024).await;
        app.create_sku("OK1", "GBP", "2.55", 10).await;
        let before = app.all_events().await.len();
        let adjust_url = app.url("/api/v1/skus/OK1/stock/adjustments");
        let json_post = |url: String, body: &'static str| {
            app.client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
        };
        // The huge body is refused before it is read, so the server closes
        // that connection (RFC 9112 9.6); `connection: close` keeps the
        // client from handing the closing connection to the next request
        // (seen as `IncompleteMessage`, not as an answer of the server).
        let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        ("malformed JSON", json_post(adjust_url.clone(), "{\"delta\": -1").await.unwrap(), 400, "malformed_json"),
        ("trailing garbage", json_post(adjust_url.clone(), "{\"delta\": -1} x").await.unwrap(), 400, "malformed_json"),
        ("wrong type", json_post(adjust_url.clone(), "{\"delta\": \"-1\"}").await.unwrap(), 422, "validation"),
        ("float delta", json_post(adjust_url.clone(), "{\"delta\": 1.5}").await.unwrap(), 422, "validation"),
        ("unknown field", json_post(adjust_url.clone(), "{\"delta\": -1, \"colour\": 1}").await.unwrap(), 422, "validation"),
        ("zero delta", json_post(adjust_url.clone(), "{\"delta\": 0}").await.unwrap(), 422, "validation"),
        ("overflowing delta", json_post(adjust_url.clone(), "{\"delta\": 99999999999999999999}").await.unwrap(), 422, "validation"),
        ("not JSON", app.client.post(adjust_url.clone()).header("content-type", "text/plain").body("-1").send().await.unwrap(), 415, "unsupported_media_type"),
        ("huge body", app.client.post(adjust_url.clone()).header("content-type", "application/json").header("connection", "close").body(format!("{{\"delta\": -1, \"reason\": \"{}\"}}", "x".repeat(200_000))).send().await.unwrap(), 413, "payload_too_large"),
        ("bad SKU code in path", app.client.post(app.url("/api/v1/skus/a%20b/stock/adjustments")).json(&json!({"delta": -1})).send().await.unwrap(), 422, "validation"),
        ("SKU code too long", app.client.get(app.url(&format!("/api/v1/skus/{}", "a".repeat(65)))).send().await.unwrap(), 422, "validation"),
        ("unknown SKU", app.client.post(app.url("/api/v1/skus/NOPE/stock/adjustments")).json(&json!({"delta": -1})).send().await.unwrap(), 404, "not_found"),
        ("negative stock", app.client.put(app.url("/api/v1/skus/OK1/stock")).json(&json!({"stock": -1})).send().await.unwrap(), 422, "validation"),
        ("zero price", app.client.put(app.url("/api/v1/skus/OK1/price")).json(&json!({"price": "0.00"})).send().await.unwrap(), 422, "validation"),
        ("negative price", app.client.put(app.url("/api/v1/skus/OK1/price")).json(&json!({"price": "-1.00"})).send().await.unwrap(), 422, "validation"),
        ("bad currency", app.client.post(app.url("/api/v1/skus")).json(&json!({"sku": "N", "name": "n", "currency": "XYZ", "price": "1"})).send().await.unwrap(), 422, "validation"),
        ("duplicate SKU", app.client.post(app.url("/api/v1/skus")).json(&json!({"sku": "OK1", "name": "n", "currency": "GBP", "price": "1"})).send().await.unwrap(), 409, "already_exists"),
        ("bad limit", app.client.get(app.url("/api/v1/skus?limit=0")).send().await.unwrap(), 422, "validation"),
        ("unknown query parameter", app.client.get(app.url("/api/v1/events?afterr=1")).send().await.unwrap(), 422, "validation"),
        ("bad cursor", app.client.get(app.url("/api/v1/skus?cursor=zz")).send().await.unwrap(), 422, "validation"),
        ("empty batch", app.client.post(app.url("/api/v1/stock/adjustments")).json(&json!({"adjustments": []})).send().await.unwrap(), 422, "validation"),
        ("batch with unknown SKU", app.client.post(app.url("/api/v1/stock/adjustments")).json(&json!({"adjustments": [{"sku": "OK1", "delta": -1}, {"sku": "NOPE", "delta": -1}]})).send().await.unwrap(), 404, "not_found"),
        ("bad history field", app.client.get(app.url("/api/v1/skus/OK1/history?field=colour")).send().await.unwrap(), 422, "validation"),
        ("bad history time", app.client.get(app.url("/api/v1/skus/OK1/history?from=yesterday")).send().await.unwrap(), 422, "validation"),
        ("bad idempotency key", app.client.post(adjust_url.clone()).header("Idempotency-Key", "x".repeat(256)).json(&json!({"delta": -1})).send().await.unwrap(), 422, "validation"),
        ("import without header", app.client.post(app.url("/api/v1/import")).header("content-type", "text/csv").body("A,b,1.00,GBP\n").send().await.unwrap(), 422, "validation"),
        ("unknown route", app.client.get(app.url("/api/v1/nothing")).send().await.unwrap(), 404, "not_found"),
        ("wrong method", app.client.delete(app.url("/api/v1/skus/OK1")).send().await.unwrap(), 405, "method_not_allowed"),
    ];
        for (what, response, expected_status, expected_type) in cases {
            let (status, body) = problem(response).await;
            assert_eq!(
                (status, body["type"].as_str()),
                (expected_status, Some(expected_type)),
                "{what}: {body}"
            );
            assert!(body["detail"].is_string(), "{what}");
        }
        assert_eq!(app.all_events().await.len(), before, "nothing changed");
        assert_eq!(app.get_sku("OK1").await.1["stock"], 10);
    }
);

both_backends!(
    a_csv_import_lands_good_rows_and_reports_bad_ones_by_line,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let csv = "\u{feff}sku,name,price,currency,stock,low_stock_threshold\r\n\
               85123A,\"WHITE HANGING HEART T-LIGHT HOLDER, LARGE\",2.55,GBP,120,5\r\n\
               BAD CODE,x,1.00,GBP,1,\r\n\
               22423,\"REGENCY \"\"CAKESTAND\"\" 3 TIER\",12.75,GBP,,\r\n\
               X1,too precise,2.555,GBP,1,\r\n";
        let import = |body: &'static str| {
            app.client
                .post(app.url("/api/v1/import"))
                .header("content-type", "text/csv")
                .body(body)
                .send()
        };
        let report: Value = import(csv)
            .await
            .expect("import")
            .json()
            .await
            .expect("json");
        assert_eq!(report["created"], 2, "{report}");
        assert_eq!(
            report["errors"].as_array().map(|e| e
                .iter()
                .map(|x| x["line"].as_u64().unwrap_or(0))
                .collect::<Vec<_>>()),
            Some(vec![3, 5])
        );
        let heart = app.get_sku("85123A").await.1;
        assert_eq!(
            (
                heart["name"].as_str(),
                heart["stock"].as_i64(),
                heart["low_stock_threshold"].as_i64()
            ),
            (
                Some("WHITE HANGING HEART T-LIGHT HOLDER, LARGE"),
                Some(120),
                Some(5)
            )
        );
        assert_eq!(
            app.get_sku("22423").await.1["name"],
            "REGENCY \"CAKESTAND\" 3 TIER"
        );
        let again: Value = import(csv)
            .await
            .expect("import")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (
                again["created"].as_u64(),
                again["updated"].as_u64(),
                again["unchanged"].as_u64()
            ),
            (Some(0), Some(0), Some(2))
        );
        let update: Value = import("sku,name,price,currency,stock\n85123A,HEART,2.95,GBP,100\n")
            .await
            .expect("import")
            .json()
            .await
            .expect("json");
        assert_eq!(update["updated"], 1);
        let heart = app.get_sku("85123A").await.1;
        assert_eq!(
            (heart["price"].as_str(), heart["stock"].as_i64()),
            (Some("2.95"), Some(100))
        );
    }
);

both_backends!(
    listing_pages_through_the_catalog_in_code_order,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        for sku in ["b", "A", "a", "B2", "Z"] {
            app.create_sku(sku, "GBP", "1.00", if sku == "Z" { 3 } else { 50 })
                .await;
        }
        let mut cursor: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let url = match &cursor {
                Some(c) => app.url(&format!("/api/v1/skus?limit=2&cursor={c}")),
                None => app.url("/api/v1/skus?limit=2"),
            };
            let page: Value = app
                .client
                .get(url)
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            seen.extend(
                page["items"]
                    .as_array()
                    .expect("items")
                    .iter()
                    .map(|s| s["sku"].as_str().unwrap_or("").to_owned()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen, ["A", "B2", "Z", "a", "b"]);
        let low: Value = app
            .client
            .get(app.url("/api/v1/skus?below_threshold=true"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(low["items"].as_array().map(Vec::len), Some(1));
        let q: Value = app
            .client
            .get(app.url("/api/v1/skus?q=ITEM%20b"))
            .send()
            .await
            .expect("list")
            .json()
            .await
            .expect("json");
        assert_eq!(
            q["items"]
                .as_array()
                .map(|i| i.iter().map(|s| s["sku"].clone()).collect::<Vec<_>>()),
            Some(vec![json!("B2"), json!("b")])
        );
    }
);

both_backends!(
    search_folds_unicode_case_and_refuses_control_characters,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let created = app.client.post(app.url("/api/v1/skus")).json(&json!({"sku": "CAFE1", "name": "CAFÉ Ünïcode Mug", "currency": "EUR", "price": "4.50"})).send().await.expect("create");
        assert_eq!(created.status(), 201);
        for q in ["caf%C3%A9", "CAF%C3%89", "%C3%BCn%C3%AFcode", "cafe1"] {
            let page: Value = app
                .client
                .get(app.url(&format!("/api/v1/skus?q={q}")))
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "q={q}");
        }
        let nul = app
            .client
            .get(app.url("/api/v1/skus?q=%00"))
            .send()
            .await
            .expect("list");
        assert_eq!(nul.status(), 422);
    }
);

both_backends!(
    a_partial_price_guard_keeps_the_fields_it_does_not_name,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let created: Value = app.client.post(app.url("/api/v1/skus")).json(&json!({"sku": "G", "name": "g", "currency": "GBP", "price": "2.55", "price_guard": {"min_price": "0.50"}})).send().await.expect("create").json().await.expect("json");
        assert_eq!(
            created["price_guard"],
            json!({"max_change_pct": 50, "min_price": "0.50", "max_price": null})
        );
        let patched: Value = app
            .client
            .patch(app.url("/api/v1/skus/G"))
            .json(&json!({"price_guard": {"max_price": "9.00"}}))
            .send()
            .await
            .expect("patch")
            .json()
            .await
            .expect("json");
        assert_eq!(
            patched["price_guard"],
            json!({"max_change_pct": 50, "min_price": "0.50", "max_price": "9.00"})
        );
        let cleared: Value = app
            .client
            .patch(app.url("/api/v1/skus/G"))
            .json(&json!({"price_guard": {"max_change_pct": null}}))
            .send()
            .await
            .expect("patch")
            .json()
            .await
            .expect("json");
        assert_eq!(cleared["price_guard"]["max_change_pct"], Value::Null);
        assert_eq!(cleared["price_guard"]["min_price"], "0.50");
    }
);

both_backends!(
    a_batch_naming_a_sku_twice_reports_its_real_stock_and_total,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("DUP", "GBP", "1.00", 3).await;
        let lines: Vec<Value> = (0..6).map(|_| json!({"sku": "DUP", "delta": -1})).collect();
        let response = app
            .client
            .post(app.url("/api/v1/stock/adjustments"))
            .json(&json!({"adjustments": lines}))
            .send()
            .await
            .expect("batch");
        assert_eq!(response.status(), 409);
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["skus"], json!(["DUP"]));
        assert_eq!(
            body["errors"][0]["message"],
            "SKU DUP has 3 in stock; -6 would take it below 0"
        );
        // The same idempotency key on the other adjustment route is a different request.
        let first = app
            .client
            .post(app.url("/api/v1/skus/DUP/stock/adjustments"))
            .header("Idempotency-Key", "k-1")
            .json(&json!({"delta": -1}))
            .send()
            .await
            .expect("single");
        assert_eq!(first.status(), 200);
        let other_route = app
            .client
            .post(app.url("/api/v1/stock/adjustments"))
            .header("Idempotency-Key", "k-1")
            .json(&json!({"adjustments": [{"sku": "DUP", "delta": -1}]}))
            .send()
            .await
            .expect("batch");
        assert_eq!(other_route.status(), 422);
        let padded = app
            .client
            .post(app.url("/api/v1/skus/DUP/stock/adjustments"))
            .header("Idempotency-Key", "k-2")
            .json(&json!({"delta": -1, "reason": "sale"}))
            .send()
            .await
            .expect("single");
        assert_eq!(padded.status(), 200);
        let again = app
            .client
            .post(app.url("/api/v1/skus/DUP/stock/adjustments"))
            .header("Idempotency-Key", "k-2")
            .json(&json!({"delta": -1, "reason": " sale "}))
            .send()
            .await
            .expect("single");
        assert_eq!(again.status(), 200, "the same request after trimming");
        assert_eq!(app.get_sku("DUP").await.1["stock"], 1);
    }
);

both_backends!(
    json_arrays_in_place_of_objects_are_refused,
    |backend: Backend| async move {
        // serde's derived structs accept `[field, field, ...]`; schemathesis
        // found `"price_guard": [null, null]` accepted as a guard.
        let app = TestApp::spawn(backend).await;
        app.create_sku("ARR", "GBP", "1.00", 5).await;
        let cases = [
            (
                app.client.post(app.url("/api/v1/skus")),
                json!(["ARR2", "name", "GBP", "1.00", null, null, null]),
                "body",
            ),
            (
                app.client.patch(app.url("/api/v1/skus/ARR")),
                json!({ "price_guard": [null, null] }),
                "price_guard",
            ),
            (
                app.client.post(app.url("/api/v1/stock/adjustments")),
                json!({ "adjustments": [["ARR", -1]] }),
                "adjustments",
            ),
            (
                app.client.put(app.url("/api/v1/skus/ARR/stock")),
                json!([3, "count"]),
                "body",
            ),
        ];
        for (request, body, field) in cases {
            let (status, problem) = problem(request.json(&body).send().await.expect("send")).await;
            assert_eq!(status, 422, "{body} -> {problem}");
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
        let (_, sku) = app.get_sku("ARR").await;
        assert_eq!(
            (sku["version"].as_i64(), sku["stock"].as_i64()),
            (Some(1), Some(5))
        );
        assert_eq!(app.get_sku("ARR2").await.0, 404);
    }
);

both_backends!(
    a_threshold_near_i64_max_does_not_break_the_sku,
    |backend: Backend| async move {
        // schemathesis found: the low-stock recovery level overflowed, the
        // SKU's actor panicked on every later write, and the SKU answered 503.
        let app = TestApp::spawn(backend).await;
        app.create_sku("HUGE", "GBP", "1.00", 5).await;
        let response = app
            .client
            .patch(app.url("/api/v1/skus/HUGE"))
            .json(&json!({ "low_stock_threshold": i64::MAX }))
            .send()
            .await
            .expect("patch");
        assert_eq!(response.status(), 200);
        for _ in 0..2 {
            let response = app
                .client
                .put(app.url("/api/v1/skus/HUGE/stock"))
                .json(&json!({ "stock": 7 }))
                .send()
                .await
                .expect("put");
            assert_eq!(response.status(), 200);
            assert_eq!(app.adjust("HUGE", 1).await.0, 200);
        }
    }
);
