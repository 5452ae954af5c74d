#!/usr/bin/python3
"""streamkeeper A/B: the daemon's CPU for the same load on two builds, measured side by side.
Run it through bench/bench_ab.sh (isolates the run in a network namespace). Prints each
window's figures and the paired difference; asserts nothing.

Method: two daemons run at once, A from --a and B from --b (build directories; the same one
twice compares two configurations through --a-args/--b-args). Each gets the same load: one
passthrough stream (--mode rtmp: sk-obs-publisher looping bench.py's 720p30 ~2.5 Mbit/s
H.264 + AAC; --mode whip: sk-whip-publisher, 720p30 H.264 + Opus) and --viewers WHEP
subscribers that count frames without decoding. After a warm-up, both daemons' CPU (utime +
stime from /proc/PID/stat, % of one core) is read over the same --windows windows of
--window s. The machine's own noise (other guests, frequency, caches) changes from one minute
to the next by more than the differences worth measuring; side by side it hits A and B alike,
so B - A per window is a far steadier figure than two runs one after the other. Not all of
it: on this 2-core VM two daemons of the same build differed by 0.15-0.2 point over a whole
run, one way in one run and the other way in the next (2026-12-04). Run a comparison both ways
(--a X --b Y, then --a Y --b X) and take half the difference of the two B - A means.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))

import bench  # noqa: E402
import bench_whip  # noqa: E402
import harness  # noqa: E402


def start(procs, workdir, build, extra, mode, viewers, source):
    harness.DAEMON = Path(build) / "streamkeeper"
    node = bench.start_node(procs, workdir, extra=tuple(extra))
    if mode == "rtmp":
        stream = bench.Stream(node, procs, workdir, source, 0, transcode="never")
        stream.wait_publishing()
        room = stream.room
    else:
        ing = bench_whip.create_ingress(node, "ab")
        bench_whip.start_publisher(procs, workdir, node, ing["stream_key"], "pub")
        node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", 30)
        room = "ab"
    for v in range(viewers):
        procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                     "127.0.0.1", "--frames", "100000000", "--timeout", "3600", "--no-decode"],
                    workdir / f"viewer-{v}.log", stderr=subprocess.DEVNULL)
    return node


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="build directory of A")
    ap.add_argument("--b", required=True, help="build directory of B")
    ap.add_argument("--a-args", default="", help="extra daemon arguments for A, '|'-separated")
    ap.add_argument("--b-args", default="", help="extra daemon arguments for B, '|'-separated")
    ap.add_argument("--mode", choices=("rtmp", "whip"), default="rtmp")
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window", type=int, default=10, help="seconds per window")
    ap.add_argument("--warmup", type=int, default=6)
    ap.add_argument("--workdir", default="/tmp/streamkeeper-bench-ab")
    args = ap.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = bench.make_source(workdir)
    procs = harness.ProcessGroup()
    nodes = {}
    try:
        for name, build, extra in (("A", args.a, args.a_args), ("B", args.b, args.b_args)):
            extra = [a for a in extra.split("|") if a]
            nodes[name] = start(procs, workdir / name, build, extra, args.mode, args.viewers,
                                source)
        time.sleep(args.warmup)
        print(f"== A/B: daemon CPU % of one core, {args.mode} passthrough stream + "
              f"{args.viewers} viewer(s), {args.windows} windows of {args.window} s ==")
        print(f"A: {args.a} {args.a_args}\nB: {args.b} {args.b_args}")
        a_all, b_all, diffs = [], [], []
        for k in range(args.windows):
            a0, b0 = (bench.cpu_seconds(nodes[n].proc.pid) for n in "AB")
            time.sleep(args.window)
            a1, b1 = (bench.cpu_seconds(nodes[n].proc.pid) for n in "AB")
            a, b = (a1 - a0) * 100 / args.window, (b1 - b0) * 100 / args.window
            a_all.append(a)
            b_all.append(b)
            diffs.append(b - a)
            print(f"window {k + 1}: A {a:5.2f}  B {b:5.2f}  B-A {b - a:+.2f}", flush=True)
        print(f"mean: A {statistics.mean(a_all):.2f}  B {statistics.mean(b_all):.2f}  "
              f"B-A {statistics.mean(diffs):+.2f} (median {statistics.median(diffs):+.2f}, "
              f"{sum(d < 0 for d in diffs)} of {len(diffs)} windows below 0)")
    finally:
        for node in nodes.values():
            node.stop()
        procs.kill_all()


if __name__ == "__main__":
    main()
