//! [`Mode::Webhooks`](super::Mode::Webhooks): a burst of alerts delivered
//! to a local receiver (issue 19's targets). The receiver (this process,
//! `127.0.0.1`, so the server needs `SKUWATCH_WEBHOOK_ALLOW_PRIVATE=true`)
//! answers 204 and records each request's `webhook-id` and arrival; with
//! `--receiver-down-secs` it does not listen for that long after the
//! burst (connections refused), then comes back. One endpoint takes every
//! alert; `--skus` new SKUs (stock 10, threshold 5) are sold down to 4 in
//! batches of up to 1,000 lines, which raises one `low_stock` alert each.
//!
//! Reported: the time from the burst's first write to the last new id,
//! distinct ids and repeats (a repeat is a retry of a delivered message:
//! should be 0 when the receiver answers 2xx), alerts carried by digests,
//! and the latency from each alert's `raised_at` (the server's clock, the
//! same machine's) to its arrival.

use std::collections::HashMap;
use std::net::SocketAddr;

use super::*;

#[derive(Default)]
struct Seen {
    /// webhook-id -> times received.
    ids: HashMap<String, u32>,
    /// Alert id -> messages or digests that carried it.
    alerts: HashMap<i64, u32>,
    latency_ns: Vec<u64>,
    last_new_ns: u64,
    digests: u64,
}

type SeenRef = Arc<Mutex<Seen>>;

async fn receive(
    axum::extract::State(seen): axum::extract::State<SeenRef>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let arrived_us = wall_us();
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut seen = seen.lock().unwrap();
    let times = seen.ids.entry(id).or_default();
    *times += 1;
    if *times == 1 {
        seen.last_new_ns = now_ns();
        let mut alerts: Vec<&Value> = Vec::new();
        if message["type"] == "alert.digest" {
            seen.digests += 1;
            if let Some(list) = message["data"]["messages"].as_array() {
                alerts.extend(list.iter().map(|m| &m["alert"]));
            }
        } else {
            alerts.push(&message["data"]["alert"]);
        }
        for alert in alerts {
            let Some(alert_id) = alert["id"].as_i64() else {
                continue;
            };
            *seen.alerts.entry(alert_id).or_default() += 1;
            let raised = alert["raised_at"]
                .as_str()
                .and_then(|t| find_rfc3339_us(format!("@{t}").as_bytes(), b"@"));
            if let Some(raised) = raised {
                seen.latency_ns
                    .push(arrived_us.saturating_sub(raised) * 1000);
            }
        }
    }
    axum::http::StatusCode::NO_CONTENT
}

/// Serves the receiver on `addr` until `stop` fires.
async fn serve(addr: SocketAddr, seen: SeenRef, stop: tokio::sync::oneshot::Receiver<()>) {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind the receiver");
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await;
}

pub(super) async fn webhooks(args: &Args, shared: &Arc<Shared>) -> Result<Value, Error> {
    let seen: SeenRef = Arc::default();
    // A free port, kept for the receiver's whole life (also while down).
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let mut receiver = Some(tokio::spawn(serve(addr, seen.clone(), stop_rx)));
    let mut stop_tx = Some(stop_tx);
    let endpoint: Value = shared
        .http
        .post(format!("{}/api/v1/webhooks", shared.base))
        .header("authorization", &shared.auth)
        .json(&json!({ "url": format!("http://{addr}/hook"), "description": "loadgen" }))
        .send()
        .await?
        .json()
        .await?;
    let endpoint_id = endpoint["id"]
        .as_str()
        .ok_or_else(|| format!("webhook not created: {endpoint}"))?
        .to_owned();
    // Fresh SKUs: stock 10, threshold 5.
    let n = args.skus;
    let prefix = format!("{}{}", args.sku_prefix, wall_us() % 1_000_000);
    let mut csv = String::from("sku,name,price,currency,stock,low_stock_threshold\n");
    for i in 0..n {
        csv.push_str(&format!(
            "{},WEBHOOK ITEM {i},1.00,GBP,10,5\n",
            sku_code(&prefix, i)
        ));
    }
    post_import(shared, csv).await?;
    if args.receiver_down_secs > 0 {
        if let (Some(stop), Some(task)) = (stop_tx.take(), receiver.take()) {
            let _ = stop.send(());
            let _ = task.await;
        }
    }
    let started = now_ns();
    for from in (0..n).step_by(1000) {
        let lines: Vec<Value> = (from..(from + 1000).min(n))
            .map(|i| json!({ "sku": sku_code(&prefix, i), "delta": -6 }))
            .collect();
        let response = shared
            .http
            .post(format!("{}/api/v1/stock/adjustments", shared.base))
            .header("authorization", &shared.auth)
            .json(&json!({ "adjustments": lines, "reason": "sale" }))
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(format!("batch: {}", response.status()).into());
        }
    }
    let written_s = (now_ns() - started) as f64 / 1e9;
    if args.receiver_down_secs > 0 {
        tokio::time::sleep(Duration::from_secs(args.receiver_down_secs)).await;
        let (tx, rx) = tokio::sync::oneshot::channel();
        stop_tx = Some(tx);
        receiver = Some(tokio::spawn(serve(addr, seen.clone(), rx)));
    }
    let deadline = Instant::now() + Duration::from_secs(args.duration.max(1));
    while seen.lock().unwrap().alerts.len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A little longer: repeats would show now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = {
        let seen = seen.lock().unwrap();
        let mut latency = histogram();
        for ns in &seen.latency_ns {
            latency.saturating_record((*ns).max(1));
        }
        json!({
            "mode": "webhooks",
            "alerts": n,
            "alerts_delivered": seen.alerts.len(),
            "alerts_in_several_messages": seen.alerts.values().filter(|&&k| k > 1).count(),
            "messages": seen.ids.len(),
            "repeated_ids": seen.ids.values().filter(|&&k| k > 1).count(),
            "digests": seen.digests,
            "burst_written_s": written_s,
            "all_delivered_s": (seen.last_new_ns.saturating_sub(started)) as f64 / 1e9,
            "receiver_down_s": args.receiver_down_secs,
            "raised_to_arrival": percentiles_ns(&latency),
        })
    };
    let _ = shared
        .http
        .delete(format!("{}/api/v1/webhooks/{endpoint_id}", shared.base))
        .header("authorization", &shared.auth)
        .send()
        .await;
    if let (Some(stop), Some(task)) = (stop_tx, receiver) {
        let _ = stop.send(());
        let _ = task.await;
    }
    Ok(report)
}
