#!/bin/bash
# Installs this folder's npm project (playwright-core, exact versions from package-lock.json)
# into a cache directory keyed by the lock file, once; prints that directory's node_modules.
# Used by scripts/install-deps.sh --test and by tests/integration/test_whip_browser.py.
# SK_BROWSER_CACHE overrides the cache root (default: $XDG_CACHE_HOME or ~/.cache).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v npm >/dev/null || { echo "npm is not installed" >&2; exit 3; }
root=${SK_BROWSER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/streamkeeper}
dir=$root/browser-$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)
if [[ ! -f $dir/.installed ]]; then
  mkdir -p "$dir"
  cp "$here/package.json" "$here/package-lock.json" "$dir/"
  # Playwright's own browser download is never wanted: the tests use Debian's chromium.
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
    npm ci --no-audit --no-fund --loglevel=error >&2)
  touch "$dir/.installed"
fi
echo "$dir/node_modules"
