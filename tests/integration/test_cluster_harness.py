"""The cluster harness itself, before the cluster code lands: Redis + replica + three
Sentinels + HAProxy (from configs/cluster/) in front of ONE node with the memory store.
Publishing, playback and the event stream go through the load balancer; the Redis master
is killed and Sentinel must promote the replica; HAProxy's health checks must drain a full
node without cutting its streams and cut a dead node's; sk-obs-publisher --reconnect must
reconnect like OBS (a new TCP connection after 2 s, then x1.5)."""

import json
import re
import signal
import socket
import time

import pytest

import cluster
import harness
from cluster import make_cluster  # noqa: F401 - the fixture

ok, missing = cluster.have_tools()
pytestmark = pytest.mark.skipif(not ok, reason=f"missing {missing}")


def publisher_events(pub):
    return harness.parse_json_lines(harness.Path(pub.log_path).read_text(errors="replace"))


def test_publish_play_follow_through_lb_and_redis_failover(make_cluster):
    c = make_cluster(nodes=1, node_store="memory")
    (n1,) = c.nodes
    assert c.lb.server_status(n1) == "UP"

    # API through the LB; OBS-like publisher through the LB's RTMP port.
    room = harness.unique_room("lb")
    ing = c.api.create_ingress(room, identity="obs-1")
    events = c.follow(room)
    pub = c.publish("obs", c.rtmp_url(ing["stream_key"]))
    events.wait_event("TrackPublished", count=2, timeout=30)
    rec, _ = c.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING")
    assert rec["state"]["node"] == "n1"
    assert c.ingress_node_of(ing["ingress_id"]) is n1

    # WHEP playback through the LB's HTTP port.
    res = c.play(room, frames=30, expect_audio=True)
    assert res.rc == 0, f"WHEP via LB failed: {res.log[-3000:]}"

    # The SSE stream is cut under the follower (as when its node dies): it resumes through
    # the LB with Last-Event-ID and nothing is lost or repeated.
    seen = len(events.events)
    c.lb.command(f"shutdown sessions server http_nodes/{n1.node_id}")
    harness.wait_until(lambda: events.connections >= 2, 15, what="SSE follower reconnect")

    # Redis: a write acknowledged by master and replica survives the master's death, and
    # Sentinel promotes the replica; the harness hands back the new master.
    cluster.redis_cli(c.redis.port, "SET", "sk-test", "before-failover")
    assert cluster.redis_cli(c.redis.port, "WAIT", 1, 5000) == ["1"]
    old_master = c.redis_master()
    assert old_master == ("127.0.0.1", c.redis.port)
    new = c.kill_redis_master()
    assert new is c.replica and not c.redis.alive()
    assert c.redis_master() == ("127.0.0.1", c.replica.port)
    assert cluster.redis_cli(new.port, "GET", "sk-test") == ["before-failover"]
    cluster.redis_cli(new.port, "SET", "sk-test", "after-failover")  # writable now

    # The stream went on meanwhile; a clean stop ends it with client_initiated.
    assert pub.running(), pub.log()
    assert pub.stop() == 0
    events.wait_event("ParticipantDisconnected", reason="client_initiated", timeout=15)
    assert len(events.events) > seen
    c.assert_invariants(events, final=True, require_complete=True)


def test_lb_drains_full_node_and_cuts_dead_one_obs_reconnects(make_cluster):
    # max_streams=1: with one stream the node answers /readyz 503 (full).
    c = make_cluster(nodes=1, node_store="memory", node_args=["--set", "node.max_streams=1"])
    (n1,) = c.nodes
    ing = c.api.create_ingress(harness.unique_room("drain"), identity="obs-1")
    pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    n1.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)  # LB: see below

    # Full: no new sessions (NOLB), but the one it carries is not cut.
    assert n1.api.get("/readyz", token=None).status == 503
    c.lb.wait_status(n1, "NOLB")
    checks_before = time.monotonic()
    harness.wait_until(lambda: time.monotonic() - checks_before > 2.0, 5)  # ~4 checks
    assert c.lb.server_status(n1).startswith("NOLB")
    assert [e for e in publisher_events(pub) if e["event"] == "disconnected"] == []
    # (The LB sends no HTTP request to a drained node either: ask it directly.)
    assert n1.api.status(ing["ingress_id"]) == "ENDPOINT_PUBLISHING"

    # Dead: HAProxy marks it down and cuts the session at once; the publisher then retries
    # through the LB (which has no server left) on OBS's schedule.
    killed_at = c.kill(n1)
    c.lb.wait_status(n1, "DOWN")

    def attempts():
        evs = publisher_events(pub)
        return evs if sum(e["event"] == "connecting" for e in evs) >= 4 else None

    evs = harness.wait_until(attempts, 30, interval=0.2, what="3 reconnect attempts")
    lost = [e for e in evs if e["event"] == "disconnected"]
    assert len(lost) == 1 and lost[0]["t_ms"] >= killed_at
    waits = [e["ms"] for e in evs if e["event"] == "reconnect_wait"]
    assert waits[:3] == [2000, 3000, 4500], waits
    # Each attempt starts no sooner than its delay after the previous one ended.
    starts = [e["t_ms"] for e in evs if e["event"] == "connecting"][1:4]
    ends = [e["t_ms"] for e in evs if e["event"] in ("disconnected", "connect_failed")][:3]
    for end, start, wait in zip(ends, starts, waits):
        assert start - end >= wait - 5, (end, start, wait)

    # Every attempt was a new TCP connection: HAProxy logged each with its own source port
    # and no server to send it to.
    # (HAProxy logs a connection when it ends.)
    def refused_ports():
        log = harness.Path(c.lb.log_path).read_text(errors="replace")
        ports = re.findall(r"^127\.0\.0\.1:(\d+) \[[^\]]+\] rtmp rtmp_nodes/<NOSRV>", log,
                           re.M)
        return ports if len(ports) >= 3 else None

    ports = harness.wait_until(refused_ports, 10, what="3 refused connections in haproxy's log")
    assert len(set(ports)) == len(ports), ports
    pub.kill()

    # Refused before it sent a byte (HAProxy may close first): logged all the same.
    n_before = len(refused_ports())
    with socket.create_connection(("127.0.0.1", c.lb.rtmp_port), timeout=5) as s:
        assert s.recv(1) == b""
    harness.wait_until(lambda: len(refused_ports()) > n_before, 10,
                       what="a silent refused connection in haproxy's log")


def test_room_follower_collects_what_check_events_needs(make_cluster):
    # Two publishers, one killed (publisher_lost), one replaced by a reconnect with the same
    # key (replaced): the follower's log passes the checker, and a doctored copy does not.
    c = make_cluster(nodes=1, node_store="memory", redis=False, sentinels=0)
    room = harness.unique_room("follow")
    a = c.api.create_ingress(room, identity="a")
    b = c.api.create_ingress(room, identity="b")
    events = c.follow(room)
    pa = c.publish("ffmpeg", c.rtmp_url(a["stream_key"]))
    pb = c.publish("obs", c.rtmp_url(b["stream_key"]))
    events.wait_event("TrackPublished", count=4, timeout=40)
    pa.kill()
    events.wait_event("ParticipantDisconnected", identity="a", timeout=20)
    pb2 = c.publish("obs", c.rtmp_url(b["stream_key"]))
    events.wait_event("ParticipantDisconnected", identity="b", reason="replaced", timeout=20)
    events.wait_event("TrackPublished", identity="b", count=4, timeout=30)
    pb.proc.send_signal(signal.SIGTERM)
    pb2.stop()
    events.wait_event("ParticipantDisconnected", identity="b", count=2, timeout=20)
    c.assert_invariants(events, final=True, require_complete=True)

    doctored = [dict(e) for e in events.events]
    dup = json.loads(json.dumps(doctored[3]))
    doctored.insert(4, dup)
    assert any("inv1" in e for e in cluster.check_events.check(doctored))
