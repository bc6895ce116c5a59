import { useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";
import { api, Problem } from "../api";
import { dispatch, useLive } from "../store";
import { extendHistory, stockState } from "../state";
import { formatMoney, minorDigits } from "../money";
import { navigate } from "../router";
import { coverDays, describeCover, isCoverShort, noCoverReason, projection, withProjection } from "../cover";
import type { AlertRule, HistoryPoint, Session, Sku } from "../types";
import { Chart } from "./Chart";
import { Available, formatTime } from "./Catalog";
import { Holds } from "./Holds";
import { Changes } from "./Changes";

export function SkuDetail({ code, session, admin }: { code: string; session: Session; admin: boolean }) {
  const sku = useLive((s) => s.skus.get(code));
  const events = useLive((s) => s.focusEvents);
  const [missing, setMissing] = useState(false);
  const [history, setHistory] = useState<{ stock: HistoryPoint[]; price: HistoryPoint[] } | null>(null);

  useEffect(() => {
    let cancelled = false;
    setHistory(null);
    setMissing(false);
    api.sku(session.token, code).then(
      (s) => !cancelled && dispatch({ type: "written", sku: s, now: 0 }),
      (e) => !cancelled && e instanceof Problem && e.status === 404 && setMissing(true),
    );
    Promise.all([api.history(session.token, code, "stock"), api.history(session.token, code, "price")]).then(
      ([stock, price]) => !cancelled && setHistory({ stock: stock.points, price: price.points }),
      () => !cancelled && setHistory({ stock: [], price: [] }),
    );
    return () => {
      cancelled = true;
    };
  }, [code, session.token]);

  const series = useMemo(() => {
    if (!history) return null;
    const build = (field: "stock" | "price") => {
      const points = extendHistory(history[field], events, field);
      const xs = points.map((p) => Date.parse(p.at) / 1000);
      const ys = points.map((p) => Number(p.value));
      // The last value holds until now: extend the step to the present.
      if (xs.length) {
        xs.push(Math.max(xs[xs.length - 1], Date.now() / 1000));
        ys.push(ys[ys.length - 1]);
      }
      return { xs, ys };
    };
    return { stock: build("stock"), price: build("price") };
  }, [history, events]);

  // The projected fall of `available` to 0 (issue 18), on the stock chart.
  const projected = useMemo(() => {
    if (!series || !sku) return null;
    const line = projection(sku);
    return { line, ...withProjection(series.stock.xs, series.stock.ys, line) };
  }, [series, sku]);

  const back = (
    <a
      href="/"
      className="back"
      onClick={(e) => {
        e.preventDefault();
        navigate("/");
      }}
    >
      ← Catalog
    </a>
  );
  if (missing) {
    return (
      <section className="detail">
        {back}
        <h1>SKU {code} does not exist</h1>
      </section>
    );
  }
  if (!sku) {
    return (
      <section className="detail">
        {back}
        <p role="status">Loading {code}…</p>
      </section>
    );
  }
  const money = (v: number) => formatMoney(v.toFixed(minorDigits(sku.currency)), sku.currency);
  const guard = sku.price_guard;
  const state = stockState(sku);
  return (
    <section className="detail" aria-labelledby="detail-title">
      {back}
      <h1 id="detail-title">
        <span className="code">{sku.sku}</span> {sku.name}
      </h1>
      <dl className="facts">
        <Fact label="Price" testid="detail-price">
          {formatMoney(sku.price, sku.currency)}
        </Fact>
        <Fact label="Stock" testid="detail-stock" value={sku.stock}>
          {sku.stock.toLocaleString()}
        </Fact>
        <Fact label="Reserved" testid="detail-reserved" value={sku.reserved}>
          {sku.reserved.toLocaleString()}
        </Fact>
        <Fact label="Available" testid="detail-available" value={sku.available}>
          <Available sku={sku} />
          {state && <span className={`badge ${state}`}>{state === "out" ? "out" : "low"}</span>}
        </Fact>
        <Fact label="Low-stock threshold">{sku.low_stock_threshold}</Fact>
        <ForecastFacts sku={sku} />
        <Fact label="Price guard">
          {guard.max_change_pct != null ? `±${guard.max_change_pct}%` : "no change limit"}
          {guard.min_price ? `, min ${formatMoney(guard.min_price, sku.currency)}` : ""}
          {guard.max_price ? `, max ${formatMoney(guard.max_price, sku.currency)}` : ""}
        </Fact>
        <Fact label="Version">{sku.version}</Fact>
        <Fact label="Last change">
          <time dateTime={sku.updated_at}>{formatTime(sku.updated_at)}</time>
        </Fact>
      </dl>
      <div className="panels">
        <Holds key={sku.sku} code={sku.sku} token={session.token} reserved={sku.reserved} />
        <Changes events={events} code={sku.sku} currency={sku.currency} />
      </div>
      <div className="charts">
        {series ? (
          <>
            <Chart
              title="Stock"
              xs={projected?.xs ?? series.stock.xs}
              ys={projected?.ys ?? series.stock.ys}
              projected={projected?.projected ?? series.stock.xs.map(() => null)}
              format={(v) => v.toLocaleString()}
              legend={
                projected?.line && sku.forecast?.stockout_at ? (
                  <p
                    className="legend"
                    data-testid="projection"
                    data-from={projected.line.from.y}
                    data-stockout-at={sku.forecast.stockout_at}
                  >
                    <span className="swatch" aria-hidden="true" />
                    Projected: {projected.line.from.y.toLocaleString()} available →{" "}
                    0 by <time dateTime={sku.forecast.stockout_at}>{formatTime(sku.forecast.stockout_at)}</time>{" "}
                    at {sku.forecast.sales_per_day}/day
                  </p>
                ) : null
              }
            />
            <Chart title={`Price (${sku.currency})`} xs={series.price.xs} ys={series.price.ys} format={money} />
          </>
        ) : (
          <p role="status">Loading history…</p>
        )}
      </div>
      {admin ? (
        <div className="forms">
          <AdjustForm sku={sku} token={session.token} />
          <PriceForm sku={sku} token={session.token} />
          <SettingsForm sku={sku} token={session.token} />
          {sku.lead_time_days != null && sku.alert_rule != null && (
            <ForecastForm key={sku.sku} sku={sku} token={session.token} />
          )}
        </div>
      ) : (
        <p className="muted">Viewers see the catalog read-only; changes need an admin.</p>
      )}
    </section>
  );
}

export const ALERT_RULE_TEXT: Record<AlertRule, string> = {
  threshold: "Threshold only",
  forecast: "Forecast only",
  both: "Threshold and forecast",
};

const days = (n: number) => `${n.toLocaleString()} day${n === 1 ? "" : "s"}`;

/** The forecast's numbers, the lead time and the alert rule (issue 18);
 * nothing from a server without them. */
function ForecastFacts({ sku }: { sku: Sku }) {
  const f = sku.forecast;
  const short = isCoverShort(sku);
  const cover = coverDays(sku);
  return (
    <>
      {f && (
        <>
          <Fact label="Days of cover" testid="detail-cover" raw={f.days_of_cover ?? ""}>
            <span className={short ? "cover-short" : undefined} title={describeCover(sku) ?? undefined}>
              {cover === null ? "–" : `${f.days_of_cover} days`}
            </span>
            {short && <span className="badge short">below lead time</span>}
            {cover === null && <span className="hint"> {noCoverReason(f)}</span>}
          </Fact>
          <Fact label="Sales rate" testid="detail-rate" raw={f.sales_per_day}>
            {f.sales_per_day}/day{" "}
            <span className="hint">
              over {f.based_on_sales.toLocaleString()} sale{f.based_on_sales === 1 ? "" : "s"}
            </span>
          </Fact>
          <Fact label="Projected stock-out" testid="detail-stockout" raw={f.stockout_at ?? ""}>
            {f.stockout_at ? <time dateTime={f.stockout_at}>{formatTime(f.stockout_at)}</time> : "none"}{" "}
            <span className="hint">
              as of <time dateTime={f.as_of}>{formatTime(f.as_of)}</time>
            </span>
          </Fact>
        </>
      )}
      {sku.lead_time_days != null && (
        <Fact label="Lead time" testid="detail-lead-time" value={sku.lead_time_days}>
          {days(sku.lead_time_days)}
        </Fact>
      )}
      {sku.alert_rule != null && (
        <Fact label="Alert rule" testid="detail-alert-rule" raw={sku.alert_rule}>
          {ALERT_RULE_TEXT[sku.alert_rule] ?? sku.alert_rule}
        </Fact>
      )}
    </>
  );
}

function Fact({
  label,
  children,
  testid,
  value,
  raw,
}: {
  label: string;
  children: ReactNode;
  testid?: string;
  /** The raw number, for tests that should not parse formatted text. */
  value?: number;
  /** Or the raw string (a decimal, a time, a code). */
  raw?: string;
}) {
  return (
    <div>
      <dt>{label}</dt>
      <dd data-testid={testid} data-value={value ?? raw}>
        {children}
      </dd>
    </div>
  );
}

/** A labelled input with the server's message for its field beside it. */
export function Field({
  id,
  label,
  error,
  children,
  hint,
}: {
  id: string;
  label: string;
  error?: string;
  hint?: string;
  children: (props: { id: string; "aria-invalid": boolean; "aria-describedby"?: string }) => ReactNode;
}) {
  const described = [error ? `${id}-error` : null, hint ? `${id}-hint` : null].filter(Boolean).join(" ");
  return (
    <div className={`field ${error ? "invalid" : ""}`}>
      <label htmlFor={id}>{label}</label>
      {children({ id, "aria-invalid": !!error, "aria-describedby": described || undefined })}
      {hint && (
        <span id={`${id}-hint`} className="hint">
          {hint}
        </span>
      )}
      {error && (
        <span id={`${id}-error`} className="field-error" role="alert" data-testid={`${id}-error`}>
          {error}
        </span>
      )}
    </div>
  );
}

/** Field errors by name, and what the server said that names no field. */
function split(problem: Problem, fields: string[]): { byField: Record<string, string>; general: string | null } {
  const byField: Record<string, string> = {};
  const rest: string[] = [];
  for (const e of problem.errors) {
    const name = fields.find((f) => e.field === f || e.field.endsWith(`.${f}`));
    if (name) byField[name] = e.message;
    else rest.push(e.field ? `${e.field}: ${e.message}` : e.message);
  }
  const general = rest.length ? rest.join("; ") : Object.keys(byField).length ? null : problem.message;
  return { byField, general };
}

function Outcome({ general, ok, id }: { general: string | null; ok: string | null; id: string }) {
  if (general)
    return (
      <p className="field-error" role="alert" data-testid={`${id}-general`}>
        {general}
      </p>
    );
  if (ok)
    return (
      <p className="ok" role="status">
        {ok}
      </p>
    );
  return null;
}

function AdjustForm({ sku, token }: { sku: Sku; token: string }) {
  const [delta, setDelta] = useState("");
  const [reason, setReason] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [ok, setOk] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setErrors({});
    setGeneral(null);
    setOk(null);
    const n = Number(delta);
    if (!Number.isInteger(n) || n === 0) {
      setErrors({ delta: "Enter a whole number other than 0 (negative takes stock out)." });
      return;
    }
    setBusy(true);
    try {
      const result = await api.adjust(token, sku.sku, n, reason);
      dispatch({ type: "written", sku: result.sku, now: Date.now() });
      setOk(`Stock is now ${result.sku.stock} (event ${result.event_id}).`);
      setDelta("");
    } catch (e) {
      if (e instanceof Problem) {
        const s = split(e, ["delta", "reason"]);
        setErrors(s.byField);
        setGeneral(s.general);
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card" onSubmit={submit} aria-labelledby="adjust-title" noValidate>
      <h2 id="adjust-title">Adjust stock</h2>
      <Field id="delta" label="Change (+ in, − out)" error={errors.delta}>
        {(p) => <input {...p} inputMode="numeric" value={delta} onChange={(e) => setDelta(e.target.value)} />}
      </Field>
      <Field id="adjust-reason" label="Reason" error={errors.reason}>
        {(p) => <input {...p} value={reason} placeholder="cycle_count" onChange={(e) => setReason(e.target.value)} />}
      </Field>
      <button type="submit" className="primary" disabled={busy}>
        Apply
      </button>
      <Outcome general={general} ok={ok} id="adjust" />
    </form>
  );
}

function PriceForm({ sku, token }: { sku: Sku; token: string }) {
  const [price, setPrice] = useState("");
  const [reason, setReason] = useState("");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [guard, setGuard] = useState(false);
  const [ok, setOk] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function send(confirm: boolean) {
    setErrors({});
    setGeneral(null);
    setOk(null);
    setBusy(true);
    try {
      const next = await api.setPrice(token, sku.sku, price.trim(), reason, confirm);
      dispatch({ type: "written", sku: next, now: Date.now() });
      setOk(`Price is now ${formatMoney(next.price, next.currency)}${confirm ? " (confirmed outside the guard)" : ""}.`);
      setGuard(false);
      setPrice("");
    } catch (e) {
      if (e instanceof Problem) {
        const s = split(e, ["price", "reason", "confirm"]);
        // The price guard refuses with the reason on `price`; offer the
        // explicit confirmation the API asks for.
        if (e.type === "price_guard" && !s.byField.price) s.byField.price = e.message;
        setErrors(s.byField);
        setGeneral(e.type === "price_guard" ? null : s.general);
        setGuard(e.type === "price_guard");
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <form
      className="card"
      onSubmit={(e) => {
        e.preventDefault();
        void send(false);
      }}
      aria-labelledby="price-title"
      noValidate
    >
      <h2 id="price-title">Set price</h2>
      <Field
        id="price"
        label={`New price (${sku.currency})`}
        error={errors.price}
        hint={`Now ${formatMoney(sku.price, sku.currency)}`}
      >
        {(p) => (
          <input
            {...p}
            inputMode="decimal"
            value={price}
            onChange={(e) => {
              setPrice(e.target.value);
              setGuard(false);
            }}
          />
        )}
      </Field>
      <Field id="price-reason" label="Reason" error={errors.reason}>
        {(p) => <input {...p} value={reason} placeholder="promo" onChange={(e) => setReason(e.target.value)} />}
      </Field>
      <div className="actions">
        <button type="submit" className="primary" disabled={busy || !price.trim()}>
          Set price
        </button>
        {guard && (
          <button type="button" className="danger" disabled={busy} onClick={() => void send(true)} data-testid="confirm-price">
            Confirm outside the guard
          </button>
        )}
      </div>
      <Outcome general={general} ok={ok} id="price" />
    </form>
  );
}

function SettingsForm({ sku, token }: { sku: Sku; token: string }) {
  const [threshold, setThreshold] = useState(String(sku.low_stock_threshold));
  const [pct, setPct] = useState(sku.price_guard.max_change_pct == null ? "" : String(sku.price_guard.max_change_pct));
  const [min, setMin] = useState(sku.price_guard.min_price ?? "");
  const [max, setMax] = useState(sku.price_guard.max_price ?? "");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [ok, setOk] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setErrors({});
    setGeneral(null);
    setOk(null);
    setBusy(true);
    const number = (s: string) => (s.trim() === "" || Number.isNaN(Number(s)) ? s.trim() || null : Number(s));
    try {
      const next = await api.patch(token, sku.sku, {
        low_stock_threshold: number(threshold),
        price_guard: {
          max_change_pct: number(pct),
          min_price: min.trim() || null,
          max_price: max.trim() || null,
        },
      });
      dispatch({ type: "written", sku: next, now: Date.now() });
      setOk("Saved.");
    } catch (e) {
      if (e instanceof Problem) {
        const s = split(e, ["low_stock_threshold", "max_change_pct", "min_price", "max_price"]);
        setErrors(s.byField);
        setGeneral(s.general);
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card" onSubmit={submit} aria-labelledby="settings-title" noValidate>
      <h2 id="settings-title">Threshold and price guard</h2>
      <Field id="low_stock_threshold" label="Low-stock threshold" error={errors.low_stock_threshold}>
        {(p) => <input {...p} inputMode="numeric" value={threshold} onChange={(e) => setThreshold(e.target.value)} />}
      </Field>
      <Field id="max_change_pct" label="Largest change without confirmation (%)" error={errors.max_change_pct}>
        {(p) => <input {...p} inputMode="numeric" value={pct} onChange={(e) => setPct(e.target.value)} />}
      </Field>
      <Field id="min_price" label={`Lowest price (${sku.currency})`} error={errors.min_price}>
        {(p) => <input {...p} inputMode="decimal" value={min} onChange={(e) => setMin(e.target.value)} />}
      </Field>
      <Field id="max_price" label={`Highest price (${sku.currency})`} error={errors.max_price}>
        {(p) => <input {...p} inputMode="decimal" value={max} onChange={(e) => setMax(e.target.value)} />}
      </Field>
      <button type="submit" className="primary" disabled={busy}>
        Save
      </button>
      <Outcome general={general} ok={ok} id="settings" />
    </form>
  );
}

/** Lead time and alert rule (issue 18), PATCHed on their own: a server
 * before them refuses unknown fields, and the other settings form keeps
 * working there. */
function ForecastForm({ sku, token }: { sku: Sku; token: string }) {
  const [lead, setLead] = useState(String(sku.lead_time_days ?? ""));
  const [rule, setRule] = useState<AlertRule>(sku.alert_rule ?? "both");
  const [errors, setErrors] = useState<Record<string, string>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [ok, setOk] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setErrors({});
    setGeneral(null);
    setOk(null);
    setBusy(true);
    // Sent as typed when it is no number, so the server names the field.
    const n = lead.trim() === "" || Number.isNaN(Number(lead)) ? lead.trim() || null : Number(lead);
    try {
      const next = await api.patch(token, sku.sku, { lead_time_days: n, alert_rule: rule });
      dispatch({ type: "written", sku: next, now: Date.now() });
      setOk("Saved.");
    } catch (e) {
      if (e instanceof Problem) {
        const s = split(e, ["lead_time_days", "alert_rule"]);
        setErrors(s.byField);
        setGeneral(s.general);
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card" onSubmit={submit} aria-labelledby="forecast-title" noValidate>
      <h2 id="forecast-title">Lead time and alert rule</h2>
      <Field
        id="lead_time_days"
        label="Lead time (days)"
        error={errors.lead_time_days}
        hint="0–365; a stock-out forecast alert opens when days of cover fall below it"
      >
        {(p) => <input {...p} inputMode="numeric" value={lead} onChange={(e) => setLead(e.target.value)} />}
      </Field>
      <Field id="alert_rule" label="Stock alerts from" error={errors.alert_rule}>
        {(p) => (
          <select {...p} value={rule} onChange={(e) => setRule(e.target.value as AlertRule)}>
            {(Object.keys(ALERT_RULE_TEXT) as AlertRule[]).map((r) => (
              <option key={r} value={r}>
                {ALERT_RULE_TEXT[r]}
              </option>
            ))}
          </select>
        )}
      </Field>
      <button type="submit" className="primary" disabled={busy}>
        Save lead time and rule
      </button>
      <Outcome general={general} ok={ok} id="forecast" />
    </form>
  );
}
