// Watches a WHEP stream in Debian's headless Chromium: opens tests/browser/whep.html (served by
// the caller) and prints JSON lines: {"launched": VERSION}, {"location", "post_wall_ms",
// "answered_wall_ms"}, {"connection": STATE, "connected_wall_ms"}, {"first_frame_wall_ms",
// "width", "height"} once the page's receiver has decoded its first video frame,
// {"frames": N, "video": {packets, decoded, keyframes}} every second, {"error": ...}. SIGINT/SIGTERM closes the page (its pagehide
// handler DELETEs the session), then the browser. For bench/bench_whip.py --viewer chromium.
// Usage: NODE_PATH=$(./install.sh) node whep-view.mjs PAGE_URL [--chromium PATH]
import { createRequire } from "node:module";

const { chromium } = createRequire(import.meta.url)("playwright-core");

const args = process.argv.slice(2);
const pageUrl = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i > 0 && i + 1 < args.length ? args[i + 1] : dflt;
};
const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

if (!pageUrl) {
  console.error("usage: whep-view.mjs PAGE_URL [--chromium PATH]");
  process.exit(2);
}

const browser = await chromium.launch({
  executablePath: opt("--chromium", "/usr/bin/chromium"),
  headless: true,
  handleSIGINT: false,
  handleSIGTERM: false,
  handleSIGHUP: false,
  args: [
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox", // run as root
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
    const closed = page.waitForEvent("close", { timeout: 5000 }).catch(() => {});
    await page.close({ runBeforeUnload: true });
    await closed;
    await new Promise((r) => setTimeout(r, 300));
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
while (!closing) {
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
    if (!closing)
      out({ error: `poll: ${e}` });
  }
  await new Promise((r) => setTimeout(r, 50));
}
