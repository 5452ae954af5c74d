"""pytest fixtures for streamkeeper's integration tests (see harness.py for the pieces).

Run with Debian's interpreter, inside a network namespace of its own (scripts/test.sh does):
    unshare -n sh -c 'ip link set lo up && /usr/bin/python3 -m pytest tests/integration'
SK_BUILD_DIR selects the build directory (default: build/), e.g. an ASan/UBSan build:
    SK_BUILD_DIR=$PWD/build-asan ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        G_SLICE=always-malloc G_DEBUG=gc-friendly python3 -m pytest tests/integration
A node whose log holds an AddressSanitizer/LeakSanitizer/UBSan report fails its test.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

import check_events  # noqa: E402
import harness  # noqa: E402


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)
    if rep.failed:
        # The daemon's and publishers' logs are what one needs to understand a failure.
        for label, path in getattr(item, "_sk_logs", []):
            rep.sections.append((f"{label} log (tail)", harness.tail(path, 200)))


def _register_log(request, label, path):
    logs = getattr(request.node, "_sk_logs", None)
    if logs is None:
        logs = request.node._sk_logs = []
    logs.append((label, path))


@pytest.fixture
def procs():
    group = harness.ProcessGroup()
    yield group
    group.kill_all()


@pytest.fixture
def start_node(procs, tmp_path, request):
    """Factory: start_node(node_id='n1', extra_args=()) -> a ready Node. Each node is stopped
    with SIGTERM at the end of the test and must exit 0."""
    nodes = []

    def start(node_id="n1", extra_args=()):
        n = harness.Node(procs, tmp_path, node_id=node_id, extra_args=extra_args)
        _register_log(request, f"streamkeeper {node_id}", n.log_path)
        nodes.append(n)
        return n.start()

    yield start
    failures = []
    for n in nodes:
        was_alive = n.alive()
        rc = n.stop()
        if not was_alive:
            failures.append(f"{n.node_id} died during the test (rc={n.proc.returncode})")
        elif rc != 0:
            failures.append(f"{n.node_id} exited {rc} on SIGTERM")
        # A sanitizer build reports into the log; UBSan and LeakSanitizer may not change rc.
        report = harness.sanitizer_report(n.log_path)
        if report:
            failures.append(f"{n.node_id} sanitizer report: {report}")
    if failures:
        pytest.fail("; ".join(failures), pytrace=False)


@pytest.fixture
def node(start_node):
    """One streamkeeper node on free 127.0.0.1 ports."""
    return start_node()


@pytest.fixture
def publish(procs, tmp_path, request):
    """Factory: publish(kind, url, **opts) -> a running harness.Publisher."""

    def start(kind, url, **opts):
        p = harness.Publisher(procs, kind, url, tmp_path, **opts)
        _register_log(request, f"publisher {kind}", p.log_path)
        return p

    return start


@pytest.fixture
def sse_readers():
    readers = []
    yield readers
    for r in readers:
        r.stop()


@pytest.fixture
def follow(sse_readers, tmp_path):
    """Factory: follow(node, room, **kw) -> a started SseReader, stopped (and saved to
    tmp_path/room.sse) at the end."""

    def start(node, room, **kw):
        r = node.sse(room, **kw)
        sse_readers.append(r)
        return r

    yield start
    for i, r in enumerate(sse_readers):
        r.save(tmp_path / f"{r.room}-{i}.sse")


def assert_invariants(events, **kw):
    errors = check_events.check([e for e in events], **kw)
    assert not errors, "event invariants violated:\n" + "\n".join(errors)


@pytest.fixture
def invariants():
    return assert_invariants
