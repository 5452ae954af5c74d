"""The invariant checker itself must catch what it claims to (no daemon needed)."""

import subprocess
import sys

import check_events
import harness

CHECKER = harness.REPO / "tests" / "tools" / "check_events.py"


def ev(seq, name, psid="PA_1", identity="cam", tsid=None, kind="video", reason=None):
    e = {"seq": seq, "room": "r", "event": name, "at_ms": 1000 + seq, "node": "n1",
         "participant": {"sid": psid, "identity": identity, "name": identity,
                         "kind": "ingress"}}
    if tsid:
        e["track"] = {"sid": tsid, "kind": kind, "codec": "H264"}
    if reason:
        e["reason"] = reason
    return e


def good_log():
    return [
        {"seq": 1, "room": "r", "event": "RoomStarted", "at_ms": 1, "node": "n1"},
        ev(2, "ParticipantConnected"),
        ev(3, "TrackPublished", tsid="TR_v"),
        ev(4, "TrackPublished", tsid="TR_a", kind="audio"),
        ev(5, "TrackUnpublished", tsid="TR_v", reason="publisher_lost"),
        ev(6, "TrackUnpublished", tsid="TR_a", kind="audio", reason="publisher_lost"),
        ev(7, "ParticipantDisconnected", reason="publisher_lost"),
        ev(8, "ParticipantConnected", psid="PA_2"),
        ev(9, "TrackPublished", psid="PA_2", tsid="TR_v2"),
    ]


def test_good_log_passes():
    assert check_events.check(good_log(), final=True) == []


def test_gap_and_duplicate():
    log = good_log()
    del log[3]
    assert any("gap" in e for e in check_events.check(log))
    log = good_log()
    log.insert(3, dict(log[2]))
    assert any("inv1" in e for e in check_events.check(log))


def test_disconnect_with_live_track():
    log = good_log()[:5] + [ev(6, "ParticipantDisconnected", reason="publisher_lost")]
    assert any("still published" in e for e in check_events.check(log))


def test_event_after_disconnect_and_double_publish():
    log = good_log()[:7] + [ev(8, "TrackPublished", tsid="TR_x")]
    assert any("after its ParticipantDisconnected" in e for e in check_events.check(log))
    log = good_log()[:4] + [ev(5, "TrackPublished", tsid="TR_v")]
    assert any("published twice" in e for e in check_events.check(log))


def test_two_connected_with_one_identity():
    log = good_log()[:4] + [ev(5, "ParticipantConnected", psid="PA_9")]
    assert any("inv4" in e for e in check_events.check(log))


def test_reconnect_without_tracks_when_final():
    log = good_log()[:8]
    assert check_events.check(log) == []
    assert any("inv7" in e for e in check_events.check(log, final=True))


def test_resumed_capture_is_checked_as_suffix():
    assert check_events.check(good_log()[4:]) == []


def test_cli_on_saved_sse(tmp_path):
    import json
    text = "".join(f"id: {e['seq']}\nevent: {e['event']}\ndata: {json.dumps(e)}\n\n"
                   for e in good_log())
    ok = tmp_path / "ok.sse"
    ok.write_text(": keepalive\n\n" + text)
    assert subprocess.run([sys.executable, CHECKER, ok]).returncode == 0
    bad = tmp_path / "bad.sse"
    bad.write_text(text.replace("id: 5\n", "id: 50\n"))
    p = subprocess.run([sys.executable, CHECKER, bad], capture_output=True, text=True)
    assert p.returncode == 1 and "SSE id 50" in p.stdout
