"""Dynamic asyncio work queue: heterogeneous workers pull the next jobs, faster ones take more.

:func:`run_queue` drives any list of :class:`~runners.executors.Executor` over a
:class:`~runners.store.CampaignStore`:

* every worker loops ``get up to max_batch indices -> executor.run -> record outcomes``;
  a GPU worker, a CPU worker and a batched synthesizer worker share one queue;
* a failed attempt is put back at the end of the queue while ``attempts < max_attempts``,
  otherwise recorded as failed for good (never as data);
* every ``checkpoint_every`` recorded outcomes the rows changed so far are handed to
  :meth:`CampaignStore.write_delta` in a background thread (one at a time; the queue keeps
  running), and once more at the end -- also after an error or a cancellation
  (Ctrl-C / SIGTERM), after the running subprocesses have been killed;
* if the first ``abort_after`` attempts of a campaign all fail (broken binary or
  reference data), the campaign stops with a :class:`CampaignAborted` instead of burning
  through every job's attempts.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
import warnings
from typing import Callable, Iterable, Sequence

import numpy as np

from lumina_jax.errors import UserError
from runners.executors import Executor, Job, Outcome
from runners.store import CampaignStore


class CampaignAborted(UserError):
    """Every one of the first attempts failed: the campaign's setup is broken."""


class WorkQueue:
    """FIFO of job indices with an outstanding-job count; closes itself when all are final."""

    def __init__(self, indices: Iterable[int]):
        self._items = collections.deque(int(i) for i in indices)
        self.outstanding = len(self._items)
        self._cond = asyncio.Condition()
        self.closed = self.outstanding == 0

    async def get(self, n: int) -> list[int] | None:
        """Up to ``n`` indices (waits while empty); ``None`` once every job is final."""
        async with self._cond:
            while not self._items and not self.closed:
                await self._cond.wait()
            if not self._items:
                return None
            k = min(n, len(self._items))
            return [self._items.popleft() for _ in range(k)]

    async def requeue(self, i: int) -> None:
        async with self._cond:
            self._items.append(int(i))
            self._cond.notify()

    async def finish(self, k: int = 1) -> None:
        async with self._cond:
            self.outstanding -= k
            if self.outstanding <= 0:
                self.closed = True
                self._cond.notify_all()

    async def close(self) -> None:
        async with self._cond:
            self.closed = True
            self._items.clear()
            self._cond.notify_all()


@dataclasses.dataclass
class KindStats:
    done: int = 0
    failed_attempts: int = 0
    busy_s: float = 0.0


@dataclasses.dataclass
class Progress:
    """Live counters (passed to the ``on_progress`` callback after every batch)."""

    n_total: int
    n_done: int
    n_failed: int  # failed for good in this store (no attempts left)
    n_todo_start: int
    started: float
    by_kind: dict[str, KindStats]
    n_checkpoints: int = 0

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def rate(self, kind: str | None = None) -> float:
        """Done jobs per second of wall time (all kinds or one kind)."""
        el = max(self.elapsed_s, 1e-9)
        if kind is None:
            return sum(s.done for s in self.by_kind.values()) / el
        return self.by_kind[kind].done / el

    def eta_s(self) -> float:
        remaining = self.n_total - self.n_done - self.n_failed
        r = self.rate()
        return remaining / r if r > 0 else float("inf")


async def run_queue(store: CampaignStore, executors: Sequence[Executor], *, checkpoint_every: int = 100,
                    max_attempts: int = 3, abort_after: int = 20,
                    on_progress: Callable[[Progress], None] | None = None) -> Progress:
    """Run every pending / retryable job of ``store`` on ``executors``; checkpoint; return counters."""
    if not executors:
        raise UserError("no workers: give --gpus and/or --cpu-workers (lumina) or use --backend synth")
    todo = store.todo(max_attempts)
    queue = WorkQueue(todo)
    counts = store.counts()
    prog = Progress(
        n_total=store.n, n_done=counts["done"],
        n_failed=int(np.sum((store.status == 2) & (store.attempts >= max_attempts))),
        n_todo_start=len(todo), started=time.monotonic(),
        by_kind={e.kind: KindStats() for e in executors})
    since_ckpt = 0
    ckpt_task: asyncio.Task | None = None
    history = {"attempts": 0, "successes": 0, "reasons": collections.Counter()}

    def start_checkpoint() -> None:
        nonlocal ckpt_task, since_ckpt
        if ckpt_task is not None and not ckpt_task.done():
            return  # one at a time; the next one is started when this finishes
        if store.n_dirty == 0:
            return
        since_ckpt = 0
        delta = store.take_delta()
        ckpt_task = asyncio.get_running_loop().create_task(asyncio.to_thread(store.write_delta, delta))

        def _done(task: asyncio.Task) -> None:
            if task.cancelled() or task.exception() is not None:
                store.mark_dirty(delta.rows)  # not durable: write these rows again next time
                return
            prog.n_checkpoints += 1
            if since_ckpt >= checkpoint_every:
                start_checkpoint()

        ckpt_task.add_done_callback(_done)

    async def record(o: Outcome, kind: str) -> None:
        nonlocal since_ckpt
        history["attempts"] += 1
        st = prog.by_kind[kind]
        if o.ok:
            store.record_success(o.index, o.spectrum, elapsed_s=o.elapsed_s, worker=o.worker,
                                 diagnostics=o.diagnostics)
            st.done += 1
            prog.n_done += 1
            history["successes"] += 1
            await queue.finish()
        else:
            store.record_failure(o.index, kind=o.fail_kind, reason=o.reason, elapsed_s=o.elapsed_s, worker=o.worker,
                                 diagnostics=o.diagnostics)
            st.failed_attempts += 1
            history["reasons"][o.fail_kind] += 1
            if store.attempts[o.index] < max_attempts:
                await queue.requeue(o.index)
            else:
                prog.n_failed += 1
                await queue.finish()
        since_ckpt += 1
        if since_ckpt >= checkpoint_every:
            start_checkpoint()

    async def worker(ex: Executor) -> None:
        while True:
            idx = await queue.get(ex.max_batch)
            if idx is None:
                return
            jobs = [Job(i, store.design[i], int(store.attempts[i]) + 1) for i in idx]
            t0 = time.monotonic()
            try:
                outcomes = await ex.run(jobs)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - an executor bug fails its batch, not the campaign
                dt = (time.monotonic() - t0) / len(jobs)
                outcomes = [Outcome.failure(j, "error", f"{type(exc).__name__}: {exc}"[:300], dt, ex.name)
                            for j in jobs]
            prog.by_kind[ex.kind].busy_s += time.monotonic() - t0
            for o in outcomes:
                await record(o, ex.kind)
            if on_progress is not None:
                on_progress(prog)
            if history["successes"] == 0 and history["attempts"] >= abort_after:
                kinds = ", ".join(f"{k} x{v}" for k, v in history["reasons"].most_common())
                raise CampaignAborted(
                    f"the first {history['attempts']} attempts all failed ({kinds}); last reason: "
                    f"{store.fail_reason[outcomes[-1].index]} -- check the binary, the reference directory "
                    "and the per-job logs; the store keeps every job for --resume")

    tasks = [asyncio.get_running_loop().create_task(worker(ex), name=ex.name) for ex in executors]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in done:
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for ex in executors:
            try:
                await ex.aclose()
            except Exception:  # noqa: BLE001
                pass
        while ckpt_task is not None and not ckpt_task.done():  # a finished one may have chained another
            await asyncio.gather(ckpt_task, return_exceptions=True)
        if ckpt_task is not None:
            if not ckpt_task.cancelled() and ckpt_task.exception() is not None:
                exc = ckpt_task.exception()
                warnings.warn(f"a checkpoint failed ({exc}); retrying once at exit", stacklevel=1)
        if store.n_dirty:
            await asyncio.to_thread(store.write_delta, store.take_delta())
            prog.n_checkpoints += 1
        if on_progress is not None:
            on_progress(prog)
    return prog
