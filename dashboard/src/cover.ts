// Days of cover (issue 18): how a SKU's `forecast` is read, compared, shown
// and drawn. No I/O and no clock, so the rules are unit-tested
// (cover.test.ts).
//
// The server rounds `days_of_cover` down to tenths, so "cover below the lead
// time" reads the same on the shown number as on the exact one for a lead
// time in whole days: the comparison here and the server's alert and
// `/summary` count (`within_lead_time`) agree.

import type { Forecast, Sku } from "./types";

/** A decimal string with one place ("3.1") as a number; null for null or anything unparseable. */
export function parseTenths(raw: string | null | undefined): number | null {
  if (raw == null || raw.trim() === "") return null;
  const n = Number(raw);
  return Number.isFinite(n) ? n : null;
}

/** The SKU's days of cover; null when the server has no forecast for it. */
export function coverDays(sku: Sku): number | null {
  return parseTenths(sku.forecast?.days_of_cover);
}

/**
 * Whether the SKU runs out before a delivery ordered now arrives: days of
 * cover below its lead time (the rule of the `stockout_forecast` alert, and
 * of `/summary`'s `within_lead_time`). False with no forecast or no lead time.
 */
export function isCoverShort(sku: Sku): boolean {
  const cover = coverDays(sku);
  return cover !== null && sku.lead_time_days != null && cover < sku.lead_time_days;
}

/**
 * Orders two SKUs by days of cover, `descending` or not; a SKU with no
 * forecast goes after every SKU with one in both directions (it is neither
 * the most urgent nor the least), ties (and two without) by SKU code in the
 * direction asked, as the other columns break them.
 */
export function compareCover(a: Sku, b: Sku, descending: boolean): number {
  const sign = descending ? -1 : 1;
  const x = coverDays(a);
  const y = coverDays(b);
  if (x === null && y !== null) return 1;
  if (y === null && x !== null) return -1;
  const c = x !== null && y !== null ? x - y : 0;
  return sign * (c || (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0));
}

/** "3.1 d" for the table; "–" with no forecast. */
export function formatCover(sku: Sku): string {
  const raw = sku.forecast?.days_of_cover;
  return raw == null ? "–" : `${raw} d`;
}

const plural = (n: number, word: string) => `${n.toLocaleString("en-US")} ${word}${n === 1 ? "" : "s"}`;

/**
 * Why a forecast has no days of cover, as far as the SKU object tells: no
 * sales in the rate, fewer sales than the server forecasts on (5 by
 * default), or a stock-out beyond its horizon (a year).
 */
export function noCoverReason(forecast: Forecast, minSales = 5): string {
  if ((parseTenths(forecast.sales_per_day) ?? 0) <= 0) return "no recent sales";
  if (forecast.based_on_sales < minSales) return "too few sales to forecast";
  return "no stock-out within a year";
}

/**
 * The numbers behind a SKU's cover, for its tooltip, in the words of the
 * server's alert message: "sells 12.4/day over 31 sales; lead time 7 days",
 * with the reason when there is no cover. Null from a server without forecasts.
 */
export function describeCover(sku: Sku): string | null {
  const f = sku.forecast;
  if (!f) return null;
  const parts = [`sells ${f.sales_per_day}/day over ${plural(f.based_on_sales, "sale")}`];
  if (f.days_of_cover == null) parts.push(noCoverReason(f));
  if (sku.lead_time_days != null) parts.push(`lead time ${plural(sku.lead_time_days, "day")}`);
  return parts.join("; ");
}

/** The projected fall of `available` to 0: two points, Unix seconds. */
export interface Projection {
  from: { x: number; y: number };
  to: { x: number; y: number };
}

/**
 * The stock chart's projection line: from the SKU's `available` at
 * `forecast.as_of` straight down to 0 at `forecast.stockout_at`. Null when
 * either time is missing or unreadable, nothing is available (the server
 * then puts the stock-out at `as_of` itself), or the stock-out is not after
 * `as_of`.
 */
export function projection(sku: Sku): Projection | null {
  const f = sku.forecast;
  if (!f || f.as_of == null || f.stockout_at == null) return null;
  const from = Date.parse(f.as_of) / 1000;
  const to = Date.parse(f.stockout_at) / 1000;
  if (!Number.isFinite(from) || !Number.isFinite(to) || to <= from || sku.available <= 0) return null;
  return { from: { x: from, y: sku.available }, to: { x: to, y: 0 } };
}

/** A step series and a projection on one x axis, as uPlot takes them. */
export interface ProjectedSeries {
  xs: number[];
  /** The step series; null past its last point (no data in the future). */
  ys: (number | null)[];
  /** The projection's two points, null elsewhere (drawn with gaps spanned). */
  projected: (number | null)[];
}

/**
 * Puts a projection's two points on the x axis of a step series (`xs`
 * ascending, the value holding until the next point). A point at an x the
 * series already has shares it; any other is inserted, with the series'
 * value there (the step holding) or null past the series' last point or
 * before its first. Without a projection the series is returned as it is,
 * with an empty projection of the same length.
 */
export function withProjection(xs: number[], ys: number[], p: Projection | null): ProjectedSeries {
  if (!p) return { xs, ys, projected: xs.map(() => null) };
  const rows: { x: number; y: number | null; p: number | null }[] = xs.map((x, i) => ({ x, y: ys[i], p: null }));
  const stepAt = (x: number): number | null => {
    if (xs.length === 0 || x < xs[0] || x > xs[xs.length - 1]) return null;
    let value: number | null = null;
    for (let i = 0; i < xs.length && xs[i] <= x; i++) value = ys[i];
    return value;
  };
  for (const point of [p.from, p.to]) {
    // The last row at that x, so the projection starts where the step ends.
    let at = -1;
    for (let i = rows.length - 1; i >= 0; i--) {
      if (rows[i].x === point.x) {
        at = i;
        break;
      }
    }
    if (at >= 0) rows[at].p = point.y;
    else rows.push({ x: point.x, y: stepAt(point.x), p: point.y });
  }
  // Stable: rows of equal x keep their order.
  rows.sort((a, b) => a.x - b.x);
  return { xs: rows.map((r) => r.x), ys: rows.map((r) => r.y), projected: rows.map((r) => r.p) };
}
