//! Unit tests of the actor core (SKU actor, supervisor, registry) against
//! the in-memory store and bus of [`crate::testing`]: no database, and
//! through the public API only (`Registry::get/write/apply/fail_actor`), so
//! they hold whatever the actors' internals become.
//!
//! Every test runs on a paused tokio clock: time advances only when every
//! task is idle, so [`settle`] waits until the actors have done all they
//! can, and idle timeouts pass at once, with no real sleeping.

use std::sync::Arc;
use std::time::Duration;

use crate::bus::EventBus;
use crate::domain::{Command, DomainError, WriteMeta};
use crate::messages::{InjectedFaults, OnceFault, WriteRequest};
use crate::registry::{ActorError, Registry, RegistryConfig};
use crate::store::{SkuStore, StoreError, WriteOutcome};
use crate::testing::{code_of, BusMode, FailAt, FakeBus, MemoryStore};

fn config() -> RegistryConfig {
    RegistryConfig {
        idle: Duration::from_secs(60),
        call_timeout: Duration::from_secs(5),
        ..RegistryConfig::default()
    }
}

async fn registry_with(
    store: &Arc<MemoryStore>,
    bus: &Arc<FakeBus>,
    config: RegistryConfig,
) -> Registry {
    let store: Arc<dyn SkuStore> = store.clone();
    let bus: Arc<dyn EventBus> = bus.clone();
    Registry::start(store, bus, config)
        .await
        .expect("registry starts")
}

/// Lets every task run until all are idle (the clock is paused, so this
/// returns only then), then a little virtual time more.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(10)).await;
}

fn adjust(delta: i64, reason: &str) -> WriteRequest {
    WriteRequest {
        command: Command::Adjust { delta },
        meta: WriteMeta {
            reason: Some(reason.into()),
            ..WriteMeta::default()
        },
        idempotency: None,
    }
}

fn committed_stock(outcome: Result<WriteOutcome, ActorError>) -> i64 {
    match outcome {
        Ok(WriteOutcome::Committed(changes)) => changes.last().expect("a change").sku.stock,
        other => panic!("expected a commit, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_get_after_a_write_is_served_from_the_cache_the_write_left() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");

    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 10);
    let loads = store.load_calls();
    assert_eq!(
        committed_stock(registry.write(&sku, adjust(-3, "sale")).await),
        7
    );
    let cached = registry.get(&sku).await.unwrap().unwrap();

    assert_eq!((cached.stock, cached.version), (7, 2));
    assert_eq!(store.load_calls(), loads, "the GET read the database again");
    assert_eq!(bus.published().len(), 1, "the commit was published once");
}

#[tokio::test(start_paused = true)]
async fn a_change_with_a_version_gap_makes_the_actor_reload_from_the_store() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();

    // v2 reaches the actor: next in line, cached without a read.
    let v2 = store.adjust_behind_the_back("A-1", 1).await;
    registry.apply(&v2);
    let loads = store.load_calls();
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().version, 2);
    assert_eq!(store.load_calls(), loads);

    // v3 is lost; v4 arrives: the gap makes the actor read the truth.
    store.adjust_behind_the_back("A-1", 1).await;
    store.adjust_behind_the_back("A-1", 1).await;
    let v5 = store.adjust_behind_the_back("A-1", 1).await;
    let v4 = store.events()[3].clone();
    assert_eq!(v4.sku.version, 4);
    registry.apply(&Arc::new(v4));
    let state = registry.get(&sku).await.unwrap().unwrap();

    assert_eq!(
        store.load_calls(),
        loads + 1,
        "the gap did not cause a reload"
    );
    assert_eq!(
        (state.version, state.stock),
        (5, 14),
        "not the database's state"
    );
    // An older change offered later never replaces a newer cached state.
    registry.apply(&v2);
    registry.apply(&v5);
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().version, 5);
}

#[tokio::test(start_paused = true)]
async fn a_read_of_an_unknown_code_keeps_no_actor() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("NOPE");

    assert!(registry.get(&sku).await.unwrap().is_none());
    settle().await;
    assert!(!registry.is_active(&sku));
    assert_eq!(registry.active(), 0);

    // A write to it is refused as not found, and keeps no actor either.
    let outcome = registry.write(&sku, adjust(1, "x")).await;
    assert!(matches!(
        outcome,
        Ok(WriteOutcome::Rejected(DomainError::NotFound(_)))
    ));
    settle().await;
    assert!(!registry.is_active(&sku));
}

#[tokio::test(start_paused = true)]
async fn a_refused_write_keeps_the_actor_of_an_existing_sku() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 1).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();

    let outcome = registry.write(&sku, adjust(-5, "sale")).await;
    assert!(matches!(
        outcome,
        Ok(WriteOutcome::Rejected(DomainError::InsufficientStock(_)))
    ));
    settle().await;
    assert!(registry.is_active(&sku), "a sold-out SKU lost its actor");
}

/// On the real clock: the actor measures idleness with `std::time`.
#[tokio::test]
async fn an_idle_actor_is_passivated_and_comes_back_on_next_use() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let idle = Duration::from_millis(200);
    let registry = registry_with(&store, &bus, RegistryConfig { idle, ..config() }).await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();
    let used = std::time::Instant::now();
    assert!(registry.is_active(&sku));

    let deadline = used + Duration::from_secs(5);
    while registry.is_active(&sku) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !registry.is_active(&sku),
        "not passivated after the idle time"
    );
    assert!(used.elapsed() >= idle, "passivated before the idle time");

    let loads = store.load_calls();
    assert_eq!(
        committed_stock(registry.write(&sku, adjust(1, "x")).await),
        11
    );
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 11);
    assert!(registry.is_active(&sku));
    assert_eq!(
        store.load_calls(),
        loads + 1,
        "a new actor reads the store once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_actor_is_restarted_and_reads_the_store_again() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();
    // A change the actor never hears of: only a fresh load shows it.
    store.adjust_behind_the_back("A-1", 5).await;

    registry.fail_actor(&sku).await.unwrap();
    settle().await;
    assert!(
        registry.is_active(&sku),
        "the failed actor was not restarted"
    );
    let loads = store.load_calls();
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 15);
    assert_eq!(store.load_calls(), loads + 1);
}

#[tokio::test(start_paused = true)]
async fn a_sku_failing_past_its_restart_budget_is_left_inactive_until_next_use() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(
        &store,
        &bus,
        RegistryConfig {
            max_restarts: 2,
            ..config()
        },
    )
    .await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();

    for failure in 1..=2 {
        registry.fail_actor(&sku).await.unwrap();
        settle().await;
        assert!(
            registry.is_active(&sku),
            "not restarted after failure {failure}"
        );
    }
    registry.fail_actor(&sku).await.unwrap();
    settle().await;
    assert!(!registry.is_active(&sku), "restarted past the budget");

    // Next use activates it again, and it serves.
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 10);
    assert!(registry.is_active(&sku));
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_actor_dies_after_commit_is_outcome_unknown_and_never_sent_again() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let fault = OnceFault::new("boom");
    let registry = registry_with(
        &store,
        &bus,
        RegistryConfig {
            faults: InjectedFaults {
                panic_after_commit: Some(fault.clone()),
                ..InjectedFaults::default()
            },
            ..config()
        },
    )
    .await;
    let sku = code_of("A-1");
    let writes = store.write_calls();

    let outcome = registry.write(&sku, adjust(-4, "boom")).await;

    assert!(fault.fired());
    assert!(
        matches!(outcome, Err(ActorError::OutcomeUnknown(_))),
        "{outcome:?}"
    );
    assert_eq!(store.write_calls(), writes + 1, "the write was sent again");
    assert_eq!(store.committed(&sku).unwrap().stock, 6, "committed once");
    settle().await;
    // The restarted actor reads what was committed.
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 6);
}

#[tokio::test(start_paused = true)]
async fn a_write_whose_actor_dies_before_starting_it_runs_once_on_a_fresh_actor() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let fault = OnceFault::new("early");
    let registry = registry_with(
        &store,
        &bus,
        RegistryConfig {
            faults: InjectedFaults {
                fail_before_start: Some(fault.clone()),
                ..InjectedFaults::default()
            },
            ..config()
        },
    )
    .await;
    let sku = code_of("A-1");
    let writes = store.write_calls();

    let outcome = registry.write(&sku, adjust(-4, "early")).await;

    assert!(fault.fired());
    assert_eq!(committed_stock(outcome), 6);
    assert_eq!(store.write_calls(), writes + 1, "run more than once");
    assert_eq!(store.events().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_after_commit_is_reported_and_not_retried() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");
    let writes = store.write_calls();

    store.fail_next_write(FailAt::AfterCommit);
    let outcome = registry.write(&sku, adjust(-1, "sale")).await;

    assert!(
        matches!(
            outcome,
            Err(ActorError::Store(StoreError::OutcomeUnknown(_)))
        ),
        "{outcome:?}"
    );
    assert_eq!(store.write_calls(), writes + 1);
    assert_eq!(store.committed(&sku).unwrap().stock, 9);
    // The actor did not cache a write it was told failed; a later write is
    // decided against the committed row all the same.
    assert_eq!(
        committed_stock(registry.write(&sku, adjust(-1, "sale")).await),
        8
    );
}

#[tokio::test(start_paused = true)]
async fn a_store_failure_before_commit_changes_nothing() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");

    store.fail_next_write(FailAt::BeforeCommit);
    let outcome = registry.write(&sku, adjust(-1, "sale")).await;

    assert!(
        matches!(outcome, Err(ActorError::Store(StoreError::Busy(_)))),
        "{outcome:?}"
    );
    assert_eq!(store.committed(&sku).unwrap().stock, 10);
    assert!(bus.published().is_empty(), "a failed write was published");
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 10);
}

#[tokio::test(start_paused = true)]
async fn writes_from_many_callers_on_one_sku_commit_in_order_with_gap_free_ids_and_no_oversell() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("HOT", 50).await;
    store.set_write_delay(Duration::from_millis(1));
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("HOT");

    let mut tasks = Vec::new();
    for i in 0..64 {
        let (registry, sku) = (registry.clone(), sku.clone());
        tasks.push(tokio::spawn(async move {
            registry.write(&sku, adjust(-1, &format!("w{i}"))).await
        }));
    }
    let mut sold = 0;
    let mut refused = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(WriteOutcome::Committed(_)) => sold += 1,
            Ok(WriteOutcome::Rejected(DomainError::InsufficientStock(_))) => refused += 1,
            other => panic!("unexpected {other:?}"),
        }
    }

    assert_eq!((sold, refused), (50, 14), "oversold or lost a sale");
    let events = store.events();
    let ids: Vec<i64> = events.iter().map(|c| c.event.event_id).collect();
    assert_eq!(ids, (1..=51).collect::<Vec<_>>());
    let versions: Vec<i64> = events.iter().map(|c| c.sku.version).collect();
    assert_eq!(versions, (1..=51).collect::<Vec<_>>());
    assert_eq!(registry.get(&sku).await.unwrap().unwrap().stock, 0);
    let published: Vec<i64> = bus.published().iter().map(|c| c.event.event_id).collect();
    assert_eq!(
        published,
        (2..=51).collect::<Vec<_>>(),
        "published out of order"
    );
}

#[tokio::test(start_paused = true)]
async fn the_fake_bus_drops_duplicates_and_reorders_on_demand() {
    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let mut receiver = bus.subscribe();
    let changes: Vec<_> = [
        store.adjust_behind_the_back("A-1", 1).await,
        store.adjust_behind_the_back("A-1", 1).await,
        store.adjust_behind_the_back("A-1", 1).await,
    ]
    .into();

    bus.set_mode(BusMode::Drop);
    bus.publish(&changes[..1]);
    bus.set_mode(BusMode::Duplicate);
    bus.publish(&changes[1..2]);
    bus.set_mode(BusMode::Hold);
    bus.publish(&changes[2..]);
    bus.publish(&changes[..1]);
    assert_eq!(bus.held(), 2);
    bus.release_reversed();

    let mut got = Vec::new();
    while let Ok(change) = receiver.try_recv() {
        got.push(change.event.event_id);
    }
    assert_eq!(got, vec![3, 3, 2, 4]);
    assert_eq!(bus.published().len(), 4);
}

#[tokio::test]
async fn the_memory_store_keeps_the_first_answer_of_an_idempotency_key() {
    use crate::store::{Idempotency, StoredResponse};
    fn render(outcome: &WriteOutcome) -> StoredResponse {
        StoredResponse {
            status: 200,
            body: format!("{outcome:?}").len().to_string(),
        }
    }
    let store = MemoryStore::new();
    store.seed("A-1", 10).await;
    let key = |fingerprint: &str| Idempotency {
        key: "k1".into(),
        scope: "adjust".into(),
        fingerprint: fingerprint.into(),
        render,
    };
    let sku = code_of("A-1");
    let command = Command::Adjust { delta: -1 };
    let meta = WriteMeta::default();

    let first = store
        .write(&sku, &command, &meta, Some(&key("f")))
        .await
        .unwrap();
    let again = store
        .write(&sku, &command, &meta, Some(&key("f")))
        .await
        .unwrap();
    let other = store
        .write(&sku, &command, &meta, Some(&key("g")))
        .await
        .unwrap();

    assert!(matches!(first, WriteOutcome::Committed(_)));
    assert!(matches!(again, WriteOutcome::Replayed(_)));
    assert!(matches!(other, WriteOutcome::IdempotencyMismatch));
    assert_eq!(store.committed(&sku).unwrap().stock, 9, "applied twice");
    assert_eq!(store.events().len(), 2);
}

#[tokio::test]
async fn the_memory_store_raises_and_resolves_alerts_like_the_sql_store() {
    let store = MemoryStore::new();
    store.seed("A-1", 12).await;
    let sku = code_of("A-1");

    store.adjust_behind_the_back("A-1", -12).await;
    let summary = store.summary().await.unwrap();
    assert_eq!((summary.out_of_stock, summary.below_threshold), (1, 1));
    assert_eq!(summary.open_alerts["out_of_stock"], 1);
    assert_eq!(summary.open_alerts["low_stock"], 1);

    let open = store.list_alerts(None, Some(&sku), 10).await.unwrap();
    let acked = store.acknowledge_alert(open[0].id, "ops").await.unwrap();
    assert_eq!(acked.unwrap().acknowledged_by.as_deref(), Some("ops"));
    assert!(store.acknowledge_alert(99, "ops").await.unwrap().is_none());

    store.adjust_behind_the_back("A-1", 100).await;
    let summary = store.summary().await.unwrap();
    assert_eq!(summary.open_alerts.values().sum::<i64>(), 0);
    assert_eq!(summary.below_threshold, 0);
}

#[tokio::test(start_paused = true)]
async fn changes_offered_faster_than_the_actor_takes_them_conflate_into_one_wake_up() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    let (store, bus) = (MemoryStore::new(), FakeBus::new());
    store.seed("A-1", 10).await;
    let registry = registry_with(&store, &bus, config()).await;
    let sku = code_of("A-1");
    registry.get(&sku).await.unwrap();
    let mut changes = Vec::new();
    for _ in 0..100 {
        changes.push(store.adjust_behind_the_back("A-1", 1).await);
    }
    let loads = store.load_calls();

    // The actor cannot run between these calls (one thread, no await):
    // the first change wakes it, the other 99 wait in its slot.
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        for change in &changes {
            registry.apply(change);
        }
    });
    let conflated: u64 = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| key.key().name() == crate::metrics::ACTOR_CHANGES_CONFLATED)
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            other => panic!("{other:?}"),
        })
        .sum();
    assert_eq!(conflated, 99, "each change queued its own message");

    let state = registry.get(&sku).await.unwrap().unwrap();
    assert_eq!((state.version, state.stock), (101, 110), "not the newest");
    assert_eq!(
        store.load_calls(),
        loads,
        "skipped versions were conflated on purpose, not a gap to reload"
    );
}
