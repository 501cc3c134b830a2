// Opens control's dashboard in headless Chromium with the admin token in its URL's fragment,
// then sends control a report (signed with the report key) that changes a site's egress, and
// measures how long the page, without reloading, takes to show it. Prints JSON: the
// milliseconds it took (null if it never did within the limit), whether the token was left in
// the address bar, console errors and page errors.
// Usage: node web/tests/dashboard.mjs CONTROL_URL SITE ADMIN_TOKEN REPORT_KEY_ID REPORT_KEY_HEX
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [control, site, token, keyId, keyHex] = process.argv.slice(2);
if (!control || !site || !token || !keyId || !keyHex) {
  console.error("usage: node web/tests/dashboard.mjs CONTROL_URL SITE ADMIN_TOKEN REPORT_KEY_ID REPORT_KEY_HEX");
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
  await page.goto(`${control}/dashboard#token=${encodeURIComponent(token)}`);
  await page.waitForFunction(
    (site) => document.getElementById("connection").textContent === "live" && document.querySelector(`tr[data-site="${site}"]`),
    site, { timeout: 10000 });
  // A reload would lose this.
  await page.evaluate(() => { window.estuaryNotReloaded = true; });
  const tokenInUrl = (await page.evaluate(() => location.href)).includes(token);
  const egress = 123_400_000 + Math.floor(Math.random() * 1000) * 100_000;
  const expected = `${(egress / 1e6).toFixed(1)} Mbit/s`;
  const report = {
    id: `${site}-dashboard-test`, site, url: "http://127.0.0.1:9", clients: 7, egress_bps: egress,
    cache_hit_ratio: 1, cpu: 0.1, mood: "happy",
  };
  const body = JSON.stringify(report);
  const at = Date.now();
  const signature = createHmac("sha256", Buffer.from(keyHex, "hex"))
    .update(`estuary-report-v1\n${at}\n${body}`).digest("hex");
  const sent = performance.now();
  const answer = await fetch(`${control}/api/v1/reports`, {
    method: "POST", body, headers: { "X-Estuary-Signature": `t=${at},kid=${keyId},sig=${signature}` },
  });
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
  const reloads = (await page.evaluate(() => window.estuaryNotReloaded === true)) ? 0 : 1;
  console.log(JSON.stringify({ shownAfterMs, expected, shown, reloads, tokenInUrl, consoleErrors, pageErrors }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
