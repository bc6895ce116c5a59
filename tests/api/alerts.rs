//! Alerts, the price guard, history downsampling and the summary.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};
use sqlx::{Connection, Row};

use crate::both_backends;
use crate::helpers::{metric, Backend, TestApp};

async fn alerts_of(app: &TestApp, sku: &str) -> Vec<Value> {
    let body: Value = app
        .client
        .get(app.url(&format!("/api/v1/alerts?sku={sku}")))
        .send()
        .await
        .expect("alerts")
        .json()
        .await
        .expect("json");
    let mut alerts = body["alerts"].as_array().cloned().unwrap_or_default();
    alerts.reverse(); // oldest first
    alerts
}

async fn set_stock(app: &TestApp, sku: &str, stock: i64) {
    let response = app
        .client
        .put(app.url(&format!("/api/v1/skus/{sku}/stock")))
        .json(&json!({ "stock": stock }))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 200);
}

both_backends!(
    low_stock_alerts_follow_the_threshold_with_hysteresis,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "alerts": true }))
            .await;
        app.create_sku("LOW", "GBP", "1.00", 11).await;
        for stock in [9, 10, 9, 8, 12, 9] {
            set_stock(&app, "LOW", stock).await;
        }
        let alerts: Vec<Value> = alerts_of(&app, "LOW")
            .await
            .into_iter()
            .filter(|a| a["kind"] == "low_stock")
            .collect();
        assert_eq!(alerts.len(), 2, "{alerts:?}");
        assert_eq!(
            (alerts[0]["value"].as_i64(), alerts[0]["status"].as_str()),
            (Some(9), Some("resolved"))
        );
        assert!(alerts[0]["resolved_at"].is_string());
        assert_eq!(
            (
                alerts[1]["value"].as_i64(),
                alerts[1]["status"].as_str(),
                alerts[1]["threshold"].as_i64()
            ),
            (Some(9), Some("open"), Some(10))
        );
        // Pushed live: raised, resolved, raised.
        let mut pushed = Vec::new();
        while pushed.len() < 3 {
            let message = ws.next_json().await;
            if message["type"] == "alert" {
                pushed.push(message["alert"]["status"].as_str().unwrap_or("").to_owned());
            }
        }
        assert_eq!(pushed, ["open", "resolved", "open"]);
        // A threshold change re-evaluates: raising it above the stock of a SKU
        // without an alert opens one.
        app.create_sku("TH", "GBP", "1.00", 15).await;
        let patched = app
            .client
            .patch(app.url("/api/v1/skus/TH"))
            .json(&json!({ "low_stock_threshold": 20 }))
            .send()
            .await
            .expect("patch");
        assert_eq!(patched.status(), 200);
        assert_eq!(alerts_of(&app, "TH").await.len(), 1);
    }
);

both_backends!(
    fifty_concurrent_sales_through_the_threshold_raise_exactly_one_alert,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        app.create_sku("RUSH", "GBP", "1.00", 20).await;
        let results = join_all((0..50).map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.adjust("RUSH", -1).await.0 })
        }))
        .await;
        assert_eq!(results.iter().filter(|r| matches!(r, Ok(200))).count(), 20);
        let alerts = alerts_of(&app, "RUSH").await;
        let kinds: Vec<&str> = alerts
            .iter()
            .map(|a| a["kind"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "low_stock").count(),
            1,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "out_of_stock").count(),
            1,
            "{kinds:?}"
        );
        let summary: Value = app
            .client
            .get(app.url("/api/v1/summary"))
            .send()
            .await
            .expect("summary")
            .json()
            .await
            .expect("json");
        assert_eq!(
            (
                summary["out_of_stock"].as_i64(),
                summary["below_threshold"].as_i64()
            ),
            (Some(1), Some(1))
        );
        assert_eq!(summary["open_alerts"]["low_stock"], 1);
    }
);

both_backends!(
    the_price_guard_refuses_typos_unless_confirmed,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("P", "GBP", "399.00", 5).await;
        let put = |price: Value, confirm: bool| {
            app.client
                .put(app.url("/api/v1/skus/P/price"))
                .json(&json!({ "price": price, "confirm": confirm }))
                .send()
        };
        for typo in ["3.99", "39900"] {
            let refused = put(json!(typo), false).await.expect("put");
            assert_eq!(refused.status(), 422, "{typo}");
            let body: Value = refused.json().await.expect("json");
            assert_eq!(body["type"], "price_guard");
            assert_eq!(body["errors"][0]["field"], "price");
        }
        assert_eq!(app.get_sku("P").await.1["price"], "399.00");
        for never in [json!("0"), json!("-1"), json!(0)] {
            assert_eq!(
                put(never.clone(), true).await.expect("put").status(),
                422,
                "{never}"
            );
        }
        let confirmed = put(json!("3.99"), true).await.expect("put");
        assert_eq!(confirmed.status(), 200);
        let anomalies: Vec<Value> = alerts_of(&app, "P")
            .await
            .into_iter()
            .filter(|a| a["kind"] == "price_anomaly")
            .collect();
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0]["value"], "3.99");
        // 5 % passes silently, and ends the anomaly.
        assert_eq!(put(json!("4.18"), false).await.expect("put").status(), 200);
        let anomalies: Vec<Value> = alerts_of(&app, "P")
            .await
            .into_iter()
            .filter(|a| a["kind"] == "price_anomaly")
            .collect();
        assert_eq!(anomalies.len(), 1);
        assert_eq!(anomalies[0]["status"], "resolved");
    }
);

both_backends!(
    acknowledging_is_idempotent_and_a_missing_alert_is_404,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("ACK", "GBP", "1.00", 1).await;
        assert_eq!(app.adjust("ACK", -1).await.0, 200);
        let id = alerts_of(&app, "ACK").await[0]["id"].as_i64().expect("id");
        for _ in 0..2 {
            let acked = app
                .client
                .post(app.url(&format!("/api/v1/alerts/{id}/ack")))
                .send()
                .await
                .expect("ack");
            assert_eq!(acked.status(), 200);
            let alert: Value = acked.json().await.expect("json");
            assert_eq!(
                (alert["status"].as_str(), alert["acknowledged_by"].as_str()),
                (Some("acknowledged"), Some("admin"))
            );
        }
        assert_eq!(
            app.client
                .post(app.url("/api/v1/alerts/999999/ack"))
                .send()
                .await
                .expect("ack")
                .status(),
            404
        );
        assert_eq!(
            app.client
                .post(app.url("/api/v1/alerts/x/ack"))
                .send()
                .await
                .expect("ack")
                .status(),
            422
        );
        // Acknowledged still counts as active: no second alert while below.
        assert_eq!(app.adjust("ACK", 1).await.0, 200);
        assert_eq!(app.adjust("ACK", -1).await.0, 200);
        let open: Vec<Value> = alerts_of(&app, "ACK")
            .await
            .into_iter()
            .filter(|a| a["kind"] == "low_stock")
            .collect();
        assert_eq!(open.len(), 1);
    }
);

/// The values of a stock chart, with their versions.
async fn chart(app: &TestApp, sku: &str, limit: usize) -> Vec<(i64, i64)> {
    app.history(sku, "stock", limit)
        .await
        .iter()
        .map(|p| {
            (
                p["version"].as_i64().unwrap_or(0),
                p["value"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

// Issue 15, target 4: long charts read pre-aggregated blocks, built from
// the events table by the roll-up; a chart is the same with the blocks as
// from the events alone, and keeps the true extremes.
both_backends!(
    a_chart_from_history_blocks_is_the_chart_from_the_events,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        // 4,100 versions of one SKU through the write path (one import,
        // its lines applied in file order): a wave, one stock-out and one
        // spike, each inside a block, away from the blocks' edges.
        let value = |i: i64| match i {
            1500 => 0,
            2900 => 9999,
            _ => 100 + (i * 37) % 800,
        };
        let mut csv = String::from("sku,name,price,currency,stock\n");
        for i in 0..4100 {
            csv.push_str(&format!("HB,Blocks,1.00,GBP,{}\n", value(i)));
        }
        app.import(csv).await;
        // Versions 1..=4100 close 16 level-1 blocks, 4 level-2, 1 level-3,
        // each with a row per field. Counted in the database: the metrics
        // are process-wide, shared with the tests running beside this one.
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let stored: i64 = sqlx::query("SELECT COUNT(*) FROM history_blocks WHERE sku = 'HB'")
                .fetch_one(&mut conn)
                .await
                .expect("count")
                .try_get(0)
                .expect("count");
            if stored == 2 * 21 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{stored} block rows"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(
            metric(
                &app.metrics_page().await,
                "skuwatch_history_blocks_built_total"
            )
            .is_some_and(|built| built >= 21.0),
            "counted"
        );
        // Limits whose buckets span whole blocks of level 1 or 2, or none.
        let limits = [2, 3, 4, 6, 10, 16, 40];
        let mut with_blocks = Vec::new();
        for limit in limits {
            let points = chart(&app, "HB", limit).await;
            assert!(
                !points.is_empty() && points.len() <= limit,
                "limit {limit}: {points:?}"
            );
            assert_eq!(
                points.last(),
                Some(&(4100, value(4099))),
                "limit {limit} ends at now"
            );
            if limit >= 2 {
                assert_eq!(
                    points[0],
                    (1, value(0)),
                    "limit {limit} starts at the start"
                );
            }
            if limit >= 4 {
                assert!(
                    points.contains(&(1501, 0)),
                    "limit {limit}: the stock-out: {points:?}"
                );
                assert!(
                    points.contains(&(2901, 9999)),
                    "limit {limit}: the spike: {points:?}"
                );
            }
            with_blocks.push(points);
        }
        let removed = sqlx::query("DELETE FROM history_blocks WHERE sku = 'HB'")
            .execute(&mut conn)
            .await
            .expect("delete")
            .rows_affected();
        assert_eq!(removed, 2 * 21, "both fields of every block");
        for (limit, expected) in limits.into_iter().zip(with_blocks) {
            assert_eq!(chart(&app, "HB", limit).await, expected, "limit {limit}");
        }
    }
);

both_backends!(
    history_over_100000_points_keeps_the_true_minimum_and_maximum,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("H", "GBP", "1.00", 500).await;
        // 100,000 stock events written straight into the database: a data
        // volume test of the query, not of the write path.
        sqlx::any::install_default_drivers();
        let mut conn = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
        let series = match backend {
        Backend::Postgres => "SELECT g AS n FROM generate_series(1, 100000) AS g",
        Backend::Sqlite => "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 100000) SELECT n FROM s",
    };
        // A wave between 100 and 900, one dip to 0 and one spike to 5000.
        let value =
            "CASE WHEN n = 73001 THEN 0 WHEN n = 12345 THEN 5000 ELSE 100 + (n * 37) % 800 END";
        let insert = format!(
        "INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after) \
         SELECT 1000 + n, 'H', 1 + n, 1000000 + n, 'stock', '0', '0', NULL, NULL, NULL, '{{}}', {value}, 100 FROM ({series}) AS t"
    );
        sqlx::query(&insert)
            .execute(&mut conn)
            .await
            .expect("insert");
        let points = app.history("H", "stock", 500).await;
        assert!(
            points.len() <= 500 && points.len() > 400,
            "{}",
            points.len()
        );
        let values: Vec<i64> = points
            .iter()
            .map(|p| p["value"].as_i64().unwrap_or(-1))
            .collect();
        assert_eq!(values.iter().min(), Some(&0), "the stock-out stays visible");
        assert_eq!(values.iter().max(), Some(&5000), "the spike stays visible");
        let ids: Vec<i64> = points
            .iter()
            .map(|p| p["event_id"].as_i64().unwrap_or(0))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "oldest first");
        let short = app.history("H", "price", 10).await;
        assert_eq!(short[0]["value"], "1.00", "prices as decimal strings");
    }
);
