// The SKU page's "Active holds": which holds to show and how long each has
// left. No I/O and no clock of its own (the caller passes `now`), so the
// rules are unit-tested (holds.test.ts).

import type { Hold, SkuEvent } from "./types";

/** One hold as the SKU page lists it. */
export interface HoldRow {
  id: string;
  /** Units this hold keeps of the page's SKU (a hold may cover other SKUs too). */
  quantity: number;
  reference: string | null;
  created_at: string;
  expires_at: string;
  /** Milliseconds until `expires_at`, > 0. */
  remaining: number;
}

/** Units of `code` held by `hold`, over all its lines for that SKU. */
export function heldQuantity(hold: Hold, code: string): number {
  return hold.lines.reduce((sum, line) => (line.sku === code ? sum + line.quantity : sum), 0);
}

/**
 * The holds to list for `code` at `now` (epoch ms): active, not yet past
 * `expires_at` (the server expires them on its own schedule; the list stops
 * showing one the moment its time is up), holding some of `code`; the one
 * to expire first on top.
 */
export function visibleHolds(holds: Hold[], code: string, now: number): HoldRow[] {
  const rows: HoldRow[] = [];
  for (const hold of holds) {
    if (hold.status !== "active") continue;
    const remaining = Date.parse(hold.expires_at) - now;
    // An unparseable time is shown rather than hidden: the server said active.
    if (remaining <= 0) continue;
    const quantity = heldQuantity(hold, code);
    if (quantity === 0) continue;
    rows.push({
      id: hold.id,
      quantity,
      reference: hold.reference ?? null,
      created_at: hold.created_at,
      expires_at: hold.expires_at,
      remaining: Number.isNaN(remaining) ? Infinity : remaining,
    });
  }
  return rows.sort((a, b) => a.remaining - b.remaining || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** How many of `holds` have passed `expires_at` at `now`: when this grows the
 * page reads the list again (a hold extended meanwhile comes back). */
export function passedCount(holds: Hold[], now: number): number {
  return holds.filter((h) => Date.parse(h.expires_at) <= now).length;
}

/**
 * "expires in 9m 12s" for `ms` milliseconds left. Whole seconds rounded up,
 * so a hold still listed never reads "0s"; minutes and seconds under an hour,
 * hours and minutes under a day, then days and hours.
 */
export function formatCountdown(ms: number): string {
  if (!Number.isFinite(ms)) return ms > 0 ? "no expiry time" : "expired";
  if (ms <= 0) return "expired";
  const s = Math.ceil(ms / 1000);
  const pad = (n: number) => String(n).padStart(2, "0");
  let text: string;
  if (s < 60) text = `${s}s`;
  else if (s < 3600) text = `${Math.floor(s / 60)}m ${pad(s % 60)}s`;
  else if (s < 86_400) text = `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
  else text = `${Math.floor(s / 86_400)}d ${Math.floor((s % 86_400) / 3600)}h`;
  return `expires in ${text}`;
}

/** The newest `reserved` event of `code` among `events` (0 if none): the
 * SKU page reads its holds again whenever this changes. */
export function lastReservedChange(events: SkuEvent[], code: string): number {
  let last = 0;
  for (const e of events) {
    if (e.field === "reserved" && e.sku === code && e.event_id > last) last = e.event_id;
  }
  return last;
}
