"""Rooms: isolation between rooms, several publishers in one room, and SSE resumption."""

import signal
import subprocess
import time

import harness


def publishing(node, publish, room, identity, kind="obs"):
    ing = node.api.create_ingress(room, identity=identity)
    pub = publish(kind, node.rtmp_url(ing["stream_key"]))
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)
    return ing, pub


def test_two_rooms_one_publisher_each(node, publish, follow, invariants):
    r1, r2 = harness.unique_room("a"), harness.unique_room("b")
    s1, s2 = follow(node, r1), follow(node, r2)
    publishing(node, publish, r1, "cam-a", kind="obs")
    publishing(node, publish, r2, "cam-b", kind="ffmpeg")
    s1.wait_event("TrackPublished", count=2)
    s2.wait_event("TrackPublished", count=2)
    harness.assert_plays(node, r1, frames=20)
    harness.assert_plays(node, r2, frames=20)
    # Each room's log has its own participant only.
    assert {e["participant"]["identity"] for e in s1.events if "participant" in e} == {"cam-a"}
    assert {e["participant"]["identity"] for e in s2.events if "participant" in e} == {"cam-b"}
    rooms = node.api.get("/v1/rooms").json
    names = {r["name"] for r in rooms["rooms"]}
    assert {r1, r2} <= names
    invariants(s1.events)
    invariants(s2.events)


def test_one_room_two_publishers(node, publish, follow, invariants):
    room = harness.unique_room("duo")
    sse = follow(node, room)
    _, p1 = publishing(node, publish, room, "cam-1", kind="obs")
    _, p2 = publishing(node, publish, room, "cam-2", kind="rtmp2sink")
    sse.wait_event("ParticipantConnected", count=2)
    sse.wait_event("TrackPublished", count=4)
    info = node.api.get(f"/v1/rooms/{room}").json
    assert sorted(p["identity"] for p in info["participants"]) == ["cam-1", "cam-2"]
    for p in info["participants"]:
        assert sorted(t["kind"] for t in p["tracks"]) == ["audio", "video"]
    # WHEP picks a publisher with ?participant=IDENTITY.
    harness.assert_plays(node, room, frames=20, participant="cam-1")
    harness.assert_plays(node, room, frames=20, participant="cam-2")
    p1.stop()
    psid1 = harness.participant_of(sse.events, "cam-1")
    sse.wait_event("ParticipantDisconnected", psid=psid1)
    # The other publisher is untouched and still plays.
    assert not sse.of("ParticipantDisconnected", identity="cam-2")
    harness.assert_plays(node, room, frames=20, participant="cam-2")
    p2.stop()
    sse.wait_event("ParticipantDisconnected", identity="cam-2")
    invariants(sse.events, final=True)


def test_sse_resume_with_last_event_id(node, publish, follow, invariants):
    room = harness.unique_room("resume")
    first = follow(node, room)
    ing, pub = publishing(node, publish, room, "cam-1")
    first.wait_event("TrackPublished", count=2)
    first.stop()
    last = first.events[-1]["seq"]
    assert [e["seq"] for e in first.events] == list(range(1, last + 1))

    # Events happen while nobody listens.
    pub.stop()
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) != "ENDPOINT_PUBLISHING",
                       15, what="the publication to end")

    resumed = follow(node, room, last_event_id=last)
    resumed.wait_event("ParticipantDisconnected")
    assert resumed.events[0]["seq"] == last + 1, "resume must start right after Last-Event-ID"
    invariants(first.events + resumed.events, require_complete=True)

    # ?since= is the same thing for clients that cannot set headers.
    since = follow(node, room, since=last)
    since.wait_event("ParticipantDisconnected")
    n = len(resumed.events)
    assert [e["seq"] for e in since.events[:n]] == [e["seq"] for e in resumed.events[:n]]


def test_room_seq_continues_after_room_finished(node, publish, follow, invariants):
    room = harness.unique_room("again")
    sse = follow(node, room)
    _, pub = publishing(node, publish, room, "cam-1")
    sse.wait_event("TrackPublished", count=2)
    pub.stop()
    sse.wait_event("RoomFinished", timeout=15)  # room_empty_timeout_ms is 1 s here
    _, pub2 = publishing(node, publish, room, "cam-1")
    sse.wait_event("RoomStarted", count=2, timeout=15)
    sse.wait_event("TrackPublished", count=4)
    pub2.stop()
    invariants(sse.events, final=True)


def recvonly_offer():
    """A browser-like WHEP offer (H.264 + Opus, recvonly) without candidates: the node answers
    it, but ICE can never connect, so its DTLS never starts."""
    lines = ["v=0", "o=- 4611731400430051337 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
             "a=group:BUNDLE 0 1", "a=msid-semantic: WMS"]
    for mid, (kind, pt, rtpmap, fmtp) in enumerate([
            ("video", 96, "H264/90000", "packetization-mode=1;profile-level-id=42e01f"),
            ("audio", 111, "opus/48000/2", "minptime=10;useinbandfec=1")]):
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}", "c=IN IP4 0.0.0.0",
                  "a=ice-ufrag:Fx3q", "a=ice-pwd:6pWEfhTHQKTgDkM2aXH8kEnN",
                  "a=ice-options:trickle", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
                  "a=setup:actpass", f"a=mid:{mid}", "a=recvonly", "a=rtcp-mux",
                  f"a=rtpmap:{pt} {rtpmap}", f"a=rtcp-fb:{pt} nack", f"a=rtcp-fb:{pt} nack pli"]
        lines.append(f"a=fmtp:{pt} {fmtp}")
    return "\r\n".join(lines) + "\r\n"


def test_stalled_viewers_never_stall_the_others(node, publish, procs, tmp_path, follow,
                                                invariants):
    """Slow-subscriber isolation. The node pushes a track's buffers into its viewers' send paths
    from the track's own thread, so nothing a viewer does may block there: a viewer whose offer
    is answered but that never connects (webrtcbin holds its send path until DTLS is up) and a
    connected viewer that stops reading (SIGSTOP: its socket fills up) must not stall the track.
    Other viewers decode audio and video all along, and a new one starts."""
    room = harness.unique_room("iso")
    sse = follow(node, room)
    publishing(node, publish, room, "cam-iso")
    sse.wait_event("TrackPublished", count=2)

    never = node.api.request("POST", f"/v1/rooms/{room}/whep", recvonly_offer().encode(),
                             token=None, headers={"Content-Type": "application/sdp"})
    assert never.status == 201, never

    log = tmp_path / "stopped-viewer.log"
    stopped = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                           "127.0.0.1", "--frames", "100000", "--timeout", "120", "--latency"],
                          log, stderr=subprocess.DEVNULL)
    harness.wait_until(lambda: any("frame" in o for o in harness.parse_json_lines(
        log.read_text(errors="replace"))), 30, what="a frame at the viewer to stop")
    harness.ProcessGroup.signal(stopped, signal.SIGSTOP)
    try:
        harness.assert_plays(node, room, frames=60, expect_audio=True, timeout=30)
        time.sleep(3)  # by now the stopped viewer's receive buffer is long full
        harness.assert_plays(node, room, frames=60, expect_audio=True, timeout=30)
    finally:
        harness.ProcessGroup.signal(stopped, signal.SIGKILL)
    invariants(sse.events)
