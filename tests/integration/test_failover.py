"""Failover in a real cluster: Redis + replica + 3 Sentinels + HAProxy + 3 nodes, all
started here on 127.0.0.1 (tests/integration/cluster.py). Events are checked against every
DESIGN.md invariant by tests/tools/check_events.py, with the kill times the harness records."""

import os
import random
import time

import pytest

import cluster
import harness
from cluster import make_cluster  # noqa: F401 - the fixture
from test_whip import WhipPublisher, assert_problem, create_whip_ingress, post, sdp_offer

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


def _publishing_again(events, identity, live_ids):
    """The newest participant of @identity, once it is connected through a live node with
    both tracks published (None before)."""
    evs = list(events.events)
    pcs = [e for e in evs if e.get("event") == "ParticipantConnected"
           and e["participant"]["identity"] == identity]
    if not pcs:
        return None
    p = pcs[-1]["participant"]
    sid = p["sid"]
    if any(e.get("event") == "ParticipantDisconnected" and e["participant"]["sid"] == sid
           for e in evs):
        return None
    tracks = {e["track"]["kind"] for e in evs
              if e.get("event") == "TrackPublished" and e["participant"]["sid"] == sid}
    return p if tracks == {"audio", "video"} and p.get("ingress_node") in live_ids else None


def _end_cleanly(c, events, pub):
    """Stops @pub like OBS's Stop Streaming and waits for the room's RoomFinished, so that
    the log is complete for a final check."""
    finished = len(events.of("RoomFinished"))
    assert pub.stop() == 0, pub.log()
    events.wait_event("RoomFinished", count=finished + 1, timeout=20)


# A missing departure is a lost event: reported once a capture is this far past a kill. Not
# a timing figure (bench/bench_failover.py prints those): a loaded 2-core machine may exceed
# DESIGN.md's 1.5 s goal without anything being wrong with the order of events.
LOSS_DEADLINE_MS = 10_000


def test_redis_master_killed(make_cluster):
    """kill -9 of the Redis master under Sentinel while a publisher streams and a client
    follows its room: Sentinel promotes the replica, the nodes follow it (the stream and the
    viewer never notice: nobody fences, nobody is declared dead), the nodes are ready again,
    the room is still placed exactly once on a live incarnation, and events written after the
    switch continue the same log without a gap or a duplicate."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("redis")
    ing = c.api.create_ingress(room, identity="obs-r")
    events = c.follow(room)
    pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    host = c.host_of(room)
    assert c.wait_no_orphans(timeout=5) == []

    old = c.redis_master()
    new = c.kill_redis_master()
    assert new.port != old[1]

    for n in c.nodes:
        c.wait_ready(n, timeout=20)
        c.lb.wait_status(n, "UP", timeout=20)
    # The stream kept flowing through the switch: same participant, same host, a viewer
    # through the load balancer decodes it.
    # (No DELETE: WHEP resource URLs are not routed across nodes yet; the LB may send it to
    # a node that does not hold the session.)
    res = c.play(room, frames=20, delete=False)
    assert res.rc == 0, f"WHEP via LB after the Redis failover failed: {res.log[-3000:]}"
    assert pub.running() and not any(
        o.get("event") == "disconnected" for o in harness.parse_json_lines(pub.log())), \
        f"the publisher's connection dropped during the Redis failover:\n{pub.log()}"
    assert c.host_of(room).node_id == host.node_id
    assert not events.of("RoomMoved") and not events.of("ParticipantDisconnected"), \
        [(e["seq"], e["event"], e.get("reason")) for e in events.events]
    problems = c.wait_no_orphans(timeout=10)
    assert problems == [], problems

    # The new master takes new history: a second room starts, the first one ends cleanly.
    room2 = harness.unique_room("redis2")
    ing2 = c.api.create_ingress(room2, identity="obs-r2")
    events2 = c.follow(room2)
    pub2 = c.publish("obs", c.rtmp_url(ing2["stream_key"]), reconnect=True)
    events2.wait_event("TrackPublished", count=2, timeout=30)
    _end_cleanly(c, events, pub)
    _end_cleanly(c, events2, pub2)
    left = events.of("ParticipantDisconnected")
    assert [e["participant"]["sid"] for e in left] == [first["sid"]]
    assert left[0]["reason"] == "client_initiated"
    for f in (events, events2):
        c.assert_invariants(f, final=True, require_complete=True,
                            deadline_ms=LOSS_DEADLINE_MS)
    assert c.wait_no_orphans(timeout=10) == []


def test_chaos_soak(make_cluster):
    """Random kill -9 and restart of nodes (never all at once) for SK_CHAOS_SECONDS (90 s by
    default) while 3 OBS-like publishers stream through HAProxy, each into a room of its own.
    At the end every publisher is publishing again through a live node and plays, no room is
    orphaned or hosted twice, and every room's full event log, ended cleanly, passes every
    invariant with the recorded kills. SK_CHAOS_SEED replays a schedule."""
    seconds = float(os.environ.get("SK_CHAOS_SECONDS", "90"))
    seed = int(os.environ.get("SK_CHAOS_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    c = make_cluster(nodes=3)
    rooms = []
    for i in range(3):
        room = harness.unique_room(f"chaos{i}")
        ing = c.api.create_ingress(room, identity=f"obs-{i}")
        events = c.follow(room)
        pub = c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
        rooms.append((room, f"obs-{i}", events, pub))
    for _, _, events, _ in rooms:
        events.wait_event("TrackPublished", count=2, timeout=30)

    schedule = []  # what happened, for the failure message
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        live = c.live_nodes()
        dead = [n for n in c.nodes if not n.alive()]
        # Kill while at least two nodes would be left... or one, now and then; restart
        # dead ones otherwise. Never all at once.
        if dead and (len(live) == 1 or rng.random() < 0.5):
            n = rng.choice(dead)
            c.restart(n)
            schedule.append(f"{time.monotonic() - deadline + seconds:6.1f}s restart {n.node_id}")
        elif len(live) > 1:
            n = rng.choice(live)
            c.kill(n)
            schedule.append(f"{time.monotonic() - deadline + seconds:6.1f}s kill {n.node_id}")
        time.sleep(rng.uniform(0.3, 4.0))
    for n in c.nodes:
        if not n.alive():
            c.restart(n)
            schedule.append(f"end restart {n.node_id}")
    what = f"seed {seed}, schedule {schedule}, kills {c.kills}"

    live_ids = {n.node_id for n in c.live_nodes()}
    for room, identity, events, pub in rooms:
        # OBS's backoff grows x1.5 per failed attempt: a publisher that met several dead
        # nodes in a row may wait a while.
        events.wait_for(lambda evs: _publishing_again(events, identity, live_ids), timeout=90,
                        what=f"{identity} publishing again ({what})")
        assert pub.running(), f"{identity} gave up: {pub.log()}"
    for room, identity, events, pub in rooms:
        # No DELETE at the end: a WHEP resource URL is not yet routed across nodes (the LB
        # may send the DELETE to a node that does not hold the session: 404).
        res = c.play(room, frames=10, delete=False)
        assert res.rc == 0, f"WHEP of {room} after the soak failed ({what}): {res.log[-3000:]}"
    problems = c.wait_no_orphans(timeout=15)
    assert problems == [], f"{problems} ({what})"

    for room, identity, events, pub in rooms:
        _end_cleanly(c, events, pub)
    for room, identity, events, pub in rooms:
        errors = c.check(events, final=True, require_complete=True,
                         deadline_ms=LOSS_DEADLINE_MS)
        assert not errors, f"room {room} ({what}):\n" + "\n".join(errors)
        assert events.of("ParticipantDisconnected", reason="client_initiated")
    assert c.wait_no_orphans(timeout=15) == []


def test_drain_hands_rooms_over(make_cluster):
    """POST /v1/node/drain on the node hosting a room with a publisher on it: /readyz turns
    503, the room is handed to another node (RoomMoved, reason drain, no node_failure), the
    publisher's participant then leaves with server_shutdown written by the new host, the
    encoder reconnects through the LB to another node, and the drained node exits 0."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("drain")
    ing = c.api.create_ingress(room, identity="obs-d")
    events = c.follow(room)
    c.publish("obs", c.rtmp_url(ing["stream_key"]), reconnect=True)
    events.wait_event("TrackPublished", count=2, timeout=30)
    first = events.of("ParticipantConnected")[0]["participant"]
    host = c.node(events.of("RoomStarted")[0]["node"])
    assert first["ingress_node"] == host.node_id

    r = host.api.request("POST", "/v1/node/drain", {})
    assert r.status == 202, r
    moved = events.wait_event("RoomMoved", timeout=20)[0]
    assert moved["reason"] == "drain" and moved["from_node"] == host.node_id
    assert moved["node"] != host.node_id
    gone = events.wait_event("ParticipantDisconnected", timeout=20)[0]
    assert gone["participant"]["sid"] == first["sid"]
    assert gone["reason"] == "server_shutdown" and gone["node"] == moved["node"]
    assert host.proc.wait(timeout=30) == 0
    host.killed = True  # gone on purpose

    events.wait_event("ParticipantConnected", count=2, timeout=40)
    second = events.of("ParticipantConnected")[1]["participant"]
    assert second["identity"] == "obs-d" and second["ingress_node"] != host.node_id
    events.wait_event("TrackPublished", count=4, timeout=30)
    res = c.play(room, frames=20)
    assert res.rc == 0, f"WHEP after the drain failed: {res.log[-3000:]}"
    assert not [e for e in events.events if e.get("reason") == "node_failure"]
    c.assert_invariants(events)


def test_dead_nodes_ingress_becomes_inactive(make_cluster):
    """The ingress record of a session that ran on a killed node does not stay PUBLISHING:
    one survivor ends it (ENDPOINT_INACTIVE, the key reusable), and every node's API says
    so (records are read from the store, not from one node's memory)."""
    c = make_cluster(nodes=3)
    room = harness.unique_room("rec")
    ing = c.api.create_ingress(room, identity="obs-r")
    events = c.follow(room)
    c.publish("obs", c.rtmp_url(ing["stream_key"]))  # no reconnect: the session just ends
    events.wait_event("TrackPublished", count=2, timeout=30)
    victim = c.node(events.of("ParticipantConnected")[0]["participant"]["ingress_node"])
    for n in c.nodes:
        harness.wait_until(lambda n=n: n.api.status(ing["ingress_id"]) == "ENDPOINT_PUBLISHING",
                           10, what=f"{n.node_id} to see the session")
    c.kill(victim)
    events.wait_event("ParticipantDisconnected", timeout=20, reason="node_failure")
    for n in c.live_nodes():
        harness.wait_until(lambda n=n: n.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE",
                           15, what=f"{n.node_id} to see the ingress ended")
    c.assert_invariants(events)


def test_full_node_places_new_rooms_elsewhere(make_cluster):
    """max_rooms = 1 on every node. Room A's publisher lands on node n1, which hosts A; room
    B's publisher also lands on n1: n1 is full, so B is placed on the least loaded other node
    (it starts B: RoomStarted written by that node) and n1 publishes B's tracks there. Both
    rooms play. Then every node is full: a fourth room published on n1 is hosted on n1 anyway
    (a soft limit: a publisher is never refused for it)."""
    c = make_cluster(nodes=3, redis=True,
                     cluster=dict(cluster.DEFAULT_CLUSTER_SETTINGS, max_rooms=1))
    n1 = c.nodes[0]
    rooms = [harness.unique_room(f"cap{i}") for i in range(4)]
    ings = [c.api.create_ingress(r, identity=f"cam-{i}") for i, r in enumerate(rooms)]
    for ing in ings:
        harness.wait_until(
            lambda: n1.api.get(f"/v1/ingress/{ing['ingress_id']}").status == 200, 10,
            what=f"{n1.node_id} to know ingress {ing['ingress_id']}")

    def publish_on(node, i):
        events = c.follow(rooms[i])
        pub = c.publish("obs", node.rtmp_url(ings[i]["stream_key"]))
        events.wait_event("TrackPublished", count=2, timeout=30)
        return events, pub

    ev_a, pub_a = publish_on(n1, 0)
    assert ev_a.of("RoomStarted")[0]["node"] == n1.node_id
    ev_b, pub_b = publish_on(n1, 1)
    host_b = ev_b.of("RoomStarted")[0]["node"]
    assert host_b != n1.node_id, "a full node hosted a new room itself"
    assert ev_b.of("ParticipantConnected")[0]["participant"]["ingress_node"] == n1.node_id
    assert c.store_view()[0][rooms[1]][0] == host_b
    assert not ev_b.of("RoomMoved"), "a new room is started, not moved"
    for i in (0, 1):
        res = c.play(rooms[i], frames=20)
        assert res.rc == 0, f"WHEP of room {i} failed: {res.log[-3000:]}"

    # The third node takes the next room; then nobody has room left and n1 hosts the fourth.
    ev_c, pub_c = publish_on(n1, 2)
    host_c = ev_c.of("RoomStarted")[0]["node"]
    assert host_c not in (n1.node_id, host_b)
    ev_d, pub_d = publish_on(n1, 3)
    assert ev_d.of("RoomStarted")[0]["node"] == n1.node_id
    res = c.play(rooms[3], frames=20)
    assert res.rc == 0, f"WHEP of the over-capacity room failed: {res.log[-3000:]}"

    for events, pub in ((ev_a, pub_a), (ev_b, pub_b), (ev_c, pub_c), (ev_d, pub_d)):
        _end_cleanly(c, events, pub)
        c.assert_invariants(events)


def _assert_publish_refused(c, url):
    """An OBS-like publisher to @url is answered NetStream.Publish.BadName and ends without
    publishing."""
    bad = c.publish("obs", url)
    harness.wait_until(lambda: not bad.running(), 20, what="the refused publisher to end")
    lines = harness.parse_json_lines(open(bad.log_path, errors="replace").read())
    assert [o for o in lines if o.get("code") == "NetStream.Publish.BadName"], lines
    assert not [o for o in lines if o.get("event") == "publishing"], lines


def test_key_created_on_another_node_publishes_at_once(make_cluster):
    """An ingress created through node 1's API and published to node 2 right away (before
    node 2's periodic read of the store could know it) is not refused: node 2 reads the store
    before answering publish. A key nobody created still gets NetStream.Publish.BadName, with
    nothing created."""
    c = make_cluster(nodes=2)
    n1, n2 = c.nodes
    room = harness.unique_room("late")
    harness.make_flv(c.workdir / "obs-source.flv")  # made once, before the clock runs
    pubs = []
    for i in range(3):
        ing = n1.api.create_ingress(room, identity=f"obs-{i}")
        # At once, and without --reconnect: a refused publish ends the publisher.
        pubs.append(c.publish("obs", n2.rtmp_url(ing["stream_key"])))
    events = c.follow(room)  # the log is read from its start
    for i in range(3):
        events.wait_event("TrackPublished", count=2, timeout=30, identity=f"obs-{i}")
    for p in events.of("ParticipantConnected"):
        assert p["participant"]["ingress_node"] == n2.node_id
    for pub in pubs:
        lines = harness.parse_json_lines(open(pub.log_path, errors="replace").read())
        assert not [o for o in lines if o.get("event") == "connect_failed"], lines
        assert pub.running()

    before = [r["ingress_id"] for r in n2.api.get("/v1/ingress").json["items"]]
    _assert_publish_refused(c, n2.rtmp_url("k" + "x" * 31))
    assert [r["ingress_id"] for r in n2.api.get("/v1/ingress").json["items"]] == before
    assert len(events.of("ParticipantConnected")) == 3
    for pub in pubs:
        pub.stop()
    events.wait_event("RoomFinished", timeout=20)
    c.assert_invariants(events)


def test_key_deleted_on_another_node_is_refused(make_cluster):
    """An ingress deleted through node 1's API is gone from node 2 as well (its API answers
    404, its RTMP port NetStream.Publish.BadName): node 2 forgets what the store no longer
    holds. The other ingress, published to node 2 meanwhile, is left alone."""
    c = make_cluster(nodes=2)
    n1, n2 = c.nodes
    room = harness.unique_room("deleted")
    harness.make_flv(c.workdir / "obs-source.flv")
    gone = n1.api.create_ingress(room, identity="obs-gone")
    kept = n1.api.create_ingress(room, identity="obs-kept")
    path = f"/v1/ingress/{gone['ingress_id']}"
    harness.wait_until(lambda: n2.api.get(path).status == 200, 10, what="node 2 to know it")
    events = c.follow(room)
    pub = c.publish("obs", n2.rtmp_url(kept["stream_key"]))
    events.wait_event("TrackPublished", count=2, timeout=30, identity="obs-kept")

    assert n1.api.request("DELETE", path).status == 204
    harness.wait_until(lambda: n2.api.get(path).status == 404, 10, what="node 2 to forget it")
    _assert_publish_refused(c, n2.rtmp_url(gone["stream_key"]))

    assert pub.running()
    assert n2.api.status(kept["ingress_id"]) == "ENDPOINT_PUBLISHING"
    assert len(events.of("ParticipantConnected")) == 1
    pub.stop()
    events.wait_event("RoomFinished", timeout=20)
    c.assert_invariants(events)


def test_whip_key_created_on_another_node_publishes_at_once(make_cluster):
    """The same for WHIP: a POST to node 2 with the key of an ingress just created through
    node 1 waits for node 2's read of the store and gets its 201 (it got 401 before); a key
    nobody created still gets 401, with nothing created."""
    c = make_cluster(nodes=2)
    n1, n2 = c.nodes
    room = harness.unique_room("late-whip")
    ing = create_whip_ingress(n1, room)
    pub = WhipPublisher(c.procs, c.workdir, f"{n2.base}/whip", ing["stream_key"])
    c.on_log("whip publisher", pub.log_path)
    events = c.follow(room)
    events.wait_event("TrackPublished", count=2, timeout=30)
    assert events.of("ParticipantConnected")[0]["participant"]["ingress_node"] == n2.node_id
    assert pub.value("location"), harness.tail(pub.log_path)

    before = [r["ingress_id"] for r in n2.api.get("/v1/ingress").json["items"]]
    assert_problem(post(n2, sdp_offer(), "k" + "x" * 31), 401, "unauthorized")
    assert [r["ingress_id"] for r in n2.api.get("/v1/ingress").json["items"]] == before

    assert pub.stop() == 0, harness.tail(pub.log_path)
    gone = events.wait_event("ParticipantDisconnected", timeout=20)
    assert gone[-1]["reason"] == "client_initiated", gone
    events.wait_event("RoomFinished", timeout=20)
    c.assert_invariants(events)


def test_whip_publisher_into_a_room_hosted_elsewhere_plays(make_cluster):
    """A WHIP publisher on node 2 joins a room that node 1 hosts (its RTMP publisher came
    first): node 2 sends the publisher's RTP packets on to node 1 as they came (rewritten for
    that peer connection, no payloader), and a viewer of node 1 decodes them."""
    c = make_cluster(nodes=2)
    n1, n2 = c.nodes
    room = harness.unique_room("whip-relay")
    events = c.follow(room)
    rtmp_ing = n1.api.create_ingress(room, identity="cam-rtmp")
    rtmp = c.publish("ffmpeg", n1.rtmp_url(rtmp_ing["stream_key"]))
    events.wait_event("TrackPublished", count=2, timeout=30)
    host = events.of("RoomStarted")[0]["node"]
    assert host == n1.node_id, events.of("RoomStarted")
    ing = create_whip_ingress(n1, room, identity="cam-whip")
    pub = WhipPublisher(c.procs, c.workdir, f"{n2.base}/whip", ing["stream_key"],
                        args=["--width", "320", "--height", "180"])
    c.on_log("whip publisher", pub.log_path)
    events.wait_event("TrackPublished", count=4, timeout=30)
    joined = {e["participant"]["identity"]: e["participant"]
              for e in events.of("ParticipantConnected")}
    assert joined["cam-whip"]["ingress_node"] == n2.node_id, joined
    res = harness.assert_plays(n1, room, frames=30, expect_audio=True, participant="cam-whip")
    assert (res.last("width"), res.last("height")) == (320, 180), res
    assert pub.stop() == 0, harness.tail(pub.log_path)
    rtmp.stop()
    events.wait_event("RoomFinished", timeout=20)
    c.assert_invariants(events)
