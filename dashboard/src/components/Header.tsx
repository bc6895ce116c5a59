import type { Connection } from "../live";
import type { Filter } from "../state";
import type { Session, Summary } from "../types";
import { navigate, WEBHOOKS_PATH } from "../router";

const CONNECTION_TEXT: Record<Connection, string> = {
  connecting: "Connecting",
  live: "Live",
  reconnecting: "Reconnecting",
  offline: "Offline",
  forbidden: "Live view closed",
};

export function Header({
  session,
  connection,
  summary,
  page,
  onFilter,
  onLogout,
}: {
  session: Session;
  connection: Connection;
  summary: Summary | null;
  /** Which page is open, for the links' `aria-current`. */
  page: "catalog" | "sku" | "webhooks";
  onFilter: (f: Filter) => void;
  onLogout: () => void;
}) {
  const open = summary ? Object.values(summary.open_alerts).reduce((a, b) => a + b, 0) : null;
  const fmt = (n: number | null | undefined) => (n == null ? "–" : n.toLocaleString());
  return (
    <header className="top">
      <a
        className="brand"
        href="/"
        onClick={(e) => {
          e.preventDefault();
          navigate("/");
        }}
      >
        skuwatch
      </a>
      {session.role === "admin" && (
        <nav className="pages" aria-label="Admin pages">
          <a
            href={WEBHOOKS_PATH}
            aria-current={page === "webhooks" ? "page" : undefined}
            onClick={(e) => {
              e.preventDefault();
              navigate(WEBHOOKS_PATH);
            }}
          >
            Webhooks
          </a>
        </nav>
      )}
      <nav className="counts" aria-label="Catalog counts">
        <button type="button" className="count warn" onClick={() => onFilter("below")} data-testid="count-below">
          <span className="n">{fmt(summary?.below_threshold)}</span> below threshold
        </button>
        <button type="button" className="count bad" onClick={() => onFilter("out")} data-testid="count-out">
          <span className="n">{fmt(summary?.out_of_stock)}</span> out of stock
        </button>
        {summary?.days_of_cover && (
          <button
            type="button"
            className="count cover"
            onClick={() => onFilter("cover")}
            data-testid="count-cover"
            title="SKUs whose days of cover are below their lead time: they run out before a delivery ordered now arrives"
          >
            <span className="n">{fmt(summary.days_of_cover.within_lead_time)}</span> within lead time
          </button>
        )}
        <a className="count alert" href="#alerts" data-testid="count-alerts">
          <span className="n">{fmt(open)}</span> open alerts
        </a>
      </nav>
      <div className={`connection ${connection}`} role="status" aria-live="polite" data-testid="connection">
        <span className="dot" aria-hidden="true" />
        {CONNECTION_TEXT[connection]}
      </div>
      <div className="user">
        <span>
          {session.username} <span className="role">({session.role})</span>
        </span>
        <button type="button" onClick={onLogout}>
          Log out
        </button>
      </div>
    </header>
  );
}
