"""`infer` never loses a fit to a late error, never leaves an older run's files beside new
results, stops at a non-finite MAP, and names the real cause of a bad observed spectrum."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pytest

import lumina_jax.workflows.loaders as loaders
from lumina_jax.errors import UserError
from lumina_jax.workflows import infer as api, fit

from inference_toys import ToyEmulator, ToySynth, run_cli, toy_space

CONFIG = """
mock:
  stage1: {a: 1.0, v: 11000.0, d: 0.5}
  noise_frac: 0.01
  seed: 3
likelihood: {n_poly: 1, f_sys_range: [0.001, 0.3], log_scale_sd: 0.5, poly_sd: 0.1, emulator_sigma: varying}
priors: {}
observed: {}
sampler: {map_starts: 1, ridge: null}
convergence: {rhat_max: 1.01, max_divergent_frac: 0.01}
"""


@pytest.fixture
def toys(monkeypatch, tmp_path):
    sp = toy_space()  # on the shipped emulators' grid, 2000-10000 A
    emu = ToyEmulator(sp, wavelength=np.arange(2000.0, 10000.1, 5.0))
    monkeypatch.setattr(loaders, "get_emulator", lambda path: emu)
    monkeypatch.setattr(loaders, "get_synthesizer", lambda space, config=None: ToySynth(sp))
    (tmp_path / "inf.yaml").write_text(CONFIG)
    return tmp_path / "inf.yaml"


@pytest.fixture
def no_fit(monkeypatch):
    """Preparing or fitting fails the test: the checks must come first."""
    def reached(*a, **k):
        raise AssertionError("the fit was prepared before the output was checked")

    monkeypatch.setattr(api, "prepare", reached)


def _one_error(code, err, words):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert "Traceback" not in err


def test_unwritable_out_is_refused_before_the_fit(tmp_path, toys, no_fit, monkeypatch, capsys):
    """`--out f/sub` under a file, or in a directory that cannot be written: one line before any
    work (the fit used to run for minutes and then die with a PermissionError traceback)."""
    (tmp_path / "f").write_text("x")
    code, _, err = run_cli(["infer", "--config", str(toys), "--out", str(tmp_path / "f" / "sub")], monkeypatch, capsys)
    _one_error(code, err, "is a file, so the directory cannot be created there")
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if str(p).startswith(str(locked)) and m & os.W_OK
                        else real_access(p, m, **k))  # (root ignores permission bits)
    for out, words in ((locked / "new" / "res", f"parent directory {locked} is not writable"),
                       (locked, f"directory {locked} is not writable")):
        code, _, err = run_cli(["infer", "--config", str(toys), "--out", str(out)], monkeypatch, capsys)
        _one_error(code, err, words)
    assert list(locked.iterdir()) == [] and (tmp_path / "f").read_text() == "x"


def _fake_output(tmp_path):
    """A FitOutput as run_fit returns it, without fitting (a handful of draws)."""
    from lumina_jax.inference import diagnostics as diag

    post = {n: np.random.default_rng(0).normal(size=(1, 5)) for n in ("a", "v", "d", "f_sys", "log_scale")}
    idata = diag.make_inference_data(post, sample_stats={"lp": np.zeros((1, 5))},
                                     observed={"flux": np.ones(3)}, constant={"wavelength": np.arange(3.0)})
    summary = {"stage": 1, "best_fit": {"a": 1.0, "v": 11000.0, "d": 0.5}, "space": {}, "problems": [],
               "residual_rms": {"value": 0.01}, "evidence": None,
               "diagnostics": {"sampler": "nuts", "max_rhat": 1.0, "min_ess_bulk": 5.0, "min_ess_tail": 5.0,
                               "divergences": 0, "wall_warmup_s": 0.0, "wall_sampling_s": 0.0,
                               "min_ess_bulk_per_s": 1.0}}
    return fit.FitOutput(summary, idata, np.zeros((1, 5, 3)), None)


def test_force_replaces_the_previous_runs_files_plots_included(tmp_path, toys, monkeypatch, capsys):
    """`infer --force --no-plots` into an old results directory: none of the old run's plots is
    left beside the new results (they belonged to another fit); other files are kept."""
    out = tmp_path / "res"
    out.mkdir()
    from lumina_jax.workflows.results import PLOT_FILES

    for name in PLOT_FILES + ("summary.json", "best_fit.json", "posterior.nc"):
        (out / name).write_text("old run")
    (out / "notes.txt").write_text("mine")
    monkeypatch.setattr(api, "run_fit", lambda *a, **k: _fake_output(tmp_path))
    code, _, err = run_cli(["infer", "--config", str(toys), "--out", str(out), "--force", "--no-plots"],
                           monkeypatch, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["best_fit.json", "notes.txt", "posterior.nc", "space.json",
                                                     "summary.json"]
    assert json.loads((out / "summary.json").read_text())["best_fit"]["v"] == 11000.0
    assert (out / "notes.txt").read_text() == "mine"


def test_non_finite_map_stops_before_sampling(monkeypatch):
    """A MAP search that ends at NaN (a damaged emulator) is one clear error; nothing is sampled."""
    from lumina_jax.inference.density import LikelihoodConfig, make_setup
    from lumina_jax.observed import observation_from_model
    from lumina_jax.inference.sampling import SamplerConfig

    sp = toy_space()
    emu, synth = ToyEmulator(sp), ToySynth(sp)
    w, f = synth.spectrum(np.array([1.0, 11000.0, 0.5]))
    obs = observation_from_model(np.asarray(w), np.asarray(f), emu.wavelength, emu.preprocess, noise_frac=0.01)
    monkeypatch.setattr(fit, "find_map", lambda fm, key, n_starts=1: (np.zeros(fm.n_z), float("nan"), None, None))

    def sampled(*a, **k):
        raise AssertionError("sampling started at a non-finite MAP")

    monkeypatch.setattr(fit, "run_preconditioned", sampled)
    monkeypatch.setattr(fit, "run_nested", sampled)
    with pytest.raises(UserError, match="no finite log posterior .* nothing was sampled"):
        problem = fit.FitProblem(make_setup(sp, n_poly=1), emu.spectrum_and_sigma, obs,
                                 likelihood=LikelihoodConfig(emulator_sigma="varying", stride=1))
        fit.run_fit(problem, SamplerConfig(num_chains=1, ridge=None, map_starts=1))


def _csv(path, w, f, header="wavelength_angstrom,flux_erg_s_cm2_angstrom"):
    path.write_text(header + "\n" + "\n".join(f"{float(a)!r},{float(b)!r}" for a, b in zip(w, f)) + "\n")
    return path


W = np.arange(3000.0, 9000.0, 4.0)
F = 1e-15 * (W / 6000.0) ** -1.0


@pytest.mark.parametrize("make,words,not_words", [
    (lambda p: _csv(p, [], [], ), "no data rows, only the header line", "different numbers of columns"),
    (lambda p: p.write_bytes(b"\x00" * 5000), "is a binary file (it holds NUL bytes)", "different numbers of columns"),
    (lambda p: _csv(p, W / 1e4, F, header="wavelength,flux"), "look like um: pass --wave-unit um", None),
    (lambda p: _csv(p, W / 10.0, F, header="wavelength,flux"), "look like nm: pass --wave-unit nm", None),
    (lambda p: _csv(p, np.arange(9000.0, 9700.0, 2.0), 1e-15 * np.ones(350)),
     "do not cover the emulator's normalisation window", "zero or negative"),
    (lambda p: p.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100), "is an HDF5 file", None),
])
def test_bad_observed_spectra_name_the_real_cause(tmp_path, toys, monkeypatch, capsys, make, words, not_words):
    p = tmp_path / "obs.csv"
    make(p)
    monkeypatch.setattr(fit, "find_map", lambda *a, **k: pytest.fail("the fit started"))
    code, _, err = run_cli(["infer", "--config", str(toys), "--observed", str(p), "--out", str(tmp_path / "r")],
                           monkeypatch, capsys)
    _one_error(code, err, words)
    assert not_words is None or not_words not in err


def test_a_large_binary_file_is_refused_at_once(tmp_path, toys, monkeypatch, capsys):
    """200 MB of NUL bytes (it took 25 s and 2 GB before a confusing message): its first bytes
    say it is not a spectrum."""
    p = tmp_path / "zeros.csv"
    with open(p, "wb") as fh:
        fh.truncate(200 * 2**20)
    t0 = time.perf_counter()
    code, _, err = run_cli(["infer", "--config", str(toys), "--observed", str(p), "--out", str(tmp_path / "r")],
                           monkeypatch, capsys)
    _one_error(code, err, "is a binary file")
    assert time.perf_counter() - t0 < 5.0


def test_the_emulator_error_model_line_is_not_an_error_line():
    """The log line that says which emulator-error model the likelihood uses no longer begins
    with "emulator error:", which reads as an error to anything that greps for them."""
    logged = []
    from lumina_jax.inference.density import LikelihoodConfig

    for lk, basis in ((LikelihoodConfig(emulator_corr_length=50.0), None), (LikelihoodConfig(), np.ones((4, 2))),
                      (LikelihoodConfig(), None)):
        emu = type("E", (), {"error_basis": basis})()
        api.emulator_error_model(emu, lk, log=logged.append)
    assert len(logged) == 3
    assert all(ln.startswith("emulator-error model: ") for ln in logged), logged
    assert not any("error:" in ln for ln in logged)
