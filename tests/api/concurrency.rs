//! Many writers at once: no lost update, no oversell, no gap in the feed.

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

async fn cached_equals_database(app: &TestApp, sku: &str) -> i64 {
    let (status, cached) = app.get_sku(sku).await;
    assert_eq!(status, 200);
    let (stock, version) = app.db_stock(sku).await;
    assert_eq!(
        cached["stock"].as_i64(),
        Some(stock),
        "actor cache vs database"
    );
    assert_eq!(
        cached["version"].as_i64(),
        Some(version),
        "actor cache vs database"
    );
    stock
}

both_backends!(
    two_hundred_sales_of_one_unit_from_stock_100_sell_exactly_100,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        app.create_sku("HOT", "GBP", "2.55", 100).await;
        let results = join_all((0..200).map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.adjust("HOT", -1).await })
        }))
        .await;
        let statuses: Vec<u16> = results.into_iter().map(|r| r.expect("task").0).collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            100,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            100,
            "{statuses:?}"
        );
        assert_eq!(cached_equals_database(&app, "HOT").await, 0);
        assert_eq!(
            app.db_stock("HOT").await.1,
            101,
            "one version per accepted sale"
        );
    }
);

both_backends!(
    a_batch_racing_single_adjustments_is_all_or_nothing,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        app.create_sku("A", "GBP", "1.00", 50).await;
        app.create_sku("B", "GBP", "1.00", 50).await;
        let batches = (0..30).map(|i| {
        let app = app.clone();
        tokio::spawn(async move {
            let response = app
                .client
                .post(app.url("/api/v1/stock/adjustments"))
                .json(&json!({ "adjustments": [{"sku": "A", "delta": -2}, {"sku": "B", "delta": -3}], "reason": format!("order {i}") }))
                .send()
                .await
                .expect("batch");
            (response.status().as_u16(), 0)
        })
    });
        let singles = (0..60).map(|i| {
            let app = app.clone();
            let sku = if i % 2 == 0 { "A" } else { "B" };
            tokio::spawn(async move { (app.adjust(sku, -1).await.0, 1) })
        });
        let results: Vec<(u16, u8)> = join_all(batches.chain(singles))
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        assert!(
            results.iter().all(|(s, _)| *s == 200 || *s == 409),
            "{results:?}"
        );
        let ok_batches = results.iter().filter(|r| **r == (200, 0)).count() as i64;
        let ok_a = results
            .iter()
            .enumerate()
            .filter(|(i, r)| **r == (200, 1) && (i - 30) % 2 == 0)
            .count() as i64;
        let ok_b = results
            .iter()
            .enumerate()
            .filter(|(i, r)| **r == (200, 1) && (i - 30) % 2 == 1)
            .count() as i64;
        let a = cached_equals_database(&app, "A").await;
        let b = cached_equals_database(&app, "B").await;
        assert_eq!(a, 50 - 2 * ok_batches - ok_a);
        assert_eq!(b, 50 - 3 * ok_batches - ok_b);
        assert!(a >= 0 && b >= 0);
    }
);

both_backends!(
    put_stock_racing_adjustments_loses_no_write,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        app.create_sku("CNT", "GBP", "1.00", 20).await;
        let tasks = (0..80).map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                if i % 10 == 0 {
                    let response = app
                        .client
                        .put(app.url("/api/v1/skus/CNT/stock"))
                        .json(&json!({ "stock": 25, "reason": "cycle_count" }))
                        .send()
                        .await
                        .expect("put");
                    response.status().as_u16()
                } else {
                    app.adjust("CNT", if i % 3 == 0 { 2 } else { -1 }).await.0
                }
            })
        });
        let statuses: Vec<u16> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        let accepted = statuses.iter().filter(|s| **s == 200).count();
        // Every accepted write is one event, and each event starts where the
        // previous one ended: nothing was overwritten unseen.
        let events: Vec<Value> = app
            .all_events()
            .await
            .into_iter()
            .filter(|e| e["sku"] == "CNT" && e["field"] == "stock")
            .collect();
        assert_eq!(events.len(), accepted);
        let mut stock = 20;
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event["version"].as_i64(), Some(i as i64 + 2));
            assert_eq!(event["old"].as_i64(), Some(stock), "{event}");
            stock = event["new"].as_i64().expect("new");
            assert!(stock >= 0);
        }
        assert_eq!(cached_equals_database(&app, "CNT").await, stock);
    }
);

both_backends!(
    the_events_feed_read_during_concurrent_writes_has_no_gap,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        for sku in ["F1", "F2", "F3", "F4"] {
            app.create_sku(sku, "USD", "1.00", 1_000).await;
        }
        let writers = (0..4).map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for _ in 0..40 {
                    assert_eq!(app.adjust(&format!("F{}", w + 1), -1).await.0, 200);
                }
            })
        });
        let reader = {
            let app = app.clone();
            tokio::spawn(async move {
                // Polls the feed while writes commit; every page must continue
                // exactly where the previous one ended.
                let mut after = 0;
                let mut seen = Vec::new();
                while after < 4 + 160 {
                    let page: Value = app
                        .client
                        .get(app.url(&format!("/api/v1/events?after={after}&limit=7")))
                        .send()
                        .await
                        .expect("events")
                        .json()
                        .await
                        .expect("json");
                    for event in page["events"].as_array().expect("events") {
                        let id = event["event_id"].as_i64().expect("id");
                        assert_eq!(id, after + 1, "gap or repeat after {after}");
                        after = id;
                        seen.push(id);
                    }
                }
                seen
            })
        };
        for writer in join_all(writers).await {
            writer.expect("writer");
        }
        let seen = reader.await.expect("reader");
        assert_eq!(seen, (1..=164).collect::<Vec<_>>());
    }
);

both_backends!(
    an_idempotency_key_replays_the_first_response_and_refuses_another_body,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("IDEM", "GBP", "1.00", 10).await;
        let send = |delta: i64| {
            app.client
                .post(app.url("/api/v1/skus/IDEM/stock/adjustments"))
                .header("Idempotency-Key", "order-42-line-1")
                .json(&json!({ "delta": delta, "reason": "sale" }))
                .send()
        };
        let first = send(-3).await.expect("first");
        assert_eq!(first.status(), 200);
        let first: Value = first.json().await.expect("json");
        let again = send(-3).await.expect("again");
        assert_eq!(again.status(), 200);
        assert_eq!(again.json::<Value>().await.expect("json"), first);
        let other = send(-4).await.expect("other");
        assert_eq!(other.status(), 422);
        assert_eq!(
            other.json::<Value>().await.expect("json")["type"],
            "idempotency_mismatch"
        );
        assert_eq!(app.get_sku("IDEM").await.1["stock"], 7, "applied once");
        // A refusal is kept too: the retry gets the first 409 even after
        // stock arrived in between (README, Extensions).
        let oversell = || {
            app.client
                .post(app.url("/api/v1/skus/IDEM/stock/adjustments"))
                .header("Idempotency-Key", "order-43-line-1")
                .json(&json!({ "delta": -10 }))
                .send()
        };
        let refused = oversell().await.expect("oversell");
        assert_eq!(refused.status(), 409);
        let refused: Value = refused.json().await.expect("json");
        assert_eq!(app.adjust("IDEM", 20).await.0, 200);
        let retried = oversell().await.expect("retry");
        assert_eq!(retried.status(), 409);
        assert_eq!(retried.headers()["idempotent-replayed"], "true");
        assert_eq!(retried.json::<Value>().await.expect("json"), refused);
        assert_eq!(app.get_sku("IDEM").await.1["stock"], 27);
    }
);

both_backends!(
    a_stale_if_match_is_412_and_changes_nothing,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("IFM", "GBP", "1.00", 10).await;
        let put = |etag: &'static str| {
            app.client
                .put(app.url("/api/v1/skus/IFM/stock"))
                .header("If-Match", etag)
                .json(&json!({ "stock": 3 }))
                .send()
        };
        let stale = put("\"7\"").await.expect("put");
        assert_eq!(stale.status(), 412);
        assert_eq!(
            stale.json::<Value>().await.expect("json")["type"],
            "version_mismatch"
        );
        let fresh = put("\"1\"").await.expect("put");
        assert_eq!(fresh.status(), 200);
        assert_eq!(fresh.headers()["etag"], "\"2\"");
    }
);

both_backends!(
    a_failed_sku_actor_is_restarted_and_serves_the_database_state,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("SUP", "GBP", "1.00", 10).await;
        assert_eq!(app.adjust("SUP", -4).await.0, 200);
        let registry = &app.app().state().registry;
        let sku = skuwatch_actors::domain::SkuCode::parse("SUP").expect("code");
        registry.fail_actor(&sku).await.expect("inject");
        let (status, state) = app.get_sku("SUP").await;
        assert_eq!(status, 200);
        assert_eq!(state["stock"], 6);
        assert_eq!(state["version"], 2);
        assert_eq!(app.adjust("SUP", -1).await.0, 200);
        assert_eq!(app.db_stock("SUP").await, (5, 3));
    }
);

both_backends!(
    idle_sku_actors_are_passivated_and_reactivated_from_the_database,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| s.actor_idle_secs = 1).await;
        app.create_sku("IDLE", "GBP", "1.00", 10).await;
        let registry = app.app().state().registry.clone();
        let sku = skuwatch_actors::domain::SkuCode::parse("IDLE").expect("code");
        assert!(registry.is_active(&sku));
        let mut waited = 0;
        while registry.is_active(&sku) {
            assert!(waited < 100, "actor was never passivated");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            waited += 1;
        }
        assert_eq!(app.adjust("IDLE", -1).await.0, 200);
        assert!(registry.is_active(&sku));
        assert_eq!(app.get_sku("IDLE").await.1["stock"], 9);
    }
);

both_backends!(
    a_restart_keeps_everything_committed,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("KEEP", "JPY", "1980", 10).await;
        assert_eq!(app.adjust("KEEP", -3).await.0, 200);
        let app = app.restart(|_| {}).await;
        let (_, state) = app.get_sku("KEEP").await;
        assert_eq!(
            (state["stock"].as_i64(), state["version"].as_i64()),
            (Some(7), Some(2))
        );
        assert_eq!(
            app.adjust("KEEP", -1).await.1["event_id"],
            3,
            "event ids continue"
        );
    }
);
