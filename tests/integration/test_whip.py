"""WHIP ingest (RFC 9725): the project's webrtcbin publisher → streamkeeper → the WHEP subscriber
that decodes frames, with the room events and the ingress state machine; the HTTP contract
(statuses, problem bodies, PATCH, DELETE, CORS)."""

import json
import signal
import subprocess
import time

import pytest

import harness

WHIP_PUBLISHER = harness.BUILD / "tests" / "tools" / "sk-whip-publisher"


def create_whip_ingress(node, room, identity="whip-1", transcode=None):
    body = dict(input_type="whip", name=f"{room}-{identity}", room_name=room,
                participant_identity=identity, participant_name=identity.upper())
    if transcode:
        body["transcode"] = transcode
    r = node.api.request("POST", "/v1/ingress", body)
    assert r.status == 201, f"create ingress: {r}"
    ing = r.json
    assert ing["input_type"] == "whip" and ing["url"].endswith("/whip"), ing
    return ing


class WhipPublisher:
    """sk-whip-publisher; its JSON lines (location, etag, state, result) are read live."""

    def __init__(self, procs, tmp_path, url, key=None, args=()):
        if not WHIP_PUBLISHER.exists():
            raise AssertionError(f"{WHIP_PUBLISHER} not built")
        self.log_path = tmp_path / f"whip-pub-{time.monotonic_ns()}.log"
        argv = [WHIP_PUBLISHER, "--url", url, "--ice-address", "127.0.0.1", *args]
        if key:
            argv += ["--token", key]
        self.proc = procs.start(argv, self.log_path, stderr=subprocess.STDOUT)

    def lines(self):
        return harness.parse_json_lines(harness.tail(self.log_path, 1000))

    def value(self, key):
        for obj in reversed(self.lines()):
            if key in obj:
                return obj[key]
        return None

    def wait_value(self, key, timeout=15):
        return harness.wait_until(lambda: self.value(key), timeout,
                                  what=f"publisher output {key!r}: {harness.tail(self.log_path)}")

    def stop(self, timeout=15):
        """SIGINT: the publisher DELETEs its session and exits 0 on success."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        harness.ProcessGroup.signal(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=5)


@pytest.fixture
def whip(procs, tmp_path, request):
    def start(node, key=None, url=None, args=()):
        p = WhipPublisher(procs, tmp_path, url or f"{node.base}/whip", key, args)
        logs = getattr(request.node, "_sk_logs", None)
        if logs is None:
            logs = request.node._sk_logs = []
        logs.append(("whip publisher", p.log_path))
        return p
    return start


def start_publishing(node, whip, follow, room, args=(), n_tracks=2, transcode=None, **kw):
    ing = create_whip_ingress(node, room, transcode=transcode)
    sse = follow(node, room)
    pub = whip(node, ing["stream_key"], args=args, **kw)
    rec, seen = node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    assert seen[0] in ("ENDPOINT_INACTIVE", "ENDPOINT_BUFFERING", "ENDPOINT_PUBLISHING"), seen
    sse.wait_event("TrackPublished", count=n_tracks)
    return ing, sse, pub, rec


def finish(node, sse, pub, ing, invariants, reason="client_initiated"):
    assert pub.stop() == 0, harness.tail(pub.log_path)
    assert pub.value("result") == "ok", pub.lines()
    n = len(sse.of("ParticipantConnected"))
    ev = sse.wait_event("ParticipantDisconnected", count=n)[-1]
    assert ev["reason"] == reason, ev
    assert node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE"
    invariants(sse.events)


# --- media -------------------------------------------------------------------------------


def test_h264_opus_plays_with_events(node, whip, follow, invariants):
    room = harness.unique_room("whip")
    ing, sse, pub, rec = start_publishing(node, whip, follow, room)
    video = rec["state"]["input"]["video"]
    audio = rec["state"]["input"]["audio"]
    assert (video["codec"], video["width"], video["height"]) == ("H264", 640, 360), video
    assert (audio["codec"], audio["sample_rate"], audio["channels"]) == ("opus", 48000, 2), audio
    tracks = {e["track"]["kind"]: e["track"]["codec"] for e in sse.of("TrackPublished")}
    assert tracks == {"video": "H264", "audio": "opus"}
    assert sse.of("ParticipantConnected")[0]["participant"]["kind"] == "ingress"
    res = harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert (res.last("width"), res.last("height")) == (640, 360)
    # POST → 201 on loopback, as printed by the publisher (a figure, not asserted tightly).
    print("whip post_ms", pub.value("post_ms"))
    finish(node, sse, pub, ing, invariants)


def test_vp8_opus(node, whip, follow, invariants):
    room = harness.unique_room("whip-vp8")
    ing, sse, pub, rec = start_publishing(node, whip, follow, room, args=["--video", "vp8"])
    tracks = {e["track"]["kind"]: e["track"]["codec"] for e in sse.of("TrackPublished")}
    assert tracks == {"video": "VP8", "audio": "opus"}
    assert rec["state"]["input"]["video"]["codec"] == "VP8"
    # The WHEP subscriber here offers H.264 only: it gets the audio of this room.
    harness.assert_plays(node, room, frames=0, expect_audio=True)
    finish(node, sse, pub, ing, invariants)


def test_audio_only(node, whip, follow, invariants):
    room = harness.unique_room("whip-audio")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--video", "none"],
                                        n_tracks=1)
    assert [e["track"]["kind"] for e in sse.of("TrackPublished")] == ["audio"]
    harness.assert_plays(node, room, frames=0, expect_audio=True)
    finish(node, sse, pub, ing, invariants)


def test_video_only(node, whip, follow, invariants):
    room = harness.unique_room("whip-video")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--audio", "none"],
                                        n_tracks=1)
    assert [e["track"]["kind"] for e in sse.of("TrackPublished")] == ["video"]
    harness.assert_plays(node, room, frames=30, expect_audio=False)
    finish(node, sse, pub, ing, invariants)


def test_offer_without_candidates(node, whip, follow, invariants):
    """OBS 30.2+ offers no candidate at all: the node meets the publisher by its
    peer-reflexive candidate."""
    room = harness.unique_room("whip-nocand")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--no-candidates"])
    harness.assert_plays(node, room, frames=30, expect_audio=True)
    finish(node, sse, pub, ing, invariants)


def test_key_in_path(node, whip, follow, invariants):
    room = harness.unique_room("whip-path")
    ing = create_whip_ingress(node, room)
    sse = follow(node, room)
    pub = whip(node, url=f"{node.base}/whip/{ing['stream_key']}")
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    finish(node, sse, pub, ing, invariants)


def test_gst_launch_recipe(node, procs, tmp_path, follow, invariants, request):
    """configs/gst-launch/whip.sh, as a user runs it (URL and key as arguments)."""
    room = harness.unique_room("whip-recipe")
    ing = create_whip_ingress(node, room)
    sse = follow(node, room)
    log = tmp_path / "whip-recipe.log"
    request.node._sk_logs.append(("whip.sh", log))
    env = {**__import__("os").environ, "SK_WHIP_PUBLISHER": str(WHIP_PUBLISHER),
           "SK_WIDTH": "640", "SK_HEIGHT": "360", "SK_KBPS": "1000"}
    p = procs.start(["bash", harness.RECIPES / "whip.sh", f"{node.base}/whip",
                     ing["stream_key"], "--ice-address", "127.0.0.1"], log, env=env)
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    p.send_signal(signal.SIGINT)
    assert p.wait(timeout=15) == 0, harness.tail(log)
    ev = sse.wait_event("ParticipantDisconnected")[0]
    assert ev["reason"] == "client_initiated"
    invariants(sse.events)


# --- losing and replacing publishers -------------------------------------------------------


def test_killed_publisher_is_publisher_lost(node, whip, follow, invariants):
    room = harness.unique_room("whip-kill")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room)
    pub.kill()
    ev = sse.wait_event("ParticipantDisconnected", timeout=15)[0]
    assert ev["reason"] == "publisher_lost", ev
    assert all(e["reason"] == "publisher_lost" for e in sse.of("TrackUnpublished"))
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE", 10,
                       what="ingress inactive")
    # The resource is gone with it.
    r = node.api.request("DELETE", pub.value("location").split(str(node.http_port))[1],
                         token=None)
    assert r.status == 404
    invariants(sse.events)


def test_second_post_with_same_key_replaces(node, whip, follow, invariants):
    room = harness.unique_room("whip-again")
    ing, sse, first, _ = start_publishing(node, whip, follow, room)
    second = whip(node, ing["stream_key"])
    second.wait_value("location")
    ev = sse.wait_event("ParticipantDisconnected")[0]
    assert ev["reason"] == "replaced", ev
    sse.wait_event("ParticipantConnected", count=2)
    sse.wait_event("TrackPublished", count=4)
    psids = [e["participant"]["sid"] for e in sse.of("ParticipantConnected")]
    assert len(set(psids)) == 2
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    # The replaced session's resource is gone: its DELETE is a 404 (publisher exits 1).
    assert first.stop() == 1
    finish(node, sse, second, ing, invariants)


# --- the HTTP contract -------------------------------------------------------------------

FINGERPRINT = ":".join(["AB"] * 32)


def sdp_offer(video=("H264", "sendonly"), audio=("opus", "sendonly"), extra_video=False):
    """A WebRTC offer like a browser's (no candidates), for requests that must fail."""
    lines = ["v=0", "o=- 4611731400430051336 2 IN IP4 127.0.0.1", "s=-", "t=0 0",
             "a=group:BUNDLE 0 1", "a=msid-semantic: WMS"]
    rtp = {"H264": ("96", "H264/90000", "packetization-mode=1;profile-level-id=42e01f"),
           "H264-mode0": ("96", "H264/90000", "packetization-mode=0;profile-level-id=42e01f"),
           "VP8": ("97", "VP8/90000", None), "VP9": ("98", "VP9/90000", None),
           "opus": ("111", "opus/48000/2", "minptime=10;useinbandfec=1"),
           "PCMU": ("0", "PCMU/8000", None)}
    sections = []
    if video:
        sections.append(("video", video))
    if extra_video:
        sections.append(("video", ("H264", "sendonly")))
    if audio:
        sections.append(("audio", audio))
    for mid, (kind, (codec, direction)) in enumerate(sections):
        pt, rtpmap, fmtp = rtp[codec]
        lines += [f"m={kind} 9 UDP/TLS/RTP/SAVPF {pt}", "c=IN IP4 0.0.0.0",
                  "a=ice-ufrag:Fx3q", "a=ice-pwd:6pWEfhTHQKTgDkM2aXH8kEnN",
                  "a=ice-options:trickle", f"a=fingerprint:sha-256 {FINGERPRINT}",
                  "a=setup:actpass", f"a=mid:{mid}", f"a={direction}", "a=rtcp-mux",
                  f"a=rtpmap:{pt} {rtpmap}"]
        if fmtp:
            lines.append(f"a=fmtp:{pt} {fmtp}")
    return "\r\n".join(lines) + "\r\n"


def post(node, body, key, ctype="application/sdp", path="/whip"):
    headers = {"Content-Type": ctype}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = body.encode() if isinstance(body, str) else body
    return node.api.request("POST", path, data, token=None, headers=headers)


def assert_problem(r, status, code=None):
    assert r.status == status, r
    assert r.headers.get("Content-Type", "").startswith("application/problem+json"), r.headers
    body = r.json
    assert body["status"] == status and body["detail"] and body["type"] and body["title"], body
    if code:
        assert body["code"] == code, body
    return body


def test_post_errors(node):
    room = harness.unique_room("whip-err")
    ing = create_whip_ingress(node, room)
    key = ing["stream_key"]
    rtmp = node.api.create_ingress(room, identity="rtmp-1")

    assert_problem(post(node, sdp_offer(), None), 401)
    assert_problem(post(node, sdp_offer(), "not-a-key"), 401)
    assert_problem(post(node, sdp_offer(), rtmp["stream_key"]), 401)  # an RTMP key
    assert post(node, sdp_offer(), None).headers.get("WWW-Authenticate") == "Bearer"
    assert_problem(post(node, sdp_offer(), key, ctype="application/json"), 415)
    assert_problem(post(node, "hello, this is not SDP", key), 400)
    assert_problem(post(node, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", key), 422)
    body = assert_problem(post(node, sdp_offer(video=("H264", "recvonly")), key), 422)
    assert "recvonly" in body["detail"]
    assert "inactive" in assert_problem(
        post(node, sdp_offer(audio=("opus", "inactive")), key), 422)["detail"]
    assert "more than one video" in assert_problem(
        post(node, sdp_offer(extra_video=True), key), 422)["detail"]
    assert "codec" in assert_problem(
        post(node, sdp_offer(video=("VP9", "sendonly"), audio=None), key), 422)["detail"]
    assert_problem(post(node, sdp_offer(video=("H264-mode0", "sendonly"), audio=None), key), 422)
    assert_problem(post(node, sdp_offer(video=None, audio=("PCMU", "sendonly")), key), 422)
    big = sdp_offer() + "a=x-padding:" + "x" * (70 * 1024) + "\r\n"
    assert_problem(post(node, big, key), 413)

    # Nothing was started or left allocated by any of these.
    assert node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE"
    assert node.api.get("/readyz", token=None).json["sessions"] == 0
    assert node.api.get(f"/v1/rooms/{room}").status == 404


def test_options_cors(node):
    r = node.api.request("OPTIONS", "/whip", token=None,
                         headers={"Origin": "http://example.test",
                                  "Access-Control-Request-Method": "POST"})
    assert r.status == 204, r
    assert r.headers["Accept-Post"] == "application/sdp"
    assert r.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
    assert "Location" in r.headers["Access-Control-Expose-Headers"]
    r = node.api.request("GET", "/whip", token=None)
    assert r.status == 405 and "POST" in r.headers["Allow"]


def test_full_node_is_503(start_node, whip):
    node = start_node(extra_args=["--set", "node.max_streams=1"])
    room = harness.unique_room("whip-503")
    first = create_whip_ingress(node, room, identity="a")
    other = create_whip_ingress(node, room, identity="b")
    whip(node, first["stream_key"])
    node.api.wait_status(first["ingress_id"], "ENDPOINT_PUBLISHING", timeout=20)
    r = post(node, sdp_offer(), other["stream_key"])
    assert_problem(r, 503)
    assert int(r.headers["Retry-After"]) > 0
    assert node.api.status(other["ingress_id"]) == "ENDPOINT_INACTIVE"


def test_patch_trickle_and_preconditions(node, whip, follow, invariants):
    room = harness.unique_room("whip-patch")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room)
    path = pub.value("location").split(str(node.http_port), 1)[1]
    etag = pub.value("etag")
    assert path.startswith("/whip/session/") and len(path) > 30, path
    assert etag.startswith('"') and etag.endswith('"'), etag  # a strong ETag
    frag = "a=ice-ufrag:Fx3q\r\na=ice-pwd:6pWEfhTHQKTgDkM2aXH8kEnN\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\n" \
           "a=mid:0\r\na=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n"
    sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag"}

    def patch(body, **headers):
        return node.api.request("PATCH", path, body.encode(), token=None,
                                headers={**sdpfrag, **headers})

    assert_problem(patch(frag), 428)
    assert_problem(patch(frag, **{"If-Match": '"stale"'}), 412)
    r = node.api.request("PATCH", path, frag.encode(), token=None,
                         headers={"Content-Type": "application/sdp", "If-Match": etag})
    assert_problem(r, 415)
    # Trickle: the publisher's ufrag is not known to this test, so use the session's own.
    frag_ok = "a=candidate:1 1 udp 2122260223 127.0.0.1 9 typ host\r\n"
    r = patch(frag_ok, **{"If-Match": etag})
    assert r.status == 204, r
    r = node.api.request("OPTIONS", path, token=None)
    assert r.status == 204 and "PATCH" in r.headers["Access-Control-Allow-Methods"]
    # Still publishing and playing after all that.
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    assert node.api.request("DELETE", "/whip/session/nope", token=None).status == 404
    finish(node, sse, pub, ing, invariants)


def test_ice_restart_preconditions_and_failed_restarts(node, whip, follow, invariants):
    """ICE restart by PATCH (RFC 9725 4.4.2). A restart that fails (no If-Match: "*": 412; no
    a=ice-pwd: 400) changes nothing: the ETag still matches and media goes on. A valid one is
    answered 200 with the node's new ufrag/pwd and candidates and a new ETag; the node's ICE
    then waits for checks with the new credentials, so a publisher that does not follow it
    (here the restart comes from the test, not the publisher) is lost after the timeout.
    The publisher's own restart is test_whip_media.py::test_ice_restart_by_the_publisher."""
    room = harness.unique_room("whip-restart")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room)
    path = pub.value("location").split(str(node.http_port), 1)[1]
    etag = pub.value("etag")
    headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    frag = "a=ice-ufrag:NewU\r\na=ice-pwd:NewPasswordNewPassword12\r\n"

    def patch(body, if_match):
        return node.api.request("PATCH", path, body.encode(), token=None,
                                headers={**headers, "If-Match": if_match})

    assert_problem(patch(frag, etag), 412)  # a restart must use If-Match: "*"
    assert_problem(patch("a=ice-ufrag:NewU\r\n", "*"), 400)  # no a=ice-pwd
    assert patch("a=end-of-candidates\r\n", etag).status == 204  # the ETag is unchanged
    harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert not sse.of("ParticipantDisconnected")

    r = patch(frag, "*")
    assert r.status == 200, r
    assert r.headers["Content-Type"] == "application/trickle-ice-sdpfrag"
    new_etag = r.headers["ETag"]
    assert new_etag != etag and new_etag.startswith('"'), (etag, new_etag)
    body = r.body.decode()
    for line in ("a=ice-ufrag:", "a=ice-pwd:", "a=mid:", "a=candidate:", "a=end-of-candidates"):
        assert line in body, body
    assert "NewU" not in body  # the node's own credentials, not an echo
    assert_problem(patch("a=end-of-candidates\r\n", etag), 412)  # the old ETag is stale

    ev = sse.wait_event("ParticipantDisconnected", timeout=20)[0]
    assert ev["reason"] == "publisher_lost", ev
    pub.kill()
    invariants(sse.events)
