#!/usr/bin/python3
"""Checks a room's event stream against the event invariants of DESIGN.md.

Usable as a module (tests import check(), parse_sse()) and as a CLI:

    python3 tests/tools/check_events.py saved.sse [more.sse ...]
    python3 tests/tools/check_events.py --json events.jsonl

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
  7. after a reconnect (same identity again), the new participant has a new sid and gets
     ParticipantConnected, then TrackPublished once media flows.
A capture that does not start at seq 1 (a resumed stream) is checked as a suffix: what
happened before it is assumed, not demanded.
"""

import json
import sys

PARTICIPANT_EVENTS = ("ParticipantConnected", "ParticipantDisconnected")
TRACK_EVENTS = ("TrackPublished", "TrackUnpublished")


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


def check(events, require_complete=None, final=False):
    """Returns a list of violation strings (empty: all good).

    require_complete: demand that the capture starts at seq 1 (default: infer from the
    first event). final: the capture is over (the room is quiet), so a reconnected
    participant must already have published a track (invariant 7)."""
    errors = []
    if not events:
        return errors
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

    # 2, 3, 4, 7: replay the log.
    connected = {}      # psid -> identity
    ever_seen = set()   # psids that got ParticipantConnected or were assumed connected
    gone = set()        # psids after ParticipantDisconnected
    tracks_of = {}      # psid -> set of live track sids
    published = set()   # track sids ever published
    unpublished = set()
    by_identity = {}    # identity -> list of psids in order of connection
    published_by = {}   # psid -> number of TrackPublished

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

    for ev in events:
        name, seq = ev.get("event"), ev.get("seq")
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

    # 7. every reconnection is a new sid that publishes once media flows.
    for ident, psids in by_identity.items():
        if len(psids) != len(set(psids)):
            errors.append(f"inv7: identity {ident!r} reused a participant sid")
        if final:
            for psid in psids[1:]:
                if published_by.get(psid, 0) == 0 and psid not in gone:
                    errors.append(f"inv7: reconnected participant {psid} ({ident!r}) "
                                  f"published no track")
    return errors


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    as_json = "--json" in argv
    final = "--final" in argv
    if not args:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    bad = 0
    for path in args:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        events = parse_json_lines(text) if as_json else parse_sse(text)
        errors = check(events, final=final)
        for e in errors:
            print(f"{path}: {e}")
        bad += len(errors)
        print(f"{path}: {len(events)} events, {len(errors)} violations")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
