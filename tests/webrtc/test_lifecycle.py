"""Sessions come and go, and a `camfx serve` process gives back what they took: slots within
seconds whoever hangs up how (DELETE, a peer close, a client killed with SIGKILL), and its
threads, file descriptors and memory (RSS) to what one warmed-up session left."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import psutil
import pytest

from camfx.bench.clip import person_clip
from camfx.bench.latency import free_port
from camfx.bench.peer import ClientPeer, SyntheticCamera

pytestmark = [pytest.mark.webrtc, pytest.mark.timeout(300)]

MEDIA_TIMEOUT_S = 2.0


class ServeProcess:
    def __init__(self):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "camfx", "serve", "--port", str(self.port), "--log-level", "WARNING",
             "--max-sessions", "2", "--connect-timeout", "3", "--media-timeout", str(MEDIA_TIMEOUT_S)],
        )
        self.ps = psutil.Process(self.proc.pid)

    async def health(self) -> dict:
        async with aiohttp.ClientSession() as http, http.get(self.url + "/healthz") as resp:
            return await resp.json()

    async def wait_up(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.health()
                return
            except aiohttp.ClientError:
                assert self.proc.poll() is None, "camfx serve exited"
                assert time.monotonic() < deadline, "camfx serve did not come up"
                await asyncio.sleep(0.2)

    async def wait_sessions(self, count: int, within: float) -> float:
        started = time.monotonic()
        while (await self.health())["sessions"] != count:
            assert time.monotonic() - started < within, f"sessions did not reach {count} within {within} s"
            await asyncio.sleep(0.1)
        return time.monotonic() - started

    def usage(self) -> tuple[int, int, int]:
        """(RSS in MB, threads, open file descriptors)."""
        return self.ps.memory_info().rss >> 20, self.ps.num_threads(), self.ps.num_fds()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


async def stream(url: str, clip, frames: int = 20, fps: float = 30.0) -> ClientPeer:
    peer = ClientPeer(SyntheticCamera(clip, fps=fps))
    await peer.connect(url, {"effect": "blur"})
    await peer.wait_frames(frames, timeout=60)
    return peer


async def killed_client(url: str) -> None:
    """A client in its own process that streams, then dies with SIGKILL: no goodbye of any kind."""
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "camfx.bench.peer", url, stdout=asyncio.subprocess.PIPE,
    )
    try:
        line = await asyncio.wait_for(client.stdout.readline(), 60)
        assert line.startswith(b"streaming "), line
    finally:
        client.send_signal(signal.SIGKILL)
        await client.wait()


async def wait_settled(server: ServeProcess, seconds: float = 4.0) -> tuple[int, int, int]:
    await asyncio.sleep(seconds)  # the server trims its allocator 2 s after the last session ends
    return server.usage()


async def test_churn_of_every_kind_frees_slots_threads_descriptors_and_memory(clip_640):
    server = ServeProcess()
    try:
        await server.wait_up()
        peer = await stream(server.url, clip_640, frames=60)
        await peer.close()
        await server.wait_sessions(0, within=5)
        rss0, threads0, fds0 = await wait_settled(server)

        small = clip_640[:8]
        for cycle in range(9):
            how = ("delete", "close", "kill")[cycle % 3]
            if how == "kill":
                await killed_client(server.url)
                took = await server.wait_sessions(0, within=MEDIA_TIMEOUT_S + 4)
            else:
                peer = await stream(server.url, small)
                if how == "delete":
                    async with aiohttp.ClientSession() as http:
                        async with http.delete(f"{server.url}/sessions/{peer.session_id}") as resp:
                            assert resp.status == 200
                await peer.close()
                took = await server.wait_sessions(0, within=5)
            assert took < MEDIA_TIMEOUT_S + 4, (how, took)

        # One 4K stream: its frame buffers are the largest a session ever allocates.
        peer = await stream(server.url, person_clip(3840, 2160, 6), frames=6, fps=10)
        await peer.close()
        await server.wait_sessions(0, within=5)

        rss, threads, fds = await wait_settled(server)
        assert rss <= 1.2 * rss0, f"RSS {rss} MB after churn, {rss0} MB after one warmed-up session"
        # Pools are bounded by the cores, not by sessions: asyncio's default executor may grow to
        # cpu + 4 threads (aiortc encodes there), nothing else.
        assert threads <= threads0 + min(32, (os.cpu_count() or 1) + 4), (threads0, threads)
        assert fds <= fds0 + 8, (fds0, fds)
        assert (await server.health())["sessions"] == 0
    finally:
        server.stop()
