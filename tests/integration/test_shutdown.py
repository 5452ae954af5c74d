"""SIGTERM with a live publisher: participants leave with server_shutdown, exit code 0."""

import signal

import harness


def test_sigterm_with_live_publisher(procs, tmp_path, publish, request):
    node = harness.Node(procs, tmp_path).start()
    request.node._sk_logs = [("streamkeeper", node.log_path)]
    room = harness.unique_room("bye")
    ing = node.api.create_ingress(room, identity="cam-1")
    sse = node.sse(room)
    try:
        pub = publish("obs", node.rtmp_url(ing["stream_key"]), reconnect=False)
        node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)
        sse.wait_event("TrackPublished", count=2)

        node.proc.send_signal(signal.SIGTERM)
        rc = node.proc.wait(timeout=20)
        assert rc == 0, f"exit code {rc}"
        log = node.log()
        assert "server_shutdown" in log, "the shutdown must be logged with its reason"
        # The publisher's connection was closed by the node, not left hanging.
        harness.wait_until(lambda: not pub.running(), 10, what="publisher disconnected")
        # The node lets open SSE streams read the end of the log before it closes them.
        gone = sse.wait_event("ParticipantDisconnected", timeout=5)
        assert [e["reason"] for e in gone] == ["server_shutdown"]
        unpub = sse.of("TrackUnpublished")
        assert len(unpub) == 2 and all(e["reason"] == "server_shutdown" for e in unpub)
        assert sse.events[-1]["event"] == "RoomFinished"
    finally:
        sse.stop()
