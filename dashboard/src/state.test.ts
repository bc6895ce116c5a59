import { describe, expect, it } from "vitest";
import {
  type LiveState,
  extendHistory,
  initialState,
  isBelow,
  isOut,
  normalizeSku,
  reduce,
  selectRows,
  stockState,
} from "./state";
import type { Alert, ServerMessage, Sku, SkuEvent, SkuJson } from "./types";

function sku(code: string, version: number, stock: number, price = "2.55", reserved = 0): Sku {
  return {
    sku: code,
    name: `ITEM ${code}`,
    currency: "GBP",
    price,
    stock,
    reserved,
    available: stock - reserved,
    low_stock_threshold: 10,
    price_guard: { max_change_pct: 50 },
    lead_time_days: 7,
    alert_rule: "both",
    forecast: null,
    version,
    updated_at: `2026-11-29T10:00:${String(version).padStart(2, "0")}.000000Z`,
  };
}

function change(code: string, eventId: number, version: number, old: number, next: number): SkuEvent {
  return {
    event_id: eventId,
    sku: code,
    version,
    at: `2026-11-29T10:00:${String(version).padStart(2, "0")}.000000Z`,
    field: "stock",
    old,
    new: next,
    delta: next - old,
    reason: "sale",
    actor: "admin",
  };
}

/** A `sku` message: the state after the change, as the server sends it. */
function live(code: string, eventId: number, version: number, old: number, stock: number, conflated = false): ServerMessage {
  return {
    type: "sku",
    event_id: eventId,
    sku: sku(code, version, stock),
    change: change(code, eventId, version, old, stock),
    ...(conflated ? { conflated: true } : {}),
  };
}

function apply(state: LiveState, ...messages: ServerMessage[]): LiveState {
  return reduce(state, { type: "messages", messages, now: 1000 });
}

function alert(id: number, status: Alert["status"]): Alert {
  return {
    id,
    sku: "A",
    kind: "low_stock",
    status,
    message: "A is low",
    value: 9,
    threshold: 10,
    raised_at: "2026-11-29T10:00:00.000000Z",
    acknowledged_by: status === "acknowledged" ? "admin" : null,
    resolved_at: null,
  };
}

const snapshot = (eventId: number, ...skus: SkuJson[]): ServerMessage => ({ type: "snapshot", event_id: eventId, skus });

describe("applying events", () => {
  it("a newer version replaces the SKU and flashes the changed cell with its direction", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20)));
    s = apply(s, live("A", 11, 2, 20, 17));
    expect(s.skus.get("A")!.stock).toBe(17);
    expect(s.flashes.get("A")).toMatchObject({ field: "stock", direction: "down" });
    s = apply(s, live("A", 12, 3, 17, 30));
    expect(s.flashes.get("A")).toMatchObject({ field: "stock", direction: "up", version: 3 });
  });

  it("an event that arrives after a newer one changes nothing", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20)));
    s = apply(s, live("A", 13, 3, 18, 15), live("A", 12, 2, 20, 18));
    expect(s.skus.get("A")!.version).toBe(3);
    expect(s.skus.get("A")!.stock).toBe(15);
  });

  it("a duplicate event is applied once", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20)));
    s = apply(s, live("A", 11, 2, 20, 17));
    s = reduce(s, { type: "messages", messages: [live("A", 11, 2, 20, 17)], now: 2000 });
    expect(s.skus.get("A")!.stock).toBe(17);
    // The highlight is not restarted by the repeat.
    expect(s.flashes.get("A")).toMatchObject({ version: 2, at: 1000 });
  });

  it("a snapshot older than what live events delivered does not roll the SKU back", () => {
    let s = apply(initialState(), live("A", 20, 5, 9, 8));
    s = apply(s, snapshot(19, sku("A", 4, 9)));
    expect(s.skus.get("A")!.version).toBe(5);
    expect(s.skus.get("A")!.stock).toBe(8);
  });

  it("a conflated update jumps to the newest state but never moves the resume point", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20), sku("B", 1, 50)));
    s = apply(s, live("A", 11, 2, 20, 19));
    // The session fell behind: only B's newest state arrives, skipping versions 2-4.
    s = apply(s, live("B", 40, 5, 47, 46, true));
    expect(s.skus.get("B")!.stock).toBe(46);
    expect(s.skus.get("B")!.version).toBe(5);
    expect(s.resumeAfter).toBe(11);
    // A later in-order event moves it on.
    s = apply(s, live("A", 41, 3, 19, 18));
    expect(s.resumeAfter).toBe(41);
  });

  it("resume after reconnect: replayed events fill the gap, repeats of what was seen are dropped", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20), sku("B", 1, 50)));
    s = apply(s, live("A", 11, 2, 20, 19), live("B", 12, 2, 50, 48));
    expect(s.resumeAfter).toBe(12);
    // Disconnected; meanwhile A: 19 -> 29 -> 4, B: 48 -> 47. The new socket
    // subscribes with since = 12 and the server replays from there, here
    // starting with an event the client already had.
    s = apply(
      s,
      live("B", 12, 2, 50, 48),
      live("A", 13, 3, 19, 29),
      live("A", 14, 4, 29, 4),
      live("B", 15, 3, 48, 47),
    );
    expect(s.skus.get("A")).toMatchObject({ stock: 4, version: 4 });
    expect(s.skus.get("B")).toMatchObject({ stock: 47, version: 3 });
    expect(s.resumeAfter).toBe(15);
  });

  it("only the first snapshot sets the resume point", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20)));
    // B subscribed later: its snapshot is at 30, but events 11-30 for A may
    // still be queued on the socket.
    s = apply(s, snapshot(30, sku("B", 3, 50)));
    expect(s.resumeAfter).toBe(10);
  });

  it("REST responses and the socket agree by version whichever comes first", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20)));
    s = reduce(s, { type: "written", sku: sku("A", 2, 17), now: 5 });
    s = apply(s, live("A", 11, 2, 20, 17));
    expect(s.skus.get("A")!.version).toBe(2);
    // A catalog page read before the change does not undo it.
    s = reduce(s, { type: "catalog", skus: [sku("A", 1, 20)] });
    expect(s.skus.get("A")!.stock).toBe(17);
  });
});

describe("alerts", () => {
  it("a new open alert is queued for a toast once; acknowledging and resolving update the panel", () => {
    let s = apply(initialState(), { type: "alert", alert: alert(1, "open") });
    s = apply(s, { type: "alert", alert: alert(1, "open") });
    expect(s.newAlerts.map((a) => a.id)).toEqual([1]);
    s = reduce(s, { type: "toastsShown", ids: [1] });
    expect(s.newAlerts).toEqual([]);
    s = reduce(s, { type: "alertUpdated", alert: alert(1, "acknowledged") });
    expect(s.alerts.get(1)!.status).toBe("acknowledged");
    // An older "open" copy (a list read before the ack) does not undo it.
    s = reduce(s, { type: "alerts", alerts: [alert(1, "open")] });
    expect(s.alerts.get(1)!.status).toBe("acknowledged");
    s = apply(s, { type: "alert", alert: alert(1, "resolved") });
    expect(s.alerts.has(1)).toBe(false);
  });

  it("alerts loaded over REST raise no toast", () => {
    const s = reduce(initialState(), { type: "alerts", alerts: [alert(1, "open")] });
    expect(s.alerts.size).toBe(1);
    expect(s.newAlerts).toEqual([]);
  });
});

describe("charts", () => {
  it("live events extend the history in event order without repeating a point", () => {
    const points = [
      { at: "2026-11-29T10:00:01.000000Z", value: 20, version: 1, event_id: 10 },
      { at: "2026-11-29T10:00:02.000000Z", value: 19, version: 2, event_id: 11 },
    ];
    let s = reduce(initialState(), { type: "focus", sku: "A" });
    s = apply(s, live("A", 13, 4, 18, 4), live("A", 11, 2, 20, 19), live("A", 12, 3, 19, 18), live("B", 14, 2, 1, 0));
    const series = extendHistory(points, s.focusEvents, "stock");
    expect(series.map((p) => [p.event_id, p.value])).toEqual([
      [10, 20],
      [11, 19],
      [12, 18],
      [13, 4],
    ]);
    expect(extendHistory(points, s.focusEvents, "price")).toHaveLength(2);
  });
});

describe("catalog rows", () => {
  const skus = new Map(
    [sku("C", 3, 0), sku("A", 1, 25), sku("B", 2, 5), sku("D", 4, 12)].map((s) => [s.sku, s] as const),
  );
  it("filters below threshold and out of stock", () => {
    const view = { query: "", sort: "sku" as const, descending: false };
    expect(selectRows(skus, { ...view, filter: "below" }).map((s) => s.sku)).toEqual(["B", "C"]);
    expect(selectRows(skus, { ...view, filter: "out" }).map((s) => s.sku)).toEqual(["C"]);
  });
  it("sorts by stock and by last change, and searches code and name", () => {
    const view = { query: "", filter: "all" as const };
    expect(selectRows(skus, { ...view, sort: "stock", descending: false }).map((s) => s.sku)).toEqual(["C", "B", "D", "A"]);
    expect(selectRows(skus, { ...view, sort: "updated", descending: true }).map((s) => s.sku)).toEqual(["D", "C", "B", "A"]);
    expect(selectRows(skus, { ...view, query: "item b", sort: "sku", descending: false }).map((s) => s.sku)).toEqual(["B"]);
  });
});

describe("a server whose history went back", () => {
  const notice = (code: string, newest: number): ServerMessage => ({
    type: "notice",
    code,
    newest_event_id: newest,
  });

  it("a cursor_ahead notice drops held states, so the snapshot after it is taken even at lower versions", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20), sku("B", 1, 50)));
    s = apply(s, live("A", 30, 9, 20, 3));
    expect(s.resumeAfter).toBe(30);
    s = reduce(s, { type: "messages", messages: [notice("cursor_ahead", 12), snapshot(12, sku("A", 4, 11))], now: 0 });
    expect(s.skus.get("A")!.stock).toBe(11);
    expect(s.skus.get("A")!.version).toBe(4);
    expect(s.skus.has("B")).toBe(false);
    expect(s.resumeAfter).toBe(12);
    expect(s.rebases).toBe(1);
  });

  it("cursor_unknown does the same; other notices change nothing", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 5, 20)));
    s = apply(s, notice("bus_down", 0));
    expect(s.skus.get("A")!.version).toBe(5);
    expect(s.rebases).toBe(0);
    s = apply(s, notice("cursor_unknown", 8));
    s = apply(s, snapshot(8, sku("A", 3, 7)));
    expect(s.skus.get("A")!.version).toBe(3);
    expect(s.rebases).toBe(1);
  });
});

/** A SKU as a server from before holds sends it: no `reserved`, no `available`. */
/** A SKU from a server before holds (and before the forecast, issue 18). */
function oldSku(code: string, version: number, stock: number): SkuJson {
  const { reserved: _r, available: _a, lead_time_days: _l, alert_rule: _ar, forecast: _f, ...rest } = sku(code, version, stock);
  return rest;
}

/** A `reserved` event: a hold placed (or released) with the stock unchanged. */
function held(code: string, eventId: number, version: number, stock: number, old: number, reserved: number, reason = "hold"): ServerMessage {
  return {
    type: "sku",
    event_id: eventId,
    sku: sku(code, version, stock, "2.55", reserved),
    change: {
      event_id: eventId,
      sku: code,
      version,
      at: `2026-11-29T10:00:${String(version).padStart(2, "0")}.000000Z`,
      field: "reserved",
      old,
      new: reserved,
      delta: reserved - old,
      reason,
      actor: "admin",
    },
  };
}

describe("reserved and available", () => {
  it("a SKU without them (a server from before holds) holds nothing: reserved 0, available = stock", () => {
    expect(normalizeSku(oldSku("A", 1, 20))).toMatchObject({ stock: 20, reserved: 0, available: 20 });
    // Nor the forecast's fields (issue 18): null, so nothing is shown for them.
    expect(normalizeSku(oldSku("A", 1, 20))).toMatchObject({ lead_time_days: null, alert_rule: null, forecast: null });
    // Whatever the path it comes by.
    let s = reduce(initialState(), { type: "catalog", skus: [oldSku("A", 1, 20)] });
    s = apply(s, snapshot(10, oldSku("B", 1, 5)));
    s = reduce(s, { type: "written", sku: oldSku("C", 1, 0), now: 1 });
    s = apply(s, { ...(live("D", 11, 2, 8, 7) as Extract<ServerMessage, { type: "sku" }>), sku: oldSku("D", 2, 7) });
    expect([...s.skus.values()].map((x) => [x.sku, x.reserved, x.available])).toEqual([
      ["A", 0, 20],
      ["B", 0, 5],
      ["C", 0, 0],
      ["D", 0, 7],
    ]);
  });

  it("a missing available is worked out from the reserved the server did send; nulls count as missing", () => {
    expect(normalizeSku({ ...oldSku("A", 1, 20), reserved: 3 })).toMatchObject({ reserved: 3, available: 17 });
    expect(normalizeSku({ ...oldSku("A", 1, 20), reserved: null, available: null })).toMatchObject({ reserved: 0, available: 20 });
  });

  it("the server's own values are kept, a negative available included", () => {
    const counted = { ...sku("A", 4, 1), reserved: 3, available: -2 };
    expect(normalizeSku(counted)).toBe(counted);
    const s = apply(initialState(), snapshot(10, counted));
    expect(s.skus.get("A")).toMatchObject({ stock: 1, reserved: 3, available: -2 });
    expect(isOut(s.skus.get("A")!)).toBe(true);
  });

  it("a hold changes reserved and available live, flashes the available cell, and is a focus event", () => {
    let s = reduce(initialState(), { type: "focus", sku: "A" });
    s = apply(s, snapshot(10, sku("A", 1, 20)));
    s = apply(s, held("A", 11, 2, 20, 0, 2));
    expect(s.skus.get("A")).toMatchObject({ stock: 20, reserved: 2, available: 18, version: 2 });
    expect(s.flashes.get("A")).toMatchObject({ field: "available", direction: "down", version: 2 });
    expect(s.focusEvents.map((e) => [e.field, e.old, e.new, e.reason])).toEqual([["reserved", 0, 2, "hold"]]);
    expect(s.resumeAfter).toBe(11);
    s = apply(s, held("A", 12, 3, 20, 2, 0, "hold_released"));
    expect(s.skus.get("A")).toMatchObject({ reserved: 0, available: 20 });
    expect(s.flashes.get("A")).toMatchObject({ field: "available", direction: "up", version: 3 });
    // The stock chart is not extended by holds.
    expect(extendHistory([], s.focusEvents, "stock")).toEqual([]);
  });

  it("a stock change still flashes the stock cell even though available moves with it", () => {
    let s = apply(initialState(), snapshot(10, sku("A", 1, 20, "2.55", 2)));
    s = apply(s, { ...(live("A", 11, 2, 20, 17) as Extract<ServerMessage, { type: "sku" }>), sku: sku("A", 2, 17, "2.55", 2) });
    expect(s.skus.get("A")).toMatchObject({ available: 15 });
    expect(s.flashes.get("A")).toMatchObject({ field: "stock", direction: "down" });
  });

  it("below threshold and out of stock are judged on available, like the server's alerts", () => {
    // Stock 12 over a threshold of 10, but 5 held: 7 can be sold.
    const heldBelow = sku("H", 1, 12, "2.55", 5);
    expect(isBelow(heldBelow)).toBe(true);
    expect(stockState(heldBelow)).toBe("below");
    const allHeld = sku("E", 1, 4, "2.55", 4);
    expect(stockState(allHeld)).toBe("out");
    const overHeld = sku("N", 1, 1, "2.55", 3);
    expect(overHeld.available).toBe(-2);
    expect(stockState(overHeld)).toBe("out");
    expect(stockState(sku("F", 1, 30, "2.55", 5))).toBe("");
    const skus = new Map([heldBelow, allHeld, overHeld, sku("F", 1, 30, "2.55", 5)].map((x) => [x.sku, x] as const));
    const view = { query: "", sort: "sku" as const, descending: false };
    expect(selectRows(skus, { ...view, filter: "below" }).map((x) => x.sku)).toEqual(["E", "H", "N"]);
    expect(selectRows(skus, { ...view, filter: "out" }).map((x) => x.sku)).toEqual(["E", "N"]);
    expect(selectRows(skus, { ...view, filter: "all", sort: "available" }).map((x) => x.sku)).toEqual(["N", "E", "H", "F"]);
  });
});
