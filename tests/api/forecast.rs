//! Days of cover (issue 18): the sales rate follows sales and returns, the
//! `stockout_forecast` alert is raised when the projected stock-out falls
//! within the lead time and resolved with hysteresis, per-SKU lead time
//! and rule are PATCHed, the re-evaluation ends the alert of a SKU that
//! stopped selling, and a missing rate is rebuilt to the very same state.

use std::time::Duration;

use serde_json::{json, Value};
use sqlx::{Connection, Executor};

use crate::both_backends;
use crate::helpers::{client_with, eventually, login, Backend, TestApp, TestDb};

/// A stock adjustment with `reason`; the answer's status and SKU.
async fn adjust(app: &TestApp, sku: &str, delta: i64, reason: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/api/v1/skus/{sku}/stock/adjustments")))
        .json(&json!({ "delta": delta, "reason": reason }))
        .send()
        .await
        .expect("adjust");
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    (status, body["sku"].clone())
}

async fn patch(app: &TestApp, sku: &str, body: Value) -> (u16, Value) {
    let response = app
        .client
        .patch(app.url(&format!("/api/v1/skus/{sku}")))
        .json(&body)
        .send()
        .await
        .expect("patch");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The SKU's active (open or acknowledged) alerts of `kind`.
async fn active(app: &TestApp, sku: &str, kind: &str) -> Vec<Value> {
    app.get_json(&format!("/api/v1/alerts?sku={sku}&limit=1000"))
        .await["alerts"]
        .as_array()
        .expect("alerts")
        .iter()
        .filter(|a| a["kind"] == kind && a["status"] != "resolved")
        .cloned()
        .collect()
}

/// `GET url` with `client`: the JSON body.
async fn get(client: &reqwest::Client, url: String) -> Value {
    client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn tenths(value: &Value) -> f64 {
    value
        .as_str()
        .unwrap_or_else(|| panic!("a decimal string: {value}"))
        .parse()
        .expect("decimal")
}

both_backends!(
    sales_raise_a_stockout_forecast_and_restocks_resolve_it_with_hysteresis,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("FC-1", "GBP", "2.50", 20).await;
        patch(&app, "FC-1", json!({ "low_stock_threshold": 0 })).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["FC-1"] }))
            .await;
        ws.send(json!({ "type": "subscribe", "alerts": true }))
            .await;

        // Four sales: a rate, but too few sales for a forecast.
        for _ in 0..4 {
            assert_eq!(adjust(&app, "FC-1", -1, "sale").await.0, 200);
        }
        let (_, sku) = app.get_sku("FC-1").await;
        assert_eq!(sku["lead_time_days"], 7, "{sku}");
        assert_eq!(sku["alert_rule"], "both", "{sku}");
        // Weighted (the older ones a little less than 1), rounded down.
        let based_on = sku["forecast"]["based_on_sales"].as_i64().unwrap();
        assert!((3..=4).contains(&based_on), "{sku}");
        assert!(sku["forecast"]["days_of_cover"].is_null(), "{sku}");
        assert!(active(&app, "FC-1", "stockout_forecast").await.is_empty());
        // A return soon after a sale nets it off, sale and all: one sale
        // more leaves the count where four sales put it (3.99..., shown
        // 3), where five would show 4.
        assert_eq!(adjust(&app, "FC-1", 1, "return").await.0, 200);
        let (_, after_sale) = adjust(&app, "FC-1", -1, "sale").await;
        assert_eq!(after_sale["forecast"]["based_on_sales"], 3, "{after_sale}");
        // A restock is not a sale: nothing moves the count.
        assert_eq!(adjust(&app, "FC-1", 1, "restock").await.0, 200);
        let (_, sku) = adjust(&app, "FC-1", -1, "restock").await;
        assert_eq!(sku["forecast"]["based_on_sales"], 3, "{sku}");
        assert!(sku["forecast"]["days_of_cover"].is_null(), "{sku}");

        // The fifth and sixth sales: about 6 a day over the first day, 14
        // left, so about 2.3 days of cover, within the 7 days' lead time.
        adjust(&app, "FC-1", -1, "sale").await;
        let (status, after) = adjust(&app, "FC-1", -1, "sale").await;
        assert_eq!(status, 200, "{after}");
        let forecast = &after["forecast"];
        let cover = tenths(&forecast["days_of_cover"]);
        let rate = tenths(&forecast["sales_per_day"]);
        assert!(forecast["based_on_sales"].as_i64().unwrap() >= 5, "{after}");
        assert!(cover < 7.0 && cover > 0.0, "{after}");
        assert!(forecast["stockout_at"].is_string(), "{after}");
        assert_eq!(forecast["as_of"], after["updated_at"], "{after}");
        let raised = active(&app, "FC-1", "stockout_forecast").await;
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0]["threshold"], 7);
        assert_eq!(raised[0]["value"], forecast["days_of_cover"]);
        let message = raised[0]["message"].as_str().unwrap();
        assert!(
            message.contains("/day over") && message.contains("lead time 7 days"),
            "{message}"
        );
        // Pushed: the change with the forecast in its state, and the alert.
        let last = after["version"].as_i64().unwrap();
        let (mut state, mut alert) = (None, None);
        while state.is_none() || alert.is_none() {
            let message = ws.next_json().await;
            if message["type"] == "sku" && message["sku"]["version"] == last {
                state = Some(message);
            } else if message["type"] == "alert" && message["alert"]["kind"] == "stockout_forecast"
            {
                alert = Some(message);
            }
        }
        assert_eq!(state.unwrap()["sku"]["forecast"], *forecast);
        assert_eq!(alert.unwrap()["alert"]["id"], raised[0]["id"]);

        // A restock to about 7.7 days: above the lead time, below the
        // resolve level (7 + 20 % = 8.4 days): the alert stays open.
        let available = after["available"].as_i64().unwrap();
        let to = |days: f64| (days * rate).ceil() as i64 - available;
        let (_, after) = adjust(&app, "FC-1", to(7.7), "restock").await;
        let cover = tenths(&after["forecast"]["days_of_cover"]);
        assert!((7.0..8.4).contains(&cover), "{after}");
        assert_eq!(active(&app, "FC-1", "stockout_forecast").await.len(), 1);
        // Past the resolve level: resolved.
        let available = after["available"].as_i64().unwrap();
        let (_, after) = adjust(
            &app,
            "FC-1",
            (9.5 * rate).ceil() as i64 - available,
            "restock",
        )
        .await;
        assert!(
            tenths(&after["forecast"]["days_of_cover"]) >= 8.4,
            "{after}"
        );
        assert!(active(&app, "FC-1", "stockout_forecast").await.is_empty());

        // A longer lead time raises it again; the threshold-only rule ends it.
        let (status, after) = patch(&app, "FC-1", json!({ "lead_time_days": 30 })).await;
        assert_eq!(status, 200, "{after}");
        assert_eq!(after["lead_time_days"], 30);
        let raised = active(&app, "FC-1", "stockout_forecast").await;
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert_eq!(raised[0]["threshold"], 30);
        let (_, after) = patch(&app, "FC-1", json!({ "alert_rule": "threshold" })).await;
        assert_eq!(after["alert_rule"], "threshold");
        assert!(active(&app, "FC-1", "stockout_forecast").await.is_empty());
        // null follows the server's settings again (7 days, both).
        let (_, after) = patch(
            &app,
            "FC-1",
            json!({ "alert_rule": null, "lead_time_days": null }),
        )
        .await;
        assert_eq!(after["alert_rule"], "both", "{after}");
        assert_eq!(after["lead_time_days"], 7, "{after}");

        // Bad values: a problem naming the field, nothing changed.
        let version = after["version"].clone();
        for (body, field) in [
            (json!({ "lead_time_days": 366 }), "lead_time_days"),
            (json!({ "lead_time_days": -1 }), "lead_time_days"),
            (json!({ "alert_rule": "sometimes" }), "alert_rule"),
        ] {
            let (status, problem) = patch(&app, "FC-1", body).await;
            assert_eq!(status, 422, "{problem}");
            assert_eq!(problem["errors"][0]["field"], field, "{problem}");
        }
        assert_eq!(app.get_sku("FC-1").await.1["version"], version);

        // /summary counts SKUs by days of cover.
        let summary = app.get_json("/api/v1/summary").await;
        assert_eq!(summary["days_of_cover"]["7_to_30"], 1, "{summary}");
        assert!(
            summary["open_alerts"]["stockout_forecast"].is_i64(),
            "{summary}"
        );
    }
);

/// The sweep re-reads the forecast of SKUs with an open forecast alert:
/// with no sales, the rate decays until the alert resolves. A server of
/// its own (the forecast settings are per process) with a half-life of
/// one second, so the time passing takes seconds.
async fn stopped_selling(backend: Backend) {
    let db = TestDb::new(backend).await;
    let server = crate::observability::Binary::spawn(
        &db.url,
        &[
            ("SKUWATCH_FORECAST_HALF_LIFE_SECS", "1"),
            ("SKUWATCH_FORECAST_SWEEP_SECS", "1"),
        ],
    )
    .await;
    let token = login(&server.base, "admin", crate::helpers::ADMIN_PASSWORD).await;
    let client = client_with(&token);
    let url = |path: &str| format!("{}{path}", server.base);
    let created = client
        .post(url("/api/v1/skus"))
        .json(
            &json!({ "sku": "FC-2", "name": "Mug", "currency": "GBP", "price": "3.00",
                       "stock": 100, "low_stock_threshold": 0 }),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let mut last = Value::Null;
    for _ in 0..8 {
        last = client
            .post(url("/api/v1/skus/FC-2/stock/adjustments"))
            .json(&json!({ "delta": -1, "reason": "sale" }))
            .send()
            .await
            .expect("sale")
            .json()
            .await
            .expect("json");
    }
    let alerts = |client: reqwest::Client| async move {
        get(&client, url("/api/v1/alerts?sku=FC-2")).await["alerts"]
            .as_array()
            .expect("alerts")
            .iter()
            .filter(|a| a["kind"] == "stockout_forecast")
            .cloned()
            .collect::<Vec<_>>()
    };
    let raised = alerts(client.clone()).await;
    assert_eq!(
        raised.len(),
        1,
        "eight sales in a second of a one-second half-life: {last}"
    );
    eventually(Duration::from_secs(20), "the sweep resolved it", || {
        let client = client.clone();
        async move {
            alerts(client)
                .await
                .iter()
                .all(|a| a["status"] == "resolved")
        }
    })
    .await;
    // By a `forecast` event whose state has the decayed forecast.
    let sku = get(&client, url("/api/v1/skus/FC-2")).await;
    assert!(sku["forecast"]["days_of_cover"].is_null(), "{sku}");
    let events = get(&client, url("/api/v1/events?after=0&limit=1000")).await;
    let reforecasts: Vec<&Value> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e["sku"] == "FC-2" && e["reason"] == "forecast")
        .collect();
    assert_eq!(reforecasts.len(), 1, "{events}");
    assert_eq!(reforecasts[0]["field"], "meta");
    assert_eq!(reforecasts[0]["version"], sku["version"]);
    assert!(
        reforecasts[0]["old"]["forecast"]["days_of_cover"].is_string(),
        "{events}"
    );
    // Nothing more is written once it is resolved.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let again = get(&client, url("/api/v1/skus/FC-2")).await;
    assert_eq!(again["version"], sku["version"]);
}

both_backends!(
    the_sweep_resolves_the_forecast_alert_of_a_sku_that_stopped_selling,
    stopped_selling
);

/// A missing rate (a row from before the forecast) is rebuilt from the
/// events at the SKU's next change, to exactly the state the live updates
/// kept. PostgreSQL: the server's mark lets the test clear the column.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_rate_is_rebuilt_to_the_live_state_postgres() {
    let app = TestApp::spawn(Backend::Postgres).await;
    app.create_sku("FC-3", "GBP", "1.00", 500).await;
    for (delta, reason) in [
        (-3, "sale"),
        (-40, "sale"),
        (2, "return"),
        (-1, "sale"),
        (5, "restock"),
    ] {
        for _ in 0..3 {
            assert_eq!(adjust(&app, "FC-3", delta, reason).await.0, 200);
        }
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::PgConnection::connect(&app.db.url).await.expect("db");
    let live: (Option<String>,) = sqlx::query_as("SELECT sales_rate FROM skus WHERE sku = 'FC-3'")
        .fetch_one(&mut conn)
        .await
        .expect("rate");
    assert!(live.0.is_some());
    // An external writer may not touch it...
    let refused = conn
        .execute("UPDATE skus SET sales_rate = NULL WHERE sku = 'FC-3'")
        .await
        .expect_err("refused");
    assert!(refused.to_string().contains("forecast"), "{refused}");
    // ...the server may.
    conn.execute(
        "BEGIN; SET LOCAL skuwatch.writer = 'server'; \
         UPDATE skus SET sales_rate = NULL WHERE sku = 'FC-3'; COMMIT",
    )
    .await
    .expect("clear");
    let (status, after) = patch(&app, "FC-3", json!({ "name": "Renamed" })).await;
    assert_eq!(status, 200, "{after}");
    let rebuilt: (Option<String>,) =
        sqlx::query_as("SELECT sales_rate FROM skus WHERE sku = 'FC-3'")
            .fetch_one(&mut conn)
            .await
            .expect("rate");
    assert_eq!(
        rebuilt.0, live.0,
        "the rebuilt state is the live one, bit for bit"
    );
    assert_ne!(after["forecast"]["sales_per_day"], "0.0", "{after}");
}
