"""Fast detection of a dead node process (failover/sk-peers.c): every node holds a
connection to every other live node; when it ends and a fresh TCP connect to that node's
address is refused, its incarnation is retired at once instead of after the lease TTL. A node
that is only stopped (SIGSTOP: its socket still accepts connections) is left to the TTL.

The clusters here run with a long lease TTL, so that "before the lease could have expired" is
a property of the mechanism, not a timing figure: a lease renewed at most one heartbeat before
the kill cannot expire earlier than kill + TTL - heartbeat."""

import http.client
import threading
import time

import pytest

import cluster
import harness
from cluster import make_cluster  # noqa: F401 - the fixture

ok, missing = cluster.have_tools()
pytestmark = pytest.mark.skipif(not ok, reason=f"missing {missing}")

HEARTBEAT_MS = 200
LONG_TTL_MS = 8000


def log_text(node):
    return harness.Path(node.log_path).read_text(errors="replace")


def lease_floor_ms(kill_ms):
    """The earliest epoch ms at which the killed node's lease could have run out."""
    return kill_ms + LONG_TTL_MS - HEARTBEAT_MS


def publish_straight_to(c, node, ing):
    """An OBS-like publisher (no reconnect) to @node itself, not through HAProxy, once @node
    knows the ingress."""
    harness.wait_until(
        lambda: node.api.get(f"/v1/ingress/{ing['ingress_id']}").status == 200, 10,
        what=f"{node.node_id} to know the ingress")
    return c.publish("obs", node.rtmp_url(ing["stream_key"]))


def test_killed_node_retired_before_its_lease_expires(make_cluster):
    """kill -9 of the node running a publisher and hosting its room: the survivors see its
    watch connection end, find nothing listening at its address, retire it and rebuild the
    room: RoomMoved and ParticipantDisconnected (node_failure) are written while the dead
    node's lease was still valid in the store."""
    c = make_cluster(nodes=3, cluster={"heartbeat_ms": HEARTBEAT_MS, "lease_ttl_ms": LONG_TTL_MS})
    room = harness.unique_room("fast")
    ing = c.api.create_ingress(room, identity="obs-f")
    events = c.follow(room)
    c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    victim = c.node(first["ingress_node"])
    _, live = c.store_view()
    victim_inc = live[victim.node_id]
    survivors = [n for n in c.nodes if n is not victim]

    kill_ms = c.kill(victim)
    gone = events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure")[0]
    moved = events.wait_event("RoomMoved", timeout=20)[0]
    assert gone["participant"]["sid"] == first["sid"]
    assert moved["from_node"] == victim.node_id
    for e in (gone, moved):
        assert e["at_ms"] < lease_floor_ms(kill_ms), (
            f"{e['event']} at {e['at_ms'] - kill_ms} ms after the kill: not before the "
            f"{LONG_TTL_MS} ms lease could have expired, so not by the fast path")
    # The store retired exactly the incarnation that was killed.
    _, live = c.store_view()
    assert victim.node_id not in live
    said = [n.node_id for n in survivors
            if f"node {victim.node_id} incarnation {victim_inc}: its connection to this node "
               f"ended and nothing listens" in log_text(n)]
    assert said, "no survivor logged the fast-path decision"
    c.assert_invariants(events)

    # A new incarnation of the same node is watched and left alone.
    c.restart(victim)
    harness.wait_until(lambda: c.store_view()[1].get(victim.node_id, 0) > victim_inc, 15,
                       what="the restarted node's new incarnation")
    time.sleep(1.0)
    assert c.store_view()[1].get(victim.node_id, 0) > victim_inc
    assert victim.ready()
    assert "fencing" not in log_text(victim)


def test_stopped_node_is_left_to_its_lease(make_cluster):
    """SIGSTOP of a node for longer than the watch's read timeout but shorter than its lease:
    the survivors' watches of it end and their probes still connect (the kernel accepts on
    its listening socket), so nobody retires it; after SIGCONT it is still the same
    incarnation, never fenced, and its publisher never left the room."""
    c = make_cluster(nodes=3, cluster={"heartbeat_ms": HEARTBEAT_MS, "lease_ttl_ms": LONG_TTL_MS})
    room = harness.unique_room("stop")
    ing = c.api.create_ingress(room, identity="obs-s")
    events = c.follow(room)
    # Straight to the node, not through HAProxy: the proxy would cut the session of a node
    # that fails its health checks, which is not what this test is about.
    victim = c.nodes[0]
    publish_straight_to(c, victim, ing)
    events.wait_event("TrackPublished", count=2, timeout=30)
    _, live = c.store_view()
    victim_inc = live[victim.node_id]
    survivors = [n for n in c.nodes if n is not victim]

    stop_ms = c.sigstop(victim)
    # Past the watch's 3 s read timeout, short of the lease (its floor is 7.8 s after the stop).
    harness.wait_until(
        lambda: all(f"node {victim.node_id} incarnation {victim_inc}: its connection ended but"
                    in log_text(n) for n in survivors),
        6, interval=0.1, what="both survivors to probe the stopped node and find it listening")
    _, live = c.store_view()
    c.sigcont(victim)
    assert cluster.now_ms() < lease_floor_ms(stop_ms), "the machine was too slow for this test"
    assert live.get(victim.node_id) == victim_inc, "a stopped node was retired"

    time.sleep(1.5)
    _, live = c.store_view()
    assert live.get(victim.node_id) == victim_inc
    assert victim.ready()
    assert "fencing" not in log_text(victim)
    assert not events.of("ParticipantDisconnected", reason="node_failure")
    assert not events.of("RoomMoved")
    for n in survivors:
        assert f"node {victim.node_id} incarnation {victim_inc} is dead" not in log_text(n)


def whep_post(node, room):
    """One WHEP POST straight to @node (no redirect followed): (status, Retry-After)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=5)
    try:
        conn.request("POST", f"/v1/rooms/{room}/whep", body=b"v=0\r\n",
                     headers={"Content-Type": "application/sdp"})
        r = conn.getresponse()
        r.read()
        return r.status, r.getheader("Retry-After")
    finally:
        conn.close()


def test_whep_post_while_the_room_moves_is_retryable(make_cluster):
    """WHEP POSTs sent to the survivors without pause while the room's host is killed: until
    the room is rebuilt, a survivor that knows its host is gone answers 503 with Retry-After
    (retryable), never another 5xx and never a hang; a local subscriber would have been
    answered from here (400 for this deliberately empty offer). Afterwards: a 307 to the new
    host, or the new host's own answer."""
    c = make_cluster(nodes=3, cluster={"heartbeat_ms": HEARTBEAT_MS, "lease_ttl_ms": LONG_TTL_MS})
    room = harness.unique_room("mv")
    ing = c.api.create_ingress(room, identity="obs-m")
    events = c.follow(room)
    victim = c.nodes[0]
    publish_straight_to(c, victim, ing)  # no reconnect: the room is orphaned
    events.wait_event("TrackPublished", count=2, timeout=30)
    survivors = [n for n in c.nodes if n is not victim]
    for n in survivors:
        assert whep_post(n, room)[0] == 307

    answers, stop = [], threading.Event()

    def poll(node):
        while not stop.is_set():
            answers.append((node.node_id, time.monotonic(), *whep_post(node, room)))
            time.sleep(0.005)

    threads = [threading.Thread(target=poll, args=(n,), daemon=True) for n in survivors]
    for t in threads:
        t.start()
    time.sleep(0.3)
    c.kill(victim)
    events.wait_event("RoomMoved", timeout=20)
    time.sleep(0.6)
    stop.set()
    for t in threads:
        t.join(timeout=10)

    statuses = [a[2] for a in answers]
    assert all(s in (307, 400, 503) for s in statuses), sorted(set(statuses))
    unavailable = [a for a in answers if a[2] == 503]
    assert unavailable, f"no survivor answered 503 while the room moved: {sorted(set(statuses))}"
    assert all(a[3] == "1" for a in unavailable)
    # The 503s were a passing state: each survivor's last answer is settled.
    for n in survivors:
        assert [a[2] for a in answers if a[0] == n.node_id][-1] in (307, 400)
