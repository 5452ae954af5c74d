"""sk-obs-publisher on the wire, against a scripted fake server (no daemon needed): the
bytes must be OBS Studio 29's, or the publisher tests would prove less than they claim."""

import signal
import struct
import subprocess
import time

import pytest

import harness
from rtmpproto import MSG_AUDIO, MSG_COMMAND, MSG_DATA, MSG_SET_CHUNK_SIZE, MSG_VIDEO, \
    FakeRtmpServer

pytestmark = pytest.mark.skipif(not harness.OBS_PUBLISHER.exists(),
                                reason="sk-obs-publisher not built")

OBS_METADATA_KEYS = [
    "duration", "fileSize", "width", "height", "videocodecid", "videodatarate", "framerate",
    "audiocodecid", "audiodatarate", "audiosamplerate", "audiosamplesize", "audiochannels",
    "stereo", "2.1", "3.1", "4.0", "4.1", "5.1", "7.1", "encoder"]


@pytest.fixture
def flv(tmp_path_factory):
    return harness.make_flv(tmp_path_factory.getbasetemp() / "obs-wire.flv", seconds=2)


@pytest.fixture
def server():
    srv = FakeRtmpServer()
    yield srv
    srv.close()


def run(argv, timeout=30):
    p = subprocess.run([str(a) for a in argv], capture_output=True, timeout=timeout)
    return p.returncode, harness.parse_json_lines(p.stdout.decode()), p.stderr.decode()


def commands(conn):
    return [m.amf() for m in conn["messages"] if m.type == MSG_COMMAND]


def test_wire_sequence_is_obs(server, flv):
    rc, lines, err = run([harness.OBS_PUBLISHER, "--url",
                          f"rtmp://127.0.0.1:{server.port}/live/sk_KEY", "--flv", flv,
                          "--duration", "2.5"])
    assert rc == 0, err
    assert [line["event"] for line in lines][-1] == "stopped"
    harness.wait_until(lambda: server.connections and server.connections[0]["closed_at"], 5)
    conn = server.connections[0]

    # Plain handshake: C0 = 3, C1 = time + four zero bytes (no digest scheme).
    assert conn["c0c1"][0] == 3
    assert conn["c0c1"][5:9] == b"\0\0\0\0"

    msgs = conn["messages"]
    assert msgs[0].type == MSG_SET_CHUNK_SIZE and msgs[0].csid == 2
    assert struct.unpack(">I", msgs[0].payload)[0] == 4096

    cmds = commands(conn)
    names = [c[0] for c in cmds]
    assert names[:5] == ["connect", "releaseStream", "FCPublish", "createStream", "publish"]
    connect = cmds[0][2]
    tc_url = f"rtmp://127.0.0.1:{server.port}/live"
    assert connect == {"app": "live", "type": "nonprivate",
                       "flashVer": "FMLE/3.0 (compatible; FMSc/1.0)",
                       "swfUrl": tc_url, "tcUrl": tc_url}
    assert cmds[1][3] == "sk_KEY" and cmds[2][3] == "sk_KEY"
    assert cmds[4][3:] == ["sk_KEY", "live"]
    assert names[-2:] == ["FCUnpublish", "deleteStream"]
    assert cmds[-1][3] == 1  # the stream id from createStream

    # After publish: metadata, then the AAC and AVC sequence headers, then media.
    after = [m for m in msgs if m.type in (MSG_DATA, MSG_AUDIO, MSG_VIDEO)]
    meta = after[0].amf()
    assert meta[:2] == ["@setDataFrame", "onMetaData"]
    assert list(meta[2].keys()) == OBS_METADATA_KEYS
    assert meta[2]["width"] == harness.WIDTH and meta[2]["height"] == harness.HEIGHT
    assert meta[2]["videocodecid"] == 7 and meta[2]["audiocodecid"] == 10
    assert meta[2]["encoder"] == "obs-output module (libobs version 29.0.2)"
    assert after[1].type == MSG_AUDIO and after[1].payload[:2] == b"\xaf\x00"
    assert after[2].type == MSG_VIDEO and after[2].payload[:2] == b"\x17\x00"
    assert all(m.msid == 1 for m in after)

    video = [m for m in after[3:] if m.type == MSG_VIDEO]
    audio = [m for m in after[3:] if m.type == MSG_AUDIO]
    # Paced in real time: ~2.5 s of 30 fps video, not the whole file at once.
    assert 45 <= len(video) <= 90, len(video)
    assert len(audio) > 60
    assert video[0].payload[0] == 0x17  # starts with a keyframe
    for track in (video, audio):
        ts = [m.timestamp for m in track]
        assert ts == sorted(ts)


def test_loops_with_rising_timestamps(server, flv):
    rc, lines, err = run([harness.OBS_PUBLISHER, "--url",
                          f"rtmp://127.0.0.1:{server.port}/live/k", "--flv", flv,
                          "--duration", "4.5"])
    assert rc == 0, err
    assert any(line["event"] == "loop" for line in lines)
    harness.wait_until(lambda: server.connections[0]["closed_at"], 5)
    video = [m for m in server.connections[0]["messages"] if m.type == MSG_VIDEO][1:]
    ts = [m.timestamp for m in video]
    assert all(b > a for a, b in zip(ts, ts[1:])), "timestamps must keep rising across loops"
    assert ts[-1] > 3500


def test_sigterm_is_clean_and_sigkill_is_not(server, flv, procs):
    url = f"rtmp://127.0.0.1:{server.port}/live/k"
    p = procs.start([harness.OBS_PUBLISHER, "--url", url, "--flv", flv])
    harness.wait_until(lambda: server.connections and any(
        m.type == MSG_VIDEO for m in server.connections[0]["messages"]), 10)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    harness.wait_until(lambda: server.connections[0]["closed_at"], 5)
    assert [c[0] for c in commands(server.connections[0])][-2:] == ["FCUnpublish",
                                                                   "deleteStream"]

    p = procs.start([harness.OBS_PUBLISHER, "--url", url, "--flv", flv])
    harness.wait_until(lambda: len(server.connections) == 2 and any(
        m.type == MSG_VIDEO for m in server.connections[1]["messages"]), 10)
    p.kill()
    p.wait(timeout=5)
    harness.wait_until(lambda: server.connections[1]["closed_at"], 5)
    names = [c[0] for c in commands(server.connections[1])]
    assert "FCUnpublish" not in names and "deleteStream" not in names


def test_reconnects_like_obs(flv, procs):
    srv = FakeRtmpServer(close_after_s=1.0)
    try:
        p = procs.start([harness.OBS_PUBLISHER, "--url",
                         f"rtmp://127.0.0.1:{srv.port}/live/k", "--flv", flv, "--reconnect"])
        harness.wait_until(lambda: len(srv.connections) >= 2 and any(
            m.type == MSG_VIDEO for m in srv.connections[1]["messages"]), 15,
            what="a second connection with media")
        first, second = srv.connections[0], srv.connections[1]
        gap = second["accepted_at"] - first["closed_at"]
        # OBS waits 2 s before the first retry, on a new TCP connection.
        assert 1.8 <= gap <= 4.0, gap
        names = [c[0] for c in commands(second)]
        assert names[:5] == ["connect", "releaseStream", "FCPublish", "createStream", "publish"]
        p.send_signal(signal.SIGTERM)
        assert p.wait(timeout=10) == 0
    finally:
        srv.close()


def test_fails_cleanly_without_server(flv):
    start = time.monotonic()
    rc, lines, _ = run([harness.OBS_PUBLISHER, "--url",
                        f"rtmp://127.0.0.1:{harness.free_port()}/live/k", "--flv", flv])
    assert rc == 2
    assert lines[-1]["event"] == "connect_failed"
    assert time.monotonic() - start < 10


def test_rejects_bad_arguments(tmp_path):
    rc, _, err = run([harness.OBS_PUBLISHER, "--url", "rtmp://127.0.0.1:1/live/k"])
    assert rc == 1 and "required" in err
    junk = tmp_path / "junk.flv"
    junk.write_bytes(b"not an flv at all")
    rc, _, err = run([harness.OBS_PUBLISHER, "--url", "rtmp://127.0.0.1:1/live/k",
                      "--flv", junk])
    assert rc == 1 and "FLV" in err
