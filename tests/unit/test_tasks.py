"""The engine's one way to run a background task (`TaskSet`): every task held until it is done,
nothing started after close, a bounded cancel-and-wait on close; and no task started anywhere
else in the engine's source, where a weakly referenced task could be collected mid-run."""

from __future__ import annotations

import ast
import asyncio
import gc
import logging
from pathlib import Path

import pytest

import camfx.engine
from camfx.engine import tasks as tasks_module
from camfx.engine.tasks import TaskSet

pytestmark = pytest.mark.unit

SPAWNERS = {"create_task", "ensure_future"}


async def test_a_task_nobody_else_holds_runs_to_its_end():
    tasks, finished = TaskSet("test"), asyncio.Event()

    async def job():
        await asyncio.sleep(0.05)
        finished.set()

    tasks.spawn(job())
    assert len(tasks) == 1
    gc.collect()  # the set's reference is the only one
    await asyncio.wait_for(finished.wait(), 5)
    await asyncio.sleep(0)
    assert len(tasks) == 0  # forgotten once done


async def test_close_cancels_and_waits_then_refuses_new_tasks():
    tasks, cancelled = TaskSet("test"), []

    async def forever(n):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.append(n)
            raise

    running = [tasks.spawn(forever(n)) for n in range(3)]
    await asyncio.sleep(0)
    await tasks.close()
    assert sorted(cancelled) == [0, 1, 2] and all(t.done() for t in running)
    assert len(tasks) == 0

    late = forever(9)
    assert tasks.spawn(late) is None  # refused, and the coroutine closed unrun (no warning)
    assert late.cr_frame is None and 9 not in cancelled


async def test_close_is_bounded_when_a_task_ignores_its_cancellation(caplog):
    caplog.set_level(logging.WARNING, logger="camfx.tasks")
    tasks, release = TaskSet("stubborn", close_timeout=0.2), asyncio.Event()

    async def stubborn():
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores it

    task = tasks.spawn(stubborn())
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.close(), 5)  # returns although the task still runs
    assert not task.done() and "still running" in caplog.text
    release.set()
    await asyncio.wait_for(task, 5)


async def test_a_task_may_close_its_own_set():
    tasks = TaskSet("test")
    other = tasks.spawn(asyncio.sleep(3600))

    async def closer():
        await tasks.close()  # not waiting on itself
        return "closed"

    assert await asyncio.wait_for(tasks.spawn(closer()), 5) == "closed"
    assert other.cancelled()


def _spawn_calls(source: str) -> list[int]:
    """Lines of `source` that call create_task / ensure_future (as a name or an attribute)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
            if name in SPAWNERS:
                lines.append(node.lineno)
    return lines


def test_the_scan_sees_every_way_of_spawning():
    assert _spawn_calls("import asyncio\nasyncio.ensure_future(f())\nloop.create_task(g())\n"
                        "from asyncio import create_task\ncreate_task(h())\n") == [2, 3, 5]
    assert _spawn_calls("tasks.spawn(f())\nawait asyncio.gather(a, b)\n") == []


def test_the_engine_starts_tasks_only_through_a_task_set():
    root = Path(camfx.engine.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        if path.resolve() == Path(tasks_module.__file__).resolve():
            continue
        found += [f"{path.relative_to(root)}:{line}" for line in _spawn_calls(path.read_text())]
    assert not found, f"start tasks with a TaskSet (camfx.engine.tasks), not directly: {found}"
