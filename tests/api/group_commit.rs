//! Group commit (src/store/sql/group.rs): many single-SKU writes at once,
//! committed a group per transaction, each answered with its own event.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{metric, Backend, TestApp};

both_backends!(
    concurrent_writes_over_many_skus_get_their_own_gap_free_events_and_refusals_change_nothing,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        let skus: Vec<String> = (0..20).map(|i| format!("G{i:02}")).collect();
        for sku in &skus {
            app.create_sku(sku, "GBP", "1.00", 5).await;
        }
        app.create_sku("GK", "GBP", "1.00", 10).await;
        let created = app.all_events().await.len();
        // 8 sales a SKU from stock 5: 5 accepted, 3 refused, all at once;
        // plus one keyed sale sent twice.
        let sales = skus
            .iter()
            .flat_map(|sku| std::iter::repeat_n(sku.clone(), 8));
        let tasks: Vec<_> = sales
            .map(|sku| {
                let app = app.clone();
                tokio::spawn(async move { (sku.clone(), app.adjust(&sku, -1).await) })
            })
            .collect();
        let keyed = |app: Arc<TestApp>| async move {
            let response = app
                .client
                .post(app.url("/api/v1/skus/GK/stock/adjustments"))
                .header("Idempotency-Key", "group-order-1")
                .json(&json!({ "delta": -3, "reason": "sale" }))
                .send()
                .await
                .expect("keyed");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        };
        let (first, second) = tokio::join!(keyed(app.clone()), keyed(app.clone()));
        let mut answered: BTreeMap<i64, String> = BTreeMap::new();
        let mut refused = 0;
        for task in join_all(tasks).await {
            let (sku, (status, body)) = task.expect("task");
            match status {
                200 => {
                    assert_eq!(body["sku"]["sku"], sku.as_str());
                    let id = body["event_id"].as_i64().expect("event_id");
                    assert!(answered.insert(id, sku).is_none(), "event id {id} twice");
                }
                409 => refused += 1,
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert_eq!(answered.len(), 20 * 5);
        assert_eq!(refused, 20 * 3);
        assert_eq!((first.0, second.0), (200, 200));
        assert_eq!(first.1, second.1, "the retry gets the first answer");

        let events = app.all_events().await;
        let ids: Vec<i64> = events
            .iter()
            .map(|e| e["event_id"].as_i64().expect("id"))
            .collect();
        let expected: Vec<i64> = (1..=ids.len() as i64).collect();
        assert_eq!(ids, expected, "gap-free, in order");
        assert_eq!(
            events.len(),
            created + 20 * 5 + 1,
            "one event per accepted write"
        );
        let mut versions: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for event in &events {
            let sku = event["sku"].as_str().expect("sku").to_owned();
            let id = event["event_id"].as_i64().expect("id");
            if let Some(answered_sku) = answered.get(&id) {
                assert_eq!(answered_sku, &sku, "event {id} is the answered write's");
                assert_eq!(event["delta"], -1);
            }
            versions
                .entry(sku)
                .or_default()
                .push(event["version"].as_i64().expect("version"));
        }
        let answered_ids: BTreeSet<i64> = answered.keys().copied().collect();
        assert!(answered_ids.iter().all(|id| ids.contains(id)));
        for sku in &skus {
            assert_eq!(
                versions[sku],
                (1..=6).collect::<Vec<_>>(),
                "{sku}: consecutive"
            );
            assert_eq!(app.db_stock(sku).await, (0, 6), "{sku}");
            assert_eq!(app.get_sku(sku).await.1["stock"], 0, "{sku}: actor cache");
        }
        assert_eq!(
            app.db_stock("GK").await,
            (7, 2),
            "the keyed sale applied once"
        );
    }
);

both_backends!(
    a_full_write_queue_refuses_with_overloaded_and_keeps_nothing_of_a_refused_write,
    |backend: Backend| async move {
        // One write call may wait for the committers; any more are refused.
        let app = Arc::new(TestApp::spawn_with(backend, |s| s.write_queue = 1).await);
        let skus: Vec<String> = (0..48).map(|i| format!("Q{i:02}")).collect();
        for sku in &skus {
            app.create_sku(sku, "GBP", "1.00", 1000).await;
        }
        let created = app.all_events().await.len();
        let tasks: Vec<_> = skus
            .iter()
            .flat_map(|sku| std::iter::repeat_n(sku.clone(), 4))
            .map(|sku| {
                let app = app.clone();
                tokio::spawn(async move {
                    let response = app
                        .client
                        .post(app.url(&format!("/api/v1/skus/{sku}/stock/adjustments")))
                        .json(&json!({ "delta": -1, "reason": "sale" }))
                        .send()
                        .await
                        .expect("adjust");
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get("retry-after").cloned();
                    let body: Value = response.json().await.unwrap_or(Value::Null);
                    (status, retry_after, body)
                })
            })
            .collect();
        let (mut accepted, mut refused) = (0i64, 0i64);
        for task in join_all(tasks).await {
            let (status, retry_after, body) = task.expect("task");
            match status {
                200 => accepted += 1,
                503 => {
                    assert_eq!(body["type"], "overloaded", "{body}");
                    assert!(retry_after.is_some(), "Retry-After on {body}");
                    refused += 1;
                }
                other => panic!("unexpected {other}: {body}"),
            }
        }
        assert!(
            refused > 0,
            "a queue of one refuses some of 192 writes at once"
        );
        assert!(accepted > 0, "and commits the others");
        // Exactly the accepted writes are in the database and the feed.
        let events = app.all_events().await;
        assert_eq!(events.len() as i64, created as i64 + accepted);
        let mut taken = 0;
        for sku in &skus {
            taken += 1000 - app.db_stock(sku).await.0;
        }
        assert_eq!(taken, accepted, "nothing of a refused write was kept");
        let page = app.metrics_page().await;
        assert!(
            metric(&page, "skuwatch_write_queue_refused_total").is_some_and(|n| n > 0.0),
            "refusals are counted"
        );
    }
);
