"""The diffusion scheduler's policy on a simulated device and a simulated clock: outcomes
(rates held, rungs, refusals, ages), never wall-clock timings."""

from __future__ import annotations

import pytest

from camfx.engine.diffusion.scheduler import AdmissionError, Budget, DiffusionScheduler, Rung, ladder
from camfx.engine.diffusion.simulated import PROFILES, SimClock, SimulatedDevice, run_fifo, run_scheduler

pytestmark = pytest.mark.unit

GPU = PROFILES["rtx3080"]  # a batch of 4 costs 1.6x a batch of 1
BUDGET = Budget(fps=30.0, max_age_s=0.2)
RUNGS = ladder(512, 1, False)


def test_the_simulated_gpu_costs_a_batch_of_4_about_1_6_times_a_batch_of_1():
    one, four = GPU.batch_s([RUNGS[0]]), GPU.batch_s([RUNGS[0]] * 4)
    assert 1.55 <= four / one <= 1.65
    assert GPU.batch_s([Rung(256, 1, False)]) < one  # smaller pictures cost less
    assert GPU.batch_s([Rung(512, 4, True)]) < GPU.batch_s([Rung(512, 4, False)])  # one call, not four


def test_the_ladder_steps_stream_batch_then_steps_then_size():
    assert [r.name for r in ladder(512, 3, False)] == [
        "512px 3 steps", "512px 3 steps stream-batch", "512px 1 step", "384px 1 step", "256px 1 step"]
    assert ladder(256, 1, False) == (Rung(256, 1, False), Rung(192, 1, False), Rung(128, 1, False))


def test_four_streams_each_hold_their_rate_where_one_fifo_gives_each_a_quarter():
    fifo, scheduled = run_fifo(GPU, 4), run_scheduler(GPU, 4)
    for s in fifo.streams:
        assert s.achieved_fps < 0.35 * s.target_fps
    for s in scheduled.streams:
        assert s.admitted and s.achieved_fps >= 0.9 * s.target_fps
        assert s.age_ms_p95 <= 200
    assert scheduled.mean_batch_size > 3


def test_eight_streams_are_stepped_down_or_refused_never_all_slowed_together():
    result = run_scheduler(GPU, 8)
    admitted = [s for s in result.streams if s.admitted]
    refused = len(result.streams) - len(admitted)
    assert all(s.achieved_fps >= 0.9 * s.target_fps for s in admitted)
    assert all(s.age_ms_p95 <= 200 for s in admitted)
    assert refused > 0 or all(s.rung != RUNGS[0].name for s in admitted)
    assert len(admitted) >= 4
    assert all(s.achieved_fps < 0.2 * s.target_fps for s in run_fifo(GPU, 8).streams)


def test_a_stream_leaving_frees_its_share_within_a_second():
    sim = SimulatedDevice(GPU)
    handles = []
    while True:  # fill the device until it refuses
        sim.run_until(sim.clock.now + 2.0)
        try:
            handles.append(sim.open(BUDGET, RUNGS))
        except AdmissionError as exc:
            assert "diffusion_fps" in str(exc)
            break
    assert len(handles) >= 3
    sim.close(handles.pop(0))
    sim.run_until(sim.clock.now + 1.0)
    handles.append(sim.open(BUDGET, RUNGS))  # admitted now
    start = sim.clock.now + 3.0
    sim.run_until(start + 5.0)
    for h in handles:
        assert sim.result(h, start, start + 5.0).achieved_fps >= 0.9 * BUDGET.fps


def test_streams_step_back_up_when_the_others_leave():
    sim = SimulatedDevice(GPU)
    handles = [sim.open(BUDGET, RUNGS) for _ in range(4)]
    sim.run_until(8.0)
    assert all(h.level > 0 for h in handles)
    for h in handles[1:]:
        sim.close(h)
    sim.run_until(20.0)
    assert handles[0].level == 0
    assert sim.result(handles[0], 15.0, 20.0).achieved_fps >= 0.9 * BUDGET.fps


def test_a_failing_stream_does_not_stall_the_others():
    sim = SimulatedDevice(GPU)
    handles = [sim.open(BUDGET, RUNGS) for _ in range(3)]
    sim.fail.add(handles[1].number)
    sim.run_until(5.0)
    assert handles[1].error == "failed" and handles[1].latest is None
    for h in (handles[0], handles[2]):
        assert sim.result(h, 2.0, 5.0).achieved_fps >= 0.9 * BUDGET.fps


def test_a_frame_too_old_for_its_freshness_limit_is_not_shown():
    clock = SimClock()
    scheduler = DiffusionScheduler(clock)
    handle = scheduler.open("m", RUNGS, Budget(fps=30.0, max_age_s=0.05))
    handle.offer("frame", 0.0, "k")
    batch = scheduler.next_batch(0.0)
    clock.now = 0.2  # the device took 200 ms
    scheduler.done(batch, {handle.number: "picture"})
    assert handle.latest is None and handle.stale == 1
    handle.offer("old frame", 0.0, "k")  # already older than its limit: not started
    assert scheduler.next_batch(0.2) is None and handle.stale == 2


def test_only_streams_with_the_same_key_share_a_batch_and_deadlines_come_first():
    scheduler = DiffusionScheduler(SimClock())
    a, b, c = (scheduler.open("m", RUNGS, BUDGET) for _ in range(3))
    a.offer(1, 0.0, ("m", 512))
    b.offer(2, 0.0, ("other", 512))
    c.offer(3, 0.0, ("m", 512))
    first = scheduler.next_batch(0.0)
    assert [e.payload for e in first.entries] == [1, 3]
    assert [e.payload for e in scheduler.next_batch(0.0).entries] == [2]
    a.offer(4, 0.01, ("m", 512))
    assert scheduler.next_batch(0.01) is None  # a is not due again before 1/30 s


def test_stats_name_target_achieved_age_batch_and_rung():
    sim = SimulatedDevice(GPU)
    handle = sim.open(BUDGET, RUNGS)
    sim.run_until(3.0)
    stats = handle.stats(3.0)
    assert stats["target_fps"] == 30.0 and stats["achieved_fps"] >= 27
    assert 0 < stats["age_ms_p50"] <= stats["age_ms_p95"] <= 200
    assert stats["batch_size"] == 1.0 and stats["rung"] == "512px 1 step"
    device = sim.scheduler.stats(3.0, horizon_s=2.0)
    assert device["streams"] == 1 and 0.5 < device["busy_share"] <= 1.0 and device["mean_batch_size"] == 1.0
    assert device["batches_per_s"] >= 27


def test_budgets_must_be_positive():
    with pytest.raises(ValueError):
        Budget(0.0, 0.2)


def test_over_committed_the_newest_streams_are_held_back_and_the_oldest_keep_their_rate():
    sim = SimulatedDevice(GPU)
    handles = [sim.open(BUDGET, RUNGS) for _ in range(10)]  # all at once: no cost known to refuse on
    sim.run_until(15.0)
    assert all(h.level == len(RUNGS) - 1 for h in handles)  # stepped down first
    limited = [h.limited for h in handles]
    assert any(limited) and not all(limited)
    assert limited == sorted(limited)  # the newest ones
    for h in handles[: limited.index(True)]:
        assert sim.result(h, 10.0, 15.0).achieved_fps >= 0.9 * BUDGET.fps
    for h in handles[:5]:
        sim.close(h)
    sim.run_until(20.0)
    assert not any(h.limited for h in handles[5:])  # room again: back to their full rate
    for h in handles[5:]:
        assert sim.result(h, 17.0, 20.0).achieved_fps >= 0.9 * BUDGET.fps
