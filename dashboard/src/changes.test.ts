import { describe, expect, it } from "vitest";
import { describeChange } from "./changes";
import type { SkuEvent } from "./types";

function event(field: SkuEvent["field"], old: unknown, next: unknown, reason: string | null): SkuEvent {
  return { event_id: 1, sku: "A", version: 2, at: "2026-11-29T10:00:00.000000Z", field, old, new: next, reason };
}

describe("a change as one line", () => {
  it("names holds by their reserved counts and reason", () => {
    expect(describeChange(event("reserved", 3, 5, "hold"))).toBe("reserved 3 → 5 (hold)");
    expect(describeChange(event("reserved", 5, 0, "hold_released"))).toBe("reserved 5 → 0 (hold_released)");
    expect(describeChange(event("reserved", 2, 0, "hold_expired"))).toBe("reserved 2 → 0 (hold_expired)");
    expect(describeChange(event("reserved", 2, 0, "hold_committed"))).toBe("reserved 2 → 0 (hold_committed)");
  });

  it("keeps stock, price and settings changes as they were", () => {
    expect(describeChange(event("stock", 12, 9, "sale"))).toBe("stock 12 → 9 (sale)");
    expect(describeChange(event("stock", 12, 9, null))).toBe("stock 12 → 9");
    expect(describeChange(event("price", "2.55", "2.49", "promo"), "GBP")).toBe("price £2.55 → £2.49 (promo)");
    expect(describeChange(event("meta", {}, {}, null))).toBe("settings changed");
  });

  it("does not fail on a field added later", () => {
    expect(describeChange({ ...event("stock", 1, 2, "x"), field: "lead_time" as SkuEvent["field"] })).toBe("lead_time changed (x)");
  });
});
