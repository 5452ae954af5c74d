// Publishes over WHIP from Debian's headless Chromium: opens tests/browser/whip.html (served by
// the test) with fake media devices and prints JSON lines the test reads:
//   {"launched": VERSION}  {"codecs": [...]}  {"location", "etag", "status", "post_ms",
//   "post_wall_ms", "answered_wall_ms"}  {"connection": STATE, "connected_wall_ms"}
//   {"stats": {...}} every second  {"error": ...}  {"result": "closed"}
// (*_wall_ms: the page's wall clock, ms since the epoch, when it sent the POST, read the 201,
// saw the peer connection connected.)
// SIGINT/SIGTERM closes the page (its pagehide handler DELETEs the session), then the browser.
// Usage: NODE_PATH=$(./install.sh) node whip-publish.mjs PAGE_URL [--chromium PATH]
import { openPage, out, parseArgs } from "./page.mjs";

const { pageUrl, chromium } = parseArgs("whip-publish.mjs");
// The keepalive DELETE of the page's pagehide handler gets 500 ms before the browser goes.
const { browser, page, isClosing } = await openPage(
  chromium, ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"], 500);

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
while (!isClosing()) {
  try {
    const s = await page.evaluate(async () => ({ connection: whip.connection,
                                                 connected_wall_ms: whip.connected_wall_ms,
                                                 stats: await whip.stats() }));
    if (s.connection !== lastConnection)
      out({ connection: (lastConnection = s.connection) ?? "new",
            connected_wall_ms: s.connected_wall_ms });
    out({ stats: s.stats });
  } catch (e) {
    if (!isClosing())
      out({ error: `poll: ${e}` });
  }
  await new Promise((r) => setTimeout(r, 1000));
}
