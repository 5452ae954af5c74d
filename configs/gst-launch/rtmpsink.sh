#!/bin/bash
# Publish a live test pattern + tone to streamkeeper with GStreamer's rtmpsink (librtmp).
#   rtmpsink.sh [SERVER_URL] [STREAM_KEY]
# or SK_RTMP_URL / SK_STREAM_KEY in the environment (see rtmp2sink.sh).
set -euo pipefail
url=${1:-${SK_RTMP_URL:-rtmp://127.0.0.1:1935/live}}
key=${2:-${SK_STREAM_KEY:?usage: $0 SERVER_URL STREAM_KEY (or set SK_STREAM_KEY)}}
width=${SK_WIDTH:-1280} height=${SK_HEIGHT:-720} fps=${SK_FPS:-30} kbps=${SK_KBPS:-2500}

aac=voaacenc
gst-inspect-1.0 --exists voaacenc || aac=avenc_aac

# librtmp takes options after the URL: live=1 marks a live publication.
exec gst-launch-1.0 -e \
  videotestsrc is-live=true pattern=smpte ! "video/x-raw,width=$width,height=$height,framerate=$fps/1" ! \
  timeoverlay ! x264enc tune=zerolatency bframes=0 key-int-max=$((2 * fps)) bitrate="$kbps" speed-preset=veryfast ! \
  "video/x-h264,profile=baseline" ! h264parse ! flvmux streamable=true name=m ! \
  rtmpsink location="${url%/}/$key live=1" \
  audiotestsrc is-live=true wave=sine ! "audio/x-raw,rate=48000,channels=2" ! \
  $aac bitrate=128000 ! aacparse ! m.
