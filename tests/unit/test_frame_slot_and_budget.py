import asyncio

import pytest

from camfx.engine.pipeline.budget import LADDER, BudgetController
from camfx.engine.media.frame_slot import FrameSlot

pytestmark = pytest.mark.unit


async def test_slot_keeps_only_the_newest_and_counts_drops():
    slot: FrameSlot[int] = FrameSlot()
    for i in range(5):
        slot.put(i)
    assert slot.dropped == 4
    assert await slot.take() == 4
    assert slot.take_nowait() is None


async def test_take_waits_for_a_put():
    slot: FrameSlot[str] = FrameSlot()
    waiter = asyncio.ensure_future(slot.take())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    slot.put("frame")
    assert await asyncio.wait_for(waiter, 1) == "frame"


async def test_take_with_a_timeout_gives_none_when_nothing_comes():
    slot: FrameSlot[str] = FrameSlot()
    assert await slot.take(timeout=0.02) is None
    assert await slot.take(timeout=-1.0) is None  # already late: no wait at all
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, slot.put, "late but in time")
    assert await slot.take(timeout=1.0) == "late but in time"
    slot.put("waiting")
    assert await slot.take(timeout=0.0) == "waiting"  # an unread item is taken, however late


async def test_a_cancelled_take_leaves_the_slot_working():
    slot: FrameSlot[str] = FrameSlot()
    waiter = asyncio.ensure_future(slot.take(timeout=5.0))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    slot.put("next")  # must not touch the cancelled waiter
    assert slot.dropped == 0 and await slot.take() == "next"


def test_budget_steps_down_when_over_and_back_up_with_headroom():
    budget = BudgetController(fps=30)
    for _ in range(5):
        budget.observe(0.040)  # 40 ms > 80 % of 33 ms
    assert budget.level == 1
    for _ in range(20):
        budget.observe(0.040)
    assert budget.level == len(LADDER) - 1  # bottom rung, no further
    for _ in range(15):
        budget.observe(0.005)
    assert budget.level == len(LADDER) - 1  # hysteresis: half a window of headroom is not enough
    for _ in range(15):
        budget.observe(0.005)
    assert budget.level == len(LADDER) - 2  # a full window is: one rung up


def test_budget_holds_in_the_dead_band():
    budget = BudgetController(fps=30)
    for _ in range(100):
        budget.observe(0.020)  # between 45 % and 80 % of the budget
    assert budget.level == 0
