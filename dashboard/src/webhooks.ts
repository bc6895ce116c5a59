// The Webhooks page (issue 19): the create form's body, and how endpoints and
// deliveries read. No I/O and no clock, so the rules are unit-tested
// (webhooks.test.ts).

import type { FieldError } from "./api";
import type {
  AlertKind,
  WebhookCreate,
  WebhookDelivery,
  WebhookDeliveryStatus,
  WebhookDisabledReason,
  WebhookEndpoint,
  WebhookEvent,
  WebhookFormat,
} from "./types";

/** Every event an endpoint can take, in the order the form lists them. */
export const WEBHOOK_EVENTS: readonly WebhookEvent[] = [
  "alert.raised",
  "alert.acknowledged",
  "alert.resolved",
  "sku.changed",
];

/** What a new endpoint is sent unless the admin chooses otherwise (the API's default). */
export const DEFAULT_EVENTS: readonly WebhookEvent[] = ["alert.raised", "alert.acknowledged", "alert.resolved"];

export const EVENT_TEXT: Record<WebhookEvent, string> = {
  "alert.raised": "Alert raised",
  "alert.acknowledged": "Alert acknowledged",
  "alert.resolved": "Alert resolved",
  "sku.changed": "SKU changed",
};

/** The alert kinds an endpoint can be narrowed to. */
export const WEBHOOK_KINDS: readonly AlertKind[] = ["low_stock", "out_of_stock", "price_anomaly", "stockout_forecast"];

export const FORMAT_TEXT: Record<WebhookFormat, string> = {
  standard: "Standard Webhooks (signed JSON)",
  slack: "Slack incoming webhook",
};

/** The most SKUs an endpoint may be narrowed to (the API's limit). */
export const MAX_SKUS = 1000;

/** What the create form holds, as typed. */
export interface WebhookForm {
  url: string;
  description: string;
  events: WebhookEvent[];
  /** None: every kind. */
  kinds: AlertKind[];
  /** Comma-separated codes; empty: every SKU. */
  skus: string;
  format: WebhookFormat;
}

export function emptyForm(): WebhookForm {
  return { url: "", description: "", events: [...DEFAULT_EVENTS], kinds: [], skus: "", format: "standard" };
}

/** `list` with `item` in (`on`) or out, in the order of `order`. */
export function toggled<T>(list: readonly T[], item: T, on: boolean, order: readonly T[]): T[] {
  const next = new Set(list);
  if (on) next.add(item);
  else next.delete(item);
  return order.filter((x) => next.has(x));
}

/**
 * The SKU codes of the form's list: split on commas (and line breaks, as a
 * pasted column has them), trimmed, blanks and repeats dropped, in the
 * order typed. A code holds no whitespace, so spaces around commas are
 * layout, not part of a code.
 */
export function parseSkus(raw: string): string[] {
  const seen = new Set<string>();
  for (const part of raw.split(/[,\n\r]+/)) {
    const code = part.trim();
    if (code) seen.add(code);
  }
  return [...seen];
}

/**
 * The body of `POST /webhooks` from the form, or the field errors that keep
 * it from being sent. Only what the server cannot guess is checked here (a
 * URL at all, an event at all, the SKU limit); whether the URL is allowed is
 * the server's to say, next to the field. Empty kinds and SKUs are left out
 * (every kind, every SKU); the description only when there is one.
 */
export function createBody(form: WebhookForm): { body: WebhookCreate; errors: null } | { body: null; errors: FieldError[] } {
  const errors: FieldError[] = [];
  const url = form.url.trim();
  if (!url) errors.push({ field: "url", message: "Enter the receiver's URL." });
  const events = WEBHOOK_EVENTS.filter((e) => form.events.includes(e));
  if (events.length === 0) errors.push({ field: "events", message: "Choose at least one event." });
  const skus = parseSkus(form.skus);
  if (skus.length > MAX_SKUS) {
    errors.push({ field: "skus", message: `At most ${MAX_SKUS.toLocaleString("en-US")} SKUs (${skus.length.toLocaleString("en-US")} given).` });
  }
  if (errors.length) return { body: null, errors };
  const body: WebhookCreate = { url, events, format: form.format };
  const description = form.description.trim();
  if (description) body.description = description;
  const kinds = WEBHOOK_KINDS.filter((k) => form.kinds.includes(k));
  if (kinds.length) body.kinds = kinds;
  if (skus.length) body.skus = skus;
  return { body, errors: null };
}

/** The form fields a problem's errors can name. */
export const FORM_FIELDS = ["url", "description", "events", "kinds", "skus", "format"] as const;
export type FormField = (typeof FORM_FIELDS)[number];

/**
 * The form field a server error names: `skus[3]`, `skus.3`, `body.url` and
 * `url` all point at their field; null for anything else.
 */
export function formFieldOf(field: string): FormField | null {
  for (const part of field.split(".")) {
    const name = part.replace(/\[\d*\]$/, "");
    if ((FORM_FIELDS as readonly string[]).includes(name)) return name as FormField;
  }
  return null;
}

/** Field errors by form field (the first message of each), and the rest as one line. */
export function splitErrors(errors: FieldError[]): { byField: Partial<Record<FormField, string>>; rest: string | null } {
  const byField: Partial<Record<FormField, string>> = {};
  const rest: string[] = [];
  for (const e of errors) {
    const name = formFieldOf(e.field);
    if (name) byField[name] ??= e.message;
    else rest.push(e.field ? `${e.field}: ${e.message}` : e.message);
  }
  return { byField, rest: rest.length ? rest.join("; ") : null };
}

/** Why an endpoint is off, plainly; for an unknown reason, its code. */
export function describeDisabled(reason: WebhookDisabledReason | string | null): string {
  switch (reason) {
    case "gone":
      return "disabled: receiver answered 410 Gone";
    case "failing":
      return "disabled: failing for 3 days";
    case "admin":
      return "disabled by an admin";
    case null:
      return "disabled";
    default:
      return `disabled: ${reason}`;
  }
}

/** "enabled", or why not. */
export function endpointState(endpoint: Pick<WebhookEndpoint, "enabled" | "disabled_reason">): string {
  return endpoint.enabled ? "enabled" : describeDisabled(endpoint.disabled_reason);
}

/** Which alerts reach the endpoint: "all kinds", or the kinds by name. */
export function describeKinds(kinds: readonly string[] | null, text: (kind: string) => string): string {
  return kinds && kinds.length ? kinds.map(text).join(", ") : "all kinds";
}

/** Which SKUs: "all SKUs", the codes, or the first few and a count. */
export function describeSkus(skus: readonly string[] | null, shown = 5): string {
  if (!skus || skus.length === 0) return "all SKUs";
  if (skus.length <= shown) return skus.join(", ");
  return `${skus.slice(0, shown).join(", ")} and ${(skus.length - shown).toLocaleString("en-US")} more`;
}

export const DELIVERY_STATUS_TEXT: Record<WebhookDeliveryStatus, string> = {
  pending: "pending",
  delivered: "delivered",
  failed: "failed",
  digested: "sent in a digest",
  cancelled: "cancelled",
};

/** A status's label; one added to the API later reads as its code. */
export function deliveryStatusText(status: string): string {
  return (DELIVERY_STATUS_TEXT as Record<string, string>)[status] ?? status;
}

/** What a status means, for a tooltip. */
export function deliveryStatusHint(delivery: Pick<WebhookDelivery, "status" | "digest_id">): string {
  switch (delivery.status) {
    case "pending":
      return "Waiting for its next attempt";
    case "delivered":
      return "The receiver answered with a 2xx status";
    case "failed":
      return "Gave up after its last attempt";
    case "digested":
      return delivery.digest_id ? `Sent inside the alert.digest message ${delivery.digest_id}` : "Sent inside an alert.digest message";
    case "cancelled":
      return "Its endpoint was disabled or deleted before it was sent";
    default:
      return "";
  }
}

/**
 * One line on what became of a delivery: "delivered (HTTP 204)", "failed:
 * HTTP 500", "failed: connection refused", "pending (HTTP 503), attempt 2".
 * The status code and the error are shown when the server has them.
 */
export function describeDelivery(
  delivery: Pick<WebhookDelivery, "status" | "attempts" | "last_status_code" | "last_error">,
): string {
  const status = deliveryStatusText(delivery.status);
  const code = delivery.last_status_code != null ? `HTTP ${delivery.last_status_code}` : null;
  const error = delivery.last_error?.trim() || null;
  let text = status;
  if (delivery.status === "delivered") {
    if (code) text += ` (${code})`;
  } else if (error || code) {
    // The error usually restates the code ("HTTP 500"): say it once.
    const detail = error && code && !error.includes(String(delivery.last_status_code)) ? `${code}, ${error}` : (error ?? code);
    text += delivery.status === "failed" ? `: ${detail}` : ` (${detail})`;
  }
  if (delivery.status === "pending" && delivery.attempts > 0) {
    text += `, after ${delivery.attempts} attempt${delivery.attempts === 1 ? "" : "s"}`;
  }
  return text;
}

/** Whether any listed delivery can still change (the page then reads them again now and then). */
export function hasPending(deliveries: readonly Pick<WebhookDelivery, "status">[]): boolean {
  return deliveries.some((d) => d.status === "pending");
}

/** The endpoint list with `next` in place of the one with its id (or first, when new). */
export function upsert(list: readonly WebhookEndpoint[], next: WebhookEndpoint): WebhookEndpoint[] {
  const at = list.findIndex((e) => e.id === next.id);
  if (at < 0) return [next, ...list];
  const copy = list.slice();
  copy[at] = next;
  return copy;
}

/** An endpoint without its secret: the page keeps secrets out of the list,
 * so one is shown only where it was returned, once. */
export function withoutSecret(
  endpoint: WebhookEndpoint & { secret?: string; previous_secret_expires_at?: string | null },
): WebhookEndpoint {
  const { secret: _secret, previous_secret_expires_at: _expires, ...rest } = endpoint;
  return rest;
}
