"""Latin-hypercube designs and the dynamic asyncio work queue."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumina_jax.errors import ParameterError
from lumina_jax.params import load_space, relaxed_ranges
from runners.design import lhs_design
from runners.executors import Executor, Outcome
from runners.queue import CampaignAborted, run_queue
from runners.store import DONE, CampaignStore, load_training_set, provenance

SPACE1 = load_space(1)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_design_is_valid_in_bounds_and_reproducible(n, seed):
    d = lhs_design(SPACE1, n, seed)
    assert d.shape == (n, 15) and d.dtype == np.float64
    assert (d >= SPACE1.lower).all() and (d <= SPACE1.upper).all()
    assert SPACE1.valid_mask(d).all()
    np.testing.assert_array_equal(d, lhs_design(SPACE1, n, seed))


def test_design_is_latin_without_rejection_and_covers_relaxed_box():
    # a box where every point is valid: each of the n strata of every axis holds exactly one point
    box = relaxed_ranges({"v_inner": 9000.0, "v_break": 15000.0, "v_core": 10000.0, "v_wall": 16000.0}, SPACE1)
    d = lhs_design(box, 64, seed=5)
    u = box.to_unit(d)
    for j in range(box.dim):
        assert sorted(np.floor(u[:, j] * 64).astype(int)) == list(range(64))
    assert (d >= box.lower).all() and (d <= box.upper).all()
    assert not np.array_equal(d, lhs_design(box, 64, seed=6))
    with pytest.raises(ParameterError):
        lhs_design(SPACE1, 0, 1)


class FakeExecutor(Executor):
    """Returns a constant spectrum after ``delay`` s; fails the listed (index, attempt) pairs."""

    def __init__(self, name, kind, delay, batch=1, fail=()):
        self.name, self.kind, self.delay, self.max_batch, self.fail = name, kind, delay, batch, set(fail)
        self.seen = []

    async def run(self, jobs):
        await asyncio.sleep(self.delay)
        out = []
        for j in jobs:
            self.seen.append((j.index, j.attempt))
            if (j.index, j.attempt) in self.fail:
                out.append(Outcome.failure(j, "exit_code", "exit code 1", self.delay, self.name))
            else:
                out.append(Outcome(j.index, True, np.full(4, float(j.index) + 1), elapsed_s=self.delay,
                                   worker=self.name))
        return out


def _store(path, n):
    return CampaignStore.create(path, space=SPACE1, design=lhs_design(SPACE1, n, 0), wavelength=np.arange(4.0) + 1,
                                backend="synth", seed=0, config={}, max_attempts=2, prov=provenance(None))


def test_faster_workers_take_more_jobs_and_failures_are_retried(tmp_path):
    store = _store(tmp_path / "q.h5", 60)
    fail = {(3, 1), (4, 1), (4, 2)}  # job 3 succeeds on its retry, job 4 never does
    fast = FakeExecutor("fast", "gpu", 0.002, fail=fail)
    slow = FakeExecutor("slow", "cpu", 0.02, fail=fail)
    batch = FakeExecutor("b", "synth", 0.004, batch=8, fail=fail)
    prog = asyncio.run(run_queue(store, [fast, slow, batch], checkpoint_every=7, max_attempts=2))
    assert prog.n_done == 59 and prog.n_failed == 1
    ts = load_training_set(tmp_path / "q.h5")
    assert ts.ids.size == 59 and 4 not in ts.ids
    np.testing.assert_array_equal(ts.spectra[:, 0], ts.ids + 1.0)
    runs = [i for ex in (fast, slow, batch) for i, _ in ex.seen]
    assert sorted(set(runs)) == list(range(60))
    assert runs.count(3) == 2 and runs.count(4) == 2 and len(runs) == 62  # each job once, plus retries
    assert len(fast.seen) > 2 * len(slow.seen)  # dynamic balancing
    assert store.attempts[4] == 2 and store.fail_reason[4] == "exit code 1"
    assert prog.n_checkpoints >= 2 and store.status[3] == DONE


def test_all_first_attempts_failing_aborts_and_keeps_the_store_resumable(tmp_path):
    store = _store(tmp_path / "q.h5", 30)
    bad = FakeExecutor("bad", "cpu", 0.0, fail={(i, a) for i in range(30) for a in (1, 2)})
    with pytest.raises(CampaignAborted, match="first 5 attempts all failed"):
        asyncio.run(run_queue(store, [bad], abort_after=5, max_attempts=2))
    re = CampaignStore.open(tmp_path / "q.h5")
    assert (re.status != DONE).all() and re.todo().size >= 25
