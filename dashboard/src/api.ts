// The REST calls the dashboard makes, with RFC 9457 problem documents turned
// into a `Problem` error the forms show next to the field they name.

import type {
  Alert,
  HistoryPoint,
  Hold,
  Role,
  SkuJson,
  Summary,
  WebhookCreate,
  WebhookDelivery,
  WebhookEndpoint,
  WebhookWithSecret,
} from "./types";

export interface FieldError {
  field: string;
  message: string;
}

export class Problem extends Error {
  constructor(
    readonly status: number,
    readonly type: string,
    readonly title: string,
    readonly detail: string,
    readonly errors: FieldError[],
  ) {
    super(detail || title);
  }

  /** The message for one field, if the server named it. */
  forField(field: string): string | undefined {
    return this.errors.find((e) => e.field === field)?.message;
  }
}

/** Called on any 401: the token expired or was revoked. */
let onUnauthorized: () => void = () => {};
export function setUnauthorizedHandler(handler: () => void) {
  onUnauthorized = handler;
}

async function request<T>(
  method: string,
  path: string,
  token: string | null,
  body?: unknown,
): Promise<T> {
  const headers: Record<string, string> = { accept: "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(`/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new Problem(0, "network", "Network error", "The server could not be reached.", []);
  }
  const text = await response.text();
  let json: unknown = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const p = (json ?? {}) as Partial<{ type: string; title: string; detail: string; errors: unknown }>;
    if (response.status === 401 && token) onUnauthorized();
    throw new Problem(
      response.status,
      p.type ?? "error",
      p.title ?? response.statusText,
      p.detail ?? "",
      fieldErrors(p.errors),
    );
  }
  return json as T;
}

/** A problem document's `errors` as field errors. The API names the text
 * `message`; the webhooks contract (issue 19) writes `reason`: either is read. */
export function fieldErrors(raw: unknown): FieldError[] {
  if (!Array.isArray(raw)) return [];
  return raw.map((e) => {
    const o = (e ?? {}) as { field?: unknown; message?: unknown; reason?: unknown };
    const text = typeof o.message === "string" ? o.message : typeof o.reason === "string" ? o.reason : "";
    return { field: typeof o.field === "string" ? o.field : "", message: text };
  });
}

export interface TokenResponse {
  access_token: string;
  token_type: string;
  expires_in: number;
  role: Role;
}

/** Most holds the SKU page lists (one page: a SKU rarely has more at once). */
export const HOLDS_LIMIT = 100;

/** The request for a SKU's active holds; the code is percent-encoded like a path segment. */
export function activeHoldsPath(code: string): string {
  return `/holds?sku=${encodeURIComponent(code)}&status=active&limit=${HOLDS_LIMIT}`;
}

/** The path of one webhook endpoint (ids are hex, encoded all the same). */
export function webhookPath(id: string): string {
  return `/webhooks/${encodeURIComponent(id)}`;
}

/** Most deliveries the Webhooks page lists for an endpoint. */
export const DELIVERIES_LIMIT = 20;

/** The request for an endpoint's newest deliveries. */
export function webhookDeliveriesPath(id: string, limit = DELIVERIES_LIMIT): string {
  return `${webhookPath(id)}/deliveries?limit=${limit}`;
}

export const api = {
  login: (username: string, password: string) =>
    request<TokenResponse>("POST", "/auth/token", null, { username, password }),

  /** One keyset page of the catalog (limit 1-1000). */
  skuPage: (token: string, cursor: string | null, limit = 1000) =>
    request<{ items: SkuJson[]; next_cursor: string | null }>(
      "GET",
      `/skus?limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      token,
    ),

  sku: (token: string, code: string) => request<SkuJson>("GET", `/skus/${encodeURIComponent(code)}`, token),

  /** The SKU's active holds, one page (holds.ts sorts them and drops the expired). */
  activeHolds: (token: string, code: string) =>
    request<{ items: Hold[]; next_cursor: string | null }>("GET", activeHoldsPath(code), token),

  history: (token: string, code: string, field: "stock" | "price", limit = 500) =>
    request<{ points: HistoryPoint[] }>(
      "GET",
      `/skus/${encodeURIComponent(code)}/history?field=${field}&limit=${limit}`,
      token,
    ),

  alerts: (token: string, status: "open" | "acknowledged", limit = 500) =>
    request<{ alerts: Alert[] }>("GET", `/alerts?status=${status}&limit=${limit}`, token),

  acknowledge: (token: string, id: number) => request<Alert>("POST", `/alerts/${id}/ack`, token),

  summary: (token: string) => request<Summary>("GET", "/summary", token),

  adjust: (token: string, code: string, delta: number, reason: string) =>
    request<{ sku: SkuJson; event_id: number }>(
      "POST",
      `/skus/${encodeURIComponent(code)}/stock/adjustments`,
      token,
      reason ? { delta, reason } : { delta },
    ),

  setPrice: (token: string, code: string, price: string, reason: string, confirm: boolean) =>
    request<SkuJson>("PUT", `/skus/${encodeURIComponent(code)}/price`, token, {
      price,
      ...(reason ? { reason } : {}),
      confirm,
    }),

  patch: (token: string, code: string, body: Record<string, unknown>) =>
    request<SkuJson>("PATCH", `/skus/${encodeURIComponent(code)}`, token, body),

  // Webhooks (issue 19), admins only.
  webhooks: (token: string) => request<{ webhooks: WebhookEndpoint[] }>("GET", "/webhooks", token),

  webhook: (token: string, id: string) => request<WebhookEndpoint>("GET", webhookPath(id), token),

  /** 201 with the signing secret, shown only here and by rotate-secret. */
  createWebhook: (token: string, body: WebhookCreate) =>
    request<WebhookWithSecret>("POST", "/webhooks", token, body),

  patchWebhook: (token: string, id: string, body: Partial<WebhookCreate>) =>
    request<WebhookEndpoint>("PATCH", webhookPath(id), token, body),

  deleteWebhook: (token: string, id: string) => request<null>("DELETE", webhookPath(id), token),

  /** A new secret; the old one keeps signing until `previous_secret_expires_at`. */
  rotateWebhookSecret: (token: string, id: string) =>
    request<WebhookWithSecret>("POST", `${webhookPath(id)}/rotate-secret`, token),

  /** One attempt at once, no retries: the delivery as it ended. */
  testWebhook: (token: string, id: string) => request<WebhookDelivery>("POST", `${webhookPath(id)}/test`, token),

  webhookDeliveries: (token: string, id: string, limit = DELIVERIES_LIMIT) =>
    request<{ deliveries: WebhookDelivery[] }>("GET", webhookDeliveriesPath(id, limit), token),
};

/** Loads the whole catalog page by page, reporting progress. */
export async function loadCatalog(
  token: string,
  onPage: (items: SkuJson[]) => void,
  signal: { cancelled: boolean },
): Promise<void> {
  let cursor: string | null = null;
  do {
    const page = await api.skuPage(token, cursor);
    if (signal.cancelled) return;
    onPage(page.items);
    cursor = page.next_cursor;
  } while (cursor);
}
