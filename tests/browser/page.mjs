// What the browser scripts share: headless Chromium (Debian's) on one page of ours, JSON lines
// on stdout, and a close on SIGINT/SIGTERM that lets the page's pagehide handler DELETE its
// session before the browser goes.
import { createRequire } from "node:module";

// require() honours NODE_PATH (the cached install of install.sh); import would not.
const { chromium } = createRequire(import.meta.url)("playwright-core");

export const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// The command line: PAGE_URL [--chromium PATH]; exits with a usage line without a URL.
export function parseArgs(script) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i > 0 && i + 1 < args.length ? args[i + 1] : dflt;
  };
  if (!args[0]) {
    console.error(`usage: ${script} PAGE_URL [--chromium PATH]`);
    process.exit(2);
  }
  return { pageUrl: args[0], chromium: opt("--chromium", "/usr/bin/chromium") };
}

// Launches Chromium with @extraArgs, opens a page, prints {"launched": VERSION}; on
// SIGINT/SIGTERM the page is closed as a tab close does, @lingerMs given to its keepalive
// DELETE, then the browser ({"result": "closed"}, exit 0). isClosing() tells a script's
// polling loop that this has begun.
export async function openPage(executablePath, extraArgs, lingerMs) {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    // We close the page ourselves on a signal, so that its pagehide handler runs.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
    args: [
      // Without it Chromium leaves loopback out of its ICE candidates.
      "--allow-loopback-in-peer-connection",
      // Host candidates as addresses, not .local names that nobody resolves in a namespace.
      "--disable-features=WebRtcHideLocalIpsWithMdns",
      "--no-sandbox", // the tests run as root
      ...extraArgs,
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
      await new Promise((r) => setTimeout(r, lingerMs));
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
  return { browser, page, isClosing: () => closing };
}
