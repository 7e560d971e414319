"""Campaigns through ``--executor dask`` on a LocalCluster of worker processes: the same store as
in-process, nothing lost or run twice when a worker dies or retires, SIGKILL + --resume."""

from __future__ import annotations

import collections
import dataclasses
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lumina_jax.errors import DataFileError, UserError
from runners.backends.lumina import LuminaSettings
from runners.campaign import GenerateOptions, generate
from runners.store import DONE, CampaignStore, load_training_set, store_info
from runner_helpers import blackbody_lambda, write_modes

distributed = pytest.importorskip("distributed")

REPO = Path(__file__).resolve().parents[2]
SMALL = LuminaSettings(n_packets=1000, n_iters=6, spec_range=(500.0, 20000.0, 200))
STANDIN = "runners.analytic:AnalyticSynth"


@pytest.fixture(scope="module")
def cluster():
    """Two one-thread worker processes (with nannies, as a real cluster has)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c:
        yield c


def _same_store(a: Path, b: Path, *, spectra_equal: bool = True) -> None:
    sa, sb = CampaignStore.open(a), CampaignStore.open(b)
    np.testing.assert_array_equal(sa.design, sb.design)
    np.testing.assert_array_equal(sa.status, sb.status)
    np.testing.assert_array_equal(sa.attempts, sb.attempts)
    np.testing.assert_array_equal(sa.fail_kind, sb.fail_kind)
    np.testing.assert_array_equal(sa.diagnostics["mc_seed"], sb.diagnostics["mc_seed"])
    if spectra_equal:
        np.testing.assert_array_equal(sa.spectra, sb.spectra)


def test_synth_campaign_through_dask_gives_the_inprocess_store(tmp_path, cluster):
    common = dict(stage=1, backend="synth", n_models=70, seed=3, batch_size=16, synth_factory=STANDIN,
                  checkpoint_every=20)
    generate(GenerateOptions(out=tmp_path / "local.h5", **common))
    _, prog = generate(GenerateOptions(out=tmp_path / "dask.h5", executor="dask", scheduler=cluster.scheduler_address,
                                       **common))
    assert prog.n_done == 70 and prog.by_kind["dask"].done == 70
    _same_store(tmp_path / "local.h5", tmp_path / "dask.h5")
    workers = set(CampaignStore.open(tmp_path / "dask.h5").worker.tolist())
    names = {str(w["name"]) for w in cluster.scheduler_info["workers"].values()}
    assert workers <= names, (workers, names)


def test_lumina_campaign_through_dask_gives_the_inprocess_store(tmp_path, cluster, fake_lumina, lumina_ref):
    # job 2 crashes on every attempt, job 4 fails once then succeeds, job 6 writes no output once;
    # the workers were started before this test: the modes reach the stand-in through the settings
    modes = write_modes(tmp_path / "modes.json", {2: "crash", 4: ["nonzero", "normal"], 6: ["nooutput", "normal"]})
    settings = dataclasses.replace(SMALL, extra_env=(("FAKE_LUMINA_MODES", str(modes)),))
    common = dict(stage=1, backend="lumina", n_models=10, seed=5, lumina_bin=fake_lumina, lumina_ref=lumina_ref,
                  cpu_threads=1, max_attempts=2, checkpoint_every=3, lumina_settings=settings)
    generate(GenerateOptions(out=tmp_path / "local.h5", cpu_workers=2, **common))
    _, prog = generate(GenerateOptions(out=tmp_path / "dask.h5", executor="dask", scheduler=cluster.scheduler_address,
                                       work_dir=tmp_path / "dwork", **common))
    _same_store(tmp_path / "local.h5", tmp_path / "dask.h5")
    st = store_info(tmp_path / "dask.h5")
    assert st["counts"] == {"pending": 0, "done": 9, "failed": 1} and st["failure_kinds"] == {"signal": 1}
    ts = load_training_set(tmp_path / "dask.h5")
    for k in range(ts.ids.size):
        np.testing.assert_allclose(ts.spectra[k], blackbody_lambda(ts.theta[k], ts.space.names, ts.wavelength),
                                   rtol=1e-6)
    # per-job logs and kept failed working directories, as in-process
    logs = sorted(p.name for p in (tmp_path / "dask.logs").iterdir())
    assert "job_000002_a2.log" in logs and "job_000004_a1.log" in logs and len(logs) == 13
    assert sorted(p.name for p in (tmp_path / "dwork").iterdir()) == ["job_000002_a1", "job_000002_a2",
                                                                       "job_000004_a1", "job_000006_a1"]


def _lines(path: Path) -> list[list[str]]:
    return [ln.split() for ln in path.read_text().splitlines()] if path.exists() else []


def _worker_of(log_dir: Path, index: int, attempt: int) -> str:
    """The worker named in the log of the latest run of the attempt (``_r<k>``: a rerun of a lost one)."""
    name = f"job_{index:06d}_a{attempt}"
    runs = [int(m.group(1) or 1) for p in log_dir.iterdir() if (m := re.fullmatch(rf"{name}(?:_r(\d+))?\.log", p.name))]
    latest = f"{name}_r{max(runs)}" if max(runs) > 1 else name
    head = (log_dir / f"{latest}.log").read_text().splitlines()[0]
    return head.split(" worker ")[1].split()[0]


def test_lost_and_retired_workers_lose_nothing_and_run_nothing_twice(tmp_path, fake_lumina, lumina_ref, monkeypatch):
    """A worker SIGKILLed in the middle of a job (its nanny restarts it) and one retired gracefully: their
    jobs run elsewhere with the same attempt; no attempt is counted against a model, no job completes twice."""
    n = 12
    joblog, seedlog = tmp_path / "joblog.txt", tmp_path / "seeds.txt"
    monkeypatch.setenv("FAKE_LUMINA_SLEEP", "0.6")
    monkeypatch.setenv("FAKE_LUMINA_JOBLOG", str(joblog))
    monkeypatch.setenv("FAKE_LUMINA_SEEDLOG", str(seedlog))
    out = tmp_path / "camp.h5"
    events = []
    with distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as c, distributed.Client(c) as client:

        def by_name(name):
            return next(a for a, w in client.scheduler_info()["workers"].items() if str(w["name"]) == name)

        def disturb():
            try:
                deadline = time.monotonic() + 300  # a cap: a loaded machine starts slowly
                while len(_lines(seedlog)) < 4 and time.monotonic() < deadline:
                    time.sleep(0.02)
                i, a, _ = map(int, _lines(seedlog)[-1])  # just started: sleeping for 0.6 s
                victim = _worker_of(tmp_path / "camp.logs", i, a)
                # SIGKILL (no cleanup runs: its LUMINA run must die by itself); its nanny starts a new one
                (pid,) = client.run(os.getpid, workers=[by_name(victim)]).values()
                os.kill(pid, signal.SIGKILL)
                events.append(("killed", i, victim))
                while len(_lines(joblog)) < 6 and time.monotonic() < deadline:
                    time.sleep(0.02)
                # at most 6 done and one per worker running: more start, and the latest run may be
                # about to finish, so retire the worker of the next one to start
                started = len(_lines(seedlog))
                while len(_lines(seedlog)) == started and time.monotonic() < deadline:
                    time.sleep(0.02)
                i, a, _ = map(int, _lines(seedlog)[-1])  # just started: sleeping for 0.6 s
                victim = _worker_of(tmp_path / "camp.logs", i, a)
                client.retire_workers([by_name(victim)], close_workers=True)
                events.append(("retired", i, victim))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                events.append(("error", repr(exc)))

        t = threading.Thread(target=disturb)
        t.start()
        generate(GenerateOptions(stage=1, backend="lumina", n_models=n, seed=9, out=out, lumina_bin=fake_lumina,
                                 lumina_ref=lumina_ref, cpu_threads=1, checkpoint_every=2, lumina_settings=SMALL,
                                 executor="dask", scheduler=c.scheduler_address))
        t.join()
    assert [e[0] for e in events] == ["killed", "retired"], events
    st = CampaignStore.open(out)
    assert (st.status == DONE).all() and (st.attempts == 1).all(), st.attempts
    completed = collections.Counter(int(x[0]) for x in _lines(joblog))
    assert sorted(completed) == list(range(n)) and max(completed.values()) == 1, completed
    # every run of a lost worker had a directory and log of its own; all directories are gone
    assert not list((tmp_path / "camp.work").iterdir())
    started = collections.Counter(int(x[0]) for x in _lines(seedlog))
    # the killed worker's job was started again, elsewhere (a third time when the retired worker
    # happened to hold its rerun: lost again, still not counted against the model)
    assert started[events[0][1]] >= 2
    ts = load_training_set(out)
    for k in range(n):
        np.testing.assert_allclose(ts.spectra[k], blackbody_lambda(ts.theta[k], ts.space.names, ts.wavelength),
                                   rtol=1e-6)


def test_client_sigkill_then_resume_on_a_local_cluster(tmp_path, fake_lumina, lumina_ref):
    n = 16
    out, log = tmp_path / "camp.h5", tmp_path / "joblog.txt"
    base = ["generate", "--stage", "1", "--backend", "lumina", "--out", str(out), "--lumina-bin", str(fake_lumina),
            "--lumina-ref", str(lumina_ref), "--cpu-threads", "1", "--checkpoint-every", "2", "--quiet",
            "--executor", "dask", "--cluster", "local:2"]
    env = dict(os.environ, FAKE_LUMINA_SLEEP="0.2", FAKE_LUMINA_JOBLOG=str(log), FAKE_LUMINA_TAG="run1",
               PYTHONPATH=str(REPO))
    console = open(tmp_path / "console.txt", "wb")  # a file, not a pipe: Dask may say a lot on a loaded machine
    proc = subprocess.Popen([sys.executable, "-m", "lumina_jax", *base, "--n-models", str(n), "--seed", "4",
                             "--spec-range", "500,20000,200"], env=env, stdout=console, stderr=subprocess.STDOUT)
    try:
        deadline, seen = time.monotonic() + 300, 0  # a cap: a loaded machine starts slowly
        while time.monotonic() < deadline and proc.poll() is None and seen < 4:
            try:
                seen = load_training_set(out).ids.size
            except DataFileError:
                seen = 0
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "console.txt").read_text()[-3000:]
        assert seen >= 4, "campaign did not progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        console.close()
    time.sleep(0.8)  # the workers notice that their client died and exit, with their LUMINA runs
    n_after_kill = len(_lines(log))
    time.sleep(1.0)
    assert len(_lines(log)) == n_after_kill, "a worker kept running jobs after the client was killed"
    done_at_kill = set(load_training_set(out).ids.tolist())
    assert 4 <= len(done_at_kill) < n

    env2 = dict(env, FAKE_LUMINA_TAG="run2")
    res = subprocess.run([sys.executable, "-m", "lumina_jax", *base, "--resume", "--json"], env=env2,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    run2 = [int(i) for i, tag in _lines(log) if tag == "run2"]
    assert not set(run2) & done_at_kill and len(run2) == len(set(run2))
    assert set(run2) == set(range(n)) - done_at_kill
    assert store_info(out)["counts"] == {"pending": 0, "done": n, "failed": 0}


def test_cluster_options_are_checked_before_anything_is_written(tmp_path, monkeypatch):
    out = tmp_path / "x.h5"
    base = dict(stage=1, backend="synth", n_models=4, out=out, synth_factory=STANDIN)
    cases = [
        (dict(executor="dask"), "--scheduler ADDRESS or --cluster"),
        (dict(scheduler="tcp://h:1"), "need --executor dask"),
        (dict(executor="dask", cluster="local:0"), "N >= 1"),
        (dict(executor="dask", cluster="local:x"), "whole number"),
        (dict(executor="dask", cluster="sge"), "local, local:N, slurm or pbs"),
        (dict(executor="dask", cluster="slurm"), "--cluster-config"),
        (dict(executor="dask", scheduler="tcp://h:1", cluster="local"), "not both"),
        (dict(executor="dask", scheduler="nohostport"), "scheduler address"),
        (dict(executor="dask", cluster="local", max_in_flight=0), "--max-in-flight"),
        (dict(executor="ray"), "unknown executor"),
    ]
    for extra, words in cases:
        with pytest.raises(UserError, match=words.replace("[", r"\[").replace("(", r"\(")):
            generate(GenerateOptions(**base, **extra))
    bad = tmp_path / "c.yaml"
    for text, words in (("jobs: 0\ncluster: {cores: 4}\n", "'jobs'"), ("queue: gpu\n", "unknown key"),
                        ("jobs: 2\nadapt: {maximum_jobs: 4}\n", "not both"), ("cluster: {cores: 4}\n", "give 'jobs")):
        bad.write_text(text)
        with pytest.raises(UserError, match=words):
            generate(GenerateOptions(**base, executor="dask", cluster="slurm", cluster_config=bad))
    assert not out.exists()
    # Dask missing: one line naming the extra
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(UserError, match=r"pip install -e \.\[cluster\]"):
        generate(GenerateOptions(**base, executor="dask", cluster="local:2"))
    assert not out.exists()


def test_slurm_config_builds_the_batch_job_it_describes(tmp_path):
    """A --cluster-config of docs/campaigns.md's form: validated, and SLURMCluster writes its job
    script (no batch job is submitted)."""
    pytest.importorskip("dask_jobqueue")
    from runners.cluster import jobqueue_threads, parse_cluster

    cfg = tmp_path / "slurm.yaml"
    cfg.write_text("jobs: 3\nresources: {GPU: 1}\ncluster:\n  queue: gpu\n  account: proj\n  walltime: '01:00:00'\n"
                   "  cores: 2\n  processes: 1\n  memory: 8GB\n  job_extra_directives: ['--gres=gpu:1']\n"
                   "  job_script_prologue: ['source /venv/bin/activate']\n")
    spec = parse_cluster(None, "slurm", cfg)
    assert spec.kind == "slurm" and spec.resources == {"GPU": 1} and jobqueue_threads(spec) == 6
    import dask_jobqueue

    with dask_jobqueue.SLURMCluster(**spec.config["cluster"], scheduler_options={"dashboard_address": None}) as c:
        script = c.job_script()
    for line in ("#SBATCH -p gpu", "#SBATCH -A proj", "#SBATCH --gres=gpu:1", "#SBATCH -t 01:00:00",
                 "source /venv/bin/activate", "--nthreads 2"):
        assert line in script, (line, script)


def test_fan_out_runs_one_command_per_worker_thread_and_names_failed_shards(tmp_path):
    """The mechanism of `check coverage --cluster`: command k of m on a worker, failures reported."""
    from runners.cluster import fan_out, parse_cluster

    def argv(k, m):
        folder = tmp_path if k == 0 else tmp_path / "missing"
        return ["generate", "--stage", "1", "--n-models", "3", "--backend", "synth", "--synth-factory", STANDIN,
                "--batch-size", "4", "--seed", str(k), "--out", str(folder / f"s{k}of{m}.h5"), "--quiet"]

    with pytest.raises(UserError, match=r"shard 1/2 exit 2: error: --out: directory .*missing does not exist"):
        fan_out(parse_cluster(None, "local:2"), argv)
    assert store_info(tmp_path / "s0of2.h5")["counts"]["done"] == 3
