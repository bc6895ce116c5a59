import { describe, expect, it } from "vitest";
import { formatMoney, minorDigits } from "./money";

describe("money", () => {
  it("formats each currency with its own minor units (JPY without decimals)", () => {
    expect(formatMoney("1980", "JPY", "en-US")).toBe("¥1,980");
    expect(formatMoney("2.55", "GBP", "en-GB")).toBe("£2.55");
    expect(formatMoney("19.99", "USD", "en-US")).toBe("$19.99");
    expect(formatMoney("1.250", "KWD", "en-US")).toMatch(/^KWD\s1\.250$/);
    expect(minorDigits("JPY")).toBe(0);
    expect(minorDigits("GBP")).toBe(2);
  });
});
