//! Giving memory back to the system after a load (issue 15, target 5).
//!
//! mimalloc keeps the pages a thread freed in that thread's heap, for the
//! thread's next allocations; after a load, the runtime's threads hold the
//! peak's worth of free pages until they allocate again. `mi_collect(true)`
//! returns them, but only for the heap of the thread that calls it. So the
//! refresher asks for a collection ([`release_soon`]) when the instance's
//! load has fallen to half of its peak ([`LoadWatch`]), and each runtime
//! thread collects its own heap the next time it parks ([`on_park`], a
//! runtime hook set in `main`), which is when it has nothing to do.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Bumped to ask every runtime thread for one collection.
static EPOCH: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The last epoch this thread collected for.
    static COLLECTED: Cell<u64> = const { Cell::new(0) };
}

/// Asks every runtime thread to return its free memory when it next
/// parks; the calling thread collects its own at once.
pub fn release_soon() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
    on_park();
}

/// The runtime's `on_thread_park` hook: one atomic load unless a
/// collection was asked for since this thread's last one.
pub fn on_park() {
    let epoch = EPOCH.load(Ordering::Relaxed);
    COLLECTED.with(|seen| {
        if seen.get() != epoch {
            seen.set(epoch);
            // SAFETY: no preconditions; it only touches the calling
            // thread's heap and the shared arenas (under their locks).
            unsafe { libmimalloc_sys::mi_collect(true) };
        }
    });
}

/// Decides when a load has ended: the load (active SKU actors plus open
/// WebSocket sessions, sampled by the refresher) has fallen to half of its
/// peak since the last release, or to zero from anything. At most one
/// release per [`LoadWatch::MIN_GAP`], so a wobbling load does not make the
/// threads give back pages they are about to take again.
#[derive(Debug)]
pub struct LoadWatch {
    peak: usize,
    last: Option<Instant>,
}

impl LoadWatch {
    pub const MIN_GAP: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Self {
            peak: 0,
            last: None,
        }
    }

    /// Records a sample; `true` when memory should be released now.
    pub fn observe(&mut self, load: usize, now: Instant) -> bool {
        self.peak = self.peak.max(load);
        let fell = self.peak > 0 && load <= self.peak / 2;
        let waited = self.last.is_none_or(|at| now - at >= Self::MIN_GAP);
        if fell && waited {
            self.peak = load;
            self.last = Some(now);
            return true;
        }
        false
    }
}

impl Default for LoadWatch {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_that_halves_releases_once_per_gap() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut watch = LoadWatch::new();
        assert!(!watch.observe(0, at(0)), "nothing ever ran");
        assert!(!watch.observe(1000, at(10)));
        assert!(!watch.observe(600, at(20)), "not yet half");
        assert!(watch.observe(400, at(30)), "the load ended");
        assert!(!watch.observe(0, at(40)), "within the gap");
        assert!(watch.observe(0, at(61)), "down to zero, after the gap");
        assert!(!watch.observe(0, at(200)), "nothing new to give back");
        assert!(!watch.observe(10, at(210)));
        assert!(watch.observe(5, at(220)), "a small load that ended");
    }
}
