//! A TCP proxy in front of the real Redis, so a test can take Redis away
//! from the servers it started (and from nobody else): refuse connections
//! as a stopped Redis would, or hold them silently as a cut network does.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Closes every connection and refuses new ones (Redis stopped, or its
    /// clients killed).
    Refuse,
    /// Keeps connections open but forwards nothing (a silent network cut);
    /// they are closed once the mode changes, as a real cut outlives TCP.
    Blackhole,
}

pub struct RedisProxy {
    addr: SocketAddr,
    mode: Arc<watch::Sender<Mode>>,
}

pub const REDIS_ADDR: &str = "127.0.0.1:6379";

impl RedisProxy {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr");
        let mode = Arc::new(watch::Sender::new(Mode::Pass));
        let modes = mode.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mode = modes.subscribe();
                if *mode.borrow() == Mode::Refuse {
                    continue; // dropped: connection closed at once
                }
                tokio::spawn(pump(client, mode));
            }
        });
        Self { addr, mode }
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }
}

async fn pump(mut client: TcpStream, mut mode: watch::Receiver<Mode>) {
    if *mode.borrow_and_update() == Mode::Pass {
        let Ok(mut upstream) = TcpStream::connect(REDIS_ADDR).await else {
            return;
        };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => return,
            _ = mode.wait_for(|m| *m != Mode::Pass) => {}
        }
        if *mode.borrow() == Mode::Refuse {
            return;
        }
    }
    // Blackhole: hold the client, forward nothing, until any change.
    let _ = mode.changed().await;
}

/// A fresh key prefix for one test, so tests share the Redis safely.
pub fn test_prefix() -> String {
    format!("skuwatch-test-{}", uuid_like())
}

fn uuid_like() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// Removes a test's keys.
pub async fn cleanup(prefix: &str) {
    let Ok(client) = redis::Client::open(format!("redis://{REDIS_ADDR}/")) else {
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    if !keys.is_empty() {
        let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query_async(&mut conn).await;
    }
}
