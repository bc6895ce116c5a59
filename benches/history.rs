//! History on a SKU with 1,000,000 events: the downsampling query that
//! charts use, over the pre-aggregated blocks the roll-up builds (issue 15,
//! target 4: an all-time chart of 500 points in <= 50 ms). SQLite always; PostgreSQL too when SKUWATCH_BENCH_POSTGRES
//! names an admin URL (e.g. postgres://postgres@127.0.0.1:5432/postgres).
//!
//! `cargo bench --bench history`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use skuwatch::store::SqlStore;
use skuwatch_actors::domain::{
    Command, Currency, Field, Micros, Money, NewSku, PriceGuard, SkuCode, WriteMeta,
};
use skuwatch_actors::store::{HistoryQuery, SkuStore};
use sqlx::Connection;

const EVENTS: i64 = 1_000_000;

async fn seed(url: &str, postgres: bool) -> SqlStore {
    let store = SqlStore::connect(url, 4).await.expect("connect");
    let sku = SkuCode::parse("BENCH").expect("code");
    let price = Money::parse("2.55", Currency::parse("GBP").expect("GBP")).expect("price");
    let new = NewSku {
        name: "bench".into(),
        price,
        stock: 100,
        low_stock_threshold: 10,
        price_guard: PriceGuard::default(),
        lead_time_days: None,
        alert_rule: None,
    };
    store
        .write(&sku, &Command::Create(new), &WriteMeta::default(), None)
        .await
        .expect("create");
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("db");
    let series = if postgres {
        format!("SELECT g AS n FROM generate_series(1, {EVENTS}) AS g")
    } else {
        format!("WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < {EVENTS}) SELECT n FROM s")
    };
    sqlx::query(&format!(
        "INSERT INTO events (event_id, sku, version, at_us, field, old_value, new_value, delta, reason, actor, state, stock_after, price_after) \
         SELECT 10 + n, 'BENCH', 1 + n, CAST(n AS BIGINT) * 1000000, 'stock', '0', '0', NULL, NULL, NULL, '{{}}', (n * 37) % 1000, 255 FROM ({series}) AS t"
    ))
    .execute(&mut conn)
    .await
    .expect("seed");
    // Committed as far as the event clock says: the roll-up's bound.
    sqlx::query(&format!(
        "UPDATE event_clock SET last_event_id = {}",
        10 + EVENTS
    ))
    .execute(&mut conn)
    .await
    .expect("clock");
    let started = std::time::Instant::now();
    while store.roll_up_history().await.expect("roll-up").behind > 0 {}
    eprintln!(
        "history roll-up of {EVENTS} events: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    store
}

fn bench_backend(c: &mut Criterion, name: &str, url: &str, postgres: bool) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let store = runtime.block_on(seed(url, postgres));
    let query = |from: Option<i64>, to: Option<i64>, limit: i64| HistoryQuery {
        sku: SkuCode::parse("BENCH").expect("code"),
        field: Field::Stock,
        from: from.map(Micros),
        to: to.map(Micros),
        limit,
    };
    let mut group = c.benchmark_group(format!("history/{name}"));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    for limit in [500, 1000] {
        group.bench_function(format!("all 1M events -> {limit} points"), |b| {
            b.iter(|| {
                runtime
                    .block_on(store.history(&query(None, None, limit)))
                    .expect("history")
            })
        });
    }
    group.bench_function("a 10,000-event window -> 1000 points", |b| {
        let from = 500_000 * 1_000_000;
        b.iter(|| {
            runtime
                .block_on(store.history(&query(Some(from), Some(from + 10_000 * 1_000_000), 1000)))
                .expect("history")
        })
    });
    group.bench_function("a 500-event window, raw", |b| {
        let from = 700_000 * 1_000_000;
        b.iter(|| {
            runtime
                .block_on(store.history(&query(Some(from), Some(from + 499 * 1_000_000), 1000)))
                .expect("history")
        })
    });
    group.finish();
}

fn history(c: &mut Criterion) {
    let path = std::env::temp_dir().join(format!("skuwatch-bench-{}.db", std::process::id()));
    bench_backend(c, "sqlite", &format!("sqlite://{}", path.display()), false);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if let Ok(admin) = std::env::var("SKUWATCH_BENCH_POSTGRES") {
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let name = format!("skuwatch_bench_{}", std::process::id());
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .expect("create");
        });
        let base = admin
            .rsplit_once('/')
            .map_or(admin.as_str(), |(b, _)| b)
            .to_owned();
        bench_backend(c, "postgres", &format!("{base}/{name}"), true);
        runtime.block_on(async {
            let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
            let _ = sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        });
    }
}

criterion_group!(benches, history);
criterion_main!(benches);
