//! Rate limit on failed logins, per username and per client address.

use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failed attempts allowed per key within [`WINDOW`].
const MAX_FAILURES_PER_USER: u32 = 5;
const MAX_FAILURES_PER_ADDRESS: u32 = 20;
const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys kept before old windows are swept.
const SWEEP_ABOVE: usize = 10_000;

/// Counts failed logins in a fixed window per key.
#[derive(Default)]
pub struct LoginThrottle {
    failures: DashMap<String, (u32, Instant)>,
}

impl LoginThrottle {
    /// `Some(seconds to wait)` when the username or the address used up its
    /// failures (answer 429 with `Retry-After`).
    pub fn blocked(&self, username: &str, address: &str) -> Option<u64> {
        [
            (format!("user:{username}"), MAX_FAILURES_PER_USER),
            (format!("addr:{address}"), MAX_FAILURES_PER_ADDRESS),
        ]
        .into_iter()
        .filter_map(|(key, max)| {
            let entry = self.failures.get(&key)?;
            let (count, since) = *entry;
            let left = WINDOW.checked_sub(since.elapsed())?;
            (count >= max).then(|| left.as_secs().max(1))
        })
        .max()
    }

    pub fn failed(&self, username: &str, address: &str) {
        if self.failures.len() > SWEEP_ABOVE {
            self.failures
                .retain(|_, (_, since)| since.elapsed() < WINDOW);
        }
        for key in [format!("user:{username}"), format!("addr:{address}")] {
            let mut entry = self.failures.entry(key).or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            entry.0 += 1;
        }
    }

    /// A successful login clears the username's count.
    pub fn succeeded(&self, username: &str) {
        self.failures.remove(&format!("user:{username}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sixth_failure_for_one_username_is_blocked_and_success_clears_it() {
        let throttle = LoginThrottle::default();
        for _ in 0..5 {
            assert_eq!(throttle.blocked("alice", "1.2.3.4"), None);
            throttle.failed("alice", "1.2.3.4");
        }
        assert!(throttle.blocked("alice", "5.6.7.8").is_some());
        assert_eq!(throttle.blocked("bob", "5.6.7.8"), None);
        throttle.succeeded("alice");
        assert_eq!(throttle.blocked("alice", "5.6.7.8"), None);
    }
}
