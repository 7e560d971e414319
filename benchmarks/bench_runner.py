"""Runner benchmarks: scheduling overhead and synth-campaign efficiency.

1. Scheduling overhead: trivial jobs (an executor that returns a 16-value spectrum at once)
   pushed through :func:`runners.queue.run_queue` into a real store, with checkpoints every
   100 jobs and with checkpoints only at the end.  Goal >= 500 jobs/s.
2. Synth campaign throughput / raw throughput: the same design evaluated (a) by calling the
   batched forward function directly, batch after batch (raw vmapped throughput), and (b) as
   a campaign (queue + validation + store + checkpoints every 100 jobs).  Goal >= 90 %.
   Uses ``lumina_jax.synth.Synthesizer`` when importable, else the documented analytic
   stand-in :class:`runners.analytic.AnalyticSynth` (``--n-lines`` sets its cost).

3. ``--executor dask``: the same work on a local Dask cluster of ``--dask-workers`` (default 2)
   one-thread worker processes (:mod:`runners.cluster`) beside the in-process executor, in the
   same run, each after a warm-up campaign (workers started, JAX imported, jit compiled):

   * LUMINA-like jobs: the test suite's stand-in LUMINA binary (a real subprocess per job, per-job
     directories and logs) sleeping ``--lumina-sleep`` s (default 1) per job; in-process with as
     many CPU workers as the cluster has workers.  Goal: overhead <= 10 %;
   * synth: the analytic stand-in (``--dask-synth-factory``), in-process (one worker) vs one
     vmapped batch per Dask task;
   * scheduling overhead: trivial jobs (a 16-value spectrum at once) as one-job Dask tasks.

Run: ``PYTHONPATH=$PWD python benchmarks/bench_runner.py [--n-trivial 5000] [--n-synth 2048] [--repeat 3]
[--batch 256] [--n-lines 256] [--synth-workers 2] [--executor dask [--dask-workers 2] [--n-lumina 24]
[--lumina-sleep 1.0] [--n-dask-trivial 400]] [--json]``
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


# ---------------------------------------------------------------------------- --executor dask
class TrivialTask:
    """A worker-side task (runners.cluster protocol) whose executor returns at once."""

    def __init__(self, token: str):
        self.token, self.max_batch = token, 1

    def build(self, worker_name):
        return Trivial(worker_name)


def _campaign(path, space, design, wavelength, backend="synth", config=None):
    return CampaignStore.create(path, space=space, design=design, wavelength=wavelength, backend=backend, seed=0,
                                config=config or {}, max_attempts=3, prov=provenance(None))


async def _on_cluster(address, store, task, max_in_flight=None, **kw):
    from runners.cluster import ClusterSpec, connect, slots

    async with connect(ClusterSpec("scheduler", address=address)) as conn:
        return await run_queue(store, slots(conn, task, max_in_flight=max_in_flight), **kw)


def bench_dask(a, tmp: Path) -> dict:
    """In-process vs a local Dask cluster of ``a.dask_workers`` processes, same machine, same run."""
    import distributed

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "runners"))
    from runner_helpers import FAKE_LUMINA, write_tiny_reference

    from runners.backends.lumina import LuminaExecutor, LuminaSettings, check_reference
    from runners.backends.synth import make_forward
    from runners.cluster import LuminaTask, SynthTask, new_token

    space = load_space(1)
    nw = a.dask_workers
    binary = tmp / "fake_lumina"
    binary.write_text(FAKE_LUMINA.replace("{python}", sys.executable))
    binary.chmod(0o755)
    ref = check_reference(write_tiny_reference(tmp / "ref"), n_shells=space.ejecta.n_shells)
    settings = LuminaSettings(n_packets=1000, n_iters=6, spec_range=(500.0, 20000.0, 200))
    os.environ["FAKE_LUMINA_SLEEP"] = str(a.lumina_sleep)  # before the workers start: they inherit it
    out = {"workers": nw, "lumina_sleep_s": a.lumina_sleep}
    with distributed.LocalCluster(n_workers=nw, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        addr = cluster.scheduler_address

        def lumina_run(tag, n, dask):
            design = lhs_design(space, n, 7)
            store = _campaign(tmp / f"lum_{tag}.h5", space, design, settings.wavelength, "lumina")
            common = dict(ref=ref, space=space, settings=settings, work_root=tmp / f"work_{tag}",
                          log_dir=tmp / f"logs_{tag}", timeout_s=60.0, campaign_seed=0)
            if dask:
                task = LuminaTask(new_token(), binary, binary, ref, space, settings, common["work_root"],
                                  common["log_dir"], 60.0, 0, cpu_threads=1)
                prog = asyncio.run(_on_cluster(addr, store, task, checkpoint_every=100))
            else:
                exs = [LuminaExecutor(binary=binary, gpu=None, omp_threads=1, **common).named(f"cpu{k}")
                       for k in range(nw)]
                prog = asyncio.run(run_queue(store, exs, checkpoint_every=100))
            assert prog.n_done == n, prog
            return n / prog.elapsed_s

        lumina_run("warm_local", nw, False)
        lumina_run("warm_dask", 2 * nw, True)
        local, dask = [], []
        for r in range(a.repeat):
            local.append(lumina_run(f"local{r}", a.n_lumina, False))
            dask.append(lumina_run(f"dask{r}", a.n_lumina, True))
        ideal = nw / a.lumina_sleep
        out["lumina"] = {"n_jobs": a.n_lumina, "inprocess_jobs_per_s": max(local), "dask_jobs_per_s": max(dask),
                         "dask_over_inprocess": max(dask) / max(local), "sleep_bound_jobs_per_s": ideal,
                         "all_inprocess": local, "all_dask": dask}

        # synth: one process evaluating batches vs nw worker processes
        design = lhs_design(space, a.n_synth, 1)
        fn, wavelength, what = make_forward(space, a.dask_synth_factory)
        stask = SynthTask(new_token(), space, a.dask_synth_factory, None, a.batch)
        np.asarray(fn(design[:a.batch]))  # compile in-process
        warm = lhs_design(space, 2 * nw * a.batch, 2)  # every worker builds and compiles its synthesizer
        asyncio.run(_on_cluster(addr, _campaign(tmp / "swarm.h5", space, warm, wavelength), stask))
        sl, sd = [], []
        for r in range(a.repeat):
            st = _campaign(tmp / f"sl{r}.h5", space, design, wavelength)
            prog = asyncio.run(run_queue(st, [SynthExecutor(fn, wavelength, batch_size=a.batch)], checkpoint_every=100))
            sl.append(a.n_synth / prog.elapsed_s)
            st = _campaign(tmp / f"sd{r}.h5", space, design, wavelength)
            prog = asyncio.run(_on_cluster(addr, st, stask, checkpoint_every=100))
            sd.append(a.n_synth / prog.elapsed_s)
        out["synth"] = {"forward": what, "n_models": a.n_synth, "batch": a.batch,
                        "inprocess_models_per_s": max(sl), "dask_models_per_s": max(sd),
                        "dask_over_inprocess": max(sd) / max(sl), "all_inprocess": sl, "all_dask": sd}

        # scheduling: trivial one-job tasks
        tt = TrivialTask(new_token())
        asyncio.run(_on_cluster(addr, _campaign(tmp / "twarm.h5", space, lhs_design(space, 20, 3), np.arange(16.0) + 1),
                                tt))
        rates = []
        for r in range(a.repeat):
            st = _campaign(tmp / f"triv{r}.h5", space, lhs_design(space, a.n_dask_trivial, 3), np.arange(16.0) + 1)
            prog = asyncio.run(_on_cluster(addr, st, tt, checkpoint_every=100))
            rates.append(a.n_dask_trivial / prog.elapsed_s)
        out["trivial_jobs_per_s"] = max(rates)
        out["all_trivial_jobs_per_s"] = rates
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-trivial", type=int, default=5000)
    ap.add_argument("--n-synth", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth-workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--n-lines", type=int, default=256)
    ap.add_argument("--executor", choices=("inprocess", "dask"), default="inprocess",
                    help="dask: also compare a local Dask cluster with the in-process executor")
    ap.add_argument("--dask-workers", type=int, default=2)
    ap.add_argument("--n-lumina", type=int, default=24)
    ap.add_argument("--lumina-sleep", type=float, default=1.0)
    ap.add_argument("--n-dask-trivial", type=int, default=400)
    ap.add_argument("--dask-synth-factory", default="runners.analytic:AnalyticSynth")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    import jax

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res = {"device": str(jax.devices()[0]), "cpu_count": os.cpu_count()}
        if a.executor == "dask":
            res["dask"] = bench_dask(a, tmp)
        else:
            res.update({"trivial_jobs_per_s_ckpt100": bench_scheduling(a.n_trivial, tmp, 100),
                        "trivial_jobs_per_s_ckpt_at_end": bench_scheduling(a.n_trivial, tmp, 10**9),
                        "synth": bench_synth(a.n_synth, a.batch, a.n_lines, tmp, repeat=a.repeat,
                                             workers=a.synth_workers)})
    if a.json:
        print(json.dumps(res, indent=1))
        return
    if a.executor == "dask":
        k, lu, sy = res["dask"], res["dask"]["lumina"], res["dask"]["synth"]
        print(f"device {res['device']}, {res['cpu_count']} CPU cores; local Dask cluster of {k['workers']} worker "
              f"processes vs in-process (best of {a.repeat})")
        print(f"LUMINA-like jobs ({lu['n_jobs']} stand-in runs of {k['lumina_sleep_s']:g} s): in-process "
              f"{lu['inprocess_jobs_per_s']:.3f} jobs/s, dask {lu['dask_jobs_per_s']:.3f} jobs/s = "
              f"{lu['dask_over_inprocess']:.1%} (overhead {1 - lu['dask_over_inprocess']:.1%}, goal <= 10 %); "
              f"sleep bound {lu['sleep_bound_jobs_per_s']:.2f}/s")
        print(f"synth ({sy['forward']}, {sy['n_models']} models, batch {sy['batch']}): in-process "
              f"{sy['inprocess_models_per_s']:.0f} models/s, dask {sy['dask_models_per_s']:.0f} models/s = "
              f"{sy['dask_over_inprocess']:.0%}")
        print(f"scheduling: {k['trivial_jobs_per_s']:.0f} trivial one-job Dask tasks/s "
              f"(all {[round(x) for x in k['all_trivial_jobs_per_s']]})")
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
