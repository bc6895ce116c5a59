//! Issue 14: the SKU actor pipelines a hot SKU's writes (several per commit
//! call, in order), batches go through the actors, and a SKU's writes are
//! bounded (503 `overloaded` past `SKUWATCH_ACTOR_MAILBOX`).

use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{metric, Backend, TestApp};

/// The SKU's stock events, checked as one unbroken chain from `initial`:
/// versions consecutive from 2, each starting where the one before ended,
/// never below zero. Answers the final stock and the number of events.
async fn check_chain(app: &TestApp, sku: &str, initial: i64) -> (i64, usize) {
    let events: Vec<Value> = app
        .all_events()
        .await
        .into_iter()
        .filter(|e| e["sku"] == sku && e["field"] == "stock")
        .collect();
    let mut stock = initial;
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event["version"].as_i64(), Some(i as i64 + 2), "{event}");
        assert_eq!(event["old"].as_i64(), Some(stock), "{event}");
        stock = event["new"].as_i64().expect("new");
        assert!(stock >= 0, "oversold: {event}");
    }
    (stock, events.len())
}

both_backends!(
    sixty_four_writers_on_one_sku_share_commits_without_oversell,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        let initial = 30;
        app.create_sku("PIPE", "GBP", "1.00", initial).await;
        let registry = app.app().state().registry.clone();
        let (calls_before, writes_before) = registry.commit_stats();
        // 64 writers, 5 writes each, mostly sales: the stock runs out and
        // refills, so some sales are refused (409) and others accepted.
        let writers = (0..64).map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                let mut accepted = Vec::new();
                for i in 0..5 {
                    let delta = if (w + i) % 4 == 0 { 2 } else { -1 };
                    let (status, body) = app.adjust("PIPE", delta).await;
                    match status {
                        200 => accepted.push(delta),
                        409 => assert!(delta < 0, "a refill refused: {body}"),
                        other => panic!("unexpected {other}: {body}"),
                    }
                }
                accepted
            })
        });
        let accepted: Vec<i64> = join_all(writers)
            .await
            .into_iter()
            .flat_map(|r| r.expect("writer"))
            .collect();
        let refused = 64 * 5 - accepted.len();
        assert!(refused > 0, "the stock never ran out: adjust the test");
        let sum: i64 = accepted.iter().sum();
        let (last, events) = check_chain(&app, "PIPE", initial).await;
        assert_eq!(events, accepted.len(), "one event per accepted write");
        assert_eq!(last, initial + sum, "final = initial + accepted deltas");
        assert_eq!(
            app.db_stock("PIPE").await,
            (initial + sum, 1 + events as i64)
        );
        let (status, cached) = app.get_sku("PIPE").await;
        assert_eq!(
            (status, cached["stock"].as_i64()),
            (200, Some(initial + sum))
        );

        let (calls, writes) = registry.commit_stats();
        let (calls, writes) = (calls - calls_before, writes - writes_before);
        assert_eq!(writes, 64 * 5, "every write went through one commit call");
        assert!(
            writes > calls,
            "{writes} writes in {calls} commit calls: never more than one per call"
        );
    }
);

both_backends!(
    a_tiny_mailbox_refuses_with_503_overloaded_and_loses_no_accepted_write,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn_with(backend, |s| s.actor_mailbox = 1).await);
        let initial = 1_000;
        app.create_sku("TINY", "GBP", "1.00", initial).await;
        let writers = (0..64).map(|_| {
            let app = app.clone();
            tokio::spawn(async move {
                let response = app
                    .client
                    .post(app.url("/api/v1/skus/TINY/stock/adjustments"))
                    .json(&json!({ "delta": -1, "reason": "tiny" }))
                    .send()
                    .await
                    .expect("adjust");
                let status = response.status().as_u16();
                let retry_after = response.headers().get("retry-after").cloned();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if status == 503 {
                    assert_eq!(body["type"], "overloaded", "{body}");
                    assert!(retry_after.is_some(), "503 without Retry-After");
                } else {
                    assert_eq!(status, 200, "{body}");
                }
                status
            })
        });
        let statuses: Vec<u16> = join_all(writers)
            .await
            .into_iter()
            .map(|r| r.expect("writer"))
            .collect();
        let ok = statuses.iter().filter(|s| **s == 200).count() as i64;
        let refused = statuses.iter().filter(|s| **s == 503).count();
        assert!(ok > 0, "nothing accepted: {statuses:?}");
        assert!(refused > 0, "64 writers never passed a bound of 1");
        let (last, events) = check_chain(&app, "TINY", initial).await;
        assert_eq!(events as i64, ok, "every 2xx committed, no 503 did");
        assert_eq!(last, initial - ok);
        assert_eq!(app.db_stock("TINY").await.0, initial - ok);

        let page = app.metrics_page().await;
        let counted = metric(&page, "skuwatch_actor_mailbox_refused_total").unwrap_or(0.0);
        // Process-wide counter: at least this test's refusals.
        assert!(counted >= refused as f64, "{counted} < {refused}");

        // The bound frees as answers go out: a write after the burst passes.
        assert_eq!(app.adjust("TINY", -1).await.0, 200);
    }
);

both_backends!(
    a_batch_through_its_lowest_skus_actor_is_read_back_on_every_line,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        for sku in ["BA", "BB", "BC"] {
            app.create_sku(sku, "GBP", "1.00", 100).await;
            assert_eq!(app.get_sku(sku).await.0, 200, "actor active");
        }
        // Batches interleaved with single writes on their lowest SKU and
        // on another line: all in order, nothing lost.
        let tasks = (0..40).map(|i| {
            let app = app.clone();
            tokio::spawn(async move {
                match i % 3 {
                    0 => {
                        let response = app
                            .client
                            .post(app.url("/api/v1/stock/adjustments"))
                            .json(&json!({ "adjustments": [
                                {"sku": "BC", "delta": -1},
                                {"sku": "BA", "delta": -2},
                            ]}))
                            .send()
                            .await
                            .expect("batch");
                        (response.status().as_u16(), 0)
                    }
                    1 => (app.adjust("BA", -1).await.0, 1),
                    _ => (app.adjust("BC", -1).await.0, 2),
                }
            })
        });
        let results: Vec<(u16, u8)> = join_all(tasks)
            .await
            .into_iter()
            .map(|r| r.expect("task"))
            .collect();
        assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
        let batches = results.iter().filter(|r| r.1 == 0).count() as i64;
        let singles_a = results.iter().filter(|r| r.1 == 1).count() as i64;
        let singles_c = results.iter().filter(|r| r.1 == 2).count() as i64;
        for (sku, expected) in [
            ("BA", 100 - 2 * batches - singles_a),
            ("BC", 100 - batches - singles_c),
            ("BB", 100),
        ] {
            let (last, _) = check_chain(&app, sku, 100).await;
            assert_eq!(last, expected, "{sku}");
            let (status, cached) = app.get_sku(sku).await;
            assert_eq!(
                (status, cached["stock"].as_i64()),
                (200, Some(expected)),
                "{sku}"
            );
        }
        // Read right after the answer: the actors of both lines hold it.
        let response = app
            .client
            .post(app.url("/api/v1/stock/adjustments"))
            .json(&json!({ "adjustments": [{"sku": "BB", "delta": 5}, {"sku": "BC", "delta": 5}] }))
            .send()
            .await
            .expect("batch");
        assert_eq!(response.status(), 200);
        assert_eq!(app.get_sku("BB").await.1["stock"], 105);
        assert_eq!(
            app.get_sku("BC").await.1["stock"].as_i64(),
            Some(105 - batches - singles_c)
        );
    }
);
