#!/usr/bin/python3
"""Per-stage timeline of reconnecting publishers (bench_failover.py's "ingress node killed"
trial): runs that trial N times on a 3-node cluster with the nodes' SK_TIMING debug lines on
(G_MESSAGES_DEBUG), keeps every node log (a killed node's log is renamed, not overwritten,
when it restarts), then prints per trial every timing line of every node between the
publisher's successful TCP connect and its second TrackPublished, in ms after that connect.

    flock /tmp/sk-bench.lock unshare -n sh -c \\
        'ip link set lo up && /usr/bin/python3 bench/reconnect_timeline.py --trials 10'

What it showed (December 2026, 2-core machine shared with other work), ms after connect:
  * RTMP handshake, connect, publish: 1-2; ingress lookup + pipeline: at once; first output
    caps (audio, then video): 10-30 on a warm node, 100-240 on the first stream of a
    (re)started node (plugin loading, gst-libav ~100 ms); join + TrackPublished: +1.
  * Room hosted on another node (proxy): session with the first track, POST, restarted ~10 ms
    later for the second track; host answers ~30 ms after the POST; ICE + DTLS +75-85 ms;
    the host published the tracks with their first depayloaded sample, after its 100 ms
    jitter buffer: +110 ms. Total 250-280 ms quiet, up to ~370 under load.
Fixed by loading the plugins at start, one POST with every announced track, and the host
publishing the announced tracks when the POST arrives: ~25-110 ms.
"""

import argparse
import json
import os
import re
import secrets
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(REPO / "tests" / "tools"))
os.environ.setdefault("SK_NODE_DEBUG", "sk-rooms sk-ingress sk-pipelines sk-rtmp")

import bench_failover as bf  # noqa: E402
import cluster  # noqa: E402
import harness  # noqa: E402

TIMING = re.compile(r"(\S+)-DEBUG: \S+: timing (\d+) (.*)")


def sse_events(path):
    return [json.loads(line[6:]) for line in path.read_text().splitlines()
            if line.startswith("data: ")]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--workdir", default="/tmp/sk-reconnect-timeline")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)

    with cluster.Cluster(workdir / f"cluster-{secrets.token_hex(3)}", nodes=3,
                         cluster={"heartbeat_ms": 200, "lease_ttl_ms": 1000},
                         node_args=["--room-empty-timeout-ms", "1000"]) as c:
        restarts = {}
        restart = c.restart

        def keep_log_restart(node, timeout=30):
            n = c._node(node)
            k = restarts[n.node_id] = restarts.get(n.node_id, 0) + 1
            os.rename(n.log_path, f"{n.log_path}.{k}")
            return restart(node, timeout)

        c.restart = keep_log_restart
        stats = bf.Stats()
        for i in range(args.trials):
            bf.trial_ingress_killed(c, stats, i, c.workdir)
        cwd = c.workdir
        pubs = list(cwd.glob("pub-obs-*.log"))

    lines = []
    for f in cwd.glob("n*.log*"):
        node = f.name.split(".")[0]
        for line in f.read_text(errors="replace").splitlines():
            m = TIMING.search(line)
            if m:
                lines.append((int(m.group(2)), node, m.group(1), m.group(3)))
    lines.sort()
    for i in range(args.trials):
        evs = sse_events(cwd / f"ingress-{i:02d}.sse")
        gone = [e for e in evs if e["event"] == "ParticipantDisconnected"][0]
        sid = [e for e in evs if e["event"] == "ParticipantConnected"
               and e["seq"] > gone["seq"]][0]["participant"]["sid"]
        tps = [e for e in evs if e["event"] == "TrackPublished"
               and e["participant"]["sid"] == sid]
        end = max(e["at_ms"] for e in tps[:2])
        connect = max(o["t_ms"] for p in pubs for o in harness.parse_json_lines(
            p.read_text(errors="replace")) if o.get("event") == "connecting"
            and gone["at_ms"] - 3000 < o["t_ms"] < end)
        print(f"=== trial {i}: connect -> both TrackPublished {end - connect} ms "
              f"(written by {tps[0]['node']}, ingress on {tps[0]['participant']['ingress_node']})")
        for e in evs:
            if e["seq"] > gone["seq"] and e["at_ms"] <= end + 5:
                print(f"   {e['at_ms'] - connect:+6d} event seq {e['seq']} {e['event']} "
                      f"({e['node']})")
        for t, node, domain, text in lines:
            if connect - 300 <= t <= end + 20:
                print(f"   {t - connect:+6d} {node} {domain}: {text}")
    for name, values in stats.figures.items():
        bf.summary(name, values)


if __name__ == "__main__":
    main()
