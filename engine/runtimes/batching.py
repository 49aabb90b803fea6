"""Several sessions' frames through one model call.

Sessions share one runtime per model. On a GPU one run over four frames costs about what one
frame costs (the model is small: launch and transfer overheads dominate), so stacking the frames
that arrive together is nearly free throughput. `BatchingRuntime` does that without ever waiting
for company: a run that finds the model idle goes at once, alone; runs that arrive while the model
is busy wait for it, and the first of them then carries every waiting run (up to the runtime's
`max_batch`) in one call. One active session pays nothing; N sessions pay one call per round.

The waiting list holds at most one run per worker thread (each caller blocks on its own run), so
it is bounded by the server's worker pool.
"""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np

from .base import Runtime, run_tensors


class _Run:
    __slots__ = ("inputs", "kind", "rows", "outputs", "error", "done")

    def __init__(self, inputs: dict, kind: str):
        self.inputs, self.kind = inputs, kind
        self.rows = len(next(iter(inputs.values())))
        self.outputs: dict | None = None
        self.error: BaseException | None = None
        self.done = False


class BatchingRuntime(Runtime):
    """Wraps a shared runtime (usually the `RuntimeChain` of one model); see the module doc.

    Runs on host arrays (`run`) and on torch tensors (`run_tensor`) are batched separately.
    `calls` and `frames` count the model calls made and the inputs they carried.
    """

    def __init__(self, inner: Runtime):
        self.inner = inner
        self._cond = threading.Condition()
        self._waiting: list[_Run] = []
        self._busy = False
        self.calls = 0
        self.frames = 0

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.inner.name

    @property
    def max_batch(self) -> int:  # type: ignore[override]
        return self.inner.max_batch

    @property
    def waiting(self) -> int:
        """Runs waiting to be carried by a call (none once every caller has its answer)."""
        with self._cond:
            return len(self._waiting)

    @property
    def busy(self) -> bool:
        """A model call is running now."""
        with self._cond:
            return self._busy

    @property
    def failures(self) -> list[str]:
        return getattr(self.inner, "failures", [])

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._submit(_Run(inputs, "host"))

    def run_tensor(self, inputs):
        # Each session's pipeline has its own CUDA stream, and the call may run on another
        # session's: the inputs must be complete before they leave this stream.
        _finish_stream(inputs)
        return self._submit(_Run(inputs, "tensor"))

    def _submit(self, run: _Run):
        if self.inner.max_batch <= 1:  # this runtime cannot stack: let runs go side by side
            _, call = _ops(run.kind, self.inner)
            return call(run.inputs)
        with self._cond:
            self._waiting.append(run)
            while self._busy and not run.done:
                self._cond.wait()
            if not run.done:  # the model is idle and this run still waits: lead the next call
                batch = self._take(run)
                self._busy = True
        if not run.done:
            self._call(batch)
        if run.error is not None:
            raise run.error
        return run.outputs

    def _take(self, leader: _Run) -> list[_Run]:
        """The leader and every waiting run of its kind that fits, oldest first."""
        batch, rows = [leader], leader.rows
        for other in self._waiting:
            if other is not leader and other.kind == leader.kind and rows + other.rows <= self.inner.max_batch:
                batch.append(other)
                rows += other.rows
        for taken in batch:
            self._waiting.remove(taken)
        return batch

    def _call(self, batch: list[_Run]) -> None:
        try:
            join, call = _ops(batch[0].kind, self.inner)
            if len(batch) == 1:
                batch[0].outputs = call(batch[0].inputs)
            else:
                stacked = call({k: join([r.inputs[k] for r in batch]) for k in batch[0].inputs})
                start = 0
                for r in batch:
                    r.outputs = {k: v[start : start + r.rows] for k, v in stacked.items()}
                    start += r.rows
            if batch[0].kind == "tensor":
                _finish_stream(batch[0].outputs)  # complete before other sessions' streams read them
        except Exception as exc:  # every run in the call gets the error, not just the leader
            for r in batch:
                r.error = exc
        finally:
            with self._cond:
                self.calls += 1
                self.frames += sum(r.rows for r in batch)
                for r in batch:
                    r.done = True
                self._busy = False
                self._cond.notify_all()


def _finish_stream(tensors: dict) -> None:
    first = next(iter(tensors.values()))
    if first.is_cuda:
        import torch

        torch.cuda.current_stream(first.device).synchronize()


def _ops(kind: str, runtime: Runtime) -> tuple[Callable, Callable]:
    if kind == "host":
        return np.concatenate, runtime.run
    import torch

    return torch.cat, lambda inputs: run_tensors(runtime, inputs)
