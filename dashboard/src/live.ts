// The one WebSocket to `/ws`: first-message auth, subscriptions for the
// SKUs on screen plus alerts, reconnect with `since` resume.
//
// Messages are handed over in batches (one reducer pass and one render per
// batch, not per message), in the order they arrived.

import type { ServerMessage } from "./types";

export type Connection = "connecting" | "live" | "reconnecting" | "offline" | "forbidden";

export interface LiveOptions {
  token: string;
  /** The reducer's resume point, read when a socket re-subscribes. */
  resumeAfter: () => number;
  onMessages: (messages: ServerMessage[]) => void;
  onConnection: (state: Connection, detail?: string) => void;
  /** 4401: the token expired or was refused. */
  onUnauthenticated: (reason: string) => void;
  /** Overridable for tests; defaults to the page's own origin. */
  url?: string;
}

/** Most SKUs one subscribe message may carry (API.md). */
const CHUNK = 1000;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000, 5000];

function chunks<T>(items: T[]): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += CHUNK) out.push(items.slice(i, i + CHUNK));
  return out;
}

export class Live {
  private socket: WebSocket | null = null;
  private authenticated = false;
  /** What the page wants watched. */
  private wanted = new Set<string>();
  /** What the current socket watches. */
  private subscribed = new Set<string>();
  /** What the previous socket watched with its state delivered: these resume with `since`. */
  private resumable = new Set<string>();
  private pending: ServerMessage[] = [];
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private attempts = 0;
  private stopped = false;
  private readonly onOnline = () => this.reconnectNow();

  constructor(private readonly options: LiveOptions) {}

  start() {
    window.addEventListener("online", this.onOnline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.flush();
    this.socket?.close(1000, "logout");
    this.socket = null;
  }

  /** Sets the SKUs to watch; the difference is (un)subscribed at once. */
  setWanted(skus: Iterable<string>) {
    this.wanted = new Set(skus);
    if (!this.authenticated) return;
    const add = [...this.wanted].filter((s) => !this.subscribed.has(s));
    const remove = [...this.subscribed].filter((s) => !this.wanted.has(s));
    for (const part of chunks(remove)) this.send({ type: "unsubscribe", skus: part });
    for (const part of chunks(add)) this.send({ type: "subscribe", skus: part });
    this.subscribed = new Set(this.wanted);
  }

  private send(message: unknown) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  private url(): string {
    if (this.options.url) return this.options.url;
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  private connect() {
    if (this.stopped) return;
    this.options.onConnection(this.attempts === 0 ? "connecting" : this.offlineOr("reconnecting"));
    const socket = new WebSocket(this.url());
    this.socket = socket;
    this.authenticated = false;
    socket.onopen = () => socket.send(JSON.stringify({ type: "auth", token: this.options.token }));
    socket.onmessage = (event) => {
      let message: ServerMessage;
      try {
        message = JSON.parse(String(event.data)) as ServerMessage;
      } catch {
        return;
      }
      if (message.type === "authenticated") {
        if (!this.authenticated) this.onAuthenticated();
        return;
      }
      this.pending.push(message);
      this.flushTimer ??= setTimeout(() => this.flush(), 40);
    };
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.flush();
      this.socket = null;
      if (this.authenticated) this.resumable = new Set(this.subscribed);
      this.authenticated = false;
      this.subscribed = new Set();
      if (this.stopped) return;
      if (event.code === 4401) {
        this.stopped = true;
        this.options.onUnauthenticated(event.reason || "the session expired");
        return;
      }
      if (event.code === 4403) {
        this.stopped = true;
        this.options.onConnection("forbidden", event.reason);
        return;
      }
      this.scheduleRetry();
    };
  }

  private onAuthenticated() {
    this.authenticated = true;
    this.attempts = 0;
    this.options.onConnection("live");
    this.send({ type: "subscribe", alerts: true });
    // Whatever is still batched belongs to the old socket: apply it first so
    // the resume point is current.
    this.flush();
    const since = this.options.resumeAfter();
    const wanted = [...this.wanted];
    const resume = since > 0 ? wanted.filter((s) => this.resumable.has(s)) : [];
    const fresh = wanted.filter((s) => !resume.includes(s));
    for (const part of chunks(resume)) this.send({ type: "subscribe", skus: part, since });
    for (const part of chunks(fresh)) this.send({ type: "subscribe", skus: part });
    this.subscribed = new Set(wanted);
    this.resumable = new Set();
  }

  private flush() {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.pending.length === 0) return;
    const batch = this.pending;
    this.pending = [];
    this.options.onMessages(batch);
  }

  private offlineOr(state: Connection): Connection {
    return typeof navigator !== "undefined" && navigator.onLine === false ? "offline" : state;
  }

  private scheduleRetry() {
    const delay = BACKOFF_MS[Math.min(this.attempts, BACKOFF_MS.length - 1)];
    this.attempts += 1;
    this.options.onConnection(this.offlineOr(this.attempts > 5 ? "offline" : "reconnecting"));
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  private reconnectNow() {
    if (this.stopped || this.socket) return;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    this.connect();
  }
}
