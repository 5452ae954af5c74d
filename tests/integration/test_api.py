"""The ingress and rooms API: CRUD, authentication and JSON errors."""

import json

import pytest

import harness


def items(body):
    # LiveKit's ListIngressResponse shape.
    assert isinstance(body, dict) and isinstance(body["items"], list), body
    return body["items"]


def assert_json_error(r, status):
    assert r.status == status, r
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    err = r.json
    assert isinstance(err.get("error"), str) and err["error"]
    assert isinstance(err.get("code"), str) and err["code"]


def test_health(node):
    assert node.api.get("/healthz", token=None).status == 200
    assert node.api.get("/readyz", token=None).status == 200


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/ingress"), ("POST", "/v1/ingress"), ("GET", "/v1/ingress/IN_x"),
    ("PATCH", "/v1/ingress/IN_x"), ("DELETE", "/v1/ingress/IN_x"),
    ("GET", "/v1/rooms"), ("GET", "/v1/rooms/r"), ("GET", "/v1/rooms/r/events"),
])
@pytest.mark.parametrize("token", [None, "wrong-token", ""])
def test_401_without_the_token(node, method, path, token):
    body = {"input_type": "rtmp", "room_name": "r"} if method in ("POST", "PATCH") else None
    r = node.api.request(method, path, body, token=token)
    assert_json_error(r, 401)


def test_create_get_list_patch_delete(node):
    a = node.api.create_ingress("room-a", identity="cam-a", name="Cam A")
    b = node.api.create_ingress("room-b", identity="cam-b", name="Cam B")
    for rec, room, ident in ((a, "room-a", "cam-a"), (b, "room-b", "cam-b")):
        assert rec["ingress_id"].startswith("IN_")
        assert rec["input_type"] == "rtmp"
        assert rec["room_name"] == room and rec["participant_identity"] == ident
        assert rec["url"].startswith("rtmp://") and rec["url"].rstrip("/").endswith("/live")
        assert len(rec["stream_key"]) >= 22  # >= 128 random bits in base62
        assert rec["state"]["status"] == "ENDPOINT_INACTIVE"
    assert a["stream_key"] != b["stream_key"] and a["ingress_id"] != b["ingress_id"]

    assert node.api.ingress(a["ingress_id"]) == node.api.ingress(a["ingress_id"])
    assert node.api.ingress(a["ingress_id"])["stream_key"] == a["stream_key"]

    listed = items(node.api.get("/v1/ingress").json)
    assert {i["ingress_id"] for i in listed} == {a["ingress_id"], b["ingress_id"]}
    only_a = items(node.api.get("/v1/ingress?room=room-a").json)
    assert [i["ingress_id"] for i in only_a] == [a["ingress_id"]]

    r = node.api.request("PATCH", f"/v1/ingress/{a['ingress_id']}",
                         {"name": "Renamed", "participant_name": "Cam A2"})
    assert r.status == 200, r
    got = node.api.ingress(a["ingress_id"])
    assert got["name"] == "Renamed" and got["participant_name"] == "Cam A2"
    assert got["stream_key"] == a["stream_key"]

    r = node.api.request("DELETE", f"/v1/ingress/{a['ingress_id']}")
    assert r.status == 204, r
    assert_json_error(node.api.get(f"/v1/ingress/{a['ingress_id']}"), 404)
    assert_json_error(node.api.request("DELETE", f"/v1/ingress/{a['ingress_id']}"), 404)
    assert [i["ingress_id"] for i in items(node.api.get("/v1/ingress").json)] == \
        [b["ingress_id"]]


def test_not_found_and_bad_requests(node):
    assert_json_error(node.api.get("/v1/ingress/IN_doesnotexist"), 404)
    assert_json_error(node.api.request("PATCH", "/v1/ingress/IN_doesnotexist", {"name": "x"}),
                      404)
    assert_json_error(node.api.request("POST", "/v1/ingress", "{oops"), 400)
    assert_json_error(node.api.request("POST", "/v1/ingress",
                                       {"input_type": "carrier-pigeon", "room_name": "r"}), 400)
    assert_json_error(node.api.request("POST", "/v1/ingress",
                                       {"input_type": "rtmp", "room_name": "r",
                                        "transcode": "sometimes"}), 400)
    a = node.api.create_ingress("r")
    assert_json_error(node.api.request("PATCH", f"/v1/ingress/{a['ingress_id']}",
                                       json.dumps({"name": 42})), 400)


def test_rooms_api_follows_publication(node, publish, follow):
    room = harness.unique_room("api")
    ing = node.api.create_ingress(room, identity="cam-1", name="Cam 1")
    sse = follow(node, room)
    pub = publish("obs", node.rtmp_url(ing["stream_key"]))
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)
    sse.wait_event("TrackPublished", count=2)
    info = node.api.get(f"/v1/rooms/{room}").json
    assert info["name"] == room and info["node"] == node.node_id and info["epoch"] >= 1
    [p] = info["participants"]
    assert p["identity"] == "cam-1" and p["kind"] == "ingress" and p["sid"].startswith("PA_")
    assert sorted(t["kind"] for t in p["tracks"]) == ["audio", "video"]
    assert ing["state"]["status"] == "ENDPOINT_INACTIVE"
    assert node.api.ingress(ing["ingress_id"])["state"]["node"] == node.node_id

    # Deleting a live ingress ends its publication with reason ingress_deleted.
    r = node.api.request("DELETE", f"/v1/ingress/{ing['ingress_id']}")
    assert r.status == 204, r
    psid = p["sid"]
    sse.wait_event("ParticipantDisconnected", psid=psid)
    assert sse.of("ParticipantDisconnected", psid=psid)[0]["reason"] == "ingress_deleted"
    harness.wait_until(lambda: not pub.running(), 10, what="the publisher to be dropped")
