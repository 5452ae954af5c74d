"""How fast this machine is right now, printed next to the benchmarks' CPU figures.

A CPU % of the daemon is time over wall time, so it inherits the machine's speed. On a shared
VM that speed drifts: on 2026-12-03 the same fixed workload took 0.30 CPU seconds at 17:25 and
0.42 at 18:36 (+40 %), and the daemon's CPU for one stream moved from 3.3 % to 4.0-4.4 % with
it. A figure is only comparable with another measured at the same reference time (or side by
side, as bench/bench_ab.py does).
"""

import os
import subprocess

# 60 s of stereo audio into Opus with the node's default settings: media work on one core,
# no I/O, no clock (runs as fast as it can).
REFERENCE = ["gst-launch-1.0", "-q", "audiotestsrc", "wave=pink-noise", "num-buffers=3000",
             "samplesperbuffer=960", "!", "audio/x-raw,rate=48000,channels=2", "!", "opusenc",
             "bitrate=96000", "complexity=5", "frame-size=40", "!", "fakesink"]
REFERENCE_LABEL = "machine speed: CPU s of a fixed workload (opusenc, 60 s of audio)"


def reference_seconds(runs=3):
    """Median CPU seconds (user + system) of REFERENCE over @runs runs."""
    times = []
    for _ in range(runs):
        proc = subprocess.Popen(REFERENCE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"reference workload failed ({proc.returncode}): {REFERENCE}")
        times.append(usage.ru_utime + usage.ru_stime)
    return sorted(times)[len(times) // 2]
