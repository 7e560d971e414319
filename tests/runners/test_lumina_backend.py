"""The LUMINA backend against a stand-in executable: files, environment, failure classes, retries,
seeds, stdout figures, the physical validity of a spectrum and the pre-run reference check."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from lumina_jax.errors import UserError
from lumina_jax.params import ATOMIC_NUMBERS
from runners.backends import lumina
from runners.backends.lumina import (SEED_LIMIT, LuminaExecutor, LuminaSettings, StdoutFigures, _jit_build_ejecta,
                                     check_reference, die_with_parent, job_seed, judge_spectrum, model_files,
                                     parse_stdout)
from runners.campaign import GenerateOptions, generate
from runners.design import lhs_design
from runners.executors import Job, validate_spectrum
from runners.store import DONE, FAILED, load_training_set, store_info
from runner_helpers import blackbody_lambda, write_modes

REPO = Path(__file__).resolve().parents[2]
SMALL = LuminaSettings(n_packets=1000, n_iters=6, spec_range=(500.0, 20000.0, 200))
FEW = dataclasses.replace(SMALL, n_iters=2)  # T_inner never updated


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
    assert "1000 6 rotation" in log
    assert not (tmp_path / "work" / "job_000007_a1").exists()  # successful work dirs are removed
    cpu = _executor(tmp_path, fake_lumina, lumina_ref, space1, gpu=None, threads=5)
    (o,) = asyncio.run(cpu.run([Job(8, theta, 1)]))
    assert o.ok and "OMP_NUM_THREADS=5 CUDA_VISIBLE_DEVICES= " in (tmp_path / "logs" / "job_000008_a1.log").read_text()


@pytest.mark.parametrize("mode, kind, words", [
    ("crash", "signal", "SIGSEGV"),
    ("exit139", "signal", "139 = 128 + SIGSEGV"),
    ("crash", "signal", "killed by SIGSEGV; output: ERROR: Column 'rho' not found"),
    ("nonzero", "exit_code", "exit code 3; output: ERROR: CUDA error: out of memory (lumina_cuda.cu:1923)"),
    ("garbage", "invalid_output", "not numeric"),
    ("nan", "invalid_output", "non-finite"),
    ("badgrid", "invalid_output", "expected 200 rows"),
    ("nooutput", "missing_output", "no lumina_spectrum_rotation.csv was written; last output: done"),
    ("dim", "invalid_output", "spectrum luminosity / requested (blackbody share of the grid"),
    ("noescape", "invalid_output", "escape fraction 0.50% (stdout) is below 5%"),
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
    assert o.fail_kind == "signal" and "output: ERROR: Cannot open levels.csv" in o.reason


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


LINUX_PDEATHSIG = pytest.mark.skipif(not sys.platform.startswith("linux") or shutil.which("setpriv") is None,
                                     reason="the parent-death signal needs Linux and util-linux setpriv")
PARENT = """
import asyncio, sys
from runners.backends.lumina import start_guarded

async def main():
    proc = await start_guarded([sys.executable, "-c", "import time; time.sleep(120)"])
    print(proc.pid, flush=True)
    await proc.wait()

asyncio.run(main())
"""


def _gone(pid: int) -> bool:
    """No such process, or a zombie (dead, not yet reaped by whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@LINUX_PDEATHSIG
def test_a_sigkilled_runner_takes_its_lumina_run_along(tmp_path):
    """The runner's launch code (also that of a Dask worker): SIGKILL the launching process, which
    runs no cleanup, and its child must not live on."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO)))
    child = None
    try:
        child = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while "time.sleep(120)" not in _cmdline(child) and time.monotonic() < deadline:
            time.sleep(0.02)  # through setpriv and the parent check, into the binary
        assert "time.sleep(120)" in _cmdline(child) and not _gone(child)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 3
        while not _gone(child) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _gone(child), "the child outlived its SIGKILLed parent"
    finally:
        parent.kill()
        if child is not None and not _gone(child):
            os.kill(child, signal.SIGKILL)


@LINUX_PDEATHSIG
def test_a_run_whose_launcher_died_before_the_signal_was_set_gives_up(tmp_path):
    """The parent check after prctl: a child whose parent is no longer the launcher never runs."""
    marker = tmp_path / "ran"
    res = subprocess.run(die_with_parent(["touch", str(marker)], parent_pid=1), timeout=30)
    assert res.returncode == 137 and not marker.exists()
    assert subprocess.run(die_with_parent(["touch", str(marker)]), timeout=30).returncode == 0 and marker.exists()


def test_runs_starting_while_the_worker_closes_are_killed(tmp_path, fake_lumina, lumina_ref, space1, monkeypatch):
    """After kill_running (a Dask worker closing) no run starts, and one that was forking is killed."""
    monkeypatch.setattr(lumina, "STOPPING", threading.Event())
    monkeypatch.setattr(lumina, "RUNNING_GROUPS", set())
    seedlog = tmp_path / "seeds.txt"
    monkeypatch.setenv("FAKE_LUMINA_SEEDLOG", str(seedlog))
    lumina.kill_running()
    (o,) = asyncio.run(_executor(tmp_path, fake_lumina, lumina_ref, space1).run([Job(2, space1.lower, 1)]))
    assert not o.ok and "closing" in o.reason and not seedlog.exists()

    async def late_start():
        proc = await lumina.start_guarded([sys.executable, "-c", "import time; time.sleep(120)"])
        return await asyncio.wait_for(proc.wait(), timeout=10)

    assert asyncio.run(late_start()) == -signal.SIGKILL


def test_a_later_run_of_an_attempt_gets_its_own_directory_and_log(tmp_path, fake_lumina, lumina_ref, space1):
    """A lost run of the attempt (its worker died) left its log and working directory: the new run
    writes beside them, and its success removes both working directories; logs stay."""
    ex = _executor(tmp_path, fake_lumina, lumina_ref, space1)
    (tmp_path / "work" / "job_000005_a1" / "model").mkdir(parents=True)
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "job_000005_a1.log").write_text("# lost run\n")
    theta = lhs_design(space1, 1, seed=0)[0]
    (o,) = asyncio.run(ex.run([Job(5, theta, 1)]))
    assert o.ok, o.reason
    assert (tmp_path / "logs" / "job_000005_a1.log").read_text() == "# lost run\n"
    assert "job_000005_a1_r2/model" in (tmp_path / "logs" / "job_000005_a1_r2.log").read_text()
    assert not (tmp_path / "work" / "job_000005_a1").exists()
    assert not (tmp_path / "work" / "job_000005_a1_r2").exists()


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


# ------------------------------------------------------------------ reference check
def _options(tmp_path, fake_lumina, ref, **kw):
    base = dict(stage=1, out=tmp_path / "c.h5", backend="lumina", n_models=3, seed=2, lumina_bin=fake_lumina,
                lumina_ref=ref, cpu_workers=1, cpu_threads=1, timeout_s=20.0, lumina_settings=SMALL)
    base.update(kw)
    return GenerateOptions(**base)


def test_broken_reference_stops_the_campaign_before_any_job(tmp_path, fake_lumina, lumina_ref, monkeypatch):
    seedlog = tmp_path / "seeds.txt"
    monkeypatch.setenv("FAKE_LUMINA_SEEDLOG", str(seedlog))
    (lumina_ref / "levels.csv").unlink()
    tau = np.load(lumina_ref / "tau_sobolev.npy")
    np.save(lumina_ref / "tau_sobolev.npy", tau.astype(np.float32))  # LUMINA reads float32 as garbage
    with pytest.raises(UserError) as err:
        generate(_options(tmp_path, fake_lumina, lumina_ref))
    msg = str(err.value)
    assert "is not usable (2 problems)" in msg and "\n" not in msg
    assert "levels.csv: missing file" in msg and "tau_sobolev.npy: dtype <f4" in msg
    assert not seedlog.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bin", "ref"]  # nothing ran
    # many problems: the first five are named, the rest counted
    for name in ("line_list.csv", "atom_masses.csv", "ionization_energies.csv", "zeta_temps.csv", "density.csv",
                 "macro_atom_data.csv"):
        (lumina_ref / name).unlink()
    with pytest.raises(UserError) as err:
        generate(_options(tmp_path, fake_lumina, lumina_ref))
    m = re.search(r"is not usable \((\d+) problems\): (?:[^;]+; ){5}and (\d+) more$", str(err.value))
    assert m and int(m.group(1)) >= 8 and int(m.group(2)) == int(m.group(1)) - 5, str(err.value)


def test_reference_of_another_shell_count_or_element_set_is_refused(tmp_path, lumina_ref):
    from runner_helpers import write_tiny_reference

    eight = write_tiny_reference(tmp_path / "ref8", elements=(6, 8, 14, 16, 20, 26, 27, 28))
    with pytest.raises(UserError, match=r"element set .*\(missing \[12, 22, 24\]"):
        check_reference(eight, n_shells=30, elements=ATOMIC_NUMBERS)
    twenty = write_tiny_reference(tmp_path / "ref20", n_shells=20)
    with pytest.raises(UserError, match="geometry.csv: 20 shells, expected 30"):
        check_reference(twenty, n_shells=30, elements=ATOMIC_NUMBERS)
    assert check_reference(lumina_ref, n_shells=30, elements=ATOMIC_NUMBERS).path == lumina_ref.resolve()


# ---------------------------------------------------------------------------- seeds
def test_job_seeds_are_deterministic_distinct_per_attempt_and_never_overlap():
    n_packets, n_iters = 200_000, 10
    assert job_seed(3, 17, 1) == job_seed(3, 17, 1)
    seeds = {(c, i, a): job_seed(c, i, a) for c in (0, 1) for i in range(3000) for a in (1, 2, 3)}
    values = np.array(sorted(seeds.values()), dtype=np.uint64)
    assert len(set(seeds.values())) == len(seeds)  # per job, per attempt, per campaign seed
    assert values.min() >= 0 and int(values.max()) < SEED_LIMIT
    # LUMINA's GPU build seeds packet p of iteration k with seed + 1e6 k + p; the CPU build seed + 1000 k + thread:
    # the ranges [seed, seed + 1e6 n_iters + n_packets) of all attempts of all jobs are disjoint
    span = int(1e6) * n_iters + n_packets
    assert (np.diff(values.astype(object)) >= span).all()
    # head-room: the largest packet seed of 1000 iterations still fits C's signed 64-bit long (atol)
    assert SEED_LIMIT + int(1e6) * 1000 + 2**31 < 2**63
    # the consecutive-index rule this replaces shared 96 % of the packet streams of neighbouring jobs
    assert job_seed(0, 1, 1) - job_seed(0, 0, 1) != 7919


def test_retry_uses_a_new_seed_and_the_store_keeps_the_seed_used(tmp_path, fake_lumina, lumina_ref, monkeypatch):
    seedlog = tmp_path / "seeds.txt"
    monkeypatch.setenv("FAKE_LUMINA_SEEDLOG", str(seedlog))
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(write_modes(tmp_path / "modes.json", {1: ["exit139", "normal"]})))
    store, _ = generate(_options(tmp_path, fake_lumina, lumina_ref, max_attempts=2, seed=9))
    ran = [tuple(map(int, line.split())) for line in seedlog.read_text().splitlines()]
    assert sorted((i, a) for i, a, _ in ran) == [(0, 1), (1, 1), (1, 2), (2, 1)]
    for i, a, seed in ran:  # the binary read the hashed seed of its attempt from config.json
        assert seed == job_seed(9, i, a)
    assert store.diagnostics["mc_seed"].tolist() == [job_seed(9, 0, 1), job_seed(9, 1, 2), job_seed(9, 2, 1)]
    log = (tmp_path / "c.logs" / "job_000001_a2.log").read_text()
    assert f"seed {job_seed(9, 1, 2)}" in log.splitlines()[0]


# --------------------------------------------------------------------- stdout figures
REAL_STDOUT = (  # LUMINA-SN 835c64e (CPU build), a 2000-packet run: the last two iterations, verbatim
    "--- Iteration 4/5 ---\n"
    "  Packets: ~200/2000\r  Packets: ~2000/2000\r  Packets: 2000/2000 done. Escaped: 1577 (78.85%), "
    "Reabsorbed: 423 (21.15%)\n"
    "  [Plasma] Computing tau_sobolev...\n"
    "    Shell 0: tau_min=5.40e-01, tau_max=7.59e+07, lines with tau>1: 15/22\n"
    "  Shell  W_LUMINA   T_rad_LUM  nubar/j\n"
    "    0    0.571871   9762.85 K   7.8593e+14\n"
    "  T_inner: 10000.00 K -> 9039.45 K (L_em=1.532e+43, L_req=1.000e+43)\n"
    "\n--- Iteration 5/5 ---\n"
    "  Packets: ~200/2000\r  Packets: ~2000/2000\r  Packets: 2000/2000 done. Escaped: 1587 (79.35%), "
    "Reabsorbed: 413 (20.65%)\n"
    "  Shell  W_LUMINA   T_rad_LUM  nubar/j\n"
    "    0    0.549644   9365.13 K   7.1605e+14\n"
    "  T_inner: 9039.45 K -> 8974.20 K (L_em=1.030e+43, L_req=1.000e+43)\n"
    "\n============================================================\nFinal Results\n"
    "T_inner final: 8974.20 K (TARDIS: 10521.52 K, err: -14.71%)\n"
)


def test_parse_stdout_reads_the_last_iteration():
    f = parse_stdout(REAL_STDOUT)
    assert f == StdoutFigures(escape_fraction=pytest.approx(0.7935), t_inner=9039.45, l_emitted=1.030e43,
                              l_requested=1.0e43, iteration=5, n_iterations=5)
    # GPU build: "Escaped: N (P%)" without the packet count; a hold iteration prints no luminosities
    gpu = ("--- Iteration 3/3 ---\n  Escaped: 410023 (41.00%), Reabsorbed: 589977 (59.00%)\n"
           "  T_inner: 10412.50 K (hold iteration 3/3)\nT_inner final: 10412.50 K (TARDIS: 10521.52 K, err: -1.04%)\n")
    assert parse_stdout(gpu) == StdoutFigures(escape_fraction=pytest.approx(0.41), t_inner=10412.5, iteration=3,
                                              n_iterations=3)
    assert parse_stdout("Segmentation fault\n") == StdoutFigures()
    broken = parse_stdout("--- Iteration 2/10 ---\n  T_inner: nan K -> nan K (L_em=-nan, L_req=1.0e43)\n")
    assert np.isnan(broken.l_emitted) and np.isnan(broken.t_inner) and broken.l_requested == 1.0e43


def test_stdout_figures_are_stored_per_model(tmp_path, fake_lumina, lumina_ref):
    store, _ = generate(_options(tmp_path, fake_lumina, lumina_ref, n_models=2))
    assert (store.status == DONE).all()
    d = store.diagnostics
    np.testing.assert_allclose(d["escape_fraction"], 0.415)
    l_req = 10 ** store.design[:, store.space.names.index("log_L")]
    np.testing.assert_allclose(d["l_requested"], l_req, rtol=1e-12)
    np.testing.assert_allclose(d["l_emitted"], l_req, rtol=2e-3)  # printed with 4 digits
    r_in = store.design[:, store.space.names.index("v_inner")] * 1e5 * store.design[:, store.space.names.index(
        "t_exp")] * 86400
    np.testing.assert_allclose(d["t_inner"], (l_req / (4 * np.pi * 5.670374419e-5 * r_in**2)) ** 0.25, rtol=1e-5)
    np.testing.assert_allclose(d["lum_ratio"], 1.0, atol=0.01)  # a blackbody holds its requested luminosity
    info = store_info(tmp_path / "c.h5")["diagnostics_done"]
    assert info["escape_fraction"]["n"] == 2 and info["lum_ratio"]["median"] == pytest.approx(1.0, abs=0.01)


def test_few_iterations_warn_once_at_the_start(tmp_path, fake_lumina, lumina_ref):
    seen = []
    generate(_options(tmp_path, fake_lumina, lumina_ref, n_models=4, lumina_settings=FEW), on_warning=seen.append)
    assert len(seen) == 1 and seen[0].startswith("--n-iters 2: LUMINA holds T_inner fixed for its first 3")
    store = generate(_options(tmp_path, fake_lumina, lumina_ref, resume=True, n_models=None, lumina_settings=None),
                     on_warning=seen.append)[0]
    assert len(seen) == 2  # the resumed campaign runs with the store's settings: warned again, once
    assert np.isnan(store.diagnostics["l_emitted"]).all()  # T_inner never updated: no L_emitted printed
    seen.clear()
    generate(_options(tmp_path, fake_lumina, lumina_ref, out=tmp_path / "five.h5",
                      lumina_settings=dataclasses.replace(SMALL, n_iters=5)), on_warning=seen.append)
    assert seen == []


# -------------------------------------------------------------------- validity
def test_sparse_monte_carlo_spectrum_is_accepted_by_its_luminosity(tmp_path, fake_lumina, lumina_ref, space1,
                                                                   monkeypatch):
    monkeypatch.setenv("FAKE_LUMINA_MODES", str(write_modes(tmp_path / "modes.json", {0: "sparse", 1: "dim"})))
    theta = lhs_design(space1, 1, seed=0)[0]
    ex = _executor(tmp_path, fake_lumina, lumina_ref, space1, settings=SMALL)
    sparse, dim = asyncio.run(ex.run([Job(0, theta, 1), Job(1, theta, 1)]))
    assert sparse.ok, sparse.reason  # 10 % of the bins > 0: a few-packet histogram, but the luminosity is right
    assert np.mean(sparse.spectrum > 0) == pytest.approx(0.1)
    assert sparse.diagnostics["lum_ratio"] == pytest.approx(1.0, abs=0.05)
    assert validate_spectrum(sparse.spectrum, n_wave=200) != ""  # the synthesizer's rule would refuse it
    assert not dim.ok and dim.fail_kind == "invalid_output"
    assert "L_emitted/L_requested of the last iteration (stdout) = 0.2 is outside 0.5-2" in dim.reason
    assert dim.diagnostics["lum_ratio"] == pytest.approx(0.2, abs=0.01)  # figures of failed attempts are kept


def test_judge_spectrum_rules():
    s = LuminaSettings(spec_range=(3000.0, 9000.0, 60), lum_range=(0.5, 2.0), min_escape_fraction=0.05)
    lam = s.wavelength
    t = 10000.0
    h, c, k = 6.62607015e-27, 2.99792458e10, 1.380649e-16
    x = lam * 1e-8
    r = 1e15
    flux = 4 * np.pi * r**2 * np.pi * 2 * h * c**2 / x**5 / np.expm1(h * c / (x * k * t)) / 1e8  # erg/s/Angstrom
    l_req = 4 * np.pi * r**2 * 5.670374419e-5 * t**4
    diag, why = judge_spectrum(flux, s, l_requested=l_req, t_inner=t, figures=StdoutFigures())
    assert why == "" and diag["lum_ratio"] == pytest.approx(1.0, abs=2e-3)  # the window holds ~60 % of it
    assert diag["l_spectrum"] == pytest.approx(0.6 * l_req, rel=0.05)
    assert "= 2.5 is outside" in judge_spectrum(2.5 * flux, s, l_requested=l_req, t_inner=t, figures=StdoutFigures())[1]
    ok = StdoutFigures(escape_fraction=0.4, t_inner=t, l_emitted=0.9 * l_req, l_requested=l_req)
    assert judge_spectrum(flux, s, l_requested=l_req, t_inner=t, figures=ok)[1] == ""
    low = dataclasses.replace(ok, escape_fraction=0.01)
    assert "escape fraction 1.00% (stdout) is below 5%" in judge_spectrum(flux, s, l_requested=l_req, t_inner=t,
                                                                          figures=low)[1]
    nan = dataclasses.replace(ok, l_emitted=float("nan"))
    assert "L_emitted (stdout) is nan" in judge_spectrum(flux, s, l_requested=l_req, t_inner=t, figures=nan)[1]
    assert validate_spectrum(np.zeros(60), n_wave=60, min_positive_fraction=0.0) == "every bin is zero (no flux)"


def test_auto_reference_is_written_beside_the_store_and_reused(tmp_path, fake_lumina):
    from runner_helpers import write_tiny_reference

    calls = []

    def make(space, folder):
        calls.append((space.stage, folder))
        return write_tiny_reference(folder)

    out = tmp_path / "camp.h5"
    generate(_options(tmp_path, fake_lumina, Path("auto"), out=out, make_reference=make))
    assert calls == [(1, tmp_path / "camp.ref")]
    assert store_info(out)["counts"]["done"] == 3
    assert store_info(out)["attrs"]["lumina_ref"] == str(tmp_path / "camp.ref")
    # a resume reuses the folder (no second export); without a writer, auto is a clear error
    generate(_options(tmp_path, fake_lumina, Path("auto"), out=out, resume=True, n_models=None, make_reference=make))
    assert len(calls) == 1
    with pytest.raises(UserError, match="auto"):
        generate(_options(tmp_path, fake_lumina, Path("auto"), out=tmp_path / "other.h5"))
