//! Micro-benchmarks of the per-change hot paths: the WebSocket message
//! encoding (once per change), the per-session queue (once per change per
//! session), money and SKU code parsing (every request), and the actor round
//! trip (every GET of an active SKU, here over a SQLite store).
//!
//! `cargo bench --bench hot_paths` (about a minute); one group:
//! `cargo bench --bench hot_paths -- outbox`.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use skuwatch::outbox::{Outbox, OutboxLimits, Outgoing};
use skuwatch::store::SqlStore;
use skuwatch_actors::bus::EventBus;
use skuwatch_actors::domain::{
    Command, Committed, Currency, Event, Field, Micros, Money, NewSku, PriceGuard, Sku, SkuCode,
    WriteMeta,
};
use skuwatch_actors::registry::{Registry, RegistryConfig};
use skuwatch_actors::store::SkuStore;
use tokio::sync::broadcast;

fn gbp() -> Currency {
    Currency::parse("GBP").expect("GBP")
}

fn committed(event_id: i64, code: &str) -> Committed {
    let sku = Sku {
        sku: SkuCode::parse(code).expect("code"),
        name: "WHITE HANGING HEART T-LIGHT HOLDER".into(),
        currency: gbp(),
        price_minor: 255,
        stock: 117,
        reserved: 0,
        low_stock_threshold: 10,
        price_guard: PriceGuard::default(),
        version: event_id,
        updated_at: Micros(1_790_000_000_000_000),
        lead_time_days: None,
        alert_rule: None,
        sales_rate: Some(skuwatch_actors::domain::SalesRate::new(
            &skuwatch_actors::domain::RateParams::default(),
        )),
        forecast: skuwatch_actors::domain::Forecast::none(skuwatch_actors::domain::Micros(0)),
    };
    Committed {
        event: Event {
            event_id,
            sku: sku.sku.clone(),
            version: sku.version,
            at: sku.updated_at,
            field: Field::Stock,
            old: 120.into(),
            new: 117.into(),
            delta: Some(-3),
            reason: Some("sale".into()),
            actor: Some("alice".into()),
        },
        sku,
        alerts: Vec::new(),
    }
}

fn quick<'a>(
    c: &'a mut Criterion,
    name: &str,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group(name);
    group
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    group
}

fn encoding(c: &mut Criterion) {
    let change = committed(123_456, "85123A");
    let mut group = quick(c, "encoding");
    group.throughput(Throughput::Elements(1));
    group.bench_function("Outgoing::new (one sku message)", |b| {
        b.iter(|| Outgoing::new(std::hint::black_box(&change)))
    });
    group.bench_function("SKU state as JSON text (event row, Redis hash)", |b| {
        b.iter(|| serde_json::to_string(std::hint::black_box(&change.sku)))
    });
    group.bench_function("Committed as JSON text (Redis bus message)", |b| {
        b.iter(|| serde_json::to_string(std::hint::black_box(&change)))
    });
    let message = Outgoing::new(&change);
    group.bench_function("conflated_text", |b| b.iter(|| message.conflated_text()));
    group.finish();
}

fn outbox(c: &mut Criterion) {
    let messages: Vec<Arc<Outgoing>> = (1..=1024)
        .map(|i| Arc::new(Outgoing::new(&committed(i, &format!("SKU{}", i % 64)))))
        .collect();
    let mut group = quick(c, "outbox");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.bench_function("push 1024 in order + drain", |b| {
        b.iter_batched(
            || {
                Outbox::new(
                    OutboxLimits {
                        queue: 1024,
                        conflated: 10_000,
                    },
                    Box::new(|| {}),
                )
            },
            |outbox| {
                for m in &messages {
                    outbox.push(m);
                }
                outbox.drain()
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("push 1024 conflating (queue 16, 64 SKUs) + drain", |b| {
        b.iter_batched(
            || {
                Outbox::new(
                    OutboxLimits {
                        queue: 16,
                        conflated: 10_000,
                    },
                    Box::new(|| {}),
                )
            },
            |outbox| {
                for m in &messages {
                    outbox.push(m);
                }
                outbox.drain()
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn parsing(c: &mut Criterion) {
    let mut group = quick(c, "parsing");
    let currency = gbp();
    group.bench_function("Money::parse \"1234.56\" GBP", |b| {
        b.iter(|| Money::parse(std::hint::black_box("1234.56"), currency))
    });
    group.bench_function("Money::parse_json 2.55 (number)", |b| {
        b.iter(|| Money::parse_json(std::hint::black_box("2.55"), currency))
    });
    group.bench_function("Currency::parse \"GBP\"", |b| {
        b.iter(|| Currency::parse(std::hint::black_box("GBP")))
    });
    group.bench_function("SkuCode::parse \"85123A\"", |b| {
        b.iter(|| SkuCode::parse(std::hint::black_box("85123A")))
    });
    group.bench_function("SkuCode::parse 64 chars", |b| {
        let long = "A".repeat(64);
        b.iter(|| SkuCode::parse(std::hint::black_box(&long)))
    });
    group.finish();
}

/// A bus that drops everything: the round trip alone is measured.
struct NoBus(
    broadcast::Sender<Arc<Committed>>,
    tokio::sync::watch::Sender<bool>,
);

impl EventBus for NoBus {
    fn publish(&self, _changes: &[Arc<Committed>]) {}
    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.0.subscribe()
    }
    fn connected(&self) -> tokio::sync::watch::Receiver<bool> {
        self.1.subscribe()
    }
}

fn actor_round_trip(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let path = std::env::temp_dir().join(format!("skuwatch-hot-{}.db", std::process::id()));
    let code = SkuCode::parse("85123A").expect("code");
    let registry = runtime.block_on(async {
        let store = Arc::new(
            SqlStore::connect(&format!("sqlite://{}", path.display()), 4)
                .await
                .expect("store"),
        );
        let new = NewSku {
            name: "bench".into(),
            price: Money::parse("2.55", gbp()).expect("price"),
            stock: 1_000_000,
            low_stock_threshold: 0,
            price_guard: PriceGuard::default(),
            lead_time_days: None,
            alert_rule: None,
        };
        store
            .write(&code, &Command::Create(new), &WriteMeta::default(), None)
            .await
            .expect("create");
        let registry = Registry::start(
            store,
            Arc::new(NoBus(
                broadcast::channel(16).0,
                tokio::sync::watch::Sender::new(true),
            )),
            RegistryConfig::default(),
        )
        .await
        .expect("registry");
        registry.get(&code).await.expect("activate");
        registry
    });
    let mut group = quick(c, "actor");
    group.bench_function("registry.get on an active actor", |b| {
        b.iter(|| runtime.block_on(registry.get(&code)).expect("get"))
    });
    group.bench_function("registry.get, 64 concurrent callers (per call)", |b| {
        b.iter_custom(|iters| {
            let registry = registry.clone();
            let code = code.clone();
            runtime.block_on(async move {
                let started = std::time::Instant::now();
                let per = iters.div_ceil(64);
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let (registry, code) = (registry.clone(), code.clone());
                        tokio::spawn(async move {
                            for _ in 0..per {
                                registry.get(&code).await.expect("get");
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.expect("task");
                }
                started.elapsed().mul_f64(iters as f64 / (per * 64) as f64)
            })
        })
    });
    group.finish();
    registry.stop();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

criterion_group!(benches, encoding, outbox, parsing, actor_round_trip);
criterion_main!(benches);
