"""SIGKILL the runner in the middle of a LUMINA campaign, resume, and audit the store."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from lumina_jax.errors import DataFileError
from runners.store import DONE, load_training_set, store_info
from runner_helpers import blackbody_lambda

REPO = Path(__file__).resolve().parents[2]
N = 40


def _cli(args, env):
    return [sys.executable, "-m", "lumina_jax", *args], dict(env, PYTHONPATH=str(REPO))


def _joblog(path: Path) -> dict[str, list[int]]:
    out = collections.defaultdict(list)
    if path.exists():
        for line in path.read_text().splitlines():
            i, tag = line.split()
            out[tag].append(int(i))
    return out


def test_sigkill_mid_campaign_then_resume(tmp_path, fake_lumina, lumina_ref):
    out = tmp_path / "camp.h5"
    log = tmp_path / "joblog.txt"
    args = ["generate", "--stage", "1", "--n-models", str(N), "--backend", "lumina", "--out", str(out),
            "--lumina-bin", str(fake_lumina), "--lumina-ref", str(lumina_ref), "--cpu-workers", "3",
            "--cpu-threads", "1", "--checkpoint-every", "4", "--spec-range", "500,20000,200", "--quiet",
            "--seed", "11"]
    env = dict(os.environ, FAKE_LUMINA_SLEEP="0.1", FAKE_LUMINA_JOBLOG=str(log), FAKE_LUMINA_TAG="run1")
    cmd, env = _cli(args, env)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        n_seen = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # the checkpoint file is readable at any moment while the runner writes
                n_seen = load_training_set(out).ids.size
            except DataFileError:
                n_seen = 0  # not created yet
            if n_seen >= 12:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stdout.read().decode()
        assert n_seen >= 12, "campaign did not progress"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    time.sleep(0.3)

    # --- state after the crash: a valid file, only whole rows
    first = load_training_set(out, stage=1)
    done_at_kill = set(first.ids.tolist())
    assert 12 <= len(done_at_kill) < N
    for i, row in zip(first.ids, first.spectra):
        np.testing.assert_allclose(row, blackbody_lambda(first.theta[list(first.ids).index(i)], first.space.names,
                                                         first.wavelength), rtol=1e-6)
    run1 = _joblog(log)["run1"]
    assert done_at_kill <= set(run1)

    # --- resume
    env2 = dict(env, FAKE_LUMINA_TAG="run2")
    res = subprocess.run(_cli(["generate", "--stage", "1", "--backend", "lumina", "--out", str(out), "--resume",
                               "--lumina-bin", str(fake_lumina), "--lumina-ref", str(lumina_ref),
                               "--cpu-workers", "3", "--cpu-threads", "1", "--checkpoint-every", "4", "--quiet",
                               "--json"], env2)[0], env=env2, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    run2 = _joblog(log)["run2"]
    assert not (set(run2) & done_at_kill), "a job finished before the checkpoint ran again"
    assert len(run2) == len(set(run2)), "a job ran twice during the resumed run"
    assert set(run2) == set(range(N)) - done_at_kill

    final = load_training_set(out, stage=1)
    assert sorted(final.ids.tolist()) == list(range(N))
    assert store_info(out)["counts"] == {"pending": 0, "done": N, "failed": 0}
    assert np.all(np.isfinite(final.spectra)) and np.all(final.spectra > 0)
    for k, i in enumerate(final.ids):
        np.testing.assert_allclose(final.spectra[k], blackbody_lambda(final.theta[k], final.space.names,
                                                                      final.wavelength), rtol=1e-6)
    # the design never changed: rows done before the kill hold the same theta and spectrum
    for k, i in enumerate(first.ids):
        j = int(np.nonzero(final.ids == i)[0][0])
        np.testing.assert_array_equal(final.theta[j], first.theta[k])
        np.testing.assert_array_equal(final.spectra[j], first.spectra[k])
    assert not Path(str(out) + ".tmp").exists()
    assert (final.ids.size == N) and (DONE == 1)
