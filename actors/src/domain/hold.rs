//! Holds (issue 17; API.md v1 additions): units of one or several SKUs
//! kept for a checkout until it commits (a sale), releases them, or its
//! time runs out. The rules of a hold's life live here and nowhere else:
//! the store locks the hold's row and its SKUs' rows and calls
//! [`decide_hold`], as it calls [`super::decide`] for other writes.
//!
//! Time: a hold's `created_at`, `expires_at` and `ended_at` come from the
//! database's clock (one clock for every instance), read in the deciding
//! transaction; "past its expiry" is judged on that clock only, so a
//! commit racing the expiry has one winner whichever instance runs which.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sku::{Change, DomainError, Field, Shortfall, Sku};
use super::{Micros, SkuCode};

/// A hold's id: a UUID (version 7, so ids sort by creation time) as text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HoldId(String);

impl HoldId {
    /// A new id; ids made later sort later (UUIDv7, RFC 9562 §5.7).
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// An id as a client wrote it: a UUID in any case, stored lower-case
    /// and hyphenated. `None` for anything else (a 404 to the client: no
    /// hold can have that id).
    pub fn parse(raw: &str) -> Option<Self> {
        uuid::Uuid::parse_str(raw)
            .ok()
            .map(|id| Self(id.hyphenated().to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for HoldId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Where a hold is in its life. Only `Active` holds units; the other three
/// are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldStatus {
    Active,
    /// Released by a client.
    Released,
    /// Released by the sweeper at its `expires_at`.
    Expired,
    /// Turned into a sale.
    Committed,
}

impl HoldStatus {
    pub const ALL: [HoldStatus; 4] = [
        HoldStatus::Active,
        HoldStatus::Released,
        HoldStatus::Expired,
        HoldStatus::Committed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            HoldStatus::Active => "active",
            HoldStatus::Released => "released",
            HoldStatus::Expired => "expired",
            HoldStatus::Committed => "committed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

/// One line of a hold: units of one SKU (each SKU at most once a hold).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldLine {
    pub sku: SkuCode,
    /// Units held, > 0.
    pub quantity: i64,
}

/// A hold as stored and shown (API.md v1 additions, Holds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    pub id: HoldId,
    pub status: HoldStatus,
    pub lines: Vec<HoldLine>,
    /// The client's own label (a cart or order id), up to 200 characters.
    pub reference: Option<String>,
    /// Who created it.
    pub actor: Option<String>,
    pub created_at: Micros,
    /// When the sweeper releases it if nothing else ended it first.
    pub expires_at: Micros,
    pub ended_at: Option<Micros>,
    /// The events of the hold's latest change of `reserved`: its creation
    /// while active, then its end (for a commit, the sale's events too).
    pub event_ids: Vec<i64>,
}

/// What to do with a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldAction {
    /// Hold `lines` for `ttl_us` microseconds (all lines or none).
    Create {
        id: HoldId,
        lines: Vec<HoldLine>,
        ttl_us: i64,
        reference: Option<String>,
    },
    /// Move the expiry to `ttl_us` from now.
    Extend { id: HoldId, ttl_us: i64 },
    /// A client gives the units back.
    Release { id: HoldId },
    /// The sweeper ends a hold past its expiry; a no-op for any other.
    Expire { id: HoldId },
    /// The held units become `sale` adjustments.
    Commit { id: HoldId },
}

impl HoldAction {
    /// The hold the action is about.
    pub fn id(&self) -> &HoldId {
        match self {
            HoldAction::Create { id, .. }
            | HoldAction::Extend { id, .. }
            | HoldAction::Release { id }
            | HoldAction::Expire { id }
            | HoldAction::Commit { id } => id,
        }
    }
}

/// One line that asked for more than was available.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldShortfall {
    /// Index of the line in the request.
    pub line: usize,
    pub sku: SkuCode,
    pub quantity: i64,
    /// `stock - reserved` when the hold was decided (may be negative).
    pub available: i64,
}

/// Longest a hold may last, and its default (API.md v1 additions: 15 min,
/// at most 24 h), in microseconds.
pub const MAX_HOLD_TTL_US: i64 = 24 * 3600 * 1_000_000;
pub const DEFAULT_HOLD_TTL_US: i64 = 15 * 60 * 1_000_000;

/// What a hold action does: the hold as it is afterwards and the SKU
/// changes, in order (empty for an extension, or an `Expire` that found
/// the hold already ended or not yet due: `None` then).
#[derive(Debug, Clone)]
pub struct HoldDecision {
    pub hold: Hold,
    pub changes: Vec<Change>,
    /// The hold row is new (else it is updated).
    pub insert: bool,
}

/// Decides `action` against `stored` (the hold's row as locked, `None`
/// when there is none) and `skus` (its SKUs' rows as locked, updated here
/// as the changes apply). `clock` is the database's time (hold times),
/// `now` the events' time. Refusals change nothing:
/// - create: [`DomainError::InsufficientAvailable`] naming every short
///   line, [`DomainError::NotFound`] for a SKU that does not exist;
/// - the others: [`DomainError::HoldNotFound`], and
///   [`DomainError::HoldNotActive`] for a hold that ended or is past its
///   expiry (then it reads `expired`: the sweeper is about to end it).
///
/// `Ok(None)`: nothing to do (an `Expire` of a hold ended or not yet due).
pub fn decide_hold(
    action: &HoldAction,
    stored: Option<&Hold>,
    skus: &mut BTreeMap<SkuCode, Sku>,
    actor: Option<&str>,
    clock: Micros,
    now: Micros,
) -> Result<Option<HoldDecision>, DomainError> {
    if let HoldAction::Create {
        id,
        lines,
        ttl_us,
        reference,
    } = action
    {
        return create(id, lines, *ttl_us, reference, skus, actor, clock, now).map(Some);
    }
    let Some(stored) = stored else {
        return match action {
            HoldAction::Expire { .. } => Ok(None),
            _ => Err(DomainError::HoldNotFound(action.id().clone())),
        };
    };
    let due = stored.expires_at <= clock;
    let status = match (stored.status, due) {
        (HoldStatus::Active, true) => HoldStatus::Expired,
        (status, _) => status,
    };
    if let HoldAction::Expire { .. } = action {
        if stored.status != HoldStatus::Active || !due {
            return Ok(None);
        }
    } else if status != HoldStatus::Active {
        return Err(DomainError::HoldNotActive {
            id: stored.id.clone(),
            status,
            event_ids: stored.event_ids.clone(),
        });
    }
    let mut hold = stored.clone();
    let (end, reason) = match action {
        HoldAction::Create { .. } => unreachable!("handled above"),
        HoldAction::Extend { ttl_us, .. } => {
            hold.expires_at = Micros(clock.0.saturating_add(*ttl_us));
            return Ok(Some(HoldDecision {
                hold,
                changes: Vec::new(),
                insert: false,
            }));
        }
        HoldAction::Release { .. } => (HoldStatus::Released, "hold_released"),
        HoldAction::Expire { .. } => (HoldStatus::Expired, "hold_expired"),
        HoldAction::Commit { .. } => (HoldStatus::Committed, "hold_committed"),
    };
    if end == HoldStatus::Committed {
        // Held units are sold as they are: a count that left fewer in
        // stock than the hold keeps makes the sale impossible, and
        // recording a smaller one would tell the shop it sold units that
        // are not there. Refused; the hold stays active.
        let short: Vec<Shortfall> = stored
            .lines
            .iter()
            .enumerate()
            .filter_map(|(i, line)| {
                let sku = skus.get(&line.sku)?;
                (sku.stock < line.quantity).then(|| Shortfall {
                    sku: line.sku.clone(),
                    stock: sku.stock,
                    reserved: sku.reserved,
                    delta: -line.quantity,
                    line: None,
                    held_line: Some(i),
                })
            })
            .collect();
        if !short.is_empty() {
            return Err(DomainError::InsufficientStock(short));
        }
    }
    let mut changes = Vec::new();
    for line in &stored.lines {
        let current = skus
            .get(&line.sku)
            .ok_or_else(|| DomainError::NotFound(line.sku.clone()))?;
        let committing = end == HoldStatus::Committed;
        // A commit releases, then sells: no state in between shows
        // `available` below where it was (selling first would, by the held
        // units: a negative `available` pushed for an instant). The pair
        // is judged as one step for the alerts: `available` ends where it
        // was, so no alert opens and closes in between.
        let release = step(
            current,
            now,
            Field::Reserved,
            -line.quantity,
            reason,
            committing,
        );
        let mut last = release.state.clone();
        changes.push(release);
        if committing {
            let sale = step(&last, now, Field::Stock, -line.quantity, "sale", false);
            last = sale.state.clone();
            changes.push(sale);
        }
        skus.insert(line.sku.clone(), last);
    }
    hold.status = end;
    hold.ended_at = Some(clock);
    Ok(Some(HoldDecision {
        hold,
        changes,
        insert: false,
    }))
}

#[allow(clippy::too_many_arguments)]
fn create(
    id: &HoldId,
    lines: &[HoldLine],
    ttl_us: i64,
    reference: &Option<String>,
    skus: &mut BTreeMap<SkuCode, Sku>,
    actor: Option<&str>,
    clock: Micros,
    now: Micros,
) -> Result<HoldDecision, DomainError> {
    let mut short = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let sku = skus
            .get(&line.sku)
            .ok_or_else(|| DomainError::NotFound(line.sku.clone()))?;
        if sku.available() < line.quantity {
            short.push(HoldShortfall {
                line: i,
                sku: line.sku.clone(),
                quantity: line.quantity,
                available: sku.available(),
            });
        }
    }
    if !short.is_empty() {
        return Err(DomainError::InsufficientAvailable(short));
    }
    let mut changes = Vec::with_capacity(lines.len());
    for line in lines {
        let current = &skus[&line.sku];
        let change = step(current, now, Field::Reserved, line.quantity, "hold", false);
        skus.insert(line.sku.clone(), change.state.clone());
        changes.push(change);
    }
    Ok(HoldDecision {
        hold: Hold {
            id: id.clone(),
            status: HoldStatus::Active,
            lines: lines.to_vec(),
            reference: reference.clone(),
            actor: actor.map(str::to_owned),
            created_at: clock,
            expires_at: Micros(clock.0.saturating_add(ttl_us)),
            ended_at: None,
            event_ids: Vec::new(),
        },
        changes,
        insert: true,
    })
}

/// One change of `stock` or `reserved` by `delta` (quantities the store
/// already holds, so the sums cannot leave the 64-bit range: a hold's
/// quantities are part of `reserved`, and a commit checks first that the
/// stock covers them; saturating regardless).
fn step(
    current: &Sku,
    now: Micros,
    field: Field,
    delta: i64,
    reason: &'static str,
    judged_with_next: bool,
) -> Change {
    let mut state = current.clone();
    state.version += 1;
    state.updated_at = now;
    let slot = match field {
        Field::Stock => &mut state.stock,
        _ => &mut state.reserved,
    };
    let old = *slot;
    *slot = old.saturating_add(delta).max(0);
    let new = *slot;
    Change {
        previous: Some(current.clone()),
        state,
        field,
        old: old.into(),
        new: new.into(),
        delta: Some(new - old),
        price_anomaly: None,
        reason: Some(reason),
        judged_with_next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Currency, PriceGuard};

    fn code(raw: &str) -> SkuCode {
        SkuCode::parse(raw).unwrap()
    }

    fn sku(raw: &str, stock: i64, reserved: i64) -> Sku {
        Sku {
            sku: code(raw),
            name: "x".into(),
            currency: Currency::parse("GBP").unwrap(),
            price_minor: 100,
            stock,
            reserved,
            low_stock_threshold: 10,
            price_guard: PriceGuard::default(),
            version: 1,
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

    fn create_action(lines: &[(&str, i64)]) -> HoldAction {
        HoldAction::Create {
            id: HoldId::generate(),
            lines: lines
                .iter()
                .map(|(s, q)| HoldLine {
                    sku: code(s),
                    quantity: *q,
                })
                .collect(),
            ttl_us: 1_000,
            reference: None,
        }
    }

    #[test]
    fn a_hold_takes_all_lines_or_names_every_short_one() {
        let mut skus = rows(&[sku("A", 5, 3), sku("B", 1, 0), sku("C", 9, 0)]);
        let refused = decide_hold(
            &create_action(&[("A", 3), ("B", 2), ("C", 1)]),
            None,
            &mut skus,
            None,
            Micros(10),
            Micros(10),
        );
        let Err(DomainError::InsufficientAvailable(short)) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(
            short
                .iter()
                .map(|s| (s.line, s.available))
                .collect::<Vec<_>>(),
            vec![(0, 2), (1, 1)]
        );
        assert_eq!(skus[&code("A")].reserved, 3, "nothing changed");

        let decided = decide_hold(
            &create_action(&[("A", 2), ("C", 1)]),
            None,
            &mut skus,
            Some("shop"),
            Micros(10),
            Micros(20),
        )
        .unwrap()
        .unwrap();
        assert_eq!(decided.hold.expires_at, Micros(1_010));
        assert_eq!(skus[&code("A")].available(), 0);
        assert_eq!(decided.changes[0].delta, Some(2));
        assert_eq!(decided.changes[0].reason, Some("hold"));
        assert_eq!(decided.changes[0].state.version, 2);
    }

    fn held(skus: &mut BTreeMap<SkuCode, Sku>, lines: &[(&str, i64)]) -> Hold {
        decide_hold(
            &create_action(lines),
            None,
            skus,
            None,
            Micros(0),
            Micros(0),
        )
        .unwrap()
        .unwrap()
        .hold
    }

    #[test]
    fn a_commit_sells_the_held_units_and_keeps_available_where_it_was() {
        let mut skus = rows(&[sku("A", 5, 0)]);
        let hold = held(&mut skus, &[("A", 2)]);
        let commit = HoldAction::Commit {
            id: hold.id.clone(),
        };
        let decided = decide_hold(&commit, Some(&hold), &mut skus, None, Micros(5), Micros(5))
            .unwrap()
            .unwrap();
        let a = &skus[&code("A")];
        assert_eq!((a.stock, a.reserved, a.available()), (3, 0, 3));
        let fields: Vec<_> = decided
            .changes
            .iter()
            .map(|c| (c.field, c.reason, c.judged_with_next))
            .collect();
        assert_eq!(
            fields,
            vec![
                (Field::Reserved, Some("hold_committed"), true),
                (Field::Stock, Some("sale"), false)
            ]
        );
        assert_eq!(decided.hold.status, HoldStatus::Committed);
        let again = decide_hold(
            &commit,
            Some(&decided.hold),
            &mut skus,
            None,
            Micros(6),
            Micros(6),
        );
        assert!(matches!(
            again,
            Err(DomainError::HoldNotActive {
                status: HoldStatus::Committed,
                ..
            })
        ));
    }

    #[test]
    fn past_its_expiry_a_hold_can_only_expire_and_expires_once() {
        let mut skus = rows(&[sku("A", 5, 0)]);
        let hold = held(&mut skus, &[("A", 2)]);
        let id = hold.id.clone();
        // Due at 1,000 on the database's clock.
        for action in [
            HoldAction::Commit { id: id.clone() },
            HoldAction::Release { id: id.clone() },
            HoldAction::Extend {
                id: id.clone(),
                ttl_us: 5,
            },
        ] {
            let refused = decide_hold(
                &action,
                Some(&hold),
                &mut skus,
                None,
                Micros(1_000),
                Micros(0),
            );
            assert!(
                matches!(
                    refused,
                    Err(DomainError::HoldNotActive {
                        status: HoldStatus::Expired,
                        ..
                    })
                ),
                "{action:?}: {refused:?}"
            );
        }
        let expire = HoldAction::Expire { id };
        let early = decide_hold(
            &expire,
            Some(&hold),
            &mut skus,
            None,
            Micros(999),
            Micros(0),
        );
        assert!(matches!(early, Ok(None)), "not yet due");
        let done = decide_hold(
            &expire,
            Some(&hold),
            &mut skus,
            None,
            Micros(1_000),
            Micros(0),
        )
        .unwrap()
        .unwrap();
        assert_eq!(done.hold.status, HoldStatus::Expired);
        assert_eq!(skus[&code("A")].reserved, 0);
        let twice = decide_hold(
            &expire,
            Some(&done.hold),
            &mut skus,
            None,
            Micros(2_000),
            Micros(0),
        );
        assert!(
            matches!(twice, Ok(None)),
            "an ended hold does not expire again"
        );
    }

    #[test]
    fn a_count_below_the_held_units_leaves_available_negative_and_refuses_the_commit() {
        let mut skus = rows(&[sku("A", 5, 0), sku("B", 5, 0)]);
        let hold = held(&mut skus, &[("B", 1), ("A", 4)]);
        skus.get_mut(&code("A")).unwrap().stock = 1;
        assert_eq!(skus[&code("A")].available(), -3);
        let commit = HoldAction::Commit {
            id: hold.id.clone(),
        };
        let refused = decide_hold(&commit, Some(&hold), &mut skus, None, Micros(1), Micros(1));
        let Err(DomainError::InsufficientStock(short)) = refused else {
            panic!("{refused:?}");
        };
        assert_eq!(short.len(), 1);
        assert_eq!((short[0].stock, short[0].held_line), (1, Some(1)));
        assert_eq!(skus[&code("B")].reserved, 1, "nothing of the hold changed");
        // Released instead, every unit goes back.
        let release = HoldAction::Release {
            id: hold.id.clone(),
        };
        decide_hold(&release, Some(&hold), &mut skus, None, Micros(1), Micros(1)).unwrap();
        let a = &skus[&code("A")];
        assert_eq!((a.stock, a.reserved, a.available()), (1, 0, 1));
    }
}
