"""camfx on a real Ray cluster: two nodes (two raylets started here, bound to 127.0.0.1), two CPU
replicas (one per node), signalling through Serve's HTTP proxy, media straight to the replicas.

- four sessions are placed two and two, each streams real frames; params, stats, DELETE reach
  the replica holding the session; a WHEP viewer reaches the replica publishing its name;
  /healthz lists both replicas on their two nodes, /metrics has both;
- with every replica full, an offer (and a WHIP publish) gets 503 with Retry-After;
- one replica's actor killed mid-stream: its sessions end, the other's go on streaming, a new
  offer succeeds, the thin client of `camfx camera --server` reconnects, Serve brings the
  replica back;
- `camfx cluster status` / `up` from the command line, `camfx bench cluster` against it;
- last (it redeploys): autoscaling from one full replica adds a second.

One cluster for the module. No timing is asserted: waits have generous deadlines only.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import aiohttp
import numpy as np
import pytest

# Nothing leaves loopback: no usage report, and Ray's own idea of this machine's address is
# 127.0.0.1 (without this, ray.init turns the head's 127.0.0.1 into the LAN address, on which
# a head bound to loopback does not answer). Ray reads both when it is imported.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="the cluster extra (ray[serve]) is not installed")

from camfx.bench.clip import person_clip  # noqa: E402
from camfx.bench.latency import free_port  # noqa: E402
from camfx.bench.peer import ClientPeer, OfferRefused, SyntheticCamera  # noqa: E402
from camfx.bench.whip import WhepViewer, WhipError, WhipPublisher  # noqa: E402
from camfx.engine.deploy.routes import replica_of  # noqa: E402
from camfx.engine.deploy.settings import ClusterSettings  # noqa: E402
from camfx.engine.media import yuv  # noqa: E402

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(300)]

CLIP = person_clip(320, 240, 30)
CAP = 3  # sessions per replica: four sessions placed by headroom are 2 + 2, by filling up 3 + 1


class Running:
    def __init__(self, url: str, settings: ClusterSettings):
        self.url, self.settings = url, settings

    async def get(self, path: str):
        async with aiohttp.ClientSession() as http:
            async with http.get(self.url + path, timeout=aiohttp.ClientTimeout(total=60)) as resp:
                return resp.status, (await resp.json() if resp.content_type == "application/json" else await resp.text())

    async def call(self, method: str, path: str, json=None):
        async with aiohttp.ClientSession() as http:
            async with http.request(method, self.url + path, json=json,
                                    timeout=aiohttp.ClientTimeout(total=60)) as resp:
                return resp.status, resp.headers.copy(), await resp.json()

    async def healthz(self) -> dict:
        status, data = await self.get("/healthz")
        assert status == 200, data
        return data

    async def quiet(self) -> None:
        """No sessions, and the replicas' routing reports (every second) saying so: placement
        works from those reports, and a report from before the last test ended would skew it."""
        await self.until(lambda h: h["sessions"] == 0, 30, "the sessions to close")
        await asyncio.sleep(3.0)

    async def until(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while True:
            data = await self.healthz()
            if condition(data):
                return data
            assert time.monotonic() < deadline, f"timed out waiting for {what}: {data}"
            await asyncio.sleep(0.5)


@pytest.fixture(scope="module")
def cluster():
    from ray import serve
    from ray.cluster_utils import Cluster

    from camfx.engine.deploy import app

    node = {"num_cpus": 1, "node_ip_address": "127.0.0.1"}
    nodes = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    nodes.add_node(**node)
    port = free_port()
    try:
        ray.init(address=nodes.address, _node_ip_address="127.0.0.1", logging_level="ERROR", log_to_driver=False)
        nodes.wait_for_nodes()
        settings = ClusterSettings(replicas=2, gpus_per_replica=0, cpus_per_replica=0.5, max_replicas_per_node=1,
                                   max_sessions=CAP, port=port, media_host="127.0.0.1", device="cpu", workers=2,
                                   media_timeout=3.0)
        app.up(settings)
        running = Running(f"http://127.0.0.1:{port}", settings)
        running.ray_address = nodes.address
        yield running
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            nodes.shutdown()


async def open_peers(url: str, count: int, params: dict | None = None, fps: float = 30.0) -> list[ClientPeer]:
    peers = []
    for _ in range(count):
        peer = ClientPeer(SyntheticCamera(CLIP, fps=fps))
        peers.append(peer)
        await peer.connect(url, {"effect": "none", "probe": True, **(params or {})})
    for peer in peers:
        await peer.wait_frames(10, timeout=60)
    return peers


async def close_all(peers) -> None:
    await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)


def fresh_ids(peer: ClientPeer) -> set[int]:
    return {frame_id for frame_id, _ in peer.received.last_frames if frame_id is not None}


def green_share(image: np.ndarray) -> float:
    rgb = yuv.to_rgb(image).astype(int)[16:]  # below the probe rows
    green = (rgb[..., 1] > 170) & (rgb[..., 0] < 110) & (rgb[..., 2] < 110)
    return float(green.mean())


async def test_sessions_are_spread_two_and_two_and_reach_their_replica(cluster):
    await cluster.quiet()
    peers = await open_peers(cluster.url, 4)
    viewer = publisher = None
    try:
        placed = collections.Counter(replica_of(p.session_id) for p in peers)
        assert len(placed) == 2 and sorted(placed.values()) == [2, 2], placed
        health = await cluster.healthz()
        replicas = {r["replica"]: r for r in health["replicas"]}
        assert set(replicas) == set(placed) and health["sessions"] == 4 and health["max_sessions"] == 2 * CAP
        assert len({r["node_id"] for r in replicas.values()}) == 2  # one replica on each node
        assert all(r["sessions"] == 2 and r["status"] == "ok" and r["runtimes"] for r in replicas.values())

        # every session streams real frames: new ones keep coming, and they are different frames
        counts = [len(p.received.fresh) for p in peers]
        await asyncio.sleep(1.5)
        for peer, before in zip(peers, counts):
            assert len(peer.received.fresh) > before + 5 and len(fresh_ids(peer)) > 1
            assert green_share(peer.received.last_frames[-1][1]) < 0.02

        # params reach the replica holding the session, live: the background turns key green
        target = peers[0]
        status, _, params = await cluster.call("POST", f"/sessions/{target.session_id}/params",
                                               {"effect": "remove", "key_color": "#00ff00"})
        assert status == 200 and params["effect"] == "remove"
        for _ in range(100):
            await asyncio.sleep(0.1)
            if green_share(target.received.last_frames[-1][1]) > 0.2:
                break
        assert green_share(target.received.last_frames[-1][1]) > 0.2
        assert all(green_share(p.received.last_frames[-1][1]) < 0.02 for p in peers[1:])
        status, stats = await cluster.get(f"/sessions/{target.session_id}")
        assert status == 200 and stats["params"]["effect"] == "remove" and stats["session_id"] == target.session_id
        status, _, bad = await cluster.call("POST", f"/sessions/{target.session_id}/params", {"effect": "sepia"})
        assert status == 422 and bad["errors"][0]["field"] == "effect"

        # DELETE reaches it too, and only that replica loses a session
        status, _, closed = await cluster.call("DELETE", f"/sessions/{target.session_id}")
        assert status == 200 and closed == {"closed": True}
        status, _ = await cluster.get(f"/sessions/{target.session_id}")
        assert status == 404
        health = await cluster.healthz()
        left = {r["replica"]: r["sessions"] for r in health["replicas"]}
        assert left[replica_of(target.session_id)] == 1 and sum(left.values()) == 3

        # a WHIP publisher, and a WHEP viewer of its name on the replica that holds it
        camera = SyntheticCamera(CLIP)
        publisher = WhipPublisher(camera)
        await publisher.publish(f"{cluster.url}/whip/show?effect=none&probe=true")
        held_by = replica_of(publisher.location.rsplit("/", 1)[1])
        assert held_by in replicas
        viewer = WhepViewer(camera.sent_at)
        await viewer.view(f"{cluster.url}/whep/show")
        assert replica_of(viewer.location.rsplit("/", 1)[1]) == held_by
        await viewer.wait_frames(10, timeout=60)
        # trickle ICE for the publisher reaches its session (another replica would say 404)
        local = publisher.pc.localDescription.sdp
        ufrag, pwd = re.search(r"a=ice-ufrag:(\S+)", local).group(1), re.search(r"a=ice-pwd:(\S+)", local).group(1)
        fragment = f"a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\na=mid:0\r\na=end-of-candidates\r\n"
        for if_match, expected in (('"nope"', 412), (publisher.etag, 204)):
            async with aiohttp.ClientSession() as http:
                async with http.patch(publisher.location, data=fragment, headers={
                        "Content-Type": "application/trickle-ice-sdpfrag", "If-Match": if_match}) as resp:
                    assert resp.status == expected, await resp.text()
        status, streams = await cluster.get("/streams")
        assert status == 200 and streams["show"]["replica"] == held_by and streams["show"]["viewers"] == 1
        status, _ = await cluster.get("/streams/nobody")
        assert status == 404

        status, text = await cluster.get("/metrics")
        assert status == 200
        assert {f'replica="{rid}"' in text for rid in replicas} == {True}
    finally:
        for client in (viewer, publisher):
            if client is not None:
                await client.close()
        await close_all(peers)


async def test_with_every_replica_full_an_offer_gets_503_with_retry_after(cluster):
    await cluster.quiet()
    peers = await open_peers(cluster.url, 2 * CAP, fps=10)
    try:
        assert sorted(collections.Counter(replica_of(p.session_id) for p in peers).values()) == [CAP, CAP]
        extra = ClientPeer(SyntheticCamera(CLIP))
        try:
            with pytest.raises(OfferRefused, match="503"):
                await extra.connect(cluster.url, {"effect": "none"})
        finally:
            await extra.close()
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{cluster.url}/offer", json={"sdp": "v=0", "type": "offer"}) as resp:
                assert resp.status == 400  # a bad offer is still the client's error, not capacity's
        publisher = WhipPublisher(SyntheticCamera(CLIP))
        try:
            with pytest.raises(WhipError) as refused:
                await publisher.publish(f"{cluster.url}/whip/late")
            assert refused.value.status == 503 and int(refused.value.headers["Retry-After"]) > 0
        finally:
            await publisher.close()
        async with aiohttp.ClientSession() as http:
            offer = await _offer_sdp()
            async with http.post(f"{cluster.url}/offer", json={"sdp": offer, "type": "offer"}) as resp:
                body = await resp.json()
                assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0 and "limit" in body["error"]
        assert (await cluster.healthz())["sessions"] == 2 * CAP  # nothing was placed beyond the caps
    finally:
        await close_all(peers)


async def _offer_sdp() -> str:
    from camfx.engine.transport.ice import peer_connection

    pc = peer_connection()
    pc.addTransceiver("video", direction="sendrecv")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    await pc.close()
    return sdp


def _replica_actor(replica: str):
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"].startswith("SERVE_REPLICA::") and actor["name"].endswith(f"#{replica}"):
            return ray.get_actor(actor["name"], namespace=actor["namespace"])
    raise AssertionError(f"no actor for replica {replica}")


async def test_a_replica_killed_mid_stream(cluster):
    """Its sessions end, the other replica's go on, a new offer is placed on the other, Serve
    brings the replica back, and `camfx camera --server`'s client reconnects by itself."""
    from camfx.engine.client.remote import RemoteProcessor
    from camfx.engine.params import Params

    await cluster.quiet()
    camera = RemoteProcessor(cluster.url, Params(effect="none"))  # the thin client of `camfx camera --server`
    await camera.start(SyntheticCamera(CLIP))
    peers = await open_peers(cluster.url, 3)
    late = None
    try:
        doomed = replica_of(camera._session)
        by_replica = collections.defaultdict(list)
        for peer in peers:
            by_replica[replica_of(peer.session_id)].append(peer)
        assert sorted(len(v) for v in by_replica.values()) == [1, 2] and len(by_replica[doomed]) == 1
        survivor = next(r for r in by_replica if r != doomed)
        assert camera.state == "connected"
        ray.kill(_replica_actor(doomed), no_restart=True)

        # the killed replica's sessions end: nothing more comes to its peers, and their ids are gone
        await asyncio.sleep(1.0)
        cut = {id(p): len(p.received.arrivals) for p in by_replica[doomed]}
        sent = {id(p): p.camera.frames_sent for p in by_replica[survivor]}
        got = {id(p): len(p.received.arrivals) for p in by_replica[survivor]}
        await asyncio.sleep(3.0)
        for peer in by_replica[doomed]:
            assert len(peer.received.arrivals) == cut[id(peer)]
        # the other replica's sessions went on streaming throughout
        for peer in by_replica[survivor]:
            came, went = len(peer.received.arrivals) - got[id(peer)], peer.camera.frames_sent - sent[id(peer)]
            assert went > 0 and came >= went // 2, (came, went)
            status, stats = await cluster.get(f"/sessions/{peer.session_id}")
            assert status == 200 and stats["frames_out"] > 0
        for peer in by_replica[doomed]:
            status, _ = await cluster.get(f"/sessions/{peer.session_id}")
            assert status == 404

        # a new offer succeeds on a live replica; the camera client below may take the other's last
        # slot first, and then the answer is 503 until Serve has the replica back: retry, as clients do
        deadline = time.monotonic() + 120
        while True:
            late = ClientPeer(SyntheticCamera(CLIP))
            try:
                await late.connect(cluster.url, {"effect": "none", "probe": True})
                break
            except OfferRefused as exc:
                await late.close()
                late = None
                assert "503" in str(exc) and time.monotonic() < deadline, exc
                await asyncio.sleep(2)
        await late.wait_frames(10, timeout=60)
        assert replica_of(late.session_id) != doomed

        back = await cluster.until(lambda h: len(h["replicas"]) == 2 and doomed not in
                                   {r["replica"] for r in h["replicas"]}, 150, "Serve to bring the replica back")
        assert survivor in {r["replica"] for r in back["replicas"]}
        for peer in by_replica[survivor]:
            before = len(peer.received.fresh)
            await peer.wait_frames(len(peer.received.arrivals) + 10, timeout=30)
            assert len(peer.received.fresh) > before
        # the camera client noticed, and came back on a live replica (the other one was full by then)
        deadline = time.monotonic() + 60
        while not (camera.state == "connected" and camera.reconnects >= 1):
            assert time.monotonic() < deadline, f"the camera client did not reconnect ({camera.stats()})"
            await asyncio.sleep(0.5)
        assert replica_of(camera._session) != doomed and camera.stats()["fps_back"] > 0
    finally:
        await camera.close()
        if late is not None:
            await late.close()
        await close_all(peers)


def camfx(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "camfx", *args], capture_output=True, text=True, timeout=120)


def test_cluster_status_and_up_from_the_command_line(cluster):
    status = camfx("cluster", "status", "--address", cluster.ray_address)
    assert status.returncode == 0, status.stderr
    assert "application: RUNNING" in status.stdout and status.stdout.count("replica ") == 2
    assert "0/3 sessions" in status.stdout and "onnxruntime" in status.stdout
    as_json = json.loads(camfx("cluster", "status", "--address", cluster.ray_address, "--json").stdout)
    assert len(as_json["replicas"]) == 2 and as_json["deployments"]["CamfxNode"]["replicas"] == {"RUNNING": 2}
    no_gpu = camfx("cluster", "up", "--address", cluster.ray_address)  # --gpus-per-replica 1 by default
    assert no_gpu.returncode == 1 and "Traceback" not in no_gpu.stderr
    assert "has no GPU; pass --gpus-per-replica 0" in no_gpu.stderr
    exposed = camfx("cluster", "up", "--address", cluster.ray_address, "--host", "0.0.0.0")
    assert exposed.returncode == 1 and "no token" in exposed.stderr


async def test_the_cluster_benchmark_measures_both_paths(cluster):
    from camfx.bench import cluster as bench

    await cluster.quiet()
    args = bench.parse(["--size", "320x240", "--effect", "none", "--offers", "1", "--rounds", "1", "--seconds", "1",
                        "--warmup", "0.5", "--max-sessions", "1", "--settle", "1"])
    data = await bench.run(args, int(cluster.url.rsplit(":", 1)[1]))
    for path in ("serve", "cluster"):
        assert data["signalling"][path]["first_frame_ms"]["n"] == 1
        assert data["glass_to_glass"][path]["latency_ms"]["n"] > 0
    assert "cluster_adds_p50_ms" in data and len(data["cluster_health"]["replicas"]) == 2
    assert data["sessions_per_replica"]["steps"][0]["sessions"] == 1


async def test_autoscaling_adds_a_replica_when_every_one_is_full(cluster):
    """Last in the module: it redeploys the application autoscaling, from one replica."""
    from ray import serve

    from camfx.engine.deploy import app

    await cluster.quiet()
    await asyncio.to_thread(serve.delete, cluster.settings.app_name)
    auto = dataclasses.replace(cluster.settings, replicas=None, min_replicas=1, max_replicas=2, max_sessions=1,
                               target_sessions=1, upscale_delay_s=1.0)
    await asyncio.to_thread(app.up, auto)
    assert len((await cluster.healthz())["replicas"]) == 1
    peers = await open_peers(cluster.url, 1)
    try:
        first = replica_of(peers[0].session_id)
        grown = await cluster.until(lambda h: len(h["replicas"]) == 2, 120, "a second replica")
        assert first in {r["replica"] for r in grown["replicas"]}
        peers += await open_peers(cluster.url, 1)  # the new replica takes it
        assert replica_of(peers[1].session_id) != first
    finally:
        await close_all(peers)
