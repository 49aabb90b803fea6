"""The cluster's parts that need no Ray: which replica a request is for, how replicas are ranked
for it, the merged /healthz and /metrics, the autoscaling policy, and a replica's camfx server
answering forwarded requests (a real offer whose session id names its replica, streaming)."""

from __future__ import annotations

import asyncio
import json
import types

import pytest
from aiortc import RTCSessionDescription
from prometheus_client.parser import text_string_to_metric_families

from camfx.bench.clip import person_clip
from camfx.bench.peer import Received, SyntheticCamera, prefer_codec, read_frames
from camfx.engine.deploy import merge
from camfx.engine.deploy.autoscale import SessionsPolicy
from camfx.engine.deploy.node_server import NodeServer
from camfx.engine.deploy.node_stats import NodeStats
from camfx.engine.deploy.placement import rank
from camfx.engine.deploy.routes import Answer, Forwarded, Route, classify, replica_of
from camfx.engine.deploy.settings import ClusterSettings
from camfx.engine.config import ServerConfig
from camfx.engine.metrics import Metrics
from camfx.engine.params import Params
from camfx.engine.transport.ice import ice_server, peer_connection
from camfx.engine.transport.jitter import release_frames_at_marker

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(120)]

SID = "Ab3xYz90-" + "0123456789abcdef" * 2


@pytest.mark.parametrize("method, path, kind, key", [
    ("POST", "/offer", "place", None),
    ("POST", "/whip/show", "place", "show"),
    ("GET", "/healthz", "each", None),
    ("GET", "/metrics", "each", None),
    ("GET", "/streams", "each", None),
    ("POST", f"/sessions/{SID}/params", "replica", "Ab3xYz90"),
    ("GET", f"/sessions/{SID}", "replica", "Ab3xYz90"),
    ("DELETE", f"/sessions/{SID}", "replica", "Ab3xYz90"),
    ("PATCH", f"/whip/show/{SID}", "replica", "Ab3xYz90"),
    ("DELETE", f"/whep/show/{SID}", "replica", "Ab3xYz90"),
    ("DELETE", "/sessions/" + "0" * 32, "any", None),  # an id of no replica: any answers 404
    ("POST", "/whep/show", "name", "show"),
    ("HEAD", "/whep/show", "name", "show"),
    ("GET", "/streams/show", "name", "show"),
    ("POST", "/streams/show/params", "name", "show"),
    ("OPTIONS", "/whip/show", "any", None),
    ("GET", "/", "any", None),
    ("GET", "/static/app.js", "any", None),
    ("GET", "/view/show", "any", None),
    ("POST", "/backgrounds", "any", None),
])
def test_each_request_is_for_the_right_replica(method, path, kind, key):
    route = classify(method, path)
    assert (route.kind, route.key) == (kind, key)


def test_a_session_id_names_its_replica():
    assert replica_of(SID) == "Ab3xYz90"
    assert replica_of("0123456789abcdef" * 2) is None
    assert replica_of("Ab3-xyz") is None


def stats(sessions, cap=4, **more):
    return {"sessions": sessions, "max_sessions": cap, **more}


def test_a_new_session_goes_where_there_is_most_headroom():
    replicas = [("a", stats(3)), ("b", stats(1)), ("c", stats(2))]
    assert rank(replicas, Route("place")) == [["b"], ["c"], ["a"]]
    # sessions this router sent since the last report count too
    assert rank(replicas, Route("place"), {"b": 2})[0] == ["c"]
    # busy time and diffusion work count as load; a stepped-down budget as full load
    assert rank([("a", stats(1, busy=0.9)), ("b", stats(2))], Route("place"))[0] == ["b"]
    assert rank([("a", stats(1, diffusion_busy=0.95)), ("b", stats(2))], Route("place"))[0] == ["b"]
    assert rank([("a", stats(0, degraded=1)), ("b", stats(3))], Route("place"))[0] == ["b"]


def test_full_replicas_come_last_and_asked_ones_after_them():
    replicas = [("a", stats(4)), ("b", stats(4, busy=0.1)), ("c", stats(3, busy=0.99))]
    assert rank(replicas, Route("place"))[0] == ["c"]  # busy, but it has a slot
    assert rank(replicas, Route("place", avoid=("c",)))[-1] == ["c"]
    # a replica that has not reported yet has just started: empty
    assert rank([("a", stats(2)), ("new", {})], Route("place"))[0] == ["new"]


def test_a_whip_name_in_use_goes_to_its_replica():
    replicas = [("a", stats(0)), ("b", stats(3, names=["show"]))]
    assert rank(replicas, Route("place", "show"))[0] == ["b"]
    assert rank(replicas, Route("name", "show"))[0] == ["b"]
    assert rank(replicas, Route("name", "show", avoid=("b",))) == [["a"], ["b"]]


def test_a_session_goes_to_its_replica_alone_and_elsewhere_when_it_is_gone():
    replicas = [("a", stats(0)), ("b", stats(3))]
    assert rank(replicas, Route("replica", "b")) == [["b"]]
    assert sorted(rank(replicas, Route("replica", "gone"))) == [["a"], ["b"]]


def prometheus_text(frames: int) -> bytes:
    from prometheus_client import generate_latest

    metrics = Metrics()
    metrics.frames_in.inc(frames)
    metrics.stage_seconds.labels("segment").observe(0.003)
    return generate_latest(metrics.registry)


def answer(replica, body=b"", status=200, **extra):
    return Answer(status, [("Content-Type", "application/json")], body, replica, f"node-{replica}", "127.0.0.1", extra)


def test_metrics_of_every_replica_in_one_text_with_a_replica_label():
    text = merge.metrics([answer("a", prometheus_text(5)), answer("b", prometheus_text(7))])
    assert text.count("# TYPE camfx_frames_in_total counter") == 1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    frames = {s.labels["replica"]: s.value for s in families["camfx_frames_in"].samples if s.name.endswith("_total")}
    assert frames == {"a": 5.0, "b": 7.0}
    counts = [s for s in families["camfx_stage_seconds"].samples
              if s.name.endswith("_count") and s.labels["stage"] == "segment"]
    assert sorted(s.labels["replica"] for s in counts) == ["a", "b"]


def test_healthz_lists_every_replica_with_its_node():
    import json

    a = answer("a", json.dumps({"status": "ok", "sessions": 2, "max_sessions": 3}).encode(), busy=0.2)
    b = answer("b", json.dumps({"status": "ok", "sessions": 1, "max_sessions": 3}).encode())
    data = merge.healthz([a, b])
    assert data["status"] == "ok" and data["sessions"] == 3 and data["max_sessions"] == 6
    assert [(r["replica"], r["node_id"], r["sessions"]) for r in data["replicas"]] == [("a", "node-a", 2),
                                                                                       ("b", "node-b", 1)]
    assert data["replicas"][0]["busy"] == 0.2
    status, _, body = merge.merged("/healthz", [])
    assert status == 503 and json.loads(body)["replicas"] == []


def test_autoscaling_wants_replicas_for_the_sessions():
    policy = SessionsPolicy(target_sessions=2, max_sessions=3)

    def ctx(current, sessions):
        return types.SimpleNamespace(current_num_replicas=current, target_num_replicas=current,
                                     aggregated_metrics={"sessions": dict(enumerate(sessions))})

    assert policy(ctx(2, [1, 1]))[0] == 1
    assert policy(ctx(2, [2, 2]))[0] == 2
    assert policy(ctx(2, [3, 2]))[0] == 3
    assert policy(ctx(2, [3, 3]))[0] == 3  # every replica full: one more
    assert policy(ctx(1, [0]))[0] == 0  # Serve keeps min_replicas
    assert policy(ctx(2, []))[0] == 2  # no metrics yet: no change


def test_settings_make_each_replicas_server_config():
    settings = ClusterSettings(max_sessions=3, token="t", ice_servers=(ice_server("stun:127.0.0.1:3478"),),
                               defaults=Params(effect="blur", blur_strength=20), tls_cert="proxy.pem")
    config = settings.server_config("abc-")
    assert (config.max_sessions, config.token, config.session_id_prefix) == (3, "t", "abc-")
    assert config.defaults.effect == "blur" and config.defaults.blur_strength == 20
    assert config.ice_servers[0].urls == "stun:127.0.0.1:3478"
    assert settings.target() == 2.25
    assert config.tls_cert is None and config.port == ServerConfig().port  # the proxy's, not the replica's
    assert config.workers == ServerConfig().workers  # the replica's own cores decide


@pytest.fixture
def node_server():
    server = NodeServer(ServerConfig(max_sessions=2, session_id_prefix="Ab3xYz90-")).start()
    yield server
    server.stop()


async def test_a_forwarded_offer_streams_and_its_id_names_the_replica(node_server):
    """What a replica does with what the ingress hands it: the same server `camfx serve` runs."""
    camera = SyntheticCamera(person_clip(160, 120, 30))
    pc = peer_connection()
    release_frames_at_marker(pc)
    got, readers = Received(), []

    @pc.on("track")
    def on_track(track):
        readers.append(asyncio.ensure_future(read_frames(track, got, camera.sent_at)))

    prefer_codec(pc.addTransceiver(camera, direction="sendrecv"), "VP8")
    try:
        await pc.setLocalDescription(await pc.createOffer())
        body = json.dumps({"sdp": pc.localDescription.sdp, "type": "offer", "params": {"effect": "none"}}).encode()
        host = [("Host", "127.0.0.1:8000"), ("Content-Type", "application/json")]
        status, headers, raw = await node_server.forward(Forwarded("POST", "/offer", "", host, body))
        assert status == 200, raw
        reply = json.loads(raw)
        assert replica_of(reply["session_id"]) == "Ab3xYz90" and reply["name"].startswith("main-")
        await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        for _ in range(200):
            if len(got.fresh) >= 10:
                break
            await asyncio.sleep(0.05)
        assert len(got.fresh) >= 10
        report = await node_server.call_async(_report(node_server))
        assert report["sessions"] == 1 and report["max_sessions"] == 2 and reply["name"] in report["names"]
        # a request as another host names it, on a server bound to loopback: refused, as by camfx serve
        status, _, _ = await node_server.forward(Forwarded("GET", f"/sessions/{reply['session_id']}", "",
                                                           [("Host", "evil.example")]))
        assert status == 403
        status, _, raw = await node_server.forward(Forwarded("DELETE", f"/sessions/{reply['session_id']}", "", host))
        assert status == 200
        status, _, _ = await node_server.forward(Forwarded("GET", f"/sessions/{reply['session_id']}", "", host))
        assert status == 404
    finally:
        for reader in readers:
            reader.cancel()
        await pc.close()


async def _report(server):
    return NodeStats().report(server.sessions, server.hub)
