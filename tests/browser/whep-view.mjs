// Watches a WHEP stream in Debian's headless Chromium: opens tests/browser/whep.html (served by
// the caller) and prints JSON lines: {"launched": VERSION}, {"location", "post_wall_ms",
// "answered_wall_ms"}, {"connection": STATE, "connected_wall_ms"}, {"first_frame_wall_ms",
// "width", "height"} once the page's receiver has decoded its first video frame,
// {"frames": N, "video": {packets, decoded, keyframes}} every second, {"error": ...}. SIGINT/SIGTERM closes the page (its pagehide
// handler DELETEs the session), then the browser. For bench/bench_whip.py --viewer chromium.
// Usage: NODE_PATH=$(./install.sh) node whep-view.mjs PAGE_URL [--chromium PATH]
import { openPage, out, parseArgs } from "./page.mjs";

const { pageUrl, chromium } = parseArgs("whep-view.mjs");
const { browser, page, isClosing } =
  await openPage(chromium, ["--autoplay-policy=no-user-gesture-required"], 300);

// Not "load": a <video> that waits for its stream holds the load event back until media comes.
await page.goto(pageUrl, { waitUntil: "domcontentloaded" });
await page.waitForFunction(() => window.whep && window.whep.state !== "starting", null,
                           { timeout: 30000 });
const w = await page.evaluate(() => ({ state: whep.state, error: whep.error,
                                       location: whep.location, status: whep.status,
                                       post_wall_ms: whep.post_wall_ms,
                                       answered_wall_ms: whep.answered_wall_ms }));
if (w.state !== "answered") {
  out({ error: w.error, status: w.status });
  await browser.close();
  process.exit(1);
}
out({ location: w.location, post_wall_ms: w.post_wall_ms, answered_wall_ms: w.answered_wall_ms });

let lastConnection = null, firstFrame = false, ticks = 0;
while (!isClosing()) {
  try {
    const s = await page.evaluate(() => ({ connection: whep.connection,
                                           connected_wall_ms: whep.connected_wall_ms,
                                           frames: whep.frames, width: whep.width,
                                           height: whep.height,
                                           first_frame_wall_ms: whep.first_frame_wall_ms }));
    if (s.connection !== lastConnection)
      out({ connection: (lastConnection = s.connection) ?? "new",
            connected_wall_ms: s.connected_wall_ms });
    if (!firstFrame && s.first_frame_wall_ms !== undefined) {
      firstFrame = true;
      out({ first_frame_wall_ms: s.first_frame_wall_ms, width: s.width, height: s.height });
    }
    if (++ticks % 20 === 0)
      out({ frames: s.frames, video: await page.evaluate(() => whep.stats()) });
  } catch (e) {
    if (!isClosing())
      out({ error: `poll: ${e}` });
  }
  await new Promise((r) => setTimeout(r, 50));
}
