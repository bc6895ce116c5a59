import { useEffect, useState } from "react";
import { dispatch, useLive } from "../store";
import type { Alert } from "../types";
import { kindText } from "./AlertsPanel";

/** How long a toast stays (ms); it can be closed sooner. */
const TOAST_MS = 8000;
/** At most this many at once: a burst of alerts must not cover the page;
 * the rest are counted in one line pointing at the panel. */
const MAX_TOASTS = 3;

export function Toasts() {
  const incoming = useLive((s) => s.newAlerts);
  const [shown, setShown] = useState<Alert[]>([]);
  const [more, setMore] = useState(0);

  useEffect(() => {
    if (incoming.length === 0) return;
    const all = [...incoming.slice().reverse(), ...shown];
    setShown(all.slice(0, MAX_TOASTS));
    setMore((m) => m + Math.max(0, all.length - MAX_TOASTS));
    dispatch({ type: "toastsShown", ids: incoming.map((a) => a.id) });
    const ids = incoming.map((a) => a.id);
    setTimeout(() => {
      setShown((s) => s.filter((a) => !ids.includes(a.id)));
      setMore(0);
    }, TOAST_MS);
  }, [incoming]);

  return (
    <div className="toasts" role="status" aria-live="polite" aria-label="New alerts">
      {shown.map((alert) => (
        <div key={alert.id} className={`toast ${alert.kind}`} data-testid="toast">
          <strong>
            {kindText(alert.kind)}: {alert.sku}
          </strong>
          <span>{alert.message}</span>
          <button
            type="button"
            aria-label="Dismiss"
            onClick={() => setShown((s) => s.filter((a) => a.id !== alert.id))}
          >
            ×
          </button>
        </div>
      ))}
      {more > 0 && (
        <div className="toast more">
          <span>
            and {more} more new alert{more === 1 ? "" : "s"}: see <a href="#alerts">Alerts</a>
          </span>
          <button type="button" aria-label="Dismiss" onClick={() => setMore(0)}>
            ×
          </button>
        </div>
      )}
    </div>
  );
}
