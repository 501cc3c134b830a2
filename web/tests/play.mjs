// Plays a page of Estuary's player in headless Chromium for a while and prints, as JSON, what
// the page measured: how far the video played, the player's live latency, stalls, fatal errors.
// Usage: node web/tests/play.mjs URL SECONDS   (SCREENSHOT=file.png also saves the page at the end)
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, seconds = "20"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node web/tests/play.mjs URL SECONDS");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "estuary-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required",
  ],
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  const consoleErrors = [];
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  await page.goto(url);
  // Wait for playback to start (or a fatal error), at most 20 s.
  await page.waitForFunction(() => window.estuary && (window.estuary.started !== null || window.estuary.fatal), null, { timeout: 20000 });
  const start = await page.evaluate(() => ({ time: document.querySelector("video").currentTime, fatal: window.estuary.fatal }));
  const latencies = [];
  for (let elapsed = 0; elapsed < Number(seconds) && !start.fatal; elapsed += 0.5) {
    await page.waitForTimeout(500);
    const latency = await page.evaluate(() => window.estuary.latency);
    if (Number.isFinite(latency)) latencies.push(latency);
  }
  const end = await page.evaluate(() => ({
    time: document.querySelector("video").currentTime,
    fatal: window.estuary.fatal,
    stalls: window.estuary.stalls,
    level: window.estuary.level,
    errors: window.estuary.errors,
  }));
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT });
  const sorted = [...latencies].sort((a, b) => a - b);
  // Latency once playback has settled: the second half of the samples, and the last two seconds.
  const settled = latencies.slice(Math.floor(latencies.length / 2)).sort((a, b) => a - b);
  const final = latencies.slice(-4).sort((a, b) => a - b);
  console.log(JSON.stringify({
    played: end.time - start.time,
    fatal: end.fatal,
    stalls: end.stalls,
    level: end.level,
    latencyMedian: sorted[Math.floor(sorted.length / 2)] ?? null,
    latencySettledMedian: settled[Math.floor(settled.length / 2)] ?? null,
    latencyMax: sorted[sorted.length - 1] ?? null,
    latencyFinal: final[Math.floor(final.length / 2)] ?? null,
    errors: end.errors,
    pageErrors: consoleErrors,
  }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
