"""Physics checks and the resumable pipeline, with stand-ins."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from lumina_jax.errors import UserError
from lumina_jax.inference import density as M, likelihood as L
from lumina_jax.workflows import checks
from lumina_jax import observed as O
from lumina_jax.workflows.pipeline import PipelineOptions, parse_stages, run_pipeline
from lumina_jax.inference.density import LikelihoodConfig
from lumina_jax.inference.sampling import SamplerConfig

from inference_toys import ToyEmulator, ToySynth, toy_space


def _data(emu, synth, theta, noise=0.01):
    w, f = synth.spectrum(theta)
    obs = O.observation_from_model(w, np.asarray(f), emu.wavelength, emu.preprocess, noise_frac=noise, seed=2)
    return obs, L.make_likelihood_data(obs.wavelength, obs.flux, obs.sigma, obs.mask)


def test_gradient_agreement_and_ppc_when_emulator_equals_physics():
    sp = toy_space()
    emu, synth = ToyEmulator(sp), ToySynth(sp)
    truth = np.array([1.0, 11000.0, 0.5])
    obs, data = _data(emu, synth, truth)
    setup = M.make_setup(sp, n_poly=0)
    theta = np.array([1.05, 11100.0, 0.45])  # off the mode: non-zero gradient
    g = checks.gradient_agreement(setup, emu, synth, data, theta, {"log_scale": 0.0, "f_sys": 0.01})
    # the toy emulator is the synthesizer on a coarser grid: gradients agree closely
    assert g["cosine_similarity"] > 0.99
    assert 0.8 < g["norm_ratio"] < 1.25
    thetas = np.array([truth, theta])
    p = checks.ppc_physics(emu, synth, thetas, {"log_scale": np.zeros(2)}, data, obs.wavelength)
    assert p["mean_frac_error_emulator_vs_synth"] < 0.01
    assert abs(p["rms_synthesizer_median"] - p["rms_emulator_median"]) < 0.01


def test_pipeline_runs_each_step_once_and_resumes(tmp_path):
    calls = []

    def gen(opts, s, store, prev):
        calls.append(("generate", s, prev.name if prev else None))
        store.write_text("store")

    def train(opts, s, store, ckpt):
        calls.append(("train", s))
        ckpt.write_text("ckpt")

    def infer(opts, s, ckpt, prev, res):
        calls.append(("infer", s))
        res.mkdir(parents=True, exist_ok=True)
        (res / "summary.json").write_text(json.dumps({"stage": s, "best_fit": {}, "converged": True}))

    def calibrate(opts, s, store, ckpt):
        calls.append(("calibrate", s))
        ckpt.write_text("ckpt calibrated")

    steps = {"generate": gen, "train": train, "infer": infer, "calibrate": calibrate,
             "needs_calibration": lambda ckpt: "calibrated" not in ckpt.read_text()}
    opts = PipelineOptions(stages="1-2", workdir=tmp_path)
    run_pipeline(opts, steps=steps, log=lambda m: None)
    assert calls == [("generate", 1, None), ("train", 1), ("calibrate", 1), ("infer", 1),
                     ("generate", 2, "results"), ("train", 2), ("calibrate", 2), ("infer", 2)]
    calls.clear()
    (tmp_path / "stage2" / "emulator.ckpt").unlink()  # interrupted during stage-2 training
    (tmp_path / "stage1" / "emulator.ckpt").write_text("ckpt")  # an emulator trained before calibration existed
    logs = []
    run_pipeline(opts, steps=steps, log=logs.append)
    # stores are resumed (cheap when complete); finished training and inference are skipped;
    # an uncalibrated checkpoint is calibrated, and the log says its results predate that
    assert calls == [("generate", 1, None), ("calibrate", 1), ("generate", 2, "results"), ("train", 2),
                     ("calibrate", 2)]
    assert any("fitted before; delete them to refit" in m for m in logs)


def test_pipeline_stops_on_unconverged_stage(tmp_path):
    def infer(opts, s, ckpt, prev, res):
        res.mkdir(parents=True, exist_ok=True)
        (res / "summary.json").write_text(json.dumps({"stage": s, "best_fit": {}, "converged": False,
                                                      "problems": ["max R-hat 1.2 > 1.01"]}))
    steps = {"generate": lambda *a: None, "train": lambda o, s, st, ck: ck.write_text("x"), "infer": infer,
             "needs_calibration": lambda ckpt: False}
    with pytest.raises(UserError, match="did not converge.*more --warmup/--samples"):
        run_pipeline(PipelineOptions(stages="1-3", workdir=tmp_path), steps=steps, log=lambda m: None)


def test_pipeline_checks_its_inputs_before_any_campaign(tmp_path, monkeypatch):
    """A missing --observed / --train-config, a directory as --observed, --epochs 0 or < 0 and other
    bad numbers stop the pipeline before its first campaign; --epochs reaches `train` even when small."""
    from lumina_jax.workflows import pipeline

    calls = []
    steps = {"generate": lambda *a: calls.append("generate")}
    (tmp_path / "obs_dir").mkdir()
    for kw, msg in [({"observed": tmp_path / "nonexist.csv"}, "observed spectrum not found"),
                    ({"observed": tmp_path / "obs_dir"}, "is not a file"),
                    ({"train_config": tmp_path / "nonexist.yaml"}, "--train-config .* is not a file"),
                    ({"synth_config": tmp_path / "nonexist.yaml"}, "--synth-config .* is not a file"),
                    ({"epochs": 0}, "--epochs must be >= 1, got 0"), ({"epochs": -5}, "--epochs must be >= 1"),
                    ({"patience": 0}, "--patience must be >= 1"), ({"n_models": 0}, "--n-models must be >= 1"),
                    ({"backend": "tardis"}, "--backend must be synth or lumina")]:
        with pytest.raises(UserError, match=msg):
            run_pipeline(PipelineOptions(stages="1", workdir=tmp_path / "w", **kw), steps=steps, log=lambda m: None)
    bad_cfg = tmp_path / "train.yaml"
    bad_cfg.write_text("training: {bogus: 1}\n")
    with pytest.raises(UserError, match="unknown emulator setting"):
        run_pipeline(PipelineOptions(stages="1", workdir=tmp_path / "w", train_config=bad_cfg), steps=steps,
                     log=lambda m: None)
    assert calls == [] and not (tmp_path / "w").exists()
    seen = []
    from lumina_jax.workflows import emulator

    monkeypatch.setattr(emulator, "train", lambda data, out, **kw: seen.append(kw["overrides"]) or
                        {"val_mean_fractional_error": 0.01, "train_seconds": 1.0})
    pipeline._train(PipelineOptions(epochs=1, patience=1), 1, tmp_path / "s.h5", tmp_path / "ck", log=lambda m: None)
    assert seen == [{"max_epochs": 1, "patience": 1}]


def test_parse_stages():
    assert parse_stages("1-3") == [1, 2, 3] and parse_stages("2") == [2]
    with pytest.raises(UserError):
        parse_stages("3-1")


def test_coverage_resumes_and_covers_truths_when_emulator_is_the_physics():
    """Injection recovery with a consistent emulator (the toy synthesizer on a coarser grid):
    intervals must contain the truths at about their nominal rate, and a run resumed from
    its first records gives the same records for the rest."""
    sp = toy_space()
    emu, synth = ToyEmulator(sp), ToySynth(sp)
    setup = M.make_setup(sp, n_poly=0)
    kw = dict(n_injections=6, noise_frac=0.02, seed=3, likelihood=LikelihoodConfig(stride=1),
              sampler=SamplerConfig(num_chains=2, num_warmup=150, num_samples=150, map_starts=4, ridge=None))
    saved = []
    full = checks.coverage(setup, emu, synth.spectrum, on_record=lambda r: saved.append(list(r)), **kw)
    assert [len(s) for s in saved] == [1, 2, 3, 4, 5, 6]  # one save per injection
    assert [r["index"] for r in full["injections"]] == list(range(6))
    # 18 (injection, parameter) pairs: Binomial(18, 0.68) lies in [7, 17] with probability > 0.99
    assert 7 / 18 <= full["mean_in68"] <= 17 / 18
    assert full["mean_in95"] >= 14 / 18
    assert full["max_rhat_median"] < 1.05
    assert full["mean_in68_se"] > 0 and 0 <= full["per_parameter"]["a"]["truth_quantile_ks_pvalue"] <= 1
    # the truth's posterior quantile agrees with the interval membership (same draws)
    for r in full["injections"]:
        q = np.asarray(r["truth_quantile"])
        inside = (q > 0.16 + 0.01) & (q < 0.84 - 0.01)
        outside = (q < 0.16 - 0.01) | (q > 0.84 + 0.01)
        assert np.all(np.asarray(r["in68"])[inside]) and not np.any(np.asarray(r["in68"])[outside])
    resumed = checks.coverage(setup, emu, synth.spectrum, done=saved[4], **kw)  # fits injection 5 alone
    assert resumed["injections"] == full["injections"]
    with pytest.raises(ValueError, match="other settings"):
        checks.coverage(setup, emu, synth.spectrum, done=saved[2], **{**kw, "seed": 4})
    # shard 1/2 fits the odd injections only (here: only 5 is left), identical to the full run's;
    # merged with the even records of the full run it gives the full run's figures without fitting
    odd = checks.coverage(setup, emu, synth.spectrum, shard=(1, 2), done=full["injections"][1:4:2], **kw)
    assert [r["index"] for r in odd["injections"]] == [1, 3, 5]
    assert odd["injections"] == full["injections"][1::2] and odd["n_fitted"] == 3
    merged = checks.coverage(setup, emu, synth.spectrum, done=full["injections"][0::2] + odd["injections"], **kw)
    assert merged["injections"] == full["injections"] and merged["mean_in68"] == full["mean_in68"]
    with pytest.raises(ValueError, match="shard"):
        checks.coverage(setup, emu, synth.spectrum, shard=(2, 2), **kw)


def test_coverage_self_consistency_mocks_are_the_emulator_prediction():
    """simulates_prediction: the mock is the emulator's own prediction plus noise (not
    re-preprocessed), so its intervals hold the truth at about the nominal rate."""
    sp = toy_space()
    emu = ToyEmulator(sp)
    setup = M.make_setup(sp, n_poly=0)
    calls = []

    def simulate(theta):
        calls.append(theta)
        return emu.wavelength, 1.3 * np.asarray(emu.spectrum(theta))  # a scaled prediction: the free scale absorbs it

    res = checks.coverage(setup, emu, simulate, n_injections=4, noise_frac=0.02, seed=5,
                          likelihood=LikelihoodConfig(stride=1),
                          sampler=SamplerConfig(num_chains=2, num_warmup=150, num_samples=150, map_starts=4, ridge=None),
                          simulates_prediction=True)
    assert len(calls) == 4 and res["n_fitted"] == 4
    # 12 (injection, parameter) pairs: Binomial(12, 0.95) >= 9 with probability > 0.99
    assert res["mean_in95"] >= 9 / 12


def test_coverage_uncertainty_uses_injections_as_the_independent_units():
    """Standard error over injections (their parameters share one noise draw), hand-computed;
    the KS p-values against scipy's two-sided exact test on the same quantiles."""
    from scipy.stats import kstest

    recs = [{"in68": [True, True], "in95": [True, True], "truth_quantile": [0.5, 0.3]},
            {"in68": [False, False], "in95": [True, False], "truth_quantile": [0.95, 0.01]},
            {"in68": [True, False], "in95": [True, True], "truth_quantile": [0.2, 0.9]},
            {"in68": [True, True], "in95": [True, True], "truth_quantile": [0.7, 0.45]}]
    out = checks.coverage_uncertainty(recs, ["a", "b"])
    # per-injection fractions inside 68 %: 1, 0, 0.5, 1 -> mean 0.625, sd (ddof 1) 0.4787
    se = np.std([1.0, 0.0, 0.5, 1.0], ddof=1) / 2.0
    assert out["mean_in68_se"] == pytest.approx(0.2393, abs=1e-4) == se
    assert out["mean_in68_z"] == pytest.approx((0.625 - 0.6827) / se)
    assert out["mean_in95_se"] == pytest.approx(np.std([1, 0.5, 1, 1], ddof=1) / 2)
    assert out["truth_quantile_ks_pvalue"]["a"] == pytest.approx(kstest([0.5, 0.95, 0.2, 0.7], "uniform").pvalue)
    # quantiles piled at one end are flagged
    piled = [{"in68": [False], "in95": [False], "truth_quantile": [0.01 * k]} for k in range(1, 21)]
    assert checks.coverage_uncertainty(piled, ["a"])["truth_quantile_ks_pvalue"]["a"] < 1e-6


def test_relaxation_summary_counts_injections_with_every_parameter_inside():
    nb = lambda m, u, w: {"names": ["a", "b"], "margin": m, "union": u, "width_ratio": w}  # noqa: E731
    recs = [{"next_box": nb([True, True], [True, True], [1.0, 1.0])},
            {"next_box": nb([True, False], [True, True], [1.0, 3.0])},
            {"next_box": nb([False, False], [True, False], [2.0, 5.0])},
            {"index": 3}]  # an injection of a run without the record is left out
    out = checks.relaxation_summary(recs)
    assert out["n_injections"] == 3
    assert out["all_inside_margin"] == pytest.approx(1 / 3) and out["all_inside_union"] == pytest.approx(2 / 3)
    assert out["per_parameter"]["b"] == {"margin": pytest.approx(1 / 3), "union": pytest.approx(2 / 3),
                                         "union_width_ratio_median": 3.0}
    assert out["union_width_ratio_median"] == 1.5  # median of 1, 1, 1, 3, 2, 5
    assert checks.relaxation_summary([{"index": 0}]) is None


def test_coverage_plot_is_written(tmp_path):
    """The coverage / P-P plot from a result dict (made-up uniform truth quantiles)."""
    names = ["a", "b"]
    n = 20
    q = (np.arange(n) + 0.5) / n
    res = {"n_injections": n, "mean_in68": 0.7, "mean_in95": 0.95,
           "per_parameter": {m: {"in68": 0.7, "in95": 0.95} for m in names},
           "injections": [{"truth_quantile": [float(v), float(1 - v)]} for v in q]}
    checks.plot_coverage(res, names, tmp_path / "cov.png")
    assert (tmp_path / "cov.png").stat().st_size > 10_000


def test_gradient_agreement_at_draws_tells_right_slopes_from_wrong_ones():
    """At posterior-like draws around the truth the emulator's and the physics' likelihood
    gradients agree (cosine > 0.99) when the emulator is the physics on a coarser grid, and not
    when the emulator's line moves five times too fast with velocity (same mode, wrong slope:
    cosine median < 0.9, measured 0.53); the preprocessing of the toy is NumPy, so the physics' gradient is by
    central differences."""
    sp = toy_space()
    synth = ToySynth(sp)
    truth = np.array([1.0, 11000.0, 0.5])

    class WrongSlope(ToyEmulator):
        def spectrum(self, theta):
            return super().spectrum(theta.at[1].set(11000.0 + 5.0 * (theta[1] - 11000.0)))

    setup = M.make_setup(sp, n_poly=0)
    rng = np.random.default_rng(0)
    draws = truth + rng.normal(size=(6, 3)) * np.array([0.03, 150.0, 0.02])
    nuis = {"log_scale": np.zeros(6), "f_sys": np.full(6, 0.01)}
    good = ToyEmulator(sp)
    obs, data = _data(good, synth, truth)
    r_good = checks.gradient_agreement_draws(setup, good, synth, data, draws, nuis)
    r_bad = checks.gradient_agreement_draws(setup, WrongSlope(sp), synth, data, draws, nuis)
    assert r_good["synthesizer_gradient_method"] == "finite-difference" and r_good["n_draws"] == 6
    assert r_good["cosine_median"] > 0.99 and 0.8 < r_good["norm_ratio_median"] < 1.25, r_good
    assert r_bad["cosine_median"] < 0.9, r_bad


def test_observation_from_prediction_keeps_the_prediction_as_its_mean():
    """The self-consistency mock (check coverage --simulator emulator) must not preprocess the
    emulator's prediction a second time: noise-free it is the prediction itself, with noise it
    scatters around it with the sigma it reports."""
    sp = toy_space()
    emu = ToyEmulator(sp)
    # a real emulator's prediction is only approximately what its preprocessing returns
    # (smoothed twice, re-normalised); the toy's is exact up to the normalisation, so scale it
    pred = 1.3 * np.asarray(emu.spectrum(np.array([1.0, 11000.0, 0.5])), float)
    again = O.observation_from_model(emu.wavelength, pred, emu.wavelength, emu.preprocess)
    assert np.max(np.abs(again.flux[again.mask] / pred[again.mask] - 1)) > 1e-2  # re-normalised: not the mean
    clean = O.observation_from_prediction(pred, emu.wavelength, emu.preprocess)
    assert clean.mask.sum() > 100
    np.testing.assert_allclose(clean.flux[clean.mask], pred[clean.mask], rtol=1e-12)
    noisy = [O.observation_from_prediction(pred, emu.wavelength, emu.preprocess, noise_frac=0.02, seed=s)
             for s in range(30)]
    m = np.logical_and.reduce([o.mask for o in noisy])
    z = np.stack([(o.flux[m] - pred[m]) / o.sigma[m] for o in noisy])
    assert abs(z.mean()) < 0.1 and 0.8 < z.std() < 1.2
    with pytest.raises(UserError, match="finite values on the model grid"):
        O.observation_from_prediction(pred[:-1], emu.wavelength, emu.preprocess)


def test_a_shard_fits_with_one_blas_thread_and_a_whole_run_keeps_the_default():
    """Shards run side by side, and OpenBLAS's spinning threads (the LAPACK behind JAX's CPU
    linear algebra) then starve each other: a shard limits BLAS to one thread while it fits."""
    from threadpoolctl import threadpool_info

    from lumina_jax.workflows.coverage import shard_threads

    def blas_threads():
        jnp.linalg.cholesky(jnp.eye(3)).block_until_ready()  # the LAPACK library is loaded
        return {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    before = blas_threads()
    assert before, "no BLAS library found by threadpoolctl"
    with shard_threads((0, 2)):
        assert set(blas_threads().values()) == {1}
    assert blas_threads() == before
    with shard_threads(None):
        assert blas_threads() == before


def test_coverage_ticks_name_every_parameter_or_each_zone_once():
    from lumina_jax.params import load_space
    from lumina_jax.workflows.checks import _coverage_ticks

    assert _coverage_ticks(["a", "b"]) == ([0, 1], ["a", "b"])
    s3 = load_space(3)
    names = [n for n in s3.names if n not in s3.inactive]
    ticks, labels = _coverage_ticks(names)
    n_glob = sum(not n.startswith("X_") for n in names)
    assert labels == [f"globals ({n_glob})"] + [f"zone {k}" for k in range(s3.zones.n)]
    assert [names[i] for i in ticks[1:]] == [names[n_glob + 8 * k] for k in range(s3.zones.n)]
    assert all(names[i].endswith(f"_z{k}") for i, k in zip(ticks[1:], range(s3.zones.n)))
