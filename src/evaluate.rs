//! `skuwatch evaluate-forecast DATA_DIR` (issue 18): replays Online Retail
//! invoice lines offline and judges the `stockout_forecast` rule and the
//! fixed `low_stock` threshold on the same simulated stock, with the
//! issue's measure: "an alert is right when the actual sales over the next
//! lead time exceed the `available` it was raised at".
//!
//! No server and no database: the files go through [`replay::plan`] (the
//! same mapping as `skuwatch replay`, `data/README.md`), and both rules are
//! the pure functions of `skuwatch_actors::domain`, applied as the server
//! applies them.
//!
//! # The stock path (the same for both rules)
//! - Every SKU of the plan is created at the time of the data's first row,
//!   with the demo's cover (rule 6 of [`replay`]):
//!   `C = `[`replay::cover_stock`]` = ceil(cover_days × units sold /
//!   replay days)`, `cover_days` 3 to 42 from a hash of the code. Not rule
//!   6's floor (the least stock that needs no restock over the whole
//!   data): over four months that is months of stock for a steady seller,
//!   which would never run low; deliveries take its place here.
//! - The plan's adjustments (`sale`, `return`, `write_off`) are applied in
//!   order. When a decrease would take the stock below 0, a delivery
//!   arrives just before it (same time): the shortfall plus `C`, so the
//!   decrease leaves `C` on the shelf. Deliveries do not depend on alerts,
//!   so both rules are judged on one path, and every SKU keeps cycling
//!   from `C` down towards 0 instead of running dry once; the SKUs whose
//!   `C` is under a lead time of sales stay short. (Ordering at an alert
//!   would make the path depend on the rule, and a rule that alerts early
//!   would change the very shortages it is judged on.)
//!
//! # The rules, at each point (as the server does)
//! A point is the creation, each adjustment and each delivery; `available`
//! is the stock after it (there are no holds).
//! - Rate: a `sale` (delta < 0) calls `rate.record_sale(-delta, at)`, a
//!   `return` (delta > 0) `rate.record_return(delta, at)`; write-offs and
//!   deliveries leave the rate alone. Then `forecast(&rate, available, at)`
//!   and `forecast_alert(.., lead_time_days, open, ..)` raise or resolve
//!   the forecast alert ([`RateParams::default`]: half-life 7 days, 5
//!   sales, cap 5, return window 24 h).
//! - Threshold: raise when none is open, `available < threshold` and the
//!   point did not raise the stock (the creation counts as no rise, as an
//!   import does); resolve at `available >= recovery_level(threshold)`.
//!
//! # Judging
//! Alerts are raised only at points before the end of `--weeks` (default:
//! all the data); the rest of the data only judges. With `--warm-up-days
//! N` (default 0) the alerts and episodes of the first `N` days are not
//! counted (the rules still run): every SKU is created at the data's
//! start, so without it the forecast is judged from a cold start (no rate
//! for any SKU) that a shop selling for months does not have, and the
//! threshold gets the alerts an import raises for SKUs created under it.
//! `sold(i)` is the net sales (units of `sale` adjustments minus units of
//! `return`s) of the SKU's points after point `i` up to `at(i) + lead
//! time` (inclusive; points at the same time as `i` but after it count).
//! - Precision: an alert raised at point `i` is *right* when `sold(i) >
//!   available(i)`. Alerts raised less than a lead time before the last
//!   row cannot be judged and are skipped (counted as `skipped`).
//! - Recall: a point is *at risk* when `sold(i) > available(i)`: without
//!   the magic delivery the shelf would be empty within the lead time. A
//!   *stock-out risk episode* is a maximal run of a SKU's consecutive
//!   points at risk; it deserved an alert. It is *caught* by a rule whose
//!   alert is open at the episode's first point (raised at or before it,
//!   not resolved since); one raised later in the episode is counted as
//!   `late`, not caught. An alert stays open until its rule resolves it, so
//!   one open for weeks still catches: `caught_recent` counts the catches
//!   by an alert raised at most a lead time before the episode. Only points
//!   at least a lead time before the last row can be at risk, and only
//!   those before the end of `--weeks` (and after the warm-up). Points are
//!   the moments the server evaluates the rules, so a shortage that comes
//!   with no event of the SKU in the lead time before it (a slow seller's
//!   sudden large order) is no episode: neither rule could have seen it.
//!   `episodes_with_forecast` / `caught_with_forecast`: the episodes whose
//!   first point had a forecast (enough recent sales), where the forecast
//!   rule can speak at all.
//! - Why the forecast's precision sits near 50 %: it raises when the
//!   projected sales over the lead time first exceed `available`, which
//!   is the very line it is judged against, so at the moment of raising
//!   an unbiased rate is about as often above the outcome as below it.
//!   The fixed threshold is judged on the same line from far below it for
//!   fast sellers (right) and far above it for slow ones (wrong).
//! - Stock-outs (extra): the deliveries, and how many of them found the
//!   rule's alert open at the point before (`warned`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;
use skuwatch_actors::domain::{
    forecast, forecast_alert, recovery_level, ForecastConfig, ForecastTransition, Micros,
    RateParams, SaleKind, SalesRate, SkuCode, DAY_US,
};

use crate::replay::{self, Action, Plan};

/// The rules, in the order of [`Point::raised`], [`Point::open`] and the
/// report.
pub const RULES: [&str; 2] = ["forecast", "threshold"];
const FORECAST: usize = 0;
const THRESHOLD: usize = 1;

/// What the evaluation simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Alerts are raised in the first `weeks` weeks only; `None`: all.
    pub weeks: Option<u32>,
    /// The forecast rule's lead time, and the horizon every alert is
    /// judged over (days).
    pub lead_time_days: i64,
    /// The fixed rule's `low_stock_threshold`.
    pub threshold: i64,
    /// Alerts raised and episodes starting in the first days are not
    /// counted (the rules still run): every SKU is created at the data's
    /// start, so with 0 the forecast is judged from a cold start it would
    /// not have on a shop that has been selling.
    pub warm_up_days: i64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            weeks: None,
            lead_time_days: 7,
            threshold: 10,
            warm_up_days: 0,
        }
    }
}

/// What a point of a SKU's stock path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    Created,
    Sale,
    Return,
    WriteOff,
    /// Any other adjustment reason.
    Other,
    Delivery,
}

/// One point of a SKU's stock path, after both rules looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Point {
    pub at: i64,
    pub kind: PointKind,
    /// Available after the point.
    pub available: i64,
    /// Units sold at the point minus units returned.
    pub net_sold: i64,
    /// Per rule ([`RULES`]): whether it raised an alert here...
    pub raised: [bool; 2],
    /// ...and whether one is open after the point.
    pub open: [bool; 2],
    /// Whether the SKU had a forecast here (a days of cover: enough
    /// sales, a rate, inside the horizon).
    pub has_forecast: bool,
}

/// One adjustment of a SKU, as the plan has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Adjustment {
    pub at: i64,
    pub delta: i64,
    pub reason: &'static str,
}

/// Runs a SKU's adjustments through the stock path and both rules (module
/// doc): created with `cover` units at `created_at`, a delivery of the
/// shortfall plus `cover` before any decrease the stock cannot take.
pub fn simulate(
    adjustments: &[Adjustment],
    cover: i64,
    created_at: i64,
    options: &Options,
    params: &RateParams,
) -> Vec<Point> {
    let mut sim = Sim {
        rate: SalesRate::new(params),
        stock: cover.max(0),
        open: [false; 2],
        points: Vec::with_capacity(adjustments.len() + 1),
        options,
        params,
    };
    sim.point(created_at, PointKind::Created, None, 0);
    // The server's own mapping of reasons (default settings).
    let reasons = ForecastConfig::default();
    for adjustment in adjustments {
        let Adjustment { at, delta, reason } = *adjustment;
        let short = sim.stock.saturating_add(delta);
        if delta < 0 && short < 0 {
            sim.stock = sim.stock.saturating_add(cover.max(0).saturating_sub(short));
            sim.point(at, PointKind::Delivery, Some(sim.stock), 0);
        }
        let kind = match reasons.sale_of(Some(reason), delta) {
            Some((sale, units)) => {
                sim.rate.apply(sale, units, Micros(at), params);
                match sale {
                    SaleKind::Sale => PointKind::Sale,
                    SaleKind::Return => PointKind::Return,
                }
            }
            None if reason == "write_off" => PointKind::WriteOff,
            None => PointKind::Other,
        };
        let net_sold = match kind {
            PointKind::Sale | PointKind::Return => -delta,
            _ => 0,
        };
        let before = sim.stock;
        sim.stock = sim.stock.saturating_add(delta);
        sim.point(at, kind, Some(before), net_sold);
    }
    sim.points
}

struct Sim<'a> {
    rate: SalesRate,
    stock: i64,
    open: [bool; 2],
    points: Vec<Point>,
    options: &'a Options,
    params: &'a RateParams,
}

impl Sim<'_> {
    /// Both rules on the stock after a point (`before`: the stock before
    /// it, `None` at the creation).
    fn point(&mut self, at: i64, kind: PointKind, before: Option<i64>, net_sold: i64) {
        let available = self.stock;
        let mut raised = [false; 2];

        let f = forecast(&self.rate, available, Micros(at), self.params);
        match forecast_alert(
            &f,
            self.options.lead_time_days,
            self.open[FORECAST],
            self.params,
        ) {
            Some(ForecastTransition::Raise) => {
                raised[FORECAST] = true;
                self.open[FORECAST] = true;
            }
            Some(ForecastTransition::Resolve) => self.open[FORECAST] = false,
            None => {}
        }

        // alerts::evaluate's low_stock arm.
        let threshold = self.options.threshold;
        let rose = before.is_some_and(|b| available > b);
        if self.open[THRESHOLD] {
            if available >= recovery_level(threshold) {
                self.open[THRESHOLD] = false;
            }
        } else if available < threshold && !rose {
            raised[THRESHOLD] = true;
            self.open[THRESHOLD] = true;
        }

        self.points.push(Point {
            at,
            kind,
            available,
            net_sold,
            raised,
            open: self.open,
            has_forecast: f.days_of_cover.is_some(),
        });
    }
}

/// The time limits of the judging.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Horizon {
    /// The lead time (µs): an alert is judged on the sales that follow it
    /// within this.
    pub lead_us: i64,
    /// Alerts raised and episodes starting before this are not counted
    /// (the warm-up).
    pub judge_from: i64,
    /// Alerts are raised, and episodes start, only at points before this.
    pub raise_until: i64,
    /// The data's last row: a point later than `data_end - lead_us` cannot
    /// be judged.
    pub data_end: i64,
}

/// One rule's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Alerts raised before the end of `--weeks`.
    pub alerts_raised: u64,
    /// Of those, raised at least a lead time before the last row.
    pub judged: u64,
    /// Raised too late to be judged.
    pub skipped: u64,
    /// Judged alerts followed, within the lead time, by net sales above
    /// the available they were raised at.
    pub right: u64,
    /// Stock-out risk episodes (the same for both rules).
    pub episodes: u64,
    /// Episodes with the rule's alert open at their first point.
    pub caught: u64,
    /// Of those, the ones whose open alert was raised at most a lead time
    /// before the first point (not one open for months).
    pub caught_recent: u64,
    /// Episodes whose alert was raised after their first point.
    pub late: u64,
    /// Episodes whose first point had a forecast (the same for both
    /// rules), and how many of them the rule caught.
    pub episodes_with_forecast: u64,
    pub caught_with_forecast: u64,
    /// Deliveries before the end of `--weeks` (the same for both rules).
    pub stockouts: u64,
    /// Deliveries with the rule's alert open just before them.
    pub warned: u64,
}

impl Tally {
    pub fn precision(&self) -> Option<f64> {
        (self.judged > 0).then(|| self.right as f64 / self.judged as f64)
    }

    pub fn recall(&self) -> Option<f64> {
        (self.episodes > 0).then(|| self.caught as f64 / self.episodes as f64)
    }

    fn add(&mut self, other: &Tally) {
        self.alerts_raised += other.alerts_raised;
        self.judged += other.judged;
        self.skipped += other.skipped;
        self.right += other.right;
        self.episodes += other.episodes;
        self.caught += other.caught;
        self.caught_recent += other.caught_recent;
        self.late += other.late;
        self.episodes_with_forecast += other.episodes_with_forecast;
        self.caught_with_forecast += other.caught_with_forecast;
        self.stockouts += other.stockouts;
        self.warned += other.warned;
    }
}

/// Judges one SKU's points (time-ordered), per rule (module doc).
pub fn judge(points: &[Point], horizon: &Horizon) -> [Tally; 2] {
    let mut tallies = [Tally::default(); 2];
    // sold_before[k]: net sales of points[..k].
    let mut sold_before = Vec::with_capacity(points.len() + 1);
    sold_before.push(0i64);
    for p in points {
        sold_before.push(sold_before[sold_before.len() - 1].saturating_add(p.net_sold));
    }
    let mut window_end = 0; // first point after the current one's lead time
    let mut episode: Option<[bool; 2]> = None; // per rule: open or raised yet
    let mut last_raised = [i64::MIN; 2];
    for (i, p) in points.iter().enumerate() {
        if p.at >= horizon.raise_until {
            break;
        }
        for (rule, last) in last_raised.iter_mut().enumerate() {
            if p.raised[rule] {
                *last = p.at;
            }
        }
        let until = p.at.saturating_add(horizon.lead_us);
        window_end = window_end.max(i + 1);
        while window_end < points.len() && points[window_end].at <= until {
            window_end += 1;
        }
        let counted = p.at >= horizon.judge_from;
        let judgeable = until <= horizon.data_end;
        let sold = sold_before[window_end] - sold_before[i + 1];
        let at_risk = counted && judgeable && sold > p.available;
        for (rule, tally) in tallies.iter_mut().enumerate() {
            if !counted {
                continue;
            }
            if p.raised[rule] {
                tally.alerts_raised += 1;
                if judgeable {
                    tally.judged += 1;
                    tally.right += u64::from(sold > p.available);
                } else {
                    tally.skipped += 1;
                }
            }
            if p.kind == PointKind::Delivery {
                tally.stockouts += 1;
                tally.warned += u64::from(i > 0 && points[i - 1].open[rule]);
            }
        }
        episode = match (at_risk, episode) {
            (false, _) => None,
            (true, None) => {
                for (rule, tally) in tallies.iter_mut().enumerate() {
                    let recent = p.at.saturating_sub(last_raised[rule]) <= horizon.lead_us;
                    tally.episodes += 1;
                    tally.caught += u64::from(p.open[rule]);
                    tally.caught_recent += u64::from(p.open[rule] && recent);
                    tally.episodes_with_forecast += u64::from(p.has_forecast);
                    tally.caught_with_forecast += u64::from(p.has_forecast && p.open[rule]);
                }
                Some(p.open)
            }
            (true, Some(mut seen)) => {
                for (rule, tally) in tallies.iter_mut().enumerate() {
                    if !seen[rule] && p.open[rule] {
                        tally.late += 1;
                        seen[rule] = true;
                    }
                }
                Some(seen)
            }
        };
    }
    tallies
}

/// One rule's line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    pub rule: &'static str,
    /// The rule's setting: `cover < 7 days`, `available < 10`.
    pub raises_when: String,
    #[serde(flatten)]
    pub tally: Tally,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
}

/// What the evaluation found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub first_row: Micros,
    pub last_row: Micros,
    /// Calendar days of the data (rule 6's replay days).
    pub replay_days: i64,
    pub weeks: Option<u32>,
    pub warm_up_days: i64,
    /// Alerts and episodes are counted from this (the warm-up's end)...
    pub judged_from: Micros,
    /// ...and raised before this; `last_row` when all data is used.
    pub raise_until: Micros,
    pub lead_time_days: i64,
    pub threshold: i64,
    pub half_life_days: f64,
    pub min_sales: i64,
    pub skus: usize,
    pub adjustments: u64,
    /// Deliveries over the whole data, and their units.
    pub deliveries: u64,
    pub units_delivered: i64,
    pub rules: Vec<RuleReport>,
    /// The stock path and the measures, in words.
    pub method: Vec<&'static str>,
}

const METHOD: [&str; 5] = [
    "stock: each SKU starts with C = ceil(cover_days x units sold / replay days) \
     (replay rule 6's cover, cover_days 3-42 from FNV-1a of the code); a delivery of \
     the shortfall + C arrives just before any decrease that would take stock below 0, \
     whatever the alerts (one path for both rules)",
    "rules: applied after each point (creation at the data's start, adjustment, delivery) \
     as the server does; alerts and episodes count from judged_from (after the warm-up) \
     and before raise_until, the rest of the data only judges",
    "right: the net sales (sale - return units) over the next lead time exceed the \
     available the alert was raised at; alerts raised under a lead time before the \
     last row are skipped",
    "episode: a maximal run of a SKU's consecutive points whose next lead time's net \
     sales exceed their available; caught: the rule's alert is open at its first point \
     (late: raised later in it)",
    "stockouts: deliveries before raise_until; warned: the rule's alert was open at \
     the point before",
];

/// Evaluates both rules on a plan (module doc).
pub fn evaluate(plan: &Plan, options: &Options) -> Result<Report, String> {
    if !(1..=365).contains(&options.lead_time_days) {
        return Err("--lead-time-days must be 1 to 365".into());
    }
    if options.threshold < 0 {
        return Err("--threshold must be 0 or more".into());
    }
    if options.weeks == Some(0) {
        return Err("--weeks must be 1 or more".into());
    }
    if !(0..=3650).contains(&options.warm_up_days) {
        return Err("--warm-up-days must be 0 to 3650".into());
    }
    let params = RateParams::default();
    let mut by_sku: HashMap<&SkuCode, Vec<Adjustment>> = HashMap::new();
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for step in &plan.steps {
        (first, last) = (first.min(step.at), last.max(step.at));
        if let Action::Adjust { delta, reason } = step.action {
            by_sku.entry(&step.sku).or_default().push(Adjustment {
                at: step.at,
                delta,
                reason,
            });
        }
    }
    if plan.steps.is_empty() {
        return Err("no product rows in the data".into());
    }
    let days = replay::replay_days(&plan.steps);
    let lead_us = options.lead_time_days * DAY_US;
    let raise_until = match options.weeks {
        Some(weeks) => first.saturating_add(i64::from(weeks) * 7 * DAY_US),
        None => i64::MAX,
    };
    let judge_from = first.saturating_add(options.warm_up_days * DAY_US);
    let horizon = Horizon {
        lead_us,
        judge_from,
        raise_until,
        data_end: last,
    };
    let mut totals = [Tally::default(); 2];
    let (mut adjustments, mut deliveries, mut delivered) = (0u64, 0u64, 0i64);
    for entry in &plan.catalog {
        let mut own = by_sku.remove(&entry.sku).unwrap_or_default();
        // Already in time order for this data (data/README.md); the
        // judging windows need it.
        own.sort_by_key(|a| a.at);
        let sold: i64 = own
            .iter()
            .filter(|a| a.reason == "sale" && a.delta < 0)
            .map(|a| -a.delta)
            .sum();
        let cover = replay::cover_stock(&entry.sku, sold, days);
        let points = simulate(&own, cover, first, options, &params);
        adjustments += own.len() as u64;
        for w in points.windows(2) {
            if w[1].kind == PointKind::Delivery {
                deliveries += 1;
                delivered += w[1].available - w[0].available;
            }
        }
        for (total, tally) in totals.iter_mut().zip(judge(&points, &horizon)) {
            total.add(&tally);
        }
    }
    let raises_when = [
        format!("days_of_cover < {}", options.lead_time_days),
        format!("available < {}", options.threshold),
    ];
    Ok(Report {
        first_row: Micros(first),
        last_row: Micros(last),
        replay_days: days,
        weeks: options.weeks,
        warm_up_days: options.warm_up_days,
        judged_from: Micros(judge_from),
        raise_until: Micros(raise_until.min(last)),
        lead_time_days: options.lead_time_days,
        threshold: options.threshold,
        half_life_days: params.half_life_us as f64 / DAY_US as f64,
        min_sales: params.min_sales,
        skus: plan.catalog.len(),
        adjustments,
        deliveries,
        units_delivered: delivered,
        rules: RULES
            .iter()
            .zip(raises_when)
            .zip(totals)
            .map(|((rule, raises_when), tally)| RuleReport {
                rule,
                raises_when,
                precision: tally.precision(),
                recall: tally.recall(),
                tally,
            })
            .collect(),
        method: METHOD.to_vec(),
    })
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0))
}

impl Report {
    /// The report as a table, with its settings and method.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let day = |m: Micros| m.to_rfc3339()[..16].replace('T', " ");
        let _ = writeln!(
            out,
            "data: {} .. {} ({} days), {} SKUs, {} adjustments",
            day(self.first_row),
            day(self.last_row),
            self.replay_days,
            self.skus,
            self.adjustments
        );
        let _ = writeln!(
            out,
            "alerts counted from {} (warm-up {} days) until {} ({}); lead time {} days; \
             threshold {}; half-life {} days, min {} sales",
            day(self.judged_from),
            self.warm_up_days,
            day(self.raise_until),
            self.weeks
                .map_or_else(|| "all data".to_owned(), |w| format!("first {w} weeks")),
            self.lead_time_days,
            self.threshold,
            self.half_life_days,
            self.min_sales
        );
        let _ = writeln!(
            out,
            "stock path: {} deliveries, {} units delivered\n",
            self.deliveries, self.units_delivered
        );
        let header = [
            "rule",
            "alerts raised",
            "judged",
            "right",
            "precision",
            "episodes",
            "caught",
            "recall",
        ];
        let rows: Vec<[String; 8]> = self
            .rules
            .iter()
            .map(|r| {
                [
                    format!("{} ({})", r.rule, r.raises_when),
                    r.tally.alerts_raised.to_string(),
                    r.tally.judged.to_string(),
                    r.tally.right.to_string(),
                    percent(r.precision),
                    r.tally.episodes.to_string(),
                    r.tally.caught.to_string(),
                    percent(r.recall),
                ]
            })
            .collect();
        let widths: Vec<usize> = (0..8)
            .map(|c| {
                rows.iter()
                    .map(|r| r[c].len())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<&str>| {
            cells
                .iter()
                .enumerate()
                .map(|(c, cell)| {
                    if c == 0 {
                        format!("{cell:<w$}", w = widths[c])
                    } else {
                        format!("{cell:>w$}", w = widths[c])
                    }
                })
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let _ = writeln!(out, "{}", line(header.to_vec()));
        let _ = writeln!(
            out,
            "{}",
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .join("-|-")
        );
        for row in &rows {
            let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
        }
        let _ = writeln!(out);
        for r in &self.rules {
            let t = &r.tally;
            let _ = writeln!(
                out,
                "{}: {} alerts skipped (raised under {} days before the last row); \
                 episodes: {} caught, {} of them by an alert raised at most {} days before, \
                 {} caught late; {} of the {} episodes that started with a forecast \
                 caught ({}); {} of {} stock-outs warned",
                r.rule,
                t.skipped,
                self.lead_time_days,
                t.caught,
                t.caught_recent,
                self.lead_time_days,
                t.late,
                t.caught_with_forecast,
                t.episodes_with_forecast,
                percent(
                    (t.episodes_with_forecast > 0)
                        .then(|| t.caught_with_forecast as f64 / t.episodes_with_forecast as f64)
                ),
                t.warned,
                t.stockouts
            );
        }
        let _ = writeln!(out);
        for m in &self.method {
            let _ = writeln!(out, "- {m}");
        }
        out
    }
}

/// `skuwatch evaluate-forecast`: prints the table, or the JSON.
pub fn run_cli(path: &Path, options: &Options, json: bool) -> Result<(), String> {
    let files = replay::read_path(path).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!("{}: no .csv files", path.display()));
    }
    let plan = replay::plan(&files).map_err(|e| e.to_string())?;
    let report = evaluate(&plan, options)?;
    if json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_291_190_400_000_000; // 2010-12-01T08:00:00Z

    fn sale(day: i64, units: i64) -> Adjustment {
        Adjustment {
            at: T0 + day * DAY_US,
            delta: -units,
            reason: "sale",
        }
    }

    /// A hand-made point: `available` after it, `sold` net units at it,
    /// and which rules raised (and so hold open) an alert here.
    fn point(day: i64, available: i64, sold: i64, raised: [bool; 2], open: [bool; 2]) -> Point {
        Point {
            at: T0 + day * DAY_US,
            kind: PointKind::Sale,
            available,
            net_sold: sold,
            raised,
            open,
            has_forecast: true,
        }
    }

    fn horizon(last_day: i64) -> Horizon {
        Horizon {
            lead_us: 7 * DAY_US,
            judge_from: i64::MIN,
            raise_until: i64::MAX,
            data_end: T0 + last_day * DAY_US,
        }
    }

    #[test]
    fn an_alert_is_right_when_the_next_lead_times_sales_exceed_its_available() {
        // Forecast raises at day 1 with 5 left; 4, a delivery and 2 follow
        // within 7 days (day 8 is the edge, inside): 6 > 5, right.
        // Threshold raises at day 20 with 4 left; 2 + 2 follow, and the 9
        // of day 28 is past the lead time: wrong (4 is not more than 4).
        let points = [
            point(0, 10, 0, [false; 2], [false; 2]),
            point(1, 5, 5, [true, false], [true, false]),
            point(4, 1, 4, [false; 2], [true, false]),
            point(8, 11, 0, [false; 2], [true, false]),
            point(8, 9, 2, [false; 2], [false; 2]),
            point(20, 4, 1, [false, true], [false, true]),
            point(22, 2, 2, [false; 2], [false, true]),
            point(27, 0, 2, [false; 2], [false, true]),
            point(28, 0, 9, [false; 2], [false, true]),
            point(40, 0, 0, [false; 2], [false, true]),
        ];
        let [forecast, threshold] = judge(&points, &horizon(40));
        assert_eq!(
            (forecast.alerts_raised, forecast.judged, forecast.right),
            (1, 1, 1)
        );
        assert_eq!(
            (threshold.alerts_raised, threshold.judged, threshold.right),
            (1, 1, 0)
        );
        assert_eq!(forecast.precision(), Some(1.0));
        assert_eq!(threshold.precision(), Some(0.0));
    }

    #[test]
    fn alerts_within_a_lead_time_of_the_end_are_skipped_not_judged() {
        let points = [
            point(0, 10, 0, [false; 2], [false; 2]),
            point(30, 3, 7, [true, true], [true, true]),
            point(31, 0, 3, [false; 2], [true, true]),
        ];
        let [forecast, threshold] = judge(&points, &horizon(36));
        for t in [forecast, threshold] {
            assert_eq!((t.alerts_raised, t.judged, t.skipped), (1, 0, 1));
            assert_eq!(t.precision(), None);
            assert_eq!(t.episodes, 0, "no point before day 29 is at risk");
        }
        let [forecast, _] = judge(&points, &horizon(37));
        assert_eq!((forecast.judged, forecast.right), (1, 0), "3 is not > 3");
    }

    #[test]
    fn an_episode_is_caught_by_an_alert_open_at_its_start_and_late_after() {
        let mut points = [
            point(0, 20, 0, [false; 2], [false; 2]),
            point(9, 8, 12, [false, true], [false, true]),
            point(10, 5, 3, [true, false], [true, true]),
            point(11, 4, 1, [false; 2], [true, true]),
            point(12, 1, 3, [false; 2], [true, true]),
            point(13, 30, 0, [false; 2], [false, false]),
            point(17, 28, 2, [false; 2], [false, false]),
            point(20, 3, 25, [false, true], [false, true]),
            point(21, 1, 2, [true, false], [true, true]),
            point(22, 0, 1, [false; 2], [true, true]),
            point(40, 0, 0, [false; 2], [true, true]),
        ];
        // Net sales in the next 7 days against available: day 9: 7 vs 8,
        // no; day 10: 6 vs 5, at risk; day 11: 5 vs 4 and day 12: 2 vs 1,
        // at risk; day 13: 27 vs 30, no; day 17: 28 vs 28, no; day 20: 3
        // vs 3; day 21: 1 vs 1; day 22: 0 vs 0; day 40: past the data. One
        // episode, from day 10, when both alerts are open.
        let [forecast, threshold] = judge(&points, &horizon(40));
        assert_eq!(
            (forecast.episodes, forecast.caught, forecast.caught_recent),
            (1, 1, 1),
            "raised at its start"
        );
        assert_eq!(
            (threshold.episodes, threshold.caught),
            (1, 1),
            "open since the day before"
        );
        // With 2 left at day 20 and 0 at day 21: a second episode (3 vs 2,
        // then 1 vs 0), caught by the threshold, raised there; the forecast
        // raises a day into it: late.
        points[7].available = 2;
        points[8].available = 0;
        let [forecast, threshold] = judge(&points, &horizon(40));
        assert_eq!(
            (forecast.episodes, forecast.caught, forecast.late),
            (2, 1, 1)
        );
        assert_eq!(
            (threshold.episodes, threshold.caught, threshold.late),
            (2, 2, 0)
        );
        assert_eq!(forecast.recall(), Some(0.5));
        assert_eq!(threshold.recall(), Some(1.0));
        // With the first threshold alert raised 8 days before the first
        // episode, it still catches it, but not within the lead time.
        points[1].raised[THRESHOLD] = false;
        points[0].raised[THRESHOLD] = true;
        points[0].at = T0 + 2 * DAY_US - 1;
        let [_, threshold] = judge(&points, &horizon(40));
        assert_eq!((threshold.caught, threshold.caught_recent), (2, 1));
        points[0].at = T0 + 3 * DAY_US;
        let [_, threshold] = judge(&points, &horizon(40));
        assert_eq!((threshold.caught, threshold.caught_recent), (2, 2));
        // Alerts raised in the first 15 days only: the second episode and
        // the alerts of days 20-21 do not count.
        let early = Horizon {
            raise_until: T0 + 15 * DAY_US,
            ..horizon(40)
        };
        let [forecast, threshold] = judge(&points, &early);
        assert_eq!((forecast.episodes, forecast.alerts_raised), (1, 1));
        assert_eq!((threshold.episodes, threshold.alerts_raised), (1, 1));
        // A warm-up to day 11: the alerts of days 9-10 do not count, and
        // the first episode is counted from day 11 (caught, open since).
        let warm = Horizon {
            judge_from: T0 + 11 * DAY_US,
            ..horizon(40)
        };
        let [forecast, threshold] = judge(&points, &warm);
        assert_eq!((forecast.alerts_raised, forecast.episodes), (1, 2));
        assert_eq!((forecast.caught, forecast.late), (1, 1));
        assert_eq!((threshold.alerts_raised, threshold.caught), (1, 2));
    }

    #[test]
    fn a_delivery_tops_up_before_a_sale_the_stock_cannot_take() {
        let options = Options::default();
        let params = RateParams::default();
        let points = simulate(&[sale(1, 3), sale(2, 4)], 5, T0, &options, &params);
        let path: Vec<_> = points.iter().map(|p| (p.kind, p.available)).collect();
        assert_eq!(
            path,
            [
                (PointKind::Created, 5),
                (PointKind::Sale, 2),
                (PointKind::Delivery, 9), // 2 short + 5
                (PointKind::Sale, 5),
            ]
        );
        // Created under the threshold: raised as an import does; the
        // delivery is a rise (no raise) and does not reach 12.
        assert!(points[0].raised[THRESHOLD]);
        assert!(points.iter().all(|p| p.open[THRESHOLD]));
        assert_eq!(points.iter().filter(|p| p.raised[THRESHOLD]).count(), 1);
        assert!(points.iter().all(|p| !p.raised[FORECAST]), "under 5 sales");
    }

    #[test]
    fn the_forecast_rule_raises_under_the_lead_time_and_resolves_above_its_margin() {
        // 10 a day from day 0; stock 200 (20 days). The sixth sale (day 5)
        // makes a forecast: 150 left at about 10 a day, 15 days: no alert.
        // By day 13, 70 left (7 days): raised. A delivery at day 20 (the
        // 21st sale needs one) brings 10 + 200: resolved.
        let options = Options::default();
        let params = RateParams::default();
        let sales: Vec<_> = (0..25).map(|d| sale(d, 10)).collect();
        let points = simulate(&sales, 200, T0, &options, &params);
        let raised: Vec<_> = points
            .iter()
            .filter(|p| p.raised[FORECAST])
            .map(|p| (p.at - T0) / DAY_US)
            .collect();
        assert_eq!(raised.len(), 1, "{raised:?}");
        assert!((12..=14).contains(&raised[0]), "{raised:?}");
        let delivery = points
            .iter()
            .position(|p| p.kind == PointKind::Delivery)
            .unwrap();
        assert_eq!((points[delivery].at - T0) / DAY_US, 20);
        assert!(points[delivery - 1].open[FORECAST]);
        assert!(!points[delivery].open[FORECAST]);
        // The threshold (10) raises once, when the stock first drops under
        // it (0 after the day-19 sale), and resolves at the delivery.
        let t: Vec<_> = points
            .iter()
            .filter(|p| p.raised[THRESHOLD])
            .map(|p| ((p.at - T0) / DAY_US, p.available))
            .collect();
        assert_eq!(t, [(19, 0)]);
        assert!(!points[delivery].open[THRESHOLD]);
    }

    #[test]
    fn the_bundled_slice_evaluates() {
        let plan = replay::plan(&replay::bundled()).unwrap();
        let report = evaluate(&plan, &Options::default()).unwrap();
        assert_eq!(report.replay_days, 6);
        assert_eq!(report.rules.len(), 2);
        // Six days: nothing is a week before the end.
        for rule in &report.rules {
            let t = &rule.tally;
            assert!(t.alerts_raised > 0 && t.skipped == t.alerts_raised);
            assert_eq!((t.judged, t.episodes), (0, 0));
        }
        let short = Options {
            lead_time_days: 2,
            ..Options::default()
        };
        let report = evaluate(&plan, &short).unwrap();
        let episodes = report.rules[0].tally.episodes;
        assert!(episodes > 0 && report.rules[0].tally.judged > 0);
        assert_eq!(report.rules[1].tally.episodes, episodes);
        assert!(report.to_text().contains("| precision |"));
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["rules"][0]["rule"], "forecast");
        assert!(json["rules"][1]["judged"].is_u64());
    }
}
