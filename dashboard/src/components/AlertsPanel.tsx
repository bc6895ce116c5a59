import { useMemo, useState } from "react";
import { api, Problem } from "../api";
import { dispatch, useLive } from "../store";
import { navigate, skuPath } from "../router";
import type { Alert, Session } from "../types";
import { formatTime } from "./Catalog";

export const KIND_TEXT: Record<Alert["kind"], string> = {
  low_stock: "Low stock",
  out_of_stock: "Out of stock",
  price_anomaly: "Price anomaly",
  stockout_forecast: "Stock-out forecast",
};

/** A kind's label; one added to the API after this page was built reads as its code. */
export function kindText(kind: string): string {
  const known = (KIND_TEXT as Record<string, string>)[kind];
  if (known) return known;
  const words = kind.replace(/_/g, " ");
  return words.charAt(0).toUpperCase() + words.slice(1);
}

export function AlertsPanel({
  session,
  admin,
  onAcknowledged,
  totalOpen,
}: {
  session: Session;
  admin: boolean;
  onAcknowledged: () => void;
  /** All open alerts on the server (the panel holds the newest 500). */
  totalOpen: number | null;
}) {
  const alerts = useLive((s) => s.alerts);
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState<number | null>(null);
  // Newest first: raised_at, then id for alerts raised in the same microsecond.
  const sorted = useMemo(
    () =>
      [...alerts.values()].sort((a, b) =>
        a.raised_at === b.raised_at ? b.id - a.id : a.raised_at < b.raised_at ? 1 : -1,
      ),
    [alerts],
  );
  const open = sorted.filter((a) => a.status === "open").length;

  async function acknowledge(alert: Alert) {
    setBusy(alert.id);
    setError(null);
    try {
      dispatch({ type: "alertUpdated", alert: await api.acknowledge(session.token, alert.id) });
      onAcknowledged();
    } catch (e) {
      setError(e instanceof Problem ? e.message : "Acknowledge failed.");
    } finally {
      setBusy(null);
    }
  }

  return (
    <aside id="alerts" className="alerts" aria-labelledby="alerts-title" tabIndex={-1}>
      <h2 id="alerts-title">
        Alerts{" "}
        <span className="muted" data-testid="alerts-open">
          {totalOpen != null && totalOpen > open ? `${open} newest of ${totalOpen.toLocaleString()} open` : `${open} open`}
        </span>
      </h2>
      {error && (
        <p className="field-error" role="alert">
          {error}
        </p>
      )}
      {sorted.length === 0 ? (
        <p className="muted">No open alerts.</p>
      ) : (
        <ul className="alert-list" data-testid="alert-list">
          {sorted.slice(0, 300).map((alert) => (
            <li key={alert.id} className={`alert-item ${alert.kind} ${alert.status}`} data-alert-id={alert.id} data-status={alert.status}>
              <div className="alert-head">
                <span className={`kind ${alert.kind}`} data-testid="alert-kind">{kindText(alert.kind)}</span>
                <a
                  href={skuPath(alert.sku)}
                  onClick={(e) => {
                    e.preventDefault();
                    navigate(skuPath(alert.sku));
                  }}
                >
                  {alert.sku}
                </a>
                <time dateTime={alert.raised_at}>{formatTime(alert.raised_at)}</time>
              </div>
              <p data-testid="alert-message">{alert.message}</p>
              {alert.status === "acknowledged" ? (
                <p className="muted">Acknowledged by {alert.acknowledged_by ?? "someone"}</p>
              ) : (
                admin && (
                  <button
                    type="button"
                    onClick={() => void acknowledge(alert)}
                    disabled={busy === alert.id}
                    aria-label={`Acknowledge ${kindText(alert.kind).toLowerCase()} alert for ${alert.sku}`}
                  >
                    Acknowledge
                  </button>
                )
              )}
            </li>
          ))}
        </ul>
      )}
      {sorted.length > 300 && <p className="muted">Showing the newest 300 of {sorted.length}.</p>}
    </aside>
  );
}
