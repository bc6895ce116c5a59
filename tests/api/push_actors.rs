//! The push path's actors (issue 14): delivery in `event_id` order across
//! SKUs, subscriber sets that survive SKU actor restarts and pin their
//! actors (capped), and session actors whose failure closes only their own
//! socket, with 1011.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use serde_json::{json, Value};
use skuwatch_actors::domain::SkuCode;
use tokio_tungstenite::tungstenite::Message;

use crate::both_backends;
use crate::helpers::{Backend, TestApp, Ws, WS_WAIT};

fn code(s: &str) -> SkuCode {
    SkuCode::parse(s).expect("code")
}

/// The event ids of `changes`, checked strictly increasing.
fn increasing_ids(changes: &[Value], who: &str) -> Vec<i64> {
    let ids: Vec<i64> = changes
        .iter()
        .map(|c| c["event_id"].as_i64().expect("event_id"))
        .collect();
    for pair in ids.windows(2) {
        assert!(
            pair[0] < pair[1],
            "{who}: event {} after {}",
            pair[1],
            pair[0]
        );
    }
    ids
}

/// Waits until `condition` holds, polling every 50 ms, for at most `WS_WAIT`.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WS_WAIT;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the close frame and returns its code.
async fn close_code(ws: &mut Ws) -> u16 {
    let deadline = tokio::time::Instant::now() + WS_WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.stream.next())
            .await
            .expect("a close frame in time");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(Message::Close(None))) | None | Some(Err(_)) => panic!("closed without a code"),
            Some(Ok(_)) => {}
        }
    }
}

both_backends!(
    sessions_on_several_skus_and_on_all_get_every_event_id_in_order,
    |backend: Backend| async move {
        let app = Arc::new(TestApp::spawn(backend).await);
        let skus = ["ORD-1", "ORD-2", "ORD-3", "ORD-4"];
        for sku in skus {
            app.create_sku(sku, "GBP", "1.00", 100_000).await;
        }
        let created = app.all_events().await.len() as i64;
        // `since` makes both subscriptions gap-free whenever the server
        // registered them: whatever came before is replayed.
        let mut some = app.ws().await;
        some.send(json!({ "type": "subscribe", "skus": skus, "since": created }))
            .await;
        let mut all = app.ws().await;
        all.send(json!({ "type": "subscribe", "all": true, "since": 0 }))
            .await;
        // Both sessions are live before the writers start (they received a
        // first change), so the order below is the live path's, not only
        // the `since` replay's.
        let (status, body) = app.adjust("ORD-1", -1).await;
        assert_eq!(status, 200, "{body}");
        let first = body["event_id"].as_i64().expect("event_id");
        let mut some_seen = some.changes_until(first).await;
        let mut all_seen = all.changes_until(first).await;
        // Eight writers, each going round all four SKUs, so changes of
        // different SKUs commit concurrently and interleave.
        let writers = (0..8).map(|w| {
            let app = app.clone();
            tokio::spawn(async move {
                for i in 0..12 {
                    let sku = skus[(w + i) % skus.len()];
                    let (status, body) = app.adjust(sku, -1).await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        });
        for writer in join_all(writers).await {
            writer.expect("writer");
        }
        let events: Vec<i64> = app
            .all_events()
            .await
            .iter()
            .map(|e| e["event_id"].as_i64().expect("event_id"))
            .collect();
        let last = *events.last().expect("events");
        assert_eq!(last, created + 97);

        some_seen.extend(some.changes_until(last).await);
        let seen = increasing_ids(&some_seen, "SKU session");
        let want: Vec<i64> = events.iter().copied().filter(|id| *id > created).collect();
        assert_eq!(seen, want, "the SKU session missed or repeated events");

        all_seen.extend(all.changes_until(last).await);
        let seen = increasing_ids(&all_seen, "all session");
        assert_eq!(seen, events, "the all session missed or repeated events");
    }
);

both_backends!(
    a_restarted_sku_actor_keeps_its_subscribers_and_stays_pinned,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| s.actor_idle_secs = 1).await;
        app.create_sku("PIN", "GBP", "1.00", 10).await;
        app.create_sku("FREE", "GBP", "1.00", 10).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["PIN", "GHOST"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");
        let registry = app.app().state().registry.clone();
        assert!(
            !registry.is_active(&code("GHOST")),
            "a subscription to a code that does not exist keeps no actor"
        );

        registry.fail_actor(&code("PIN")).await.expect("inject");
        let (status, _) = app.get_sku("PIN").await;
        assert_eq!(status, 200);
        // FREE has no subscriber: it is passivated after the idle time...
        eventually("FREE passivated", || !registry.is_active(&code("FREE"))).await;
        // ...while the restarted PIN actor stays, pinned, for well past it.
        let until = tokio::time::Instant::now() + Duration::from_millis(2_500);
        while tokio::time::Instant::now() < until {
            assert!(
                registry.is_active(&code("PIN")),
                "a subscribed SKU's actor was passivated"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The subscription survived the restart.
        let (status, body) = app.adjust("PIN", -1).await;
        assert_eq!(status, 200, "{body}");
        let id = body["event_id"].as_i64().expect("event_id");
        let changes = ws.changes_until(id).await;
        assert_eq!(changes.last().expect("a change")["event_id"], id);

        // Unsubscribed, it passivates like any other.
        ws.send(json!({ "type": "unsubscribe", "skus": ["PIN", "GHOST"] }))
            .await;
        eventually("PIN passivated", || !registry.is_active(&code("PIN"))).await;
    }
);

both_backends!(
    pins_are_capped_and_a_capped_subscription_still_gets_every_change,
    |backend: Backend| async move {
        let app = TestApp::spawn_with(backend, |s| {
            s.actor_idle_secs = 1;
            s.actor_max_pinned = 1;
        })
        .await;
        app.create_sku("CAP-1", "GBP", "1.00", 10).await;
        app.create_sku("CAP-2", "GBP", "1.00", 10).await;
        let mut ws = app.ws().await;
        ws.send(json!({ "type": "subscribe", "skus": ["CAP-1", "CAP-2"] }))
            .await;
        assert_eq!(ws.next_json().await["type"], "snapshot");
        let registry = app.app().state().registry.clone();
        let active = || {
            ["CAP-1", "CAP-2"]
                .iter()
                .filter(|s| registry.is_active(&code(s)))
                .count()
        };
        eventually("one of two subscribed actors passivated", || active() == 1).await;
        let until = tokio::time::Instant::now() + Duration::from_millis(2_000);
        while tokio::time::Instant::now() < until {
            assert_eq!(
                active(),
                1,
                "the pinned actor stays, the other one is not re-pinned"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut last = 0;
        for sku in ["CAP-1", "CAP-2"] {
            let (status, body) = app.adjust(sku, -1).await;
            assert_eq!(status, 200, "{body}");
            last = body["event_id"].as_i64().expect("event_id");
        }
        let changes = ws.changes_until(last).await;
        assert_eq!(changes.len(), 2, "{changes:?}");
    }
);

both_backends!(
    a_failed_session_actor_closes_its_socket_with_1011_and_nothing_else,
    |backend: Backend| async move {
        let app = TestApp::spawn(backend).await;
        app.create_sku("SES", "GBP", "1.00", 10).await;
        let sessions = app.app().state().sessions.clone();
        let mut failing = app.ws().await;
        failing
            .send(json!({ "type": "subscribe", "skus": ["SES"], "alerts": true }))
            .await;
        assert_eq!(failing.next_json().await["type"], "snapshot");
        let open = sessions.open().await;
        assert_eq!(open.len(), 1);
        let mut other = app.ws().await;
        other
            .send(json!({ "type": "subscribe", "skus": ["SES"] }))
            .await;
        assert_eq!(other.next_json().await["type"], "snapshot");

        sessions.fail(open[0]);
        assert_eq!(close_code(&mut failing).await, 1011);

        let (status, body) = app.adjust("SES", -1).await;
        assert_eq!(status, 200, "{body}");
        let id = body["event_id"].as_i64().expect("event_id");
        assert_eq!(other.changes_until(id).await.len(), 1);
        assert_eq!(sessions.open().await.len(), 1);
        // The failed session left SES's set: the other session is its one
        // member.
        let state = app.app().state();
        let mut members = 0;
        state
            .subscribers
            .for_each(&SkuCode::parse("SES").expect("code"), |_| members += 1);
        assert_eq!(members, 1);
        // The catalog actor takes the unsubscribe from its mailbox.
        eventually("alerts set emptied", || {
            state.catalog.sets().alerts.is_empty()
        })
        .await;
    }
);
