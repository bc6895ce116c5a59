//! Issue 13, faults 9 and 10: the URLs the server writes, and every header,
//! claim and parameter it parses, against the standard that defines it
//! (README, Standards and leniencies).

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{client_with, login, Backend, TestApp, JWT_SECRET};

/// RFC 3986 §2.3 unreserved characters, plus `%` (an encoded octet) and `/`.
fn only_unreserved_or_encoded(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~%/".contains(&b))
}

/// Encodes a path segment or query value the way a careful client does.
fn encode(text: &str) -> String {
    const SET: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, SET).to_string()
}

/// Codes with unreserved characters, sub-delimiters, `%`, `?`, `#`, `:`,
/// `@` and non-ASCII (whitespace and `/` are refused by the code rules).
const CODES: [&str; 11] = [
    "MUG-01",
    "a.b_c~d-1",
    "50%",
    "A?B",
    "A#1",
    "A+B",
    "x&y=z;w",
    "(1)!*'$,",
    "a:b@c",
    "ÉTÉ-ß",
    "杯子~1",
];

both_backends!(
    location_leaves_unreserved_characters_alone_and_round_trips,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        for code in CODES {
            let response = app
                .client
                .post(app.url("/api/v1/skus"))
                .json(&json!({"sku": code, "name": "Mug", "currency": "GBP", "price": "4.95"}))
                .send()
                .await
                .expect("create");
            assert_eq!(response.status(), 201, "{code}");
            let location = response
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .expect("a Location")
                .to_owned();
            assert_eq!(
                location,
                format!("/api/v1/skus/{}", encode(code)),
                "{code}: unreserved characters stay, everything else is encoded"
            );
            assert!(only_unreserved_or_encoded(&location), "{location}");
            // Following the Location gives the SKU back, and so do its
            // sub-resources on the same path.
            let (status, body) = get_json(&app.client, &app.url(&location)).await;
            assert_eq!(status, 200, "GET {location}");
            assert_eq!(body["sku"], code);
            let (status, body) =
                get_json(&app.client, &app.url(&format!("{location}/history"))).await;
            assert_eq!(status, 200, "{location}/history: {body}");
        }
        assert_eq!(
            app.client
                .post(app.url("/api/v1/skus"))
                .json(&json!({"sku": "MUG-01", "name": "Mug", "currency": "GBP", "price": "1"}))
                .send()
                .await
                .expect("create")
                .status(),
            409
        );
        // The SKU list's opaque cursor, sent back as an encoded query value,
        // pages through every code exactly once.
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut url = app.url("/api/v1/skus?limit=2");
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={}", encode(c)));
            }
            let (status, page) = get_json(&app.client, &url).await;
            assert_eq!(status, 200, "{page}");
            for item in page["items"].as_array().expect("items") {
                seen.push(item["sku"].as_str().expect("sku").to_owned());
            }
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        let mut expected: Vec<String> = CODES.iter().map(|c| (*c).to_owned()).collect();
        expected.sort();
        assert_eq!(seen, expected);
        // A cursor the server did not write names its field.
        let (status, body) = get_json(&app.client, &app.url("/api/v1/skus?cursor=zz%2F")).await;
        assert_eq!(status, 422);
        assert_eq!(body["errors"][0]["field"], "cursor", "{body}");
    }
);

async fn get_json(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let response = client.get(url).send().await.expect("get");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

/// `PUT /skus/{sku}/stock` with the given `If-Match` field lines.
async fn put_stock(app: &TestApp, sku: &str, if_match: &[&str], stock: i64) -> (u16, Value) {
    let mut request = app
        .client
        .put(app.url(&format!("/api/v1/skus/{sku}/stock")))
        .json(&json!({ "stock": stock }));
    for value in if_match {
        request = request.header("If-Match", *value);
    }
    let response = request.send().await.expect("put");
    (
        response.status().as_u16(),
        response.json().await.unwrap_or(Value::Null),
    )
}

both_backends!(
    if_match_is_rfc_9110_strong_comparison_over_a_list,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("IM", "GBP", "1.00", 10).await;
        // Version 1. A weak tag never matches for If-Match (RFC 9110
        // §13.1.1, §8.8.3.2), nor does a well-formed tag this server does
        // not write: 412, and nothing changes.
        for stale in [
            &["W/\"1\""][..],
            &["\"abc\""],
            &["\"01\""],
            &["\"2\", W/\"1\""],
        ] {
            let (status, body) = put_stock(&app, "IM", stale, 3).await;
            assert_eq!(status, 412, "{stale:?}: {body}");
            assert_eq!(body["type"], "version_mismatch");
            assert_eq!(body["current_version"], 1, "{body}");
        }
        assert_eq!(app.get_sku("IM").await.1["version"], 1);
        // A list matches when any strong tag does; several fields are one
        // list (§5.3); empty elements are skipped (§5.6.1).
        assert_eq!(put_stock(&app, "IM", &["\"5\", \"1\""], 4).await.0, 200);
        assert_eq!(
            put_stock(&app, "IM", &["\"7\"", " , \"2\""], 5).await.0,
            200
        );
        // `*`: the SKU exists, so it goes ahead.
        assert_eq!(put_stock(&app, "IM", &["*"], 6).await.0, 200);
        // An entity-tag may hold a comma.
        assert_eq!(put_stock(&app, "IM", &["\"a,4\", \"4\""], 7).await.0, 200);
        // Leniency: a bare version is the strong tag.
        assert_eq!(put_stock(&app, "IM", &["5"], 8).await.0, 200);
        // Malformed: 422 naming If-Match, nothing changed.
        for malformed in [
            "\"6",
            "6\"",
            "*, \"6\"",
            "W/6",
            "\"6\" \"6\"",
            "w/\"6\"",
            "\"6\";q=1",
        ] {
            let (status, body) = put_stock(&app, "IM", &[malformed], 9).await;
            assert_eq!(status, 422, "{malformed}: {body}");
            assert_eq!(body["errors"][0]["field"], "If-Match", "{body}");
        }
        let (_, sku) = app.get_sku("IM").await;
        assert_eq!(
            (sku["version"].as_i64(), sku["stock"].as_i64()),
            (Some(6), Some(8))
        );
        // The same rules on the other routes that take If-Match.
        let adjust = app
            .client
            .post(app.url("/api/v1/skus/IM/stock/adjustments"))
            .header("If-Match", "W/\"6\"")
            .json(&json!({ "delta": -1 }))
            .send()
            .await
            .expect("adjust");
        assert_eq!(adjust.status(), 412);
        let patch = app
            .client
            .patch(app.url("/api/v1/skus/IM"))
            .header("If-Match", "\"5\", \"6\"")
            .json(&json!({ "name": "Renamed" }))
            .send()
            .await
            .expect("patch");
        assert_eq!(patch.status(), 200);
        // GET evaluates If-Match (412) and If-None-Match (304, weak
        // comparison, with the ETag).
        let get = |value: (&'static str, &'static str)| {
            app.client
                .get(app.url("/api/v1/skus/IM"))
                .header(value.0, value.1)
                .send()
        };
        assert_eq!(get(("If-Match", "\"3\"")).await.expect("get").status(), 412);
        assert_eq!(get(("If-Match", "\"7\"")).await.expect("get").status(), 200);
        for hit in ["\"7\"", "W/\"7\"", "\"1\", \"7\"", "*"] {
            let response = app
                .client
                .get(app.url("/api/v1/skus/IM"))
                .header("If-None-Match", hit)
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), 304, "{hit}");
            assert_eq!(response.headers()["etag"], "\"7\"");
        }
        assert_eq!(
            get(("If-None-Match", "\"6\"")).await.expect("get").status(),
            200
        );
        // A precondition on a SKU that does not exist: 404 (RFC 9110
        // §13.2.1: preconditions are ignored when the answer would not be
        // 2xx or 412 anyway).
        assert_eq!(put_stock(&app, "NOPE", &["\"1\""], 1).await.0, 404);
    }
);

both_backends!(
    a_precondition_a_route_does_not_evaluate_is_refused_not_ignored,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("PC", "GBP", "1.00", 10).await;
        let batch = json!({"adjustments": [{"sku": "PC", "delta": -1}]});
        for (header, value) in [
            ("If-Match", "\"1\""),
            ("If-None-Match", "*"),
            ("If-Unmodified-Since", "Sun, 29 Nov 2026 10:00:00 GMT"),
        ] {
            let response = app
                .client
                .post(app.url("/api/v1/stock/adjustments"))
                .header(header, value)
                .json(&batch)
                .send()
                .await
                .expect("batch");
            assert_eq!(response.status(), 422, "{header}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["errors"][0]["field"], header, "{body}");
        }
        let create = app
            .client
            .post(app.url("/api/v1/skus"))
            .header("If-Match", "*")
            .json(&json!({"sku": "PC2", "name": "x", "currency": "GBP", "price": "1"}))
            .send()
            .await
            .expect("create");
        assert_eq!(create.status(), 422);
        let put = app
            .client
            .put(app.url("/api/v1/skus/PC/stock"))
            .header("If-None-Match", "\"1\"")
            .json(&json!({ "stock": 1 }))
            .send()
            .await
            .expect("put");
        assert_eq!(put.status(), 422);
        // Nothing was written.
        let (_, sku) = app.get_sku("PC").await;
        assert_eq!(
            (sku["version"].as_i64(), sku["stock"].as_i64()),
            (Some(1), Some(10))
        );
        assert_eq!(app.get_sku("PC2").await.0, 404);
        // On reads, the validators the server does not keep are ignored.
        let list = app
            .client
            .get(app.url("/api/v1/skus"))
            .header("If-None-Match", "\"1\"")
            .header("If-Modified-Since", "Sun, 29 Nov 2026 10:00:00 GMT")
            .send()
            .await
            .expect("list");
        assert_eq!(list.status(), 200);
    }
);

both_backends!(
    idempotency_keys_are_per_user_and_quoted_keys_are_the_same_key,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("IK", "GBP", "1.00", 10).await;
        let created = app
            .client
            .post(app.url("/api/v1/users"))
            .json(&json!({"username": "bob", "password": "bob-password-1", "role": "admin"}))
            .send()
            .await
            .expect("user");
        assert_eq!(created.status(), 201);
        let bob = client_with(&login(&app.base, "bob", "bob-password-1").await);
        let adjust = |client: &reqwest::Client, key: &str| {
            client
                .post(app.url("/api/v1/skus/IK/stock/adjustments"))
                .header("Idempotency-Key", key)
                .json(&json!({ "delta": -1, "reason": "sale" }))
                .send()
        };
        let first = adjust(&app.client, "order-1").await.expect("admin");
        assert_eq!(first.status(), 200);
        // Bob's own key "order-1" is his own request: it is applied, and he
        // is not handed the admin's answer.
        let other = adjust(&bob, "order-1").await.expect("bob");
        assert_eq!(other.status(), 200);
        assert!(other.headers().get("idempotent-replayed").is_none());
        assert_eq!(app.get_sku("IK").await.1["stock"], 8);
        // The same user's retry, bare or as an RFC 8941 string, is a replay.
        for retry in ["order-1", "\"order-1\""] {
            let replay = adjust(&app.client, retry).await.expect("retry");
            assert_eq!(replay.status(), 200, "{retry}");
            assert_eq!(replay.headers()["idempotent-replayed"], "true", "{retry}");
        }
        let replay = adjust(&bob, " \"order-1\" ").await.expect("retry");
        assert_eq!(replay.headers()["idempotent-replayed"], "true");
        assert_eq!(app.get_sku("IK").await.1["stock"], 8);
        // A quoted key may hold spaces and escapes; malformed ones are 422.
        let spaced = adjust(&app.client, "\"order 2 \\\"a\\\"\"")
            .await
            .expect("spaced");
        assert_eq!(spaced.status(), 200);
        for bad in ["\"open", "\"a\"b\"", "\"bad\\n\"", "\"\"", "a b"] {
            let response = adjust(&app.client, bad).await.expect("bad");
            assert_eq!(response.status(), 422, "{bad}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(
                body["errors"][0]["field"], "Idempotency-Key",
                "{bad}: {body}"
            );
        }
        assert_eq!(app.get_sku("IK").await.1["stock"], 7);
    }
);

both_backends!(
    authorization_scheme_is_case_insensitive_and_every_401_challenges,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let plain = reqwest::Client::new();
        for value in [
            format!("Bearer {}", app.token),
            format!("bearer {}", app.token),
            format!("BEARER {}", app.token),
            format!("Bearer   {}", app.token),
        ] {
            let response = plain
                .get(app.url("/api/v1/summary"))
                .header("Authorization", value.clone())
                .send()
                .await
                .expect("get");
            assert_eq!(response.status(), 200, "{}", &value[..10]);
        }
        for value in [
            None,
            Some("Basic YWRtaW46eA==".to_owned()),
            Some("Bearer".to_owned()),
            Some(format!("Bearer {}x", app.token)),
            Some(format!("Token {}", app.token)),
        ] {
            let mut request = plain.get(app.url("/api/v1/summary"));
            if let Some(value) = &value {
                request = request.header("Authorization", value);
            }
            let response = request.send().await.expect("get");
            assert_eq!(response.status(), 401);
            let challenge = response
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(
                challenge.starts_with("Bearer"),
                "a 401 names its scheme: {challenge:?}"
            );
        }
    }
);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn token(claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()).expect("key"),
    )
    .expect("sign")
}

fn claims(changes: &[(&str, Value)]) -> Value {
    let mut claims = json!({ "sub": "admin", "role": "admin", "iss": "skuwatch",
        "aud": "skuwatch-api", "iat": now(), "exp": now() + 600, "jti": "t-1" });
    for (key, value) in changes {
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(*key);
        } else {
            claims[*key] = value.clone();
        }
    }
    claims
}

both_backends!(jwt_claims_follow_rfc_7519, |backend: Backend| async move {
    let app = TestApp::spawn(backend).await;
    let status = |claims: Value| {
        let client = client_with(&token(&claims));
        let url = app.url("/api/v1/summary");
        async move { client.get(url).send().await.expect("get").status().as_u16() }
    };
    // `aud` may be an array (RFC 7519 §4.1.3) with ours in it; NumericDate
    // may have a fraction (§2); iat, nbf and jti are optional (§4.1).
    for accepted in [
        claims(&[("aud", json!(["other-api", "skuwatch-api"]))]),
        claims(&[("aud", json!(["skuwatch-api"]))]),
        claims(&[
            ("exp", json!(now() as f64 + 600.5)),
            ("iat", json!(now() as f64 + 0.25)),
        ]),
        claims(&[("iat", Value::Null), ("jti", Value::Null)]),
        claims(&[("nbf", json!(now() - 5))]),
        // Expired, but within the 30 s leeway for clock skew.
        claims(&[("exp", json!(now() - 10))]),
        claims(&[("nbf", json!(now() + 10))]),
    ] {
        assert_eq!(status(accepted.clone()).await, 200, "{accepted}");
    }
    for refused in [
        claims(&[("aud", json!(["other-api"]))]),
        claims(&[("aud", json!([]))]),
        claims(&[("aud", Value::Null)]),
        claims(&[("sub", Value::Null)]),
        claims(&[("iss", Value::Null)]),
        claims(&[("role", Value::Null)]),
        claims(&[("role", json!("Admin"))]),
        claims(&[("exp", json!("soon"))]),
        claims(&[("exp", json!(-1))]),
        claims(&[("exp", json!(now() - 120))]),
        claims(&[("nbf", json!(now() + 300))]),
        claims(&[("nbf", json!("now"))]),
    ] {
        assert_eq!(status(refused.clone()).await, 401, "{refused}");
    }
});

both_backends!(
    content_type_parameters_and_case_per_rfc_9110,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("CT", "GBP", "1.00", 100).await;
        let send = |content_type: &'static str| {
            app.client
                .post(app.url("/api/v1/skus/CT/stock/adjustments"))
                .header("content-type", content_type)
                .body(r#"{"delta": -1}"#)
                .send()
        };
        for accepted in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
            "application/json ; charset=utf-8",
            "application/json; charset=us-ascii",
            "application/merge-patch+json",
            "text/json",
        ] {
            let response = send(accepted).await.expect("send");
            assert_eq!(response.status(), 200, "{accepted}");
        }
        for refused in [
            "application/json; charset=iso-8859-1",
            "application/json; charset=utf-16",
            "text/plain",
            "application/jsonx",
            "json",
            "application/x-www-form-urlencoded",
        ] {
            let response = send(refused).await.expect("send");
            assert_eq!(response.status(), 415, "{refused}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["type"], "unsupported_media_type");
        }
        assert_eq!(app.get_sku("CT").await.1["stock"], 92);
        let import = |content_type: &'static str| {
            app.client
                .post(app.url("/api/v1/import"))
                .header("content-type", content_type)
                .body("sku,name,price,currency\nCSV-1,Mug,1.00,GBP\n")
                .send()
        };
        for accepted in [
            "text/csv",
            "TEXT/CSV; charset=UTF-8",
            "text/csv; header=present",
        ] {
            assert_eq!(
                import(accepted).await.expect("import").status(),
                200,
                "{accepted}"
            );
        }
        assert_eq!(
            import("text/csv; charset=windows-1252")
                .await
                .expect("import")
                .status(),
            415
        );
    }
);

/// A history point's `at` shifted into another offset, e.g. `+02:00`.
fn in_offset(at: &str, hours: i32, z: &str) -> String {
    let utc = chrono::DateTime::parse_from_rfc3339(at).expect("at");
    let offset = chrono::FixedOffset::east_opt(hours * 3600).expect("offset");
    let local = utc.with_timezone(&offset);
    if hours == 0 {
        local
            .format(&format!("%Y-%m-%dt%H:%M:%S%.6f{z}"))
            .to_string()
    } else {
        local.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string()
    }
}

both_backends!(
    history_dates_take_rfc_3339_offsets_and_precision,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("HD", "GBP", "1.00", 10).await;
        for _ in 0..3 {
            assert_eq!(app.adjust("HD", -1).await.0, 200);
        }
        let history = |query: String| {
            let url = app.url(&format!("/api/v1/skus/HD/history?field=stock&{query}"));
            let client = app.client.clone();
            async move { get_json(&client, &url).await }
        };
        let (status, all) = history(String::new()).await;
        assert_eq!(status, 200);
        let points = all["points"].as_array().expect("points").clone();
        assert_eq!(points.len(), 4, "{all}");
        let second = points[1]["at"].as_str().expect("at").to_owned();
        let versions = |body: &Value| -> Vec<i64> {
            body["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| p["version"].as_i64().expect("version"))
                .collect()
        };
        // The same instant in UTC, +02:00, -05:30 and lower-case t/z.
        for from in [
            second.clone(),
            in_offset(&second, 2, ""),
            in_offset(&second, -5, ""),
            in_offset(&second, 0, "z"),
            second.replace('Z', "000Z"),
        ] {
            let (status, body) = history(format!("from={}", encode(&from))).await;
            assert_eq!(status, 200, "{from}: {body}");
            assert_eq!(versions(&body), [2, 3, 4], "from={from}");
            let (status, body) = history(format!("to={}", encode(&from))).await;
            assert_eq!(status, 200, "{from}: {body}");
            assert_eq!(versions(&body), [1, 2], "to={from}");
        }
        // A bound finer than a microsecond rounds inwards: one nanosecond
        // after the point excludes it from `from`, keeps it in `to`.
        let just_after = second.replace('Z', "001Z");
        let (_, body) = history(format!("from={}", encode(&just_after))).await;
        assert_eq!(versions(&body), [3, 4]);
        let (_, body) = history(format!("to={}", encode(&just_after))).await;
        assert_eq!(versions(&body), [1, 2]);
        // Leniency: an unencoded `+` (a space after form decoding).
        let plus = in_offset(&second, 2, "");
        assert!(plus.contains('+'));
        let (status, body) = history(format!("from={plus}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(versions(&body), [2, 3, 4]);
        // No offset, no time, or nonsense: 422 naming the field.
        for bad in [
            "2026-11-29",
            "2026-11-29T10:00:00",
            "2026-11-29T10:00:00+2",
            "yesterday",
            "2026-13-01T00:00:00Z",
        ] {
            let (status, body) = history(format!("from={}", encode(bad))).await;
            assert_eq!(status, 422, "{bad}");
            assert_eq!(body["errors"][0]["field"], "from", "{bad}: {body}");
        }
    }
);

both_backends!(
    query_parameter_errors_name_the_parameter,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("QP", "GBP", "1.00", 10).await;
        for (query, field) in [
            ("/api/v1/skus?limit=abc", "limit"),
            ("/api/v1/skus?limit=0", "limit"),
            ("/api/v1/skus?limit=1001", "limit"),
            ("/api/v1/skus?limit=1.5", "limit"),
            ("/api/v1/skus?limit=5&limit=6", "limit"),
            ("/api/v1/skus?below_threshold=yes", "below_threshold"),
            ("/api/v1/skus?colour=red", "colour"),
            ("/api/v1/alerts?limit=-1", "limit"),
            ("/api/v1/skus/QP/history?limit=x", "limit"),
            ("/api/v1/skus/QP/history?field=name", "field"),
        ] {
            let (status, body) = get_json(&app.client, &app.url(query)).await;
            assert_eq!(status, 422, "{query}: {body}");
            assert_eq!(body["errors"][0]["field"], field, "{query}: {body}");
        }
        let (status, _) = get_json(&app.client, &app.url("/api/v1/skus?limit=%2B5")).await;
        assert_eq!(status, 200, "+5 is a valid integer");
    }
);

// Found by schemathesis on the merged work: a method the route does not
// serve is answered 405 even with a precondition (the refusal above is for
// routes that act), and an empty `If-Match` is malformed (422), not a
// precondition that fails (412).
both_backends!(
    preconditions_on_undeclared_methods_get_405_and_an_empty_if_match_422,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("PU", "GBP", "1.00", 10).await;
        for method in ["TRACE", "DELETE", "POST"] {
            let response = app
                .client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).expect("method"),
                    app.url("/api/v1/skus/PU/stock"),
                )
                .header("If-Match", "*")
                .json(&json!({ "stock": 1 }))
                .send()
                .await
                .expect("request");
            assert_eq!(response.status(), 405, "{method}");
        }
        for value in ["", " , "] {
            let response = app
                .client
                .post(app.url("/api/v1/skus/PU/stock/adjustments"))
                .header("If-Match", value)
                .json(&json!({ "delta": -1 }))
                .send()
                .await
                .expect("adjust");
            assert_eq!(response.status(), 422, "If-Match {value:?}");
            let body: Value = response.json().await.expect("json");
            assert_eq!(body["errors"][0]["field"], "If-Match", "{body}");
        }
        assert_eq!(app.db_stock("PU").await.0, 10);
    }
);
