"""WHIP media beyond plain passthrough: keyframe requests from WHEP viewers forwarded to the
publisher (PLI), VP8 playback, `transcode: always`, and the ICE restart of a live session."""

import time

import pytest

import harness
from test_whip import (  # noqa: F401 (whip: fixture)
    assert_problem, create_whip_ingress, finish, start_publishing, whip)


def keyframe_requests(pub):
    return max([o["keyframe_request"] for o in pub.lines() if "keyframe_request" in o],
               default=0)


def test_late_viewer_gets_a_keyframe(node, whip, follow, invariants):
    """A publisher whose next scheduled keyframe is a minute away: a viewer that joins once the
    room's GOP cache has given up (more than 300 frames) has nothing to decode. The node asks
    the publisher for a keyframe (PLI) when it binds the viewer to a track without a cached
    GOP, and the viewer decodes long before the scheduled keyframe; this viewer never asks
    itself (--no-pli), so only the node's request can bring it."""
    room = harness.unique_room("whip-late")
    args = ["--audio", "none", "--fps", "60", "--width", "320", "--height", "180",
            "--keyframe-interval", "60"]
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=args, n_tracks=1)
    # 60 fps: the track's GOP cache (300 frames) is dropped after 5 s of this GOP, so a new
    # viewer starts on delta frames and has nothing to decode without a fresh keyframe.
    time.sleep(7)
    before = keyframe_requests(pub)
    res = harness.assert_plays(node, room, frames=10, expect_audio=False, timeout=25,
                               extra=["--no-pli"])
    assert (res.last("width"), res.last("height")) == (320, 180)
    assert keyframe_requests(pub) > before, pub.lines()[-5:]
    finish(node, sse, pub, ing, invariants)


def test_viewer_pli_reaches_the_publisher(node, whip, follow, invariants):
    """A viewer's PLI (sent here after 60 decoded frames, as a browser does after a decoding
    error) becomes a PLI to the WHIP publisher, whose encoder makes a keyframe long before the
    scheduled one. The viewer joined while the GOP was cached, so the node had no reason to ask
    on its own; 2 s in, the request is past the track's rate limit (500 ms) of any the viewer's
    depayloader made while starting."""
    room = harness.unique_room("whip-pli")
    args = ["--audio", "none", "--width", "320", "--height", "180", "--keyframe-interval", "60"]
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=args, n_tracks=1)
    res = harness.assert_plays(node, room, frames=90, expect_audio=False, timeout=25,
                               extra=["--pli-after-frames", "60"])
    pli_us = next(o["mono_us"] for o in res.lines if "pli" in o)
    harness.wait_until(lambda: any(o["mono_us"] > pli_us for o in pub.lines()
                                   if "keyframe_request" in o), 10,
                       what=f"the publisher's keyframe request after the PLI at {pli_us}: {pub.lines()[-5:]}")
    finish(node, sse, pub, ing, invariants)


def test_vp8_publisher_plays_to_vp8_viewer(node, whip, follow, invariants):
    room = harness.unique_room("whip-vp8play")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--video", "vp8"])
    res = harness.assert_plays(node, room, frames=30, expect_audio=True,
                               extra=["--codec", "vp8"])
    assert (res.last("width"), res.last("height")) == (640, 360)
    # A browser-like viewer that accepts both gets the room's codec, VP8.
    harness.assert_plays(node, room, frames=10, expect_audio=True, extra=["--codec", "any"])
    finish(node, sse, pub, ing, invariants)


def test_vp8_room_refuses_an_h264_only_video_viewer(node, whip, follow, invariants):
    """A viewer that can take neither the room's video codec nor audio gets a 422 that says
    which codec the room has; with audio in its offer it plays the audio (video inactive)."""
    room = harness.unique_room("whip-vp8only")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--video", "vp8"])
    r = node.api.request("POST", f"/v1/rooms/{room}/whep", H264_ONLY.encode(),
                         token=None, headers={"Content-Type": "application/sdp"})
    assert r.status == 422, r
    assert "VP8" in r.json["error"], r.json
    harness.assert_plays(node, room, frames=0, expect_audio=True)  # H.264 + Opus offer
    finish(node, sse, pub, ing, invariants)


def test_transcode_always_vp8_to_h264(node, whip, follow, invariants):
    """transcode: always decodes the VP8 publisher and re-encodes H.264 for the room."""
    room = harness.unique_room("whip-transcode")
    ing, sse, pub, rec = start_publishing(node, whip, follow, room, args=["--video", "vp8"],
                                          transcode="always")
    tracks = {e["track"]["kind"]: e["track"]["codec"] for e in sse.of("TrackPublished")}
    assert tracks == {"video": "H264", "audio": "opus"}, tracks
    assert rec["state"]["input"]["video"]["codec"] == "VP8"  # what the publisher sends
    res = harness.assert_plays(node, room, frames=30, expect_audio=True)  # offers H.264 only
    assert (res.last("width"), res.last("height")) == (640, 360)
    finish(node, sse, pub, ing, invariants)


# A viewer's offer with H.264 video only (no audio), as a browser would make it.
H264_ONLY = "\r\n".join([
    "v=0", "o=- 1 2 IN IP4 127.0.0.1", "s=-", "t=0 0", "a=group:BUNDLE 0",
    "m=video 9 UDP/TLS/RTP/SAVPF 102", "c=IN IP4 0.0.0.0", "a=ice-ufrag:Vw3q",
    "a=ice-pwd:6pWEfhTHQKTgDkM2aXH8kEnN", "a=fingerprint:sha-256 " + ":".join(["AB"] * 32),
    "a=setup:actpass", "a=mid:0", "a=recvonly", "a=rtcp-mux", "a=rtpmap:102 H264/90000",
    "a=fmtp:102 packetization-mode=1;profile-level-id=42e01f"]) + "\r\n"


def test_ice_restart_by_the_publisher(node, whip, follow, invariants):
    """The publisher restarts ICE (new ufrag/pwd from its own libnice agent, PATCH with
    If-Match: "*"); the node restarts its side under webrtcbin and answers its new credentials;
    the new connectivity checks succeed (the publisher's ICE is ready again) and media goes on:
    a viewer that joins after the restart decodes, and the participant never left."""
    room = harness.unique_room("whip-icerestart")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room,
                                        args=["--ice-restart-after", "2"])
    first_etag = pub.value("etag")
    assert pub.wait_value("ice_restart", timeout=20) == "ok", pub.lines()[-5:]
    harness.wait_until(lambda: any(o.get("ice_state") == "ready" for o in pub.lines()
                                   if "ice_state" in o and o is not None), 15,
                       what=f"publisher ICE ready after the restart: {pub.lines()[-5:]}")
    restart = next(o for o in pub.lines() if o.get("ice_restart") == "ok")
    assert restart["etag"] != first_etag and restart["candidates"] > 0, restart
    res = harness.assert_plays(node, room, frames=60, expect_audio=True)
    assert res.last("width") == 640
    # The old ETag is stale now, the new one is the session's.
    path = pub.value("location").split(str(node.http_port), 1)[1]
    headers = {"Content-Type": "application/trickle-ice-sdpfrag"}
    r = node.api.request("PATCH", path, b"a=end-of-candidates\r\n", token=None,
                         headers={**headers, "If-Match": first_etag})
    assert_problem(r, 412)
    r = node.api.request("PATCH", path, b"a=end-of-candidates\r\n", token=None,
                         headers={**headers, "If-Match": restart["etag"]})
    assert r.status == 204, r
    assert len(sse.of("ParticipantConnected")) == 1 and not sse.of("ParticipantDisconnected")
    finish(node, sse, pub, ing, invariants)


def test_every_decoded_picture_is_whole(node, whip, follow, invariants):
    """The publisher stamps its capture time into the top rows of each frame (--stamp); x264
    (zerolatency: a slice per thread) puts them in the first slice, and rtph264pay repeats
    SPS/PPS before each IDR slice. A viewer that decodes a picture whose first slice was lost
    or cut off (an IDR split in two access units) reads no valid stamp there."""
    room = harness.unique_room("whip-whole")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room,
                                        args=["--stamp", "--audio", "none"], n_tracks=1)
    res = harness.assert_plays(node, room, frames=90, expect_audio=False, extra=["--latency"])
    frames = [o for o in res.lines if "frame" in o]
    broken = [o["frame"] for o in frames if "g2g_ms" not in o]
    assert len(frames) >= 90 and not broken, f"pictures without their stamp: {broken[:20]}"
    assert all(0 <= o["g2g_ms"] < 10_000 for o in frames), frames[:5]
    finish(node, sse, pub, ing, invariants)


def test_memory_stays_flat_while_a_publisher_streams(node, procs, tmp_path, whip, follow,
                                                    invariants):
    """The node keeps nothing of the media it passes on beyond its GOP cache: with a 720p
    2.5 Mbit/s WHIP publisher (a keyframe every second) and one viewer, its RSS grows by less
    than 3 MiB over 15 s once both run. Packets the node's receive thread left without their
    arrival time were all kept by webrtcbin's rtpstorage: ~550 KiB/s, 8 MiB in that window."""
    if harness.daemon_is_sanitized():
        pytest.skip("under ASan the RSS holds its quarantine of freed memory")
    room = harness.unique_room("whip-rss")
    ing, sse, pub, _ = start_publishing(
        node, whip, follow, room,
        args=["--width", "1280", "--height", "720", "--bitrate", "2500", "--keyframe-interval",
              "1"])
    log = tmp_path / "rss-viewer.log"
    viewer = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                          "127.0.0.1", "--frames", "100000", "--timeout", "60", "--no-decode"],
                         log)
    harness.wait_until(lambda: "frame" in harness.tail(log), 20,
                       what=f"the viewer's first frame: {harness.tail(log)}")
    time.sleep(5)  # the GOP cache, pools and arenas at their size
    before = harness.rss_kib(node.proc.pid)
    time.sleep(15)
    grown = harness.rss_kib(node.proc.pid) - before
    assert viewer.poll() is None, harness.tail(log)
    assert grown < 3 * 1024, f"RSS grew by {grown} KiB in 15 s"
    harness.ProcessGroup.signal(viewer, 2)
    finish(node, sse, pub, ing, invariants)


def test_publisher_sending_an_encoded_file(node, tmp_path, whip, follow, invariants):
    """sk-whip-publisher --file, the publisher bench_whip.py runs many of at once: a Matroska
    file's constrained-baseline H.264 and Opus go out as they are, paced in real time, and a
    viewer decodes the file's pictures and audio."""
    source = harness.make_whip_mkv(tmp_path / "src.mkv", 20, 320, 180)
    room = harness.unique_room("whip-file")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=["--file", str(source)])
    res = harness.assert_plays(node, room, frames=60, expect_audio=True, timeout=25)
    assert (res.last("width"), res.last("height")) == (320, 180)
    finish(node, sse, pub, ing, invariants)


def lossy_publisher_run(node, whip, follow, invariants, room, extra, timeout, drop_every=40):
    """A publisher that loses every Nth video packet on its way out, a keyframe only every 60 s,
    and a viewer of 90 frames: returns the publisher's loss figures and its keyframe requests.
    The session must end with the publisher's DELETE (finish), not as a lost publisher."""
    args = ["--audio", "none", "--drop-every", str(drop_every), "--keyframe-interval", "60"] + extra
    ing, sse, pub, _ = start_publishing(node, whip, follow, room, args=args, n_tracks=1)
    res = harness.whep_play(node, room, frames=90, expect_audio=False, timeout=timeout)
    finish(node, sse, pub, ing, invariants)
    loss = next(o for o in pub.lines() if "dropped" in o)
    return res, loss, keyframe_requests(pub)


def test_lost_video_packets_are_asked_for_again(node, whip, follow, invariants):
    """The publisher offers NACK with RTX (as browsers and OBS do): the node's jitter buffer asks
    for each lost video packet (RTCP NACK) in time, the publisher resends it, and the viewer
    decodes on without the node having to ask for keyframes."""
    res, loss, keyframes = lossy_publisher_run(node, whip, follow, invariants,
                                               harness.unique_room("whip-nack"), [], 15)
    assert res.rc == 0, res.log[-2000:]
    assert loss["dropped"] >= 5, loss
    # Under load a retransmission can come too late; most must not.
    assert loss["retransmitted"] >= loss["dropped"] // 2, loss
    assert keyframes <= loss["dropped"] // 4, (keyframes, loss)


def test_lost_video_packets_without_nack_ask_for_a_keyframe(node, whip, follow, invariants):
    """The control: a publisher that offers no NACK. Each loss spoils the picture until the next
    keyframe, which the node asks for (a PLI when its forwarding path sees a packet lost for
    good) instead of passing on a broken one. With 1 packet in 10 lost most keyframes are hit too, so the video is held for
    seconds at a time: RTP still arrives, and the publisher is not taken for lost (the tests'
    publisher timeout is 2 s)."""
    res, loss, keyframes = lossy_publisher_run(node, whip, follow, invariants,
                                               harness.unique_room("whip-nonack"), ["--no-nack"],
                                               6, drop_every=10)
    assert loss["dropped"] >= 5 and loss["retransmitted"] == 0, loss
    assert keyframes >= 3, (keyframes, loss)


def test_viewer_waiting_before_the_publisher_gets_whole_pictures(node, procs, tmp_path, whip,
                                                                  follow, invariants):
    """A viewer that POSTs its WHEP offer to a room with no track yet (a page opened before the
    stream starts) is answered at once and waits; when the WHIP publisher comes, its tracks are
    bound to that session and it decodes from the publisher's first keyframe on. The node's jitter
    buffers start a stream after two packets in sequence rather than after their latency: the
    first picture must still be whole (the publisher's capture stamp reads back from it).
    Not asserted: that every later picture is whole. On a loaded machine about one run in three
    has pictures without their stamp a second into the stream while this viewer sends PLIs for
    a few seconds; it happened without the fast start too, its cause is not known yet."""
    room = harness.unique_room("whip-waiting")
    ing = create_whip_ingress(node, room)
    sse = follow(node, room)
    viewer, log = start_waiting_viewer(procs, tmp_path, node, room, "waiting-viewer",
                                       ["--frames", "60", "--latency"])
    (answered,) = [o for o in harness.parse_json_lines(harness.tail(log)) if "location" in o]
    assert "/v1/whep/" in answered["location"], answered
    assert not sse.of("TrackPublished")  # nothing to bind yet: the session waits

    pub = whip(node, ing["stream_key"], args=["--stamp"])
    sse.wait_event("TrackPublished", count=2)
    assert viewer.wait(timeout=60) == 0, harness.tail(log)
    out = harness.parse_json_lines(harness.tail(log, 5000))
    assert out[-1]["result"] == "ok" and out[-1]["audio_buffers"] > 0, out[-1]
    frames = [o for o in out if "frame" in o]
    assert len(frames) >= 60, out[-3:]
    assert "g2g_ms" in frames[0], f"the first picture is not whole: {frames[:3]}"
    # Start-up moments it reports (--latency): media came only after the publisher's POST.
    events = {o["event"]: o["mono_us"] for o in out if "event" in o}
    assert {"connected", "first_rtp", "video_pad", "video_depayloaded"} <= set(events), events
    assert events["connected"] < pub.wait_value("post_us") < events["first_rtp"], events
    finish(node, sse, pub, ing, invariants)


def start_waiting_viewer(procs, tmp_path, node, room, name, extra=()):
    """sk-whep-client POSTed to @room before it has a track; returns (proc, log) once answered."""
    log = tmp_path / f"{name}.log"
    # The last --frames wins (GOption), so @extra may ask for more.
    viewer = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                          "127.0.0.1", "--frames", "30", "--expect-audio", "--timeout", "60",
                          *extra], log)
    harness.wait_until(lambda: any("location" in o for o in
                                   harness.parse_json_lines(harness.tail(log))), 20,
                       what=f"the waiting viewer's answer: {harness.tail(log)}")
    return viewer, log


def test_waiting_viewer_plays_a_publisher_of_another_h264_profile(node, procs, tmp_path, publish,
                                                                 follow, invariants):
    """A viewer that came before any publisher has its H.264 m-line answered for
    constrained-baseline (what WebRTC senders make); the RTMP publisher that comes is x264's High
    profile (ffmpeg, no B-frames: passed through). The stream still goes out on that m-line
    (decoders read the profile from the stream), instead of the viewer's pipeline failing on
    caps it did not negotiate."""
    room = harness.unique_room("wait-high")
    sse = follow(node, room)
    viewer, log = start_waiting_viewer(procs, tmp_path, node, room, "waiting-high")
    ing = node.api.create_ingress(room, identity="cam-high")
    pub = publish("ffmpeg", node.rtmp_url(ing["stream_key"]))
    sse.wait_event("TrackPublished", count=2)
    rec = node.api.ingress(ing["ingress_id"])
    assert rec["state"]["input"]["video"]["codec"].lower() == "h264", rec
    assert viewer.wait(timeout=60) == 0, harness.tail(log)
    out = harness.parse_json_lines(harness.tail(log, 5000))
    assert out[-1]["result"] == "ok" and out[-1]["video_frames"] >= 30, out[-1]
    assert (out[-1]["width"], out[-1]["height"]) == (harness.WIDTH, harness.HEIGHT), out[-1]
    pub.stop()
    sse.wait_event("ParticipantDisconnected")
    invariants(sse.events)



def test_h264_packets_forwarded_or_depayloaded(start_node, whip, follow, invariants,
                                               monkeypatch):
    """Passthrough forwards the publisher's RTP packets as they came (no depayloader or
    payloader per packet), which needs the SPS in front of each IDR. A publisher that gives
    its SPS/PPS only in the offer (sprop-parameter-sets) is depayloaded from its first IDR on,
    so that h264parse puts them in front of each IDR: its first viewer and a late one (after
    a later keyframe) both decode it."""
    monkeypatch.setenv("SK_NODE_GST_DEBUG", "*:2,sk-whip:4")
    node = start_node()
    room = harness.unique_room("whip-fwd")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room)
    res = harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert (res.last("width"), res.last("height")) == (640, 360)
    log = node.log()
    assert "receiving video (H264), forwarding its packets" in log, harness.tail(node.log_path)
    assert "receiving audio (OPUS), forwarding its packets" in log
    finish(node, sse, pub, ing, invariants)

    room = harness.unique_room("whip-sprop")
    ing, sse, pub, _ = start_publishing(node, whip, follow, room,
                                        args=["--sps-in-offer-only", "--keyframe-interval", "1"])
    res = harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert (res.last("width"), res.last("height")) == (640, 360)
    assert "depayloading its video from now on" in node.log(), harness.tail(node.log_path)
    time.sleep(2.5)  # past the cached GOP's keyframe: a late viewer starts on a later one
    res = harness.assert_plays(node, room, frames=30, expect_audio=True)
    assert (res.last("width"), res.last("height")) == (640, 360)
    finish(node, sse, pub, ing, invariants)


def viewer_stats(log):
    text = harness.Path(log).read_text(errors="replace")
    return [o for o in harness.parse_json_lines(text) if "video_frames" in o]


def wait_viewer_decodes(log, width, height, more_frames=30, timeout=30):
    """Waits until the viewer of @log has decoded @more_frames frames of @width x @height."""
    def frames_at_size():
        stats = [s for s in viewer_stats(log) if (s["width"], s["height"]) == (width, height)]
        return stats and stats[-1]["video_frames"] - stats[0]["video_frames"] >= more_frames
    harness.wait_until(frames_at_size, timeout,
                       what=f"{more_frames} frames of {width}x{height}: {harness.tail(log, 20)}")


def test_viewer_follows_rtmp_whip_rtmp_on_one_mline(node, procs, tmp_path, publish, whip, follow,
                                                    invariants):
    """One viewer, one H.264 m-line: an RTMP publisher's frames go out through the node's
    payloader, a WHIP publisher's packets as the publisher sent them. The viewer follows the
    room's newest publisher from RTMP to WHIP and back (its send pad switched between the two
    ways each time) and decodes each one's pictures."""
    room = harness.unique_room("whip-switch")
    sse = follow(node, room)
    rtmp_ing = node.api.create_ingress(room, identity="cam-rtmp", transcode="never")
    rtmp = publish("ffmpeg", node.rtmp_url(rtmp_ing["stream_key"]))
    sse.wait_event("TrackPublished", count=2)
    log = tmp_path / "switching-viewer.log"
    viewer = procs.start([harness.WHEP_CLIENT, "--url", node.whep_url(room), "--ice-address",
                          "127.0.0.1", "--frames", "100000", "--timeout", "120"], log)
    wait_viewer_decodes(log, harness.WIDTH, harness.HEIGHT)

    whip_ing = create_whip_ingress(node, room, identity="cam-whip")
    pub = whip(node, whip_ing["stream_key"], args=["--width", "320", "--height", "180"])
    sse.wait_event("TrackPublished", count=4)
    wait_viewer_decodes(log, 320, 180)

    assert pub.stop() == 0, harness.tail(pub.log_path)
    sse.wait_event("ParticipantDisconnected")
    # Back on the RTMP track: frames counted from the first stats line at that size again.
    before = len(viewer_stats(log))
    harness.wait_until(lambda: any((s["width"], s["height"]) == (harness.WIDTH, harness.HEIGHT)
                                   for s in viewer_stats(log)[before:]), 30,
                       what=f"the RTMP publisher again: {harness.tail(log, 20)}")
    start = next(s["video_frames"] for s in viewer_stats(log)[before:]
                 if (s["width"], s["height"]) == (harness.WIDTH, harness.HEIGHT))
    harness.wait_until(lambda: viewer_stats(log)[-1]["video_frames"] - start >= 30, 30,
                       what=f"30 more RTMP frames: {harness.tail(log, 20)}")
    assert viewer.poll() is None, harness.tail(log)
    rtmp.stop()
    sse.wait_event("ParticipantDisconnected", count=2)
    invariants(sse.events)
