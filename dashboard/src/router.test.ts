import { describe, expect, it } from "vitest";
import { currentRoute, skuPath, WEBHOOKS_PATH } from "./router";

// Codes the server accepts: no whitespace, no `/`, not `.` or `..` (URL
// normalisation would remove them), anything else.
const codes = ["MUG-01", "a.b_c~d-1", "50%", "A?B", "A#1", "A+B", "x&y=z;w", "(1)!*'$,", "a:b@c", "ÉTÉ-ß", "杯子~1", "%2F", "..."];

describe("SKU routes", () => {
  it("leave unreserved characters alone and encode the rest", () => {
    expect(skuPath("MUG-01")).toBe("/skus/MUG-01");
    expect(skuPath("a.b_c~d-1")).toBe("/skus/a.b_c~d-1");
    expect(skuPath("50%")).toBe("/skus/50%25");
    expect(skuPath("A?B")).toBe("/skus/A%3FB");
    expect(skuPath("A#1")).toBe("/skus/A%231");
    expect(skuPath("杯子")).toBe("/skus/%E6%9D%AF%E5%AD%90");
  });

  it("round-trip every code through the URL", () => {
    for (const code of codes) {
      const path = skuPath(code);
      expect(path.slice("/skus/".length)).not.toMatch(/[/?#\s]/);
      // What the browser keeps of it as a URL's path.
      const pathname = new URL(path, "http://127.0.0.1:8000").pathname;
      expect(currentRoute(pathname)).toEqual({ sku: code });
    }
  });

  it("treat other paths, and malformed encodings, as the catalog", () => {
    expect(currentRoute("/")).toEqual({ sku: null });
    expect(currentRoute("/skus/")).toEqual({ sku: null });
    expect(currentRoute("/skus/a/b")).toEqual({ sku: null });
    expect(currentRoute("/skus/%E0%A4%A")).toEqual({ sku: null });
    expect(currentRoute("/skus/%")).toEqual({ sku: null });
  });

  it("read /webhooks as the Webhooks page, and nothing under it", () => {
    expect(currentRoute(WEBHOOKS_PATH)).toEqual({ sku: null, webhooks: true });
    expect(currentRoute("/webhooks/")).toEqual({ sku: null, webhooks: true });
    expect(currentRoute("/webhooks/x")).toEqual({ sku: null });
    expect(currentRoute("/webhooksx")).toEqual({ sku: null });
    // A SKU may be called "webhooks": its page is another path.
    expect(currentRoute(skuPath("webhooks"))).toEqual({ sku: "webhooks" });
  });
});
