#!/usr/bin/python3
"""streamkeeper benchmark: CPU and memory per stream, glass-to-glass latency, and N
concurrent passthrough streams with subscribers. Run through bench/bench.sh (it builds,
and isolates the run in a network namespace). Prints a table of figures; asserts nothing.

Method:
  * CPU % of the daemon only (one core = 100 %): utime + stime of the daemon's PID from
    /proc/PID/stat, sampled every second over a steady window (--window s) that starts after
    the subscriber decodes and a warm-up (--warmup s). Publishers (sk-obs-publisher) and
    subscribers (sk-whep-client) are separate processes; their CPU is not counted. Printed:
    the window's mean and the p50/p95/max of the one-second samples. One passthrough stream is
    measured twice: with a subscriber that decodes (a fifth of a core of this 2-core machine,
    beside the daemon) and with one that only counts frames (the daemon sends both the same
    packets). The cost per stream of a node that carries streams is the N-stream run's daemon
    CPU / N: a lone stream on this otherwise idle VM also pays for waking idle vCPUs for each
    packet (two nice-19 busy loops beside it took its figure from 3.4 to 2.9 % on 2026-12-03).
  * Memory: VmRSS of the daemon (/proc/PID/status). Per stream = (RSS with N streams and N
    subscribers - RSS of the idle daemon) / N, from the N-stream run, so one-time costs
    (plugin loading, DTLS certificate) are spread as in production.
  * Glass-to-glass latency. Every --stall-every s sk-obs-publisher drops video frames for at
    least 400 ms, up to the next keyframe, and prints (CLOCK_MONOTONIC) when it sends that
    keyframe, on its normal schedule; sk-whep-client --latency prints the same clock for every
    decoded frame. The first frame decoded after the hole is that keyframe, so latency = its
    decode time - its send time. Same machine, same clock: no sync needed. It covers RTMP
    ingest, the node's pipeline (and transcode), WebRTC transport, the receiver's jitter
    buffer and the decoder. (Marks every 1 s with a 0.5 s GOP gave a p50 of ~200 ms in
    passthrough against ~55 ms with the default 3 s: not understood yet, see the report.)
  * N concurrent passthrough streams (default 20), one subscriber each. Subscribers are
    started one after another (each once its POST is answered). The first --decode of them
    decode H.264 (avdec_h264); the others count depayloaded frames (--no-decode): 20 decoders
    of 720p30 would saturate the 2 cores the daemon runs on, which measures the subscribers,
    not the node. Dropped frames come from the RTP timestamps of the whole video frames that
    leave each subscriber's jitter buffer (the sender's timestamps, not the frames' PTS, which
    the jitter buffer shifts when it resets its clock skew): over the window, each step
    between received frames of k frame durations is k - 1 dropped frames (k rounded down after
    adding 0.1, so that the publisher's loop point, a step of ~1.8, is none), expected =
    received + dropped. Each subscriber's jitter-buffer statistics (lost, late, duplicated,
    retransmissions) are in its log.
    --client-nice N runs those subscribers at nice N, their autogroup included (each is a
    session of its own, and the kernel shares the CPU between autogroups): they stand in for
    remote viewers, not for load on the node. Off by default. --sub-jitterbuffer-ms sets
    those subscribers' jitter buffer (a packet that a starved subscriber reads later than
    that is dropped by it, and its NACK comes too late for the node's retransmission buffer).
    Printed with it: the whole machine's busy % over the window and the UDP datagrams the
    kernel dropped (receive/send buffers full), to tell the node's losses from the clients'.
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
from harness import cpu_seconds, rss_kib  # noqa: E402
import machine  # noqa: E402

FPS = 30
FRAME_NS = 1_000_000_000 / FPS
RTP_FRAME_TICKS = 90_000 / FPS  # H.264's RTP clock is 90 kHz


def udp_counters():
    """This network namespace's UDP counters (/proc/net/snmp): datagrams the kernel dropped
    for a full receive or send buffer show up here, not at the applications."""
    rows = [line.split() for line in open("/proc/net/snmp") if line.startswith("Udp:")]
    return {k: int(v) for k, v in zip(rows[0][1:], rows[1][1:])}


def cpu_seconds_of(procs):
    """CPU seconds of the live processes among @procs (Popen objects), summed."""
    total = 0.0
    for p in procs:
        try:
            total += cpu_seconds(p.pid)
        except (OSError, IndexError):
            pass  # ended
    return total


def machine_busy():
    """(busy, total) jiffies of the whole machine (/proc/stat), all cores."""
    f = [int(x) for x in open("/proc/stat").readline().split()[1:]]
    idle = f[3] + f[4]
    return sum(f) - idle, sum(f)


def sample_cpu(pid, seconds):
    """Mean CPU % over @seconds plus the one-second samples (clock ticks are 10 ms, so a
    one-second sample has a resolution of 1 %)."""
    c_start, t_start = cpu_seconds(pid), time.monotonic()
    samples, c0, t0 = [], c_start, t_start
    while time.monotonic() - t_start < seconds:
        time.sleep(1.0)
        c1, t1 = cpu_seconds(pid), time.monotonic()
        samples.append(100.0 * (c1 - c0) / (t1 - t0))
        c0, t0 = c1, t1
    return dict(mean=100.0 * (c0 - c_start) / (t0 - t_start), samples=samples)


def lower_priority(nice):
    """In a child before exec: run at @nice. Each process gets a session of its own
    (harness.ProcessGroup), and with sched_autogroup_enabled the scheduler shares the CPU
    between sessions, not threads, so the session's autogroup gets the nice value too."""
    os.nice(nice)
    try:
        Path("/proc/self/autogroup").write_text(str(nice))
    except OSError:
        pass


def pct(values, q):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, int(round(q / 100.0 * len(v) + 0.5)) - 1))]


def make_source(workdir, seconds=10, gop=60, name="bench-720p30.flv"):
    """720p30 ~2.5 Mbit/s H.264 (no B-frames) + AAC, looped by sk-obs-publisher."""
    path = workdir / name
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-t", str(seconds), "-c:v", "libx264", "-preset", "veryfast", "-bf", "0",
             "-g", str(gop), "-pix_fmt", "yuv420p", "-b:v", "2500k", "-maxrate", "2500k",
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
        self.sub_log = None

    def wait_publishing(self, timeout=60):
        self.node.api.wait_status(self.ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout)

    def subscribe(self, seconds, decode=True, wait_answer=True, nice=0, jitterbuffer_ms=None):
        argv = [harness.WHEP_CLIENT, "--url", self.node.whep_url(self.room),
                "--ice-address", "127.0.0.1", "--frames", "100000000",
                "--timeout", str(int(seconds)), "--delete", "--latency"]
        if not decode:
            argv.append("--no-decode")
        if jitterbuffer_ms is not None:
            argv += ["--jitterbuffer-ms", str(jitterbuffer_ms)]
        self.decode = decode
        self.answer_failures = []
        for attempt in range(3):
            self.sub_log = self.workdir / f"sub-{self.index}-{attempt}.log"
            self.sub = self.procs.start(argv, self.sub_log, stderr=subprocess.DEVNULL,
                                        preexec_fn=(lambda: lower_priority(nice)) if nice else None)
            if not wait_answer:
                return
            try:
                state = harness.wait_until(lambda: self.answered(), 30,
                                           what=f"WHEP answer for {self.room}")
            except AssertionError as exc:
                state = str(exc)
            if state is True:
                return
            self.answer_failures.append(state[-200:])  # reported, then retried
            print(f"  (subscriber of {self.room}: {state[-160:]}; retrying)", flush=True)
        raise AssertionError(f"no WHEP answer for {self.room}: {self.answer_failures}")

    def answered(self):
        """True once answered, a string (the error) if the subscriber ended without."""
        lines = self.sub_lines()
        if any("result" in o for o in lines):
            return f"subscriber ended: {lines[-1]}"
        return any("location" in o for o in lines)

    def sub_lines(self):
        return harness.parse_json_lines(Path(self.sub_log).read_text(errors="replace"))

    def pub_lines(self):
        return harness.parse_json_lines(Path(self.pub_log).read_text(errors="replace"))

    def frames(self):
        """[(mono_us, pts_ns)] of every frame the subscriber decoded (or depayloaded)."""
        return [(o["mono_us"], o["pts_ns"]) for o in self.sub_lines()
                if "frame" in o and "mono_us" in o]

    def rtp_frames(self):
        """[(mono_us, RTP timestamp unwrapped)] of every whole video frame out of the
        subscriber's jitter buffer."""
        out, last, wraps = [], None, 0
        for o in self.sub_lines():
            if "rtp_frame" not in o or "mono_us" not in o:
                continue
            ts = o["rtp_frame"]
            if last is not None and last - ts > 1 << 31:
                wraps += 1
            last = ts
            out.append((o["mono_us"], ts + (wraps << 32)))
        return out

    def counted_frames(self):
        """(frames, one frame's step): the RTP timestamps of whole frames when the
        subscriber printed them (the sender's, exact), else the frames' PTS (which the
        jitter buffer shifts when it resets its clock skew: a shift looked like lost frames)."""
        rtp = self.rtp_frames()
        return (rtp, RTP_FRAME_TICKS) if rtp else (self.frames(), FRAME_NS)

    def wait_frames(self, timeout=30):
        harness.wait_until(lambda: len(self.frames()) > 0, timeout,
                           what=f"first frame at the subscriber of {self.room}")


def frames_in_window(frames, t0_us, t1_us, step=FRAME_NS):
    """Frames received in [t0, t1): (received, expected, dropped); @frames are
    (mono_us, timestamp) and one frame lasts @step in those timestamps."""
    pts = sorted({p for t, p in frames if t0_us <= t < t1_us and p >= 0})
    if not pts:
        return 0, round((t1_us - t0_us) / 1e6 * FPS), round((t1_us - t0_us) / 1e6 * FPS)
    # Each step between frames holds floor(step / frame + 0.1) - 1 missing frames: a missing
    # frame makes a step of exactly 2 frames (RTP timestamps), while the publisher's loop point
    # makes one of ~1.8 (its audio track is 26 ms longer than its video, so every pass of the
    # file starts that much after the last video frame); that is not a frame lost.
    missing = sum(max(int((b - a) / step + 0.1) - 1, 0) for a, b in zip(pts, pts[1:]))
    return len(pts), len(pts) + missing, missing


def start_node(procs, workdir, extra=()):
    workdir.mkdir(parents=True, exist_ok=True)
    return harness.Node(procs, workdir, node_id="bench", extra_args=extra).start(timeout=30)


def measure_one(procs, workdir, source, transcode, window, warmup, decode=True):
    wd = workdir / f"one-{transcode}{'' if decode else '-counting'}"
    node = start_node(procs, wd)
    try:
        time.sleep(1)
        pid = node.proc.pid
        idle = sample_cpu(pid, 3)
        s = Stream(node, procs, wd, source, 0, transcode=transcode)
        s.wait_publishing()
        s.subscribe(window + warmup + 40, decode=decode)
        s.wait_frames()
        time.sleep(warmup)
        t0 = time.monotonic_ns() // 1000
        cpu = sample_cpu(pid, window)
        t1 = time.monotonic_ns() // 1000
        frames, step = s.counted_frames()
        got, expected, dropped = frames_in_window(frames, t0, t1, step)
        return dict(mode=transcode, idle_cpu=idle["mean"], cpu=cpu["mean"],
                    cpu_samples=cpu["samples"], frames=got, expected=expected,
                    dropped=dropped, rss_kib=rss_kib(pid))
    finally:
        node.stop()
        procs.kill_all()


def measure_latency(procs, workdir, source, transcode, seconds, stall_every):
    wd = workdir / f"lat-{transcode}"
    node = start_node(procs, wd)
    try:
        s = Stream(node, procs, wd, source, 0, transcode=transcode, stall_every=stall_every)
        s.wait_publishing()
        s.subscribe(seconds + 15)
        s.wait_frames()
        time.sleep(seconds)
        stalls = [o["mono_us"] for o in s.pub_lines() if o.get("event") == "stall_end"]
        frames = [t for t, _ in s.frames()]
        samples = []
        for resume in stalls:
            # The first decode after a >= 250 ms hole that ends after the resume.
            for prev, cur in zip(frames, frames[1:]):
                if cur >= resume and cur - prev >= 250_000:
                    samples.append((cur - resume) / 1000.0)
                    break
        return dict(mode=transcode, samples=samples, marks=len(stalls))
    finally:
        node.stop()
        procs.kill_all()


def measure_many(procs, workdir, source, n, window, warmup, decode, client_nice,
                 jitterbuffer_ms):
    wd = workdir / f"many-{n}"
    node = start_node(procs, wd)
    try:
        time.sleep(1)
        pid = node.proc.pid
        rss0 = rss_kib(pid)
        streams = [Stream(node, procs, wd, source, i, transcode="never") for i in range(n)]
        for s in streams:
            s.wait_publishing(timeout=120)
        time.sleep(2)
        rss_pub = rss_kib(pid)
        cpu_pub = sample_cpu(pid, 5)
        for i, s in enumerate(streams):
            # Generous: on a loaded machine starting 20 subscribers alone can take a minute,
            # and one that times out before the window ends counts as all frames dropped.
            s.subscribe(window + warmup + 60 + 10 * n, decode=i < decode, nice=client_nice,
                        jitterbuffer_ms=jitterbuffer_ms)
        for s in streams:
            s.wait_frames()
        time.sleep(warmup)
        t0 = time.monotonic_ns() // 1000
        pubs, subs_p = [s.pub for s in streams], [s.sub for s in streams]
        udp0, busy0 = udp_counters(), machine_busy()
        pub0, sub0, w0 = cpu_seconds_of(pubs), cpu_seconds_of(subs_p), time.monotonic()
        cpu = sample_cpu(pid, window)
        pub1, sub1, w1 = cpu_seconds_of(pubs), cpu_seconds_of(subs_p), time.monotonic()
        udp1, busy1 = udp_counters(), machine_busy()
        t1 = time.monotonic_ns() // 1000
        rss_n = rss_kib(pid)
        subs = []
        for s in streams:
            frames, step = s.counted_frames()
            got, expected, dropped = frames_in_window(frames, t0, t1, step)
            subs.append(dict(room=s.room, decode=s.decode, got=got, expected=expected,
                             dropped=dropped, answer_failures=s.answer_failures))
        return dict(n=n, decode=min(decode, n), rss0=rss0, rss_pub=rss_pub, rss_n=rss_n,
                    cpu_pub=cpu_pub["mean"], cpu=cpu["mean"], cpu_samples=cpu["samples"],
                    window=window, subs=subs,
                    udp={k: udp1[k] - udp0.get(k, 0) for k in udp1},
                    machine_busy=100.0 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1),
                    publishers_cpu=100.0 * (pub1 - pub0) / (w1 - w0),
                    subscribers_cpu=100.0 * (sub1 - sub0) / (w1 - w0))
    finally:
        node.stop()
        procs.kill_all()


class Table:
    def __init__(self):
        self.rows = []

    def add(self, figure, value, p50="", p95="", mx="", goal=""):
        self.rows.append((figure, value, p50, p95, mx, goal))

    def print(self):
        head = ("figure", "value", "p50", "p95", "max", "goal")
        widths = [max(len(str(r[i])) for r in self.rows + [head]) for i in range(6)]
        fmt = "  ".join(f"{{:<{widths[0]}}}" if i == 0 else f"{{:>{widths[i]}}}"
                        for i in range(6))
        print(fmt.format(*head))
        print("  ".join("-" * w for w in widths))
        for r in self.rows:
            print(fmt.format(*r), flush=True)


def f1(x):
    return f"{x:.1f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--streams", type=int, default=20)
    ap.add_argument("--decode", type=int, default=4,
                    help="subscribers that decode H.264 in the N-stream run (others count)")
    ap.add_argument("--window", type=int, default=20, help="seconds per CPU/frames window")
    ap.add_argument("--warmup", type=int, default=5, help="seconds after the first frame")
    ap.add_argument("--latency-seconds", type=int, default=45)
    ap.add_argument("--stall-every", type=float, default=3.0)
    ap.add_argument("--skip", default="", help="comma list of phases to skip: one,latency,many")
    ap.add_argument("--sub-jitterbuffer-ms", type=int, default=None,
                    help="the N-stream subscribers' jitter buffer (sk-whep-client's default: "
                         "200, webrtcbin's); a player's is often larger")
    ap.add_argument("--client-nice", type=int, default=0,
                    help="nice value (autogroup included) of the N-stream run's subscribers")
    ap.add_argument("--workdir", default="/tmp/streamkeeper-bench")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for tool in (harness.DAEMON, harness.OBS_PUBLISHER, harness.WHEP_CLIENT):
        if not Path(tool).exists():
            sys.exit(f"missing {tool}: build first (bench/bench.sh does)")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = make_source(workdir)
    procs = harness.ProcessGroup()
    results = {}
    table = Table()
    label = {"never": "passthrough", "always": "transcode"}
    print(f"== streamkeeper benchmark ({os.cpu_count()} cores; 720p30 ~2.5 Mbit/s H.264 "
          f"+ AAC 48 kHz; daemon CPU in % of one core, one-second samples over "
          f"{args.window} s) ==", flush=True)
    reference = [machine.reference_seconds()]
    try:
        if "one" not in skip:
            # The subscriber decoding on this machine takes a fifth of a core beside the
            # daemon; one that only counts frames gets the same packets from the daemon and
            # leaves it the machine, as a viewer elsewhere would.
            for mode, decode in (("never", True), ("never", False), ("always", True)):
                r = measure_one(procs, workdir, source, mode, args.window, args.warmup, decode)
                results[f"one_{mode}" + ("" if decode else "_counting")] = r
                c = r["cpu_samples"]
                sub = "decoding" if decode else "counting frames, not decoding"
                table.add(f"{label[mode]}: daemon CPU %, 1 stream + 1 subscriber ({sub})",
                          f1(r["cpu"]), f1(pct(c, 50)), f1(pct(c, 95)), f1(max(c)),
                          "<= 3" if mode == "never" else "")
                table.add(f"{label[mode]}: frames at the subscriber (dropped)",
                          f"{r['frames']}/{r['expected']} ({r['dropped']})")
        if "latency" not in skip:
            for mode in ("never", "always"):
                r = measure_latency(procs, workdir, source, mode, args.latency_seconds,
                                    args.stall_every)
                results[f"latency_{mode}"] = r
                s = r["samples"]
                if s:
                    table.add(f"{label[mode]}: glass-to-glass ms ({len(s)}/{r['marks']} marks)",
                              f"{statistics.mean(s):.0f}", f"{pct(s, 50):.0f}",
                              f"{pct(s, 95):.0f}", f"{max(s):.0f}",
                              "p50 <= 150" if mode == "never" else "")
                else:
                    table.add(f"{label[mode]}: glass-to-glass ms", "no marks matched")
        if "many" not in skip:
            r = measure_many(procs, workdir, source, args.streams, args.window, args.warmup,
                             args.decode, args.client_nice, args.sub_jitterbuffer_ms)
            results["many"] = r
            n = r["n"]
            growth = (r["rss_n"] - r["rss0"]) / max(n, 1) / 1024
            growth_pub = (r["rss_pub"] - r["rss0"]) / max(n, 1) / 1024
            c = r["cpu_samples"]
            table.add(f"{n} passthrough streams, publishers only: daemon CPU %",
                      f1(r["cpu_pub"]))
            table.add(f"{n} passthrough streams + {n} subscribers: daemon CPU %", f1(r["cpu"]),
                      f1(pct(c, 50)), f1(pct(c, 95)), f1(max(c)))
            table.add("  whole machine busy % (daemon, publishers, subscribers; all cores)",
                      f1(r["machine_busy"]))
            table.add(f"  CPU % of the {n} publishers / of the {n} subscribers (one core = 100)",
                      f"{r['publishers_cpu']:.0f} / {r['subscribers_cpu']:.0f}")
            table.add("  per stream (daemon CPU % / N)", f1(r["cpu"] / n), "", "", "", "<= 3")
            table.add(f"RSS MiB: idle -> {n} streams -> + {n} subscribers",
                      f"{r['rss0'] / 1024:.0f} -> {r['rss_pub'] / 1024:.0f} -> "
                      f"{r['rss_n'] / 1024:.0f}")
            table.add("  RSS growth MiB per stream (with its subscriber)", f"{growth:.2f}",
                      "", "", "", "<= 15")
            table.add("  RSS growth MiB per stream (publisher only)", f"{growth_pub:.2f}")
            for kind, dec in (("decoding", True), ("counting", False)):
                subs = [x for x in r["subs"] if x["decode"] == dec]
                if not subs:
                    continue
                got = [x["got"] for x in subs]
                table.add(f"frames per {kind} subscriber in {r['window']} s ({len(subs)} subs)",
                          f"min {min(got)}", f"{pct(got, 50)}", f"{pct(got, 95)}", f"{max(got)}")
            udp = r["udp"]
            table.add("UDP datagrams dropped by the kernel in the window (rcvbuf/sndbuf)",
                      f"{udp.get('RcvbufErrors', 0)}/{udp.get('SndbufErrors', 0)}"
                      f" of {udp.get('InDatagrams', 0)} in")
            fails = sum(len(x["answer_failures"]) for x in r["subs"])
            table.add("WHEP POSTs that failed and were retried", str(fails), "", "", "", "0")
            dropped = sum(x["dropped"] for x in r["subs"])
            expected = sum(x["expected"] for x in r["subs"])
            table.add(f"dropped frames, all {n} subscribers",
                      f"{dropped}/{expected} ({100.0 * dropped / max(expected, 1):.2f} %)",
                      "", "", str(max(x["dropped"] for x in r["subs"])), "0")
    finally:
        procs.kill_all()
        reference.append(machine.reference_seconds())
        results["reference_s"] = reference
        table.add(f"{machine.REFERENCE_LABEL}, start / end",
                  f"{reference[0]:.2f} / {reference[1]:.2f}")
        table.print()
        (workdir / "results.json").write_text(json.dumps(results, indent=2))
        print(f"(raw figures and logs in {workdir}; per-subscriber frames in results.json)")


if __name__ == "__main__":
    main()
