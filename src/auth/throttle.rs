//! Rate limit on failed logins, built so that an attacker cannot lock the
//! owner out (issue 13, fault 13).
//!
//! Three fixed windows of [`WINDOW`], counted on failures:
//! - per username-and-address ([`MAX_FAILURES_PER_PAIR`]): guessing one
//!   account from one place. It never touches the same user elsewhere, nor
//!   other users at the same address.
//! - per address ([`MAX_FAILURES_PER_ADDRESS`]): one place spraying many
//!   usernames;
//! - per username ([`MAX_FAILURES_PER_USER`]): many places guessing one
//!   account.
//!
//! The per-address and per-username limits refuse only pairs that are not
//! *known*: a username that logged in successfully from that address
//! within [`KNOWN_FOR`]. So a user's own correct login from their usual
//! address is never refused by someone else's failures (only by five of
//! their own, or someone's at the very same address). A new address of an
//! attacked user, or a new user behind an attacked NAT, waits for the
//! window: that is the cost of the per-address and per-username limits,
//! which alone stop spraying and distributed guessing.
//!
//! Memory: usernames that are not valid usernames share one key, and at
//! most [`MAX_KEYS`] counters and [`MAX_KNOWN`] known pairs are held;
//! expired ones are swept first. When full, new keys are not counted (and
//! a warning logged): failing open for new keys, rather than refusing
//! everyone, keeps the owner in. The `skuwatch_login_throttle_keys` gauge
//! shows the count.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Failures allowed per username-and-address within [`WINDOW`].
pub const MAX_FAILURES_PER_PAIR: u32 = 5;
/// Failures allowed per address within [`WINDOW`] (unknown pairs only).
pub const MAX_FAILURES_PER_ADDRESS: u32 = 20;
/// Failures allowed per username within [`WINDOW`] (unknown pairs only).
pub const MAX_FAILURES_PER_USER: u32 = 100;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// How long a successful login makes its username-and-address known.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);
/// Most failure counters held.
pub const MAX_KEYS: usize = 100_000;
/// Most known pairs held.
pub const MAX_KNOWN: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Pair(String, IpAddr),
    Address(IpAddr),
    User(String),
}

/// Which limit refused an attempt (the metric's `scope` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Pair,
    Address,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Pair => "pair",
            Scope::Address => "address",
            Scope::User => "user",
        }
    }
}

/// A refused attempt: the limit, and seconds until its window ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    pub scope: Scope,
    pub retry_after: u64,
}

/// Counts failed logins in fixed windows; see the module documentation.
#[derive(Default)]
pub struct LoginThrottle {
    failures: DashMap<Key, (u32, Instant)>,
    known: DashMap<(String, IpAddr), Instant>,
}

/// The username as a key: invalid names (any length a body allows) share one.
fn user_key(username: &str) -> String {
    if super::valid_username(username) {
        username.to_owned()
    } else {
        "\u{0}invalid".to_owned()
    }
}

impl LoginThrottle {
    /// Lets one attempt of `username` from `address` through, or refuses it
    /// (429 with `Retry-After`). A let-through attempt counts as a failure
    /// at once, until [`Self::succeeded`] gives it back: the check and the
    /// count are one step per key (under its map entry's lock), so guesses
    /// sent in parallel cannot all pass a check made before the slow
    /// password verification of any of them failed.
    pub fn attempt(&self, username: &str, address: IpAddr) -> Result<(), Blocked> {
        let user = user_key(username);
        let known = self
            .known
            .get(&(user.clone(), address))
            .is_some_and(|at| at.elapsed() < KNOWN_FOR);
        let keys = [
            (
                Key::Pair(user.clone(), address),
                MAX_FAILURES_PER_PAIR,
                Scope::Pair,
                true,
            ),
            (
                Key::Address(address),
                MAX_FAILURES_PER_ADDRESS,
                Scope::Address,
                !known,
            ),
            (Key::User(user), MAX_FAILURES_PER_USER, Scope::User, !known),
        ];
        let mut taken: Vec<Key> = Vec::with_capacity(3);
        for (key, max, scope, enforced) in keys {
            if !self.failures.contains_key(&key) && !self.room_for_failure() {
                tracing::warn!("login throttle full; a new key is not counted");
                continue;
            }
            let mut entry = self
                .failures
                .entry(key.clone())
                .or_insert((0, Instant::now()));
            if entry.1.elapsed() >= WINDOW {
                *entry = (0, Instant::now());
            }
            if enforced && entry.0 >= max {
                let retry_after = WINDOW.saturating_sub(entry.1.elapsed()).as_secs().max(1);
                drop(entry);
                for key in &taken {
                    self.give_back(key);
                }
                return Err(Blocked { scope, retry_after });
            }
            entry.0 = entry.0.saturating_add(1);
            taken.push(key);
        }
        Ok(())
    }

    fn give_back(&self, key: &Key) {
        if let Some(mut entry) = self.failures.get_mut(key) {
            entry.0 = entry.0.saturating_sub(1);
        }
    }

    /// A successful login after [`Self::attempt`]: clears the pair's count,
    /// gives the attempt back to the address and the user, and makes the
    /// pair known.
    pub fn succeeded(&self, username: &str, address: IpAddr) {
        let user = user_key(username);
        self.failures.remove(&Key::Pair(user.clone(), address));
        self.give_back(&Key::Address(address));
        self.give_back(&Key::User(user.clone()));
        let key = (user, address);
        if !self.known.contains_key(&key) && self.known.len() >= MAX_KNOWN {
            self.known.retain(|_, at| at.elapsed() < KNOWN_FOR);
            if self.known.len() >= MAX_KNOWN {
                return;
            }
        }
        self.known.insert(key, Instant::now());
    }

    /// Keys held (failure counters and known pairs), for the gauge.
    pub fn keys(&self) -> usize {
        self.failures.len() + self.known.len()
    }

    fn room_for_failure(&self) -> bool {
        if self.failures.len() < MAX_KEYS {
            return true;
        }
        self.failures
            .retain(|_, (_, since)| since.elapsed() < WINDOW);
        self.failures.len() < MAX_KEYS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn failures_from_one_address_do_not_lock_the_user_out_elsewhere() {
        let throttle = LoginThrottle::default();
        for _ in 0..MAX_FAILURES_PER_PAIR {
            assert_eq!(throttle.attempt("alice", ip("1.2.3.4")), Ok(()));
        }
        assert_eq!(
            throttle
                .attempt("alice", ip("1.2.3.4"))
                .map_err(|b| b.scope),
            Err(Scope::Pair)
        );
        assert_eq!(throttle.attempt("alice", ip("5.6.7.8")), Ok(()));
        assert_eq!(throttle.attempt("bob", ip("1.2.3.4")), Ok(()));
        throttle.succeeded("alice", ip("5.6.7.8"));
        assert!(throttle.attempt("alice", ip("1.2.3.4")).is_err());
    }

    #[test]
    fn a_spraying_address_is_refused_except_for_known_pairs() {
        let throttle = LoginThrottle::default();
        throttle.succeeded("carol", ip("9.9.9.9"));
        for i in 0..MAX_FAILURES_PER_ADDRESS {
            assert_eq!(throttle.attempt(&format!("user{i}"), ip("9.9.9.9")), Ok(()));
        }
        let blocked = throttle
            .attempt("dave", ip("9.9.9.9"))
            .expect_err("blocked");
        assert_eq!(blocked.scope, Scope::Address);
        assert_eq!(throttle.attempt("carol", ip("9.9.9.9")), Ok(()));
    }

    #[test]
    fn distributed_guessing_is_refused_except_from_known_addresses() {
        let throttle = LoginThrottle::default();
        throttle.succeeded("admin", ip("10.1.1.1"));
        for i in 0..MAX_FAILURES_PER_USER {
            let address = IpAddr::from([172, 16, (i / 256) as u8, (i % 256) as u8]);
            assert_eq!(throttle.attempt("admin", address), Ok(()));
        }
        assert_eq!(
            throttle
                .attempt("admin", ip("203.0.113.1"))
                .map_err(|b| b.scope),
            Err(Scope::User)
        );
        assert_eq!(throttle.attempt("admin", ip("10.1.1.1")), Ok(()));
    }

    #[test]
    fn a_successful_login_gives_its_attempt_back() {
        let throttle = LoginThrottle::default();
        for _ in 0..MAX_FAILURES_PER_ADDRESS * 2 {
            assert_eq!(throttle.attempt("erin", ip("7.7.7.7")), Ok(()));
            throttle.succeeded("erin", ip("7.7.7.7"));
        }
        throttle.known.clear();
        assert_eq!(throttle.attempt("frank", ip("7.7.7.7")), Ok(()));
    }

    #[test]
    fn long_invalid_usernames_share_one_key() {
        let throttle = LoginThrottle::default();
        for i in 0..50 {
            let _ = throttle.attempt(&format!("{}{i}", "x".repeat(100)), ip("1.1.1.1"));
        }
        // One pair, one address, one user key.
        assert_eq!(throttle.keys(), 3);
    }
}
