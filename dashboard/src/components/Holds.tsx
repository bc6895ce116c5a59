import { useEffect, useMemo, useState } from "react";
import { api, HOLDS_LIMIT, Problem } from "../api";
import { useLive } from "../store";
import { formatCountdown, lastReservedChange, passedCount, visibleHolds } from "../holds";
import type { Hold } from "../types";
import { formatTime } from "./Catalog";

/**
 * The SKU's active holds (`GET /api/v1/holds?sku=…&status=active`), each
 * with a countdown to its expiry. Read again whenever a `reserved` event of
 * the SKU arrives (a hold placed, released, expired or committed), when the
 * reserved count changes (a conflated message may carry another change), and
 * when a listed hold's time runs out (it may have been extended). A server
 * that refuses the list (403) or has none (404) gets no section at all.
 *
 * Mount it with `key={code}` so another SKU starts from an empty list.
 */
export function Holds({ code, token, reserved }: { code: string; token: string; reserved: number }) {
  const lastEvent = useLive((s) => lastReservedChange(s.focusEvents, code));
  const [holds, setHolds] = useState<Hold[] | null>(null);
  /** The server has more than one page of them. */
  const [more, setMore] = useState(false);
  const [hidden, setHidden] = useState(false);
  const [failed, setFailed] = useState(false);
  const [now, setNow] = useState(Date.now);
  const passed = holds ? passedCount(holds, now) : 0;

  useEffect(() => {
    // Only the newest request's answer is applied: an older one may finish later.
    let cancelled = false;
    api.activeHolds(token, code).then(
      (page) => {
        if (cancelled) return;
        setHolds(page.items);
        setMore(page.next_cursor != null);
        setNow(Date.now());
        setHidden(false);
        setFailed(false);
      },
      (e) => {
        if (cancelled) return;
        if (e instanceof Problem && (e.status === 403 || e.status === 404)) setHidden(true);
        else setFailed(true);
      },
    );
    return () => {
      cancelled = true;
    };
  }, [code, token, lastEvent, reserved, passed]);

  // The countdowns tick once a second while there is something to count.
  const ticking = !!holds && holds.length > passed;
  useEffect(() => {
    if (!ticking) return;
    const timer = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(timer);
  }, [ticking]);

  const rows = useMemo(() => (holds ? visibleHolds(holds, code, now) : []), [holds, code, now]);

  if (hidden) return null;
  return (
    <section className="card holds" aria-labelledby="holds-title" data-testid="holds">
      <h2 id="holds-title">Active holds</h2>
      {failed && (
        <p className="field-error" role="alert">
          {holds ? "Could not refresh the holds; showing the last list read." : "Could not load the holds."}
        </p>
      )}
      {holds === null ? (
        !failed && (
          <p className="muted" role="status">
            Loading holds…
          </p>
        )
      ) : rows.length === 0 ? (
        <p className="muted" data-testid="no-holds">
          No active holds
        </p>
      ) : (
        <table className="hold-table">
          <thead>
            <tr>
              <th scope="col" className="c-num">
                Quantity
              </th>
              <th scope="col">Reference</th>
              <th scope="col" className="c-when">
                Created
              </th>
              <th scope="col" className="c-when">
                Expires
              </th>
            </tr>
          </thead>
          <tbody>
            {rows.map((hold) => (
              <tr key={hold.id} data-hold-id={hold.id}>
                <td className="c-num" data-testid="hold-quantity">
                  {hold.quantity.toLocaleString()}
                </td>
                <td data-testid="hold-reference" title={`Hold ${hold.id}`}>
                  {hold.reference ?? <span className="muted">none</span>}
                </td>
                <td>
                  <time dateTime={hold.created_at}>{formatTime(hold.created_at)}</time>
                </td>
                <td data-testid="hold-expires">
                  <time dateTime={hold.expires_at} title={formatTime(hold.expires_at)}>
                    {formatCountdown(hold.remaining)}
                  </time>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {more && <p className="muted">Only the first {HOLDS_LIMIT} active holds are listed.</p>}
    </section>
  );
}
