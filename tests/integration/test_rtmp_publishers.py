"""Every real RTMP publisher into one node: state machine, input figures, room events,
playback over WHEP, and the three ways a publication ends (clean stop, kill -9, replaced)."""

import subprocess
import time

import pytest

import harness
from harness import PUBLISHERS

STATUS_TIMEOUT = 30
EVENT_TIMEOUT = 20


def start_publishing(node, publish, follow, kind, room, identity="cam-1", **opts):
    ing = node.api.create_ingress(room, identity=identity)
    assert ing["ingress_id"].startswith("IN_")
    assert ing["state"]["status"] == "ENDPOINT_INACTIVE"
    sse = follow(node, room)
    pub = publish(kind, node.rtmp_url(ing["stream_key"]), **opts)
    rec, seen = node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING",
                                     timeout=STATUS_TIMEOUT)
    return ing, sse, pub, rec, seen


def wait_tracks(sse, identity):
    sse.wait_event("ParticipantConnected", identity=identity, timeout=EVENT_TIMEOUT)
    psid = harness.participant_of(sse.events, identity)
    tracks = sse.wait_event("TrackPublished", count=2, psid=psid, timeout=EVENT_TIMEOUT)
    return psid, tracks


@pytest.mark.parametrize("kind", PUBLISHERS)
def test_publish_play_and_clean_stop(node, publish, follow, invariants, kind):
    room = harness.unique_room(kind)
    # The OBS-like publisher keeps quiet for a second after its publish is accepted, so that
    # BUFFERING is seen for sure; the others start media at once and may pass through it
    # between two polls.
    opts = {"hold_media": 1.0} if kind == "obs" else {}
    ing, sse, pub, rec, seen = start_publishing(node, publish, follow, kind, room, **opts)

    # LiveKit's state machine: BUFFERING until media flows, then PUBLISHING.
    harness.assert_buffering_then_publishing(seen, must_see_buffering=bool(opts))

    # Input figures measured from the stream.
    def figures():
        state = node.api.ingress(ing["ingress_id"])["state"]
        inp = state.get("input") or {}
        v, a = inp.get("video") or {}, inp.get("audio") or {}
        complete = v.get("codec") and v.get("width") and v.get("fps") and \
            a.get("codec") and a.get("sample_rate") and a.get("channels")
        return (v, a) if complete else None

    video, audio = harness.wait_until(figures, 10, what="input figures")
    assert video["codec"] == "H264"
    assert (video["width"], video["height"]) == (harness.WIDTH, harness.HEIGHT)
    assert abs(video["fps"] - harness.FPS) < 2
    assert audio["codec"] == "AAC"
    assert audio["sample_rate"] == harness.SAMPLE_RATE
    assert audio["channels"] == harness.CHANNELS

    psid, tracks = wait_tracks(sse, "cam-1")
    assert sorted(t["track"]["kind"] for t in tracks) == ["audio", "video"]
    room_info = node.api.get(f"/v1/rooms/{room}").json
    assert [p["identity"] for p in room_info["participants"]] == ["cam-1"]

    harness.assert_plays(node, room, frames=30, expect_audio=True)

    assert pub.stop() in (0, 255)  # ffmpeg exits 255 on SIGINT
    sse.wait_event("ParticipantDisconnected", psid=psid, timeout=EVENT_TIMEOUT)
    unpub = sse.of("TrackUnpublished", psid=psid)
    gone = sse.of("ParticipantDisconnected", psid=psid)
    assert len(unpub) == 2 and all(e["reason"] == "client_initiated" for e in unpub)
    assert gone[0]["reason"] == "client_initiated"
    # LiveKit: an RTMP ingress that stops goes back to INACTIVE and its key stays usable.
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE",
                       10, what="ingress ended")
    invariants(sse.events)


@pytest.mark.parametrize("kind", PUBLISHERS)
def test_kill9_is_publisher_lost(node, publish, follow, invariants, kind):
    room = harness.unique_room(kind)
    ing, sse, pub, _, _ = start_publishing(node, publish, follow, kind, room)
    psid, _ = wait_tracks(sse, "cam-1")
    pub.kill()
    # The TCP connection drops (or goes silent): publisher_timeout_ms is 2 s here.
    sse.wait_event("ParticipantDisconnected", psid=psid, timeout=EVENT_TIMEOUT)
    assert sse.of("ParticipantDisconnected", psid=psid)[0]["reason"] == "publisher_lost"
    assert all(e["reason"] == "publisher_lost" for e in sse.of("TrackUnpublished", psid=psid))
    assert len(sse.of("TrackUnpublished", psid=psid)) == 2
    invariants(sse.events)


@pytest.mark.parametrize("kind", PUBLISHERS)
def test_second_publish_replaces(node, publish, follow, invariants, kind):
    room = harness.unique_room(kind)
    ing, sse, first, _, _ = start_publishing(node, publish, follow, kind, room)
    old_psid, _ = wait_tracks(sse, "cam-1")

    second = publish(kind, node.rtmp_url(ing["stream_key"]))
    sse.wait_event("ParticipantDisconnected", psid=old_psid, timeout=EVENT_TIMEOUT)
    assert sse.of("ParticipantDisconnected", psid=old_psid)[0]["reason"] == "replaced"

    def new_participant(evs):
        sids = [e["participant"]["sid"] for e in evs if e["event"] == "ParticipantConnected"
                and e["participant"]["identity"] == "cam-1"]
        return sids[1] if len(sids) > 1 else None

    new_psid = sse.wait_for(new_participant, EVENT_TIMEOUT, what="the new participant")
    assert new_psid != old_psid
    sse.wait_event("TrackPublished", count=2, psid=new_psid, timeout=EVENT_TIMEOUT)
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) == "ENDPOINT_PUBLISHING",
                       STATUS_TIMEOUT, what="PUBLISHING again")
    harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert second.running(), second.log()
    second.stop()
    first.kill()
    sse.wait_event("ParticipantDisconnected", psid=new_psid, timeout=EVENT_TIMEOUT)
    invariants(sse.events, final=True)


def test_obs_reconnect_continues_its_clock(node, publish, follow, invariants):
    """OBS-like reconnect after the TCP connection is cut: the new connection's metadata is
    stamped 0 but its media continues the old clock (seconds in). Both tracks come back for
    the new participant (a regression: the pipeline took the metadata's 0 as the stream's
    origin, thought video was missing and published audio only)."""
    room = harness.unique_room("reco")
    ing = node.api.create_ingress(room, identity="cam-1")
    sse = follow(node, room)
    pub = publish("obs", node.rtmp_url(ing["stream_key"]), reconnect=True)
    old_psid, _ = wait_tracks(sse, "cam-1")
    time.sleep(3)  # the clock the reconnect continues is well past the start
    cut = subprocess.run(["ss", "-K", "src", "127.0.0.1", "sport", "=", str(node.rtmp_port)],
                         capture_output=True, text=True)
    if cut.returncode != 0:
        pytest.skip(f"ss -K cannot cut connections here: {cut.stderr.strip()}")
    sse.wait_event("ParticipantDisconnected", psid=old_psid, timeout=EVENT_TIMEOUT)

    def new_participant(evs):
        sids = [e["participant"]["sid"] for e in evs if e["event"] == "ParticipantConnected"]
        return sids[1] if len(sids) > 1 else None

    new_psid = sse.wait_for(new_participant, EVENT_TIMEOUT, what="the reconnected participant")
    tracks = sse.wait_event("TrackPublished", count=2, psid=new_psid, timeout=EVENT_TIMEOUT)
    assert sorted(t["track"]["kind"] for t in tracks) == ["audio", "video"]
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    assert pub.running()
    invariants(sse.events)
