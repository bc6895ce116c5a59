//! The write planner: what a group of [`WriteJob`]s does, decided in memory
//! against the rows a store has locked. Pure (no I/O, no clock): the store
//! reads, calls [`plan`], and only executes what it returns.
//!
//! The rules stay in [`decide`] and [`evaluate_alerts`]; the planner only
//! sequences them:
//! - jobs run in the order given; a SKU touched twice is decided against
//!   its state after the earlier change (versions stay consecutive);
//! - a batch job is all-or-nothing: its lines are decided on a scratch copy
//!   that is kept only if every line is accepted (API.md: a refusal names
//!   every SKU the batch takes below 0);
//! - `If-Match` applies per single job (a batch spans SKUs and ignores it);
//! - alerts are evaluated per change, against the alerts active after the
//!   changes before it, so an alert raised by one change of the group can be
//!   resolved by a later one ([`AlertRef::New`]).

use std::collections::BTreeMap;
use std::ops::Range;

use crate::domain::{
    decide, decide_hold, evaluate_alerts, forecast_config, Alert, AlertAction, AlertKind, Change,
    Command, Committed, DomainError, Event, Field, Hold, HoldId, Micros, Shortfall, Sku, SkuCode,
    WriteMeta, REFORECAST_REASON,
};
use crate::store::{AdjustmentLine, WriteJob, WriteOutcome};

/// What one job does.
#[derive(Debug, Clone, PartialEq)]
pub enum JobPlan {
    /// Refused by a domain rule; nothing of the job is written.
    Rejected(DomainError),
    /// Accepted with no change (an upsert equal to the stored row).
    Unchanged,
    /// Accepted: its events are `Plan::events[range]`, in order.
    Changed(Range<usize>),
    /// A hold job accepted: its hold write is `Plan::holds[hold]`, its
    /// events `Plan::events[events]` (none for an extension).
    Held { hold: usize, events: Range<usize> },
}

/// A hold row to write, in plan order (a hold changed twice in one plan
/// is written twice, in order).
#[derive(Debug, Clone, PartialEq)]
pub struct HoldWrite {
    /// The hold after the job; its `event_ids` are set by
    /// [`Plan::set_hold_events`] once the events have ids.
    pub hold: Hold,
    /// New row (else an update of the stored one).
    pub insert: bool,
    /// The job's events: `Plan::events[events]`.
    pub events: Range<usize>,
}

/// The hold rows a group's hold jobs read, as locked, and the database's
/// clock read in the same transaction (hold times are on it).
#[derive(Debug, Clone, Default)]
pub struct HoldRows {
    pub rows: BTreeMap<HoldId, Hold>,
    pub clock: Micros,
}

/// The row of a SKU after the whole plan.
#[derive(Debug, Clone, PartialEq)]
pub struct RowWrite {
    pub state: Sku,
    /// The SKU had no row when locked: the store inserts it (and must find
    /// out whether another writer created it meanwhile).
    pub insert: bool,
    /// A sale or return moved the sales rate (issue 18), so the store
    /// writes it; most writes leave it as stored and skip encoding it.
    pub rate_changed: bool,
}

/// An alert an action refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertRef {
    /// Stored before this plan, with its id.
    Existing(i64),
    /// Raised by this plan: the index of its raise in `Plan::alerts`.
    New(usize),
}

/// One alert statement, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertOp {
    Raise {
        sku: SkuCode,
        kind: AlertKind,
        message: String,
        value: serde_json::Value,
        threshold: serde_json::Value,
    },
    Resolve(AlertRef),
}

/// An event to append; its `event_id` is 0 until the store takes ids from
/// the clock (in this order, so ids follow the plan).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedEvent {
    /// Index of the job (in the slice given to [`plan`]).
    pub job: usize,
    pub event: Event,
    /// The SKU right after this event.
    pub state: Sku,
    /// The alert ops this change caused: `Plan::alerts[range]`.
    pub alerts: Range<usize>,
}

/// Everything a group of jobs writes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// One per job, in job order.
    pub jobs: Vec<JobPlan>,
    /// The final row of every SKU changed, by code (the order rows are
    /// written in, which is also the lock order).
    pub rows: BTreeMap<SkuCode, RowWrite>,
    pub alerts: Vec<AlertOp>,
    pub events: Vec<PlannedEvent>,
    pub holds: Vec<HoldWrite>,
}

impl Plan {
    /// Whether anything is to be written: every row write and alert op
    /// comes from an event.
    pub fn changes_anything(&self) -> bool {
        !self.events.is_empty() || !self.holds.is_empty()
    }

    /// Sets each hold's `event_ids` from its events as committed (same
    /// order as `Plan::events`), before the store writes the hold rows.
    /// An extension (no events) keeps the ids it had.
    pub fn set_hold_events(&mut self, committed: &[Committed]) {
        for write in &mut self.holds {
            if !write.events.is_empty() {
                write.hold.event_ids = committed[write.events.clone()]
                    .iter()
                    .map(|c| c.event.event_id)
                    .collect();
            }
        }
    }

    /// Takes the planned events out as committed changes, once the store
    /// has run [`Plan::alerts`]: `alerts` holds one alert per op, in op
    /// order, as it is right after its statement. Event ids stay 0 for the
    /// store to set from its clock.
    pub fn take_committed(&mut self, alerts: &[Alert]) -> Vec<Committed> {
        std::mem::take(&mut self.events)
            .into_iter()
            .map(|planned| Committed {
                event: planned.event,
                sku: planned.state,
                alerts: alerts[planned.alerts].to_vec(),
            })
            .collect()
    }

    /// Each job's outcome, in job order, given the changes as committed
    /// (`committed[i]` is `events[i]` with its id; each job's events are
    /// one run, in job order, so they are moved, not copied).
    pub fn outcomes(self, committed: Vec<Committed>) -> Vec<WriteOutcome> {
        let mut committed = committed.into_iter();
        let mut holds = self.holds.into_iter().map(|write| write.hold);
        self.jobs
            .into_iter()
            .map(|job| match job {
                JobPlan::Rejected(rejection) => WriteOutcome::Rejected(rejection),
                JobPlan::Unchanged => WriteOutcome::Committed(Vec::new()),
                JobPlan::Changed(range) => {
                    WriteOutcome::Committed(committed.by_ref().take(range.len()).collect())
                }
                JobPlan::Held { events, .. } => match holds.next() {
                    Some(hold) => WriteOutcome::Held {
                        hold: Box::new(hold),
                        changes: committed.by_ref().take(events.len()).collect(),
                    },
                    None => unreachable!("one hold write per held job"),
                },
            })
            .collect()
    }
}

/// Plans `jobs` in order against `rows` (the locked rows, by code; a SKU
/// absent here has no row), `active` (the open or acknowledged alerts of
/// those SKUs as `(id, kind)`) and `holds` (the hold rows hold jobs read,
/// locked), at `now` (read after the rows were locked, so per SKU `at`
/// follows `version`).
pub fn plan(
    rows: BTreeMap<SkuCode, Sku>,
    active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>>,
    holds: HoldRows,
    jobs: &[&WriteJob],
    now: Micros,
) -> Plan {
    let mut planner = Planner {
        existed: rows.keys().cloned().collect(),
        current: rows,
        // Raised-in-plan alerts are carried as negative ids (-(k + 1)) so
        // that `evaluate_alerts` sees them like stored ones.
        active,
        judge_from: BTreeMap::new(),
        rate_changed: Default::default(),
        plan: Plan::default(),
    };
    let clock = holds.clock;
    let mut hold_rows = holds.rows;
    for (index, job) in jobs.iter().enumerate() {
        let decided = match job {
            WriteJob::Single { sku, request } => decide(
                sku,
                planner.current.get(sku),
                &request.command,
                &request.meta,
                now,
            )
            .map(|changes| (changes, &request.meta)),
            WriteJob::Batch { lines, meta, .. } => {
                // Only the batch's own rows: kept only if it is accepted
                // (then through `push`, like any change).
                let mut scratch: BTreeMap<SkuCode, Sku> = lines
                    .iter()
                    .filter_map(|l| planner.current.get_key_value(&l.sku))
                    .map(|(code, sku)| (code.clone(), sku.clone()))
                    .collect();
                decide_batch(lines, &mut scratch, meta, now).map(|changes| (changes, meta))
            }
            WriteJob::Hold { action, meta, .. } => {
                let stored = hold_rows.get(action.id());
                let mut scratch: BTreeMap<SkuCode, Sku> = job
                    .skus()
                    .chain(stored.iter().flat_map(|h| h.lines.iter().map(|l| &l.sku)))
                    .filter_map(|code| planner.current.get_key_value(code))
                    .map(|(code, sku)| (code.clone(), sku.clone()))
                    .collect();
                let decided = decide_hold(
                    action,
                    stored,
                    &mut scratch,
                    meta.actor.as_deref(),
                    clock,
                    now,
                );
                let job_plan = match decided {
                    Err(rejection) => JobPlan::Rejected(rejection),
                    Ok(None) => JobPlan::Unchanged,
                    Ok(Some(decision)) => {
                        let start = planner.plan.events.len();
                        for change in decision.changes {
                            planner.push(index, change, meta, now);
                        }
                        let events = start..planner.plan.events.len();
                        hold_rows.insert(decision.hold.id.clone(), decision.hold.clone());
                        planner.plan.holds.push(HoldWrite {
                            hold: decision.hold,
                            insert: decision.insert,
                            events: events.clone(),
                        });
                        JobPlan::Held {
                            hold: planner.plan.holds.len() - 1,
                            events,
                        }
                    }
                };
                planner.plan.jobs.push(job_plan);
                continue;
            }
        };
        let job_plan = match decided {
            Err(rejection) => JobPlan::Rejected(rejection),
            Ok((changes, _)) if changes.is_empty() => JobPlan::Unchanged,
            // A re-read forecast is written only when it changes the alerts.
            Ok((changes, meta)) if !planner.reforecast_alerts(&changes, meta, now) => {
                JobPlan::Unchanged
            }
            Ok((changes, meta)) => {
                let start = planner.plan.events.len();
                for change in changes {
                    planner.push(index, change, meta, now);
                }
                JobPlan::Changed(start..planner.plan.events.len())
            }
        };
        planner.plan.jobs.push(job_plan);
    }
    planner.finish()
}

struct Planner {
    /// Each SKU's state after the changes planned so far.
    current: BTreeMap<SkuCode, Sku>,
    /// The SKUs that had a row when locked.
    existed: std::collections::BTreeSet<SkuCode>,
    active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>>,
    /// Per SKU, the state a change judged with the next one started from
    /// ([`Change::judged_with_next`]).
    judge_from: BTreeMap<SkuCode, Option<Sku>>,
    /// The SKUs whose sales rate a change of this plan moved.
    rate_changed: std::collections::BTreeSet<SkuCode>,
    plan: Plan,
}

impl Planner {
    /// The sales rate and the forecast (issue 18) after `change`: a stock
    /// change whose reason is a sale or a return feeds the rate (the store
    /// rebuilt a missing rate before planning; one still missing stays
    /// so), and every change re-reads the forecast as of its time.
    /// Returns whether the rate moved.
    fn forecast(change: &mut Change, meta: &WriteMeta, now: Micros) -> bool {
        let config = forecast_config();
        let reason = change.reason.or(meta.reason.as_deref());
        let mut moved = false;
        if let (Field::Stock, Some(delta), Some(rate)) =
            (change.field, change.delta, change.state.sales_rate.as_mut())
        {
            if let Some((kind, units)) = config.sale_of(reason, delta) {
                rate.apply(kind, units, now, &config.params);
                moved = true;
            }
        }
        change.state.refresh_forecast();
        if change.reason == Some(REFORECAST_REASON) {
            change.new = serde_json::json!({ "forecast": change.state.forecast });
        }
        moved
    }

    /// Whether `changes` is other than one [`Command::Reforecast`] change
    /// that would raise or resolve nothing.
    fn reforecast_alerts(&self, changes: &[Change], meta: &WriteMeta, now: Micros) -> bool {
        let [change] = changes else {
            return true;
        };
        if change.reason != Some(REFORECAST_REASON) {
            return true;
        }
        let mut change = change.clone();
        Self::forecast(&mut change, meta, now);
        let held = self
            .active
            .get(&change.state.sku)
            .cloned()
            .unwrap_or_default();
        !evaluate_alerts(change.previous.as_ref(), &change.state, &held, None).is_empty()
    }

    fn push(&mut self, job: usize, mut change: Change, meta: &WriteMeta, now: Micros) {
        // Only `push` moves the rate, so the SKU's state here has the
        // authoritative one: a batch decides its lines on a scratch copy
        // chained from states whose rate no earlier line of it had moved
        // yet (two sale lines of one SKU would count only the last).
        if let Some(current) = self.current.get(&change.state.sku) {
            change.state.sales_rate.clone_from(&current.sales_rate);
        }
        if Self::forecast(&mut change, meta, now) {
            self.rate_changed.insert(change.state.sku.clone());
        }
        let sku = change.state.sku.clone();
        let alerts = if change.judged_with_next {
            self.judge_from.insert(sku.clone(), change.previous.clone());
            self.plan.alerts.len()..self.plan.alerts.len()
        } else {
            let before = self
                .judge_from
                .remove(&sku)
                .unwrap_or_else(|| change.previous.clone());
            let held = self.active.remove(&sku).unwrap_or_default();
            let actions = evaluate_alerts(
                before.as_ref(),
                &change.state,
                &held,
                change.price_anomaly.clone(),
            );
            let mut still = held;
            let alerts = push_alert_ops(&sku, actions, &mut still, &mut self.plan.alerts);
            self.active.insert(sku.clone(), still);
            alerts
        };
        self.current.insert(sku.clone(), change.state.clone());
        self.plan.events.push(PlannedEvent {
            job,
            event: Event {
                event_id: 0,
                sku,
                version: change.state.version,
                at: now,
                field: change.field,
                old: change.old,
                new: change.new,
                delta: change.delta,
                reason: change
                    .reason
                    .map(str::to_owned)
                    .or_else(|| meta.reason.clone()),
                actor: meta.actor.clone(),
            },
            state: change.state,
            alerts,
        });
    }

    fn finish(mut self) -> Plan {
        for planned in &self.plan.events {
            let sku = &planned.state.sku;
            if let Some(state) = self.current.get(sku) {
                self.plan.rows.insert(
                    sku.clone(),
                    RowWrite {
                        state: state.clone(),
                        insert: !self.existed.contains(sku),
                        rate_changed: self.rate_changed.contains(sku),
                    },
                );
            }
        }
        self.plan
    }
}

/// Appends the alert statements of `actions` (what one change of `sku`
/// raises or resolves, from [`evaluate_alerts`]) to `ops`, keeping `held`
/// (the SKU's active alerts as `(id, kind)`) in step: an alert raised by an
/// earlier op of `ops` is held under the placeholder id `-(index + 1)`, and
/// resolving it becomes [`AlertRef::New`]. Returns the range of `ops` added.
pub fn push_alert_ops(
    sku: &SkuCode,
    actions: Vec<AlertAction>,
    held: &mut Vec<(i64, AlertKind)>,
    ops: &mut Vec<AlertOp>,
) -> Range<usize> {
    let first = ops.len();
    for action in actions {
        match action {
            AlertAction::Raise {
                kind,
                message,
                value,
                threshold,
            } => {
                held.push((-(ops.len() as i64) - 1, kind));
                ops.push(AlertOp::Raise {
                    sku: sku.clone(),
                    kind,
                    message,
                    value,
                    threshold,
                });
            }
            AlertAction::Resolve { id } => {
                held.retain(|(h, _)| *h != id);
                let alert = if id < 0 {
                    AlertRef::New((-id - 1) as usize)
                } else {
                    AlertRef::Existing(id)
                };
                ops.push(AlertOp::Resolve(alert));
            }
        }
    }
    first..ops.len()
}

/// The alerts of changes the server did not decide (written straight into
/// the database, issue 16): `changes`, in `event_id` order, judged against
/// `rows` (their SKUs' rows as locked now) and `active` (those SKUs' open or
/// acknowledged alerts). Returns the alert statements and, per change, the
/// range of them it caused.
///
/// Each change is judged as an API change would be, from the state before
/// it ([`Event::state_before`]) to its own, with the price guard as it was.
/// After a SKU's last change here, the step from it to the row as it is now
/// is judged too (its ops go to that change): an API write committed in
/// between was judged against the alerts as they were before these, so the
/// SKU's alerts end up describing its current state.
pub fn external_alerts(
    changes: &[Committed],
    rows: &BTreeMap<SkuCode, Sku>,
    mut active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>>,
) -> (Vec<AlertOp>, Vec<Range<usize>>) {
    let mut ops = Vec::new();
    let mut ranges = Vec::with_capacity(changes.len());
    let last_of: BTreeMap<&SkuCode, usize> = changes
        .iter()
        .enumerate()
        .map(|(i, change)| (&change.sku.sku, i))
        .collect();
    for (i, change) in changes.iter().enumerate() {
        let code = &change.sku.sku;
        let held = active.entry(code.clone()).or_default();
        let before = change.event.state_before(&change.sku);
        let anomaly = match (&before, change.event.field) {
            (Some(before), crate::domain::Field::Price) => crate::domain::guard_violation(
                &before.price_guard,
                before.price(),
                change.sku.price(),
            ),
            _ => None,
        };
        let actions = evaluate_alerts(before.as_ref(), &change.sku, held, anomaly);
        let mut range = push_alert_ops(code, actions, held, &mut ops);
        let now = rows
            .get(code)
            .filter(|row| last_of[code] == i && row.version > change.sku.version);
        if let Some(row) = now {
            let actions = evaluate_alerts(Some(&change.sku), row, held, None);
            range.end = push_alert_ops(code, actions, held, &mut ops).end;
        }
        ranges.push(range);
    }
    (ops, ranges)
}

/// Decides a batch's lines in order against `current` (updated as lines
/// apply): all the changes, or the refusal that names every SKU the batch
/// takes below 0, each with the first line where it does and the lowest sum
/// its lines reach (a SKU may appear on several lines, and a later line
/// putting stock back does not undo an earlier one going below 0). Sums are
/// checked: past the 64-bit range is a refusal naming the line.
pub fn decide_batch(
    lines: &[AdjustmentLine],
    current: &mut BTreeMap<SkuCode, Sku>,
    meta: &WriteMeta,
    now: Micros,
) -> Result<Vec<Change>, DomainError> {
    // If-Match makes no sense across several SKUs; it is not applied.
    let line_meta = WriteMeta {
        if_match: None,
        ..meta.clone()
    };
    let mut changes = Vec::with_capacity(lines.len());
    let mut shortfalls: Vec<Shortfall> = Vec::new();
    let mut rejection = None;
    // Per SKU: the sum of its lines so far, and the lowest such sum.
    let mut sums: BTreeMap<&SkuCode, (i64, i64)> = BTreeMap::new();
    let mut stock_before: BTreeMap<&SkuCode, i64> = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        let field = || format!("adjustments[{i}].delta");
        let (sum, lowest) = sums.entry(&line.sku).or_insert((0, 0));
        let Some(next) = sum.checked_add(line.delta) else {
            rejection.get_or_insert(DomainError::Invalid {
                field: field(),
                message: format!(
                    "with the lines before it for {}, the total passes the 64-bit range",
                    line.sku
                ),
            });
            continue;
        };
        *sum = next;
        *lowest = (*lowest).min(next);
        if shortfalls.iter().any(|s| s.sku == line.sku) {
            // Already short: only its lowest sum still matters.
            continue;
        }
        if let Some(row) = current.get(&line.sku) {
            stock_before.entry(&line.sku).or_insert(row.stock);
        }
        let command = Command::Adjust { delta: line.delta };
        match decide(&line.sku, current.get(&line.sku), &command, &line_meta, now) {
            Ok(decided) => {
                if let Some(last) = decided.last() {
                    current.insert(line.sku.clone(), last.state.clone());
                }
                changes.extend(decided);
            }
            Err(DomainError::InsufficientStock(_)) => shortfalls.push(Shortfall {
                sku: line.sku.clone(),
                stock: stock_before.get(&line.sku).copied().unwrap_or(0),
                reserved: current.get(&line.sku).map_or(0, |row| row.reserved),
                delta: next,
                line: Some(i),
                held_line: None,
            }),
            Err(DomainError::StockOverflow(sku)) => {
                rejection.get_or_insert(DomainError::Invalid {
                    field: field(),
                    message: format!(
                        "would take the stock of {sku} past the largest number this server counts (9223372036854775807)"
                    ),
                });
            }
            Err(other) => {
                rejection.get_or_insert(other);
            }
        }
    }
    for shortfall in &mut shortfalls {
        if let Some((_, lowest)) = sums.get(&shortfall.sku) {
            shortfall.delta = *lowest;
        }
    }
    match (rejection, shortfalls.is_empty()) {
        (Some(rejection), _) => Err(rejection),
        (None, false) => Err(DomainError::InsufficientStock(shortfalls)),
        (None, true) => Ok(changes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, Money, NewSku, PriceGuard, Upsert};
    use crate::store::WriteRequest;

    fn code(raw: &str) -> SkuCode {
        SkuCode::parse(raw).unwrap()
    }

    fn row(raw: &str, stock: i64) -> Sku {
        Sku {
            sku: code(raw),
            name: "HEART".into(),
            currency: Currency::parse("GBP").unwrap(),
            price_minor: 255,
            stock,
            reserved: 0,
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            version: 3,
            updated_at: Micros(0),
            lead_time_days: None,
            alert_rule: None,
            sales_rate: Some(crate::domain::SalesRate::new(
                &crate::domain::RateParams::default(),
            )),
            forecast: crate::domain::Forecast::none(crate::domain::Micros(0)),
        }
    }

    fn rows(list: &[Sku]) -> BTreeMap<SkuCode, Sku> {
        list.iter().map(|s| (s.sku.clone(), s.clone())).collect()
    }

    fn single(raw: &str, command: Command, if_match: Option<Vec<i64>>) -> WriteJob {
        WriteJob::Single {
            sku: code(raw),
            request: WriteRequest {
                command,
                meta: WriteMeta {
                    reason: Some("sale".into()),
                    actor: None,
                    if_match,
                },
                idempotency: None,
            },
        }
    }

    fn adjust(raw: &str, delta: i64) -> WriteJob {
        single(raw, Command::Adjust { delta }, None)
    }

    fn batch(lines: &[(&str, i64)]) -> WriteJob {
        WriteJob::Batch {
            lines: lines
                .iter()
                .map(|(sku, delta)| AdjustmentLine {
                    sku: code(sku),
                    delta: *delta,
                })
                .collect(),
            meta: WriteMeta::default(),
            idempotency: None,
        }
    }

    fn run(rows: &BTreeMap<SkuCode, Sku>, jobs: &[WriteJob]) -> Plan {
        let refs: Vec<&WriteJob> = jobs.iter().collect();
        plan(
            rows.clone(),
            BTreeMap::new(),
            HoldRows::default(),
            &refs,
            Micros(7),
        )
    }

    /// Plans `jobs` one group at a time at the given times, carrying the
    /// rows and active alerts as the store would.
    fn run_at(
        mut locked: BTreeMap<SkuCode, Sku>,
        steps: &[(i64, WriteJob)],
    ) -> (BTreeMap<SkuCode, Sku>, Vec<AlertOp>) {
        let mut active: BTreeMap<SkuCode, Vec<(i64, AlertKind)>> = BTreeMap::new();
        let mut ops = Vec::new();
        let mut next_id = 1;
        for (at, job) in steps {
            let plan = plan(
                locked.clone(),
                active.clone(),
                HoldRows::default(),
                &[job],
                Micros(*at),
            );
            for op in &plan.alerts {
                match op {
                    AlertOp::Raise { sku, kind, .. } => {
                        active
                            .entry(sku.clone())
                            .or_default()
                            .push((next_id, *kind));
                        next_id += 1;
                    }
                    AlertOp::Resolve(AlertRef::Existing(id)) => {
                        for held in active.values_mut() {
                            held.retain(|(h, _)| h != id);
                        }
                    }
                    AlertOp::Resolve(AlertRef::New(_)) => {}
                }
            }
            ops.extend(plan.alerts.clone());
            for (code, write) in plan.rows {
                locked.insert(code, write.state);
            }
        }
        (locked, ops)
    }

    fn with_reason(raw: &str, delta: i64, reason: &str) -> WriteJob {
        WriteJob::Single {
            sku: code(raw),
            request: WriteRequest {
                command: Command::Adjust { delta },
                meta: WriteMeta {
                    reason: Some(reason.into()),
                    actor: None,
                    if_match: None,
                },
                idempotency: None,
            },
        }
    }

    #[test]
    fn sales_feed_the_rate_and_the_rate_equals_its_rebuild_from_the_events() {
        let hour = 3_600_000_000;
        let mut steps = Vec::new();
        for i in 0..12 {
            steps.push((i * hour, with_reason("A", -2, "sale")));
            if i % 4 == 1 {
                steps.push((i * hour + 60_000_000, with_reason("A", 1, "return")));
            }
            if i % 5 == 2 {
                steps.push((i * hour + 120_000_000, with_reason("A", 3, "restock")));
            }
        }
        let mut start = row("A", 100);
        start.low_stock_threshold = 0;
        let (rows, _) = run_at(rows(&[start]), &steps);
        let params = crate::domain::RateParams::default();
        let events = steps.iter().filter_map(|(at, job)| {
            let WriteJob::Single { request, .. } = job else {
                return None;
            };
            let Command::Adjust { delta } = request.command else {
                return None;
            };
            crate::domain::forecast_config()
                .sale_of(request.meta.reason.as_deref(), delta)
                .map(|(kind, units)| (Micros(*at), kind, units))
        });
        let rebuilt = crate::domain::SalesRate::rebuild(events, &params);
        let a = &rows[&code("A")];
        assert_eq!(a.sales_rate.as_ref(), Some(&rebuilt));
        assert!(a.forecast.days_of_cover.is_some(), "{:?}", a.forecast);
        assert_eq!(a.forecast.as_of, a.updated_at);
    }

    #[test]
    fn every_sale_line_of_a_batch_feeds_the_rate_even_for_one_sku() {
        let mut start = row("A", 100);
        start.low_stock_threshold = 0;
        let lines = WriteJob::Batch {
            lines: [("A", -2), ("A", -3), ("B", -1), ("A", -4)]
                .iter()
                .map(|(sku, delta)| AdjustmentLine {
                    sku: code(sku),
                    delta: *delta,
                })
                .collect(),
            meta: WriteMeta {
                reason: Some("sale".into()),
                ..WriteMeta::default()
            },
            idempotency: None,
        };
        let (rows, _) = run_at(rows(&[start, row("B", 10)]), &[(1_000, lines)]);
        let params = crate::domain::RateParams::default();
        let sale = crate::domain::SaleKind::Sale;
        let rebuilt = crate::domain::SalesRate::rebuild(
            [
                (Micros(1_000), sale, 2),
                (Micros(1_000), sale, 3),
                (Micros(1_000), sale, 4),
            ],
            &params,
        );
        assert_eq!(rows[&code("A")].sales_rate.as_ref(), Some(&rebuilt));
    }

    #[test]
    fn the_forecast_alert_is_raised_within_the_lead_time_and_only_under_its_rule() {
        let minute = 60_000_000;
        let mut start = row("A", 30);
        start.low_stock_threshold = 0;
        let sales: Vec<(i64, WriteJob)> = (0..6)
            .map(|i| (i * minute, with_reason("A", -1, "sale")))
            .collect();
        let (after, ops) = run_at(rows(&[start.clone()]), &sales);
        let raised: Vec<&AlertOp> = ops
            .iter()
            .filter(|op| {
                matches!(
                    op,
                    AlertOp::Raise {
                        kind: AlertKind::StockoutForecast,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(raised.len(), 1, "{ops:?}");
        let AlertOp::Raise {
            value,
            threshold,
            message,
            ..
        } = raised[0]
        else {
            unreachable!()
        };
        assert_eq!(*threshold, serde_json::json!(7));
        assert!(value.is_string(), "{value}");
        assert!(message.contains("lead time 7 days"), "{message}");
        assert!(after[&code("A")].forecast.days_of_cover.is_some());

        // Under the threshold rule only, the same sales raise nothing.
        start.alert_rule = Some(crate::domain::AlertRule::Threshold);
        let (_, ops) = run_at(rows(&[start]), &sales);
        assert!(
            !ops.iter().any(|op| matches!(
                op,
                AlertOp::Raise {
                    kind: AlertKind::StockoutForecast,
                    ..
                }
            )),
            "{ops:?}"
        );
    }

    #[test]
    fn a_reforecast_is_written_only_when_it_ends_an_alert() {
        let minute = 60_000_000;
        let day = 86_400_000_000;
        let mut start = row("A", 30);
        start.low_stock_threshold = 0;
        let mut steps: Vec<(i64, WriteJob)> = (0..6)
            .map(|i| (i * minute, with_reason("A", -1, "sale")))
            .collect();
        let reforecast = || single("A", Command::Reforecast, None);
        // Soon after: the alert stands, nothing is written.
        steps.push((10 * minute, reforecast()));
        let (rows_now, ops) = run_at(rows(&[start.clone()]), &steps);
        assert_eq!(rows_now[&code("A")].version, 9, "six sales, no reforecast");
        assert_eq!(ops.len(), 1, "{ops:?}");
        // Sixty days without a sale: the rate has decayed, the alert ends.
        steps.push((60 * day, reforecast()));
        let (rows_now, ops) = run_at(rows(&[start]), &steps);
        let a = &rows_now[&code("A")];
        assert_eq!(a.version, 10);
        assert_eq!(a.forecast.as_of, Micros(60 * day));
        assert!(matches!(ops.last(), Some(AlertOp::Resolve(_))), "{ops:?}");
    }

    #[test]
    fn a_sku_touched_twice_is_decided_against_its_state_after_the_first_change() {
        let locked = rows(&[row("A", 5)]);
        let plan = run(
            &locked,
            &[adjust("A", -3), adjust("A", -3), adjust("A", -2)],
        );
        assert_eq!(plan.jobs[0], JobPlan::Changed(0..1));
        assert!(matches!(
            plan.jobs[1],
            JobPlan::Rejected(DomainError::InsufficientStock(_))
        ));
        assert_eq!(plan.jobs[2], JobPlan::Changed(1..2));
        let versions: Vec<i64> = plan.events.iter().map(|e| e.event.version).collect();
        assert_eq!(versions, [4, 5]);
        assert_eq!(plan.rows[&code("A")].state.stock, 0);
        assert_eq!(plan.rows[&code("A")].state.version, 5);
        assert!(!plan.rows[&code("A")].insert);
        assert!(plan.events.iter().all(|e| e.event.at == Micros(7)));
    }

    #[test]
    fn a_refused_batch_changes_nothing_and_a_later_job_sees_the_state_before_it() {
        let locked = rows(&[row("A", 5), row("B", 1)]);
        let plan = run(
            &locked,
            &[
                batch(&[("A", -2), ("B", -2)]),
                batch(&[("A", -2), ("B", -1)]),
            ],
        );
        let JobPlan::Rejected(DomainError::InsufficientStock(short)) = &plan.jobs[0] else {
            panic!("{:?}", plan.jobs[0]);
        };
        assert_eq!(short.len(), 1);
        assert_eq!(short[0].sku, code("B"));
        assert_eq!(short[0].line, Some(1));
        // The second batch is decided against A = 5, not 3.
        assert_eq!(plan.jobs[1], JobPlan::Changed(0..2));
        assert_eq!(plan.rows[&code("A")].state.stock, 3);
        assert_eq!(plan.rows[&code("B")].state.stock, 0);
    }

    #[test]
    fn if_match_is_checked_per_job_against_the_version_the_group_reached() {
        let locked = rows(&[row("A", 50)]);
        let plan = run(
            &locked,
            &[
                single("A", Command::Adjust { delta: -1 }, Some(vec![3])),
                // Sent for version 3 too: the first job moved it to 4.
                single("A", Command::Adjust { delta: -1 }, Some(vec![3])),
                single("A", Command::Adjust { delta: -1 }, Some(vec![4])),
            ],
        );
        assert_eq!(plan.jobs[0], JobPlan::Changed(0..1));
        assert!(matches!(
            plan.jobs[1],
            JobPlan::Rejected(DomainError::VersionMismatch { current: 4, .. })
        ));
        assert_eq!(plan.jobs[2], JobPlan::Changed(1..2));
    }

    #[test]
    fn an_alert_raised_in_the_group_is_resolved_by_a_later_change_of_it() {
        let locked = rows(&[row("A", 12)]);
        let mut active = BTreeMap::new();
        active.insert(code("A"), Vec::new());
        let jobs = [adjust("A", -12), adjust("A", 20)];
        let refs: Vec<&WriteJob> = jobs.iter().collect();
        let plan = plan(locked, active, HoldRows::default(), &refs, Micros(7));
        // The sale to 0 raises out_of_stock and low_stock; the restock to 20
        // resolves both, referring to the raises by position.
        assert_eq!(plan.events[0].alerts, 0..2);
        assert_eq!(plan.events[1].alerts, 2..4);
        let resolved: Vec<&AlertOp> = plan.alerts[2..].iter().collect();
        assert!(resolved.contains(&&AlertOp::Resolve(AlertRef::New(0))));
        assert!(resolved.contains(&&AlertOp::Resolve(AlertRef::New(1))));
    }

    fn hold_job(action: crate::domain::HoldAction) -> WriteJob {
        WriteJob::Hold {
            action,
            meta: WriteMeta::default(),
            idempotency: None,
        }
    }

    #[test]
    fn a_hold_created_and_committed_in_one_group_sells_once_without_alert_churn() {
        use crate::domain::{HoldAction, HoldId, HoldLine, HoldStatus};
        // Everything held is out of stock to the shop; committing it keeps
        // `available` at 0, so the open alerts neither resolve nor reopen.
        let mut locked = rows(&[row("A", 2)]);
        locked.get_mut(&code("A")).unwrap().low_stock_threshold = 0;
        let mut active = BTreeMap::new();
        active.insert(code("A"), Vec::new());
        let id = HoldId::generate();
        let jobs = [
            hold_job(HoldAction::Create {
                id: id.clone(),
                lines: vec![HoldLine {
                    sku: code("A"),
                    quantity: 2,
                }],
                ttl_us: 1_000,
                reference: None,
            }),
            hold_job(HoldAction::Commit { id: id.clone() }),
        ];
        let refs: Vec<&WriteJob> = jobs.iter().collect();
        let holds = HoldRows {
            rows: BTreeMap::new(),
            clock: Micros(100),
        };
        let plan = plan(locked, active, holds, &refs, Micros(7));
        assert!(matches!(plan.jobs[0], JobPlan::Held { hold: 0, .. }));
        assert!(matches!(plan.jobs[1], JobPlan::Held { hold: 1, .. }));
        assert_eq!(plan.holds[1].hold.status, HoldStatus::Committed);
        assert!(plan.holds[0].insert && !plan.holds[1].insert);
        // The hold raised out_of_stock; the release and sale changed nothing.
        assert_eq!(plan.events[0].alerts, 0..1);
        assert_eq!(plan.events[1].alerts, 1..1);
        assert_eq!(plan.events[2].alerts, 1..1);
        let reasons: Vec<_> = plan.events.iter().map(|e| e.event.reason.clone()).collect();
        assert_eq!(
            reasons,
            [Some("hold"), Some("hold_committed"), Some("sale")].map(|r| r.map(str::to_owned))
        );
        let a = &plan.rows[&code("A")].state;
        assert_eq!((a.stock, a.reserved, a.version), (0, 0, 6));
    }

    #[test]
    fn a_stored_alert_is_resolved_by_its_id() {
        let locked = rows(&[row("A", 0)]);
        let mut active = BTreeMap::new();
        active.insert(
            code("A"),
            vec![(41, AlertKind::OutOfStock), (42, AlertKind::LowStock)],
        );
        let jobs = [adjust("A", 1)];
        let refs: Vec<&WriteJob> = jobs.iter().collect();
        let plan = plan(locked, active, HoldRows::default(), &refs, Micros(7));
        assert_eq!(plan.alerts, [AlertOp::Resolve(AlertRef::Existing(41))]);
    }

    #[test]
    fn a_create_is_an_insert_and_a_second_create_of_it_is_refused() {
        let new = NewSku {
            name: "CAKESTAND".into(),
            price: Money::parse("12.75", Currency::parse("GBP").unwrap()).unwrap(),
            stock: 4,
            low_stock_threshold: 2,
            price_guard: PriceGuard::default(),
            lead_time_days: None,
            alert_rule: None,
        };
        let plan = run(
            &BTreeMap::new(),
            &[
                single("N", Command::Create(new.clone()), None),
                single("N", Command::Create(new.clone()), None),
                single(
                    "N",
                    Command::Upsert(Box::new(Upsert {
                        new,
                        stock_given: true,
                        threshold_given: false,
                    })),
                    None,
                ),
            ],
        );
        assert_eq!(plan.jobs[0], JobPlan::Changed(0..1));
        assert!(matches!(
            plan.jobs[1],
            JobPlan::Rejected(DomainError::AlreadyExists(_))
        ));
        // The same values again: no change.
        assert_eq!(plan.jobs[2], JobPlan::Unchanged);
        assert!(plan.rows[&code("N")].insert);
        assert_eq!(plan.rows[&code("N")].state.version, 1);
    }

    #[test]
    fn a_write_to_an_unknown_sku_is_refused_and_plans_no_row() {
        let plan = run(&BTreeMap::new(), &[adjust("Z", 1)]);
        assert!(matches!(
            plan.jobs[0],
            JobPlan::Rejected(DomainError::NotFound(_))
        ));
        assert!(plan.rows.is_empty());
        assert!(!plan.changes_anything());
    }

    /// An external stock change of `from`'s SKU to `stock`, one version on.
    fn external(from: &Sku, stock: i64) -> Committed {
        let mut after = from.clone();
        after.stock = stock;
        after.version += 1;
        Committed {
            event: Event {
                event_id: 0,
                sku: after.sku.clone(),
                version: after.version,
                at: Micros(0),
                field: crate::domain::Field::Stock,
                old: from.stock.into(),
                new: stock.into(),
                delta: Some(stock - from.stock),
                reason: Some("external".into()),
                actor: Some("erp".into()),
            },
            sku: after,
            alerts: Vec::new(),
        }
    }

    fn kinds(ops: &[AlertOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                AlertOp::Raise { sku, kind, .. } => format!("raise {sku} {}", kind.as_str()),
                AlertOp::Resolve(AlertRef::New(k)) => format!("resolve new {k}"),
                AlertOp::Resolve(AlertRef::Existing(id)) => format!("resolve {id}"),
            })
            .collect()
    }

    #[test]
    fn external_changes_are_judged_in_order_per_sku_even_when_interleaved() {
        let a = row("A", 20);
        let a1 = external(&a, 0);
        let b1 = external(&row("B", 20), 15);
        let a2 = external(&a1.sku, 3);
        let now = rows(&[a2.sku.clone(), b1.sku.clone()]);
        let changes = [a1, b1, a2];
        let (ops, ranges) = external_alerts(&changes, &now, BTreeMap::new());
        assert_eq!(
            kinds(&ops[ranges[0].clone()]),
            ["raise A out_of_stock", "raise A low_stock"]
        );
        assert!(ranges[1].is_empty());
        // A's second change resolves the stock-out its first raised; the
        // low-stock alert stays (3 is below 10).
        assert_eq!(kinds(&ops[ranges[2].clone()]), ["resolve new 0"]);
    }

    #[test]
    fn an_api_write_since_the_external_change_is_judged_from_it_to_the_row() {
        let a = row("A", 20);
        let a1 = external(&a, 0);
        // An API write took the stock back to 5 before the settlement; it
        // saw no active alert, so raised and resolved nothing.
        let mut current = a1.sku.clone();
        current.stock = 5;
        current.version += 1;
        let (ops, ranges) = external_alerts(&[a1], &rows(&[current]), BTreeMap::new());
        assert_eq!(
            kinds(&ops[ranges[0].clone()]),
            ["raise A out_of_stock", "raise A low_stock", "resolve new 0"]
        );
        // Already-open alerts are resolved by id, not raised twice.
        let a1 = external(&a, 0);
        let open = BTreeMap::from([(code("A"), vec![(7, AlertKind::OutOfStock)])]);
        let (ops, _) = external_alerts(
            std::slice::from_ref(&a1),
            &rows(std::slice::from_ref(&a1.sku)),
            open,
        );
        assert_eq!(kinds(&ops), ["raise A low_stock"]);
    }
}
