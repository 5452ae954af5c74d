#!/usr/bin/python3
"""streamkeeper WHIP benchmark: POST → 201, first decoded frame after the POST, and the daemon's
CPU for one passthrough WHIP stream (720p30 H.264 + Opus) with one WHEP subscriber. Run it
through bench/bench_whip.sh (builds, isolates the run in a network namespace). Prints
p50/p95/max; asserts nothing.

Method:
  * Each run (--runs) uses a fresh room: the WHEP subscriber (sk-whep-client --latency) is
    started first and waits in the empty room; then sk-whip-publisher POSTs its offer.
    POST → 201 is the publisher's own measure (post_ms: request sent → 201 read).
    First frame = the subscriber's first decoded frame (CLOCK_MONOTONIC, --latency lines)
    - the moment the publisher sent its POST (post_us, same clock, same machine). It covers
    the answer, ICE + DTLS of both peer connections, the first keyframe and decoding.
  * CPU: utime + stime of the daemon's PID (/proc/PID/stat) sampled every second over
    --window s after --warmup s, with one publisher and one decoding subscriber (their CPU is
    not counted). One core = 100 %.
  * Glass-to-glass is not measured here yet (bench/bench.py measures it for RTMP).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import harness  # noqa: E402

PUBLISHER = harness.BUILD / "tests" / "tools" / "sk-whip-publisher"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))] if s else float("nan")


def summary(name, values, unit):
    if not values:
        print(f"{name:<34} (no data)")
        return
    print(f"{name:<34} p50 {pct(values, 50):7.1f} {unit}  p95 {pct(values, 95):7.1f} {unit}  "
          f"max {max(values):7.1f} {unit}  (n={len(values)})")


def create_ingress(node, room):
    r = node.api.request("POST", "/v1/ingress", dict(
        input_type="whip", name=room, room_name=room, participant_identity="bench"))
    assert r.status == 201, r
    return r.json


def start_publisher(procs, workdir, node, key, tag):
    log = workdir / f"pub-{tag}.log"
    proc = procs.start([PUBLISHER, "--url", f"{node.base}/whip", "--token", key,
                        "--ice-address", "127.0.0.1", "--width", "1280", "--height", "720",
                        "--fps", "30", "--bitrate", "2500"], log, stderr=subprocess.STDOUT)
    return proc, log


def start_viewer(procs, workdir, node, room, tag, seconds):
    log = workdir / f"viewer-{tag}.log"
    proc = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                        "127.0.0.1", "--latency", "--frames", "1000000", "--timeout",
                        str(seconds)], log)
    return proc, log


def lines(log):
    return harness.parse_json_lines(harness.tail(log, 100000))


def first(log, key):
    return next((o for o in lines(log) if key in o), None)


def one_run(procs, workdir, node, i):
    room = f"bench-whip-{i}"
    ing = create_ingress(node, room)
    viewer, vlog = start_viewer(procs, workdir, node, room, i, 30)
    # The viewer's POST is answered (its Location printed) before the publisher starts.
    harness.wait_until(lambda: first(vlog, "location"), 15, what="viewer answered")
    pub, plog = start_publisher(procs, workdir, node, ing["stream_key"], i)
    loc = harness.wait_until(lambda: first(plog, "location"), 15, what="publisher answered")
    frame = harness.wait_until(lambda: first(vlog, "frame"), 15, what="first decoded frame")
    harness.ProcessGroup.signal(viewer, 2)
    pub.send_signal(2)
    pub.wait(timeout=15)
    viewer.wait(timeout=15)
    return loc["post_ms"], (frame["mono_us"] - loc["post_us"]) / 1000.0


def measure_cpu(procs, workdir, node, warmup, window):
    room = "bench-whip-cpu"
    ing = create_ingress(node, room)
    pub, plog = start_publisher(procs, workdir, node, ing["stream_key"], "cpu")
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    viewer, vlog = start_viewer(procs, workdir, node, room, "cpu", warmup + window + 20)
    harness.wait_until(lambda: first(vlog, "frame"), 15, what="cpu viewer decodes")
    time.sleep(warmup)
    samples = []
    last = cpu_seconds(node.proc.pid)
    for _ in range(window):
        time.sleep(1)
        now = cpu_seconds(node.proc.pid)
        samples.append((now - last) * 100)
        last = now
    frames = [o for o in lines(vlog) if "frame" in o]
    harness.ProcessGroup.signal(viewer, 2)
    pub.send_signal(2)
    pub.wait(timeout=15)
    return samples, len(frames)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--window", type=int, default=20)
    args = ap.parse_args()

    workdir = Path(os.environ.get("SK_BENCH_DIR", "/tmp/sk-bench-whip"))
    workdir.mkdir(parents=True, exist_ok=True)
    procs = harness.ProcessGroup()
    try:
        node = harness.Node(procs, workdir).start()
        post_ms, first_ms = [], []
        for i in range(args.runs):
            p, f = one_run(procs, workdir, node, i)
            post_ms.append(p)
            first_ms.append(f)
        samples, frames = measure_cpu(procs, workdir, node, args.warmup, args.window)
        print("WHIP, one node on loopback; H.264 720p30 2.5 Mbit/s + Opus, passthrough")
        summary("POST -> 201", post_ms, "ms")
        summary("POST -> first decoded frame", first_ms, "ms")
        summary("daemon CPU, 1 stream + 1 viewer", samples, "% ")
        print(f"{'  mean over the window':<34} {statistics.mean(samples):7.1f} %  "
              f"(viewer decoded {frames} frames)")
        node.stop()
    finally:
        procs.kill_all()


if __name__ == "__main__":
    main()
