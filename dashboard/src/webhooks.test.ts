import { describe, expect, it } from "vitest";
import { fieldErrors, webhookDeliveriesPath, webhookPath } from "./api";
import {
  createBody,
  describeDelivery,
  describeDisabled,
  describeKinds,
  describeSkus,
  emptyForm,
  endpointState,
  formFieldOf,
  hasPending,
  parseSkus,
  splitErrors,
  toggled,
  upsert,
  WEBHOOK_EVENTS,
  withoutSecret,
  type WebhookForm,
} from "./webhooks";
import type { WebhookDelivery, WebhookEndpoint } from "./types";

const form = (over: Partial<WebhookForm> = {}): WebhookForm => ({ ...emptyForm(), url: "https://hooks.example.com/x", ...over });

function endpoint(id: string, over: Partial<WebhookEndpoint> = {}): WebhookEndpoint {
  return {
    id,
    url: `https://hooks.example.com/${id}`,
    description: null,
    events: ["alert.raised", "alert.acknowledged", "alert.resolved"],
    kinds: null,
    skus: null,
    format: "standard",
    enabled: true,
    disabled_reason: null,
    created_at: "2026-12-01T02:00:00.000000Z",
    updated_at: "2026-12-01T02:00:00.000000Z",
    secret_rotated_at: null,
    ...over,
  };
}

function delivery(over: Partial<WebhookDelivery> = {}): WebhookDelivery {
  return {
    id: "msg_1",
    type: "webhook.test",
    status: "delivered",
    attempts: 1,
    created_at: "2026-12-01T02:00:00.000000Z",
    last_attempt_at: "2026-12-01T02:00:00.000000Z",
    last_status_code: 204,
    last_error: null,
    next_attempt_at: null,
    alert_id: null,
    event_id: null,
    ...over,
  };
}

describe("the create form", () => {
  it("starts with the three alert events checked, sku.changed opt-in, every kind and SKU, standard format", () => {
    const f = emptyForm();
    expect(f.events).toEqual(["alert.raised", "alert.acknowledged", "alert.resolved"]);
    expect(f.events).not.toContain("sku.changed");
    expect(f.kinds).toEqual([]);
    expect(f.skus).toBe("");
    expect(f.format).toBe("standard");
  });

  it("sends the URL trimmed, the events in the API's order, no kinds or SKUs when none are chosen", () => {
    const result = createBody(form({ url: "  https://hooks.example.com/x  ", events: ["alert.resolved", "alert.raised"] }));
    expect(result.errors).toBeNull();
    expect(result.body).toEqual({
      url: "https://hooks.example.com/x",
      events: ["alert.raised", "alert.resolved"],
      format: "standard",
    });
  });

  it("sends the description, kinds, SKUs and format when given", () => {
    const result = createBody(
      form({
        description: "  Ops Slack ",
        events: [...WEBHOOK_EVENTS],
        kinds: ["stockout_forecast", "low_stock"],
        skus: " MUG-01, PLATE-2 ,,MUG-01\nBOWL-3 ",
        format: "slack",
      }),
    );
    expect(result.body).toEqual({
      url: "https://hooks.example.com/x",
      description: "Ops Slack",
      events: ["alert.raised", "alert.acknowledged", "alert.resolved", "sku.changed"],
      kinds: ["low_stock", "stockout_forecast"],
      skus: ["MUG-01", "PLATE-2", "BOWL-3"],
      format: "slack",
    });
  });

  it("refuses to send without a URL or an event, or with more SKUs than the API takes", () => {
    expect(createBody(form({ url: "  " })).errors).toEqual([{ field: "url", message: "Enter the receiver's URL." }]);
    expect(createBody(form({ events: [] })).errors).toEqual([{ field: "events", message: "Choose at least one event." }]);
    const many = Array.from({ length: 1001 }, (_, i) => `S-${i}`).join(",");
    expect(createBody(form({ skus: many })).errors).toEqual([{ field: "skus", message: "At most 1,000 SKUs (1,001 given)." }]);
    expect(createBody(form({ skus: many.split(",").slice(0, 1000).join(",") })).body?.skus).toHaveLength(1000);
  });

  it("leaves the URL's rules to the server: an http or private URL is sent as typed", () => {
    expect(createBody(form({ url: "http://127.0.0.1:9/hook" })).body?.url).toBe("http://127.0.0.1:9/hook");
  });

  it("reads the SKU list split on commas and line breaks, blanks and repeats dropped", () => {
    expect(parseSkus("")).toEqual([]);
    expect(parseSkus(" , ,\n")).toEqual([]);
    expect(parseSkus("A,B, A ,C")).toEqual(["A", "B", "C"]);
    expect(parseSkus("A\r\nB\nC")).toEqual(["A", "B", "C"]);
  });

  it("toggles a checkbox into its list in a fixed order", () => {
    expect(toggled(["alert.resolved"], "alert.raised", true, WEBHOOK_EVENTS)).toEqual(["alert.raised", "alert.resolved"]);
    expect(toggled(["alert.raised", "alert.resolved"], "alert.raised", false, WEBHOOK_EVENTS)).toEqual(["alert.resolved"]);
    expect(toggled(["alert.raised"], "alert.raised", true, WEBHOOK_EVENTS)).toEqual(["alert.raised"]);
  });
});

describe("problem documents on the form", () => {
  it("are read with the text under `message` (the API) or `reason` (the webhooks contract)", () => {
    expect(
      fieldErrors([
        { field: "url", message: "must be https" },
        { field: "skus[2]", reason: "not a SKU code" },
        { message: "no field" },
        null,
      ]),
    ).toEqual([
      { field: "url", message: "must be https" },
      { field: "skus[2]", message: "not a SKU code" },
      { field: "", message: "no field" },
      { field: "", message: "" },
    ]);
    expect(fieldErrors(undefined)).toEqual([]);
    expect(fieldErrors({ url: "x" })).toEqual([]);
  });

  it("name the form's fields however the server indexes them", () => {
    expect(formFieldOf("url")).toBe("url");
    expect(formFieldOf("skus[3]")).toBe("skus");
    expect(formFieldOf("skus.3")).toBe("skus");
    expect(formFieldOf("events[0]")).toBe("events");
    expect(formFieldOf("body.kinds")).toBe("kinds");
    expect(formFieldOf("secret")).toBeNull();
    expect(formFieldOf("")).toBeNull();
  });

  it("go next to their field, the first per field; the rest on one line", () => {
    const s = splitErrors([
      { field: "url", message: "a loopback address is not allowed" },
      { field: "url", message: "second" },
      { field: "skus[1]", message: "too long" },
      { field: "enabled", message: "not a boolean" },
      { field: "", message: "odd" },
    ]);
    expect(s.byField).toEqual({ url: "a loopback address is not allowed", skus: "too long" });
    expect(s.rest).toBe("enabled: not a boolean; odd");
    expect(splitErrors([]).rest).toBeNull();
  });
});

describe("an endpoint", () => {
  it("says plainly why it is disabled", () => {
    expect(describeDisabled("gone")).toBe("disabled: receiver answered 410 Gone");
    expect(describeDisabled("failing")).toBe("disabled: failing for 3 days");
    expect(describeDisabled("admin")).toBe("disabled by an admin");
    expect(describeDisabled(null)).toBe("disabled");
    expect(describeDisabled("quota")).toBe("disabled: quota");
    expect(endpointState(endpoint("a"))).toBe("enabled");
    expect(endpointState(endpoint("a", { enabled: false, disabled_reason: "gone" }))).toBe(
      "disabled: receiver answered 410 Gone",
    );
  });

  it("lists its filters, null meaning all", () => {
    const upper = (k: string) => k.toUpperCase();
    expect(describeKinds(null, upper)).toBe("all kinds");
    expect(describeKinds([], upper)).toBe("all kinds");
    expect(describeKinds(["low_stock", "out_of_stock"], upper)).toBe("LOW_STOCK, OUT_OF_STOCK");
    expect(describeSkus(null)).toBe("all SKUs");
    expect(describeSkus(["A", "B"])).toBe("A, B");
    expect(describeSkus(["A", "B", "C", "D"], 2)).toBe("A, B and 2 more");
    expect(describeSkus(Array.from({ length: 1000 }, (_, i) => `S${i}`), 1)).toBe("S0 and 999 more");
  });

  it("replaces its old self in the list, or comes first when new", () => {
    const list = [endpoint("b"), endpoint("a")];
    expect(upsert(list, endpoint("c")).map((e) => e.id)).toEqual(["c", "b", "a"]);
    const off = endpoint("a", { enabled: false, disabled_reason: "admin" });
    const next = upsert(list, off);
    expect(next.map((e) => e.id)).toEqual(["b", "a"]);
    expect(next[1]).toBe(off);
    expect(list[1].enabled).toBe(true);
  });

  it("goes into the list without its secret", () => {
    const created = { ...endpoint("a"), secret: "whsec_abc", previous_secret_expires_at: "2026-12-02T02:00:00Z" };
    const kept = withoutSecret(created);
    expect(kept).toEqual(endpoint("a"));
    expect(JSON.stringify(kept)).not.toContain("whsec_");
    expect(created.secret).toBe("whsec_abc");
  });

  it("is addressed by its id, percent-encoded", () => {
    expect(webhookPath("5f0c7a3e")).toBe("/webhooks/5f0c7a3e");
    expect(webhookPath("a/b")).toBe("/webhooks/a%2Fb");
    expect(webhookDeliveriesPath("5f0c7a3e")).toBe("/webhooks/5f0c7a3e/deliveries?limit=20");
    expect(webhookDeliveriesPath("5f0c7a3e", 50)).toBe("/webhooks/5f0c7a3e/deliveries?limit=50");
  });
});

describe("a delivery", () => {
  it("reads as its status with the code and the error", () => {
    expect(describeDelivery(delivery())).toBe("delivered (HTTP 204)");
    expect(describeDelivery(delivery({ status: "failed", last_status_code: 500, last_error: "HTTP 500" }))).toBe(
      "failed: HTTP 500",
    );
    expect(describeDelivery(delivery({ status: "failed", last_status_code: null, last_error: "connection refused" }))).toBe(
      "failed: connection refused",
    );
    expect(describeDelivery(delivery({ status: "failed", last_status_code: 502, last_error: "bad gateway page" }))).toBe(
      "failed: HTTP 502, bad gateway page",
    );
    expect(describeDelivery(delivery({ status: "failed", last_status_code: null, last_error: null }))).toBe("failed");
  });

  it("that is still pending says after how many attempts", () => {
    expect(describeDelivery(delivery({ status: "pending", attempts: 0, last_status_code: null, last_attempt_at: null }))).toBe(
      "pending",
    );
    expect(describeDelivery(delivery({ status: "pending", attempts: 2, last_status_code: 503, last_error: "HTTP 503" }))).toBe(
      "pending (HTTP 503), after 2 attempts",
    );
    expect(describeDelivery(delivery({ status: "pending", attempts: 1, last_status_code: null, last_error: "timed out" }))).toBe(
      "pending (timed out), after 1 attempt",
    );
  });

  it("sent in a digest or cancelled says so; an unknown status reads as its code", () => {
    expect(describeDelivery(delivery({ status: "digested", last_status_code: null }))).toBe("sent in a digest");
    expect(describeDelivery(delivery({ status: "cancelled", last_status_code: null, attempts: 0 }))).toBe("cancelled");
    expect(describeDelivery(delivery({ status: "parked" as WebhookDelivery["status"], last_status_code: null }))).toBe(
      "parked",
    );
  });

  it("keeps the list refreshing while any is pending", () => {
    expect(hasPending([])).toBe(false);
    expect(hasPending([delivery(), delivery({ status: "failed" })])).toBe(false);
    expect(hasPending([delivery(), delivery({ status: "pending" })])).toBe(true);
  });
});
