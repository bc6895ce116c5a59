//! Downsampled history over pre-aggregated blocks (issue 15, target 4).
//!
//! A chart of a SKU with a million events must not read a million rows.
//! The events of each SKU are summarised in blocks of consecutive
//! *versions* (a SKU's versions are gap-free and in commit order): a
//! level-1 block holds [`BASE`] versions, a level-`l` block [`FANOUT`]
//! level-`l - 1` blocks. A block is written once, when the SKU's next block
//! has begun, and never changes, because events never do. Each block keeps,
//! per field, its number of points and the event ids of its first, last,
//! lowest and highest point: exact for the versions it covers.
//!
//! A chart's buckets are equal spans of versions, and each part of the
//! range (a block, or a single event) counts in the bucket its first
//! version falls in, so a bucket's edges snap to the edges of the blocks
//! read: its lowest and highest point are exact for the versions it
//! gathered, and the range's first, last, lowest and highest point are
//! always in the chart. A range is covered by the largest blocks that fit
//! ([`cover`]), capped at a level no longer than a bucket ([`top_level`]);
//! what no stored block covers (the range's ragged ends, the SKU's newest
//! versions, a block not built yet) is read event by event, a missing block
//! joined as the block would have been, so a chart is the same whether or
//! not the roll-up has caught up. The rules are here, pure;
//! `sql/history.rs` does the I/O.

/// Versions in a level-1 block: the most events read one by one at each
/// end of a range, and how often (in versions of one SKU) a block is built.
pub const BASE: i64 = 256;

/// Blocks of one level in a block of the next.
pub const FANOUT: i64 = 4;

/// Levels stored; the top block holds `256 * 4^11`, about 10^9 versions.
pub const LEVELS: u32 = 12;

/// Versions in a block of `level` (1 to [`LEVELS`]).
pub fn block_size(level: u32) -> i64 {
    BASE * FANOUT.pow(level - 1)
}

/// The points of one field in a span of versions: how many, and the event
/// ids (with values) of the first, last, lowest and highest. Ties go to
/// the earliest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub points: i64,
    pub first: i64,
    pub last: i64,
    /// `(value, event_id)`.
    pub low: (i64, i64),
    /// `(value, event_id)`.
    pub high: (i64, i64),
}

impl Span {
    /// One point.
    pub fn point(event_id: i64, value: i64) -> Self {
        Span {
            points: 1,
            first: event_id,
            last: event_id,
            low: (value, event_id),
            high: (value, event_id),
        }
    }

    /// `self` followed by `later` (every event of `later` is newer).
    pub fn then(self, later: Span) -> Span {
        Span {
            points: self.points + later.points,
            first: self.first,
            last: later.last,
            low: if later.low.0 < self.low.0 {
                later.low
            } else {
                self.low
            },
            high: if later.high.0 > self.high.0 {
                later.high
            } else {
                self.high
            },
        }
    }

    /// Joins spans in version order; `None` when there are no points.
    pub fn join(spans: impl IntoIterator<Item = Option<Span>>) -> Option<Span> {
        spans.into_iter().flatten().reduce(Span::then)
    }
}

/// A part of a range of versions: a stored block, or versions read one by
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece {
    Block {
        level: u32,
        index: i64,
    },
    /// Versions `from..=to`.
    Events {
        from: i64,
        to: i64,
    },
}

impl Piece {
    /// The first version the piece covers.
    pub fn start(&self) -> i64 {
        match *self {
            Piece::Block { level, index } => index * block_size(level),
            Piece::Events { from, .. } => from,
        }
    }
}

/// Covers versions `lo..=hi` in order with the largest aligned blocks of at
/// most level `top` (0: none), and runs of single events where no block
/// fits: at most `2 * (FANOUT - 1)` blocks of each level below `top` and
/// fewer than `2 * BASE` single events besides the blocks of `top`.
pub fn cover(lo: i64, hi: i64, top: u32) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = lo;
    while at <= hi {
        let level = (1..=top.min(LEVELS))
            .rev()
            .find(|&l| at % block_size(l) == 0 && at + block_size(l) - 1 <= hi);
        match level {
            Some(level) => {
                pieces.push(Piece::Block {
                    level,
                    index: at / block_size(level),
                });
                at += block_size(level);
            }
            None => {
                // Up to the next level-1 boundary, or the end.
                let to = ((at / BASE + 1) * BASE - 1).min(hi);
                match pieces.last_mut() {
                    Some(Piece::Events { to: end, .. }) if *end + 1 == at => *end = to,
                    _ => pieces.push(Piece::Events { from: at, to }),
                }
                at = to + 1;
            }
        }
    }
    pieces
}

/// Most versions a chart reads event by event when its buckets are
/// narrower than a level-1 block: past it, level-1 blocks are read anyway
/// and a bucket may get no part (a chart of fewer points than `limit`),
/// so one request never fetches more than about this many rows (a
/// `limit=10000` chart of a million versions would otherwise read them all).
pub const MOST_SINGLE_EVENTS: i64 = 65_536;

/// The coarsest level whose blocks are no longer than each of `buckets`
/// buckets of a `span`-version range (0: none fits; read events), but at
/// least level 1 past [`MOST_SINGLE_EVENTS`]. With no buckets (a chart of
/// its two ends only) the coarsest.
pub fn top_level(span: i64, buckets: i64) -> u32 {
    if buckets <= 0 {
        return LEVELS;
    }
    let fits = (1..=LEVELS)
        .rev()
        .find(|&l| block_size(l).saturating_mul(buckets) <= span)
        .unwrap_or(0);
    if fits == 0 && span > MOST_SINGLE_EVENTS {
        1
    } else {
        fits
    }
}

/// The event ids a chart of `limit` points shows, from the range's parts
/// in version order (each `(first version, span)`), over a range starting
/// at version `lo` of `versions` versions: the last point (a chart ends at
/// the current value), the first (from `limit` 2), and the lowest and
/// highest point of each of `(limit - 2) / 2` equal spans of versions, so a
/// spike or a stock-out stays visible. A part belongs to the bucket its
/// first version falls in. Never more than `limit` ids; sorted.
pub fn chart_ids(parts: &[(i64, Span)], lo: i64, versions: i64, limit: i64) -> Vec<i64> {
    let (Some((_, first)), Some((_, last))) = (parts.first(), parts.last()) else {
        return Vec::new();
    };
    let mut ids = std::collections::BTreeSet::from([last.last]);
    if limit >= 2 {
        ids.insert(first.first);
    }
    let buckets = (limit - 2) / 2;
    if buckets > 0 {
        let mut current: Option<(i64, Span)> = None;
        let mut flush = |bucket: Option<(i64, Span)>| {
            if let Some((_, span)) = bucket {
                ids.insert(span.low.1);
                ids.insert(span.high.1);
            }
        };
        for &(start, span) in parts {
            let bucket = ((i128::from(start - lo) * i128::from(buckets)) / i128::from(versions))
                .min(i128::from(buckets - 1)) as i64;
            current = match current {
                Some((b, joined)) if b == bucket => Some((b, joined.then(span))),
                other => {
                    flush(other);
                    Some((bucket, span))
                }
            };
        }
        flush(current);
    }
    ids.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every version of `lo..=hi`, once, in order.
    fn covered(pieces: &[Piece]) -> Vec<i64> {
        pieces
            .iter()
            .flat_map(|p| match *p {
                Piece::Block { level, index } => {
                    let start = index * block_size(level);
                    start..start + block_size(level)
                }
                Piece::Events { from, to } => from..to + 1,
            })
            .collect()
    }

    #[test]
    fn a_cover_is_every_version_once_in_order_with_aligned_blocks() {
        for (lo, hi, top) in [
            (1, 1, 3),
            (1, 255, 3),
            (1, 256, 3),
            (1, 1_000_000, 5),
            (300, 70_000, 12),
            (256, 1023, 2),
            (5, 100_000, 0),
        ] {
            let pieces = cover(lo, hi, top);
            assert_eq!(
                covered(&pieces),
                (lo..=hi).collect::<Vec<_>>(),
                "{lo}..={hi} top {top}"
            );
            for piece in &pieces {
                if let Piece::Block { level, .. } = piece {
                    assert!(*level <= top && *level >= 1);
                }
            }
            // Single events only where no level-1 block fits.
            let single: i64 = pieces
                .iter()
                .map(|p| match *p {
                    Piece::Events { from, to } => to - from + 1,
                    _ => 0,
                })
                .sum();
            assert!(top == 0 || single < 2 * BASE, "{lo}..={hi}: {single}");
        }
    }

    #[test]
    fn a_cover_uses_few_blocks_below_its_top_level() {
        let pieces = cover(1, 1_000_000, 4);
        for level in 1..4 {
            let n = pieces
                .iter()
                .filter(|p| matches!(p, Piece::Block { level: l, .. } if *l == level))
                .count() as i64;
            assert!(n <= 2 * (FANOUT - 1), "level {level}: {n}");
        }
        let top = pieces.len() as i64;
        assert!(top <= 1_000_000 / block_size(4) + 2 * 3 * 3 + 2, "{top}");
    }

    #[test]
    fn the_top_level_gives_each_bucket_two_blocks() {
        assert_eq!(
            top_level(1_000_000, 249),
            2,
            "1,024 * 498 <= 10^6 < 4,096 * 498"
        );
        assert_eq!(top_level(10_000, 249), 0, "too short for blocks");
        assert_eq!(top_level(60_000, 4999), 0, "few enough to read one by one");
        assert_eq!(
            top_level(1_000_000, 4999),
            1,
            "bounded: blocks narrower than a bucket would be"
        );
        assert_eq!(top_level(1_000_000, 0), LEVELS);
    }

    #[test]
    fn spans_join_in_order_and_ties_go_to_the_earliest() {
        let joined = Span::join([
            Some(Span::point(10, 5)),
            None,
            Some(Span::point(11, 1)),
            Some(Span::point(12, 9)),
            Some(Span::point(13, 1)),
            Some(Span::point(14, 9)),
        ])
        .expect("points");
        assert_eq!(
            joined,
            Span {
                points: 5,
                first: 10,
                last: 14,
                low: (1, 11),
                high: (9, 12)
            }
        );
        assert_eq!(Span::join([None, None]), None);
    }

    /// The ids a scan of every point picks, for comparison.
    fn scan(values: &[i64], limit: i64) -> Vec<i64> {
        let parts: Vec<(i64, Span)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 + 1, Span::point(i as i64 + 100, v)))
            .collect();
        chart_ids(&parts, 1, values.len() as i64, limit)
    }

    #[test]
    fn a_chart_keeps_its_ends_and_each_buckets_extremes_within_the_limit() {
        let values: Vec<i64> = (0..1000).map(|i| (i * 37) % 101).collect();
        for limit in [1, 2, 3, 4, 5, 10, 500, 2000] {
            let ids = scan(&values, limit);
            assert!(ids.len() as i64 <= limit, "limit {limit}: {}", ids.len());
            assert_eq!(ids.last(), Some(&1099), "ends at now");
            if limit >= 2 {
                assert_eq!(ids.first(), Some(&100), "starts at the start");
            }
        }
        let ids = scan(&values, 4);
        assert!(ids.contains(&(100 + values.iter().position(|&v| v == 0).unwrap() as i64)));
        assert!(ids.contains(&(100 + values.iter().position(|&v| v == 100).unwrap() as i64)));
    }

    #[test]
    fn blocks_pick_the_same_points_as_a_scan_when_bucket_edges_fall_on_block_edges() {
        // Versions 256..=2303 in 4 buckets of 512: level-1 blocks (256
        // versions) never straddle a bucket edge.
        let (lo, hi) = (256, 2303);
        let value = |v: i64| (v * 7919) % 1009;
        let point = |v: i64| Span::point(v + 1000, value(v));
        let single: Vec<(i64, Span)> = (lo..=hi).map(|v| (v, point(v))).collect();
        let parts: Vec<(i64, Span)> = cover(lo, hi, 1)
            .iter()
            .map(|p| match *p {
                Piece::Block { level, index } => {
                    let start = index * block_size(level);
                    let span =
                        Span::join((start..start + block_size(level)).map(|v| Some(point(v))));
                    (start, span.expect("points"))
                }
                Piece::Events { .. } => unreachable!("aligned range"),
            })
            .collect();
        assert_eq!(parts.len(), 8);
        for limit in [4, 6, 10] {
            assert_eq!(
                chart_ids(&parts, lo, hi - lo + 1, limit),
                chart_ids(&single, lo, hi - lo + 1, limit),
                "limit {limit}"
            );
        }
    }
}
