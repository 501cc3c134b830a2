// Fetches paths from one HTTPS origin in headless Chromium and prints, as JSON, each answer's
// status, protocol (as the browser's resource timing names it: "h3", "h2", "http/1.1"),
// length and SHA-256. With QUIC=1 the browser speaks HTTP/3 to the origin from the first
// request on (--origin-to-force-quic-on); SPKI (base64 SHA-256 of the certificate's public key)
// makes it trust a self-signed certificate.
// Usage: [QUIC=1] [SPKI=…] node web/tests/fetch.mjs https://HOST:PORT PATH…
import { chromium } from "playwright-core";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [origin, ...paths] = process.argv.slice(2);
if (!origin || paths.length === 0) {
  console.error("usage: [QUIC=1] [SPKI=base64] node web/tests/fetch.mjs https://HOST:PORT PATH...");
  process.exit(2);
}
const args = [
  "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync",
];
if (process.env.QUIC === "1") args.push(`--origin-to-force-quic-on=${new URL(origin).host}`);
if (process.env.SPKI) args.push(`--ignore-certificate-errors-spki-list=${process.env.SPKI}`);

const profile = mkdtempSync(join(tmpdir(), "estuary-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args,
});
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  // A page of the origin itself, so that its fetches are same-origin and in a secure context.
  const landing = await page.goto(`${origin}/healthz`);
  if (!landing || !landing.ok()) throw new Error(`${origin}/healthz: ${landing && landing.status()}`);
  const answers = await page.evaluate(async (paths) => {
    const answers = [];
    for (const path of paths) {
      const response = await fetch(path, { cache: "no-store" });
      const body = await response.arrayBuffer();
      const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      const timing = performance.getEntriesByType("resource").filter((entry) => entry.name.endsWith(path)).pop();
      answers.push({
        path,
        status: response.status,
        protocol: timing ? timing.nextHopProtocol : null,
        altSvc: response.headers.get("alt-svc"),
        length: body.byteLength,
        sha256: Array.from(digest, (byte) => byte.toString(16).padStart(2, "0")).join(""),
      });
    }
    return answers;
  }, paths);
  const navigation = await page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  console.log(JSON.stringify({ navigation, answers }));
} finally {
  await browser.close();
  rmSync(profile, { recursive: true, force: true });
}
