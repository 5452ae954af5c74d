"""Hostile and broken input against a node that also serves a good stream: after each
attack the good stream must still play and the node must still answer /healthz."""

import os
import resource
import socket
import struct
import time

import pytest

import harness
from rtmpproto import MSG_COMMAND, MSG_SET_CHUNK_SIZE, amf0_encode, amf0_encode_all, \
    chunk_message, command, connect_and_handshake, wait_closed

GOOD_ROOM = "good"


class Env:
    pass


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    e = Env()
    e.tmp = tmp_path_factory.mktemp("bad-input")
    e.procs = harness.ProcessGroup()
    e.node = harness.Node(e.procs, e.tmp, extra_args=[
        "--set", "rtmp.handshake_timeout_ms=2000"]).start()
    ing = e.node.api.create_ingress(GOOD_ROOM, identity="good-cam")
    e.ingress_id = ing["ingress_id"]
    e.pub = harness.Publisher(e.procs, "obs", e.node.rtmp_url(ing["stream_key"]), e.tmp)
    e.node.api.wait_status(e.ingress_id, "ENDPOINT_PUBLISHING", timeout=30)
    yield e
    try:
        e.pub.stop()
        rc = e.node.stop()
        assert rc == 0, f"node exited {rc}:\n{harness.tail(e.node.log_path)}"
    finally:
        e.procs.kill_all()


@pytest.fixture
def good(env, request):
    """Runs the test, then proves the good stream and the node survived it."""
    request.node._sk_logs = [("streamkeeper", env.node.log_path)]
    yield env
    assert env.node.alive(), f"node died:\n{harness.tail(env.node.log_path)}"
    assert env.node.healthy()
    assert env.pub.running(), f"good publisher dropped:\n{env.pub.log()}"
    assert env.node.api.status(env.ingress_id) == "ENDPOINT_PUBLISHING"
    harness.assert_plays(env.node, GOOD_ROOM, frames=10, expect_audio=False, timeout=15)


def rtmp(env):
    return connect_and_handshake(env.node.rtmp_port)


def room_names(env):
    body = env.node.api.get("/v1/rooms").json
    rooms = body["rooms"]
    return {r["name"] for r in rooms}


def test_wrong_stream_key(good, procs, tmp_path):
    before = good.node.api.get("/v1/ingress").json
    pub = harness.Publisher(procs, "obs", good.node.rtmp_url("not-a-key-" + "x" * 22), tmp_path)
    rc = pub.proc.wait(timeout=20)
    assert rc != 0, "a wrong key must not publish"
    assert room_names(good) == {GOOD_ROOM}
    after = good.node.api.get("/v1/ingress").json
    ids = lambda body: sorted(i["ingress_id"] for i in  # noqa: E731
                              body["items"])
    assert ids(after) == ids(before)


def test_garbage_after_handshake(good):
    s = rtmp(good)
    try:
        s.sendall(os.urandom(64 * 1024))
        wait_closed(s, 3)  # closing is the likely answer, but not the point
    except OSError:
        pass
    finally:
        s.close()


@pytest.mark.parametrize("size", [0, 2 ** 31, 2 ** 31 - 1, 0xFFFFFFFF])
def test_set_chunk_size_out_of_range(good, size):
    s = rtmp(good)
    try:
        s.sendall(chunk_message(2, MSG_SET_CHUNK_SIZE, struct.pack(">I", size)))
        s.sendall(command("connect", 1, {"app": "live"}))
        assert wait_closed(s, 5), f"Set Chunk Size {size} must end the connection"
    finally:
        s.close()


def test_message_length_16_mib(good):
    s = rtmp(good)
    try:
        # Declares 16 MiB - 1 (the 24-bit maximum), above max_message_size (8 MiB).
        s.sendall(chunk_message(3, MSG_COMMAND, b"\x02\x00\x07connect", length=0xFFFFFF))
        s.sendall(os.urandom(4096))
        assert wait_closed(s, 5), "an oversized message must end the connection"
    finally:
        s.close()


def test_truncated_amf0_connect(good):
    payload = amf0_encode_all("connect", 1, {"app": "live", "tcUrl": "rtmp://x/live"})
    s = rtmp(good)
    try:
        s.sendall(chunk_message(3, MSG_COMMAND, payload[:-9]))
        # Either an _error or a closed connection; never a crash or a publish.
        wait_closed(s, 3)
    except OSError:
        pass
    finally:
        s.close()


def test_deeply_nested_amf0_connect(good):
    depth = 200_000  # ~1 MiB: within max_message_size, far beyond any sane nesting
    body = amf0_encode("connect") + amf0_encode(1) + b"\x03\x00\x01a" * depth + b"\x05"
    s = rtmp(good)
    try:
        s.sendall(chunk_message(2, MSG_SET_CHUNK_SIZE, struct.pack(">I", 4096)))
        s.sendall(chunk_message(3, MSG_COMMAND, body, chunk_size=4096))
        assert wait_closed(s, 10), "a pathological connect must end the connection"
    except (BrokenPipeError, ConnectionResetError):
        pass  # closed while we were still sending: also fine
    finally:
        s.close()


def test_handshake_never_finishes(good):
    s = socket.create_connection(("127.0.0.1", good.node.rtmp_port), timeout=5)
    try:
        s.sendall(b"\x03" + os.urandom(700))  # C0 + half of C1, then silence
        # handshake_timeout_ms is 2 s on this node.
        assert wait_closed(s, 10), "a stalled handshake must time out"
    finally:
        s.close()


def test_500_connections_at_once(good):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    socks = []
    try:
        for _ in range(500):
            try:
                s = socket.socket()
                s.settimeout(5)
                s.connect(("127.0.0.1", good.node.rtmp_port))
                socks.append(s)
            except OSError:
                s.close()  # refused beyond the backlog/limit: acceptable
        for s in socks[:250]:
            try:
                s.sendall(b"\x03")  # half of them start a handshake
            except OSError:
                pass
        # While they are all open, the good stream still plays.
        harness.assert_plays(good.node, GOOD_ROOM, frames=10, timeout=15)
        assert good.node.healthy()
    finally:
        for s in socks:
            s.close()
    assert len(socks) > 100


MALFORMED_JSON = {
    "not-json": b"{not json", "array": b"[]", "null": b"null", "string": b'"str"',
    "wrong-type": b'{"input_type": 5}',
    "unknown-input-type": b'{"input_type": "smoke-signals", "room_name": "x"}',
    "nested-10000": b'{"input_type": "rtmp", "room_name": ' + b'[' * 10000 + b']' * 10000 + b'}',
    "2-mib": b'{"input_type": "rtmp", "room_name": "' + b'x' * (2 * 1024 * 1024) + b'"}',
    "not-utf8": b"\xff\xfe\x00garbage",
}


# ids keep the test names short (they end up in PYTEST_CURRENT_TEST, i.e. in every child's
# environment).
@pytest.mark.parametrize("body", MALFORMED_JSON.values(), ids=MALFORMED_JSON.keys())
def test_malformed_api_json(good, body):
    r = good.node.api.request("POST", "/v1/ingress", body)
    assert 400 <= r.status < 500, r
    err = r.json
    assert isinstance(err, dict) and err.get("error") and err.get("code"), r


@pytest.mark.parametrize("ctype,body", [
    ("application/sdp", b"hello, this is not SDP"),
    ("application/sdp", b""),
    ("application/sdp", b"v=0\r\n" + b"a=" + b"x" * 100000 + b"\r\n"),
    ("application/sdp", b"v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"),  # no media
    ("text/plain", b"v=0\r\n"),
], ids=["prose", "empty", "100k-attribute", "no-media", "wrong-content-type"])
def test_whep_offer_not_sdp(good, ctype, body):
    r = good.node.api.request("POST", f"/v1/rooms/{GOOD_ROOM}/whep", body, token=None,
                              headers={"Content-Type": ctype})
    assert 400 <= r.status < 500, r
