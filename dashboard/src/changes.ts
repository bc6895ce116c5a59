// One line of text per change event (API.md, Event), for the SKU page's
// list of live changes: "stock 12 → 9 (sale)", "reserved 3 → 5 (hold)".

import { formatMoney } from "./money";
import type { SkuEvent } from "./types";

function plain(v: unknown): string {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return v.toLocaleString();
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** What changed, old → new, and why. `currency` formats price values. */
export function describeChange(event: SkuEvent, currency?: string): string {
  const why = event.reason ? ` (${event.reason})` : "";
  switch (event.field) {
    case "stock":
    case "reserved":
      return `${event.field} ${plain(event.old)} → ${plain(event.new)}${why}`;
    case "price": {
      const money = (v: unknown) =>
        currency && (typeof v === "string" || typeof v === "number") ? formatMoney(String(v), currency) : plain(v);
      return `price ${money(event.old)} → ${money(event.new)}${why}`;
    }
    case "meta":
      return `settings changed${why}`;
    default:
      // A field added to the API after this page was built.
      return `${String((event as { field: unknown }).field)} changed${why}`;
  }
}
