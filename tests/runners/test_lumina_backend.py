"""The LUMINA backend against a stand-in executable: files, environment, failure classes, retries."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from lumina_jax.params import ATOMIC_NUMBERS
from runners.backends.lumina import LuminaExecutor, LuminaSettings, _jit_build_ejecta, check_reference, model_files
from runners.campaign import GenerateOptions, generate
from runners.design import lhs_design
from runners.executors import Job
from runners.store import DONE, FAILED, load_training_set, store_info
from runner_helpers import blackbody_lambda, write_modes

SMALL = LuminaSettings(n_packets=1000, n_iters=2, spec_range=(500.0, 20000.0, 200))


def _executor(tmp_path, fake_lumina, lumina_ref, space, *, gpu=None, threads=3, timeout=20.0, settings=SMALL):
    return LuminaExecutor(binary=fake_lumina, ref=check_reference(lumina_ref), space=space, settings=settings,
                          work_root=tmp_path / "work", log_dir=tmp_path / "logs", timeout_s=timeout,
                          campaign_seed=1, gpu=gpu, omp_threads=threads)


def test_model_files_follow_lumina_layout(lumina_ref, space1):

    theta = lhs_design(space1, 1, seed=3)[0]
    ej = _jit_build_ejecta()(theta, space1)
    files = model_files(ej, check_reference(lumina_ref), n_packets=10, n_iters=2, seed=5)
    assert set(files) == {"config.json", "geometry.csv", "density.csv", "abundances.csv",
                          "electron_densities.csv", "plasma_state.csv"}
    cfg = json.loads(files["config.json"])
    d = dict(zip(space1.names, theta))
    r_in = d["v_inner"] * 1e5 * d["t_exp"] * 86400
    # T_inner from L = 4 pi r^2 sigma T^4
    assert cfg["T_inner_K"] == pytest.approx((10 ** d["log_L"] / (4 * np.pi * 5.670374419e-5 * r_in**2)) ** 0.25)
    assert cfg["luminosity_inner_erg_s"] == pytest.approx(10 ** d["log_L"])
    assert cfg["time_explosion_s"] == pytest.approx(d["t_exp"] * 86400)
    geo = np.loadtxt(files["geometry.csv"].splitlines()[1:], delimiter=",")
    assert geo.shape == (30, 5)
    assert geo[0, 1] == pytest.approx(r_in) and geo[-1, 4] == pytest.approx(25000e5)
    np.testing.assert_allclose(geo[:, 1], geo[:, 3] * d["t_exp"] * 86400)  # r = v t
    ab_lines = files["abundances.csv"].splitlines()
    assert ab_lines[0] == "atomic_number," + ",".join(str(i) for i in range(30))
    ab = np.loadtxt(ab_lines[1:], delimiter=",")
    assert tuple(ab[:, 0].astype(int)) == ATOMIC_NUMBERS
    np.testing.assert_allclose(ab[:, 1:].sum(axis=0), 1.0, atol=1e-9)  # mass fractions sum to 1 per shell
    ne = np.loadtxt(files["electron_densities.csv"].splitlines()[1:], delimiter=",")
    rho = np.loadtxt(files["density.csv"].splitlines()[1:], delimiter=",")
    np.testing.assert_allclose(ne[:, 1], 2.0e10 * rho[:, 1] / 1.0e-13)  # scaled from the reference shell 0


def test_normal_job_spectrum_environment_and_cleanup(tmp_path, fake_lumina, lumina_ref, space1, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")  # must NOT reach the child
    monkeypatch.setenv("LUMINA_DYNAMIC_TRANSPROB", "0")  # inherited LUMINA_* must not reach it either
    theta = lhs_design(space1, 1, seed=0)[0]
    ex = _executor(tmp_path, fake_lumina, lumina_ref, space1, gpu=1, threads=2)
    (o,) = asyncio.run(ex.run([Job(7, theta, 1)]))
    assert o.ok, o.reason
    expected = blackbody_lambda(theta, space1.names, SMALL.wavelength)
    np.testing.assert_allclose(o.spectrum, expected, rtol=1e-6)  # erg/s/cm -> erg/s/Angstrom
    log = (tmp_path / "logs" / "job_000007_a1.log").read_text()
    assert "OMP_NUM_THREADS=2 CUDA_VISIBLE_DEVICES=1 LUMINA_SPEC_RANGE=500,20000,200 LUMINA_DYNAMIC_TRANSPROB=None" in log
    assert "1000 2 rotation" in log
    assert not (tmp_path / "work" / "job_000007_a1").exists()  # successful work dirs are removed
    cpu = _executor(tmp_path, fake_lumina, lumina_ref, space1, gpu=None, threads=5)
    (o,) = asyncio.run(cpu.run([Job(8, theta, 1)]))
    assert o.ok and "OMP_NUM_THREADS=5 CUDA_VISIBLE_DEVICES= " in (tmp_path / "logs" / "job_000008_a1.log").read_text()


@pytest.mark.parametrize("mode, kind, words", [
    ("crash", "signal", "SIGSEGV"),
    ("exit139", "signal", "139 = 128 + SIGSEGV"),
    ("nonzero", "exit_code", "exit code 3; last output: CUDA error: out of memory"),
    ("garbage", "invalid_output", "not numeric"),
    ("nan", "invalid_output", "non-finite"),
    ("badgrid", "invalid_output", "expected 200 rows"),
    ("nooutput", "missing_output", "no lumina_spectrum_rotation.csv"),
])
def test_failure_modes_are_classified(tmp_path, fake_lumina, lumina_ref, space1, monkeypatch, mode, kind, words):
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(write_modes(tmp_path / "modes.json", {3: mode})))
    theta = lhs_design(space1, 1, seed=0)[0]
    (o,) = asyncio.run(_executor(tmp_path, fake_lumina, lumina_ref, space1).run([Job(3, theta, 1)]))
    assert not o.ok and o.spectrum is None
    assert o.fail_kind == kind
    assert words in o.reason
    assert (tmp_path / "work" / "job_000003_a1").exists()  # failed work dirs are kept for diagnosis


def test_missing_reference_file_segfaults_and_is_classified(tmp_path, fake_lumina, lumina_ref, space1):
    ex = _executor(tmp_path, fake_lumina, lumina_ref, space1)
    ex.ref = ex.ref.__class__(ex.ref.path, tuple(f for f in ex.ref.files if f != "levels.csv"), None, None)
    (o,) = asyncio.run(ex.run([Job(0, lhs_design(space1, 1, seed=0)[0], 1)]))
    assert o.fail_kind == "signal" and "Cannot open levels.csv" in o.reason


def test_timeout_kills_the_whole_process_group(tmp_path, fake_lumina, lumina_ref, space1, monkeypatch):
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(write_modes(tmp_path / "modes.json", {4: "slow"})))
    ex = _executor(tmp_path, fake_lumina, lumina_ref, space1, timeout=1.5)
    t0 = time.monotonic()
    (o,) = asyncio.run(ex.run([Job(4, lhs_design(space1, 1, seed=0)[0], 1)]))
    assert o.fail_kind == "timeout" and time.monotonic() - t0 < 10
    child = int((tmp_path / "work" / "job_000004_a1" / "child.pid").read_text())
    for _ in range(50):  # the grandchild (same process group) is gone too
        if not Path(f"/proc/{child}").exists() or "Z" in Path(f"/proc/{child}/stat").read_text().split()[2]:
            break
        time.sleep(0.05)
    else:
        os.kill(child, 9)
        pytest.fail("the grandchild survived the timeout")


def test_campaign_retries_and_never_stores_failures(tmp_path, fake_lumina, lumina_ref, monkeypatch):
    modes = {0: "crash", 1: "nonzero", 2: "garbage", 3: "nooutput", 4: ["exit139", "normal"],
             5: ["nan", "nan", "normal"], 6: "slow"}
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(write_modes(tmp_path / "modes.json", modes)))
    out = tmp_path / "c.h5"
    store, prog = generate(GenerateOptions(
        stage=1, out=out, backend="lumina", n_models=12, seed=2, lumina_bin=fake_lumina, lumina_ref=lumina_ref,
        cpu_workers=2, cpu_threads=1, gpus=(0,), timeout_s=1.5, max_attempts=2, checkpoint_every=3,
        lumina_settings=SMALL))
    st = store_info(out)
    # 0,1,2,3,6 fail every attempt; 5 needs 3 attempts (max 2 here); 4 succeeds on its retry
    assert st["counts"] == {"pending": 0, "done": 6, "failed": 6}
    assert st["failure_kinds"] == {"invalid_output": 2, "signal": 1, "exit_code": 1, "missing_output": 1,
                                   "timeout": 1}
    ts = load_training_set(out, stage=1)
    assert ts.ids.tolist() == [4, 7, 8, 9, 10, 11]
    for i, row in zip(ts.ids, ts.spectra):
        np.testing.assert_allclose(row, blackbody_lambda(store.design[i], ts.space.names, SMALL.wavelength), rtol=1e-6)
    assert (store.status[[0, 1, 2, 3, 5, 6]] == FAILED).all() and (store.attempts[[0, 1, 2, 3, 5, 6]] == 2).all()
    assert np.isnan(store.spectra[[0, 1, 2, 3, 5, 6]]).all()
    assert store.fail_kind[6] == "timeout" and store.status[4] == DONE and store.attempts[4] == 2
    kinds = {st_ for st_ in store.worker[store.status == DONE]}
    assert kinds <= {"gpu0", "cpu0", "cpu1"} and len(kinds) >= 2  # both worker kinds pulled jobs
    # resume with a larger retry budget: only job 5 (nan, nan, normal) can now succeed; done jobs never rerun
    log = tmp_path / "joblog.txt"
    monkeypatch.setenv("FAKE_LUMINA_JOBLOG", str(log))
    store2, _ = generate(GenerateOptions(
        stage=1, out=out, backend="lumina", resume=True, lumina_bin=fake_lumina, lumina_ref=lumina_ref,
        cpu_workers=2, cpu_threads=1, timeout_s=1.5, max_attempts=3, checkpoint_every=3))
    assert log.read_text().split() == ["5"]
    assert store_info(out)["counts"] == {"pending": 0, "done": 7, "failed": 5}
    assert store2.attempts[5] == 3 and store2.status[5] == DONE
