"""Failover in a real cluster: Redis + replica + 3 Sentinels + HAProxy + 3 nodes, all
started here on 127.0.0.1 (tests/integration/cluster.py). Events are checked against every
DESIGN.md invariant by tests/tools/check_events.py, with the kill times the harness records."""

import time

import pytest

import cluster
import harness
from cluster import make_cluster  # noqa: F401 - the fixture

ok, missing = cluster.have_tools()
pytestmark = pytest.mark.skipif(not ok, reason=f"missing {missing}")


def test_ingress_node_killed(make_cluster):
    """kill -9 of the node running an OBS-like publisher (and hosting its room): a survivor
    writes RoomMoved, TrackUnpublished x2 and ParticipantDisconnected (node_failure) for it
    (invariant 5); the publisher reconnects through HAProxy like OBS, lands on a live node and
    comes back as a new participant with the same identity (invariant 7); a viewer through the
    load balancer decodes frames again."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("fo")
    ing = c.api.create_ingress(room, identity="obs-1")
    events = c.follow(room)
    pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    victim = c.node(first["ingress_node"])
    res = c.play(room, frames=20)
    assert res.rc == 0, f"WHEP via LB before the kill failed: {res.log[-3000:]}"

    c.kill(victim)
    gone = events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure")[0]
    assert gone["participant"]["sid"] == first["sid"]
    moved = events.of("RoomMoved")
    assert len(moved) == 1 and moved[0]["from_node"] == victim.node_id
    assert moved[0]["node"] != victim.node_id

    # OBS reconnects (2 s, then x1.5) through HAProxy to a live node.
    events.wait_event("ParticipantConnected", count=2, timeout=40)
    events.wait_event("TrackPublished", count=4, timeout=30)
    second = events.of("ParticipantConnected")[1]["participant"]
    assert second["identity"] == "obs-1" and second["sid"] != first["sid"]
    assert second["ingress_node"] != victim.node_id
    res = c.play(room, frames=20)
    assert res.rc == 0, f"WHEP via LB after the failover failed: {res.log[-3000:]}"
    c.assert_invariants(events)
    assert pub.running()


def test_partitioned_node_fences_itself(make_cluster):
    """A node SIGSTOPped past its lease TTL is declared dead; survivors write its publisher's
    departure; when it is SIGCONTed it finds itself fenced, drops the publisher (which
    reconnects elsewhere) and writes nothing more: no identity is ever connected twice."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("part")
    ing = c.api.create_ingress(room, identity="obs-p")
    events = c.follow(room)
    c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    victim = c.node(first["ingress_node"])

    c.sigstop(victim)
    events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure")
    time.sleep(0.5)
    c.sigcont(victim)
    harness.wait_until(lambda: victim.ready(), 20, what=f"{victim.node_id} to rejoin")
    events.wait_event("ParticipantConnected", count=2, timeout=40)
    events.wait_event("TrackPublished", count=4, timeout=30)
    time.sleep(1.0)
    written_by_victim = [e for e in events.events
                         if e.get("node") == victim.node_id and e["seq"] > events.of(
                             "RoomMoved")[0]["seq"]]
    # The fenced incarnation wrote nothing after the move (a rejoined one may host later).
    assert all(e["event"] in ("ParticipantConnected", "TrackPublished", "RoomStarted")
               for e in written_by_victim), written_by_victim
    c.assert_invariants(events)


def test_room_host_killed_ingress_lives(make_cluster):
    """Two publishers in one room land on two nodes (HAProxy leastconn): the first one's node
    hosts the room, the second one's publishes into it over WebRTC. kill -9 of the host: the
    survivor with the live publisher claims the room (RoomMoved), the dead host's publisher
    leaves with node_failure, the live one keeps its participant and track sids with no
    unpublish (invariant 6) and its RTMP connection never drops; a viewer through the LB
    decodes it again. Then the second publisher's node is killed too (both in one room)."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("host")
    ing1 = c.api.create_ingress(room, identity="cam-1")
    ing2 = c.api.create_ingress(room, identity="cam-2")
    events = c.follow(room)
    pub1 = c.publish("obs", c.rtmp_url(ing1["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    pub2 = c.publish("obs", c.rtmp_url(ing2["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=4, timeout=30)
    joined = {e["participant"]["identity"]: e["participant"]
              for e in events.of("ParticipantConnected")}
    host = c.node(events.of("RoomStarted")[0]["node"])
    cam1, cam2 = joined["cam-1"], joined["cam-2"]
    assert cam1["ingress_node"] == host.node_id
    assert cam2["ingress_node"] != host.node_id, "both publishers landed on one node"
    tracks2 = sorted(e["track"]["sid"] for e in events.of("TrackPublished")
                     if e["participant"]["sid"] == cam2["sid"])
    res = c.play(room, frames=20, participant="cam-2")
    assert res.rc == 0, f"WHEP of the proxied publisher failed: {res.log[-3000:]}"

    c.kill(host)
    moved = events.wait_event("RoomMoved", timeout=20)[0]
    assert moved["from_node"] == host.node_id
    assert moved["node"] == cam2["ingress_node"], "the live publisher's node should host it"
    events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure")
    gone = [e["participant"]["sid"] for e in events.of("ParticipantDisconnected")]
    assert cam1["sid"] in gone and cam2["sid"] not in gone
    assert not [e for e in events.of("TrackUnpublished") if e["participant"]["sid"] == cam2["sid"]]
    res = c.play(room, frames=20, participant="cam-2")
    assert res.rc == 0, f"WHEP after the host died failed: {res.log[-3000:]}"
    assert pub2.running()
    reconnects = [e for e in harness.parse_json_lines(
        harness.Path(pub2.log_path).read_text(errors="replace")) if e.get("event") == "connecting"]
    assert len(reconnects) == 1, f"the live publisher's connection dropped: {reconnects}"

    # cam-1 reconnects through the LB (new sid, same identity).
    events.wait_event("ParticipantConnected", count=3, timeout=40)
    c.assert_invariants(events)

    # Both in one room: now the node of cam-2 (the room's new host) dies as well.
    second = c.node(cam2["ingress_node"])
    c.kill(second)
    harness.wait_until(
        lambda: any(e["participant"]["sid"] == cam2["sid"]
                    for e in events.of("ParticipantDisconnected")), 20,
        what="cam-2's departure after its node died")
    events.wait_event("RoomMoved", count=2, timeout=20)
    c.assert_invariants(events)
    assert sorted(e["track"]["sid"] for e in events.of("TrackUnpublished")
                  if e["participant"]["sid"] == cam2["sid"]) == tracks2
