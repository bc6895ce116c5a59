// End to end: headless Chromium (the Debian package, driven by
// playwright-core) against real `skuwatch serve` processes, each on a random
// port with a temporary SQLite database. Run by scripts/checks/dashboard, or
// `npm run e2e` in dashboard/ after `cargo build --bin skuwatch`.
//
// The browser reaches server A through a TCP relay in this file, so a test
// can cut the network under the page (every connection dropped, new ones
// refused) and restore it, like a Wi-Fi blip.
//
// Screenshots: target/dashboard-screenshots/*.png (repository root).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac, randomBytes } from "node:crypto";
import fs from "node:fs";
import http from "node:http";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "../..");
const binary = process.env.SKUWATCH_BIN ?? path.join(root, "target/debug/skuwatch");
const shots = path.join(root, "target/dashboard-screenshots");
const chromiumPath = process.env.CHROMIUM ?? "/usr/bin/chromium";
const ADMIN_PASSWORD = `admin-${randomBytes(8).toString("hex")}`;
const VIEWER_PASSWORD = `viewer-${randomBytes(8).toString("hex")}`;

const cleanups = [];
let browser;

/** Starts `skuwatch serve` on a random port over a fresh SQLite file. */
async function startServer(extraEnv = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "skuwatch-e2e-"));
  const child = spawn(binary, ["serve"], {
    env: {
      ...process.env,
      SKUWATCH_BIND: "127.0.0.1:0",
      DATABASE_URL: `sqlite://${path.join(dir, "e2e.db")}`,
      SKUWATCH_ADMIN_PASSWORD: ADMIN_PASSWORD,
      SKUWATCH_JWT_SECRET: randomBytes(32).toString("hex"),
      SKUWATCH_LOG: "warn",
      ...extraEnv,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const base = await new Promise((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`skuwatch exited with ${code}`)));
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) resolve(m[1]);
    });
  });
  cleanups.push(() => {
    child.kill("SIGTERM");
    fs.rmSync(dir, { recursive: true, force: true });
  });
  return base;
}

/** A TCP relay in front of `target` that can drop every connection. */
async function relay(target) {
  const url = new URL(target);
  const open = new Set();
  let cut = false;
  const server = net.createServer((client) => {
    if (cut) return client.destroy();
    const upstream = net.connect(Number(url.port), url.hostname);
    const pair = { client, upstream };
    open.add(pair);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      open.delete(pair);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => server.close());
  return {
    base: `http://127.0.0.1:${server.address().port}`,
    cut() {
      cut = true;
      for (const { client, upstream } of open) {
        client.destroy();
        upstream.destroy();
      }
      open.clear();
    },
    restore() {
      cut = false;
    },
  };
}

async function rest(base, method, route, token, body, type = "application/json") {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers["content-type"] = type;
  const response = await fetch(`${base}/api/v1${route}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await response.text();
  const json = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
  return json;
}

/** A webhook receiver on 127.0.0.1 that records every request and answers
 * `status` (204 unless the test sets another). */
async function receiver() {
  const hook = { url: "", requests: [], status: 204 };
  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on("data", (c) => chunks.push(c));
    req.on("end", () => {
      hook.requests.push({ method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString("utf8") });
      res.writeHead(hook.status);
      res.end();
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  cleanups.push(() => server.close());
  hook.url = `http://127.0.0.1:${server.address().port}`;
  return hook;
}

/** Whether a Standard Webhooks `webhook-signature` (space-separated
 * `v1,<base64>` values) holds the signature of `secret` (`whsec_<base64 key>`)
 * over `${id}.${timestamp}.${body}`. */
function signedWith(secret, { headers, body }) {
  const key = Buffer.from(secret.slice("whsec_".length), "base64");
  const expected = createHmac("sha256", key)
    .update(`${headers["webhook-id"]}.${headers["webhook-timestamp"]}.${body}`)
    .digest("base64");
  return String(headers["webhook-signature"] ?? "")
    .split(" ")
    .some((s) => s === `v1,${expected}`);
}

async function token(base, username, password) {
  return (await rest(base, "POST", "/auth/token", null, { username, password })).access_token;
}

async function newPage(base) {
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    locale: "en-US",
    timezoneId: "UTC",
    reducedMotion: "reduce",
  });
  const page = await context.newPage();
  const sent = [];
  const received = [];
  page.on("websocket", (ws) => {
    ws.on("framesent", (f) => sent.push(String(f.payload)));
    ws.on("framereceived", (f) => received.push(String(f.payload)));
  });
  page.on("pageerror", (e) => console.error("page error:", e));
  await page.goto(base);
  return { page, context, sent, received };
}

/// Resolves once `predicate()` holds (polled), or rejects after `ms`.
async function until(predicate, ms, what) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function login(page, username, password) {
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
}

const row = (page, sku) => page.locator(`tr[data-sku="${sku}"]`);
/** A cell or fact by its test id once it holds `value` (its raw number, not the formatted text). */
const valued = (scope, testid, value) => scope.locator(`[data-testid="${testid}"][data-value="${value}"]`);
const shot = (page, name) => page.screenshot({ path: path.join(shots, `${name}.png`) });

before(async () => {
  fs.mkdirSync(shots, { recursive: true });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
});

after(async () => {
  await browser?.close();
  for (const cleanup of cleanups.reverse()) cleanup();
});

test("an admin watches the catalog live, through a network cut", async () => {
  const server = await startServer({ SKUWATCH_WS_VIEWERS: "true" });
  const net_ = await relay(server);
  const admin = await token(server, "admin", ADMIN_PASSWORD);
  const skus = [
    { sku: "A-GBP", name: "WHITE HANGING HEART T-LIGHT HOLDER", currency: "GBP", price: "2.55", stock: 50 },
    { sku: "B-JPY", name: "CERAMIC TEA BOWL", currency: "JPY", price: "1980", stock: 12 },
    { sku: "C-USD", name: "ENAMEL MUG, RED", currency: "USD", price: "19.99", stock: 30 },
  ];
  for (let i = 1; i <= 60; i++) {
    skus.push({ sku: `F-${String(i).padStart(4, "0")}`, name: `FILLER ITEM ${i}`, currency: "GBP", price: "1.00", stock: 100 + i });
  }
  for (const s of skus) await rest(server, "POST", "/skus", admin, s);

  const { page, sent, received } = await newPage(net_.base);
  await page.getByLabel("Username").waitFor();
  await shot(page, "01-login");
  await login(page, "admin", ADMIN_PASSWORD);
  const connection = page.getByTestId("connection");
  await connection.getByText("Live").waitFor();
  await row(page, "A-GBP").waitFor();

  // Money per currency: JPY has no decimals.
  assert.equal((await row(page, "A-GBP").getByTestId("price").innerText()).trim(), "£2.55");
  assert.equal((await row(page, "B-JPY").getByTestId("price").innerText()).trim(), "¥1,980");
  assert.equal((await row(page, "C-USD").getByTestId("price").innerText()).trim(), "$19.99");

  // The table subscribes to the rows on screen shortly after drawing them;
  // the clock below starts once the server has answered that subscription
  // (its snapshot), so it measures the push, not the page's start-up.
  await until(
    () => received.some((f) => f.includes('"type":"snapshot"') && f.includes('"A-GBP"')),
    15_000,
    "the snapshot of the visible rows",
  );
  // An adjustment over REST appears in the table within one second.
  const started = Date.now();
  await rest(server, "POST", "/skus/A-GBP/stock/adjustments", admin, { delta: -3, reason: "sale" });
  // The new value, highlighted as a decrease (the highlight lasts 1.6 s).
  await row(page, "A-GBP")
    .locator('td.flash-down[data-testid="stock"]', { hasText: "▼" })
    .getByText("47")
    .waitFor({ timeout: 1000 });
  console.log(`# REST adjustment -> table cell: ${Date.now() - started} ms`);

  // A drop below the threshold raises a toast and lands in the panel.
  await rest(server, "POST", "/skus/B-JPY/stock/adjustments", admin, { delta: -5, reason: "sale" });
  const toast = page.getByTestId("toast").filter({ hasText: "B-JPY" });
  await toast.waitFor();
  assert.match(await toast.innerText(), /Low stock/);
  const item = page.locator('.alert-item[data-status="open"]').filter({ hasText: "B-JPY" });
  await item.waitFor();
  await page.getByTestId("count-alerts").getByText("1", { exact: true }).waitFor();
  await shot(page, "02-catalog-alert-toast");

  // Acknowledging updates the panel (and the server).
  await item.getByRole("button", { name: /Acknowledge/ }).click();
  const acked = page.locator('.alert-item[data-status="acknowledged"]').filter({ hasText: "B-JPY" });
  await acked.getByText("Acknowledged by admin").waitFor();
  await page.getByTestId("count-alerts").getByText("0", { exact: true }).waitFor();
  const stored = await rest(server, "GET", "/alerts?status=acknowledged&sku=B-JPY", admin);
  assert.equal(stored.alerts.length, 1);

  // Cut the network, change things meanwhile, restore: the page resumes
  // with `since` and shows the final values.
  net_.cut();
  await connection.getByText(/Reconnecting|Offline/).waitFor();
  await rest(server, "POST", "/skus/A-GBP/stock/adjustments", admin, { delta: 10, reason: "return" });
  await rest(server, "POST", "/skus/C-USD/stock/adjustments", admin, { delta: -30, reason: "sale" });
  await rest(server, "POST", "/skus/C-USD/stock/adjustments", admin, { delta: 5, reason: "delivery" });
  await rest(server, "PUT", "/skus/A-GBP/price", admin, { price: "2.60", reason: "promo end" });
  await rest(server, "POST", "/skus/F-0001/stock/adjustments", admin, { delta: -1, reason: "sale" });
  await shot(page, "03-reconnecting");
  const framesBefore = sent.length;
  net_.restore();
  await connection.getByText("Live").waitFor();
  await row(page, "A-GBP").getByTestId("stock").getByText("57").waitFor();
  await row(page, "A-GBP").getByTestId("price").getByText("£2.60").waitFor();
  await row(page, "C-USD").getByTestId("stock").getByText("5", { exact: false }).waitFor();
  await row(page, "F-0001").getByTestId("stock").getByText("100").waitFor();
  assert.equal((await row(page, "C-USD").getByTestId("stock").innerText()).replace(/[^0-9]/g, ""), "5");
  const resumed = sent
    .slice(framesBefore)
    .map((f) => JSON.parse(f))
    .filter((m) => m.type === "subscribe" && m.skus);
  assert.ok(resumed.length > 0, "re-subscribed after the cut");
  assert.ok(
    resumed.every((m) => typeof m.since === "number" && m.since > 0),
    `resumed with since: ${JSON.stringify(resumed).slice(0, 200)}`,
  );
  assert.ok(resumed[0].skus.includes("A-GBP") && resumed[0].skus.length < 63, "only the rows on screen");
  await shot(page, "04-after-reconnect");

  // SKU detail: charts, the price-guard confirm flow, a refused adjustment.
  await row(page, "C-USD").click();
  await page.getByRole("heading", { name: /C-USD/ }).waitFor();
  await page.locator(".chart canvas").first().waitFor();
  assert.equal(await page.locator(".chart canvas").count(), 2);
  await page.getByLabel("New price (USD)").fill("99.00");
  await page.getByRole("button", { name: "Set price" }).click();
  const priceError = page.getByTestId("price-error");
  await priceError.waitFor();
  assert.ok((await priceError.innerText()).length > 0);
  await page.getByLabel("Change (+ in, − out)").fill("-100");
  await page.getByRole("button", { name: "Apply" }).click();
  const deltaError = page.getByTestId("delta-error");
  await deltaError.waitFor();
  assert.match(await deltaError.innerText(), /5|stock/i);
  await shot(page, "05-detail-problems");
  await page.getByTestId("confirm-price").click();
  await page.getByTestId("detail-price").getByText("$99.00").waitFor();
  await page.getByTestId("toast").filter({ hasText: "Price anomaly" }).waitFor();
  // A live change extends the chart and the facts.
  await rest(server, "POST", "/skus/C-USD/stock/adjustments", admin, { delta: 7, reason: "delivery" });
  await page.getByTestId("detail-stock").getByText("12").waitFor();
  await shot(page, "06-detail");

  // Keyboard: back to the catalog, rows move with the arrow keys, Enter opens.
  await page.getByRole("link", { name: "← Catalog" }).click();
  await row(page, "A-GBP").waitFor();
  await row(page, "A-GBP").focus();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowDown");
  // Focus moves on the next frame, after the row is rendered.
  await page.waitForFunction(() => document.activeElement?.getAttribute("data-sku") === "C-USD");
  await page.keyboard.press("Enter");
  await page.getByRole("heading", { name: /C-USD/ }).waitFor();

  // A viewer (SKUWATCH_WS_VIEWERS=true) watches live but sees no edit controls.
  await rest(server, "POST", "/users", admin, { username: "vera", password: VIEWER_PASSWORD, role: "viewer" });
  const viewer = await newPage(net_.base);
  await login(viewer.page, "vera", VIEWER_PASSWORD);
  await viewer.page.getByTestId("connection").getByText("Live").waitFor();
  await row(viewer.page, "A-GBP").waitFor();
  await viewer.page.locator('.alert-item[data-status="open"]').first().waitFor();
  assert.equal(await viewer.page.getByRole("button", { name: /Acknowledge/ }).count(), 0);
  await rest(server, "POST", "/skus/A-GBP/stock/adjustments", admin, { delta: -2, reason: "sale" });
  await row(viewer.page, "A-GBP").getByTestId("stock").getByText("55").waitFor();
  await shot(viewer.page, "07-viewer-catalog");
  await row(viewer.page, "A-GBP").click();
  await viewer.page.getByTestId("detail-stock").waitFor();
  assert.equal(await viewer.page.locator("form").count(), 0);
  assert.equal(await viewer.page.getByRole("button", { name: /Apply|Set price|Save|Confirm/ }).count(), 0);
  await viewer.page.getByText("Viewers see the catalog read-only").waitFor();
  await shot(viewer.page, "08-viewer-detail");

  // A tablet in portrait: one column, the table still usable.
  await page.setViewportSize({ width: 820, height: 1180 });
  await page.getByRole("link", { name: "← Catalog" }).click();
  await row(page, "A-GBP").waitFor();
  await shot(page, "09-tablet");

  // Log out: back to the login page, the token forgotten.
  await page.getByRole("button", { name: "Log out" }).click();
  await page.getByLabel("Username").waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem("skuwatch.session")), null);
});

test("an admin-only server tells a viewer why; an expired token goes back to login; 10,000 SKUs", async () => {
  const server = await startServer({ SKUWATCH_TOKEN_TTL_SECS: "8" });
  const admin = await token(server, "admin", ADMIN_PASSWORD);
  await rest(server, "POST", "/users", admin, { username: "vera", password: VIEWER_PASSWORD, role: "viewer" });

  const viewer = await newPage(server);
  await login(viewer.page, "vera", VIEWER_PASSWORD);
  const banner = viewer.page.getByRole("alert").filter({ hasText: "live view is closed" });
  await banner.waitFor();
  assert.match(await banner.innerText(), /only admins/);
  await viewer.page.getByTestId("connection").getByText("Live view closed").waitFor();
  await shot(viewer.page, "10-viewer-admin-only-server");
  // The token runs out (8 s here): back to the login page, with the reason.
  await viewer.page.getByText("Your session expired").waitFor({ timeout: 20_000 });
  await viewer.page.getByLabel("Username").waitFor();

  // 10,000 SKUs: the table renders a window of rows and subscribes to it only.
  const lines = ["sku,name,price,currency,stock,low_stock_threshold"];
  for (let i = 0; i < 10_000; i++) {
    lines.push(`K-${String(i).padStart(5, "0")},ITEM ${i},${(1 + (i % 50) / 10).toFixed(2)},GBP,${i % 40},10`);
  }
  const report = await rest(server, "POST", "/import", admin, lines.join("\n") + "\n", "text/csv");
  assert.equal(report.created, 10_000);
  const big = await newPage(server);
  const loginAt = Date.now();
  await login(big.page, "admin", ADMIN_PASSWORD);
  await big.page.getByTestId("row-count").getByText("10,000 of 10,000 SKUs").waitFor({ timeout: 30_000 });
  console.log(`# sign-in -> 10,000 SKUs loaded: ${Date.now() - loginAt} ms`);
  await big.page.getByTestId("connection").getByText("Live").waitFor();
  const rendered = await big.page.locator("tbody tr[data-sku]").count();
  assert.ok(rendered > 10 && rendered < 80, `rendered ${rendered} rows`);
  // For the record (not asserted): frames while scrolling through 10,000 rows.
  const frames = await big.page.evaluate(async () => {
    const el = document.querySelector('[data-testid="table-scroll"]');
    const times = [];
    for (let i = 0; i < 60; i++) {
      const t = performance.now();
      el.scrollTop += 1200;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      times.push(performance.now() - t);
    }
    el.scrollTop = 0;
    times.sort((a, b) => a - b);
    return { median: times[30], worst: times[59] };
  });
  console.log(`# scroll step (two frames) over 10,000 rows: median ${frames.median.toFixed(1)} ms, worst ${frames.worst.toFixed(1)} ms`);
  await row(big.page, "K-00000").waitFor();
  await row(big.page, "K-00000").focus();
  await big.page.keyboard.press("End");
  await row(big.page, "K-09999").waitFor();
  assert.ok((await big.page.locator("tbody tr[data-sku]").count()) < 80);
  // Once scrolling settles, the bottom rows are subscribed and the top ones dropped.
  // A fresh token: this server issues them for 8 s only.
  const admin2 = await token(server, "admin", ADMIN_PASSWORD);
  await rest(server, "POST", "/skus/K-09999/stock/adjustments", admin2, { delta: 5, reason: "delivery" });
  await row(big.page, "K-09999").getByTestId("stock").getByText("44").waitFor();
  const subscribed = big.sent.map((f) => JSON.parse(f)).filter((m) => m.type === "subscribe" && m.skus);
  const most = Math.max(...subscribed.map((m) => m.skus.length));
  assert.ok(most < 80, `subscribed at most ${most} SKUs at once`);
  assert.ok(big.sent.some((f) => JSON.parse(f).type === "unsubscribe"), "rows scrolled away are unsubscribed");
  await big.page.getByRole("radio", { name: "Out of stock" }).check();
  await big.page.getByTestId("row-count").getByText("250 of 10,000 SKUs").waitFor();
  await row(big.page, "K-00000").waitFor();
  await shot(big.page, "11-ten-thousand-out-of-stock");
});

test("a hold shows as reserved and available, live, and on the SKU page until released", async () => {
  const server = await startServer();
  const admin = await token(server, "admin", ADMIN_PASSWORD);
  const code = "HOLD-MUG";
  await rest(server, "POST", "/skus", admin, { sku: code, name: "ENAMEL MUG, BLUE", currency: "GBP", price: "4.95", stock: 20 });
  await rest(server, "POST", "/skus", admin, { sku: "HOLD-PLATE", name: "ENAMEL PLATE", currency: "GBP", price: "3.50", stock: 8 });

  const { page, received } = await newPage(server);
  await login(page, "admin", ADMIN_PASSWORD);
  await page.getByTestId("connection").getByText("Live").waitFor();
  await row(page, code).waitFor();
  await valued(row(page, code), "reserved", 0).waitFor();
  await valued(row(page, code), "available", 20).waitFor();
  // Holds are placed once the visible rows' subscription is answered, so
  // what follows is the push (as in the first test).
  await until(
    () => received.some((f) => f.includes('"type":"snapshot"') && f.includes(`"${code}"`)),
    15_000,
    "the snapshot of the visible rows",
  );
  // Gone if the page reloads: the changes below must arrive without one.
  await page.evaluate(() => {
    window.__e2eNoReload = true;
  });

  const hold = await rest(server, "POST", "/holds", admin, {
    lines: [{ sku: code, quantity: 2 }],
    ttl_secs: 600,
    reference: "e2e-cart",
  });
  assert.equal(hold.status, "active");
  assert.equal(typeof hold.id, "string");
  // Live: far sooner than the catalog's one-minute re-read.
  await valued(row(page, code), "reserved", 2).waitFor({ timeout: 5000 });
  await valued(row(page, code), "available", 18).waitFor({ timeout: 5000 });
  assert.equal(await row(page, code).getByTestId("stock").getAttribute("data-value"), "20");
  assert.equal((await row(page, code).getByTestId("reserved").innerText()).trim(), "2");
  assert.match(await row(page, code).getByTestId("available").innerText(), /18/);
  const pushed = received.some((f) => {
    try {
      const m = JSON.parse(f);
      return m.type === "sku" && m.sku?.sku === code && m.change?.field === "reserved" && m.sku.reserved === 2;
    } catch {
      return false;
    }
  });
  assert.ok(pushed, "the hold came over the socket as a reserved change");
  assert.equal(await page.evaluate(() => window.__e2eNoReload), true, "no reload");
  await shot(page, "12-catalog-hold");

  // The SKU page: reserved and available beside stock, the hold listed with
  // its reference, quantity and a countdown that ticks.
  await row(page, code).click();
  await page.getByRole("heading", { name: new RegExp(code) }).waitFor();
  await valued(page, "detail-stock", 20).waitFor();
  await valued(page, "detail-reserved", 2).waitFor();
  await valued(page, "detail-available", 18).waitFor();
  const holds = page.getByTestId("holds");
  const listed = holds.locator(`tr[data-hold-id="${hold.id}"]`);
  await listed.waitFor();
  assert.equal((await listed.getByTestId("hold-reference").innerText()).trim(), "e2e-cart");
  assert.equal((await listed.getByTestId("hold-quantity").innerText()).trim(), "2");
  const countdown = (await listed.getByTestId("hold-expires").innerText()).trim();
  assert.match(countdown, /^expires in (9m [0-5]\d|10m 00)s$/);
  await page.waitForFunction(
    ([selector, before]) => {
      const text = document.querySelector(selector)?.textContent?.trim();
      return !!text && text !== before;
    },
    [`tr[data-hold-id="${hold.id}"] [data-testid="hold-expires"]`, countdown],
    { timeout: 3000 },
  );
  await shot(page, "13-detail-hold");

  // Released: the list drops it, reserved is back to 0, the change is listed.
  await rest(server, "POST", `/holds/${hold.id}/release`, admin);
  await listed.waitFor({ state: "detached", timeout: 5000 });
  await holds.getByText("No active holds").waitFor();
  await valued(page, "detail-reserved", 0).waitFor();
  await valued(page, "detail-available", 20).waitFor();
  await page.getByTestId("changes").getByText("reserved 2 → 0 (hold_released)").waitFor();
  assert.equal((await rest(server, "GET", `/holds/${hold.id}`, admin)).status, "released");
  await shot(page, "14-detail-hold-released");

  await page.getByRole("link", { name: "← Catalog" }).click();
  await valued(row(page, code), "reserved", 0).waitFor();
  await valued(row(page, code), "available", 20).waitFor();
  assert.equal(await page.evaluate(() => window.__e2eNoReload), true, "no reload");
});

test("days of cover: the forecast in the table and header, a projection on the SKU page, a stock-out forecast alert", async () => {
  const server = await startServer();
  const admin = await token(server, "admin", ADMIN_PASSWORD);
  const code = "COVER-MUG";
  const idle = "COVER-IDLE";
  await rest(server, "POST", "/skus", admin, { sku: code, name: "ENAMEL MUG, GREEN", currency: "GBP", price: "4.95", stock: 20 });
  await rest(server, "POST", "/skus", admin, { sku: idle, name: "ENAMEL JUG", currency: "GBP", price: "9.95", stock: 50 });
  // The contract (API.md, v1 additions): defaults, and no forecast before any sale.
  const fresh = await rest(server, "GET", `/skus/${code}`, admin);
  assert.equal(fresh.lead_time_days, 7);
  assert.equal(fresh.alert_rule, "both");
  assert.equal(fresh.forecast.days_of_cover, null);
  assert.equal(fresh.forecast.stockout_at, null);

  const { page, received } = await newPage(server);
  await login(page, "admin", ADMIN_PASSWORD);
  await page.getByTestId("connection").getByText("Live").waitFor();
  await row(page, code).waitFor();
  await valued(row(page, code), "cover", "").waitFor();
  assert.equal((await row(page, code).getByTestId("cover").innerText()).trim().slice(0, 1), "–");
  // The sales are made once the visible rows' subscription is answered, so
  // what follows is the push (as in the first test).
  await until(
    () => received.some((f) => f.includes('"type":"snapshot"') && f.includes(`"${code}"`)),
    15_000,
    "the snapshot of the visible rows",
  );

  // Six sales of one: the forecast needs five (fewer: days_of_cover null),
  // and five made within a second weigh a hair under five as of the last.
  for (let i = 0; i < 6; i++) {
    await rest(server, "POST", `/skus/${code}/stock/adjustments`, admin, { delta: -1, reason: "sale" });
  }
  const sold = await rest(server, "GET", `/skus/${code}`, admin);
  const f = sold.forecast;
  console.log(`# forecast after 6 sales of 1 (available ${sold.available}): ${JSON.stringify(f)}`);
  assert.equal(sold.available, 14);
  assert.ok(f.based_on_sales >= 5, `based_on_sales ${f.based_on_sales}`);
  assert.match(f.sales_per_day, /^\d+\.\d$/);
  assert.match(f.days_of_cover ?? "null", /^\d+\.\d$/);
  assert.ok(Number(f.days_of_cover) < 7, `cover ${f.days_of_cover} below the lead time of 7 days`);
  assert.ok(Date.parse(f.stockout_at) > Date.parse(f.as_of), "stockout_at after as_of");

  // The table: the cover, live, marked as below the lead time, the numbers on hover.
  const cover = valued(row(page, code), "cover", f.days_of_cover);
  await cover.waitFor({ timeout: 5000 });
  assert.equal(await cover.getAttribute("data-short"), "true");
  // Marked "⚠" before the number (the badge of the SKU page has no room here).
  assert.ok((await cover.innerText()).startsWith(`⚠ ${f.days_of_cover} d`), await cover.innerText());
  assert.equal(
    await cover.getAttribute("title"),
    `sells ${f.sales_per_day}/day over ${f.based_on_sales} sales; lead time 7 days`,
  );
  assert.equal(await row(page, idle).getByTestId("cover").getAttribute("data-short"), null);
  await page.getByTestId("toast").filter({ hasText: `Stock-out forecast: ${code}` }).waitFor();

  // Sorted by cover: the SKU without a forecast comes last both ways.
  const order = (codes) =>
    page.waitForFunction(
      (want) => [...document.querySelectorAll("tbody tr[data-sku]")].map((r) => r.dataset.sku).join() === want,
      codes.join(),
      { timeout: 5000 },
    );
  await order([idle, code]);
  const coverHeader = page.getByRole("columnheader", { name: /Days of cover/ });
  await coverHeader.getByRole("button").click();
  await page.locator('th[aria-sort="ascending"]', { hasText: "Days of cover" }).waitFor();
  await order([code, idle]);
  await coverHeader.getByRole("button").click();
  await page.locator('th[aria-sort="descending"]', { hasText: "Days of cover" }).waitFor();
  await order([code, idle]);

  // The filter, and the header's count (GET /summary), which filters too.
  await page.getByRole("radio", { name: "Cover below lead time" }).check();
  await page.getByTestId("row-count").getByText("1 of 2 SKUs").waitFor();
  await page.getByRole("radio", { name: "All" }).check();
  await page.getByTestId("row-count").getByText("2 of 2 SKUs").waitFor();
  const summary = await rest(server, "GET", "/summary", admin);
  assert.equal(summary.days_of_cover.within_lead_time, 1, JSON.stringify(summary.days_of_cover));
  assert.equal(summary.open_alerts.stockout_forecast, 1, JSON.stringify(summary.open_alerts));
  await page.getByTestId("count-cover").getByText("1", { exact: true }).waitFor();
  await page.getByTestId("count-cover").click();
  await page.getByTestId("row-count").getByText("1 of 2 SKUs").waitFor();
  assert.equal(await page.getByRole("radio", { name: "Cover below lead time" }).isChecked(), true);

  // The alert: its kind by name, and its message with the numbers.
  const stored = await rest(server, "GET", `/alerts?status=open&sku=${code}`, admin);
  const raised = stored.alerts.find((a) => a.kind === "stockout_forecast");
  assert.ok(raised, `a stockout_forecast alert: ${JSON.stringify(stored.alerts)}`);
  assert.equal(raised.value, f.days_of_cover);
  assert.equal(raised.threshold, 7);
  const item = page.locator(`.alert-item.stockout_forecast[data-alert-id="${raised.id}"]`);
  await item.waitFor();
  assert.equal((await item.getByTestId("alert-kind").innerText()).trim(), "Stock-out forecast");
  assert.equal((await item.getByTestId("alert-message").innerText()).trim(), raised.message);
  assert.match(
    raised.message,
    // The example reads "will run out: sells ..."; this server says
    // "will run out before a delivery: sells ...". The panel shows it as sent.
    new RegExp(`^${code} will run out[^:]*: sells ${f.sales_per_day}/day over ${f.based_on_sales} sales; ${f.days_of_cover} days left; lead time 7 days$`),
  );
  await shot(page, "15-catalog-days-of-cover");

  // The SKU page: the forecast's numbers, lead time and rule, and the
  // projection from available at as_of to 0 at the stock-out.
  await row(page, code).click();
  await page.getByRole("heading", { name: new RegExp(code) }).waitFor();
  await valued(page, "detail-cover", f.days_of_cover).waitFor();
  await valued(page, "detail-rate", f.sales_per_day).waitFor();
  await valued(page, "detail-stockout", f.stockout_at).waitFor();
  await valued(page, "detail-lead-time", 7).waitFor();
  await valued(page, "detail-alert-rule", "both").waitFor();
  await page.getByTestId("detail-cover").getByText("below lead time").waitFor();
  const line = page.getByTestId("projection");
  await line.waitFor();
  assert.equal(await line.getAttribute("data-from"), "14");
  assert.equal(await line.getAttribute("data-stockout-at"), f.stockout_at);
  assert.match(await line.innerText(), /Projected: 14 available → 0 by/);
  assert.equal(await page.locator(".chart canvas").count(), 2);
  await shot(page, "16-detail-projection");

  // An admin sets the lead time: out of range, the server's problem is
  // shown; within it, the SKU is no longer short.
  await page.getByLabel("Lead time (days)").fill("400");
  await page.getByRole("button", { name: "Save lead time and rule" }).click();
  await page.locator('[data-testid="lead_time_days-error"], [data-testid="forecast-general"]').first().waitFor();
  await page.getByLabel("Lead time (days)").fill("1");
  await page.getByLabel("Stock alerts from").selectOption("forecast");
  await page.getByRole("button", { name: "Save lead time and rule" }).click();
  await valued(page, "detail-lead-time", 1).waitFor();
  await valued(page, "detail-alert-rule", "forecast").waitFor();
  assert.equal(await page.getByTestId("detail-cover").getByText("below lead time").count(), 0);
  const patched = await rest(server, "GET", `/skus/${code}`, admin);
  assert.equal(patched.lead_time_days, 1);
  assert.equal(patched.alert_rule, "forecast");
  // Back in the catalog, still filtered to cover below lead time: it has gone.
  await page.getByRole("link", { name: "← Catalog" }).click();
  await page.getByTestId("row-count").getByText("0 of 2 SKUs").waitFor();
  await page.getByRole("radio", { name: "All" }).check();
  await row(page, code).waitFor();
  assert.equal(await row(page, code).getByTestId("cover").getAttribute("data-short"), null);
});

test("webhooks: an admin adds an endpoint, sees its secret once, sends a signed test and sees it delivered", async () => {
  const hook = await receiver();
  const hookUrl = `${hook.url}/hook`;
  // http://127.0.0.1 targets are refused unless the server allows private ones.
  const server = await startServer({ SKUWATCH_WEBHOOK_ALLOW_PRIVATE: "true" });
  const admin = await token(server, "admin", ADMIN_PASSWORD);
  await rest(server, "POST", "/users", admin, { username: "vera", password: VIEWER_PASSWORD, role: "viewer" });

  const { page } = await newPage(server);
  await login(page, "admin", ADMIN_PASSWORD);
  await page.getByTestId("connection").getByText("Live").waitFor();
  await page.getByRole("navigation", { name: "Admin pages" }).getByRole("link", { name: "Webhooks" }).click();
  await page.getByRole("heading", { name: "Webhooks", level: 1 }).waitFor();
  assert.equal(new URL(page.url()).pathname, "/webhooks");
  await page.getByTestId("no-webhooks").waitFor();

  // The form's defaults: the three alert events, sku.changed opt-in, every kind.
  for (const label of ["Alert raised", "Alert acknowledged", "Alert resolved"]) {
    assert.equal(await page.getByLabel(label).isChecked(), true, label);
  }
  assert.equal(await page.getByLabel("SKU changed").isChecked(), false);
  assert.equal(await page.getByLabel("Low stock").isChecked(), false);

  // A URL the server refuses (credentials in it): its problem next to the field.
  const url = page.getByLabel("URL", { exact: true });
  await url.fill("https://user:secret@hooks.example.com/skuwatch");
  await page.getByRole("button", { name: "Add endpoint" }).click();
  const urlError = page.getByTestId("webhook-url-error");
  await urlError.waitFor();
  assert.ok((await urlError.innerText()).trim().length > 0);
  assert.equal(await url.getAttribute("aria-invalid"), "true");
  assert.equal((await rest(server, "GET", "/webhooks", admin)).webhooks.length, 0);
  await urlError.scrollIntoViewIfNeeded();
  await shot(page, "17-webhooks-url-refused");

  // Created: the secret shown once, in its box; never in the list.
  await url.fill(hookUrl);
  await page.getByLabel("Description").fill("e2e receiver");
  await page.getByRole("button", { name: "Add endpoint" }).click();
  const secretBox = page.getByTestId("webhook-secret-box");
  await secretBox.waitFor();
  assert.match(await secretBox.innerText(), /will not be shown again/);
  const secret = (await secretBox.getByTestId("webhook-secret").innerText()).trim();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  const listed = (await rest(server, "GET", "/webhooks", admin)).webhooks;
  assert.equal(listed.length, 1);
  const endpoint = listed[0];
  assert.equal(endpoint.url, hookUrl);
  assert.equal(endpoint.description, "e2e receiver");
  assert.deepEqual(endpoint.events, ["alert.raised", "alert.acknowledged", "alert.resolved"]);
  assert.equal(endpoint.kinds, null);
  assert.equal(endpoint.skus, null);
  assert.equal(endpoint.format, "standard");
  assert.equal(endpoint.secret, undefined);
  const card = page.locator(`article[data-webhook-id="${endpoint.id}"]`);
  await valued(card, "webhook-state", "enabled").waitFor();
  assert.equal((await card.getByTestId("webhook-url").innerText()).trim(), hookUrl);
  await card.getByTestId("no-deliveries").waitFor();
  assert.equal(await page.getByTestId("webhook-secret").count(), 1, "the secret once, in the form's box");
  await secretBox.scrollIntoViewIfNeeded();
  await shot(page, "18-webhooks-created-secret");
  await secretBox.getByRole("button", { name: /^Done/ }).click();
  await secretBox.waitFor({ state: "detached" });
  assert.ok(!(await page.content()).includes(secret), "the secret is gone from the page");

  // Send test: one POST at the receiver, signed with the secret, shown as delivered.
  await card.getByRole("button", { name: "Send test" }).click();
  const result = card.getByTestId("test-result");
  await result.waitFor();
  await until(() => hook.requests.length >= 1, 10_000, "the test message at the receiver");
  const sent = hook.requests[0];
  assert.equal(sent.method, "POST");
  assert.equal(sent.url, "/hook");
  const id = sent.headers["webhook-id"];
  const timestamp = sent.headers["webhook-timestamp"];
  assert.ok(id, "webhook-id");
  assert.match(timestamp ?? "", /^\d+$/);
  assert.ok(Math.abs(Number(timestamp) - Date.now() / 1000) < 300, `webhook-timestamp ${timestamp}`);
  assert.match(sent.headers["webhook-signature"] ?? "", /^v1,[A-Za-z0-9+/]+=*( v1,[A-Za-z0-9+/]+=*)*$/);
  assert.ok(signedWith(secret, sent), `signature ${sent.headers["webhook-signature"]} over ${sent.body.slice(0, 200)}`);
  assert.ok(!signedWith(`whsec_${randomBytes(24).toString("base64")}`, sent), "another key does not verify");
  assert.doesNotThrow(() => JSON.parse(sent.body), "a JSON body");
  assert.equal(await result.getAttribute("data-status"), "delivered");
  assert.match(await result.innerText(), new RegExp(`Test ${id}: delivered \\(HTTP 204\\)`));
  const delivery = card.locator(`tr[data-delivery-id="${id}"]`);
  await valued(delivery, "delivery-status", "delivered").waitFor();
  assert.equal((await delivery.getByTestId("delivery-type").innerText()).trim(), "webhook.test");
  assert.equal((await delivery.getByTestId("delivery-attempts").innerText()).trim(), "1");
  assert.equal((await delivery.getByTestId("delivery-code").innerText()).trim(), "204");
  await card.scrollIntoViewIfNeeded();
  await shot(page, "19-webhooks-test-delivered");

  // Rotated: the new secret once, the old one valid for a while; a test
  // then carries both signatures.
  await card.getByRole("button", { name: "Rotate secret" }).click();
  const rotatedBox = card.getByTestId("webhook-secret-box");
  await rotatedBox.waitFor();
  const secret2 = (await rotatedBox.getByTestId("webhook-secret").innerText()).trim();
  assert.match(secret2, /^whsec_/);
  assert.notEqual(secret2, secret);
  assert.match(await card.getByTestId("webhook-previous-expires").innerText(), /previous secret stays valid until/);
  await card.getByRole("button", { name: "Send test" }).click();
  await until(() => hook.requests.length >= 2, 10_000, "the second test message");
  assert.ok(signedWith(secret2, hook.requests[1]), "signed with the new secret");
  assert.ok(signedWith(secret, hook.requests[1]), "and with the previous one");
  await valued(card.locator(`tr[data-delivery-id="${hook.requests[1].headers["webhook-id"]}"]`), "delivery-status", "delivered").waitFor();
  await rotatedBox.getByRole("button", { name: /^Done/ }).click();
  await rotatedBox.waitFor({ state: "detached" });

  // Disabled by the switch, with the reason; enabled again.
  await card.getByLabel("Enabled").uncheck();
  await valued(card, "webhook-state", "admin").waitFor();
  assert.equal((await card.getByTestId("webhook-state").innerText()).trim(), "disabled by an admin");
  const off = await rest(server, "GET", `/webhooks/${endpoint.id}`, admin);
  assert.equal(off.enabled, false);
  assert.equal(off.disabled_reason, "admin");
  await card.getByLabel("Enabled").check();
  await valued(card, "webhook-state", "enabled").waitFor();
  assert.equal((await rest(server, "GET", `/webhooks/${endpoint.id}`, admin)).enabled, true);

  // The page read afresh (the server answers /webhooks with the dashboard):
  // the endpoint and its deliveries, no secret anywhere.
  await page.reload();
  await valued(card, "webhook-state", "enabled").waitFor();
  await valued(card.locator(`tr[data-delivery-id="${id}"]`), "delivery-status", "delivered").waitFor();
  assert.equal(await card.locator("tr[data-delivery-id]").count(), 2);
  const html = await page.content();
  assert.ok(!html.includes(secret) && !html.includes(secret2), "no secret after a reload");

  // The receiver answers 410 Gone: the server disables the endpoint, and
  // the page says why.
  hook.status = 410;
  await card.getByRole("button", { name: "Send test" }).click();
  await valued(card, "webhook-state", "gone").waitFor();
  assert.equal((await card.getByTestId("webhook-state").innerText()).trim(), "disabled: receiver answered 410 Gone");
  assert.equal(await card.getByLabel("Enabled").isChecked(), false);
  const goneResult = card.locator('[data-testid="test-result"][data-status="failed"]');
  await goneResult.waitFor();
  assert.match(await goneResult.innerText(), /failed: HTTP 410/);
  const gone = await rest(server, "GET", `/webhooks/${endpoint.id}`, admin);
  assert.equal(gone.disabled_reason, "gone");
  await valued(card.locator(`tr[data-delivery-id="${hook.requests.at(-1).headers["webhook-id"]}"]`), "delivery-status", "failed").waitFor();
  await card.scrollIntoViewIfNeeded();
  await shot(page, "20-webhooks-gone");
  hook.status = 204;
  await card.getByLabel("Enabled").check();
  await valued(card, "webhook-state", "enabled").waitFor();

  // Deleted, after a confirmation.
  await card.getByRole("button", { name: "Delete", exact: true }).click();
  await card.getByRole("button", { name: "Delete endpoint" }).click();
  await card.waitFor({ state: "detached" });
  await page.getByTestId("no-webhooks").waitFor();
  assert.equal((await rest(server, "GET", "/webhooks", admin)).webhooks.length, 0);

  // A viewer has no link, and the path tells them it is for admins.
  const viewer = await newPage(server);
  await login(viewer.page, "vera", VIEWER_PASSWORD);
  await viewer.page.getByRole("button", { name: "Log out" }).waitFor();
  assert.equal(await viewer.page.getByRole("link", { name: "Webhooks" }).count(), 0);
  await viewer.page.goto(`${server}/webhooks`);
  await viewer.page.getByText("Webhooks are managed by admins.").waitFor();
  assert.equal(await viewer.page.getByRole("button", { name: "Add endpoint" }).count(), 0);
});
