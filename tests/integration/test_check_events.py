"""The invariant checker itself must catch what it claims to (no daemon needed)."""

import subprocess
import sys

import check_events
import harness

CHECKER = harness.REPO / "tests" / "tools" / "check_events.py"


def ev(seq, name, psid="PA_1", identity="cam", tsid=None, kind="video", reason=None,
       node="n1", ingress=None, at=None):
    e = {"seq": seq, "room": "r", "event": name, "at_ms": 1000 + seq if at is None else at,
         "node": node, "participant": {"sid": psid, "identity": identity, "name": identity,
                                       "kind": "ingress"}}
    if ingress:
        e["participant"]["ingress_node"] = ingress
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


# --- failover: invariants 5 and 6 ----------------------------------------------------------
# A room hosted by n1 with two publishers: "a" ingests on n2, "b" on n1 itself. n1 is
# killed at KILL; n3 takes the room over: "b" is owed node_failure events, "a" keeps its
# sids. Then "b" reconnects through n2 under a new sid.

KILL = 50_000


def moved(seq, at, to="n3", frm="n1", epoch=2, reason="node_failure"):
    return {"seq": seq, "room": "r", "event": "RoomMoved", "at_ms": at, "node": to,
            "from_node": frm, "epoch": epoch, "reason": reason}


def failover_log():
    a = dict(psid="PA_a", identity="a", ingress="n2")
    b = dict(psid="PA_b", identity="b", ingress="n1")
    return [
        {"seq": 1, "room": "r", "event": "RoomStarted", "at_ms": 40_000, "node": "n1"},
        ev(2, "ParticipantConnected", at=40_001, **a),
        ev(3, "TrackPublished", tsid="TR_av", at=40_002, **a),
        ev(4, "TrackPublished", tsid="TR_aa", kind="audio", at=40_003, **a),
        ev(5, "ParticipantConnected", at=40_004, **b),
        ev(6, "TrackPublished", tsid="TR_bv", at=40_005, **b),
        ev(7, "TrackPublished", tsid="TR_ba", kind="audio", at=40_006, **b),
        moved(8, KILL + 1000),
        ev(9, "TrackUnpublished", tsid="TR_bv", reason="node_failure", node="n3",
           at=KILL + 1001, **b),
        ev(10, "TrackUnpublished", tsid="TR_ba", kind="audio", reason="node_failure",
           node="n3", at=KILL + 1002, **b),
        ev(11, "ParticipantDisconnected", reason="node_failure", node="n3", at=KILL + 1003,
           **b),
        ev(12, "ParticipantConnected", psid="PA_b2", identity="b", ingress="n2", node="n3",
           at=KILL + 3500),
        ev(13, "TrackPublished", psid="PA_b2", identity="b", ingress="n2", tsid="TR_b2v",
           node="n3", at=KILL + 3600),
    ]


def errors_with(log, tag, **kw):
    return [e for e in check_events.check(log, **kw) if e.startswith(tag)]


def test_failover_good_log_passes():
    assert check_events.check(failover_log(), final=True) == []
    assert check_events.check(failover_log(), final=True, killed=[("n1", KILL)]) == []
    assert check_events.check(failover_log(), final=True, killed=[f"n1@{KILL}"]) == []
    # Resumed after the move: still consistent.
    assert check_events.check(failover_log()[8:], final=True) == []


def test_inv5_wrong_reason():
    log = failover_log()
    log[10]["reason"] = "publisher_lost"
    errs = errors_with(log, "inv5", final=True)
    assert errs and "'publisher_lost'" in errs[0] and "PA_b" in errs[0]
    log = failover_log()
    log[9]["reason"] = "client_initiated"
    assert any("TR_ba" in e for e in errors_with(log, "inv5", final=True))


def test_inv5_missing_disconnect():
    # The owed events never come: the room moved, then only the new participant.
    log = failover_log()[:8] + [dict(e, seq=e["seq"] - 3) for e in failover_log()[11:]]
    # Not final and nothing after the deadline yet: not (yet) a violation...
    assert errors_with(log[:8], "inv5") == []
    # ... final, or the log going on past the deadline, is.
    assert any("never got ParticipantDisconnected" in e
               for e in errors_with(log[:8], "inv5", final=True))
    assert any("never got ParticipantDisconnected" in e for e in errors_with(log, "inv5"))
    assert any("never got ParticipantDisconnected" in e
               for e in errors_with(failover_log()[:7], "inv5", killed=[("n1", KILL)],
                                    final=True))


def test_inv5_deadline():
    log = failover_log()
    # Kill annotated 2 s before the ParticipantDisconnected: over the 1.5 s default.
    errs = errors_with(log, "inv5", final=True, killed=[("n1", KILL - 1000)])
    assert len(errs) == 1 and "deadline 1500 ms" in errs[0] and "2003 ms" in errs[0]
    assert errors_with(log, "inv5", final=True, killed=[("n1", KILL - 1000)],
                       deadline_ms=2500) == []


def test_inv5_ingress_node_killed_room_stays():
    # n2 (ingress of "a") dies; the host n1 lives and writes a's node_failure events.
    a = dict(psid="PA_a", identity="a", ingress="n2")
    log = failover_log()[:7] + [
        ev(8, "TrackUnpublished", tsid="TR_av", reason="node_failure", at=KILL + 900, **a),
        ev(9, "TrackUnpublished", tsid="TR_aa", kind="audio", reason="node_failure",
           at=KILL + 901, **a),
        ev(10, "ParticipantDisconnected", reason="node_failure", at=KILL + 902, **a),
    ]
    assert check_events.check(log, final=True, killed=[("n2", KILL)]) == []
    # Without the annotation the log cannot show that n2 died.
    errs = errors_with(log, "inv6", final=True)
    assert errs and "n2 is not known dead" in errs[0] and "--killed" in errs[0]
    # Killed, but "a" is never disconnected.
    errs = errors_with(log[:7], "inv5", final=True, killed=[("n2", KILL)])
    assert any("PA_a" in e and "never got" in e for e in errs)
    # And the node that died cannot have written its own participant's node_failure.
    bad = [dict(e, node="n2") if e["seq"] >= 8 else e for e in log]
    assert any("written by its own ingress node n2" in e
               for e in check_events.check(bad, killed=[("n2", KILL)]))


def test_inv5_victim_publishes_after_kill():
    log = failover_log()[:5] + [
        ev(6, "TrackPublished", psid="PA_b", identity="b", ingress="n1", tsid="TR_bv",
           at=KILL + 10)]
    assert any("published TR_bv after its node n1 was killed" in e
               for e in check_events.check(log, killed=[("n1", KILL)]))


def test_inv6_live_ingress_disconnected_across_move():
    a = dict(psid="PA_a", identity="a", ingress="n2")
    log = failover_log()[:11] + [
        ev(12, "TrackUnpublished", tsid="TR_av", reason="node_failure", node="n3", **a),
        ev(13, "TrackUnpublished", tsid="TR_aa", kind="audio", reason="node_failure",
           node="n3", **a),
        ev(14, "ParticipantDisconnected", reason="node_failure", node="n3", **a),
    ]
    errs = errors_with(log, "inv6", final=True)
    assert any("PA_a" in e and "not known dead" in e for e in errs)
    errs = errors_with(log, "inv6", final=True, killed=[("n1", KILL)])
    assert len(errs) == 1 and "PA_a" in errs[0]


def test_inv6_sids_kept_across_move():
    a = dict(psid="PA_a", identity="a", ingress="n2")
    # The new host re-creates a's video track under a new sid.
    log = failover_log()[:11] + [
        ev(12, "TrackUnpublished", tsid="TR_av", reason="publisher_lost", node="n3", **a),
        ev(13, "TrackPublished", tsid="TR_av2", node="n3", **a),
    ]
    errs = errors_with(log, "inv6")
    assert len(errs) == 1 and "re-published its video track as TR_av2" in errs[0]


def test_inv6_room_moved_shape_and_fencing():
    log = failover_log()
    log.insert(8, ev(9, "TrackPublished", psid="PA_a", identity="a", ingress="n2",
                     tsid="TR_late", kind="data", node="n1"))
    for i, e in enumerate(log):
        e["seq"] = i + 1
    errs = errors_with(log, "inv6")
    assert len(errs) == 1 and "written by 'n1' while the room is hosted by 'n3'" in errs[0]

    log = failover_log() + [moved(14, KILL + 9000, to="n2", frm="n1", epoch=2)]
    errs = errors_with(log, "inv6")
    assert any("from 'n1' but the room was hosted by 'n3'" in e for e in errs)
    assert any("epoch 2 after epoch 2" in e for e in errs)
    log = failover_log()
    log[7]["reason"] = "crash"
    assert any("reason 'crash'" in e for e in errors_with(log, "inv6"))
    # A drain moves the room too, but nobody's node died: no node_failure is owed.
    log = failover_log()[:7] + [moved(8, KILL, to="n3", frm="n1", reason="drain")]
    assert check_events.check(log, final=True) == []


def test_cli_killed_and_deadline(tmp_path):
    import json
    path = tmp_path / "failover.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in failover_log()))
    run = lambda *a: subprocess.run([sys.executable, CHECKER, "--json", *a, path],
                                    capture_output=True, text=True)
    assert run("--final", "--killed", f"n1@{KILL}").returncode == 0
    p = run("--final", "--killed", f"n1@{KILL - 1000}")
    assert p.returncode == 1 and "deadline 1500 ms" in p.stdout
    assert run("--final", "--killed", f"n1@{KILL - 1000}", "--deadline-ms", "2500").returncode == 0
    assert run("--killed", "n1").returncode == 2  # NODE@MS required


def test_inv6_restarted_node_takes_its_old_rooms_over():
    """n1 is killed and restarted before anyone else claims: its new incarnation rebuilds the
    room (RoomMoved n1 -> n1) and writes what its dead incarnation owed. Legitimate with the
    kill on record; without it, a node moving a room to itself is a violation."""
    log = failover_log()
    for e in log[7:]:
        e["node"] = "n1"
    log[7]["from_node"] = "n1"
    assert errors_with(log, "inv6", final=True, killed=[("n1", KILL)],
                       restarted=[("n1", KILL + 500)]) == []
    errs = errors_with(log, "inv6", final=True, killed=[("n1", KILL)])
    assert any("RoomMoved from 'n1' to 'n1'" in e for e in errs)
    assert any("written by its own ingress node n1" in e for e in errs)
