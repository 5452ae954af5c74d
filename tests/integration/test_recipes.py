"""Each configs/gst-launch recipe publishes into a node and plays over WHEP."""

import signal
import subprocess

import pytest

import harness

# RTMP recipes; whip.sh publishes over WHIP and is tested in test_whip.py.
RECIPES = sorted(r for r in harness.RECIPES.glob("*.sh") if r.name != "whip.sh")


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_recipe_publishes(node, procs, tmp_path, recipe, follow, invariants, request):
    room = harness.unique_room(recipe.stem)
    ing = node.api.create_ingress(room, identity="recipe")
    sse = follow(node, room)
    log = tmp_path / f"{recipe.stem}.log"
    request.node._sk_logs.append((recipe.name, log))
    # URL and key as arguments; the recipe's own defaults (1935) are not used here.
    p = procs.start(["bash", recipe, f"rtmp://127.0.0.1:{node.rtmp_port}/live",
                     ing["stream_key"]], log)
    node.api.wait_status(ing["ingress_id"], "ENDPOINT_PUBLISHING", timeout=30)
    sse.wait_event("TrackPublished", count=2)
    harness.assert_plays(node, room, frames=20, expect_audio=True)
    p.send_signal(signal.SIGINT)
    try:
        p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{recipe.name} ignored SIGINT")
    sse.wait_event("ParticipantDisconnected")
    assert sse.of("ParticipantDisconnected")[0]["reason"] == "client_initiated"
    invariants(sse.events)
