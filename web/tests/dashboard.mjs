// Opens control's dashboard in headless Chromium, then sends control a report that changes a
// site's egress, and measures how long the page, without reloading, takes to show it. Prints
// JSON: the milliseconds it took (null if it never did within the limit), console errors and
// page errors.
// Usage: node web/tests/dashboard.mjs CONTROL_URL SITE
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [control, site] = process.argv.slice(2);
if (!control || !site) {
  console.error("usage: node web/tests/dashboard.mjs CONTROL_URL SITE");
  process.exit(2);
}
const LIMIT_MS = 2000;
const profile = mkdtempSync(join(tmpdir(), "estuary-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleErrors = [];
  const pageErrors = [];
  page.on("console", (message) => { if (message.type() === "error") consoleErrors.push(message.text()); });
  page.on("pageerror", (error) => pageErrors.push(String(error)));
  let navigations = 0;
  page.on("framenavigated", () => { navigations += 1; });
  await page.goto(`${control}/dashboard`);
  await page.waitForFunction(
    (site) => document.getElementById("connection").textContent === "live" && document.querySelector(`tr[data-site="${site}"]`),
    site, { timeout: 10000 });
  const egress = 123_400_000 + Math.floor(Math.random() * 1000) * 100_000;
  const expected = `${(egress / 1e6).toFixed(1)} Mbit/s`;
  const report = {
    id: `${site}-dashboard-test`, site, url: "http://127.0.0.1:9", clients: 7, egress_bps: egress,
    cache_hit_ratio: 1, cpu: 0.1, mood: "happy",
  };
  const sent = performance.now();
  const answer = await fetch(`${control}/api/v1/reports`, { method: "POST", body: JSON.stringify(report) });
  if (answer.status !== 204) throw new Error(`control refused the report: ${answer.status} ${await answer.text()}`);
  let shownAfterMs = null;
  try {
    await page.waitForFunction(
      ([site, expected]) => document.querySelector(`tr[data-site="${site}"] .egress`)?.textContent === expected,
      [site, expected], { timeout: LIMIT_MS, polling: 20 });
    shownAfterMs = Math.round(performance.now() - sent);
  } catch {
    shownAfterMs = null;
  }
  const shown = await page.evaluate((site) => document.querySelector(`tr[data-site="${site}"]`)?.innerText, site);
  console.log(JSON.stringify({ shownAfterMs, expected, shown, reloads: navigations - 1, consoleErrors, pageErrors }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
