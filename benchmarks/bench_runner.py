"""Runner benchmarks: scheduling overhead and synth-campaign efficiency.

1. Scheduling overhead: trivial jobs (an executor that returns a 16-value spectrum at once)
   pushed through :func:`runners.queue.run_queue` into a real store, with checkpoints every
   100 jobs and with checkpoints only at the end.  Goal >= 500 jobs/s.
2. Synth campaign throughput / raw throughput: the same design evaluated (a) by calling the
   batched forward function directly, batch after batch (raw vmapped throughput), and (b) as
   a campaign (queue + validation + store + checkpoints every 100 jobs).  Goal >= 90 %.
   Uses ``lumina_jax.synth.Synthesizer`` when importable, else the documented analytic
   stand-in :class:`runners.analytic.AnalyticSynth` (``--n-lines`` sets its cost).

Run: ``PYTHONPATH=$PWD python benchmarks/bench_runner.py [--n-trivial 5000] [--n-synth 2048] [--repeat 3]
[--batch 256] [--n-lines 256] [--synth-workers 2] [--json]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from lumina_jax.params import load_space  # noqa: E402
from runners.backends.synth import SynthExecutor  # noqa: E402
from runners.design import lhs_design  # noqa: E402
from runners.executors import Executor, Outcome  # noqa: E402
from runners.queue import run_queue  # noqa: E402
from runners.store import CampaignStore, provenance  # noqa: E402


class Trivial(Executor):
    kind, max_batch = "cpu", 1

    def __init__(self, name):
        self.name = name
        self.row = np.ones(16)

    async def run(self, jobs):
        return [Outcome(j.index, True, self.row, elapsed_s=0.0, worker=self.name) for j in jobs]


def _store(path, space, design, wavelength):
    return CampaignStore.create(path, space=space, design=design, wavelength=wavelength, backend="synth", seed=0,
                                config={}, max_attempts=3, prov=provenance(None))


def bench_scheduling(n: int, tmp: Path, checkpoint_every: int, n_workers: int = 4) -> float:
    space = load_space(1)
    design = lhs_design(space, n, 0)
    store = _store(tmp / f"trivial_{checkpoint_every}.h5", space, design, np.arange(16.0) + 1)
    t0 = time.perf_counter()
    prog = asyncio.run(run_queue(store, [Trivial(f"w{k}") for k in range(n_workers)],
                                 checkpoint_every=checkpoint_every))
    dt = time.perf_counter() - t0
    assert prog.n_done == n
    return n / dt


def make_forward(space, n_lines):
    try:
        from lumina_jax.synth import Synthesizer

        s = Synthesizer.default(space)
        return s.batch, np.asarray(s.wavelength), "lumina_jax.synth.Synthesizer.default"
    except ImportError:
        from runners.analytic import AnalyticSynth

        s = AnalyticSynth(space, n_lines=n_lines)
        return s.batch, s.wavelength, f"analytic stand-in (runners.analytic.AnalyticSynth, n_lines={n_lines})"


def bench_synth(n: int, batch: int, n_lines: int, tmp: Path, checkpoint_every: int = 100, repeat: int = 3,
                workers: int = 2) -> dict:
    """Best of ``repeat`` interleaved (raw, campaign) pairs: the machine may be shared, and the
    best time is the one least disturbed by other load."""
    space = load_space(1)
    design = lhs_design(space, n, 1)
    fn, wavelength, what = make_forward(space, n_lines)
    np.asarray(fn(design[:batch]))  # compile
    raws, camps, camps_all, ckpts = [], [], [], []
    for r in range(repeat):
        # raw: the forward function alone, same batches, blocking on each result
        t0 = time.perf_counter()
        for a in range(0, n, batch):
            x = design[a:a + batch]
            if x.shape[0] < batch:
                x = np.concatenate([x, np.repeat(x[:1], batch - x.shape[0], axis=0)])
            np.asarray(fn(x))
        raws.append(n / (time.perf_counter() - t0))
        # campaign: store creation (design written) + queue + validation + checkpoints
        path = tmp / f"synth{r}.h5"
        t0 = time.perf_counter()
        store = _store(path, space, design, wavelength)
        t1 = time.perf_counter()
        exs = [SynthExecutor(fn, wavelength, batch_size=batch, name=f"synth{k}") for k in range(workers)]
        prog = asyncio.run(run_queue(store, exs, checkpoint_every=checkpoint_every))
        t2 = time.perf_counter()
        assert prog.n_done == n, prog
        camps.append(n / (t2 - t1))
        camps_all.append(n / (t2 - t0))
        ckpts.append(prog.n_checkpoints)
        size = os.path.getsize(path) / 1e6
        path.unlink()
    raw, camp, camp_all = max(raws), max(camps), max(camps_all)
    return {"forward": what, "n_models": n, "batch": batch, "n_wave": int(wavelength.size), "repeat": repeat, "workers": workers,
            "raw_models_per_s": raw, "campaign_models_per_s": camp,
            "campaign_incl_store_creation_models_per_s": camp_all,
            "fraction": camp / raw, "fraction_incl_store_creation": camp_all / raw,
            "all_raw": raws, "all_campaign": camps, "checkpoints": ckpts[-1], "store_mb": size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trivial", type=int, default=5000)
    ap.add_argument("--n-synth", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth-workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-lines", type=int, default=256)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import jax

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count(),
               "trivial_jobs_per_s_ckpt100": bench_scheduling(a.n_trivial, tmp, 100),
               "trivial_jobs_per_s_ckpt_at_end": bench_scheduling(a.n_trivial, tmp, 10**9),
               "synth": bench_synth(a.n_synth, a.batch, a.n_lines, tmp, repeat=a.repeat, workers=a.synth_workers)}
    if a.json:
        print(json.dumps(res, indent=1))
        return
    s = res["synth"]
    print(f"device {res['device']}, {res['cpu_count']} CPU cores")
    print(f"scheduling: {res['trivial_jobs_per_s_ckpt100']:.0f} trivial jobs/s (checkpoint every 100), "
          f"{res['trivial_jobs_per_s_ckpt_at_end']:.0f} jobs/s (checkpoint at end)   goal >= 500/s")
    print(f"synth forward: {s['forward']}; {s['n_models']} models, batch {s['batch']}, {s['n_wave']} wavelengths, "
          f"{s['workers']} synth workers")
    print(f"  raw vmapped: {s['raw_models_per_s']:.1f} models/s; campaign: {s['campaign_models_per_s']:.1f} models/s "
          f"({s['checkpoints']} checkpoints, store {s['store_mb']:.0f} MB)")
    print(f"  (best of {s['repeat']}; all raw {[round(x, 1) for x in s['all_raw']]}, "
          f"all campaign {[round(x, 1) for x in s['all_campaign']]})")
    print(f"  campaign / raw = {s['fraction']:.1%} (goal >= 90 %); including store creation "
          f"{s['fraction_incl_store_creation']:.1%}")


if __name__ == "__main__":
    main()
