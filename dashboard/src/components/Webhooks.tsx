import { useCallback, useEffect, useRef, useState, type FormEvent, type ReactNode } from "react";
import { api, DELIVERIES_LIMIT, Problem } from "../api";
import { navigate } from "../router";
import type { AlertKind, WebhookDelivery, WebhookEndpoint, WebhookEvent, WebhookFormat, WebhookWithSecret } from "../types";
import {
  createBody,
  deliveryStatusHint,
  deliveryStatusText,
  describeDelivery,
  describeKinds,
  describeSkus,
  emptyForm,
  endpointState,
  EVENT_TEXT,
  FORMAT_TEXT,
  hasPending,
  splitErrors,
  toggled,
  upsert,
  WEBHOOK_EVENTS,
  WEBHOOK_KINDS,
  withoutSecret,
  type FormField,
  type WebhookForm,
} from "../webhooks";
import { formatTime } from "./Catalog";
import { kindText } from "./AlertsPanel";
import { Field } from "./SkuDetail";

/** How often the deliveries are read again while one is pending (ms). */
const PENDING_POLL_MS = 5000;

/** The message of a failed call, for a line under the control that made it. */
function failure(e: unknown, what: string): string {
  if (e instanceof Problem) {
    if (e.status === 404) return "This endpoint no longer exists.";
    return e.message || `${what} failed (${e.status}).`;
  }
  return `${what} failed.`;
}

/**
 * The Webhooks page (issue 19), admins only: the endpoints skuwatch POSTs
 * alerts (and, when chosen, SKU changes) to, a form to add one, and per
 * endpoint its switch, secret rotation, a test send and its recent
 * deliveries. A signing secret is shown once, where the server returned it
 * (create, rotate); it never enters the list, so it is gone on the next
 * render after "Done" or on leaving the page.
 */
export function Webhooks({ token }: { token: string }) {
  const [endpoints, setEndpoints] = useState<WebhookEndpoint[] | null>(null);
  const [loadError, setLoadError] = useState<string | null>(null);
  const [reloads, setReloads] = useState(0);
  const reload = useCallback(() => setReloads((n) => n + 1), []);

  useEffect(() => {
    let cancelled = false;
    api.webhooks(token).then(
      (r) => {
        if (cancelled) return;
        setEndpoints(r.webhooks);
        setLoadError(null);
      },
      (e) => {
        if (cancelled) return;
        setLoadError(
          e instanceof Problem && e.status === 404
            ? "This server has no webhooks API (it is older than the dashboard)."
            : e instanceof Problem && e.status === 403
              ? "Webhooks need an admin account."
              : failure(e, "Loading the webhooks"),
        );
      },
    );
    return () => {
      cancelled = true;
    };
  }, [token, reloads]);

  const changed = useCallback((next: WebhookEndpoint) => setEndpoints((list) => upsert(list ?? [], next)), []);
  const deleted = useCallback((id: string) => setEndpoints((list) => (list ?? []).filter((e) => e.id !== id)), []);

  return (
    <section className="detail webhooks" aria-labelledby="webhooks-title">
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
      <h1 id="webhooks-title">Webhooks</h1>
      <p className="muted intro">
        skuwatch POSTs alerts, and every SKU change when asked, to these URLs. Messages in the standard format are
        signed (Standard Webhooks: <code>webhook-id</code>, <code>webhook-timestamp</code>,{" "}
        <code>webhook-signature</code>); failed deliveries are retried.
      </p>
      <section aria-labelledby="endpoints-title" className="endpoints">
        <h2 id="endpoints-title">
          Endpoints{" "}
          {endpoints && (
            <span className="muted" data-testid="webhook-count">
              {endpoints.length}
            </span>
          )}
        </h2>
        {loadError && (
          <p className="field-error" role="alert">
            {loadError}{" "}
            <button type="button" onClick={reload}>
              Try again
            </button>
          </p>
        )}
        {endpoints === null ? (
          !loadError && (
            <p className="muted" role="status">
              Loading webhooks…
            </p>
          )
        ) : endpoints.length === 0 ? (
          <p className="muted" data-testid="no-webhooks">
            No endpoints yet: add one below.
          </p>
        ) : (
          <ul className="webhook-list">
            {endpoints.map((endpoint) => (
              <li key={endpoint.id}>
                <EndpointCard endpoint={endpoint} token={token} onChange={changed} onDeleted={deleted} onMissing={reload} />
              </li>
            ))}
          </ul>
        )}
      </section>
      <CreateForm token={token} onCreated={changed} />
    </section>
  );
}

/** A signing secret, shown once. */
function SecretBox({
  secret,
  previousExpiresAt,
  onDone,
}: {
  secret: string;
  /** After a rotation: until when the old secret still signs. */
  previousExpiresAt?: string | null;
  onDone: () => void;
}) {
  const [copied, setCopied] = useState<string | null>(null);
  const codeRef = useRef<HTMLElement>(null);

  async function copy() {
    try {
      if (!navigator.clipboard) throw new Error("no clipboard");
      await navigator.clipboard.writeText(secret);
      setCopied("Copied.");
    } catch {
      // No clipboard (a page over plain http, or permission refused): select
      // it for the keyboard instead.
      const selection = window.getSelection();
      if (codeRef.current && selection) {
        const range = document.createRange();
        range.selectNodeContents(codeRef.current);
        selection.removeAllRanges();
        selection.addRange(range);
      }
      setCopied("Copying is not allowed here: the secret is selected, press Ctrl+C (⌘C).");
    }
  }

  return (
    <div className="secret-box" role="region" aria-label="Signing secret" data-testid="webhook-secret-box">
      <p className="secret-title">
        <strong>{previousExpiresAt !== undefined ? "New signing secret" : "Signing secret"}: copy it now.</strong> It will
        not be shown again.
      </p>
      <div className="secret-line">
        <code ref={codeRef} data-testid="webhook-secret">
          {secret}
        </code>
        <button type="button" onClick={() => void copy()}>
          Copy
        </button>
      </div>
      {copied && (
        <p className="hint" role="status">
          {copied}
        </p>
      )}
      {previousExpiresAt !== undefined && (
        <p className="hint" data-testid="webhook-previous-expires">
          {previousExpiresAt ? (
            <>
              The previous secret stays valid until{" "}
              <time dateTime={previousExpiresAt}>{formatTime(previousExpiresAt)}</time>: until then every message carries
              both signatures, so receivers can switch over.
            </>
          ) : (
            "The previous secret no longer signs."
          )}
        </p>
      )}
      <div className="actions">
        <button type="button" onClick={onDone}>
          Done, I have stored it
        </button>
      </div>
    </div>
  );
}

function CreateForm({ token, onCreated }: { token: string; onCreated: (endpoint: WebhookEndpoint) => void }) {
  const [form, setForm] = useState<WebhookForm>(emptyForm);
  const [errors, setErrors] = useState<Partial<Record<FormField, string>>>({});
  const [general, setGeneral] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<WebhookWithSecret | null>(null);

  const set = <K extends keyof WebhookForm>(key: K, value: WebhookForm[K]) => setForm((f) => ({ ...f, [key]: value }));

  async function submit(event: FormEvent) {
    event.preventDefault();
    setErrors({});
    setGeneral(null);
    setCreated(null);
    const built = createBody(form);
    if (built.errors) {
      setErrors(splitErrors(built.errors).byField);
      return;
    }
    setBusy(true);
    try {
      const result = await api.createWebhook(token, built.body);
      setCreated(result);
      onCreated(withoutSecret(result));
      setForm(emptyForm());
    } catch (e) {
      if (e instanceof Problem) {
        const s = splitErrors(e.errors);
        setErrors(s.byField);
        setGeneral(s.rest ?? (Object.keys(s.byField).length ? null : e.message));
      } else {
        setGeneral("Creating the endpoint failed.");
      }
    } finally {
      setBusy(false);
    }
  }

  return (
    <form className="card webhook-create" onSubmit={submit} aria-labelledby="webhook-create-title" noValidate>
      <h2 id="webhook-create-title">Add an endpoint</h2>
      <Field
        id="webhook-url"
        label="URL"
        error={errors.url}
        hint="An https address; the server refuses private, loopback and link-local hosts unless it is set to allow them."
      >
        {(p) => (
          <input
            {...p}
            type="url"
            value={form.url}
            placeholder="https://hooks.example.com/skuwatch"
            onChange={(e) => set("url", e.target.value)}
          />
        )}
      </Field>
      <Field id="webhook-description" label="Description" error={errors.description}>
        {(p) => (
          <input {...p} value={form.description} placeholder="Ops Slack" onChange={(e) => set("description", e.target.value)} />
        )}
      </Field>
      <CheckGroup
        id="webhook-events"
        legend="Events"
        error={errors.events}
        options={WEBHOOK_EVENTS}
        checked={form.events}
        label={(e) => (
          <>
            {EVENT_TEXT[e]} <code>{e}</code>
            {e === "sku.changed" && <span className="hint"> every stock, price or setting change: can be many</span>}
          </>
        )}
        onChange={(next) => set("events", next as WebhookEvent[])}
      />
      <CheckGroup
        id="webhook-kinds"
        legend="Alert kinds"
        hint="None checked: every kind."
        error={errors.kinds}
        options={WEBHOOK_KINDS}
        checked={form.kinds}
        label={(k) => kindText(k)}
        onChange={(next) => set("kinds", next as AlertKind[])}
      />
      <Field id="webhook-skus" label="SKUs" error={errors.skus} hint="Comma-separated codes, at most 1,000; empty: every SKU.">
        {(p) => <input {...p} value={form.skus} placeholder="MUG-01, PLATE-2" onChange={(e) => set("skus", e.target.value)} />}
      </Field>
      <Field id="webhook-format" label="Format" error={errors.format}>
        {(p) => (
          <select {...p} value={form.format} onChange={(e) => set("format", e.target.value as WebhookFormat)}>
            {(Object.keys(FORMAT_TEXT) as WebhookFormat[]).map((f) => (
              <option key={f} value={f}>
                {FORMAT_TEXT[f]}
              </option>
            ))}
          </select>
        )}
      </Field>
      <div className="actions">
        <button type="submit" className="primary" disabled={busy}>
          Add endpoint
        </button>
      </div>
      {general && (
        <p className="field-error" role="alert" data-testid="webhook-create-general">
          {general}
        </p>
      )}
      {created && (
        <>
          <p className="ok" role="status">
            Added <code>{created.url}</code>.
          </p>
          <SecretBox secret={created.secret} onDone={() => setCreated(null)} />
        </>
      )}
    </form>
  );
}

/** Checkboxes in a fieldset, with the server's message for the field under them. */
function CheckGroup<T extends string>({
  id,
  legend,
  hint,
  error,
  options,
  checked,
  label,
  onChange,
}: {
  id: string;
  legend: string;
  hint?: string;
  error?: string;
  options: readonly T[];
  checked: readonly T[];
  label: (option: T) => ReactNode;
  onChange: (next: T[]) => void;
}) {
  const described = [error ? `${id}-error` : null, hint ? `${id}-hint` : null].filter(Boolean).join(" ");
  return (
    <fieldset className={`checks ${error ? "invalid" : ""}`} aria-describedby={described || undefined} aria-invalid={!!error}>
      <legend>{legend}</legend>
      {options.map((option) => (
        <label key={option}>
          <input
            type="checkbox"
            value={option}
            checked={checked.includes(option)}
            onChange={(e) => onChange(toggled(checked, option, e.target.checked, options))}
          />{" "}
          {label(option)}
        </label>
      ))}
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
    </fieldset>
  );
}

function EndpointCard({
  endpoint,
  token,
  onChange,
  onDeleted,
  onMissing,
}: {
  endpoint: WebhookEndpoint;
  token: string;
  onChange: (next: WebhookEndpoint) => void;
  onDeleted: (id: string) => void;
  /** The server no longer has it: read the list again. */
  onMissing: () => void;
}) {
  const [busy, setBusy] = useState<"toggle" | "rotate" | "test" | "delete" | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [confirming, setConfirming] = useState(false);
  const [rotated, setRotated] = useState<{ secret: string; previousExpiresAt: string | null } | null>(null);
  const [tested, setTested] = useState<WebhookDelivery | null>(null);
  const [refresh, setRefresh] = useState(0);
  const titleId = `webhook-${endpoint.id}-title`;

  async function run<T>(what: typeof busy, label: string, call: () => Promise<T>, done: (result: T) => void) {
    setBusy(what);
    setError(null);
    try {
      done(await call());
    } catch (e) {
      setError(failure(e, label));
      if (e instanceof Problem && e.status === 404) onMissing();
    } finally {
      setBusy(null);
    }
  }

  const toggle = () =>
    run("toggle", endpoint.enabled ? "Disabling" : "Enabling", () => api.patchWebhook(token, endpoint.id, { enabled: !endpoint.enabled }), (next) => {
      onChange(next);
      // Disabling cancels what was pending.
      setRefresh((n) => n + 1);
    });

  const rotate = () =>
    run("rotate", "Rotating the secret", () => api.rotateWebhookSecret(token, endpoint.id), (result) => {
      setRotated({ secret: result.secret, previousExpiresAt: result.previous_secret_expires_at ?? null });
      onChange(withoutSecret(result));
    });

  /** The deliveries and the endpoint read again: a delivery's answer can
   * disable it (410 Gone: `disabled_reason: "gone"`). */
  const reread = useCallback(() => {
    setRefresh((n) => n + 1);
    api.webhook(token, endpoint.id).then(onChange, (e) => {
      if (e instanceof Problem && e.status === 404) onMissing();
    });
  }, [token, endpoint.id, onChange, onMissing]);

  const test = () =>
    run("test", "Sending a test", () => api.testWebhook(token, endpoint.id), (delivery) => {
      setTested(delivery);
      reread();
    });

  const remove = () =>
    run("delete", "Deleting", () => api.deleteWebhook(token, endpoint.id), () => onDeleted(endpoint.id));

  const state = endpointState(endpoint);
  return (
    <article className={`card webhook ${endpoint.enabled ? "on" : "off"}`} aria-labelledby={titleId} data-webhook-id={endpoint.id}>
      <div className="webhook-head">
        <h3 id={titleId} className="webhook-url" data-testid="webhook-url">
          {endpoint.url}
        </h3>
        <span
          className={`state ${endpoint.enabled ? "enabled" : "disabled"}`}
          data-testid="webhook-state"
          data-value={endpoint.enabled ? "enabled" : (endpoint.disabled_reason ?? "disabled")}
        >
          {state}
        </span>
      </div>
      {endpoint.description && <p className="webhook-description">{endpoint.description}</p>}
      <dl className="webhook-facts">
        <div>
          <dt>Events</dt>
          <dd data-testid="webhook-events">
            {endpoint.events.map((e) => (
              <code key={e}>{e}</code>
            ))}
          </dd>
        </div>
        <div>
          <dt>Alert kinds</dt>
          <dd data-testid="webhook-kinds">{describeKinds(endpoint.kinds, kindText)}</dd>
        </div>
        <div>
          <dt>SKUs</dt>
          <dd data-testid="webhook-skus" title={endpoint.skus?.join(", ")}>
            {describeSkus(endpoint.skus)}
          </dd>
        </div>
        <div>
          <dt>Format</dt>
          <dd data-testid="webhook-format">{FORMAT_TEXT[endpoint.format] ?? endpoint.format}</dd>
        </div>
        <div>
          <dt>Created</dt>
          <dd>
            <time dateTime={endpoint.created_at}>{formatTime(endpoint.created_at)}</time>
          </dd>
        </div>
        <div>
          <dt>Secret rotated</dt>
          <dd>
            {endpoint.secret_rotated_at ? (
              <time dateTime={endpoint.secret_rotated_at}>{formatTime(endpoint.secret_rotated_at)}</time>
            ) : (
              "never"
            )}
          </dd>
        </div>
      </dl>
      <div className="actions webhook-actions">
        <label className="switch">
          <input
            type="checkbox"
            role="switch"
            // Shows the change while it is sent; back if the server refuses it.
            checked={busy === "toggle" ? !endpoint.enabled : endpoint.enabled}
            disabled={busy !== null}
            onChange={() => void toggle()}
          />{" "}
          Enabled
        </label>
        <button type="button" onClick={() => void test()} disabled={busy !== null}>
          {busy === "test" ? "Sending…" : "Send test"}
        </button>
        <button type="button" onClick={() => void rotate()} disabled={busy !== null}>
          Rotate secret
        </button>
        {!confirming && (
          <button type="button" onClick={() => setConfirming(true)} disabled={busy !== null}>
            Delete
          </button>
        )}
      </div>
      {confirming && (
        <div className="confirm" role="group" aria-label="Confirm delete">
          <span>Delete this endpoint? Its pending deliveries are dropped.</span>
          <button type="button" className="danger" onClick={() => void remove()} disabled={busy !== null}>
            Delete endpoint
          </button>
          <button type="button" onClick={() => setConfirming(false)} disabled={busy === "delete"}>
            Cancel
          </button>
        </div>
      )}
      {error && (
        <p className="field-error" role="alert" data-testid="webhook-error">
          {error}
        </p>
      )}
      {tested && (
        <p
          className={`test-result ${tested.status === "delivered" ? "ok" : "field-error"}`}
          role="status"
          data-testid="test-result"
          data-status={tested.status}
        >
          Test <code>{tested.id}</code>: {describeDelivery(tested)}
        </p>
      )}
      {rotated && (
        <SecretBox secret={rotated.secret} previousExpiresAt={rotated.previousExpiresAt} onDone={() => setRotated(null)} />
      )}
      <Deliveries token={token} id={endpoint.id} refresh={refresh} onRefresh={reread} />
    </article>
  );
}

/** The endpoint's newest deliveries, read again on `refresh` (its Refresh
 * button asks for one with `onRefresh`) and now and then while one is pending. */
function Deliveries({
  token,
  id,
  refresh,
  onRefresh,
}: {
  token: string;
  id: string;
  refresh: number;
  onRefresh: () => void;
}) {
  const [deliveries, setDeliveries] = useState<WebhookDelivery[] | null>(null);
  const [failed, setFailed] = useState(false);
  const [reads, setReads] = useState(0);
  const pending = deliveries ? hasPending(deliveries) : false;

  useEffect(() => {
    let cancelled = false;
    api.webhookDeliveries(token, id).then(
      (r) => {
        if (cancelled) return;
        setDeliveries(r.deliveries);
        setFailed(false);
      },
      () => !cancelled && setFailed(true),
    );
    return () => {
      cancelled = true;
    };
  }, [token, id, refresh, reads]);

  useEffect(() => {
    if (!pending) return;
    const timer = setTimeout(() => setReads((n) => n + 1), PENDING_POLL_MS);
    return () => clearTimeout(timer);
  }, [pending, deliveries]);

  const headId = `deliveries-${id}-title`;
  return (
    <section className="deliveries" aria-labelledby={headId} data-testid="deliveries">
      <div className="deliveries-head">
        <h4 id={headId}>Recent deliveries</h4>
        <button type="button" onClick={onRefresh}>
          Refresh
        </button>
      </div>
      {failed && (
        <p className="field-error" role="alert">
          {deliveries ? "Could not refresh the deliveries; showing the last list read." : "Could not load the deliveries."}
        </p>
      )}
      {deliveries === null ? (
        !failed && (
          <p className="muted" role="status">
            Loading deliveries…
          </p>
        )
      ) : deliveries.length === 0 ? (
        <p className="muted" data-testid="no-deliveries">
          Nothing sent yet.
        </p>
      ) : (
        <div className="delivery-scroll">
          <table className="delivery-table">
            <thead>
              <tr>
                <th scope="col" className="c-id">
                  ID
                </th>
                <th scope="col" className="c-type">
                  Type
                </th>
                <th scope="col" className="c-status">
                  Status
                </th>
                <th scope="col" className="c-num">
                  Attempts
                </th>
                <th scope="col" className="c-code">
                  Last code
                </th>
                <th scope="col" className="c-when">
                  Last attempt
                </th>
                <th scope="col" className="c-when">
                  Next attempt
                </th>
              </tr>
            </thead>
            <tbody>
              {deliveries.map((d) => (
                <tr key={d.id} data-delivery-id={d.id}>
                  <td className="c-id" title={d.id}>
                    <code>{d.id}</code>
                  </td>
                  <td className="c-type" data-testid="delivery-type" title={d.type}>
                    {d.type}
                  </td>
                  <td
                    className={`c-status status-${d.status}`}
                    data-testid="delivery-status"
                    data-value={d.status}
                    title={[deliveryStatusHint(d), d.last_error].filter(Boolean).join(": ")}
                  >
                    {deliveryStatusText(d.status)}
                  </td>
                  <td className="c-num" data-testid="delivery-attempts">
                    {d.attempts}
                  </td>
                  <td className="c-code" data-testid="delivery-code" title={d.last_error ?? undefined}>
                    {d.last_status_code ?? (d.last_error ? "error" : "–")}
                  </td>
                  <td>{d.last_attempt_at ? <time dateTime={d.last_attempt_at}>{formatTime(d.last_attempt_at)}</time> : "–"}</td>
                  <td>{d.next_attempt_at ? <time dateTime={d.next_attempt_at}>{formatTime(d.next_attempt_at)}</time> : "–"}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
      {deliveries && deliveries.length >= DELIVERIES_LIMIT && (
        <p className="muted">The newest {DELIVERIES_LIMIT} are listed.</p>
      )}
    </section>
  );
}
