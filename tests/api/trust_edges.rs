//! Issue 13, faults 3, 12, 13 and 14, and `/readyz` while Redis starts:
//! refusals that say whether anything was done, state a client cannot
//! grow, a login throttle an attacker cannot turn against the owner, and
//! bounded waits on a saturated database.

use std::time::Duration;

use serde_json::{json, Value};
use skuwatch_actors::messages::OnceFault;
use sqlx::Connection;

use crate::both_backends;
use crate::helpers::{metric, Backend, TestApp, ADMIN_PASSWORD};
use crate::redis_proxy::{cleanup, test_prefix, Mode, RedisProxy};

/// Generous bound for conditions the server reaches by itself.
const CONVERGE: Duration = Duration::from_secs(60);

async fn adjust_with(
    app: &TestApp,
    sku: &str,
    delta: i64,
    reason: &str,
    key: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/api/v1/skus/{sku}/stock/adjustments")))
        .json(&json!({ "delta": delta, "reason": reason }));
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = request.send().await.expect("adjust");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (
        status,
        retry_after,
        response.json().await.unwrap_or(Value::Null),
    )
}

// --- Fault 3: a write that may have committed is never sent again ------

both_backends!(
    a_write_committed_before_its_actor_died_is_answered_outcome_unknown_and_applied_once,
    |backend| async move {
        let fault = OnceFault::new("fault-after-commit");
        let app = TestApp::spawn_with(backend, |s| {
            s.inject_faults.panic_after_commit = Some(fault.clone());
        })
        .await;
        app.create_sku("F3-A", "EUR", "1.00", 10).await;

        let (status, _, body) =
            adjust_with(&app, "F3-A", -1, "fault-after-commit", Some("key-f3-a")).await;
        assert!(fault.fired(), "the fault was injected");
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["type"], "outcome_unknown", "{body}");
        // Committed once: not re-sent to the restarted actor.
        assert_eq!(app.db_stock("F3-A").await, (9, 2));

        // The documented recovery: the same key replays the first answer.
        let (status, _, body) =
            adjust_with(&app, "F3-A", -1, "fault-after-commit", Some("key-f3-a")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["sku"]["stock"], 9, "{body}");
        assert_eq!(app.db_stock("F3-A").await, (9, 2));
        let (status, sku) = app.get_sku("F3-A").await;
        assert_eq!((status, sku["stock"].as_i64()), (200, Some(9)), "{sku}");
    }
);

both_backends!(
    a_write_whose_actor_failed_before_starting_it_is_sent_again_and_applied_once,
    |backend| async move {
        let fault = OnceFault::new("fault-before-start");
        let app = TestApp::spawn_with(backend, |s| {
            s.inject_faults.fail_before_start = Some(fault.clone());
        })
        .await;
        app.create_sku("F3-B", "EUR", "1.00", 10).await;
        let (status, _, body) = adjust_with(&app, "F3-B", -1, "fault-before-start", None).await;
        assert!(fault.fired(), "the fault was injected");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["sku"]["stock"], 9, "{body}");
        assert_eq!(app.db_stock("F3-B").await, (9, 2));
    }
);

// --- Fault 12: reads of unknown codes keep nothing ---------------------

both_backends!(unknown_codes_keep_no_actor_alive, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.create_sku("F12-KNOWN", "EUR", "1.00", 1).await;
    assert_eq!(app.get_sku("F12-KNOWN").await.0, 200);
    let registry = &app.app().state().registry;
    let before = registry.active();
    let codes: Vec<String> = (0..300).map(|i| format!("F12-NOPE-{i:04}")).collect();
    let answers = futures_util::future::join_all(codes.iter().enumerate().map(|(i, code)| {
        let app = &app;
        async move {
            if i % 3 == 2 {
                app.adjust(code, 1).await.0
            } else {
                app.get_sku(code).await.0
            }
        }
    }))
    .await;
    assert!(answers.iter().all(|s| *s == 404), "{answers:?}");
    let deadline = tokio::time::Instant::now() + CONVERGE;
    while registry.active() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} actors active after reads of unknown codes; {before} before",
            registry.active()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        registry.is_active(&skuwatch_actors::domain::SkuCode::parse("F12-KNOWN").expect("code"))
    );
    // A code created after a miss is served.
    app.create_sku("F12-NOPE-0000", "EUR", "1.00", 3).await;
    let (status, sku) = app.get_sku("F12-NOPE-0000").await;
    assert_eq!((status, sku["stock"].as_i64()), (200, Some(3)), "{sku}");
});

// --- Fault 13: an attacker cannot lock the owner out -------------------

async fn login_as(
    app: &TestApp,
    password: &str,
    header: Option<(&str, &str)>,
) -> (u16, Option<String>) {
    let mut request = reqwest::Client::new()
        .post(app.url("/api/v1/auth/token"))
        .json(&json!({ "username": "admin", "password": password }));
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await.expect("login");
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (response.status().as_u16(), retry_after)
}

fn trusting_localhost(s: &mut skuwatch::Settings) {
    s.trusted_proxies = vec!["127.0.0.1/32".parse().expect("cidr")];
}

both_backends!(
    failures_from_one_address_do_not_lock_admin_out_elsewhere,
    |backend| async move {
        let app = TestApp::spawn_with(backend, trusting_localhost).await;
        let attacker = Some(("x-forwarded-for", "198.51.100.66"));
        for _ in 0..5 {
            assert_eq!(login_as(&app, "wrong password!", attacker).await.0, 401);
        }
        let (status, retry_after) = login_as(&app, "wrong password!", attacker).await;
        assert_eq!(status, 429);
        assert!(retry_after.is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)));
        // The attacker's address stays refused, even with the right password...
        assert_eq!(login_as(&app, ADMIN_PASSWORD, attacker).await.0, 429);
        // ...while admin logs in from anywhere else.
        let owner = Some(("x-forwarded-for", "203.0.113.7"));
        assert_eq!(login_as(&app, ADMIN_PASSWORD, owner).await.0, 200);
        assert_eq!(login_as(&app, ADMIN_PASSWORD, None).await.0, 200);

        let page = app.metrics_page().await;
        assert!(
            metric(&page, "skuwatch_login_throttled_total{scope=\"pair\"}")
                .is_some_and(|n| n > 0.0),
            "throttled attempts are counted"
        );
    }
);

both_backends!(
    forwarded_headers_count_only_from_a_trusted_proxy,
    |backend| async move {
        // Not trusted: each request claims another address; all are one peer.
        let app = TestApp::spawn(backend).await;
        for i in 0..5 {
            let spoof = format!("198.51.100.{i}");
            let (status, _) =
                login_as(&app, "wrong password!", Some(("x-forwarded-for", &spoof))).await;
            assert_eq!(status, 401);
        }
        let (status, _) = login_as(
            &app,
            ADMIN_PASSWORD,
            Some(("x-forwarded-for", "203.0.113.99")),
        )
        .await;
        assert_eq!(
            status, 429,
            "X-Forwarded-For from an untrusted peer is ignored"
        );

        // Trusted, X-Forwarded-For configured (the default): a client's own
        // `Forwarded` is not read, so it cannot pick whose pair it fills.
        let app = TestApp::spawn_with(backend, trusting_localhost).await;
        for _ in 0..5 {
            let spoof = Some(("forwarded", "for=203.0.113.77"));
            assert_eq!(login_as(&app, "wrong password!", spoof).await.0, 401);
        }
        let owner = Some(("x-forwarded-for", "203.0.113.77"));
        assert_eq!(login_as(&app, ADMIN_PASSWORD, owner).await.0, 200);

        // Trusted: RFC 7239 `Forwarded`, quoted, with ports and IPv6 brackets.
        let app = TestApp::spawn_with(backend, |s| {
            trusting_localhost(s);
            s.forwarded_header = skuwatch::auth::ForwardedHeader::Forwarded;
        })
        .await;
        for _ in 0..5 {
            let (status, _) = login_as(
                &app,
                "wrong password!",
                Some(("forwarded", r#"for="192.0.2.43:47011";proto=https"#)),
            )
            .await;
            assert_eq!(status, 401);
        }
        // The same client without a port, unquoted, behind a second proxy.
        let same = Some(("forwarded", "for=192.0.2.43, for=127.0.0.1;by=_proxy"));
        assert_eq!(login_as(&app, ADMIN_PASSWORD, same).await.0, 429);
        for _ in 0..5 {
            let (status, _) = login_as(
                &app,
                "wrong password!",
                Some(("forwarded", r#"For="[2001:db8:cafe::17]:4711""#)),
            )
            .await;
            assert_eq!(status, 401);
        }
        let v6 = Some(("forwarded", r#"for="[2001:db8:cafe::17]""#));
        assert_eq!(login_as(&app, ADMIN_PASSWORD, v6).await.0, 429);
        // Another client of the same proxy is not affected; only the
        // configured header counts.
        let other = Some(("forwarded", "for=192.0.2.60;proto=http;by=203.0.113.43"));
        assert_eq!(login_as(&app, ADMIN_PASSWORD, other).await.0, 200);
    }
);

// --- Fault 14: a saturated database refuses fast; probes answer ----------

/// Whether every connection of the write pool is in use.
fn write_pool_saturated(app: &TestApp) -> bool {
    app.app()
        .state()
        .store
        .pool_stats()
        .iter()
        .filter(|p| p.pool != "read")
        .all(|p| p.idle == 0 && p.size >= p.max)
}

both_backends!(
    a_saturated_pool_refuses_with_overloaded_and_probes_answer,
    |backend| async move {
        let app = TestApp::spawn_with(backend, |s| {
            s.db_max_connections = 1;
            s.db_acquire_timeout_ms = 300;
            s.actor_queue_timeout_ms = 300;
            // Long enough to outlast the test: the blocked write holds on.
            s.db_lock_timeout_ms = 120_000;
        })
        .await;
        app.create_sku("F14-A", "EUR", "1.00", 10).await;
        app.create_sku("F14-B", "EUR", "1.00", 10).await;
        assert_eq!(app.get_sku("F14-B").await.0, 200);

        // An outside session takes the lock every write needs.
        sqlx::any::install_default_drivers();
        let mut outside = sqlx::AnyConnection::connect(&app.db.url).await.expect("db");
        match backend {
            Backend::Postgres => {
                sqlx::query("BEGIN")
                    .execute(&mut outside)
                    .await
                    .expect("begin");
                sqlx::query("SELECT last_event_id FROM event_clock WHERE id = 1 FOR UPDATE")
                    .execute(&mut outside)
                    .await
                    .expect("lock the clock");
            }
            Backend::Sqlite => {
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut outside)
                    .await
                    .expect("lock");
            }
        }
        // A write that blocks on it, holding the pool's only writer connection.
        let blocked = {
            let client = app.client.clone();
            let url = app.url("/api/v1/skus/F14-A/stock/adjustments");
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&json!({ "delta": -1, "reason": "blocked" }))
                    .send()
                    .await
                    .expect("blocked write")
                    .status()
                    .as_u16()
            })
        };
        let deadline = tokio::time::Instant::now() + CONVERGE;
        loop {
            let waiting = match backend {
                Backend::Postgres => {
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT count(*) FROM pg_stat_activity \
                     WHERE datname = current_database() AND wait_event_type = 'Lock'",
                    )
                    .fetch_one(&mut outside)
                    .await
                    .expect("activity");
                    n > 0
                }
                Backend::Sqlite => true,
            };
            if waiting && write_pool_saturated(&app) {
                break;
            }
            // SQLite does not always wait in its busy handler (it refuses at
            // once, e.g. when a read snapshot would have to be upgraded), so
            // the blocked write may already be refused as overloaded: the
            // database is then held by another process without the pool
            // being full, and what follows checks the same answers.
            if backend == Backend::Sqlite && blocked.is_finished() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the write never blocked"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        // Further writes are refused, saying nothing was done and when to retry.
        for sku in ["F14-B", "F14-A"] {
            let (status, retry_after, body) = adjust_with(&app, sku, -1, "refused", None).await;
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["type"], "overloaded", "{body}");
            assert!(retry_after.is_some(), "Retry-After on {body}");
        }
        let response = app
        .client
        .post(app.url("/api/v1/skus"))
        .json(&json!({ "sku": "F14-C", "name": "C", "currency": "EUR", "price": "1.00", "stock": 1 }))
        .send()
        .await
        .expect("create");
        assert_eq!(response.status(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["type"], "overloaded", "{body}");

        // The probes answer whatever the pool does.
        for (path, want) in [("/healthz", 200), ("/readyz", 200), ("/metrics", 200)] {
            let status = app
                .client
                .get(app.url(path))
                .send()
                .await
                .expect(path)
                .status();
            assert_eq!(status.as_u16(), want, "{path}");
        }

        // Released: the blocked write ends (committed, or refused as overloaded
        // if it outwaited a bound), the refused ones did nothing.
        match backend {
            Backend::Postgres => sqlx::query("ROLLBACK")
                .execute(&mut outside)
                .await
                .expect("rollback"),
            Backend::Sqlite => sqlx::query("ROLLBACK")
                .execute(&mut outside)
                .await
                .expect("rollback"),
        };
        let status = blocked.await.expect("task");
        assert!(status == 200 || status == 503, "blocked write: {status}");
        assert_eq!(app.db_stock("F14-B").await, (10, 1));
        let (stock_a, _) = app.db_stock("F14-A").await;
        assert_eq!(stock_a, if status == 200 { 9 } else { 10 });
        assert_eq!(app.adjust("F14-B", -1).await.0, 200);
    }
);

// --- /readyz while the Redis listener has not connected yet ------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readyz_says_starting_until_redis_first_connects() {
    let prefix = test_prefix();
    let proxy = RedisProxy::start().await;
    proxy.set(Mode::Refuse);
    let app = TestApp::spawn_with(Backend::Sqlite, |s| {
        s.redis_url = Some(skuwatch::config::Secret(proxy.url()));
        s.redis_prefix = prefix.clone();
        s.redis_heartbeat_ms = 100;
    })
    .await;
    let readyz = |app: &TestApp| {
        let request = app.client.get(app.url("/readyz"));
        async move {
            let response = request.send().await.expect("readyz");
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.expect("json"))
        }
    };
    let (status, body) = readyz(&app).await;
    assert_eq!(
        (status, &body["redis"]),
        (503, &json!("starting")),
        "{body}"
    );

    proxy.set(Mode::Pass);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let (status, body) = readyz(&app).await;
        if status == 200 {
            assert_eq!(body["redis"], "ok");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    proxy.set(Mode::Refuse);
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let (status, body) = readyz(&app).await;
        if status == 503 {
            assert_eq!(body["redis"], "unreachable", "{body}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cleanup(&prefix).await;
}

// Fault 12's fix must not stop actors of SKUs that exist: a refused write
// (409 here) says nothing about absence. Stopping on it restarted a
// sold-out SKU's actor on every refused sale, sending its queued requests
// round again.
both_backends!(refused_writes_keep_their_skus_actor, |backend| async move {
    let app = TestApp::spawn(backend).await;
    app.create_sku("F12-SOLD-OUT", "EUR", "1.00", 0).await;
    // No GET first: an actor that only ever ran writes has read no
    // state, which is when a refusal was taken for absence.
    let code = skuwatch_actors::domain::SkuCode::parse("F12-SOLD-OUT").expect("code");
    let registry = &app.app().state().registry;
    for _ in 0..5 {
        assert_eq!(app.adjust("F12-SOLD-OUT", -1).await.0, 409);
        // A stop would be queued right behind the refused write.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            registry.is_active(&code),
            "a refused write stopped the actor"
        );
    }
});

// Fault 13, found in review: the throttle was checked before the slow
// password check and counted after it, so guesses sent at once all passed
// the check. Each attempt is now counted as it is let through.
both_backends!(
    parallel_guesses_get_no_more_tries_than_sequential_ones,
    |backend| async move {
        let app = TestApp::spawn(backend).await;
        let answers = futures_util::future::join_all(
            (0..30).map(|_| login_as(&app, "wrong password!", None)),
        )
        .await;
        let tried = answers.iter().filter(|(status, _)| *status == 401).count();
        let refused = answers.iter().filter(|(status, _)| *status == 429).count();
        assert_eq!(tried + refused, 30, "{answers:?}");
        assert!(
            tried <= 5,
            "{tried} guesses were checked; the pair allows 5"
        );
        // The pair is spent, even for the right password: it is the
        // guesser's own (the owner elsewhere is tested above).
        let (status, _) = login_as(&app, ADMIN_PASSWORD, None).await;
        assert_eq!(status, 429);
    }
);
