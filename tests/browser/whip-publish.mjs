// Publishes over WHIP from Debian's headless Chromium: opens tests/browser/whip.html (served by
// the test) with fake media devices and prints JSON lines the test reads:
//   {"launched": VERSION}  {"codecs": [...]}  {"location", "etag", "status", "post_ms",
//   "post_wall_ms", "answered_wall_ms"}  {"connection": STATE, "connected_wall_ms"}
//   {"stats": {...}} every second  {"error": ...}  {"result": "closed"}
// (*_wall_ms: the page's wall clock, ms since the epoch, when it sent the POST, read the 201,
// saw the peer connection connected.)
// SIGINT/SIGTERM closes the page (its pagehide handler DELETEs the session), then the browser.
// Usage: NODE_PATH=$(./install.sh) node whip-publish.mjs PAGE_URL [--chromium PATH]
import { createRequire } from "node:module";

// require() honours NODE_PATH (the cached install of install.sh); import would not.
const { chromium } = createRequire(import.meta.url)("playwright-core");

const args = process.argv.slice(2);
const pageUrl = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i > 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

if (!pageUrl) {
  console.error("usage: whip-publish.mjs PAGE_URL [--chromium PATH]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: opt("--chromium", "/usr/bin/chromium"),
  headless: true,
  // This script closes the page itself on a signal, so that its pagehide handler runs.
  handleSIGINT: false,
  handleSIGTERM: false,
  handleSIGHUP: false,
  args: [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    // Without it Chromium leaves loopback out of its ICE candidates.
    "--allow-loopback-in-peer-connection",
    // Host candidates as addresses, not .local names that nobody resolves in a namespace.
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox", // the tests run as root
  ],
});
out({ launched: browser.version() });
const page = await browser.newPage();
page.on("console", (m) => console.error(`page: ${m.text()}`));
page.on("pageerror", (e) => console.error(`page error: ${e}`));

let closing = false;
async function close(sig) {
  if (closing)
    return;
  closing = true;
  try {
    // runBeforeUnload runs the page's unload handlers as a tab close does (and does not wait).
    const closed = page.waitForEvent("close", { timeout: 5000 }).catch(() => {});
    await page.close({ runBeforeUnload: true });
    await closed;
    // Let the keepalive DELETE leave before the browser process goes.
    await new Promise((r) => setTimeout(r, 500));
    await browser.close();
    out({ result: "closed", signal: sig });
    process.exit(0);
  } catch (e) {
    out({ error: `close: ${e}` });
    process.exit(1);
  }
}
process.on("SIGINT", () => close("SIGINT"));
process.on("SIGTERM", () => close("SIGTERM"));

const t0 = Date.now();
await page.goto(pageUrl);
out({ codecs: await page.evaluate(() =>
  RTCRtpSender.getCapabilities("video").codecs.map((c) => c.mimeType + " " + (c.sdpFmtpLine ?? ""))) });
await page.waitForFunction(() => window.whip && window.whip.state !== "starting",
                           null, { timeout: 30000 });
const w = await page.evaluate(() => ({ state: whip.state, status: whip.status, error: whip.error,
                                       location: whip.location, etag: whip.etag,
                                       offer: whip.offer, post_wall_ms: whip.post_wall_ms,
                                       answered_wall_ms: whip.answered_wall_ms }));
if (w.state !== "answered") {
  out({ error: w.error, status: w.status });
  await browser.close();
  process.exit(1);
}
out({ location: w.location, etag: w.etag, status: w.status, post_ms: Date.now() - t0,
      post_wall_ms: w.post_wall_ms, answered_wall_ms: w.answered_wall_ms,
      offer_candidates: (w.offer.match(/^a=candidate:.*$/gm) || []) });

let lastConnection = null;
while (!closing) {
  try {
    const s = await page.evaluate(async () => ({ connection: whip.connection,
                                                 connected_wall_ms: whip.connected_wall_ms,
                                                 stats: await whip.stats() }));
    if (s.connection !== lastConnection)
      out({ connection: (lastConnection = s.connection) ?? "new",
            connected_wall_ms: s.connected_wall_ms });
    out({ stats: s.stats });
  } catch (e) {
    if (!closing)
      out({ error: `poll: ${e}` });
  }
  await new Promise((r) => setTimeout(r, 1000));
}
