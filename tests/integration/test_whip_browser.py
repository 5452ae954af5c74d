"""WHIP from an independent WebRTC stack: Debian's headless Chromium, driven by playwright-core
(tests/browser), publishes its fake camera and microphone from a page this test serves on
127.0.0.1. The page does what a web app does: getUserMedia → RTCPeerConnection (sendonly, the
codec chosen with setCodecPreferences) → POST /whip with the Bearer key → the answer; closing the
tab DELETEs the session. Inside the test's network namespace only loopback exists, so Chromium
is started with --allow-loopback-in-peer-connection (else it gathers no candidate on lo) and
without mDNS host names (nobody would resolve them).

Skipped, saying why, when node/npm or chromium are missing or npm cannot install
playwright-core (scripts/install-deps.sh --test installs all three)."""

import functools
import http.server
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

import harness
from test_whip import create_whip_ingress, finish, whip  # noqa: F401 (whip: fixture)

BROWSER_DIR = harness.REPO / "tests" / "browser"
CHROMIUM = os.environ.get("SK_CHROMIUM", "/usr/bin/chromium")
# Chromium's start, getUserMedia and gathering are slow on a loaded 2-core machine.
START_TIMEOUT = 90


@pytest.fixture(scope="module")
def node_path():
    """The node_modules holding playwright-core (tests/browser/install.sh, cached)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/install-deps.sh --test installs it)")
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        r = subprocess.run([BROWSER_DIR / "install.sh"], capture_output=True, text=True,
                           timeout=600)
    except subprocess.TimeoutExpired:
        pytest.skip("npm ci of tests/browser took over 10 minutes")
    if r.returncode != 0:
        pytest.skip(f"npm could not install tests/browser (playwright-core): {r.stderr[-500:]}")
    return r.stdout.strip()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def page_base():
    """tests/browser served over HTTP on 127.0.0.1: a page of another origin than the node,
    as a web app is, so CORS is exercised too."""
    handler = functools.partial(_QuietHandler, directory=str(BROWSER_DIR))
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()
    srv.server_close()


class Browser:
    """tests/browser/whip-publish.mjs: Chromium on whip.html; its JSON lines are read live."""

    def __init__(self, procs, tmp_path, node_path, page_url):
        self.log_path = tmp_path / f"chromium-{time.monotonic_ns()}.log"
        env = dict(os.environ, NODE_PATH=node_path)
        self.proc = procs.start(["node", BROWSER_DIR / "whip-publish.mjs", page_url,
                                 "--chromium", CHROMIUM], self.log_path, env=env)

    def lines(self):
        return harness.parse_json_lines(harness.tail(self.log_path, 5000))

    def value(self, key):
        for obj in reversed(self.lines()):
            if key in obj:
                return obj[key]
        return None

    def wait_value(self, key, timeout=START_TIMEOUT):
        def seen():
            if self.value("error"):
                raise AssertionError(f"browser: {self.value('error')}")
            if self.proc.poll() is not None and self.value(key) is None:
                raise AssertionError(f"driver exited {self.proc.returncode}")
            return self.value(key)
        try:
            return harness.wait_until(seen, timeout, what=f"browser output {key!r}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n{harness.tail(self.log_path, 40)}") from None

    def sent(self, kind):
        """Packets the page's sender of @kind has sent (getStats outbound-rtp)."""
        stats = self.value("stats") or {}
        return (stats.get(kind) or {}).get("packets", 0)

    def close_page(self, timeout=30):
        """SIGINT: the driver closes the tab (its pagehide handler DELETEs), then Chromium."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=timeout)

    def kill(self):
        """SIGKILL to Chromium's process group: no DELETE, no DTLS close, media just stops."""
        for pid in self._children():
            harness.ProcessGroup.signal(_Pid(pid), signal.SIGKILL)
        harness.ProcessGroup.signal(self.proc, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def _children(self):
        # playwright starts Chromium in a process group of its own: find it by its parent.
        out = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                out.append(int(stat.parent.name))
        return out


class _Pid:
    def __init__(self, pid):
        self.pid = pid


@pytest.fixture
def browser(procs, tmp_path, request, node_path, page_base):
    started = []

    def start(node, key, codec):
        query = urllib.parse.urlencode({"whip": f"{node.base}/whip", "token": key,
                                        "codec": codec})
        b = Browser(procs, tmp_path, node_path, f"{page_base}/whip.html?{query}")
        logs = getattr(request.node, "_sk_logs", None)
        if logs is None:
            logs = request.node._sk_logs = []
        logs.append(("chromium driver", b.log_path))
        started.append(b)
        return b

    yield start
    for b in started:
        if b.proc.poll() is None:
            b.kill()


def publish_from_chromium(node, browser, follow, codec):
    room = harness.unique_room(f"chromium-{codec}")
    ing = create_whip_ingress(node, room, identity="chromium")
    sse = follow(node, room)
    b = browser(node, ing["stream_key"], codec)
    assert b.wait_value("location").startswith(f"{node.base}/whip/"), b.lines()
    assert b.value("etag"), b.lines()
    # Loopback host candidates as addresses: what the flags are for.
    cands = b.value("offer_candidates")
    assert any(" 127.0.0.1 " in c and " udp " in c for c in cands), cands
    rec, _ = node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)
    sse.wait_event("TrackPublished", count=2, timeout=30)
    tracks = {e["track"]["kind"]: e["track"]["codec"] for e in sse.of("TrackPublished")}
    assert tracks == {"video": codec.upper(), "audio": "opus"}, tracks
    assert rec["state"]["input"]["video"]["codec"] == codec.upper(), rec
    assert rec["state"]["input"]["audio"]["codec"] == "opus", rec
    (pc,) = sse.of("ParticipantConnected")
    assert pc["participant"]["identity"] == "chromium", pc
    harness.wait_until(lambda: b.value("connection") == "connected", 30,
                       what=f"the page's peer connection: {b.lines()[-3:]}")
    return room, ing, sse, b


@pytest.mark.parametrize("codec", ["h264", "vp8"])
def test_chromium_publishes_and_closing_the_tab_deletes(node, browser, follow, invariants,
                                                        codec):
    room, ing, sse, b = publish_from_chromium(node, browser, follow, codec)
    res = harness.assert_plays(node, room, frames=30, expect_audio=True, timeout=30,
                               extra=["--codec", codec])
    # Chromium may lower the resolution when the CPU is busy, never raise it.
    assert 0 < res.last("width") <= 640 and 0 < res.last("height") <= 360, res
    harness.wait_until(lambda: b.sent("video") > 0 and b.sent("audio") > 0, 10,
                       what="the page's senders' packet counts")

    assert b.close_page() == 0, harness.tail(b.log_path)
    assert b.value("result") == "closed"
    ev = sse.wait_event("ParticipantDisconnected", timeout=15)[0]
    assert ev["reason"] == "client_initiated", ev  # the DELETE, not the lost media
    assert [e["reason"] for e in sse.of("TrackUnpublished")] == ["client_initiated"] * 2
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE", 10,
                       what="ingress inactive")
    invariants(sse.events)


def test_chromium_killed_is_publisher_lost(node, browser, follow, invariants):
    room, ing, sse, b = publish_from_chromium(node, browser, follow, "h264")
    harness.assert_plays(node, room, frames=10, expect_audio=True, timeout=30)
    location = b.value("location")
    b.kill()
    ev = sse.wait_event("ParticipantDisconnected", timeout=20)[0]
    assert ev["reason"] == "publisher_lost", ev
    assert all(e["reason"] == "publisher_lost" for e in sse.of("TrackUnpublished"))
    harness.wait_until(lambda: node.api.status(ing["ingress_id"]) == "ENDPOINT_INACTIVE", 10,
                       what="ingress inactive")
    r = node.api.request("DELETE", location.split(str(node.http_port), 1)[1], token=None)
    assert r.status == 404, r
    invariants(sse.events)


def test_chromium_viewer_waiting_before_the_publisher_plays(node, procs, tmp_path, node_path,
                                                           page_base, whip, follow, invariants,
                                                           request):
    """Chromium as a WHEP viewer (tests/browser/whep.html) opened before the stream starts: its
    offer lists H.264 42001f (baseline) before 42e01f (constrained-baseline). The session must
    be answered for the profile the publisher will send (constrained-baseline, what WebRTC
    senders make) so that the stream can go out on it: answered 42001f, the payloader refused
    the stream and the session was closed (not-negotiated) at its first buffer."""
    room = harness.unique_room("chromium-viewer")
    ing = create_whip_ingress(node, room)
    sse = follow(node, room)
    log = tmp_path / "chromium-viewer.log"
    query = urllib.parse.urlencode({"whep": node.whep_url(room)})
    viewer = procs.start(["node", BROWSER_DIR / "whep-view.mjs", f"{page_base}/whep.html?{query}",
                          "--chromium", CHROMIUM], log, env=dict(os.environ, NODE_PATH=node_path))
    request.node._sk_logs = [("chromium viewer", log)]

    def value(key):
        for obj in reversed(harness.parse_json_lines(harness.tail(log, 2000))):
            if key in obj:
                return obj
        return None

    harness.wait_until(lambda: value("location"), START_TIMEOUT,
                       what=f"the page's answer: {harness.tail(log, 20)}")
    pub = whip(node, ing["stream_key"])
    sse.wait_event("TrackPublished", count=2)
    harness.wait_until(lambda: value("first_frame_wall_ms"), 30,
                       what=f"the page's first decoded frame: {harness.tail(log, 20)}")
    harness.wait_until(lambda: ((value("video") or {}).get("video") or {}).get("decoded", 0) >= 30,
                       30, what=f"30 frames decoded by the page: {harness.tail(log, 5)}")
    viewer.send_signal(signal.SIGINT)  # the page DELETEs its session
    viewer.wait(timeout=30)
    finish(node, sse, pub, ing, invariants)
