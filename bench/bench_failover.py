#!/usr/bin/python3
"""streamkeeper failover benchmark: detection, reconnection and media gap over repeated
kill -9 of cluster nodes. Run through bench/bench_failover.sh (it builds, and isolates the
run in a network namespace). Prints p50/p95/max per kind of trial; asserts nothing, but
counts and prints every lost/duplicated event and every orphaned or doubled room.

The cluster is the integration tests' harness (tests/integration/cluster.py): Redis master +
replica + 3 Sentinels + HAProxy + 3 nodes on 127.0.0.1, DESIGN.md's lease defaults
(heartbeat 200 ms, TTL 1 s) unless --heartbeat-ms/--ttl-ms say otherwise.

Kinds of trial (--trials each):
  * ingress node killed: an OBS-like sk-obs-publisher --reconnect streams through HAProxy
    into a room of its own, so its node runs the ingress and hosts the room. kill -9 of that
    node; figure = at_ms of the ParticipantDisconnected (node_failure) a survivor writes -
    the kill's epoch ms (same clock: both time.time()/g_get_real_time on this machine).
  * reconnecting publisher (same trials): the publisher reconnects like OBS (2 s, x1.5);
    figure = at_ms of the new participant's TrackPublished - t_ms of the publisher's
    "connecting" line for the attempt that succeeded (its new TCP connect). Printed for the
    first and for the last of its two tracks; and from "handshake_done" too.
  * room host killed while its ingress lives (subscriber media gap): an anchor publisher on
    node A makes A host the room; a second publisher connected to node B publishes into it
    remotely; ONE WHEP viewer of the second one decodes, started with
    sk-whep-client --resubscribe-after-ms (like a player: no frame for that long, it POSTs
    again through HAProxy, follows the 307 to the new host, retries 5xx every 100 ms); kill -9
    of A. Figure = first frame decoded after - last frame decoded before, both from the same
    process on one CLOCK_MONOTONIC (sk-whep-client --latency), with its parts: kill -> the
    viewer gives up its session, -> the 201 of its new session, -> first frame decoded; and
    kill -> RoomMoved in the log. Needs remote publication
    ("proxy mode"); without it the trial is skipped with a message (detected as: the second
    publisher's participant never appears, or the store's placement no longer names the
    anchor's node, or its ingress_node is the room's host, or a RoomMoved was written).

After every trial: the room's full SSE log (followed through HAProxy, resuming with
Last-Event-ID across the kill) goes through tests/tools/check_events.py (all invariants, final,
with the kill), the killed node is restarted (a new incarnation, same id) so the cluster keeps
three nodes, and the store is read: every placement must name a live incarnation (no orphan)
and no room may be hosted by two nodes. SSE logs and node logs stay in --workdir.
"""

import argparse
import os
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "tools"))

import check_events  # noqa: E402
import cluster  # noqa: E402
import harness  # noqa: E402


def pct(values, q):
    """Nearest-rank percentile."""
    v = sorted(values)
    if not v:
        return float("nan")
    return v[min(len(v) - 1, max(0, int(round(q / 100.0 * len(v) + 0.5)) - 1))]


def summary(label, values, unit="ms"):
    if not values:
        print(f"  {label:<64} no samples")
        return
    print(f"  {label:<64} n={len(values):<3} p50 {pct(values, 50):7.0f} {unit:<2}  "
          f"p95 {pct(values, 95):7.0f} {unit:<2}  max {max(values):7.0f} {unit}")


def pub_lines(pub):
    return harness.parse_json_lines(Path(pub.log_path).read_text(errors="replace"))


def reconnect_marks(pub, after_ms):
    """(connecting t_ms, handshake_done t_ms) of the attempt that reached "publishing"
    after @after_ms, or None while there is none."""
    connecting = handshake = None
    for o in pub_lines(pub):
        ev, t = o.get("event"), o.get("t_ms", 0)
        if ev == "connecting":
            connecting, handshake = t, None
        elif ev == "handshake_done":
            handshake = t
        elif ev == "publishing" and t > after_ms and connecting is not None \
                and connecting > after_ms:
            return connecting, handshake
    return None


class Stats:
    def __init__(self):
        self.figures = {}
        self.units = {}
        self.event_errors = []    # (trial, message)
        self.store_problems = []  # (trial, message)
        self.trials = {}

    def add(self, name, value, unit="ms"):
        self.figures.setdefault(name, []).append(value)
        self.units[name] = unit

    def count(self, kind):
        self.trials[kind] = self.trials.get(kind, 0) + 1


def finish_trial(c, stats, label, follower, kills, workdir):
    """Checks a trial's full event log, restarts what was killed, checks the store."""
    follower.stop()
    c.followers.remove(follower)
    follower.save(workdir / f"{label}.sse")
    # Timing is a figure here, not a violation: invariant 5's deadline is left wide open.
    errors = check_events.check(list(follower.events), final=True, killed=kills,
                                restarted=c.restarts,
                                require_complete=True, deadline_ms=60_000)
    stats.event_errors += [(label, e) for e in errors]
    for node_id, _ in kills:
        n = c.node(node_id)
        if not n.alive():
            c.restart(n)
    problems = c.wait_no_orphans(timeout=15)
    stats.store_problems += [(label, p) for p in problems]
    status = "ok" if not errors and not problems else \
        f"{len(errors)} event errors, {len(problems)} store problems"
    print(f"    {label}: {status}", flush=True)


def trial_ingress_killed(c, stats, i, workdir):
    label = f"ingress-{i:02d}"
    room = f"fob-ing-{i}-{secrets.token_hex(3)}"
    ing = c.api.create_ingress(room, identity=f"obs-{i}")
    events = c.follow(room)
    pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    victim = c.node(first["ingress_node"])

    kill_ms = c.kill(victim)
    gone = events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure",
                             psid=first["sid"])[0]
    stats.add("ingress node killed: kill -> ParticipantDisconnected",
              gone["at_ms"] - kill_ms)

    def second_published(evs):
        pcs = [e for e in evs if e.get("event") == "ParticipantConnected"
               and e["participant"]["sid"] != first["sid"]]
        if not pcs:
            return None
        sid = pcs[0]["participant"]["sid"]
        tps = [e for e in evs if e.get("event") == "TrackPublished"
               and e["participant"]["sid"] == sid]
        return tps if len(tps) >= 2 else None

    tps = events.wait_for(second_published, timeout=40, what="the reconnected publisher")
    marks = harness.wait_until(lambda: reconnect_marks(pub, kill_ms), 10,
                               what="the publisher's successful reconnect in its log")
    connect_ms, handshake_ms = marks
    at = sorted(e["at_ms"] for e in tps)
    stats.add("reconnect: TCP connect -> first TrackPublished", at[0] - connect_ms)
    stats.add("reconnect: TCP connect -> both TrackPublished", at[-1] - connect_ms)
    # Bimodal on purpose, so print it apart: when the survivor's room hit its empty timeout
    # around the reconnect, the new node waits for that room to be finished and released
    # before it can place it again.
    gone_seq = gone["seq"]
    replaced = any(e.get("event") == "RoomStarted" and gone_seq < e["seq"] < tps[0]["seq"]
                   for e in events.events)
    stats.add("reconnect: TCP connect -> both TrackPublished, room "
              + ("re-placed" if replaced else "still hosted"), at[-1] - connect_ms)
    if handshake_ms is not None:
        stats.add("reconnect: RTMP handshake done -> both TrackPublished",
                  at[-1] - handshake_ms)

    # A clean end, so that the log is complete: the last participant leaves, the room ends.
    pub.stop()
    events.wait_event("RoomFinished", timeout=20,
                      count=1 + len(events.of("RoomFinished")))
    stats.count("ingress")
    finish_trial(c, stats, label, events, [(victim.node_id, kill_ms)], workdir)


class Viewer:
    """sk-whep-client --latency through HAProxy, one decoded-frame line each."""

    def __init__(self, c, room, participant, workdir, name, frames, timeout, resubscribe_ms=0):
        # ?participant= takes the identity (WHEP follows that publisher across reconnects).
        self.log_path = workdir / f"viewer-{name}.log"
        url = f"{c.whep_url(room)}?participant={participant}"
        env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
        with open(self.log_path, "wb") as out:
            self.proc = c.procs.start(
                [harness.WHEP_CLIENT, "--url", url, "--ice-address", "127.0.0.1",
                 "--frames", str(frames), "--timeout", str(timeout), "--latency",
                 "--delete", "--resubscribe-after-ms", str(resubscribe_ms)], stdout=out,
                stderr=subprocess.STDOUT, env=env)

    def lines(self):
        return harness.parse_json_lines(self.log_path.read_text(errors="replace"))

    def frames(self):
        return [o for o in self.lines() if "frame" in o and "mono_us" in o]

    def stop(self):
        harness.ProcessGroup.signal(self.proc, 2)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            harness.ProcessGroup.signal(self.proc, 9)
            self.proc.wait(timeout=5)


def probe_remote_publication(c, workdir):
    """One anchor + one remote publisher: returns (room, anchor, remote pub, events, host,
    remote participant) if the cluster publishes into a room hosted on another node, else
    None after cleaning up."""
    room = f"fob-host-{secrets.token_hex(3)}"
    host, other = c.nodes[0], c.nodes[1]
    ing_a = c.api.create_ingress(room, identity="anchor")
    ing_b = c.api.create_ingress(room, identity="remote")
    events = c.follow(room)
    # Nodes learn other nodes' ingress records with a refresh (1 s): publishing straight to a
    # node before it knows the key is refused (BadName).
    for n, ing in ((host, ing_a), (other, ing_b)):
        harness.wait_until(lambda: n.api.get(f"/v1/ingress/{ing['ingress_id']}").status == 200,
                           10, what=f"{n.node_id} to know ingress {ing['ingress_id']}")
    anchor = c.publish("obs", host.rtmp_url(ing_a["stream_key"]))
    events.wait_event("TrackPublished", count=2, timeout=30, identity="anchor")
    remote = c.publish("obs", other.rtmp_url(ing_b["stream_key"]))
    try:
        events.wait_event("TrackPublished", count=2, timeout=15, identity="remote")
        p = events.of("ParticipantConnected", identity="remote")[-1]["participant"]
        # The store's placement, not GET /v1/rooms (a node that lost the room may still
        # answer for it). Without remote publication the second node takes the room over.
        placed = c.store_view()[0].get(room, ("",))[0]
    except AssertionError:
        p, placed = None, None
    if p is None or p.get("ingress_node") == placed or placed != host.node_id \
            or events.of("RoomMoved"):
        for pub in (remote, anchor):
            if pub.running():
                pub.kill()
        events.stop()
        c.followers.remove(events)
        return None
    return room, anchor, remote, events, host, p


def trial_host_killed(c, stats, i, workdir, probe=None, resubscribe_ms=300):
    label = f"host-{i:02d}"
    if probe is None:
        probe = probe_remote_publication(c, workdir)
        if probe is None:
            return False
    room, anchor, remote, events, host, participant = probe
    viewer = Viewer(c, room, participant["identity"], workdir, label, 100000, 600,
                    resubscribe_ms=resubscribe_ms)
    harness.wait_until(lambda: viewer.frames(), 20, what="the viewer's first frame")
    time.sleep(0.5)

    kill_mono_us = time.monotonic_ns() // 1000
    kill_ms = c.kill(host)
    moved = events.wait_event("RoomMoved", timeout=20)[0]
    stats.add("room host killed: kill -> RoomMoved", moved["at_ms"] - kill_ms)

    def resumed():
        """The gap (last frame before, first frame after) once the viewer decodes again."""
        lines = viewer.lines()
        resub = [o["mono_us"] for o in lines if "resubscribe" in o and o["mono_us"] > kill_mono_us]
        if not resub:
            return None
        frames = [o["mono_us"] for o in lines if "frame" in o and "mono_us" in o]
        if sum(1 for f in frames if f > resub[0]) < 10:
            return None
        pairs = [(a, b) for a, b in zip(frames, frames[1:]) if b > kill_mono_us]
        return max(pairs, key=lambda p: p[1] - p[0]), lines

    got = None
    try:
        got = harness.wait_until(resumed, 30, interval=0.2, what="the viewer to decode again")
    except AssertionError:
        pass
    viewer.stop()
    if got is not None:
        (before, after), lines = got
        stats.add("room host killed: subscriber media gap", (after - before) / 1000.0)
        resub = [o for o in lines if "resubscribe" in o and kill_mono_us < o["mono_us"] < after]
        answers = [o["answer_us"] for o in lines if "answer_us" in o and o["answer_us"] < after]
        retries = [o for o in lines if "post_status" in o and kill_mono_us < o["mono_us"] < after]
        if resub and answers:
            stats.add("  gap part: kill -> viewer gives up its session (no frame for "
                      f"{resubscribe_ms} ms)", (resub[0]["mono_us"] - kill_mono_us) / 1000.0)
            stats.add("  gap part: gives up -> 201 of the new session (POSTs, 307)",
                      (answers[-1] - resub[0]["mono_us"]) / 1000.0)
            stats.add("  gap part: 201 -> first frame decoded", (after - answers[-1]) / 1000.0)
        stats.add("  viewer: POSTs retried (503/conn. refused) per trial", len(retries), unit="")
        stats.add("  viewer: sessions given up per trial", len(resub), unit="")
    else:
        stats.store_problems.append((label, "the viewer never decoded again"))
    if not remote.running() or any(o.get("event") == "disconnected" for o in pub_lines(remote)):
        stats.store_problems.append((label, "the remote publisher's connection dropped"))
    remote.stop()
    if anchor.running():
        anchor.kill()
    events.wait_event("RoomFinished", timeout=20, count=1 + len(events.of("RoomFinished")))
    stats.count("host")
    finish_trial(c, stats, label, events, [(host.node_id, kill_ms)], workdir)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="trials of each kind")
    ap.add_argument("--heartbeat-ms", type=int,
                    default=cluster.DEFAULT_CLUSTER_SETTINGS["heartbeat_ms"])
    ap.add_argument("--ttl-ms", type=int, default=cluster.DEFAULT_CLUSTER_SETTINGS["lease_ttl_ms"])
    ap.add_argument("--room-empty-timeout-ms", type=int, default=1000,
                    help="the nodes' empty-room timeout (the tests' 1000; the daemon's "
                    "default is 10000)")
    ap.add_argument("--resubscribe-after-ms", type=int, default=300,
                    help="the viewer re-subscribes after this long without a decoded frame")
    ap.add_argument("--workdir", default=os.environ.get("SK_BENCH_DIR", "/tmp/sk-bench-failover"))
    args = ap.parse_args()

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    stats = Stats()
    settings = {"heartbeat_ms": args.heartbeat_ms, "lease_ttl_ms": args.ttl_ms}
    started = time.monotonic()
    with cluster.Cluster(workdir / f"cluster-{secrets.token_hex(3)}", nodes=3,
                         cluster=settings,
                         node_args=["--room-empty-timeout-ms",
                                    str(args.room_empty_timeout_ms)]) as c:
        print(f"cluster up: {len(c.nodes)} nodes, Sentinel store, heartbeat "
              f"{args.heartbeat_ms} ms, TTL {args.ttl_ms} ms, empty rooms end after "
              f"{args.room_empty_timeout_ms} ms; logs in {c.workdir}", flush=True)
        print("  ingress node killed + reconnecting publisher:", flush=True)
        for i in range(args.trials):
            trial_ingress_killed(c, stats, i, c.workdir)
        print("  room host killed, ingress alive:", flush=True)
        host_skipped = None
        probe = probe_remote_publication(c, c.workdir)
        if probe is None:
            host_skipped = ("SKIPPED: remote publication (proxy mode) is not available: a "
                            "publisher on another node than the room's host did not publish "
                            "into it")
            print(f"    {host_skipped}", flush=True)
        else:
            for i in range(args.trials):
                trial_host_killed(c, stats, i, c.workdir, probe if i == 0 else None,
                                  resubscribe_ms=args.resubscribe_after_ms)
        problems = c.stop()

    print()
    print(f"failover benchmark: 3 nodes, heartbeat {args.heartbeat_ms} ms, TTL {args.ttl_ms} ms, "
          f"{time.monotonic() - started:.0f} s")
    for name, values in stats.figures.items():
        summary(name, values, stats.units[name])
    if host_skipped:
        print(f"  room host killed: {host_skipped}")
    print(f"  trials: {stats.trials}")
    print(f"  lost/duplicated/misordered events (check_events, all invariants): "
          f"{len(stats.event_errors)}")
    for label, e in stats.event_errors[:20]:
        print(f"    {label}: {e}")
    print(f"  orphaned or doubled rooms, or media not restored: {len(stats.store_problems)}")
    for label, p in stats.store_problems[:20]:
        print(f"    {label}: {p}")
    for p in problems:
        print(f"  node problem: {p}")


if __name__ == "__main__":
    main()
