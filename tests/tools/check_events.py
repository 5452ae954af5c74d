#!/usr/bin/python3
"""Checks a room's event stream against the event invariants of DESIGN.md.

Usable as a module (tests import check(), parse_sse()) and as a CLI:

    python3 tests/tools/check_events.py saved.sse [more.sse ...]
    python3 tests/tools/check_events.py --json events.jsonl
    python3 tests/tools/check_events.py --final --killed n2@1764087123456 saved.sse

Input: a saved Server-Sent Events stream (id:/event:/data: frames) or JSON lines, one event
object per line. Prints one line per violation and exits 1 if there is any.

Invariants checked (numbering of DESIGN.md):
  1. seq rises by exactly 1 from event to event: no gap, no duplicate (and the SSE id, when
     present, equals seq).
  2. a participant sid gets exactly one ParticipantConnected, before any TrackPublished of
     its tracks; at most one ParticipantDisconnected, after a TrackUnpublished for each of its
     still-published tracks; nothing after it.
  3. a track sid is published at most once and unpublished at most once, in that order.
  4. at no seq are two connected participants of one room the same identity.
  5. when the node running an ingress dies, each participant connected through it at that
     moment gets TrackUnpublished for every published track, then ParticipantDisconnected,
     all with reason node_failure, and publishes nothing in between. A node is known dead
     from a RoomMoved with reason node_failure (its from_node, at that seq) or from a
     --killed NODE@MS annotation (MS: epoch ms of the kill); with an annotation,
     ParticipantDisconnected's at_ms - MS must be <= --deadline-ms (default 1500).
     Missing events are reported once the capture is --final or extends past the deadline.
  6. across a RoomMoved, a participant whose ingress node is alive keeps its sids: no
     node_failure event for it and no track of a kind it had published re-published under a
     new sid. node_failure may only name participants of a known dead node (give --killed
     for an ingress node that did not host the room) and is never written by the dead
     node itself. RoomMoved is well formed (from_node = the previous host, new node,
     rising epoch, reason node_failure|drain), and every event is written by the room's
     current host: after a RoomMoved the old host writes nothing (fencing).
  7. after a reconnect (same identity again), the new participant has a new sid and gets
     ParticipantConnected, then TrackPublished once media flows.
A participant's ingress node is its "ingress_node" field, else the node that wrote its
ParticipantConnected (a single node). A capture that does not start at seq 1 (a resumed
stream) is checked as a suffix: what happened before it is assumed, not demanded.
"""

import argparse
import json
import sys

PARTICIPANT_EVENTS = ("ParticipantConnected", "ParticipantDisconnected")
TRACK_EVENTS = ("TrackPublished", "TrackUnpublished")
MOVE_REASONS = ("node_failure", "drain")
DEFAULT_DEADLINE_MS = 1500


def parse_sse(text):
    """Parses SSE text into a list of event dicts; the SSE id/event fields are kept as
    '_sse_id'/'_sse_event' for cross-checks. Comments and keep-alives are skipped."""
    events, data, sse_id, sse_event = [], [], None, None
    for raw in text.splitlines() + [""]:
        line = raw.rstrip("\r")
        if line == "":
            if data:
                obj = json.loads("\n".join(data))
                if sse_id is not None:
                    obj["_sse_id"] = sse_id
                if sse_event is not None:
                    obj["_sse_event"] = sse_event
                events.append(obj)
            data, sse_id, sse_event = [], None, None
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            data.append(value)
        elif field == "id":
            sse_id = value
        elif field == "event":
            sse_event = value
    return events


def parse_json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _psid(ev):
    p = ev.get("participant") or {}
    return p.get("sid")


def _tsid(ev):
    t = ev.get("track") or {}
    return t.get("sid")


def parse_killed(spec):
    """'NODE@MS' -> (NODE, MS)."""
    node, sep, ms = str(spec).rpartition("@")
    if not sep or not node or not ms.lstrip("-").isdigit():
        raise ValueError(f"--killed {spec!r}: expected NODE@EPOCH_MS")
    return node, int(ms)


class _Participant:
    """What the log says about one participant sid."""

    def __init__(self, psid, identity, ingress_node, seq, at_ms):
        self.psid, self.identity, self.ingress_node = psid, identity, ingress_node
        self.connect_seq, self.connect_at = seq, at_ms  # None: connected before the capture
        self.disconnect = None  # its ParticipantDisconnected event
        self.tracks = {}  # tsid -> {"kind", "pub_seq", "unpub": event or None}

    def connected_at_seq(self, seq):
        return ((self.connect_seq is None or self.connect_seq < seq)
                and (self.disconnect is None or self.disconnect["seq"] > seq))

    def connected_at_time(self, ms):
        # A participant that left by node_failure was still there when its node died.
        return ((self.connect_at is None or self.connect_at <= ms)
                and (self.disconnect is None or self.disconnect.get("at_ms", ms) >= ms
                     or self.disconnect.get("reason") == "node_failure"))

    def live_tracks_at_seq(self, seq):
        return {t: r for t, r in self.tracks.items()
                if (r["pub_seq"] is None or r["pub_seq"] < seq)
                and (r["unpub"] is None or r["unpub"]["seq"] > seq)}

    def live_tracks_at_time(self, ms):
        return {t: r for t, r in self.tracks.items()
                if (r["pub_at"] is None or r["pub_at"] <= ms)
                and (r["unpub"] is None or r["unpub"].get("at_ms", ms) >= ms
                     or r["unpub"].get("reason") == "node_failure")}


def _restarted_before(restarts, node, at_ms):
    """Whether a new incarnation of @node was started before @at_ms."""
    return at_ms is not None and any(n == node and ms <= at_ms for n, ms in restarts)


def _restarted_between(restarts, node, start_ms, end_ms):
    """Whether @node was restarted after @start_ms (the participant joined on the old
    incarnation) and before @end_ms (the new incarnation writes what the old one owed)."""
    return end_ms is not None and any(
        n == node and (start_ms is None or ms >= start_ms) and ms <= end_ms
        for n, ms in restarts)


def check(events, require_complete=None, final=False, killed=(), restarted=(),
          deadline_ms=DEFAULT_DEADLINE_MS):
    """Returns a list of violation strings (empty: all good).

    require_complete: demand that the capture starts at seq 1 (default: infer from the
    first event). final: the capture is over (the room is quiet), so a reconnected
    participant must already have published a track (invariant 7) and every participant of
    a dead node must already be gone (invariant 5). killed: kills the log cannot tell,
    as (node, epoch_ms) pairs or 'NODE@MS' strings; once any is given, every dead node is
    taken to be known. deadline_ms: invariant 5's bound from a kill to the
    ParticipantDisconnected."""
    errors = []
    if not events:
        return errors
    kills = [parse_killed(k) if isinstance(k, str) else (k[0], int(k[1])) for k in killed]
    # A node id restarted as a new incarnation may write what its dead incarnation owed.
    restarts = [parse_killed(k) if isinstance(k, str) else (k[0], int(k[1])) for k in restarted]
    first_seq = events[0].get("seq")
    complete = first_seq == 1 if require_complete is None else require_complete
    if require_complete and first_seq != 1:
        errors.append(f"inv1: capture starts at seq {first_seq}, expected 1")

    # 1. seq continuity, SSE id and room consistency.
    prev = None
    room = events[0].get("room")
    for ev in events:
        seq = ev.get("seq")
        if not isinstance(seq, int):
            errors.append(f"inv1: event without integer seq: {ev}")
            continue
        if prev is not None and seq != prev + 1:
            kind = "duplicate/backwards" if seq <= prev else "gap"
            errors.append(f"inv1: seq {prev} -> {seq} ({kind})")
        if "_sse_id" in ev and str(ev["_sse_id"]) != str(seq):
            errors.append(f"inv1: SSE id {ev['_sse_id']} != seq {seq}")
        if "_sse_event" in ev and ev["_sse_event"] != ev.get("event"):
            errors.append(f"seq {seq}: SSE event {ev['_sse_event']} != {ev.get('event')}")
        if ev.get("room") != room:
            errors.append(f"seq {seq}: room {ev.get('room')!r} in a stream of room {room!r}")
        prev = seq

    # 2, 3, 4, 7: replay the log; also record each participant's life for 5 and 6.
    connected = {}      # psid -> identity
    ever_seen = set()   # psids that got ParticipantConnected or were assumed connected
    gone = set()        # psids after ParticipantDisconnected
    tracks_of = {}      # psid -> set of live track sids
    published = set()   # track sids ever published
    unpublished = set()
    by_identity = {}    # identity -> list of psids in order of connection
    published_by = {}   # psid -> number of TrackPublished
    people = {}         # psid -> _Participant
    moves = []          # RoomMoved events

    def ingress_node_of(ev):
        p = ev.get("participant") or {}
        return p.get("ingress_node") or ev.get("node")

    def assume(psid, ev):
        # A participant referenced before being seen in a partial capture was connected
        # before the capture started.
        if complete or psid in ever_seen or psid in gone:
            return
        ever_seen.add(psid)
        ident = (ev.get("participant") or {}).get("identity")
        connected[psid] = ident
        tracks_of.setdefault(psid, set())
        by_identity.setdefault(ident, []).append(psid)
        people[psid] = _Participant(psid, ident, ingress_node_of(ev), None, None)

    # The host check: every event is written by the room's current host.
    host = None
    last_epoch = None
    for ev in events:
        name, seq = ev.get("event"), ev.get("seq")
        writer = ev.get("node")
        if name == "RoomMoved":
            moves.append(ev)
            reason, src, epoch = ev.get("reason"), ev.get("from_node"), ev.get("epoch")
            if reason not in MOVE_REASONS:
                errors.append(f"inv6: seq {seq}: RoomMoved with reason {reason!r}")
            # A node id comes back as a new incarnation after a restart: a move from its
            # dead incarnation to the new one is a move (the kill says so).
            restarted = src == writer and _restarted_before(restarts, src, ev.get("at_ms"))
            if not src or not writer or (src == writer and not restarted):
                errors.append(f"inv6: seq {seq}: RoomMoved from {src!r} to {writer!r}")
            elif host is not None and src != host:
                errors.append(f"inv6: seq {seq}: RoomMoved from {src!r} but the room was "
                              f"hosted by {host!r}")
            if not isinstance(epoch, int):
                errors.append(f"inv6: seq {seq}: RoomMoved without integer epoch")
            elif last_epoch is not None and epoch <= last_epoch:
                errors.append(f"inv6: seq {seq}: RoomMoved to epoch {epoch} after epoch "
                              f"{last_epoch}")
            else:
                last_epoch = epoch
            host = writer
        elif name == "RoomStarted" or host is None:
            host = writer
        elif writer != host:
            errors.append(f"inv6: seq {seq}: {name} written by {writer!r} while the room is "
                          f"hosted by {host!r} (stale host not fenced?)")
        if name == "RoomFinished":
            host = None

        psid = _psid(ev)
        if name in PARTICIPANT_EVENTS + TRACK_EVENTS and not psid:
            errors.append(f"seq {seq}: {name} without participant sid")
            continue
        if psid in gone:
            errors.append(f"inv2: seq {seq}: {name} for participant {psid} after its "
                          f"ParticipantDisconnected")
            continue

        if name == "ParticipantConnected":
            if psid in ever_seen:
                errors.append(f"inv2: seq {seq}: second ParticipantConnected for {psid}")
                continue
            ident = (ev.get("participant") or {}).get("identity")
            for other, other_ident in connected.items():
                if other_ident == ident:
                    errors.append(f"inv4: seq {seq}: identity {ident!r} connected twice "
                                  f"({other} still connected, new {psid})")
            ever_seen.add(psid)
            connected[psid] = ident
            tracks_of[psid] = set()
            by_identity.setdefault(ident, []).append(psid)
            people[psid] = _Participant(psid, ident, ingress_node_of(ev), seq, ev.get("at_ms"))
        elif name == "TrackPublished":
            assume(psid, ev)
            tsid = _tsid(ev)
            if psid not in ever_seen:
                errors.append(f"inv2: seq {seq}: TrackPublished before ParticipantConnected "
                              f"of {psid}")
                continue
            if not tsid:
                errors.append(f"seq {seq}: TrackPublished without track sid")
            elif tsid in published:
                errors.append(f"inv3: seq {seq}: track {tsid} published twice")
            else:
                published.add(tsid)
                tracks_of[psid].add(tsid)
                published_by[psid] = published_by.get(psid, 0) + 1
                people[psid].tracks[tsid] = {"kind": (ev.get("track") or {}).get("kind"),
                                             "pub_seq": seq, "pub_at": ev.get("at_ms"),
                                             "unpub": None}
        elif name == "TrackUnpublished":
            assume(psid, ev)
            tsid = _tsid(ev)
            if tsid in unpublished:
                errors.append(f"inv3: seq {seq}: track {tsid} unpublished twice")
            elif tsid not in published and complete:
                errors.append(f"inv3: seq {seq}: track {tsid} unpublished but never published")
            unpublished.add(tsid)
            if psid in tracks_of:
                tracks_of[psid].discard(tsid)
            if psid in people and tsid:
                rec = people[psid].tracks.setdefault(
                    tsid, {"kind": (ev.get("track") or {}).get("kind"), "pub_seq": None,
                           "pub_at": None, "unpub": None})
                if rec["unpub"] is None:
                    rec["unpub"] = ev
        elif name == "ParticipantDisconnected":
            assume(psid, ev)
            if psid not in ever_seen:
                errors.append(f"inv2: seq {seq}: ParticipantDisconnected without "
                              f"ParticipantConnected for {psid}")
            left = tracks_of.get(psid, set())
            if left:
                errors.append(f"inv2: seq {seq}: {psid} disconnected with tracks still "
                              f"published: {sorted(left)}")
            connected.pop(psid, None)
            gone.add(psid)
            if psid in people:
                people[psid].disconnect = ev

    # 7. every reconnection is a new sid that publishes once media flows.
    for ident, psids in by_identity.items():
        if len(psids) != len(set(psids)):
            errors.append(f"inv7: identity {ident!r} reused a participant sid")
        if final:
            for psid in psids[1:]:
                if published_by.get(psid, 0) == 0 and psid not in gone:
                    errors.append(f"inv7: reconnected participant {psid} ({ident!r}) "
                                  f"published no track")

    errors += _check_failover(events, people, moves, kills, restarts, final, deadline_ms)
    return list(dict.fromkeys(errors))  # one line per distinct violation, in order


def _check_failover(events, people, moves, kills, restarts, final, deadline_ms):
    """Invariants 5 and 6, from the participants' recorded lives."""
    errors = []
    last_at = max((e.get("at_ms") for e in events if isinstance(e.get("at_ms"), int)),
                  default=None)
    victims = {}  # psid -> description of the death that owes its node_failure events
    moved_victims = {}  # RoomMoved seq -> psids whose ingress died with that host

    def owe(p, live, what, ref_ms, kill_ms):
        """p was connected through a node that died (what); live: its tracks then."""
        victims.setdefault(p.psid, what)
        d = p.disconnect
        if d is None:
            overdue = ref_ms is not None and last_at is not None and \
                last_at > ref_ms + deadline_ms
            if final or overdue:
                errors.append(f"inv5: {p.psid} ({p.identity!r}) never got "
                              f"ParticipantDisconnected after {what}")
            return
        if d.get("reason") != "node_failure":
            errors.append(f"inv5: seq {d['seq']}: {p.psid} left with reason "
                          f"{d.get('reason')!r} after {what}, expected node_failure")
        for tsid, rec in live.items():
            u = rec["unpub"]
            if u is not None and u.get("reason") != "node_failure":
                errors.append(f"inv5: seq {u['seq']}: track {tsid} of {p.psid} unpublished "
                              f"with reason {u.get('reason')!r} after {what}")
        if kill_ms is not None and isinstance(d.get("at_ms"), int):
            late = d["at_ms"] - kill_ms
            if late > deadline_ms:
                errors.append(f"inv5: seq {d['seq']}: {p.psid} ({p.identity!r}) disconnected "
                              f"{late} ms after {what}, deadline {deadline_ms} ms")

    # 5. deaths the log shows (a room moved away from a failed host)...
    for mv in moves:
        dead = mv.get("from_node")
        if mv.get("reason") != "node_failure" or not dead:
            continue
        what = f"node {dead} failed (RoomMoved seq {mv['seq']})"
        for p in people.values():
            if p.ingress_node == dead and p.connected_at_seq(mv["seq"]):
                moved_victims.setdefault(mv["seq"], set()).add(p.psid)
                owe(p, p.live_tracks_at_seq(mv["seq"]), what, mv.get("at_ms"), None)
                for tsid, rec in p.tracks.items():
                    if rec["pub_seq"] is not None and rec["pub_seq"] > mv["seq"]:
                        errors.append(f"inv5: seq {rec['pub_seq']}: {p.psid} published "
                                      f"{tsid} after its node {dead} failed")
    # ... and the ones the caller saw happen.
    for dead, ms in kills:
        what = f"node {dead} was killed at {ms}"
        for p in people.values():
            if p.ingress_node == dead and p.connected_at_time(ms):
                owe(p, p.live_tracks_at_time(ms), what, ms, ms)
                for tsid, rec in p.tracks.items():
                    if rec["pub_at"] is not None and rec["pub_at"] > ms:
                        errors.append(f"inv5: seq {rec['pub_seq']}: {p.psid} published "
                                      f"{tsid} after its node {dead} was killed")

    # 6. node_failure only for participants of a dead node, never from the dead node itself.
    for p in people.values():
        failed = [e for e in [p.disconnect] + [r["unpub"] for r in p.tracks.values()]
                  if e is not None and e.get("reason") == "node_failure"]
        for e in failed:
            if e.get("node") == p.ingress_node and not (
                    _restarted_between(restarts, p.ingress_node, p.connect_at, e.get("at_ms"))):
                errors.append(f"inv6: seq {e['seq']}: {e['event']} node_failure for {p.psid} "
                              f"written by its own ingress node {p.ingress_node}")
        # (A participant already connected when a resumed capture starts may have lost its
        # node before it: assumed, like the rest of what came before.)
        if failed and p.psid not in victims and p.connect_seq is not None:
            hint = "" if kills else " (give --killed NODE@MS if it was killed)"
            errors.append(f"inv6: seq {failed[0]['seq']}: {failed[0]['event']} node_failure "
                          f"for {p.psid} ({p.identity!r}) whose ingress node "
                          f"{p.ingress_node} is not known dead{hint}")

    # 6. a live publisher keeps its participant and track sids across a move.
    for mv in moves:
        for p in people.values():
            if p.psid in moved_victims.get(mv["seq"], ()) or not p.connected_at_seq(mv["seq"]):
                continue
            kinds = {rec["kind"]: tsid for tsid, rec in p.live_tracks_at_seq(mv["seq"]).items()}
            for tsid, rec in p.tracks.items():
                old = kinds.get(rec["kind"])
                if rec["pub_seq"] is not None and rec["pub_seq"] > mv["seq"] and old:
                    errors.append(f"inv6: seq {rec['pub_seq']}: {p.psid} ({p.identity!r}) "
                                  f"re-published its {rec['kind']} track as {tsid} after "
                                  f"RoomMoved seq {mv['seq']} (had {old})")
    return errors


def main(argv):
    ap = argparse.ArgumentParser(
        prog="check_events.py", description=__doc__.split("\n\n")[0],
        epilog="See the module docstring for the invariants.")
    ap.add_argument("files", nargs="+", metavar="FILE", help="saved SSE stream (or JSON lines)")
    ap.add_argument("--json", action="store_true", help="input is JSON lines, not SSE")
    ap.add_argument("--final", action="store_true",
                    help="the capture is over: owed events must all be there")
    ap.add_argument("--complete", action="store_true", help="the capture must start at seq 1")
    ap.add_argument("--killed", action="append", default=[], metavar="NODE@MS",
                    help="NODE was killed at epoch ms MS (repeatable)")
    ap.add_argument("--restarted", action="append", default=[], metavar="NODE@MS",
                    help="a new incarnation of NODE started at epoch ms MS (repeatable)")
    ap.add_argument("--deadline-ms", type=int, default=DEFAULT_DEADLINE_MS,
                    help="invariant 5: kill -> ParticipantDisconnected bound (default 1500)")
    args = ap.parse_args(argv[1:])
    try:
        kills = [parse_killed(k) for k in args.killed]
        restarts = [parse_killed(k) for k in args.restarted]
    except ValueError as exc:
        ap.error(str(exc))
    bad = 0
    for path in args.files:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        events = parse_json_lines(text) if args.json else parse_sse(text)
        errors = check(events, require_complete=args.complete or None, final=args.final,
                       killed=kills, restarted=restarts, deadline_ms=args.deadline_ms)
        for e in errors:
            print(f"{path}: {e}")
        bad += len(errors)
        print(f"{path}: {len(events)} events, {len(errors)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
