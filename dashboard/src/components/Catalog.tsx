import { useEffect, useMemo, useRef, useState, type KeyboardEvent } from "react";
import { useLive } from "../store";
import { type Filter, type Flash, type SortKey, selectRows, stockState } from "../state";
import { formatMoney } from "../money";
import { describeCover, formatCover, isCoverShort } from "../cover";
import { navigate, skuPath } from "../router";
import type { Sku } from "../types";

/** Fixed row height (px): the virtualiser's whole model is index * ROW. */
const ROW = 36;
/** Rows rendered above and below the viewport, so fast scrolling shows no gap. */
const OVERSCAN = 8;
/** How long a changed cell stays highlighted (ms); the CSS animation matches. */
const FLASH_MS = 1600;

export function Catalog({
  loaded,
  filter,
  onFilter,
  onVisible,
}: {
  loaded: { count: number; done: boolean };
  filter: Filter;
  onFilter: (f: Filter) => void;
  onVisible: (skus: string[]) => void;
}) {
  const skus = useLive((s) => s.skus);
  const flashes = useLive((s) => s.flashes);
  const [query, setQuery] = useState("");
  const [sort, setSort] = useState<SortKey>("sku");
  const [descending, setDescending] = useState(false);
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const [active, setActive] = useState(0);
  const scroller = useRef<HTMLDivElement>(null);
  // Re-render once a second so highlights and arrows of past changes clear.
  const [, setTick] = useState(0);
  useEffect(() => {
    const timer = setInterval(() => setTick((t) => t + 1), 1000);
    return () => clearInterval(timer);
  }, []);

  const rows = useMemo(
    () => selectRows(skus, { query, filter, sort, descending }),
    [skus, query, filter, sort, descending],
  );

  useEffect(() => {
    const el = scroller.current;
    if (!el) return;
    const observer = new ResizeObserver(() => setHeight(el.clientHeight));
    observer.observe(el);
    setHeight(el.clientHeight);
    return () => observer.disconnect();
  }, []);

  // A new filter or sort starts at the top; a shorter list never leaves the
  // window past its end.
  useEffect(() => {
    if (scroller.current) scroller.current.scrollTop = 0;
    setScrollTop(0);
  }, [query, filter, sort, descending]);
  const top = Math.min(scrollTop, Math.max(0, rows.length * ROW - height));
  const first = Math.max(0, Math.floor(top / ROW) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((top + height) / ROW) + OVERSCAN);
  const visible = rows.slice(first, last);
  // One row is in the tab order: the active one, or the first on screen when
  // the active one has scrolled away (so Tab always lands in the table).
  const tabbable = active >= first && active < last ? active : Math.min(rows.length - 1, Math.floor(top / ROW));
  const visibleKey = visible.map((r) => r.sku).join("\u0000");

  // Subscribe to what is on screen, once scrolling settles.
  useEffect(() => {
    const timer = setTimeout(() => onVisible(visibleKey ? visibleKey.split("\u0000") : []), 120);
    return () => clearTimeout(timer);
  }, [visibleKey, onVisible]);

  useEffect(() => {
    setActive((a) => Math.min(a, Math.max(0, rows.length - 1)));
  }, [rows.length]);

  function moveTo(index: number) {
    const i = Math.max(0, Math.min(rows.length - 1, index));
    setActive(i);
    const el = scroller.current;
    if (!el) return;
    // The header row is sticky: keep the active row below it.
    const top = i * ROW;
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + ROW * 2 > el.scrollTop + el.clientHeight) el.scrollTop = top + ROW * 2 - el.clientHeight;
    requestAnimationFrame(() =>
      el.querySelector<HTMLElement>(`tr[data-index="${i}"]`)?.focus({ preventScroll: true }),
    );
  }

  function onKeyDown(event: KeyboardEvent<HTMLDivElement>) {
    const page = Math.max(1, Math.floor(height / ROW) - 1);
    const moves: Record<string, number> = {
      ArrowDown: active + 1,
      ArrowUp: active - 1,
      PageDown: active + page,
      PageUp: active - page,
      Home: 0,
      End: rows.length - 1,
    };
    if (event.key in moves && (event.target as HTMLElement).tagName === "TR") {
      event.preventDefault();
      moveTo(moves[event.key]);
    } else if (event.key === "Enter" && (event.target as HTMLElement).tagName === "TR") {
      const row = rows[active];
      if (row) navigate(skuPath(row.sku));
    }
  }

  function sortBy(key: SortKey) {
    if (key === sort) setDescending(!descending);
    else {
      setSort(key);
      // Codes and days of cover read lowest first (the SKUs that run out
      // soonest on top); quantities and times highest first.
      setDescending(key !== "sku" && key !== "cover");
    }
  }

  const ariaSort = (key: SortKey) =>
    sort === key ? (descending ? "descending" : "ascending") : ("none" as const);
  const now = Date.now();

  return (
    <section className="catalog" aria-labelledby="catalog-title">
      <div className="toolbar">
        <h1 id="catalog-title">Catalog</h1>
        <label className="search">
          <span>Search</span>
          <input
            type="search"
            placeholder="SKU or name"
            value={query}
            onChange={(e) => setQuery(e.target.value)}
            data-testid="search"
          />
        </label>
        <fieldset className="filters">
          <legend>Show</legend>
          {(
            [
              ["all", "All"],
              ["below", "Below threshold"],
              ["out", "Out of stock"],
              ["cover", "Cover below lead time"],
            ] as [Filter, string][]
          ).map(([value, label]) => (
            <label key={value}>
              <input
                type="radio"
                name="filter"
                value={value}
                checked={filter === value}
                onChange={() => onFilter(value)}
              />
              {label}
            </label>
          ))}
        </fieldset>
        <p className="muted" role="status" data-testid="row-count">
          {rows.length.toLocaleString()} of {skus.size.toLocaleString()} SKUs
          {!loaded.done && ` (loading… ${loaded.count.toLocaleString()})`}
        </p>
      </div>
      <div
        className="table-scroll"
        ref={scroller}
        onScroll={(e) => setScrollTop(e.currentTarget.scrollTop)}
        onKeyDown={onKeyDown}
        data-testid="table-scroll"
      >
        <table aria-rowcount={rows.length + 1} aria-labelledby="catalog-title">
          <thead>
            <tr aria-rowindex={1}>
              <th scope="col" aria-sort={ariaSort("sku")} className="c-sku">
                <button type="button" onClick={() => sortBy("sku")}>
                  SKU {sortMark(sort === "sku", descending)}
                </button>
              </th>
              <th scope="col" className="c-name">
                Name
              </th>
              <th scope="col" className="c-num">
                Price
              </th>
              <th scope="col" aria-sort={ariaSort("stock")} className="c-num c-qty">
                <button type="button" onClick={() => sortBy("stock")}>
                  Stock {sortMark(sort === "stock", descending)}
                </button>
              </th>
              <th scope="col" className="c-num c-qty">
                Reserved
              </th>
              <th scope="col" aria-sort={ariaSort("available")} className="c-num c-avail">
                <button type="button" onClick={() => sortBy("available")}>
                  Available {sortMark(sort === "available", descending)}
                </button>
              </th>
              <th scope="col" aria-sort={ariaSort("cover")} className="c-num c-cover">
                <button type="button" onClick={() => sortBy("cover")} title="Days until available runs out at the recent sales rate; ⚠ below the SKU's lead time; no forecast sorts last">
                  Days of cover {sortMark(sort === "cover", descending)}
                </button>
              </th>
              <th scope="col" className="c-num c-thr">
                Threshold
              </th>
              <th scope="col" aria-sort={ariaSort("updated")} className="c-time">
                <button type="button" onClick={() => sortBy("updated")}>
                  Last change {sortMark(sort === "updated", descending)}
                </button>
              </th>
            </tr>
          </thead>
          <tbody>
            {first > 0 && <tr className="spacer" style={{ height: first * ROW }} aria-hidden="true" />}
            {visible.map((sku, i) => (
              <Row
                key={sku.sku}
                sku={sku}
                index={first + i}
                active={first + i === tabbable}
                flash={flashes.get(sku.sku)}
                now={now}
                onFocus={() => setActive(first + i)}
              />
            ))}
            {last < rows.length && (
              <tr className="spacer" style={{ height: (rows.length - last) * ROW }} aria-hidden="true" />
            )}
          </tbody>
        </table>
        {loaded.done && rows.length === 0 && <p className="empty">No SKU matches.</p>}
      </div>
    </section>
  );
}

function sortMark(on: boolean, descending: boolean) {
  return <span aria-hidden="true">{on ? (descending ? "▼" : "▲") : "↕"}</span>;
}

function Row({
  sku,
  index,
  active,
  flash,
  now,
  onFocus,
}: {
  sku: Sku;
  index: number;
  active: boolean;
  flash: Flash | undefined;
  now: number;
  onFocus: () => void;
}) {
  const fresh = flash && now - flash.at < FLASH_MS ? flash : undefined;
  const cls = (field: Flash["field"]) =>
    fresh?.field === field ? `flash flash-${fresh.direction}` : "";
  // Remounting the cell restarts its highlight for a second change.
  const key = (field: Flash["field"]) => `${field}${fresh?.field === field ? fresh.version : 0}`;
  const arrow = (field: Flash["field"]) =>
    fresh?.field === field ? (
      <span className={`dir dir-${fresh.direction}`}>
        <span aria-hidden="true">{fresh.direction === "up" ? "▲" : "▼"}</span>
        <span className="sr-only">{fresh.direction === "up" ? "increased" : "decreased"}</span>
      </span>
    ) : null;
  // Judged on `available`, as the server's alerts and filters are.
  const state = stockState(sku);
  return (
    <tr
      data-index={index}
      data-sku={sku.sku}
      aria-rowindex={index + 2}
      tabIndex={active ? 0 : -1}
      onFocus={onFocus}
      onClick={() => navigate(skuPath(sku.sku))}
      className={state}
    >
      <td className="c-sku">
        <a
          href={skuPath(sku.sku)}
          tabIndex={-1}
          onClick={(e) => {
            e.preventDefault();
          }}
        >
          {sku.sku}
        </a>
      </td>
      <td className="c-name" title={sku.name}>
        {sku.name}
      </td>
      <td className={`c-num ${cls("price")}`} key={key("price")} data-testid="price">
        {arrow("price")}
        {formatMoney(sku.price, sku.currency)}
      </td>
      <td className={`c-num c-qty ${cls("stock")}`} key={key("stock")} data-testid="stock" data-value={sku.stock}>
        {arrow("stock")}
        {sku.stock.toLocaleString()}
      </td>
      <td className="c-num c-qty" data-testid="reserved" data-value={sku.reserved}>
        {sku.reserved.toLocaleString()}
      </td>
      <td className={`c-num c-avail ${cls("available")}`} key={key("available")} data-testid="available" data-value={sku.available}>
        {arrow("available")}
        <Available sku={sku} />
        {state && <span className={`badge ${state}`}>{state === "out" ? "out" : "low"}</span>}
      </td>
      <Cover sku={sku} />
      <td className="c-num c-thr">{sku.low_stock_threshold}</td>
      <td className="c-time">
        <time dateTime={sku.updated_at}>{formatTime(sku.updated_at)}</time>
      </td>
    </tr>
  );
}

/** Days of cover, marked when below the lead time (the SKU runs out before a
 * delivery ordered now arrives); the numbers behind it on hover. */
function Cover({ sku }: { sku: Sku }) {
  const short = isCoverShort(sku);
  const why = describeCover(sku);
  return (
    <td
      className={`c-num c-cover${short ? " cover-short" : ""}`}
      data-testid="cover"
      data-value={sku.forecast?.days_of_cover ?? ""}
      data-short={short ? "true" : undefined}
      title={why ?? undefined}
    >
      {/* Marked as a negative available is: the column has no room for a badge. */}
      {short && <span aria-hidden="true">⚠ </span>}
      {formatCover(sku)}
      {short && <span className="sr-only"> (below the lead time of {sku.lead_time_days} days)</span>}
      {why && <span className="sr-only"> ({why})</span>}
    </td>
  );
}

/** `available`, marked when negative: more is held than a physical count
 * found, so some holds cannot all be filled. */
export function Available({ sku }: { sku: Sku }) {
  if (sku.available >= 0) return <>{sku.available.toLocaleString()}</>;
  const short = -sku.available;
  return (
    <span className="negative" title={`${short.toLocaleString()} more held than in stock`}>
      <span aria-hidden="true">⚠ </span>
      {sku.available.toLocaleString()}
      <span className="sr-only"> ({short.toLocaleString()} more held than in stock)</span>
    </span>
  );
}

export function formatTime(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  return d.toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
    hourCycle: "h23",
  });
}
