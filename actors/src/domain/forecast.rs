//! Days of cover (issue 18): a SKU's sales rate, its days of cover and
//! projected stock-out (API.md v1 additions, the SKU's `forecast`), and
//! the rule of the `stockout_forecast` alert.
//!
//! Pure maths: no I/O and no clock. Every time is passed in as [`Micros`]
//! (the forecast is computed as of the SKU's last event, or as of a sweep);
//! which events are sales and which are returns is the caller's choice
//! (the adjustment reasons are configurable), given here as [`SaleKind`].
//!
//! # The rate
//! A sale of `u` units at time `t` weighs `2^(-(now - t)/H)` as of `now`,
//! for a half-life `H` (default 7 days): the weighted sum of units is
//! `S = Σ u·2^(-(now - tᵢ)/H)`. Selling a constant `r` units a day for
//! ever gives `S = r·H/ln 2` (the integral of `r·2^(-s/H)` over the past),
//! so the rate is estimated as `S·ln 2 / H` (`H` in days). A SKU with only
//! `a` of history would have `S = r·H·(1 - 2^(-a/H))/ln 2`, so the estimate
//! is divided by `1 - 2^(-a/H)` (`a` = time since the first sale this state
//! has seen, at least [`MIN_HISTORY_US`]): a new SKU is not under-read by
//! a factor of ten in its first day, and after a few half-lives the factor
//! is 1. `based_on_sales` is the same weighted sum of the sales themselves
//! (each counting 1): "the sales the rate rests on", as the rate weighs them.
//!
//! # Fixed point, and why the rebuilt state equals the live one
//! The state is integers only, the same on every platform (floats appear
//! only in display helpers). It uses *forward decay*: the sums are kept
//! relative to the start of the current half-life block `k·H` since the
//! epoch, a sale adding `u·2^((t - k·H)/H)`; moving to a later block `k + n`
//! shifts every sum right by `n` bits (one halving per half-life).
//! Since `(x >> a) >> b == x >> (a + b)`, shifting in one step or several
//! gives the same bits: a state brought forward by [`SalesRate::decay_to`]
//! (a sweep) and one that was not are identical after the next event, and
//! [`SalesRate::rebuild`] from history gives exactly the live state.
//!
//! Formats: units and sale counts are Q43.20 (`raw / 2^20`), so a SKU's
//! weighted sum may reach 2^42 units (saturating beyond); an exponent's
//! fraction is Q0.32 (`(t - k·H)/H` to `H/2^32`, 0.14 ms at 7 days);
//! `2^f` is Q1.62. `exp2_frac` is never above the exact `2^f` and at
//! most 2^-55 (relative) below it; with the exponent rounded down to 2^-32
//! a weight is within 1.7·10^-10 (relative, low) of `2^(Δt/H)`, and each
//! sale or shift loses under 2^-20 units: far below the 0.1 a day shown.
//!
//! # Limits
//! Seasonality and trends are not modelled: the rate is a weighted mean
//! of the recent past. A SKU with fewer than `min_sales` weighted sales has
//! no forecast (its rate is shown, its cover is null).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::Micros;

/// One day in microseconds.
pub const DAY_US: i64 = 86_400_000_000;

/// The least history the rate assumes (see the module doc): a SKU's first
/// sales are read as at least a day's worth, so five sales in its first
/// minute do not make a rate of thousands a day.
pub const MIN_HISTORY_US: i64 = DAY_US;

/// Fractional bits of units, sale counts and rates (Q43.20).
const FRAC_BITS: u32 = 20;
/// 1.0 in Q43.20.
const ONE: i64 = 1 << FRAC_BITS;
/// 1.0 in Q1.62, the format of `2^f` for `f` in `[0, 1)`.
const W_ONE: u128 = 1 << 62;
/// ln 2 in Q1.62, rounded to nearest (3196577161300663915.47...).
const LN2_Q62: u128 = 3_196_577_161_300_663_915;

/// `2^(2^-(j+1))` in Q1.62 for `j` in `0..32`: each the floor of the square
/// root of the one before (from 2.0), so every entry is at most exact and
/// at most 2^-61 (relative) below it.
const ROOTS: [u128; 32] = roots();

const fn roots() -> [u128; 32] {
    let mut table = [0u128; 32];
    let mut previous = 2 * W_ONE;
    let mut j = 0;
    while j < 32 {
        // sqrt(p / 2^62) in Q1.62 is sqrt(p · 2^62); p < 2^63, so p << 62 fits.
        previous = (previous << 62).isqrt();
        table[j] = previous;
        j += 1;
    }
    table
}

/// `2^f` in Q1.62 for the exponent `f / 2^32` (in `[0, 1)`): the product
/// of `2^(2^-j)` over the set bits of `f`, most significant first, each
/// product rounded down. Never above the exact value, at most 2^-55 below
/// (64 roundings of at most 2^-61); `exp2_frac(0)` is exactly 1.
///
/// Monotone: for `f < g`, let bit `j` be the highest where they differ
/// (set in `g`). Up to it both compute the same product `P >= 2^62`; `g`
/// then multiplies by `2^(2^-j)` (losing < 2^-61) and by factors >= 1,
/// which never lower an integer; `f`'s remaining factors are together at
/// most `2^(2^-j - 2^-32)`, a ratio 1.6·10^-10 smaller, far more than the
/// roundings: so `exp2_frac(f) < exp2_frac(g)`.
fn exp2_frac(f: u32) -> u128 {
    let mut acc = W_ONE;
    for (j, root) in ROOTS.iter().enumerate() {
        if f & (1 << (31 - j)) != 0 {
            // acc < 2^63 and root < 2^63: the product fits in 126 bits.
            acc = (acc * root) >> 62;
        }
    }
    acc
}

/// Splits a time into its half-life block (`floor(t / H)`) and the
/// fraction of the block gone by, in Q0.32 (rounded down).
fn split(at: Micros, half_life_us: i64) -> (i64, u32) {
    let block = at.0.div_euclid(half_life_us);
    let into = at.0.rem_euclid(half_life_us) as u128;
    // into < H, so the quotient is < 2^32.
    let frac = (into << 32) / half_life_us as u128;
    (block, frac as u32)
}

/// `x >> k` for `x >= 0`, 0 once every bit is gone.
fn shr(x: i64, k: i64) -> i64 {
    if k >= 63 {
        0
    } else {
        x >> k
    }
}

/// `v << k`, saturating at `i64::MAX`.
fn shl_saturating(v: u128, k: i64) -> i64 {
    if v == 0 {
        return 0;
    }
    if k >= 63 || v > (i64::MAX as u128) >> k {
        return i64::MAX;
    }
    (v << k) as i64
}

fn clamp_i64(v: u128) -> i64 {
    v.min(i64::MAX as u128) as i64
}

/// Whole units in Q43.20, saturating.
fn q20(units: i64) -> i64 {
    units.saturating_mul(ONE)
}

/// Parameters of the rate, the forecast and its alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateParams {
    /// Age at which a sale weighs half (µs). Default 7 days: a week's
    /// pattern is smoothed, and a change of pace shows within days. A
    /// state kept under another half-life must be rebuilt
    /// ([`SalesRate::is_for`]).
    pub half_life_us: i64,
    /// Weighted sales below which there is no forecast, no alert, and no
    /// winsorising (there is no typical sale yet). Default 5.
    pub min_sales: i64,
    /// One sale counts at most `cap_factor` times the larger of a day's
    /// sales at the current rate and the typical (weighted mean) sale, and
    /// at least 1 unit. Default 5: a single wholesale order of a month's
    /// stock does not make the SKU look like it sells a month a day, while
    /// a SKU sold in cases of 24 a few times a week keeps its usual orders
    /// whole.
    pub cap_factor: i64,
    /// A return this soon after the last sale (µs) nets units off it: an
    /// order cancelled the same day does not count. Default 24 h.
    pub return_window_us: i64,
    /// Cover beyond this many days is shown as null (no stock-out
    /// foreseen), like a rate of 0. Default 365 days; it also keeps
    /// `stockout_at` far inside the range an RFC 3339 time can show.
    pub horizon_days: i64,
    /// An open forecast alert resolves once the cover is the lead time
    /// plus this percentage of it... Default 20 %.
    pub resolve_margin_pct: i64,
    /// ...and at least this much (µs). Default 12 h: with a lead time of
    /// one day, cover has to reach 1.5 days, not 1.2.
    pub min_resolve_margin_us: i64,
}

impl Default for RateParams {
    fn default() -> Self {
        Self {
            half_life_us: 7 * DAY_US,
            min_sales: 5,
            cap_factor: 5,
            return_window_us: DAY_US,
            horizon_days: 365,
            resolve_margin_pct: 20,
            min_resolve_margin_us: DAY_US / 2,
        }
    }
}

/// What an event does to the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SaleKind {
    /// Units sold (a `sale` adjustment, a committed hold).
    Sale,
    /// Units brought back by a customer.
    Return,
}

/// A rate in units per day, Q43.20 (`raw / 2^20`), never negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnitsPerDay(pub i64);

impl UnitsPerDay {
    /// Rounded to tenths, half away from zero (a rate is never negative,
    /// so half up): 12.25 a day is shown as 12.3.
    pub fn to_tenths(self) -> Tenths {
        let half = 1i128 << (FRAC_BITS - 1);
        Tenths(((i128::from(self.0) * 10 + half) >> FRAC_BITS) as i64)
    }

    /// For display and tests only; no decision reads it.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / ONE as f64
    }
}

/// A decimal with one place, as integer tenths (`124` is 12.4); shown and
/// parsed as a string (`"12.4"`), as API.md writes money and rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Tenths(pub i64);

impl Tenths {
    /// `"12.4"`, `"0.0"`, `"-3.5"`; exactly one decimal. `None` otherwise.
    pub fn parse(raw: &str) -> Option<Self> {
        let (negative, digits) = match raw.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        let (whole, tenth) = digits.split_once('.')?;
        let digit_string = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digit_string(whole) || tenth.len() != 1 || !digit_string(tenth) {
            return None;
        }
        let value = whole
            .parse::<i64>()
            .ok()?
            .checked_mul(10)?
            .checked_add(i64::from(tenth.as_bytes()[0] - b'0'))?;
        Some(Self(if negative { -value } else { value }))
    }
}

impl fmt::Display for Tenths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{}", abs / 10, abs % 10)
    }
}

impl Serialize for Tenths {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Tenths {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).ok_or_else(|| serde::de::Error::custom("not a decimal with one place"))
    }
}

/// The running state of a SKU's exponentially weighted sales rate, saved
/// with the SKU row (serde) and updated by each sale or return.
///
/// Equal states mean equal rates at every later time; the live state and
/// the one [`SalesRate::rebuild`] folds from the same events in the same
/// order are equal (module doc), provided [`SalesRate::decay_to`] is never
/// given a time past the next event's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesRate {
    /// `H` in µs: the sums below mean nothing under another one.
    half_life_us: i64,
    /// The half-life block the sums are relative to: they are the weighted
    /// sums as of `block · H` since the epoch. Only ever moves forward.
    block: i64,
    /// Σ counted units · 2^((tᵢ - block·H)/H), Q43.20.
    units: i64,
    /// Σ 2^((tᵢ - block·H)/H) over sales, Q43.20: the weighted count.
    sales: i64,
    /// The first sale this state has seen (how much history the rate has).
    first_sale_at: Option<Micros>,
    /// The last sale recorded: a return within the window of it nets off.
    last_sale_at: Option<Micros>,
    /// Units of the last sale (as sold, before the cap) not yet netted off.
    last_sale_units: i64,
    /// Its share of `units` still counted (same format and block).
    last_sale_weight: i64,
    /// Its share of `sales`, taken off once all of it is returned.
    last_sale_count: i64,
}

impl SalesRate {
    /// No sales yet. A half-life below 1 µs is taken as 1 µs.
    pub fn new(params: &RateParams) -> Self {
        Self {
            half_life_us: params.half_life_us.max(1),
            block: 0,
            units: 0,
            sales: 0,
            first_sale_at: None,
            last_sale_at: None,
            last_sale_units: 0,
            last_sale_weight: 0,
            last_sale_count: 0,
        }
    }

    /// The state folded from a SKU's history: the same calls, in the same
    /// order, as the live state received (so pass events in commit order).
    pub fn rebuild(
        events: impl IntoIterator<Item = (Micros, SaleKind, i64)>,
        params: &RateParams,
    ) -> Self {
        let mut rate = Self::new(params);
        for (at, kind, units) in events {
            rate.apply(kind, units, at, params);
        }
        rate
    }

    /// The state as the `skus.sales_rate` column keeps it: its nine
    /// integers, colon-separated, `-` for a sale time not yet seen
    /// (`604800000000:2900:0:0:-:-:0:0:0` for no sales). Written with a
    /// row on most sales, so cheaper than JSON (no field names, no RFC
    /// 3339 times) and a third of its size.
    pub fn encode(&self) -> String {
        use std::fmt::Write;
        let time = |t: Option<Micros>| t.map_or_else(|| "-".to_owned(), |t| t.0.to_string());
        let mut out = String::with_capacity(96);
        let _ = write!(
            out,
            "{}:{}:{}:{}:{}:{}:{}:{}:{}",
            self.half_life_us,
            self.block,
            self.units,
            self.sales,
            time(self.first_sale_at),
            time(self.last_sale_at),
            self.last_sale_units,
            self.last_sale_weight,
            self.last_sale_count
        );
        out
    }

    /// Reads [`SalesRate::encode`]'s form; `None` for anything else.
    pub fn decode(raw: &str) -> Option<Self> {
        let parts: Vec<&str> = raw.split(':').collect();
        let [h, block, units, sales, first, last, lu, lw, lc] = parts[..] else {
            return None;
        };
        let int = |s: &str| s.parse::<i64>().ok();
        let time = |s: &str| -> Option<Option<Micros>> {
            match s {
                "-" => Some(None),
                s => int(s).map(|t| Some(Micros(t))),
            }
        };
        let half_life_us = int(h).filter(|h| *h > 0)?;
        Some(Self {
            half_life_us,
            block: int(block)?,
            units: int(units)?,
            sales: int(sales)?,
            first_sale_at: time(first)?,
            last_sale_at: time(last)?,
            last_sale_units: int(lu)?,
            last_sale_weight: int(lw)?,
            last_sale_count: int(lc)?,
        })
    }

    /// Whether the state was kept under `params`' half-life; when not, it
    /// must be rebuilt from history (other parameters only act on later
    /// events and on reading).
    pub fn is_for(&self, params: &RateParams) -> bool {
        self.half_life_us == params.half_life_us.max(1)
    }

    /// The half-life the state is kept under (µs).
    pub fn half_life_us(&self) -> i64 {
        self.half_life_us
    }

    /// One event: [`SalesRate::record_sale`] or [`SalesRate::record_return`].
    pub fn apply(&mut self, kind: SaleKind, units: i64, at: Micros, params: &RateParams) {
        match kind {
            SaleKind::Sale => self.record_sale(units, at, params),
            SaleKind::Return => self.record_return(units, at, params),
        }
    }

    /// `units` sold at `at`. Once the rate rests on `min_sales` weighted
    /// sales, the sale counts at most [`SalesRate::cap`] units (it still
    /// counts as one whole sale). Units <= 0 are not a sale and are ignored.
    pub fn record_sale(&mut self, units: i64, at: Micros, params: &RateParams) {
        self.decay_to(at);
        if units <= 0 {
            return;
        }
        let mut counted = q20(units);
        if self.weighted_sales(at) >= q20(params.min_sales) {
            counted = counted.min(self.cap(at, params));
        }
        let weight = self.weigh(counted, at);
        let sale = self.weigh(ONE, at);
        self.units = self.units.saturating_add(weight);
        self.sales = self.sales.saturating_add(sale);

        self.first_sale_at = Some(self.first_sale_at.map_or(at, |first| first.min(at)));
        self.last_sale_at = Some(at);
        self.last_sale_units = units;
        self.last_sale_weight = weight;
        self.last_sale_count = sale;
    }

    /// `units` returned at `at`. Within `return_window_us` of the last sale
    /// the return nets off that sale, in proportion to the units it sold (a
    /// huge order counted at its cap and then cancelled nets off all of its
    /// cap), never more than it counted; a sale returned in full no longer
    /// counts as a sale either. Only the last sale: events do not say which
    /// sale a return belongs to, and netting against older ones would let
    /// a steady seller's returns of last week's sales net off as well; an
    /// order cancelled after another sale came in nets off at most that
    /// sale (the cap bounds what the cancelled one counted).
    ///
    /// A later return changes nothing: the demand was real when it was
    /// sold (the units were gone for days), the unit comes back as stock
    /// like a restock, and which sale it belongs to is no longer known.
    pub fn record_return(&mut self, units: i64, at: Micros, params: &RateParams) {
        self.decay_to(at);
        let Some(last) = self.last_sale_at else {
            return;
        };
        if units <= 0
            || self.last_sale_units == 0
            || at.0.saturating_sub(last.0) > params.return_window_us
        {
            return;
        }
        let netted = units.min(self.last_sale_units);
        let weight = (i128::from(self.last_sale_weight) * i128::from(netted)
            / i128::from(self.last_sale_units)) as i64;
        self.units = self.units.saturating_sub(weight).max(0);
        self.last_sale_weight -= weight;
        self.last_sale_units -= netted;
        if self.last_sale_units == 0 {
            self.sales = self.sales.saturating_sub(self.last_sale_count).max(0);
            self.last_sale_count = 0;
        }
    }

    /// Brings the sums forward to `at`'s half-life block (time moving on
    /// with no sales). The value at `at` and at every later time does not
    /// change (the readers decay by themselves), nor does the state after
    /// the next event at or after `at`; earlier times are never gone back
    /// to. Not needed to read a rate, only to store a fresher state.
    pub fn decay_to(&mut self, at: Micros) {
        let (block, _) = split(at, self.half_life_us);
        if block <= self.block {
            return;
        }
        let n = block.saturating_sub(self.block);
        self.units = shr(self.units, n);
        self.sales = shr(self.sales, n);
        self.last_sale_weight = shr(self.last_sale_weight, n);
        self.last_sale_count = shr(self.last_sale_count, n);
        self.block = block;
    }

    /// A sum kept relative to `self.block`, as of `at`: `x · 2^(-(at -
    /// block·H)/H)`, Q43.20, rounded down; non-increasing in `at` (the
    /// divisor `exp2_frac` grows within a block and stays below 2, so the
    /// value at a block's end is at least half of its start).
    fn value_at(&self, x: i64, at: Micros) -> i64 {
        let (block, frac) = split(at, self.half_life_us);
        let x = x.max(0);
        let e = exp2_frac(frac);
        if block >= self.block {
            let x = shr(x, block.saturating_sub(self.block));
            // x < 2^63, so x << 62 < 2^125; e >= 2^62, so the result <= x.
            (((x as u128) << 62) / e) as i64
        } else {
            // Before the reference block (an event out of order): grows.
            let v = ((x as u128) << 62) / e;
            shl_saturating(v, self.block.saturating_sub(block))
        }
    }

    /// The weight of `x` (Q43.20) at `at` relative to `self.block`, which
    /// is `at`'s block or a later one (after `decay_to(at)`).
    fn weigh(&self, x: i64, at: Micros) -> i64 {
        let (block, frac) = split(at, self.half_life_us);
        let w = clamp_i64((x.max(0) as u128 * exp2_frac(frac)) >> 62);
        shr(w, self.block.saturating_sub(block))
    }

    /// The weighted sum of units as of `at` (Q43.20): `S` in the module doc.
    pub fn weighted_units(&self, at: Micros) -> i64 {
        self.value_at(self.units, at)
    }

    /// The weighted count of sales as of `at` (Q43.20).
    pub fn weighted_sales(&self, at: Micros) -> i64 {
        self.value_at(self.sales, at)
    }

    /// The sales the rate rests on as of `at`: the weighted count, rounded
    /// down (so `based_on_sales >= min_sales` reads as the rule does).
    pub fn based_on_sales(&self, at: Micros) -> i64 {
        self.weighted_sales(at) >> FRAC_BITS
    }

    /// The rate as of `at`: `S · ln 2 / H`, divided by `1 - 2^(-a/H)` for
    /// `a` the history (module doc); rounded down. With no sales since, it
    /// halves with every half-life (a little faster while `a` is short).
    pub fn units_per_day(&self, at: Micros) -> UnitsPerDay {
        let s = self.weighted_units(at);
        let Some(first) = self.first_sale_at else {
            return UnitsPerDay(0);
        };
        if s == 0 {
            return UnitsPerDay(0);
        }
        let h = self.half_life_us as u128;
        // S · ln 2 (Q20 · Q62 = Q82, < 2^125), then to Q50 and per day.
        let per_h = (s as u128 * LN2_Q62) >> 32;
        let per_day = match per_h.checked_mul(DAY_US as u128) {
            Some(v) => (v / h) >> 30,
            None => (per_h / h).saturating_mul(DAY_US as u128) >> 30,
        };
        // 2^(-a/H) in Q62 for the history a: 2^124 / 2^f, shifted by the
        // whole half-lives.
        let history = at.0.saturating_sub(first.0).max(MIN_HISTORY_US);
        let (whole, frac) = split(Micros(history), self.half_life_us);
        let unseen = if whole >= 62 {
            0
        } else {
            ((1u128 << 124) / exp2_frac(frac)) >> whole
        };
        // history >= 1 day, so unseen < 2^62 unless H exceeds 2^32 days
        // (the exponent rounds to 0); max(1) keeps the division defined.
        let seen = W_ONE.saturating_sub(unseen).max(1);
        let corrected = match per_day.checked_mul(W_ONE) {
            Some(v) => v / seen,
            None => u128::MAX,
        };
        UnitsPerDay(clamp_i64(corrected))
    }

    /// The most one sale counts as of `at` (Q43.20): `cap_factor` times the
    /// larger of a day at the current rate and the weighted mean sale, at
    /// least 1 unit.
    pub fn cap(&self, at: Micros, params: &RateParams) -> i64 {
        let day = i128::from(self.units_per_day(at).0);
        let mean = if self.sales > 0 {
            // Both sums carry the same weights, so their ratio needs no decay.
            i128::from(self.units) * i128::from(ONE) / i128::from(self.sales)
        } else {
            0
        };
        let cap = day
            .max(mean)
            .saturating_mul(i128::from(params.cap_factor.max(0)));
        cap.clamp(i128::from(ONE), i128::from(i64::MAX)) as i64
    }
}

/// A SKU's forecast (API.md v1 additions, the SKU's `forecast`), computed
/// as of its last event (or a sweep).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forecast {
    /// Units sold per day, rounded half up to tenths.
    pub sales_per_day: Tenths,
    /// The weighted count of sales the rate rests on, rounded down.
    pub based_on_sales: i64,
    /// `available / sales_per_day` (the exact rate, not the shown one),
    /// rounded *down* to tenths: "days left" never overstates, and
    /// `days_of_cover < lead_time` reads the same on the shown number as on
    /// the exact one for a lead time in whole days. 0.0 when `available <=
    /// 0`. Null: too few sales, a rate of 0, or beyond the horizon.
    pub days_of_cover: Option<Tenths>,
    /// `as_of` plus the exact cover (µs, rounded down); `as_of` itself
    /// when nothing is available; null when `days_of_cover` is.
    pub stockout_at: Option<Micros>,
    pub as_of: Micros,
}

impl Forecast {
    /// No sales known: a rate of 0 on no sales, no cover.
    pub fn none(as_of: Micros) -> Self {
        Self {
            sales_per_day: Tenths(0),
            based_on_sales: 0,
            days_of_cover: None,
            stockout_at: None,
            as_of,
        }
    }
}

/// The forecast of a SKU with `available` units (may be negative after a
/// physical count) and `rate`, as of `as_of`.
pub fn forecast(rate: &SalesRate, available: i64, as_of: Micros, params: &RateParams) -> Forecast {
    project(
        rate.units_per_day(as_of),
        rate.weighted_sales(as_of),
        available,
        as_of,
        params,
    )
}

/// [`forecast`] from the rate and the weighted sales (both Q43.20).
fn project(
    per_day: UnitsPerDay,
    weighted_sales: i64,
    available: i64,
    as_of: Micros,
    params: &RateParams,
) -> Forecast {
    let mut forecast = Forecast {
        sales_per_day: per_day.to_tenths(),
        based_on_sales: weighted_sales >> FRAC_BITS,
        days_of_cover: None,
        stockout_at: None,
        as_of,
    };
    if weighted_sales < q20(params.min_sales) {
        // Out of stock or not, there is nothing to project from (the
        // out_of_stock alert speaks for an empty shelf).
        return forecast;
    }
    if available <= 0 {
        forecast.days_of_cover = Some(Tenths(0));
        forecast.stockout_at = Some(as_of);
        return forecast;
    }
    if per_day.0 <= 0 {
        return forecast;
    }
    // available · 2^20 · DAY_US < 2^63 · 2^20 · 2^37: fits in i128.
    let cover_us =
        i128::from(available) * i128::from(ONE) * i128::from(DAY_US) / i128::from(per_day.0);
    if cover_us > i128::from(params.horizon_days.max(0)) * i128::from(DAY_US) {
        return forecast;
    }
    // cover_us is at most the horizon (checked above): it fits in i64.
    let cover_us = cover_us as i64;
    forecast.days_of_cover = Some(Tenths(
        (i128::from(cover_us) * 10 / i128::from(DAY_US)) as i64,
    ));
    forecast.stockout_at = Some(Micros(as_of.0.saturating_add(cover_us)));
    forecast
}

/// Which rules raise stock alerts for a SKU (API.md `alert_rule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertRule {
    /// The fixed `low_stock_threshold` only (the rule before issue 18).
    Threshold,
    /// The `stockout_forecast` only.
    Forecast,
    /// Both, each raising and resolving its own alert. The default for a
    /// new install: nothing an operator relied on goes quiet, and the
    /// forecast is added; per SKU or globally either can be turned off.
    #[default]
    Both,
}

impl AlertRule {
    pub const ALL: [AlertRule; 3] = [AlertRule::Threshold, AlertRule::Forecast, AlertRule::Both];

    pub fn as_str(self) -> &'static str {
        match self {
            AlertRule::Threshold => "threshold",
            AlertRule::Forecast => "forecast",
            AlertRule::Both => "both",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == raw)
    }

    /// Whether `low_stock` alerts are raised.
    pub fn uses_threshold(self) -> bool {
        matches!(self, AlertRule::Threshold | AlertRule::Both)
    }

    /// Whether `stockout_forecast` alerts are raised.
    pub fn uses_forecast(self) -> bool {
        matches!(self, AlertRule::Forecast | AlertRule::Both)
    }
}

/// What the `stockout_forecast` rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForecastTransition {
    Raise,
    Resolve,
}

/// The cover (tenths of a day) at or above which an open forecast alert
/// resolves: the lead time plus `resolve_margin_pct` of it, at least
/// `min_resolve_margin_us`, each rounded up to a tenth. Lead time 5 days:
/// 6.0; 1 day: 1.5; 0: 0.5. Saturating.
pub fn forecast_resolve_level(lead_time_days: i64, params: &RateParams) -> Tenths {
    let lead = i128::from(lead_time_days.max(0)) * 10;
    let by_pct = (lead * i128::from(params.resolve_margin_pct.max(0)) + 99) / 100;
    let at_least = (i128::from(params.min_resolve_margin_us.max(0)) * 10 + (DAY_US as i128 - 1))
        / DAY_US as i128;
    Tenths((lead + by_pct.max(at_least)).min(i128::from(i64::MAX)) as i64)
}

/// The `stockout_forecast` rule, edge-triggered like the stock alerts:
/// raise when the cover is below the lead time (the SKU runs out before a
/// delivery ordered now arrives) and none is open; resolve an open one once
/// the cover reaches [`forecast_resolve_level`], so a cover wobbling around
/// the lead time does not flap. `None`: nothing changes.
///
/// With no forecast (too few sales, no rate, beyond the horizon) nothing is
/// raised and an open alert resolves: the projection it stood on is gone
/// (this is how the sweep resolves the alerts of SKUs that stopped selling).
/// For too few sales, only once they are under half of `min_sales`: a slow
/// seller dipping under `min_sales` between two sales keeps its alert.
/// A lead time <= 0 never raises. The caller skips the rule when
/// [`AlertRule::uses_forecast`] is false (and resolves open ones).
pub fn forecast_alert(
    forecast: &Forecast,
    lead_time_days: i64,
    open: bool,
    params: &RateParams,
) -> Option<ForecastTransition> {
    let lead = Tenths(lead_time_days.max(0).saturating_mul(10));
    match (forecast.days_of_cover, open) {
        // Hysteresis on the sales count too: a slow seller's weighted
        // count dips under `min_sales` between two sales, which would
        // resolve and re-raise its alert at every sale. Open, it stands
        // until the count falls under half of `min_sales` (or the rate
        // is 0, or the cover passes the horizon).
        (None, true)
            if forecast.sales_per_day.0 > 0
                && forecast.based_on_sales < params.min_sales
                && forecast.based_on_sales.saturating_mul(2) >= params.min_sales =>
        {
            None
        }
        (None, true) => Some(ForecastTransition::Resolve),
        (Some(cover), false) if cover < lead => Some(ForecastTransition::Raise),
        (Some(cover), true) if cover >= forecast_resolve_level(lead_time_days, params) => {
            Some(ForecastTransition::Resolve)
        }
        _ => None,
    }
}

/// The numbers behind a forecast alert, for its message (the caller puts
/// the SKU in front, as for the other alerts): "sells 12.4/day over 31
/// sales; 3.1 days left; lead time 5 days".
pub fn explain(forecast: &Forecast, lead_time_days: i64) -> String {
    let plural = |n: i64| if n == 1 { "" } else { "s" };
    let cover = match forecast.days_of_cover {
        Some(days) => format!("{days} days left"),
        None => "no stock-out forecast".to_owned(),
    };
    format!(
        "sells {}/day over {} sale{}; {cover}; lead time {lead_time_days} day{}",
        forecast.sales_per_day,
        forecast.based_on_sales,
        plural(forecast.based_on_sales),
        plural(lead_time_days),
    )
}

/// The server's forecast settings (issue 18): the rate's parameters, the
/// lead time and alert rule a SKU without its own follows, and which
/// adjustment reasons are sales and returns.
///
/// One per process ([`set_config`], at start; [`config`] reads it): a SKU's
/// API object is a function of its row and these settings, and every place
/// that shows one (the event row, HTTP, the bus, the push) needs them, so
/// they are a process-wide constant rather than an argument threaded
/// through each serialisation. Changing them takes a restart, which is
/// what keeps "one version, one body" true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForecastConfig {
    pub params: RateParams,
    /// Days a delivery ordered now takes to arrive, for SKUs that set none
    /// (`SKUWATCH_LEAD_TIME_DAYS`, default 7).
    pub lead_time_days: i64,
    /// Which rules raise stock alerts for SKUs that set none
    /// (`SKUWATCH_ALERT_RULE`, default `both`).
    pub alert_rule: AlertRule,
    /// Adjustment reasons that are sales (units = -delta of a decrease);
    /// default `sale` (committed holds sell with it).
    pub sale_reasons: Vec<String>,
    /// Adjustment reasons that are returns (units = delta of an increase);
    /// default `return`.
    pub return_reasons: Vec<String>,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        Self {
            params: RateParams::default(),
            lead_time_days: 7,
            alert_rule: AlertRule::Both,
            sale_reasons: vec!["sale".to_owned()],
            return_reasons: vec!["return".to_owned()],
        }
    }
}

impl ForecastConfig {
    /// What a stock change of `delta` with `reason` does to the rate: a
    /// sale of `-delta` units, a return of `delta`, or nothing.
    pub fn sale_of(&self, reason: Option<&str>, delta: i64) -> Option<(SaleKind, i64)> {
        let reason = reason?;
        if delta < 0 && self.sale_reasons.iter().any(|r| r == reason) {
            return Some((SaleKind::Sale, delta.checked_neg()?));
        }
        if delta > 0 && self.return_reasons.iter().any(|r| r == reason) {
            return Some((SaleKind::Return, delta));
        }
        None
    }
}

static CONFIG: std::sync::OnceLock<ForecastConfig> = std::sync::OnceLock::new();

/// The process's forecast settings: those given to [`set_config`], else
/// the defaults.
pub fn config() -> &'static ForecastConfig {
    CONFIG.get_or_init(ForecastConfig::default)
}

/// Sets the process's forecast settings, once. Setting the same again is
/// fine (several servers in one test process); different settings once
/// any are in use are refused with the ones in force (see
/// [`ForecastConfig`] for why they are per process).
pub fn set_config(wanted: ForecastConfig) -> Result<(), &'static ForecastConfig> {
    let _ = CONFIG.set(wanted.clone());
    let current = config();
    if *current == wanted {
        Ok(())
    } else {
        Err(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const HOUR_US: i64 = 3_600_000_000;

    fn params() -> RateParams {
        RateParams::default()
    }

    /// A start time 3 days into a half-life block (2025-08-03), so that
    /// 8 weeks on, the next hours stay inside one block.
    fn start() -> Micros {
        Micros(2_900 * 7 * DAY_US + 3 * DAY_US)
    }

    fn after(t: Micros, us: i64) -> Micros {
        Micros(t.0 + us)
    }

    /// `per_day` sales of one unit each, evenly spaced, for `days` days
    /// from `from`; returns the state and the time of the last sale.
    fn steady(per_day: i64, days: i64, from: Micros) -> (SalesRate, Micros) {
        let p = params();
        let mut rate = SalesRate::new(&p);
        let step = DAY_US / per_day;
        let mut at = from;
        for i in 0..per_day * days {
            at = after(from, i * step);
            rate.record_sale(1, at, &p);
        }
        (rate, at)
    }

    fn rel_err(got: f64, want: f64) -> f64 {
        ((got - want) / want).abs()
    }

    #[test]
    fn the_column_form_reads_back_to_the_same_state() {
        let empty = SalesRate::new(&params());
        assert_eq!(SalesRate::decode(&empty.encode()), Some(empty.clone()));
        let (rate, _) = steady(7, 20, start());
        assert_eq!(SalesRate::decode(&rate.encode()), Some(rate));
        for bad in [
            "",
            "1:2:3",
            "0:0:0:0:-:-:0:0:0",
            "1:2:3:4:x:-:0:0:0",
            "1:2:3:4:-:-:0:0:0:9",
        ] {
            assert_eq!(SalesRate::decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_slow_sellers_alert_does_not_flap_as_its_count_dips_under_min_sales() {
        let p = params();
        // One unit every two days, 3 available, lead time 7.
        let mut rate = SalesRate::new(&p);
        let mut open = false;
        let (mut raised, mut resolved) = (0, 0);
        let mut at = start();
        for _ in 0..20 {
            rate.record_sale(1, at, &p);
            for step in [0, DAY_US / 2, DAY_US, 3 * DAY_US / 2] {
                let f = forecast(&rate, 3, after(at, step), &p);
                match forecast_alert(&f, 7, open, &p) {
                    Some(ForecastTransition::Raise) => (raised, open) = (raised + 1, true),
                    Some(ForecastTransition::Resolve) => (resolved, open) = (resolved + 1, false),
                    None => {}
                }
            }
            at = after(at, 2 * DAY_US);
        }
        assert_eq!((raised, resolved), (1, 0), "raised once, and it stands");
        // Selling stops: it resolves once under half of min_sales.
        let mut later = at;
        while open {
            later = after(later, DAY_US);
            let f = forecast(&rate, 3, later, &p);
            if forecast_alert(&f, 7, open, &p) == Some(ForecastTransition::Resolve) {
                open = false;
                assert!(f.based_on_sales * 2 < p.min_sales, "{f:?}");
            }
        }
    }

    #[test]
    fn exp2_is_exact_at_zero_and_tabulates_the_roots_of_two() {
        assert_eq!(exp2_frac(0), W_ONE);
        assert_eq!(ROOTS[0], exp2_frac(1 << 31), "2^(1/2)");
        for (j, root) in ROOTS.iter().enumerate() {
            let want = 2f64.powf(2f64.powi(-(j as i32 + 1)));
            assert!(
                rel_err(*root as f64 / W_ONE as f64, want) < 4e-16,
                "root {j}"
            );
        }
    }

    #[test]
    fn exp2_is_within_its_error_bound_of_f64() {
        // f64's own exp2 is within about 1 ulp (2^-52): the fixed point is
        // checked to that, the documented bound (2^-55) being finer.
        let mut f: u32 = 0;
        for _ in 0..100_000 {
            let got = exp2_frac(f) as f64 / W_ONE as f64;
            let want = (f64::from(f) / 2f64.powi(32)).exp2();
            assert!(rel_err(got, want) < 4e-16, "f = {f}");
            f = f.wrapping_add(42_949); // strides over [0, 1)
        }
        let got = exp2_frac(u32::MAX);
        assert!(got < 2 * W_ONE);
    }

    #[test]
    fn exp2_is_monotone_across_every_bit_boundary() {
        for bit in 0..32 {
            for k in 1..64u64 {
                let g = (k << bit) & u64::from(u32::MAX);
                if g == 0 {
                    continue;
                }
                let g = g as u32;
                assert!(exp2_frac(g - 1) <= exp2_frac(g), "at {g}");
            }
        }
    }

    #[test]
    fn ln2_is_right() {
        let got = LN2_Q62 as f64 / W_ONE as f64;
        assert!(rel_err(got, std::f64::consts::LN_2) < 2e-16);
    }

    #[test]
    fn a_weight_is_within_two_ten_billionths_of_the_exact_decay() {
        let p = params();
        let mut rate = SalesRate::new(&p);
        let t0 = start();
        rate.record_sale(1_000_000, t0, &p);
        for dt in [
            1,
            999,
            HOUR_US,
            DAY_US + 12_345,
            3 * DAY_US,
            7 * DAY_US - 1,
            20 * DAY_US,
        ] {
            let got = rate.weighted_units(after(t0, dt)) as f64 / ONE as f64;
            let want = 1_000_000.0 * (-(dt as f64) / p.half_life_us as f64).exp2();
            assert!(rel_err(got, want) < 2e-10, "dt = {dt}: {got} vs {want}");
        }
    }

    #[test]
    fn ten_units_a_day_for_eight_weeks_reads_ten_a_day_within_two_percent() {
        let (rate, last) = steady(10, 56, start());
        for at in [last, after(last, DAY_US / 20), after(last, DAY_US / 10 - 1)] {
            let got = rate.units_per_day(at).as_f64();
            assert!(rel_err(got, 10.0) < 0.02, "{got}");
        }
        assert_eq!(rate.units_per_day(last).to_tenths(), Tenths(100));
        // 10 a day weighted over H/ln 2 = 10.1 days.
        assert_eq!(rate.based_on_sales(last), 101);
    }

    #[test]
    fn a_new_sku_is_not_under_read_in_its_first_days() {
        let (rate, last) = steady(10, 3, start());
        let got = rate.units_per_day(last).as_f64();
        assert!(rel_err(got, 10.0) < 0.05, "{got}");
    }

    #[test]
    fn with_no_sales_the_rate_halves_every_half_life() {
        let (rate, last) = steady(10, 56, start());
        let h = params().half_life_us;
        let mut before = rate.units_per_day(last).as_f64();
        for k in 1..=6 {
            let now = rate.units_per_day(after(last, k * h)).as_f64();
            // The history correction moves from 1/(1 - 2^-8) to 1/(1 - 2^-14).
            assert!(rel_err(now, before / 2.0) < 0.005, "{k}: {now} vs {before}");
            before = now;
        }
        let s = rate.weighted_units(last);
        let s_h = rate.weighted_units(after(last, h));
        assert!((2 * s_h - s).abs() <= 4, "{s} {s_h}");
    }

    #[test]
    fn a_huge_order_is_winsorised_once_there_is_a_typical_sale() {
        let p = params();
        let (mut rate, last) = steady(10, 56, start());
        let at = after(last, HOUR_US);
        let before = rate.units_per_day(at).as_f64();
        let cap = rate.cap(at, &p);
        // 5 x a day at 10/day (the mean sale is 1 unit).
        assert!(rel_err(cap as f64 / ONE as f64, 5.0 * before) < 1e-6);
        rate.record_sale(10_000, at, &p);
        let rise = rate.units_per_day(at).as_f64() - before;
        // + 50 units x ln 2 / 7 days = + 4.95 a day, not + 990.
        assert!(
            rel_err(rise, 5.0 * before * std::f64::consts::LN_2 / 7.0) < 0.01,
            "{rise}"
        );
    }

    #[test]
    fn a_first_order_counts_in_full() {
        let p = params();
        let mut rate = SalesRate::new(&p);
        let at = after(start(), 5 * HOUR_US);
        rate.record_sale(10_000, at, &p);
        // Weighed and read back, each rounded down: within 2^-20 units.
        assert!((q20(10_000) - rate.weighted_units(at)).abs() <= 1);
    }

    #[test]
    fn a_sku_sold_in_cases_keeps_its_usual_orders_whole() {
        let p = params();
        let mut rate = SalesRate::new(&p);
        let mut at = start();
        for i in 0..28 {
            at = after(start(), i * 2 * DAY_US);
            rate.record_sale(24, at, &p);
        }
        let at = after(at, DAY_US);
        assert!(rate.weighted_sales(at) >= q20(p.min_sales));
        // 12 a day, so 5 days would cap at 60; 5 typical cases are 120.
        assert!(rate.cap(at, &p) > q20(100));
        let before = rate.weighted_units(at);
        rate.record_sale(100, at, &p);
        assert_eq!(rate.weighted_units(at) - before, q20(100));
    }

    #[test]
    fn a_restock_changes_the_cover_not_the_rate() {
        let p = params();
        let (mut rate, last) = steady(10, 56, start());
        let at = after(last, HOUR_US);
        let rate_before = rate.units_per_day(at);
        let low = forecast(&rate, 30, at, &p);
        // A restock is no sale: the actor only brings the state forward.
        rate.decay_to(at);
        assert_eq!(rate.units_per_day(at), rate_before);
        let high = forecast(&rate, 300, at, &p);
        assert_eq!(high.sales_per_day, low.sales_per_day);
        assert_eq!(high.based_on_sales, low.based_on_sales);
        let (l, h) = (low.days_of_cover.unwrap().0, high.days_of_cover.unwrap().0);
        assert!((h - 10 * l).abs() <= 10, "{l} {h}");
    }

    #[test]
    fn a_return_within_the_window_nets_off_and_a_later_one_does_not() {
        let p = params();
        let (base, last) = steady(10, 56, start());
        let sale_at = after(last, HOUR_US);
        let mut rate = base.clone();
        rate.record_sale(8, sale_at, &p);
        let sold = rate.clone();

        let mut cancelled = sold.clone();
        cancelled.record_return(8, after(sale_at, 3 * HOUR_US), &p);
        let at = after(sale_at, 4 * HOUR_US);
        assert_eq!(cancelled.units_per_day(at), base.units_per_day(at));
        assert_eq!(cancelled.weighted_sales(at), base.weighted_sales(at));

        let mut returned_late = sold.clone();
        returned_late.record_return(8, after(sale_at, DAY_US + 1), &p);
        let at = after(sale_at, 2 * DAY_US);
        assert_eq!(returned_late.units_per_day(at), sold.units_per_day(at));
    }

    #[test]
    fn a_return_nets_off_no_more_than_the_sale() {
        let p = params();
        let (base, last) = steady(10, 56, start());
        let mut rate = base.clone();
        let at = after(last, HOUR_US);
        rate.record_sale(3, at, &p);
        rate.record_return(50, after(at, HOUR_US), &p);
        let later = after(at, 2 * HOUR_US);
        assert_eq!(rate.weighted_units(later), base.weighted_units(later));
        assert_eq!(rate.weighted_sales(later), base.weighted_sales(later));
        // Nothing left to net: a second return changes nothing.
        let netted = rate.clone();
        rate.record_return(5, after(at, 90 * 60_000_000), &p);
        assert_eq!(rate, netted);
    }

    #[test]
    fn a_capped_order_partly_returned_nets_off_its_share_of_the_cap() {
        let p = params();
        let (base, last) = steady(10, 56, start());
        let at = after(last, HOUR_US);
        let mut rate = base.clone();
        rate.record_sale(10_000, at, &p);
        let counted = rate.weighted_units(at) - base.weighted_units(at);
        rate.record_return(5_000, at, &p);
        let left = rate.weighted_units(at) - base.weighted_units(at);
        assert!((2 * left - counted).abs() <= 2, "{counted} {left}");
        // Still one sale: only a sale returned in full stops counting.
        assert!(rate.weighted_sales(at) > base.weighted_sales(at));
    }

    #[test]
    fn with_no_sales_the_alert_resolves_only_past_the_margin() {
        let p = params();
        let (rate, last) = steady(10, 56, start());
        let lead = 5;
        // 31 units at 10.05 a day: 3.08 days, under the lead time.
        let first = forecast(&rate, 31, last, &p);
        assert_eq!(first.days_of_cover, Some(Tenths(30)));
        assert_eq!(
            forecast_alert(&first, lead, false, &p),
            Some(ForecastTransition::Raise)
        );
        // Time moves on, nothing sells: the cover doubles each week.
        let (mut open, mut resolved_at, mut hours_between) = (true, None, 0);
        for hour in 1..=24 * 14 {
            let f = forecast(&rate, 31, after(last, hour * HOUR_US), &p);
            let cover = f.days_of_cover.expect("still enough sales");
            if (Tenths(50)..Tenths(60)).contains(&cover) {
                hours_between += 1;
            }
            match forecast_alert(&f, lead, open, &p) {
                Some(ForecastTransition::Resolve) => {
                    assert!(open);
                    assert!(cover >= Tenths(60), "resolved at {cover}");
                    open = false;
                    resolved_at.get_or_insert(hour);
                }
                Some(ForecastTransition::Raise) => panic!("raised again at {cover}"),
                None => assert!(!open || cover < Tenths(60)),
            }
        }
        assert!(hours_between > 24, "the margin was crossed slowly");
        // 3.08 days to 6: 7 · log2(6 / 3.08) = 6.7 days.
        let hour = resolved_at.expect("resolved");
        assert!((6 * 24 + 12..7 * 24).contains(&hour), "{hour}");
    }

    #[test]
    fn a_cover_wobbling_around_the_lead_time_does_not_flap() {
        let p = params();
        let f = |tenths| Forecast {
            sales_per_day: Tenths(100),
            based_on_sales: 31,
            days_of_cover: Some(Tenths(tenths)),
            stockout_at: None,
            as_of: Micros(0),
        };
        let mut open = false;
        let mut transitions = Vec::new();
        for tenths in [52, 49, 51, 48, 55, 59, 47, 60, 58, 49] {
            if let Some(t) = forecast_alert(&f(tenths), 5, open, &p) {
                open = t == ForecastTransition::Raise;
                transitions.push((tenths, t));
            }
        }
        assert_eq!(
            transitions,
            [
                (49, ForecastTransition::Raise),
                (60, ForecastTransition::Resolve),
                (49, ForecastTransition::Raise),
            ]
        );
    }

    #[test]
    fn the_resolve_level_is_a_fifth_more_and_at_least_half_a_day() {
        let p = params();
        assert_eq!(forecast_resolve_level(5, &p), Tenths(60));
        assert_eq!(forecast_resolve_level(1, &p), Tenths(15));
        assert_eq!(forecast_resolve_level(0, &p), Tenths(5));
        assert_eq!(forecast_resolve_level(7, &p), Tenths(84));
        let quarter = RateParams {
            resolve_margin_pct: 25,
            ..p
        };
        assert_eq!(
            forecast_resolve_level(3, &quarter),
            Tenths(38),
            "3.75 up to a tenth"
        );
        assert_eq!(forecast_resolve_level(i64::MAX, &p), Tenths(i64::MAX));
    }

    #[test]
    fn too_few_sales_give_no_forecast_raise_nothing_and_resolve_an_open_alert_under_half() {
        let p = params();
        let (rate, last) = steady(4, 1, start());
        let f = forecast(&rate, 1, last, &p);
        assert_eq!(f.based_on_sales, 3, "4 sales, the first a day old");
        assert_eq!((f.days_of_cover, f.stockout_at), (None, None));
        assert!(f.sales_per_day > Tenths(0));
        assert_eq!(forecast_alert(&f, 5, false, &p), None);
        // An open one stands while the count is at least half of min_sales
        // (3 of 5), and resolves under it.
        assert_eq!(forecast_alert(&f, 5, true, &p), None);
        let (two, last_two) = steady(2, 1, start());
        let f2 = forecast(&two, 1, last_two, &p);
        assert!(f2.based_on_sales * 2 < p.min_sales, "{f2:?}");
        assert_eq!(
            forecast_alert(&f2, 5, true, &p),
            Some(ForecastTransition::Resolve)
        );
        // Even when nothing is left.
        assert_eq!(forecast(&rate, -3, last, &p).days_of_cover, None);
    }

    #[test]
    fn a_sku_that_stopped_selling_loses_its_forecast() {
        let p = params();
        let (rate, last) = steady(10, 56, start());
        // 101 weighted sales fall below 5 after log2(101/5) = 4.3 half-lives.
        let at = after(last, 31 * DAY_US);
        assert!(forecast(&rate, 1, after(last, 30 * DAY_US), &p)
            .days_of_cover
            .is_some());
        assert_eq!(forecast(&rate, 1, at, &p).days_of_cover, None);
    }

    #[test]
    fn nothing_available_is_zero_days_and_a_stockout_now() {
        let p = params();
        let (rate, last) = steady(10, 56, start());
        for available in [0, -7, i64::MIN] {
            let f = forecast(&rate, available, last, &p);
            assert_eq!(f.days_of_cover, Some(Tenths(0)));
            assert_eq!(f.stockout_at, Some(last));
            assert_eq!(
                forecast_alert(&f, 5, false, &p),
                Some(ForecastTransition::Raise)
            );
        }
    }

    #[test]
    fn decimal_strings_round_the_rate_half_up_and_the_cover_down() {
        let p = params();
        let rate = |per_day: f64| UnitsPerDay((per_day * ONE as f64) as i64);
        assert_eq!(rate(12.25).to_tenths().to_string(), "12.3");
        assert_eq!(rate(12.75).to_tenths().to_string(), "12.8");
        assert_eq!(rate(12.2499).to_tenths().to_string(), "12.2");
        assert_eq!(rate(0.04).to_tenths().to_string(), "0.0");
        assert_eq!(
            UnitsPerDay(ONE / 20).to_tenths().to_string(),
            "0.0",
            "0.0499..."
        );
        assert_eq!(UnitsPerDay(ONE / 20 + 1).to_tenths().to_string(), "0.1");
        let sales = q20(31);
        let cover = |available, per_day| {
            project(rate(per_day), sales, available, Micros(0), &p)
                .days_of_cover
                .unwrap()
                .to_string()
        };
        assert_eq!(cover(31, 10.0), "3.1");
        assert_eq!(cover(39, 12.5), "3.1", "3.12");
        assert_eq!(cover(63, 20.0), "3.1", "3.15");
        assert_eq!(cover(319, 100.0), "3.1", "3.19");
        assert_eq!(cover(1, 3.0), "0.3");
        assert_eq!(Tenths(-35).to_string(), "-3.5");
        assert_eq!(Tenths(-5).to_string(), "-0.5");
        assert_eq!(Tenths(i64::MIN).to_string(), "-922337203685477580.8");
    }

    #[test]
    fn tenths_parse_one_decimal_only() {
        assert_eq!(Tenths::parse("12.4"), Some(Tenths(124)));
        assert_eq!(Tenths::parse("-0.5"), Some(Tenths(-5)));
        assert_eq!(Tenths::parse("0.0"), Some(Tenths(0)));
        for bad in ["12", "12.45", ".4", "1.", "+1.0", "1,0", "", "-", "1e1.0"] {
            assert_eq!(Tenths::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_stockout_is_the_exact_cover_after_as_of_and_the_horizon_nulls_it() {
        let p = params();
        let rate = UnitsPerDay(10 * ONE);
        let f = project(rate, q20(31), 35, Micros(1_000), &p);
        assert_eq!(f.stockout_at, Some(Micros(1_000 + 35 * DAY_US / 10)));
        let far = project(rate, q20(31), 10 * 366, Micros(0), &p);
        assert_eq!((far.days_of_cover, far.stockout_at), (None, None));
        let edge = project(rate, q20(31), 10 * 365, Micros(0), &p);
        assert_eq!(edge.days_of_cover, Some(Tenths(3650)));
        let zero = project(UnitsPerDay(0), q20(31), 10, Micros(0), &p);
        assert_eq!(zero.days_of_cover, None);
    }

    #[test]
    fn the_forecast_has_the_api_shape() {
        let f = Forecast {
            sales_per_day: Tenths(124),
            based_on_sales: 31,
            days_of_cover: Some(Tenths(31)),
            stockout_at: Some(Micros::parse_rfc3339("2026-12-01T10:00:00Z").unwrap()),
            as_of: Micros::parse_rfc3339("2026-11-28T07:36:00Z").unwrap(),
        };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(
            json,
            r#"{"sales_per_day":"12.4","based_on_sales":31,"days_of_cover":"3.1","stockout_at":"2026-12-01T10:00:00.000000Z","as_of":"2026-11-28T07:36:00.000000Z"}"#
        );
        assert_eq!(serde_json::from_str::<Forecast>(&json).unwrap(), f);
        let none = Forecast {
            days_of_cover: None,
            stockout_at: None,
            ..f
        };
        let json = serde_json::to_value(&none).unwrap();
        assert!(json["days_of_cover"].is_null() && json["stockout_at"].is_null());
    }

    #[test]
    fn the_explanation_gives_the_numbers() {
        let f = Forecast {
            sales_per_day: Tenths(124),
            based_on_sales: 31,
            days_of_cover: Some(Tenths(31)),
            stockout_at: None,
            as_of: Micros(0),
        };
        assert_eq!(
            explain(&f, 5),
            "sells 12.4/day over 31 sales; 3.1 days left; lead time 5 days"
        );
        let one = Forecast {
            based_on_sales: 1,
            days_of_cover: None,
            ..f
        };
        assert_eq!(
            explain(&one, 1),
            "sells 12.4/day over 1 sale; no stock-out forecast; lead time 1 day"
        );
    }

    #[test]
    fn alert_rules_read_and_write_their_names_and_default_to_both() {
        for rule in AlertRule::ALL {
            assert_eq!(AlertRule::parse(rule.as_str()), Some(rule));
            assert_eq!(
                serde_json::to_value(rule).unwrap(),
                serde_json::Value::from(rule.as_str())
            );
        }
        assert_eq!(AlertRule::parse("Both"), None);
        assert_eq!(AlertRule::default(), AlertRule::Both);
        assert!(AlertRule::Both.uses_threshold() && AlertRule::Both.uses_forecast());
        assert!(!AlertRule::Threshold.uses_forecast());
        assert!(!AlertRule::Forecast.uses_threshold());
    }

    #[test]
    fn the_state_survives_a_round_trip_through_json() {
        let p = params();
        let (mut rate, last) = steady(10, 20, start());
        rate.record_return(1, last, &p);
        let json = serde_json::to_string(&rate).unwrap();
        assert_eq!(serde_json::from_str::<SalesRate>(&json).unwrap(), rate);
        assert!(rate.is_for(&p));
        assert!(!rate.is_for(&RateParams {
            half_life_us: DAY_US,
            ..p
        }));
    }

    #[test]
    fn an_event_out_of_order_counts_at_its_weight() {
        let p = params();
        let (mut rate, last) = steady(10, 56, start());
        let before = rate.weighted_units(last);
        // Ten days late: weighs 2^(-10/7) = 0.371 as of `last`.
        rate.record_sale(1, after(last, -10 * DAY_US), &p);
        let added = (rate.weighted_units(last) - before) as f64 / ONE as f64;
        assert!(rel_err(added, (-10f64 / 7.0).exp2()) < 1e-5, "{added}");
        // Reading before the reference block does not panic and grows.
        assert!(rate.weighted_units(after(last, -30 * DAY_US)) > before);
    }

    #[test]
    fn extreme_values_saturate_instead_of_panicking() {
        let p = params();
        let mut rate = SalesRate::new(&p);
        for at in [Micros(i64::MIN), Micros(0), Micros(i64::MAX)] {
            rate.record_sale(i64::MAX, at, &p);
            rate.record_return(i64::MAX, at, &p);
            rate.record_sale(i64::MAX, at, &p);
            let _ = forecast(&rate, i64::MAX, at, &p);
            let _ = forecast(&rate, i64::MIN, at, &p);
            let _ = rate.units_per_day(Micros(i64::MIN));
        }
        let tiny = RateParams {
            half_life_us: 0,
            ..p
        };
        let mut rate = SalesRate::new(&tiny);
        rate.record_sale(5, Micros(10), &tiny);
        let _ = rate.units_per_day(Micros(i64::MAX));
    }

    /// (gap since the previous event in µs, a return?, units, a sweep
    /// `decay_to` at this fraction of the gap, in thousandths).
    fn events() -> impl Strategy<Value = Vec<(i64, bool, i64, Option<i64>)>> {
        let gap = prop_oneof![0..HOUR_US, 0..3 * DAY_US, 0..40 * DAY_US];
        let units = prop_oneof![1..50i64, 1..100_000i64, -5..5i64];
        prop::collection::vec(
            (
                gap,
                prop::bool::weighted(0.2),
                units,
                prop::option::of(0..=1000i64),
            ),
            0..120,
        )
    }

    proptest! {
        #[test]
        fn the_rebuilt_state_equals_the_live_one(events in events(), t0 in -1i64 << 50..1i64 << 52) {
            let p = params();
            let mut live = SalesRate::new(&p);
            let mut history = Vec::new();
            let mut at = t0;
            for (gap, is_return, units, sweep) in events {
                if let Some(thousandths) = sweep {
                    // A sweep in the gap, never past the next event.
                    live.decay_to(Micros(at + gap * thousandths / 1000));
                }
                at += gap;
                let kind = if is_return { SaleKind::Return } else { SaleKind::Sale };
                live.apply(kind, units, Micros(at), &p);
                history.push((Micros(at), kind, units));
                // The stored state is the rebuilt one, bit for bit.
                let json = serde_json::to_string(&live).unwrap();
                prop_assert_eq!(serde_json::from_str::<SalesRate>(&json).unwrap(), live.clone());
            }
            prop_assert_eq!(SalesRate::rebuild(history, &p), live);
        }

        #[test]
        fn exp2_is_monotone(a: u32, b: u32) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(exp2_frac(lo) <= exp2_frac(hi));
        }

        #[test]
        fn with_no_sales_the_rate_never_rises(
            events in events(),
            t0 in 0i64..1i64 << 52,
            steps in prop::collection::vec(0..5 * DAY_US, 1..40),
        ) {
            let p = params();
            let mut rate = SalesRate::new(&p);
            let mut at = t0;
            for (gap, is_return, units, _) in events {
                at += gap;
                let kind = if is_return { SaleKind::Return } else { SaleKind::Sale };
                rate.apply(kind, units, Micros(at), &p);
            }
            let mut last = rate.units_per_day(Micros(at));
            let mut sales = rate.weighted_sales(Micros(at));
            for step in steps {
                at += step;
                let now = rate.units_per_day(Micros(at));
                prop_assert!(now <= last, "{:?} after {:?}", now, last);
                let now_sales = rate.weighted_sales(Micros(at));
                prop_assert!(now_sales <= sales);
                (last, sales) = (now, now_sales);
            }
        }

        #[test]
        fn a_sweep_never_changes_a_later_reading(
            events in events(),
            t0 in 0i64..1i64 << 52,
            sweep in 0..30 * DAY_US,
            read in 0..30 * DAY_US,
        ) {
            let p = params();
            let mut rate = SalesRate::new(&p);
            let mut at = t0;
            for (gap, is_return, units, _) in events {
                at += gap;
                let kind = if is_return { SaleKind::Return } else { SaleKind::Sale };
                rate.apply(kind, units, Micros(at), &p);
            }
            let mut swept = rate.clone();
            swept.decay_to(Micros(at + sweep));
            let read = Micros(at + sweep + read);
            prop_assert_eq!(swept.units_per_day(read), rate.units_per_day(read));
            prop_assert_eq!(swept.weighted_sales(read), rate.weighted_sales(read));
        }
    }
}
