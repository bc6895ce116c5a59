// Shapes of /work/shared/API.md (and the README's Extensions).

export interface PriceGuard {
  max_change_pct: number | null;
  min_price?: string | null;
  max_price?: string | null;
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
  version: number;
  /** RFC 3339 UTC. */
  updated_at: string;
}

/** A SKU as the server sends it. A server from before holds (or a state
 * read from one) has no `reserved`/`available`; state.ts fills them in
 * (`normalizeSku`) before anything reads them. */
export type SkuJson = Omit<Sku, "reserved" | "available"> & {
  reserved?: number | null;
  available?: number | null;
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

export type AlertKind = "low_stock" | "out_of_stock" | "price_anomaly";
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

export interface Summary {
  skus: number;
  below_threshold: number;
  out_of_stock: number;
  open_alerts: Record<string, number>;
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
