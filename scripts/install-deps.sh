#!/bin/bash
# Installs the Debian 12 packages streamkeeper needs; apt-get runs only if one is missing.
#   scripts/install-deps.sh          build + run
#   scripts/install-deps.sh --test   also the test tools (ffmpeg, pytest, clang fuzzers, …)
set -euo pipefail

RUNTIME=(
  meson ninja-build pkg-config
  libglib2.0-dev libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  libgstreamer-plugins-bad1.0-dev
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-nice gstreamer1.0-tools
  libsoup-3.0-dev libjson-glib-dev libssl-dev librtmp-dev libhiredis-dev libnice-dev libsystemd-dev
)
TEST=(
  libsrtp2-dev  # tests check sk-srtp.c against libsrtp
  clang libclang-rt-14-dev ffmpeg python3 python3-pytest python3-pytest-timeout
  iproute2 util-linux curl redis-server haproxy
  obs-studio obs-plugins xvfb  # obs-plugins is only a Recommends of obs-studio
  gstreamer1.0-x  # timeoverlay (pango) in sk-whip-publisher; only a Recommends of plugins-base
  chromium  # the browser WHIP publisher (tests/browser, driven by playwright-core)
)
# Node.js from elsewhere (e.g. NodeSource) ships its own npm and conflicts with Debian's.
command -v npm >/dev/null || TEST+=(nodejs npm)

pkgs=("${RUNTIME[@]}")
[[ "${1:-}" == "--test" ]] && pkgs+=("${TEST[@]}")

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "installing: ${missing[*]}"
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The browser tests' npm project (playwright-core), cached; a failure only skips those tests.
if [[ "${1:-}" == "--test" ]]; then
  "$(dirname "$0")/../tests/browser/install.sh" >/dev/null ||
    echo "WARNING: npm could not install tests/browser; the browser tests will be skipped" >&2
fi
