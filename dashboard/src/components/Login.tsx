import { useState, type FormEvent } from "react";
import { api, Problem } from "../api";
import type { Session } from "../types";

export function Login({ onLogin, notice }: { onLogin: (s: Session) => void; notice: string | null }) {
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const token = await api.login(username, password);
      onLogin({
        token: token.access_token,
        role: token.role,
        username,
        expiresAt: Date.now() + token.expires_in * 1000,
      });
    } catch (e) {
      const p = e instanceof Problem ? e : null;
      setError(
        p?.status === 401
          ? "Wrong username or password."
          : p?.status === 429
            ? "Too many attempts; wait a few minutes and try again."
            : (p?.message ?? "Sign-in failed."),
      );
    } finally {
      setBusy(false);
    }
  }

  return (
    <main className="login">
      <form onSubmit={submit} aria-labelledby="login-title" noValidate>
        <h1 id="login-title">skuwatch</h1>
        <p className="muted">Sign in to watch the catalog live.</p>
        {notice && (
          <p className="notice" role="status">
            {notice}
          </p>
        )}
        <label htmlFor="username">Username</label>
        <input
          id="username"
          name="username"
          autoComplete="username"
          required
          autoFocus
          value={username}
          onChange={(e) => setUsername(e.target.value)}
        />
        <label htmlFor="password">Password</label>
        <input
          id="password"
          name="password"
          type="password"
          autoComplete="current-password"
          required
          value={password}
          onChange={(e) => setPassword(e.target.value)}
          aria-describedby={error ? "login-error" : undefined}
        />
        {error && (
          <p id="login-error" className="field-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" className="primary" disabled={busy || !username || !password}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
