// Shapes of /work/shared/API.md (and the README's Extensions).

export interface PriceGuard {
  max_change_pct: number | null;
  min_price?: string | null;
  max_price?: string | null;
}

/** Which rules raise a SKU's stock alerts (API.md, v1 additions). */
export type AlertRule = "threshold" | "forecast" | "both";

/**
 * A SKU's sales rate and projected stock-out (API.md, v1 additions; issue 18),
 * computed by the server as of the SKU's last event (`as_of`).
 */
export interface Forecast {
  /** Units sold a day, a decimal string with one place ("12.4"). */
  sales_per_day: string;
  /** The (weighted) number of sales the rate rests on. */
  based_on_sales: number;
  /** Days until `available` runs out at that rate ("3.1"); null with too few
   * sales, a rate of 0, or a cover beyond the server's horizon (365 days). */
  days_of_cover: string | null;
  /** RFC 3339 UTC; null when `days_of_cover` is. */
  stockout_at: string | null;
  /** RFC 3339 UTC: the time the forecast was computed for. */
  as_of: string;
}

export interface Sku {
  sku: string;
  name: string;
  currency: string;
  /** Decimal string in the currency's minor-unit precision. */
  price: string;
  stock: number;
  /** Units held by active holds (API.md, v1 additions). */
  reserved: number;
  /** `stock - reserved`: what can still be sold, and what low-stock alerts
   * look at. Negative when a physical count found fewer units than are held. */
  available: number;
  low_stock_threshold: number;
  price_guard: PriceGuard;
  /** Days a delivery ordered now takes; null from a server before issue 18. */
  lead_time_days: number | null;
  /** Null from a server before issue 18. */
  alert_rule: AlertRule | null;
  /** Null from a server before issue 18. */
  forecast: Forecast | null;
  version: number;
  /** RFC 3339 UTC. */
  updated_at: string;
}

/** A SKU as the server sends it. A server from before holds (or a state
 * read from one) has no `reserved`/`available`, one from before the
 * forecast (issue 18) none of its fields; state.ts fills them in
 * (`normalizeSku`) before anything reads them. */
export type SkuJson = Omit<Sku, "reserved" | "available" | "lead_time_days" | "alert_rule" | "forecast"> & {
  reserved?: number | null;
  available?: number | null;
  lead_time_days?: number | null;
  alert_rule?: AlertRule | null;
  forecast?: Forecast | null;
};

export interface SkuEvent {
  event_id: number;
  sku: string;
  version: number;
  at: string;
  /** `reserved`: a hold placed, released, expired or committed (reasons
   * `hold`, `hold_released`, `hold_expired`, `hold_committed`); `old`/`new`
   * are then the reserved counts. */
  field: "stock" | "price" | "meta" | "reserved";
  old: unknown;
  new: unknown;
  delta?: number | null;
  reason?: string | null;
  actor?: string | null;
}

export type HoldStatus = "active" | "released" | "expired" | "committed";

export interface HoldLine {
  sku: string;
  quantity: number;
}

/** A checkout's reservation of stock (API.md, v1 additions, Holds). */
export interface Hold {
  id: string;
  status: HoldStatus;
  lines: HoldLine[];
  reference: string | null;
  /** RFC 3339 UTC. */
  expires_at: string;
  created_at: string;
  ended_at?: string | null;
  event_ids?: number[];
}

/** `stockout_forecast`: the days of cover fell below the lead time; its
 * `value` is the cover ("3.1"), its `threshold` the lead time in days. */
export type AlertKind = "low_stock" | "out_of_stock" | "price_anomaly" | "stockout_forecast";
export type AlertStatus = "open" | "acknowledged" | "resolved";

export interface Alert {
  id: number;
  sku: string;
  kind: AlertKind;
  status: AlertStatus;
  message: string;
  value: unknown;
  threshold: unknown;
  raised_at: string;
  acknowledged_by: string | null;
  resolved_at: string | null;
}

export interface HistoryPoint {
  at: string;
  value: string | number;
  version: number;
  event_id: number;
  reason?: string | null;
}

/** SKUs by days of cover (`/summary`, issue 18). */
export interface CoverCounts {
  /** Cover below the SKU's own lead time. */
  within_lead_time: number;
  under_7: number;
  "7_to_30": number;
  "30_plus": number;
  no_forecast: number;
}

export interface Summary {
  skus: number;
  below_threshold: number;
  out_of_stock: number;
  open_alerts: Record<string, number>;
  /** Absent from a server before issue 18. */
  days_of_cover?: CoverCounts;
}

/** What a webhook endpoint can be sent (webhooks API, issue 19); the three
 * alert events are the default, `sku.changed` (every change) is opt-in. */
export type WebhookEvent = "alert.raised" | "alert.acknowledged" | "alert.resolved" | "sku.changed";
/** `standard`: Standard Webhooks (signed JSON); `slack`: a Slack incoming webhook's message. */
export type WebhookFormat = "standard" | "slack";
/** Why an endpoint is off: the receiver answered 410 (`gone`), it failed for
 * 3 days (`failing`), or an admin set `enabled: false` (`admin`). */
export type WebhookDisabledReason = "gone" | "failing" | "admin";

/** A webhook endpoint as every read returns it (never with its secret). */
export interface WebhookEndpoint {
  id: string;
  url: string;
  /** Empty (or null) when none was given. */
  description: string | null;
  events: WebhookEvent[];
  /** Null: every alert kind. */
  kinds: AlertKind[] | null;
  /** Null: every SKU. */
  skus: string[] | null;
  format: WebhookFormat;
  enabled: boolean;
  disabled_reason: WebhookDisabledReason | null;
  /** RFC 3339 UTC. */
  created_at: string;
  updated_at: string;
  secret_rotated_at: string | null;
}

/** The answer to a create (201) or a rotate-secret: the only reads with the
 * signing secret (`whsec_...`). */
export interface WebhookWithSecret extends WebhookEndpoint {
  secret: string;
  /** Rotate-secret only: until then the old secret signs too (24 h). */
  previous_secret_expires_at?: string | null;
}

/** The body of `POST /webhooks`; a PATCH takes any of these fields. */
export interface WebhookCreate {
  url: string;
  description?: string;
  events?: WebhookEvent[];
  kinds?: AlertKind[] | null;
  skus?: string[] | null;
  format?: WebhookFormat;
  enabled?: boolean;
}

export type WebhookDeliveryType = WebhookEvent | "alert.digest" | "webhook.test";
/** `pending`: waiting for its next attempt; `failed`: given up; `digested`:
 * sent inside an `alert.digest` message (`digest_id`); `cancelled`: its
 * endpoint was disabled or deleted. */
export type WebhookDeliveryStatus = "pending" | "delivered" | "failed" | "digested" | "cancelled";

/** One message to one endpoint, over all its attempts. */
export interface WebhookDelivery {
  /** The `webhook-id` header, the same on every retry. */
  id: string;
  type: WebhookDeliveryType;
  status: WebhookDeliveryStatus;
  attempts: number;
  created_at: string;
  last_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  next_attempt_at: string | null;
  alert_id: number | null;
  event_id: number | null;
  /** Only on `digested` deliveries. */
  digest_id?: string;
}

/** Server -> client WebSocket messages. */
export type ServerMessage =
  | { type: "authenticated" }
  | { type: "snapshot"; event_id: number; skus: SkuJson[] }
  | { type: "sku"; event_id: number; sku: SkuJson; change: SkuEvent; conflated?: boolean }
  | { type: "alert"; alert: Alert }
  | { type: "notice"; code: string; message?: string; newest_event_id?: number }
  | { type: "error"; code: string; message: string };

export type Role = "admin" | "viewer";

export interface Session {
  token: string;
  role: Role;
  username: string;
  /** Epoch milliseconds when the token stops being valid. */
  expiresAt: number;
}
