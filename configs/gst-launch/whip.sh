#!/bin/bash
# Publish a live test pattern + tone to streamkeeper over WHIP (RFC 9725).
#   whip.sh [WHIP_URL] [STREAM_KEY] [sk-whip-publisher options…]
# or SK_WHIP_URL / SK_STREAM_KEY in the environment. WHIP_URL is the ingress "url"
# (http://HOST:8080/whip) of an ingress created with "input_type":"whip", STREAM_KEY its
# "stream_key" (sent as the Bearer token, as OBS 30+ does). GStreamer 1.22 has no WHIP sink, so
# this runs the project's publisher (webrtcbin + libsoup, build/tests/tools/sk-whip-publisher):
# H.264 (constrained baseline, no B-frames) + Opus, passed through by the node. Ctrl-C stops
# cleanly (DELETE of the session). Extra options, e.g. --video vp8, --audio none,
# --no-candidates (an offer without candidates, like OBS 30.2+), --duration 60,
# --ice-address ADDR (local address for ICE; default 127.0.0.1 — set yours to publish to
# another machine), --keyframe-interval S (default 2), --ice-restart-after S (an ICE restart
# by PATCH, RFC 9725 4.4.2), --file MEDIA.mkv (send a Matroska file's H.264 + Opus as they are,
# in real time, instead of the test pattern).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
url=${1:-${SK_WHIP_URL:-http://127.0.0.1:8080/whip}}
key=${2:-${SK_STREAM_KEY:?usage: $0 WHIP_URL STREAM_KEY (or set SK_STREAM_KEY)}}
shift $(($# < 2 ? $# : 2))
width=${SK_WIDTH:-1280} height=${SK_HEIGHT:-720} fps=${SK_FPS:-30} kbps=${SK_KBPS:-2500}
publisher=${SK_WHIP_PUBLISHER:-$here/../../build/tests/tools/sk-whip-publisher}
[ -x "$publisher" ] || { echo "$publisher not built: run meson/ninja first" >&2; exit 1; }

exec "$publisher" --url "$url" --token "$key" --width "$width" --height "$height" --fps "$fps" \
  --bitrate "$kbps" "$@"
