import { describe, expect, it } from "vitest";
import {
  compareCover,
  coverDays,
  describeCover,
  formatCover,
  isCoverShort,
  noCoverReason,
  parseTenths,
  projection,
  withProjection,
} from "./cover";
import { normalizeSku, selectRows } from "./state";
import type { Forecast, Sku } from "./types";

const AS_OF = "2026-11-29T10:00:00.000000Z";
const AS_OF_S = Date.parse(AS_OF) / 1000;
const DAY = 86_400;

function forecast(days: string | null, more: Partial<Forecast> = {}): Forecast {
  return {
    sales_per_day: "2.0",
    based_on_sales: 31,
    days_of_cover: days,
    // as_of plus the cover (the server adds the exact cover; these tests
    // only read what is given).
    stockout_at: days === null ? null : new Date(Date.parse(AS_OF) + Number(days) * DAY * 1000).toISOString(),
    as_of: AS_OF,
    ...more,
  };
}

function sku(code: string, days: string | null, lead: number | null = 7, available = 20): Sku {
  return {
    sku: code,
    name: `ITEM ${code}`,
    currency: "GBP",
    price: "2.55",
    stock: available,
    reserved: 0,
    available,
    low_stock_threshold: 10,
    price_guard: { max_change_pct: 50 },
    lead_time_days: lead,
    alert_rule: "both",
    forecast: forecast(days),
    version: 1,
    updated_at: AS_OF,
  };
}

const byCode = (...skus: Sku[]) => new Map(skus.map((s) => [s.sku, s] as const));
const codes = (rows: Sku[]) => rows.map((s) => s.sku);

describe("reading days of cover", () => {
  it("parses the one-place decimal strings, null for null or junk", () => {
    expect(parseTenths("3.1")).toBe(3.1);
    expect(parseTenths("0.0")).toBe(0);
    expect(parseTenths("365.0")).toBe(365);
    expect(parseTenths(null)).toBeNull();
    expect(parseTenths(undefined)).toBeNull();
    expect(parseTenths("")).toBeNull();
    expect(parseTenths("soon")).toBeNull();
    expect(coverDays(sku("A", "12.5"))).toBe(12.5);
    expect(coverDays(sku("A", null))).toBeNull();
  });

  it("a server before the forecast has none: no cover, never short", () => {
    const { lead_time_days: _l, alert_rule: _a, forecast: _f, ...old } = sku("A", "1.0");
    const normalized = normalizeSku(old);
    expect(coverDays(normalized)).toBeNull();
    expect(isCoverShort(normalized)).toBe(false);
    expect(formatCover(normalized)).toBe("–");
    expect(describeCover(normalized)).toBeNull();
    expect(projection(normalized)).toBeNull();
  });

  it("is short when the cover is below the lead time, not at it", () => {
    expect(isCoverShort(sku("A", "3.1", 7))).toBe(true);
    expect(isCoverShort(sku("A", "6.9", 7))).toBe(true);
    // The server rounds the cover down, so 7.0 shown is at least 7 days.
    expect(isCoverShort(sku("A", "7.0", 7))).toBe(false);
    expect(isCoverShort(sku("A", "40.0", 7))).toBe(false);
    expect(isCoverShort(sku("A", "0.0", 1))).toBe(true);
    // A lead time of 0 is never out-waited; no forecast is never short.
    expect(isCoverShort(sku("A", "0.0", 0))).toBe(false);
    expect(isCoverShort(sku("A", null, 7))).toBe(false);
    expect(isCoverShort(sku("A", "3.1", null))).toBe(false);
  });

  it("shows the cover in days, and the numbers behind it in the alert message's words", () => {
    expect(formatCover(sku("A", "3.1"))).toBe("3.1 d");
    expect(formatCover(sku("A", null))).toBe("–");
    const a = { ...sku("A", "3.1"), forecast: forecast("3.1", { sales_per_day: "12.4", based_on_sales: 31 }) };
    expect(describeCover(a)).toBe("sells 12.4/day over 31 sales; lead time 7 days");
    const one = { ...sku("B", "3.1", 1), forecast: forecast("3.1", { sales_per_day: "0.2", based_on_sales: 1 }) };
    expect(describeCover(one)).toBe("sells 0.2/day over 1 sale; lead time 1 day");
  });

  it("says why there is no cover", () => {
    expect(noCoverReason(forecast(null, { sales_per_day: "0.0", based_on_sales: 0 }))).toBe("no recent sales");
    expect(noCoverReason(forecast(null, { sales_per_day: "3.0", based_on_sales: 4 }))).toBe("too few sales to forecast");
    expect(noCoverReason(forecast(null, { sales_per_day: "0.1", based_on_sales: 9 }))).toBe("no stock-out within a year");
    const few = { ...sku("A", null), forecast: forecast(null, { sales_per_day: "3.0", based_on_sales: 4 }) };
    expect(describeCover(few)).toBe("sells 3.0/day over 4 sales; too few sales to forecast; lead time 7 days");
  });
});

describe("the catalog by days of cover", () => {
  const skus = byCode(
    sku("A", "12.0"),
    sku("B", null),
    sku("C", "3.1"),
    sku("D", "3.1"),
    sku("E", null),
    sku("F", "100.5"),
    sku("G", "6.9", 7),
    sku("H", "6.9", 5),
  );
  const view = { query: "", filter: "all" as const, sort: "cover" as const };

  it("sorts lowest cover first, ties by code, no forecast last", () => {
    expect(codes(selectRows(skus, { ...view, descending: false }))).toEqual(["C", "D", "G", "H", "A", "F", "B", "E"]);
  });

  it("sorts highest cover first with no forecast still last", () => {
    expect(codes(selectRows(skus, { ...view, descending: true }))).toEqual(["F", "A", "H", "G", "D", "C", "E", "B"]);
  });

  it("compares a SKU without cover after one with, in both directions", () => {
    for (const descending of [false, true]) {
      expect(compareCover(sku("X", null), sku("Y", "0.0"), descending)).toBeGreaterThan(0);
      expect(compareCover(sku("Y", "999.0"), sku("X", null), descending)).toBeLessThan(0);
    }
  });

  it("filters to cover below each SKU's own lead time, with the search", () => {
    expect(codes(selectRows(skus, { ...view, filter: "cover", descending: false }))).toEqual(["C", "D", "G"]);
    expect(codes(selectRows(skus, { ...view, filter: "cover", sort: "sku", descending: true }))).toEqual(["G", "D", "C"]);
    expect(codes(selectRows(skus, { ...view, filter: "cover", query: "item d", descending: false }))).toEqual(["D"]);
  });
});

describe("the stock chart's projection", () => {
  it("runs from available at as_of to 0 at the stock-out", () => {
    const a = { ...sku("A", "2.0", 7, 14), forecast: forecast("2.0", { stockout_at: "2026-12-01T10:00:00Z" }) };
    expect(projection(a)).toEqual({
      from: { x: AS_OF_S, y: 14 },
      to: { x: AS_OF_S + 2 * DAY, y: 0 },
    });
  });

  it("is drawn only with both times, something available and a stock-out after as_of", () => {
    expect(projection(sku("A", null))).toBeNull();
    expect(projection({ ...sku("A", "2.0"), forecast: forecast("2.0", { stockout_at: null }) })).toBeNull();
    expect(projection({ ...sku("A", "2.0"), forecast: forecast("2.0", { as_of: "not a time" }) })).toBeNull();
    // Nothing available: the server puts the stock-out at as_of itself.
    expect(projection({ ...sku("A", "0.0", 7, 0), forecast: forecast("0.0", { stockout_at: AS_OF }) })).toBeNull();
    expect(projection(sku("A", "1.0", 7, -2))).toBeNull();
  });

  const p = { from: { x: 150, y: 14 }, to: { x: 400, y: 0 } };

  it("puts its two points on the step series' axis, the step holding at as_of and absent past its end", () => {
    // History at 100 (20) and 140 (14), extended to now (200).
    const out = withProjection([100, 140, 200], [20, 14, 14], p);
    expect(out.xs).toEqual([100, 140, 150, 200, 400]);
    expect(out.ys).toEqual([20, 14, 14, 14, null]);
    expect(out.projected).toEqual([null, null, 14, null, 0]);
  });

  it("shares an x the series has: the last point there", () => {
    const out = withProjection([100, 150, 150], [20, 14, 14], p);
    expect(out.xs).toEqual([100, 150, 150, 400]);
    expect(out.ys).toEqual([20, 14, 14, null]);
    expect(out.projected).toEqual([null, null, 14, 0]);
  });

  it("a stock-out already past (an old forecast) lands inside the series with its step value", () => {
    const out = withProjection([100, 300, 500], [20, 14, 14], { from: { x: 120, y: 20 }, to: { x: 250, y: 0 } });
    expect(out.xs).toEqual([100, 120, 250, 300, 500]);
    expect(out.ys).toEqual([20, 20, 20, 14, 14]);
    expect(out.projected).toEqual([null, 20, 0, null, null]);
  });

  it("without a projection leaves the series as it is", () => {
    const out = withProjection([100, 200], [5, 5], null);
    expect(out.xs).toEqual([100, 200]);
    expect(out.ys).toEqual([5, 5]);
    expect(out.projected).toEqual([null, null]);
    expect(withProjection([], [], p)).toEqual({ xs: [150, 400], ys: [null, null], projected: [14, 0] });
  });
});
