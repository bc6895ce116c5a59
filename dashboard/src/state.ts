// The dashboard's live state and the one pure function that applies
// everything to it: REST loads, WebSocket messages and write responses.
// No I/O here, so the rules are unit-tested (state.test.ts).
//
// The rules that make out-of-order, duplicate, conflated and resumed
// deliveries safe:
// - A message carries the SKU's whole state with its `version` (API.md:
//   every change increments it by exactly 1), so a state is applied only
//   when its version is newer than the one held. An older or repeated one
//   changes nothing, whatever the path it came by (snapshot, live, replay,
//   REST response).
// - `resumeAfter` is the event id to resume from after a reconnect
//   (`subscribe ... since`). Only in-order live messages advance it: a
//   conflated message may jump ahead of events still unsent for other SKUs,
//   and a snapshot's `event_id` may be ahead of live events still queued for
//   SKUs subscribed earlier. Resuming from too early only replays events the
//   version rule drops; resuming from too late would lose changes.
// - A `cursor_ahead` or `cursor_unknown` notice says the server's history is
//   not the one these versions came from (a restore, a failover to a replica
//   that lagged: README, "Cursors ahead of the server"). The version rule
//   would then keep states the server no longer has, so everything held is
//   dropped; the snapshot that follows the notice and a catalog re-read
//   (`rebases` tells the page to start one) bring the server's truth.
// - Every SKU enters through `applySku`, which fills in `reserved` and
//   `available` when the sender predates holds (and the forecast fields, as
//   null, when it predates issue 18), so nothing downstream checks.

import { compareCover, isCoverShort } from "./cover";
import type { Alert, HistoryPoint, ServerMessage, Sku, SkuEvent, SkuJson } from "./types";

export type Direction = "up" | "down";

/** The last visible change of a SKU, for the brief cell highlight. */
export interface Flash {
  /** `available` when only holds changed (stock and price did not). */
  field: "stock" | "price" | "available";
  direction: Direction;
  /** Caller's clock (ms) when it was applied. */
  at: number;
  /** Distinguishes two changes of the same cell, so the highlight restarts. */
  version: number;
}

export interface LiveState {
  skus: Map<string, Sku>;
  resumeAfter: number;
  flashes: Map<string, Flash>;
  /** Unresolved alerts (open or acknowledged) by id. */
  alerts: Map<number, Alert>;
  /** Alerts that opened while watching, for toasts; the UI drains it. */
  newAlerts: Alert[];
  /** Events of the SKU in the detail view, to extend its charts. */
  focus: string | null;
  focusEvents: SkuEvent[];
  /** Times the server's history was found rewound; the page re-reads the catalog when it grows. */
  rebases: number;
}

export type Action =
  | { type: "catalog"; skus: SkuJson[] }
  | { type: "messages"; messages: ServerMessage[]; now: number }
  | { type: "written"; sku: SkuJson; now: number }
  | { type: "alerts"; alerts: Alert[] }
  | { type: "alertUpdated"; alert: Alert }
  | { type: "toastsShown"; ids: number[] }
  | { type: "focus"; sku: string | null }
  | { type: "reset" };

export function initialState(): LiveState {
  return {
    skus: new Map(),
    resumeAfter: 0,
    flashes: new Map(),
    alerts: new Map(),
    newAlerts: [],
    focus: null,
    focusEvents: [],
    rebases: 0,
  };
}

/** Most events kept for the detail view's live chart extension. */
const FOCUS_EVENTS = 2000;

function direction(before: string | number, after: string | number): Direction | null {
  const a = Number(before);
  const b = Number(after);
  if (a === b || Number.isNaN(a) || Number.isNaN(b)) return null;
  return b > a ? "up" : "down";
}

/**
 * A SKU with every field set: a sender from before holds has no `reserved`
 * and `available`, which means nothing is held (`reserved` 0, `available` =
 * `stock`); one from before the forecast (issue 18) has no `lead_time_days`,
 * `alert_rule` or `forecast`, which are then null (nothing is shown for
 * them). A state that has them all is returned as it is.
 */
export function normalizeSku(sku: SkuJson): Sku {
  if (
    typeof sku.reserved === "number" &&
    typeof sku.available === "number" &&
    sku.lead_time_days !== undefined &&
    sku.alert_rule !== undefined &&
    sku.forecast !== undefined
  )
    return sku as Sku;
  const reserved = typeof sku.reserved === "number" ? sku.reserved : 0;
  const available = typeof sku.available === "number" ? sku.available : sku.stock - reserved;
  return {
    ...sku,
    reserved,
    available,
    lead_time_days: sku.lead_time_days ?? null,
    alert_rule: sku.alert_rule ?? null,
    forecast: sku.forecast ?? null,
  };
}

/** Applies `next` if it is newer; returns whether it was. */
function applySku(
  skus: Map<string, Sku>,
  flashes: Map<string, Flash>,
  incoming: SkuJson,
  now: number | null,
): boolean {
  const current = skus.get(incoming.sku);
  if (current && current.version >= incoming.version) return false;
  const next = normalizeSku(incoming);
  skus.set(next.sku, next);
  if (current && now !== null) {
    const stock = direction(current.stock, next.stock);
    const price = direction(current.price, next.price);
    // A hold moves `available` with the stock unchanged.
    const available = direction(current.available, next.available);
    const flash = (field: Flash["field"], d: Direction) =>
      flashes.set(next.sku, { field, direction: d, at: now, version: next.version });
    if (stock) flash("stock", stock);
    else if (price) flash("price", price);
    else if (available) flash("available", available);
  }
  return true;
}

function applyAlert(alerts: Map<number, Alert>, alert: Alert): "new" | "changed" | "same" {
  const current = alerts.get(alert.id);
  if (alert.status === "resolved") {
    if (current) {
      alerts.delete(alert.id);
      return "changed";
    }
    return "same";
  }
  // An alert only moves forward: open -> acknowledged -> resolved.
  if (current && current.status === "acknowledged" && alert.status === "open") return "same";
  alerts.set(alert.id, alert);
  return current ? "changed" : "new";
}

export function reduce(state: LiveState, action: Action): LiveState {
  switch (action.type) {
    case "catalog": {
      const skus = new Map(state.skus);
      for (const sku of action.skus) applySku(skus, state.flashes, sku, null);
      return { ...state, skus };
    }
    case "written": {
      const skus = new Map(state.skus);
      const flashes = new Map(state.flashes);
      if (!applySku(skus, flashes, action.sku, action.now)) return state;
      return { ...state, skus, flashes };
    }
    case "messages": {
      let skus: Map<string, Sku> | null = null;
      let flashes: Map<string, Flash> | null = null;
      let alerts: Map<number, Alert> | null = null;
      const newAlerts = [...state.newAlerts];
      let resumeAfter = state.resumeAfter;
      let focusEvents: SkuEvent[] | null = null;
      let rebases = state.rebases;
      for (const message of action.messages) {
        switch (message.type) {
          case "snapshot": {
            skus ??= new Map(state.skus);
            flashes ??= new Map(state.flashes);
            for (const sku of message.skus) applySku(skus, flashes, sku, null);
            // The first snapshot starts the resume point; later ones must
            // not move it (see the module comment).
            if (resumeAfter === 0) resumeAfter = message.event_id;
            break;
          }
          case "sku": {
            skus ??= new Map(state.skus);
            flashes ??= new Map(state.flashes);
            applySku(skus, flashes, message.sku, action.now);
            if (!message.conflated && message.event_id > resumeAfter) resumeAfter = message.event_id;
            if (state.focus === message.sku.sku && message.change) {
              focusEvents ??= [...state.focusEvents];
              focusEvents = mergeEvents(focusEvents, [message.change]);
            }
            break;
          }
          case "notice": {
            if (message.code !== "cursor_ahead" && message.code !== "cursor_unknown") break;
            skus = new Map();
            flashes = new Map();
            focusEvents = [];
            resumeAfter = 0;
            rebases += 1;
            break;
          }
          case "alert": {
            alerts ??= new Map(state.alerts);
            if (applyAlert(alerts, message.alert) === "new" && message.alert.status === "open") {
              newAlerts.push(message.alert);
            }
            break;
          }
          default:
            break;
        }
      }
      return {
        ...state,
        skus: skus ?? state.skus,
        flashes: flashes ?? state.flashes,
        alerts: alerts ?? state.alerts,
        newAlerts,
        resumeAfter,
        focusEvents: focusEvents ?? state.focusEvents,
        rebases,
      };
    }
    case "alerts": {
      const alerts = new Map(state.alerts);
      for (const alert of action.alerts) applyAlert(alerts, alert);
      return { ...state, alerts };
    }
    case "alertUpdated": {
      const alerts = new Map(state.alerts);
      applyAlert(alerts, action.alert);
      return { ...state, alerts };
    }
    case "toastsShown": {
      const shown = new Set(action.ids);
      return { ...state, newAlerts: state.newAlerts.filter((a) => !shown.has(a.id)) };
    }
    case "focus":
      return { ...state, focus: action.sku, focusEvents: [] };
    case "reset":
      return { ...initialState(), rebases: state.rebases };
  }
}

/** Events in event-id order without repeats, capped to the newest. */
export function mergeEvents(events: SkuEvent[], more: SkuEvent[]): SkuEvent[] {
  const byId = new Map<number, SkuEvent>();
  for (const e of events) byId.set(e.event_id, e);
  for (const e of more) byId.set(e.event_id, e);
  const merged = [...byId.values()].sort((a, b) => a.event_id - b.event_id);
  return merged.length > FOCUS_EVENTS ? merged.slice(merged.length - FOCUS_EVENTS) : merged;
}

/**
 * A chart series: the history endpoint's points extended by live events of
 * the same field, ordered by event id, each event once.
 */
export function extendHistory(
  points: HistoryPoint[],
  events: SkuEvent[],
  field: "stock" | "price",
): HistoryPoint[] {
  const byId = new Map<number, HistoryPoint>();
  for (const p of points) byId.set(p.event_id, p);
  for (const e of events) {
    if (e.field !== field || byId.has(e.event_id)) continue;
    byId.set(e.event_id, {
      at: e.at,
      value: e.new as string | number,
      version: e.version,
      event_id: e.event_id,
      reason: e.reason ?? null,
    });
  }
  return [...byId.values()].sort((a, b) => a.event_id - b.event_id);
}

export type SortKey = "sku" | "stock" | "available" | "cover" | "updated";
/** `cover`: days of cover below the SKU's lead time (issue 18). */
export type Filter = "all" | "below" | "out" | "cover";

export interface View {
  query: string;
  filter: Filter;
  sort: SortKey;
  descending: boolean;
}

/** Whether a SKU is below its low-stock threshold. With holds the server
 * judges `available`, not `stock` (API.md, v1 additions), and so does this. */
export function isBelow(sku: Sku): boolean {
  return sku.available < sku.low_stock_threshold;
}

/** Whether nothing is left to sell: `available` at 0, or below it when more
 * is held than a physical count found. */
export function isOut(sku: Sku): boolean {
  return sku.available <= 0;
}

/** How a row or fact is marked: out (nothing to sell), below threshold, or neither. */
export function stockState(sku: Sku): "out" | "below" | "" {
  return isOut(sku) ? "out" : isBelow(sku) ? "below" : "";
}

/** The catalog table's rows: filtered, searched and sorted SKU codes. */
export function selectRows(skus: Map<string, Sku>, view: View): Sku[] {
  const q = view.query.trim().toLowerCase();
  const rows: Sku[] = [];
  for (const sku of skus.values()) {
    if (view.filter === "below" && !isBelow(sku)) continue;
    if (view.filter === "out" && !isOut(sku)) continue;
    if (view.filter === "cover" && !isCoverShort(sku)) continue;
    if (q && !sku.sku.toLowerCase().includes(q) && !sku.name.toLowerCase().includes(q)) continue;
    rows.push(sku);
  }
  const sign = view.descending ? -1 : 1;
  const bySku = (a: Sku, b: Sku) => (a.sku < b.sku ? -1 : a.sku > b.sku ? 1 : 0);
  if (view.sort === "cover") {
    // No forecast sorts last both ways (cover.ts).
    rows.sort((a, b) => compareCover(a, b, view.descending));
    return rows;
  }
  rows.sort((a, b) => {
    let c = 0;
    if (view.sort === "stock") c = a.stock - b.stock;
    else if (view.sort === "available") c = a.available - b.available;
    else if (view.sort === "updated") c = a.updated_at < b.updated_at ? -1 : a.updated_at > b.updated_at ? 1 : 0;
    return sign * (c || bySku(a, b));
  });
  return rows;
}
