//! Names of the metrics the actors emit. The server describes them (units,
//! help text) with every other metric in its `metrics` module; they are
//! defined here because this crate cannot depend on the server.
//!
//! No metric here has a SKU label: the number of series must not grow with
//! the catalog.

/// Gauge: SKU actors active on this instance.
pub const ACTORS_ACTIVE: &str = "skuwatch_actors_active";
/// Counter: SKU actors started on first use (restarts not included).
pub const ACTOR_ACTIVATIONS: &str = "skuwatch_actor_activations_total";
/// Counter: SKU actors stopped after being idle for the idle time, or right
/// after finding their SKU absent (a read of an unknown code keeps none).
pub const ACTOR_PASSIVATIONS: &str = "skuwatch_actor_passivations_total";
/// Counter: SKU actors restarted by the supervisor after a failure.
pub const ACTOR_RESTARTS: &str = "skuwatch_actor_restarts_total";
/// Histogram: jobs (single writes, batches) in one commit call of a SKU
/// actor: the writes that arrived while its previous call was in flight.
pub const ACTOR_COMMIT_WRITES: &str = "skuwatch_actor_commit_writes";
/// Counter: writes refused at once (503 `overloaded`) because their SKU
/// already held `SKUWATCH_ACTOR_MAILBOX` writes not yet answered.
pub const ACTOR_MAILBOX_REFUSED: &str = "skuwatch_actor_mailbox_refused_total";

/// Counter: states offered to a SKU actor (changes from the feed, a
/// batch's other lines, states shown to a client) merged into one already
/// waiting for it instead of queued behind it (see [`crate::handle`]).
pub const ACTOR_CHANGES_CONFLATED: &str = "skuwatch_actor_changes_conflated_total";

/// Gauge: SKU actors kept active because their SKU has WebSocket
/// subscribers (capped by `SKUWATCH_ACTOR_MAX_PINNED`).
pub const ACTORS_PINNED: &str = "skuwatch_actors_pinned";
/// Counter: idle subscribed SKU actors passivated because the pin cap was
/// reached (their subscribers still get every change).
pub const ACTOR_PINS_REFUSED: &str = "skuwatch_actor_pins_refused_total";

pub(crate) fn set_pinned(count: usize) {
    metrics::gauge!(ACTORS_PINNED).set(count as f64);
}

/// Sets [`ACTORS_ACTIVE`] from the registry's map, the one source of truth
/// (incrementing and decrementing separately could drift on races).
pub(crate) fn set_active(count: usize) {
    metrics::gauge!(ACTORS_ACTIVE).set(count as f64);
}
