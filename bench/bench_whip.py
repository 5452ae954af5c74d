#!/usr/bin/python3
"""streamkeeper WHIP benchmark: POST → 201, first decoded frame after the POST (and where the
time goes), a late viewer's first frame, glass-to-glass latency, and the daemon's CPU for one
passthrough WHIP stream (720p30 H.264 + Opus) with one WHEP subscriber. Run it through
bench/bench_whip.sh (builds, isolates the run in a network namespace). Prints p50/p95/max;
asserts nothing.

Method:
  * Each run (--runs) uses a fresh room: the WHEP viewer is started first, POSTs its offer to
    the empty room and waits there (its session is bound to the tracks once they exist); then
    the publisher POSTs its offer. So the figure is what a viewer that was already watching when
    the publisher started sees. Publisher (--publisher): sk-whip-publisher (webrtcbin, 720p30
    x264) or headless Chromium (tests/browser/whip.html, fake camera 640x360, its own H.264
    encoder). Viewer (--viewer): sk-whep-client (webrtcbin + avdec_h264) or headless Chromium
    (tests/browser/whep.html).
    POST → 201 is the publisher's own measure (request sent → 201 read; Chromium's includes
    its CORS preflight). First frame = the viewer's first decoded frame - the moment the
    publisher sent its POST, all on CLOCK_MONOTONIC of this machine (the pages report the wall
    clock, mapped onto it here). It covers the answer, ICE + DTLS of the publisher's peer
    connection (the viewer's is up already), the publisher's first keyframe, the node's
    jitter buffer (it lets a stream go after 2 packets in sequence), the node's send path, the
    viewer's jitter buffer and decoding. sk-whep-client's jitter buffer (--jitterbuffer-ms,
    200 = webrtcbin's default) holds a stream's first packet for that whole latency unless
    --faststart N (default 2: after N packets in sequence) lets it go, as a browser decodes a
    frame as soon as it is complete; --faststart 0 gives webrtcbin's behaviour. Chromium's
    first frame is the first time getStats shows framesDecoded > 0 (polled every 4 ms from
    the first packet on; headless Chromium composites no <video>, so nothing is "shown").
    Split into POST → 201, 201 → publisher connected (ICE + DTLS), and connected → first
    frame.
  * Late viewer: a second subscriber POSTs once the first decodes; its POST → first decoded
    frame covers its own answer, ICE + DTLS and the GOP the node replays from its cache.
  * Glass-to-glass: sk-whip-publisher --stamp draws each frame's capture time (CLOCK_MONOTONIC)
    into its top rows; sk-whep-client --latency reads it from each decoded picture (g2g_ms).
    Sampled over the CPU window (steady state, no catch-up after the start). Same machine, same
    clock. It covers encoding, both WebRTC legs, the node, the viewer's depayloading and
    decoding; not rendering (the viewer does not sync to a clock).
  * --timeline: where the first frame's time goes, each moment's p50/p95 after the publisher's
    POST, from the tools' JSON lines and the node's debug log (GST_DEBUG sk-whip:5 timeline
    lines on CLOCK_MONOTONIC; sk-whep:5 lines placed on that clock through them).
  * CPU: utime + stime of the daemon's PID (/proc/PID/stat) sampled every second over
    --window s after --warmup s, with one publisher and one decoding subscriber (their CPU is
    not counted). One core = 100 %. One stream's figure moves by a percent of a core from one
    minute to the next on this machine; --streams N (default 4) also measures N streams at once,
    each with a subscriber that counts frames without decoding, and prints the daemon's CPU
    divided by N: the drift is spread over N streams. Those publishers send a file
    (sk-whip-publisher --file: 720p30 2.5 Mbit/s constrained-baseline H.264 + Opus, paced in
    real time, a few % of a core each), so that N of them leave the node the machine's CPU;
    --encoding-publishers makes each an x264 encoder instead (about a fifth of a core each:
    four of them keep this machine busy). The viewers' video frames over the window, against
    30 per second per stream, show whether the node kept up.
"""

import argparse
import functools
import http.server
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import harness  # noqa: E402
from harness import cpu_seconds  # noqa: E402
import machine  # noqa: E402

PUBLISHER = harness.BUILD / "tests" / "tools" / "sk-whip-publisher"


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def summary(name, values, unit):
    if not values:
        print(f"{name:<48} (no data)")
        return
    print(f"{name:<48} p50 {pct(values, 50):7.1f} {unit}  p95 {pct(values, 95):7.1f} {unit}  "
          f"max {max(values):7.1f} {unit}  (n={len(values)})")


def create_ingress(node, room):
    r = node.api.request("POST", "/v1/ingress", dict(
        input_type="whip", name=room, room_name=room, participant_identity="bench"))
    assert r.status == 201, r
    return r.json


ENCODE_720P30 = ("--width", "1280", "--height", "720", "--fps", "30", "--bitrate", "2500",
                 "--stamp")


def start_publisher(procs, workdir, node, key, tag, media=ENCODE_720P30):
    log = workdir / f"pub-{tag}.log"
    proc = procs.start([PUBLISHER, "--url", f"{node.base}/whip", "--token", key,
                        "--ice-address", "127.0.0.1", *media], log, stderr=subprocess.STDOUT)
    return proc, log


class GstPublisher:
    """sk-whip-publisher (webrtcbin): its JSON lines carry CLOCK_MONOTONIC moments."""
    name = "sk-whip-publisher (webrtcbin), H.264 720p30 2.5 Mbit/s + Opus"

    def start(self, procs, workdir, node, key, tag):
        return start_publisher(procs, workdir, node, key, tag)

    def answered(self, log):
        return first(log, "location")

    def connected_us(self, log):
        o = first(log, "state")
        return o and o["mono_us"]

    def stop(self, proc):
        proc.send_signal(2)
        proc.wait(timeout=15)


BROWSER_DIR = harness.REPO / "tests" / "browser"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def wall_ms_to_mono_us(wall_ms):
    """A wall-clock moment of this machine (the page's) on CLOCK_MONOTONIC."""
    offset_us = time.time_ns() // 1000 - time.monotonic_ns() // 1000
    return int(wall_ms * 1000) - offset_us


@functools.lru_cache(maxsize=None)
def browser_env():
    """(NODE_PATH of playwright-core, port of an HTTP server of tests/browser on 127.0.0.1)."""
    for tool in ("node", "npm", "/usr/bin/chromium"):
        if shutil.which(tool) is None:
            sys.exit(f"Chromium runs need {tool} (scripts/install-deps.sh --test)")
    r = subprocess.run([BROWSER_DIR / "install.sh"], capture_output=True, text=True, check=True)
    handler = functools.partial(_QuietHandler, directory=str(BROWSER_DIR))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return r.stdout.strip(), srv.server_port


def start_browser(procs, log, script, page, query):
    node_path, port = browser_env()
    url = f"http://127.0.0.1:{port}/{page}?{urllib.parse.urlencode(query)}"
    return procs.start(["node", BROWSER_DIR / script, url, "--chromium", "/usr/bin/chromium"],
                       log, env=dict(os.environ, NODE_PATH=node_path))


class ChromiumPublisher:
    """Headless Chromium on tests/browser/whip.html (fake camera + microphone), driven by
    whip-publish.mjs; the page reports its moments on the wall clock."""
    name = "headless Chromium (tests/browser/whip.html), H.264 640x360 fake camera + Opus"

    def __init__(self):
        browser_env()

    def start(self, procs, workdir, node, key, tag):
        log = workdir / f"pub-{tag}.log"
        proc = start_browser(procs, log, "whip-publish.mjs", "whip.html",
                             {"whip": f"{node.base}/whip", "token": key, "codec": "h264"})
        return proc, log

    def answered(self, log):
        o = first(log, "location")
        if not o:
            return None
        return dict(o, post_us=wall_ms_to_mono_us(o["post_wall_ms"]),
                    post_ms=o["answered_wall_ms"] - o["post_wall_ms"])

    def connected_us(self, log):
        o = next((o for o in lines(log) if o.get("connection") == "connected"), None)
        return o and wall_ms_to_mono_us(o["connected_wall_ms"])

    def stop(self, proc):
        proc.send_signal(2)  # the page DELETEs its session, then Chromium goes
        proc.wait(timeout=30)


JITTERBUFFER_MS = 200
FASTSTART = 2


def start_viewer(procs, workdir, node, room, tag, seconds):
    log = workdir / f"viewer-{tag}.log"
    proc = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                        "127.0.0.1", "--latency", "--frames", "1000000", "--timeout",
                        str(seconds), "--jitterbuffer-ms", str(JITTERBUFFER_MS),
                        *(["--faststart", str(FASTSTART)] if FASTSTART else [])], log)
    return proc, log


class GstViewer:
    """sk-whep-client: decodes (avdec_h264), CLOCK_MONOTONIC moments in its JSON lines."""
    name = "sk-whep-client (webrtcbin + avdec_h264)"

    def start(self, procs, workdir, node, room, tag, seconds):
        return start_viewer(procs, workdir, node, room, tag, seconds)

    def answered(self, log):
        return first(log, "location")

    def first_frame_us(self, log):
        o = first(log, "frame")
        return o and o["mono_us"]

    def stop(self, proc):
        harness.ProcessGroup.signal(proc, 2)
        proc.wait(timeout=15)


class ChromiumViewer:
    """Headless Chromium on tests/browser/whep.html: its first frame is the moment the page
    saw its receiver's framesDecoded leave 0 (getStats, polled every 4 ms once the video
    track unmutes: its first packet)."""
    name = "headless Chromium (tests/browser/whep.html, first frame in getStats framesDecoded)"

    def __init__(self):
        browser_env()

    def start(self, procs, workdir, node, room, tag, seconds):
        log = workdir / f"viewer-{tag}.log"
        return start_browser(procs, log, "whep-view.mjs", "whep.html",
                             {"whep": node.whep_url(room)}), log

    def answered(self, log):
        o = first(log, "location")
        return o and dict(o, post_us=wall_ms_to_mono_us(o["post_wall_ms"]))

    def first_frame_us(self, log):
        o = first(log, "first_frame_wall_ms")
        return o and wall_ms_to_mono_us(o["first_frame_wall_ms"])

    def events(self, log):
        out = {}
        for o in lines(log):
            if o.get("connection") == "connected":
                out["viewer: connected"] = wall_ms_to_mono_us(o["connected_wall_ms"])
        return out

    def stop(self, proc):
        proc.send_signal(2)
        proc.wait(timeout=30)


def lines(log):
    return harness.parse_json_lines(harness.tail(log, 100000))


def first(log, key):
    return next((o for o in lines(log) if key in o), None)


GST_LINE_RE = re.compile(r"^(\d+):(\d\d):(\d\d)\.(\d{9})\s+\d+\s+\S+\s+\w+\s+(\S+)\s+\S+\s(.*)$")
MARK_RE = re.compile(r"^(whip-\S+): timeline mono_us=(\d+) (.*)$")


def node_timeline(log_path):
    """The node's debug lines as (mono_us, category, message): sk-whip's timeline lines carry
    CLOCK_MONOTONIC, and the offset between it and GStreamer's debug clock places the others."""
    lines, offsets = [], []
    for raw in Path(log_path).read_text(errors="replace").splitlines():
        m = GST_LINE_RE.match(raw)
        if not m:
            continue
        h, mi, sec, ns, cat, msg = m.groups()
        gst_us = ((int(h) * 60 + int(mi)) * 60 + int(sec)) * 1000000 + int(ns) // 1000
        mark = MARK_RE.match(msg.strip())
        if mark:
            offsets.append(int(mark.group(2)) - gst_us)
        lines.append((gst_us, cat, msg.strip()))
    if not offsets:
        return []
    offset = statistics.median(offsets)
    return [(gst_us + offset, cat, msg) for gst_us, cat, msg in lines]


def run_timeline(node_lines, publisher, viewer, plog, vlog, loc, vloc):
    """Moments of one run, in ms after the publisher's POST."""
    t0 = loc["post_us"]
    session = "whip-" + loc["location"].rsplit("/", 1)[1][:8]
    sub = vloc["location"].rsplit("/", 1)[1]
    out = {}

    def put(label, mono_us):
        if label not in out and mono_us is not None:
            out[label] = (mono_us - t0) / 1000.0

    put("publisher: 201 read", t0 + loc["post_ms"] * 1000)
    put("publisher: connected (ICE+DTLS)", publisher.connected_us(plog))
    for o in lines(plog):
        if "keyframe_request" in o:
            put(f"publisher: keyframe request #{o['keyframe_request']} at encoder", o["mono_us"])
    for mono, cat, msg in node_lines:
        if cat == "sk-whip" and msg.startswith(session + ": timeline"):
            put("node: " + MARK_RE.match(msg).group(3), mono)
        elif cat == "sk-whep" and msg.startswith(f"subscriber {sub}:"):
            what = msg.split(":", 1)[1].strip()
            if " bound to " in what:
                what = what.split(" bound to ")[0] + " bound"
            put("node viewer: " + what, mono)
    for o in lines(vlog):
        if "event" in o:
            put("viewer: " + o["event"], o["mono_us"])
    for label, mono_us in getattr(viewer, "events", lambda log: {})(vlog).items():
        put(label, mono_us)
    put("viewer: first frame", viewer.first_frame_us(vlog))
    return out


def one_run(procs, workdir, node, publisher, first_viewer, i):
    room = f"bench-whip-{i}"
    ing = create_ingress(node, room)
    viewer, vlog = first_viewer.start(procs, workdir, node, room, i, 120)
    # The viewer's POST is answered (its Location printed) before the publisher starts.
    vloc = harness.wait_until(lambda: first_viewer.answered(vlog), 60, what="viewer answered")
    pub, plog = publisher.start(procs, workdir, node, ing["stream_key"], i)
    loc = harness.wait_until(lambda: publisher.answered(plog), 60, what="publisher answered")
    frame_us = harness.wait_until(lambda: first_viewer.first_frame_us(vlog), 15,
                                  what="first decoded frame")
    connected_us = harness.wait_until(lambda: publisher.connected_us(plog), 15,
                                      what="publisher connected")
    late, llog = start_viewer(procs, workdir, node, room, f"{i}-late", 30)
    late_loc = harness.wait_until(lambda: first(llog, "location"), 15, what="late viewer answered")
    late_frame = harness.wait_until(lambda: first(llog, "frame"), 15, what="late viewer decodes")
    harness.ProcessGroup.signal(late, 2)
    first_viewer.stop(viewer)
    publisher.stop(pub)
    late.wait(timeout=15)
    t0 = loc["post_us"]
    return dict(loc=loc, vloc=vloc, plog=plog, vlog=vlog,
                post=loc["post_ms"], first=(frame_us - t0) / 1000.0,
                ice_dtls=(connected_us - t0) / 1000.0 - loc["post_ms"],
                media=(frame_us - connected_us) / 1000.0,
                late=(late_frame["mono_us"] - late_loc["post_us"]) / 1000.0)


def measure_cpu(procs, workdir, node, warmup, window):
    room = "bench-whip-cpu"
    ing = create_ingress(node, room)
    pub, plog = start_publisher(procs, workdir, node, ing["stream_key"], "cpu")
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    viewer, vlog = start_viewer(procs, workdir, node, room, "cpu", warmup + window + 20)
    harness.wait_until(lambda: first(vlog, "frame"), 15, what="cpu viewer decodes")
    time.sleep(warmup)
    start_us = time.monotonic_ns() // 1000
    samples = []
    last = cpu_seconds(node.proc.pid)
    for _ in range(window):
        time.sleep(1)
        now = cpu_seconds(node.proc.pid)
        samples.append((now - last) * 100)
        last = now
    end_us = time.monotonic_ns() // 1000  # CLOCK_MONOTONIC, as the tools print
    frames = [o for o in lines(vlog) if "frame" in o]
    g2g = [o["g2g_ms"] for o in frames if "g2g_ms" in o and o["mono_us"] >= start_us
           and o["mono_us"] <= end_us]
    harness.ProcessGroup.signal(viewer, 2)
    pub.send_signal(2)
    pub.wait(timeout=15)
    return samples, len(frames), g2g


def video_frames(log):
    """The video frame counter of sk-whep-client's latest periodic stats line."""
    counts = [o["video_frames"] for o in lines(log) if "video_frames" in o]
    return counts[-1] if counts else 0


def measure_streams(procs, workdir, node, n, warmup, window, encode):
    """Daemon CPU % (of one core) with @n publishers and @n counting subscribers, the
    publishers' own CPU %, and the video frames the subscribers got in the window against
    those the publishers sent. The publishers send a file (sk-whip-publisher --file, a few %
    of a core each) unless @encode, when each runs its own x264 (a fifth of a core: four of
    them already keep this machine busy)."""
    media = ENCODE_720P30
    if not encode:
        # Long enough for the last publisher's window: each stream takes a second or two to start.
        seconds = warmup + window + 40 + 3 * n
        media = ("--file", str(harness.make_whip_mkv(workdir / f"whip-720p30-{seconds}s.mkv",
                                                     seconds, 1280, 720, kbps=2500)))
    pubs, viewer_logs = [], []
    for i in range(n):
        room = f"bench-whip-n{i}"
        ing = create_ingress(node, room)
        pub, _ = start_publisher(procs, workdir, node, ing["stream_key"], f"n{i}", media)
        pubs.append(pub)
        node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
        log = workdir / f"viewer-n{i}.log"
        procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                     "127.0.0.1", "--frames", "100000000", "--timeout",
                     str(warmup + window + 60), "--no-decode"], log)
        viewer_logs.append(log)
    time.sleep(warmup)
    frames0 = [video_frames(log) for log in viewer_logs]
    daemon0, pubs0, t0 = cpu_seconds(node.proc.pid), [cpu_seconds(p.pid) for p in pubs], time.time()
    time.sleep(window)
    daemon1, pubs1, t1 = cpu_seconds(node.proc.pid), [cpu_seconds(p.pid) for p in pubs], time.time()
    frames1 = [video_frames(log) for log in viewer_logs]
    for p in pubs:
        p.send_signal(2)
    for p in pubs:
        p.wait(timeout=15)
    received = [b - a for a, b in zip(frames0, frames1)]
    return dict(daemon=100 * (daemon1 - daemon0) / (t1 - t0),
                publishers=100 * sum(b - a for a, b in zip(pubs0, pubs1)) / (t1 - t0),
                frames=sum(received), min_frames=min(received),
                expected=round(n * (t1 - t0) * 30))


def main():
    global JITTERBUFFER_MS, FASTSTART
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", type=int, default=20)
    ap.add_argument("--streams", type=int, default=4,
                    help="also measure this many streams at once (0: skip)")
    ap.add_argument("--encoding-publishers", action="store_true",
                    help="the --streams publishers encode (x264) instead of sending a file")
    ap.add_argument("--jitterbuffer-ms", type=int, default=JITTERBUFFER_MS,
                    help="the viewers' jitter buffer (webrtcbin latency; 200 is its default)")
    ap.add_argument("--publisher", choices=("gst", "chromium"), default="gst",
                    help="who publishes the first-frame runs: sk-whip-publisher (gst) or "
                    "headless Chromium (the CPU and glass-to-glass part always uses the former)")
    ap.add_argument("--viewer", choices=("gst", "chromium"), default="gst",
                    help="who watches from before the publisher starts: sk-whep-client (gst) "
                    "or headless Chromium's <video> (the late viewer is always sk-whep-client)")
    ap.add_argument("--timeline", action="store_true",
                    help="print where the time to the first frame goes (node debug log on)")
    ap.add_argument("--faststart", type=int, default=FASTSTART,
                    help="the viewers' jitter buffers let a stream go after this many packets in "
                    "sequence instead of holding its first packet for their latency, as a browser "
                    "decodes a frame once it is complete (0: wait out the latency)")
    args = ap.parse_args()
    JITTERBUFFER_MS = args.jitterbuffer_ms
    FASTSTART = args.faststart

    workdir = Path(os.environ.get("SK_BENCH_DIR", "/tmp/sk-bench-whip"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = harness.ProcessGroup()
    if args.timeline:
        os.environ["SK_NODE_GST_DEBUG"] = "*:2,sk-whip:5,sk-whep:5"
        os.environ["GST_DEBUG_NO_COLOR"] = "1"
    reference = machine.reference_seconds()
    try:
        node = harness.Node(procs, workdir).start()
        publisher = ChromiumPublisher() if args.publisher == "chromium" else GstPublisher()
        first_viewer = ChromiumViewer() if args.viewer == "chromium" else GstViewer()
        runs = [one_run(procs, workdir, node, publisher, first_viewer, i)
                for i in range(args.runs)]
        samples, frames, g2g = measure_cpu(procs, workdir, node, args.warmup, args.window)
        print("WHIP, one node on loopback; H.264 720p30 2.5 Mbit/s + Opus, passthrough; "
              f"viewer jitter buffer {JITTERBUFFER_MS} ms, "
              f"faststart {FASTSTART or 'off'}; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(f"first-frame runs published by {publisher.name}, watched by {first_viewer.name}")
        summary("POST -> 201", [r["post"] for r in runs], "ms")
        summary("POST -> first decoded frame", [r["first"] for r in runs], "ms")
        summary("  201 -> publisher connected", [r["ice_dtls"] for r in runs], "ms")
        summary("  connected -> first frame", [r["media"] for r in runs], "ms")
        summary("late viewer POST -> first frame", [r["late"] for r in runs], "ms")
        summary("glass-to-glass (steady)", g2g, "ms")
        if args.timeline:
            node_lines = node_timeline(node.log_path)
            moments = [run_timeline(node_lines, publisher, first_viewer, r["plog"], r["vlog"],
                                    r["loc"], r["vloc"]) for r in runs]
            labels = sorted({k for m in moments for k in m},
                            key=lambda k: statistics.median([m[k] for m in moments if k in m]))
            print("timeline, ms after the publisher's POST:")
            for k in labels:
                summary("  " + k, [m[k] for m in moments if k in m], "ms")
        summary("daemon CPU, 1 stream + 1 viewer", samples, "% ")
        print(f"{'  mean over the window':<48} {statistics.mean(samples):7.1f} %  "
              f"(viewer decoded {frames} frames)")
        if args.streams > 0:
            m = measure_streams(procs, workdir, node, args.streams, args.warmup, args.window,
                                args.encoding_publishers)
            print(f"{f'daemon CPU, {args.streams} streams + {args.streams} viewers':<48} "
                  f"{m['daemon']:7.1f} %  = {m['daemon'] / args.streams:.2f} % per stream "
                  f"(publishers {m['publishers']:.0f} %, load average {os.getloadavg()[0]:.1f})")
            print(f"{'  video frames at the viewers in the window':<48} "
                  f"{m['frames']:7d} of ~{m['expected']} (fewest at one viewer: "
                  f"{m['min_frames']})")
        node.stop()
        print(f"{machine.REFERENCE_LABEL}, start / end: "
              f"{reference:.2f} / {machine.reference_seconds():.2f}")
    finally:
        procs.kill_all()


if __name__ == "__main__":
    main()
