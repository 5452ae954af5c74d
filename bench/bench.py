#!/usr/bin/python3
"""streamkeeper benchmark: CPU and memory per stream, glass-to-glass latency, and N
concurrent passthrough streams with subscribers. Run through bench/bench.sh (it builds,
and isolates the run in a network namespace). Prints its figures; asserts nothing.

Figures:
  * CPU % of the daemon (one core = 100 %) per 720p30 ~2.5 Mbit/s stream with one WHEP
    subscriber, passthrough and transcode, from /proc/PID/stat over a steady window.
  * RSS growth per stream, from /proc/PID/status VmRSS before and after N streams.
  * Glass-to-glass latency. Every few seconds sk-obs-publisher --stall-every drops video
    frames for at least 400 ms, up to the next keyframe, and prints (CLOCK_MONOTONIC) when
    it sends that keyframe, on its normal schedule; sk-whep-client --latency prints the same
    clock for every decoded frame. The subscriber sees the same hole; the first frame it
    decodes after the hole is that keyframe, so latency = its decode time - its send time.
    Both processes share the machine's monotonic clock: no clock sync needed. It covers RTMP
    ingest, the node's pipeline (and transcode), WebRTC transport, the receiver's jitter
    buffer and the decoder: everything but a camera and a screen.
  * N concurrent passthrough streams (default 20), one subscriber each: decoded frames per
    subscriber against the frames sent, i.e. dropped frames.
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

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_percent(pid, seconds):
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def make_source(workdir, seconds=10):
    """720p30 ~2.5 Mbit/s H.264 (no B-frames, 2 s GOP) + AAC, looped by sk-obs-publisher."""
    path = workdir / "bench-720p30.flv"
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
             "-g", "60", "-pix_fmt", "yuv420p", "-b:v", "2500k", "-maxrate", "2500k",
             "-bufsize", "5000k", "-c:a", "aac", "-ac", "2", "-b:a", "160k", "-f", "flv",
             str(path)], check=True, timeout=300)
    return path


class Stream:
    """One ingress + sk-obs-publisher + (optionally) one long-running WHEP subscriber."""

    def __init__(self, node, procs, workdir, source, index, transcode="auto",
                 stall_every=None):
        self.room = f"bench-{index}"
        self.ing = node.api.create_ingress(self.room, identity=f"cam-{index}",
                                           transcode=transcode)
        argv = [harness.OBS_PUBLISHER, "--url", node.rtmp_url(self.ing["stream_key"]),
                "--flv", source]
        if stall_every:
            argv += ["--stall-every", str(stall_every)]
        self.pub_log = workdir / f"pub-{index}.log"
        self.pub = procs.start(argv, self.pub_log)
        self.node, self.procs, self.workdir, self.index = node, procs, workdir, index
        self.sub = None

    def wait_publishing(self, timeout=60):
        self.node.api.wait_status(self.ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout)

    def subscribe(self, seconds, latency=False):
        argv = [harness.WHEP_CLIENT, "--url", self.node.whep_url(self.room),
                "--ice-address", "127.0.0.1", "--frames", "100000000",
                "--timeout", str(int(seconds)), "--delete"]
        if latency:
            argv.append("--latency")
        self.sub_log = self.workdir / f"sub-{self.index}.log"
        self.sub = self.procs.start(argv, self.sub_log, stderr=subprocess.DEVNULL)

    def sub_lines(self):
        return harness.parse_json_lines(Path(self.sub_log).read_text(errors="replace"))

    def pub_lines(self):
        return harness.parse_json_lines(Path(self.pub_log).read_text(errors="replace"))

    def decoded_frames(self):
        frames = [obj.get("video_frames") for obj in self.sub_lines() if "video_frames" in obj]
        return max(frames) if frames else 0


def start_node(procs, workdir, extra=()):
    return harness.Node(procs, workdir, node_id="bench", extra_args=extra).start(timeout=30)


def measure_one(procs, workdir, source, transcode, window):
    node = start_node(procs, workdir / f"one-{transcode}")
    try:
        time.sleep(1)
        idle_cpu = cpu_percent(node.proc.pid, 3)
        s = Stream(node, procs, workdir, source, 0, transcode=transcode)
        s.wait_publishing()
        s.subscribe(window + 20)
        time.sleep(5)  # let the pipelines and ICE settle
        cpu = cpu_percent(node.proc.pid, window)
        frames = s.decoded_frames()
        return dict(mode=transcode, idle_cpu=idle_cpu, cpu=cpu, frames=frames,
                    rss_kib=rss_kib(node.proc.pid))
    finally:
        node.stop()
        procs.kill_all()


def measure_latency(procs, workdir, source, transcode, seconds):
    node = start_node(procs, workdir / f"lat-{transcode}")
    try:
        s = Stream(node, procs, workdir, source, 0, transcode=transcode, stall_every=3)
        s.wait_publishing()
        s.subscribe(seconds + 10, latency=True)
        time.sleep(seconds)
        stalls = [o["mono_us"] for o in s.pub_lines() if o.get("event") == "stall_end"]
        frames = [o["mono_us"] for o in s.sub_lines() if "frame" in o and "mono_us" in o]
        samples = []
        for resume in stalls:
            after = [t for t in frames if t >= resume]
            if not after:
                continue
            # The first decode after a >= 250 ms hole that ends after the resume.
            for prev, cur in zip(frames, frames[1:]):
                if cur >= resume and cur - prev >= 250_000:
                    samples.append((cur - resume) / 1000.0)
                    break
        return dict(mode=transcode, samples=samples)
    finally:
        node.stop()
        procs.kill_all()


def measure_many(procs, workdir, source, n, seconds):
    node = start_node(procs, workdir / f"many-{n}")
    try:
        time.sleep(1)
        rss0 = rss_kib(node.proc.pid)
        streams = [Stream(node, procs, workdir, source, i) for i in range(n)]
        for s in streams:
            s.wait_publishing(timeout=120)
        rss_pub = rss_kib(node.proc.pid)
        for s in streams:
            s.subscribe(seconds + 30)
        time.sleep(8)  # ICE + first keyframe for everyone
        base = [s.decoded_frames() for s in streams]
        cpu = cpu_percent(node.proc.pid, seconds)
        got = [s.decoded_frames() - b for s, b in zip(streams, base)]
        rss_n = rss_kib(node.proc.pid)
        expected = 30 * seconds
        return dict(n=n, rss0=rss0, rss_pub=rss_pub, rss_n=rss_n, cpu=cpu, seconds=seconds,
                    expected=expected, got=got)
    finally:
        node.stop()
        procs.kill_all()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--window", type=int, default=15, help="seconds per CPU measurement")
    ap.add_argument("--latency-seconds", type=int, default=20)
    ap.add_argument("--workdir", default="/tmp/streamkeeper-bench")
    args = ap.parse_args()
    for tool in (harness.DAEMON, harness.OBS_PUBLISHER, harness.WHEP_CLIENT):
        if not Path(tool).exists():
            sys.exit(f"missing {tool}: build first (bench/bench.sh does)")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = make_source(workdir)
    procs = harness.ProcessGroup()
    results = {}
    try:
        print(f"== streamkeeper benchmark ({os.cpu_count()} cores; 720p30 ~2.5 Mbit/s H.264 "
              f"+ AAC; CPU % of one core) ==", flush=True)
        for mode in ("never", "always"):
            r = measure_one(procs, workdir, source, mode, args.window)
            results[f"one_{mode}"] = r
            label = "passthrough" if mode == "never" else "transcode  "
            print(f"{label}: daemon CPU {r['cpu']:6.1f} % per stream with 1 subscriber "
                  f"(idle {r['idle_cpu']:.1f} %), RSS {r['rss_kib'] / 1024:.1f} MiB, "
                  f"subscriber decoded {r['frames']} frames", flush=True)
        for mode in ("never", "always"):
            r = measure_latency(procs, workdir, source, mode, args.latency_seconds)
            results[f"latency_{mode}"] = r
            label = "passthrough" if mode == "never" else "transcode  "
            if r["samples"]:
                s = sorted(r["samples"])
                print(f"{label}: glass-to-glass latency median {statistics.median(s):.0f} ms, "
                      f"min {s[0]:.0f} ms, max {s[-1]:.0f} ms ({len(s)} marks)", flush=True)
            else:
                print(f"{label}: glass-to-glass latency: no marks matched", flush=True)
        r = measure_many(procs, workdir, source, args.streams, args.window)
        results["many"] = r
        growth = (r["rss_n"] - r["rss0"]) / max(r["n"], 1) / 1024
        dropped = [max(r["expected"] - g, 0) for g in r["got"]]
        print(f"{r['n']} passthrough streams + {r['n']} subscribers: daemon CPU {r['cpu']:.1f} %,"
              f" RSS {r['rss0'] / 1024:.1f} -> {r['rss_n'] / 1024:.1f} MiB "
              f"({growth:.2f} MiB per stream incl. its subscriber)", flush=True)
        print(f"  decoded frames per subscriber in {r['seconds']} s (expected {r['expected']}): "
              f"min {min(r['got'])}, median {statistics.median(r['got']):.0f}, "
              f"max {max(r['got'])}; dropped total {sum(dropped)} "
              f"({100.0 * sum(dropped) / (r['expected'] * r['n']):.1f} %)", flush=True)
    finally:
        procs.kill_all()
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        print(f"(raw figures in {workdir / 'results.json'})")


if __name__ == "__main__":
    main()
