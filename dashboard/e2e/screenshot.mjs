// The README's screenshot: the dashboard of a running server (e.g.
// `skuwatch serve --demo`, which replays the bundled real data).
//   node e2e/screenshot.mjs http://127.0.0.1:8000 demo PASSWORD ../docs/dashboard.png
import { chromium } from "playwright-core";

const [base, username, password, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const page = await browser.newPage({ viewport: { width: 1280, height: 800 }, locale: "en-GB", timezoneId: "UTC" });
await page.goto(base);
await page.getByLabel("Username").fill(username);
await page.getByLabel("Password").fill(password);
await page.getByRole("button", { name: "Sign in" }).click();
await page.getByTestId("connection").getByText("Live").waitFor();
await page.getByRole("button", { name: /Last change/ }).click();
await page.waitForTimeout(4000);
await page.screenshot({ path: out });
if (process.argv[6]) {
  await page.locator("tbody tr[data-sku]").first().click();
  await page.locator(".chart canvas").first().waitFor();
  await page.waitForTimeout(2000);
  await page.screenshot({ path: process.argv[6] });
}
await browser.close();
