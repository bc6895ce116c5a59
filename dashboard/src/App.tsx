import { useCallback, useEffect, useRef, useState } from "react";
import { api, loadCatalog, setUnauthorizedHandler } from "./api";
import { Live, type Connection } from "./live";
import { dispatch, getState, useLive } from "./store";
import type { Session, Summary } from "./types";
import { Login } from "./components/Login";
import { Header } from "./components/Header";
import { Catalog } from "./components/Catalog";
import { SkuDetail } from "./components/SkuDetail";
import { AlertsPanel } from "./components/AlertsPanel";
import { Toasts } from "./components/Toasts";
import { Webhooks } from "./components/Webhooks";
import type { Filter } from "./state";
import { currentRoute as route, navigate } from "./router";

// The token lives in session storage: it survives a reload of the tab but
// not the tab itself, and is never put in a URL.
const SESSION_KEY = "skuwatch.session";
/** How often the whole catalog is read again (ms); see Dashboard. */
const CATALOG_REREAD_MS = 60_000;

function loadSession(): Session | null {
  try {
    const raw = sessionStorage.getItem(SESSION_KEY);
    const session = raw ? (JSON.parse(raw) as Session) : null;
    return session && session.expiresAt > Date.now() ? session : null;
  } catch {
    return null;
  }
}


export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const [notice, setNotice] = useState<string | null>(null);

  const logout = useCallback((why: string | null) => {
    sessionStorage.removeItem(SESSION_KEY);
    dispatch({ type: "reset" });
    setNotice(why);
    setSession(null);
    if (location.pathname !== "/") history.replaceState(null, "", "/");
  }, []);

  const login = useCallback((next: Session) => {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(next));
    setNotice(null);
    setSession(next);
  }, []);

  useEffect(() => {
    setUnauthorizedHandler(() => logout("Your session expired. Please sign in again."));
  }, [logout]);

  // Back to the login page the moment the token runs out.
  useEffect(() => {
    if (!session) return;
    const timer = setTimeout(
      () => logout("Your session expired. Please sign in again."),
      Math.max(0, session.expiresAt - Date.now()),
    );
    return () => clearTimeout(timer);
  }, [session, logout]);

  if (!session) return <Login onLogin={login} notice={notice} />;
  return <Dashboard key={session.token} session={session} onLogout={logout} />;
}

function Dashboard({ session, onLogout }: { session: Session; onLogout: (why: string | null) => void }) {
  const [connection, setConnection] = useState<Connection>("connecting");
  const [closedWhy, setClosedWhy] = useState<string | null>(null);
  const [summary, setSummary] = useState<Summary | null>(null);
  const [loaded, setLoaded] = useState<{ count: number; done: boolean }>({ count: 0, done: false });
  const [where, setWhere] = useState(route);
  const [filter, setFilter] = useState<Filter>("all");
  const liveRef = useRef<Live | null>(null);
  const visibleRef = useRef<string[]>([]);
  const summaryTimer = useRef<ReturnType<typeof setTimeout> | null>(null);
  const admin = session.role === "admin";

  const refreshSummary = useCallback(() => {
    if (summaryTimer.current) return;
    summaryTimer.current = setTimeout(() => {
      summaryTimer.current = null;
      api.summary(session.token).then(setSummary, () => {});
    }, 250);
  }, [session.token]);

  const refreshAlerts = useCallback(() => {
    for (const status of ["open", "acknowledged"] as const) {
      api.alerts(session.token, status).then((r) => dispatch({ type: "alerts", alerts: r.alerts }), () => {});
    }
  }, [session.token]);

  const updateWanted = useCallback(() => {
    const focus = getState().focus;
    const wanted = new Set(visibleRef.current);
    if (focus) wanted.add(focus);
    liveRef.current?.setWanted(wanted);
  }, []);

  useEffect(() => {
    const onPop = () => setWhere(route());
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);

  // The server's history went back (a restore or failover; state.ts drops
  // what it held): read the whole catalog, the summary and alerts again.
  const rebases = useLive((s) => s.rebases);
  useEffect(() => {
    if (rebases === 0) return;
    const signal = { cancelled: false };
    loadCatalog(session.token, (items) => dispatch({ type: "catalog", skus: items }), signal).catch(() => {});
    refreshAlerts();
    refreshSummary();
    return () => {
      signal.cancelled = true;
    };
  }, [rebases, session.token, refreshAlerts, refreshSummary]);

  useEffect(() => {
    dispatch({ type: "focus", sku: where.sku });
    updateWanted();
  }, [where.sku, updateWanted]);

  useEffect(() => {
    const signal = { cancelled: false };
    let count = 0;
    loadCatalog(
      session.token,
      (items) => {
        count += items.length;
        dispatch({ type: "catalog", skus: items });
        setLoaded({ count, done: false });
      },
      signal,
    ).then(
      () => !signal.cancelled && setLoaded({ count, done: true }),
      () => !signal.cancelled && setLoaded({ count, done: true }),
    );
    // Only the rows on screen are live; the rest of the catalog (which the
    // filters and the "last change" sort also look at) is read again now and
    // then. Pages merge by version, so a re-read never undoes a live change.
    const reread = setInterval(() => {
      loadCatalog(session.token, (items) => dispatch({ type: "catalog", skus: items }), signal).catch(() => {});
    }, CATALOG_REREAD_MS);
    refreshAlerts();
    api.summary(session.token).then(setSummary, () => {});
    const poll = setInterval(refreshSummary, 10_000);

    const live = new Live({
      token: session.token,
      resumeAfter: () => getState().resumeAfter,
      onMessages: (messages) => {
        dispatch({ type: "messages", messages, now: Date.now() });
        if (messages.some((m) => m.type === "alert" || m.type === "sku")) refreshSummary();
      },
      onConnection: (state, detail) => {
        setConnection((before) => {
          // Back from a blip: alerts raised or resolved meanwhile are not
          // replayed by the socket, so read them again.
          if (state === "live" && before !== "live" && before !== "connecting") refreshAlerts();
          return state;
        });
        if (state === "forbidden") setClosedWhy(detail ?? null);
      },
      onUnauthenticated: () => onLogout("Your session expired. Please sign in again."),
    });
    liveRef.current = live;
    live.start();
    updateWanted();
    return () => {
      signal.cancelled = true;
      clearInterval(poll);
      clearInterval(reread);
      live.stop();
      liveRef.current = null;
    };
  }, [session.token, refreshAlerts, refreshSummary, updateWanted, onLogout]);

  const onVisible = useCallback(
    (skus: string[]) => {
      visibleRef.current = skus;
      updateWanted();
    },
    [updateWanted],
  );

  return (
    <div className="app">
      <a className="skip" href="#main">
        Skip to content
      </a>
      <Header
        session={session}
        connection={connection}
        summary={summary}
        page={where.webhooks ? "webhooks" : where.sku ? "sku" : "catalog"}
        onFilter={(f) => {
          setFilter(f);
          if (where.sku || where.webhooks) navigate("/");
        }}
        onLogout={() => onLogout(null)}
      />
      {connection === "forbidden" && (
        <div className="banner" role="alert">
          <strong>The live view is closed for your account.</strong> This server lets only admins watch live
          changes{closedWhy ? ` (“${closedWhy}”)` : ""}; an administrator can allow viewers with{" "}
          <code>SKUWATCH_WS_VIEWERS=true</code>. The catalog below is a snapshot from when you signed in.
        </div>
      )}
      <div className="layout">
        <main id="main" tabIndex={-1}>
          {where.webhooks ? (
            admin ? (
              <Webhooks token={session.token} />
            ) : (
              <section className="detail">
                <h1>Webhooks</h1>
                <p className="muted">Webhooks are managed by admins.</p>
              </section>
            )
          ) : where.sku ? (
            <SkuDetail code={where.sku} session={session} admin={admin} />
          ) : (
            <Catalog loaded={loaded} filter={filter} onFilter={setFilter} onVisible={onVisible} />
          )}
        </main>
        <AlertsPanel
          session={session}
          admin={admin}
          onAcknowledged={refreshSummary}
          totalOpen={summary ? Object.values(summary.open_alerts).reduce((a, b) => a + b, 0) : null}
        />
      </div>
      <Toasts />
    </div>
  );
}
