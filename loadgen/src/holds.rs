//! [`Mode::Holds`](super::Mode::Holds): checkout holds under load (issue
//! 17). Each writer loops: create a hold of 1-2 units of a random SKU
//! (`--hold-ttl-secs`), then commit it (`--commit-share`), release it
//! (`--release-share`) or let it expire; a share of the loop's turns are
//! plain sales instead (`--sale-share`). One WebSocket client watches every
//! change and records the lowest `available` it sees. After the run and the
//! last expiries, every SKU is read back: no oversell means `reserved` is 0,
//! and the stock sum is the initial sum less what the commits and sales
//! took.

use super::*;

/// Per worker: units sold by commits and by adjustments, and counts.
#[derive(Default)]
struct Tally {
    created: u64,
    refused: u64,
    committed: u64,
    released: u64,
    left_to_expire: u64,
    sales: u64,
    units_sold: i64,
    create_ns: Vec<u64>,
    commit_ns: Vec<u64>,
}

async fn post(shared: &Shared, path: &str, body: Option<Value>) -> Result<(u16, Value), Error> {
    let mut request = shared
        .http
        .post(format!("{}{path}", shared.base))
        .header("authorization", &shared.auth);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

async fn worker(args: Arc<HoldArgs>, shared: Arc<Shared>, seed: u64) -> Tally {
    let mut rng = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut tally = Tally::default();
    while !shared.stop.load(Ordering::Relaxed) {
        let sku = sku_code(&args.prefix, (next() % args.skus as u64) as usize);
        let roll = (next() % 1000) as f64 / 1000.0;
        let quantity = 1 + (next() % 2) as i64;
        if roll < args.sale_share {
            match post(
                &shared,
                &format!("/api/v1/skus/{sku}/stock/adjustments"),
                Some(json!({ "delta": -quantity, "reason": "sale" })),
            )
            .await
            {
                Ok((200, _)) => {
                    tally.sales += 1;
                    tally.units_sold += quantity;
                }
                Ok((409, _)) => tally.refused += 1,
                Ok((status, body)) => shared.error(format!("sale {status}: {body}")),
                Err(e) => shared.error(format!("sale: {e}")),
            }
            continue;
        }
        let started = now_ns();
        let body =
            json!({ "lines": [{ "sku": sku, "quantity": quantity }], "ttl_secs": args.ttl_secs });
        let id = match post(&shared, "/api/v1/holds", Some(body)).await {
            Ok((201, held)) => held["id"].as_str().unwrap_or_default().to_owned(),
            Ok((409, _)) => {
                tally.refused += 1;
                continue;
            }
            Ok((status, body)) => {
                shared.error(format!("create {status}: {body}"));
                continue;
            }
            Err(e) => {
                shared.error(format!("create: {e}"));
                continue;
            }
        };
        tally.created += 1;
        tally.create_ns.push(now_ns() - started);
        let roll = (next() % 1000) as f64 / 1000.0;
        let action = if roll < args.commit_share {
            "commit"
        } else if roll < args.commit_share + args.release_share {
            "release"
        } else {
            tally.left_to_expire += 1;
            continue;
        };
        let started = now_ns();
        match post(&shared, &format!("/api/v1/holds/{id}/{action}"), None).await {
            Ok((200, _)) if action == "commit" => {
                tally.committed += 1;
                tally.units_sold += quantity;
                tally.commit_ns.push(now_ns() - started);
            }
            Ok((200, _)) => tally.released += 1,
            Ok((status, body)) => shared.error(format!("{action} {status}: {body}")),
            Err(e) => shared.error(format!("{action}: {e}")),
        }
    }
    tally
}

/// What a holds run needs from the arguments.
struct HoldArgs {
    prefix: String,
    skus: usize,
    ttl_secs: i64,
    commit_share: f64,
    release_share: f64,
    sale_share: f64,
}

/// Sum of stock and of reserved over the run's SKUs, read back.
async fn totals(args: &Args, shared: &Shared) -> Result<(i64, i64, i64), Error> {
    let (mut stock, mut reserved, mut lowest) = (0, 0, i64::MAX);
    let mut cursor = String::new();
    loop {
        let page = get_json(
            shared,
            &format!(
                "/api/v1/skus?limit=1000&q={}&cursor={cursor}",
                args.sku_prefix
            ),
        )
        .await?;
        for sku in page["items"].as_array().into_iter().flatten() {
            stock += sku["stock"].as_i64().unwrap_or(0);
            reserved += sku["reserved"].as_i64().unwrap_or(0);
            lowest = lowest.min(sku["available"].as_i64().unwrap_or(0));
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return Ok((stock, reserved, lowest)),
        }
    }
}

pub(super) async fn holds(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    if !args.no_create {
        create_skus(args, shared, args.skus).await?;
    }
    let (stock_before, reserved_before, _) = totals(args, shared).await?;
    let ready = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let gate = Arc::new(Semaphore::new(1));
    let watch = Watch {
        subscribe: r#"{"type":"subscribe","all":true}"#.to_owned(),
        expect_capacity: 1 << 16,
        check_stock: true,
        lag_from_at: false,
        read_every: Duration::ZERO,
        recv_buffer: 0,
    };
    let watching = tokio::spawn(watcher(
        shared.clone(),
        watch,
        ready.clone(),
        done.clone(),
        gate,
    ));
    ready.acquire().await?.forget();
    let hold_args = Arc::new(HoldArgs {
        prefix: args.sku_prefix.clone(),
        skus: args.skus,
        ttl_secs: args.hold_ttl_secs,
        commit_share: args.commit_share,
        release_share: args.release_share,
        sale_share: args.sale_share,
    });
    let server_before = args.server_pid.and_then(ProcStat::read);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.writers)
        .map(|i| tokio::spawn(worker(hold_args.clone(), shared.clone(), i as u64 + 1)))
        .collect();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    shared.stop.store(true, Ordering::Relaxed);
    let mut all = Tally::default();
    for w in workers {
        let t = w.await?;
        all.created += t.created;
        all.refused += t.refused;
        all.committed += t.committed;
        all.released += t.released;
        all.left_to_expire += t.left_to_expire;
        all.sales += t.sales;
        all.units_sold += t.units_sold;
        all.create_ns.extend(t.create_ns);
        all.commit_ns.extend(t.commit_ns);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server_after = args.server_pid.and_then(ProcStat::read);
    // The last holds expire, then the sweeper and the feed catch up.
    tokio::time::sleep(Duration::from_secs(
        args.hold_ttl_secs as u64 + args.drain_secs,
    ))
    .await;
    done.store(true, Ordering::Relaxed);
    let got = watching.await??;
    let (stock_after, reserved_after, lowest_available) = totals(args, shared).await?;
    let latency = |samples: &[u64]| {
        let mut h = histogram();
        for ns in samples {
            h.record((*ns).max(1_000)).ok();
        }
        percentiles_ns(&h)
    };
    let ended = all.committed + all.released + all.left_to_expire;
    let mut report = json!({
        "mode": "holds",
        "config": {
            "writers": args.writers, "skus": args.skus, "duration_s": args.duration,
            "hold_ttl_secs": args.hold_ttl_secs, "commit_share": args.commit_share,
            "release_share": args.release_share, "sale_share": args.sale_share,
        },
        "holds": {
            "created": all.created,
            "created_per_min": all.created as f64 * 60.0 / elapsed,
            "ended_per_min": ended as f64 * 60.0 / elapsed,
            "committed": all.committed, "released": all.released,
            "left_to_expire": all.left_to_expire, "refused_409": all.refused,
            "sales": all.sales,
        },
        "latency": { "create": latency(&all.create_ns), "commit": latency(&all.commit_ns) },
        "oversell_check": {
            "stock_before": stock_before, "stock_after": stock_after,
            "units_sold": all.units_sold,
            "stock_matches": stock_before - all.units_sold == stock_after,
            "reserved_before": reserved_before, "reserved_after": reserved_after,
            "lowest_available_pushed": got.min_available,
            "lowest_available_after": lowest_available,
        },
        "pushed_changes": got.arrivals.len(),
        "errors": shared.errors.lock().unwrap().clone(),
    });
    if let (Some(b), Some(a)) = (&server_before, &server_after) {
        let cpu = a.cpu_secs - b.cpu_secs;
        report["server"] = json!({ "cpu_s": cpu, "cores": cpu / elapsed });
    }
    Ok(report)
}
