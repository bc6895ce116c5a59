import { describe, expect, it } from "vitest";
import { activeHoldsPath } from "./api";
import { formatCountdown, heldQuantity, lastReservedChange, passedCount, visibleHolds } from "./holds";
import type { Hold, SkuEvent } from "./types";

const T0 = Date.parse("2026-11-29T10:00:00.000000Z");
const at = (secs: number) => new Date(T0 + secs * 1000).toISOString().replace("Z", "000Z");

function hold(id: string, expiresIn: number, lines: Hold["lines"], status: Hold["status"] = "active"): Hold {
  return {
    id,
    status,
    lines,
    reference: `cart-${id}`,
    expires_at: at(expiresIn),
    created_at: at(-60),
    ended_at: null,
    event_ids: [],
  };
}

describe("the holds listed for a SKU", () => {
  it("show this SKU's quantity, summed over its lines, soonest expiry first", () => {
    const both = hold("1", 600, [
      { sku: "A", quantity: 2 },
      { sku: "B", quantity: 5 },
      { sku: "A", quantity: 1 },
    ]);
    expect(heldQuantity(both, "A")).toBe(3);
    expect(heldQuantity(both, "B")).toBe(5);
    const rows = visibleHolds([both, hold("2", 90, [{ sku: "A", quantity: 4 }])], "A", T0);
    expect(rows.map((r) => [r.id, r.quantity, r.reference, r.remaining])).toEqual([
      ["2", 4, "cart-2", 90_000],
      ["1", 3, "cart-1", 600_000],
    ]);
  });

  it("drop a hold the moment its expiry passes, and any hold no longer active", () => {
    const holds = [
      hold("soon", 1, [{ sku: "A", quantity: 1 }]),
      hold("later", 30, [{ sku: "A", quantity: 1 }]),
      hold("gone", 300, [{ sku: "A", quantity: 1 }], "released"),
      hold("other", 300, [{ sku: "B", quantity: 1 }]),
    ];
    expect(visibleHolds(holds, "A", T0).map((r) => r.id)).toEqual(["soon", "later"]);
    expect(visibleHolds(holds, "A", T0 + 999).map((r) => r.id)).toEqual(["soon", "later"]);
    expect(visibleHolds(holds, "A", T0 + 1000).map((r) => r.id)).toEqual(["later"]);
    expect(visibleHolds(holds, "A", T0 + 30_000)).toEqual([]);
    expect(passedCount(holds, T0 + 1000)).toBe(1);
    expect(passedCount(holds, T0 + 30_000)).toBe(2);
  });

  it("keep a hold whose expiry cannot be read: the server said it is active", () => {
    const odd = { ...hold("x", 0, [{ sku: "A", quantity: 1 }]), expires_at: "soon" };
    const rows = visibleHolds([odd], "A", T0);
    expect(rows.map((r) => r.id)).toEqual(["x"]);
    expect(formatCountdown(rows[0].remaining)).toBe("no expiry time");
  });

  it("are read with the code percent-encoded", () => {
    expect(activeHoldsPath("MUG-01")).toBe("/holds?sku=MUG-01&status=active&limit=100");
    expect(activeHoldsPath("A&B=1#2 50%")).toBe("/holds?sku=A%26B%3D1%232%2050%25&status=active&limit=100");
    expect(activeHoldsPath("杯子")).toBe("/holds?sku=%E6%9D%AF%E5%AD%90&status=active&limit=100");
  });
});

describe("the countdown", () => {
  it("reads minutes and seconds under an hour, rounding up to the whole second", () => {
    expect(formatCountdown(552_000)).toBe("expires in 9m 12s");
    expect(formatCountdown(551_001)).toBe("expires in 9m 12s");
    expect(formatCountdown(600_000)).toBe("expires in 10m 00s");
    expect(formatCountdown(65_000)).toBe("expires in 1m 05s");
    expect(formatCountdown(59_000)).toBe("expires in 59s");
    expect(formatCountdown(1)).toBe("expires in 1s");
  });

  it("reads hours and minutes under a day, then days and hours", () => {
    expect(formatCountdown(3_600_000)).toBe("expires in 1h 00m");
    expect(formatCountdown((2 * 3600 + 5 * 60 + 30) * 1000)).toBe("expires in 2h 05m");
    expect(formatCountdown((3 * 86_400 + 4 * 3600) * 1000)).toBe("expires in 3d 4h");
  });

  it("says expired at and after zero", () => {
    expect(formatCountdown(0)).toBe("expired");
    expect(formatCountdown(-5000)).toBe("expired");
  });
});

describe("when to read the holds again", () => {
  const event = (event_id: number, sku: string, field: SkuEvent["field"]): SkuEvent => ({
    event_id,
    sku,
    version: event_id,
    at: at(event_id),
    field,
    old: 0,
    new: 1,
  });

  it("follows the newest reserved event of this SKU, not its stock or price changes nor other SKUs", () => {
    expect(lastReservedChange([], "A")).toBe(0);
    const events = [event(10, "A", "reserved"), event(11, "A", "stock"), event(12, "B", "reserved")];
    expect(lastReservedChange(events, "A")).toBe(10);
    expect(lastReservedChange([...events, event(13, "A", "price")], "A")).toBe(10);
    expect(lastReservedChange([...events, event(14, "A", "reserved")], "A")).toBe(14);
  });
});
