"""The shipped SN 2011fe chain: stage-1 emulator used as is by the pipeline, stage 2/3 defaults
(shipped emulator + shipped previous result), and the mock of a chained stage inside its box."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lumina_jax.errors import UserError
from lumina_jax.workflows import infer as api, chaining
from lumina_jax.workflows.config import (SHIPPED_EMULATORS, SHIPPED_PREVIOUS, MockConfig, default_checkpoint,
                                         default_previous)
from lumina_jax.workflows.pipeline import PipelineOptions, run_pipeline
from lumina_jax.params import load_space

MOCK1 = {"log_L": 43.0, "v_inner": 10500.0, "log_rho_0": -13.2, "density_exp": -7.0, "T_e_ratio": 0.9,
         "v_core": 12000.0, "v_wall": 16000.0, "X_Fe_core": 0.4, "X_Si_wall": 0.5, "v_break": 18000.0,
         "density_exp_outer": -10.0, "t_exp": 18.0, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}


def _summary(stage, best, space=None):
    sp = space or load_space(stage)
    return {"stage": stage, "best_fit": dict(best), "space": sp.to_dict()}


def _inside(space, truth, free):
    for n in free:
        i = space.index(n)
        assert space.lows[i] <= truth[n] <= space.highs[i], n


def test_stage2_mock_is_the_observed_stage1_fit_in_the_zones():
    from lumina_jax.ejecta import stage1_composition_in_zones

    prev = _summary(1, {**MOCK1, "log_L": 42.9, "X_Ni": 0.2})
    space, fixed = chaining.stage_box(2, prev)
    logs = []
    truth = api.mock_parameters(MockConfig(stage1=MOCK1), 2, space, log=logs.append, previous=prev)
    assert truth["log_L"] == 42.9  # the fit's values, not the config mock's
    comp = stage1_composition_in_zones(prev["best_fit"], space)
    assert all(truth[k] == pytest.approx(v) for k, v in comp.items())
    _inside(space, truth, [n for n in space.names if n not in space.inactive])
    assert any("stage-1 best fit" in m for m in logs)


def test_stage3_mock_carries_the_stage2_zones():
    sp2 = load_space(2)
    rng = np.random.default_rng(0)
    lo, hi = np.asarray(sp2.lows), np.asarray(sp2.highs)
    best2 = sp2.to_dict(lo + rng.uniform(0.2, 0.8, sp2.dim) * (hi - lo))
    prev = _summary(2, best2, sp2)
    space, _ = chaining.stage_box(3, prev)
    truth = api.mock_parameters(MockConfig(stage1=MOCK1), 3, space, previous=prev)
    _inside(space, truth, [n for n in space.names if n not in space.inactive])
    # stage-3 zone 0 (7000-8200 km/s) lies in stage-2 zone 0 (7000-10000 km/s)
    assert truth[space.zone_param_name("Si", 0)] == pytest.approx(best2[sp2.zone_param_name("Si", 0)])


def test_mock_fit_chains_keep_the_config_mock():
    """A previous *mock* fit (its summary records the mock) keeps the config's mock as the truth."""
    prev = {**_summary(1, {**MOCK1, "log_L": 42.9}), "mock": {"truth": MOCK1}}
    space, _ = chaining.stage_box(2, prev)
    truth = api.mock_parameters(MockConfig(stage1=MOCK1), 2, space, previous=prev)
    assert truth["log_L"] == MOCK1["log_L"]


def test_shipped_chain_files_are_consistent():
    """Every shipped emulator of stage N > 1 was trained in the relaxed box of the shipped
    stage-(N-1) result (what `infer --stage N` with no other flag relies on)."""
    from lumina_jax.emulator import load_emulator

    for stage in (2, 3):
        ckpt, prev = default_checkpoint(stage), default_previous(stage)
        assert ckpt.name == SHIPPED_EMULATORS[stage] and prev.name == SHIPPED_PREVIOUS[stage]
        summary = json.loads((prev / "summary.json").read_text())
        assert summary["stage"] == stage - 1 and summary["converged"]
        assert "observation" in summary and not any(
            isinstance(v, list) and len(v) > 100 for v in summary["observation"].values()), "observed data shipped"
        space, _ = chaining.stage_box(stage, prev)
        chaining.check_emulator_box(load_emulator(ckpt).space, space)


def test_pipeline_uses_a_given_stage1_emulator_without_campaign(tmp_path):
    calls = []
    ck = tmp_path / "s1.h5"
    ck.write_text("x")

    def infer(opts, s, ckpt, prev, res):
        calls.append(("infer", s, ckpt.name))
        res.mkdir(parents=True, exist_ok=True)
        (res / "summary.json").write_text(json.dumps({"stage": s, "best_fit": {}, "converged": True}))

    steps = {"generate": lambda o, s, st, p: calls.append(("generate", s)),
             "train": lambda o, s, st, c: (calls.append(("train", s)), c.write_text("c")),
             "needs_calibration": lambda c: False, "infer": infer}
    run_pipeline(PipelineOptions(stages="1-2", workdir=tmp_path / "w", stage1_emulator=ck), steps=steps,
                 log=lambda m: None)
    assert calls == [("infer", 1, "s1.h5"), ("generate", 2), ("train", 2), ("infer", 2, "emulator.ckpt")]
    with pytest.raises(UserError, match="--stage1-emulator .* is not a file"):
        run_pipeline(PipelineOptions(stages="1", workdir=tmp_path / "v", stage1_emulator=tmp_path / "no.h5"),
                     steps=steps, log=lambda m: None)
    with pytest.raises(UserError, match="--redshift must be"):
        run_pipeline(PipelineOptions(stages="1", workdir=tmp_path / "v", redshift=-0.1), steps=steps,
                     log=lambda m: None)
    with pytest.raises(UserError, match="--relax must be one of margin, union"):
        run_pipeline(PipelineOptions(stages="1", workdir=tmp_path / "v", relax="wide"), steps=steps,
                     log=lambda m: None)


def _with_interval(prev, half_widths):
    """``prev`` with a central 99.7 % interval of half-width ``half_widths[name]`` (default 0)
    around each best-fit value."""
    iv = {n: {"q0.15": v - half_widths.get(n, 0.0), "q99.85": v + half_widths.get(n, 0.0)}
          for n, v in prev["best_fit"].items()}
    return {**prev, "intervals": iv}


def test_union_box_is_the_hull_of_the_margin_box_and_the_interval():
    best = {**MOCK1, "log_L": 42.9}
    prev = _with_interval(_summary(1, best), {"log_L": 0.3, "v_inner": 10.0})
    margin, _ = chaining.stage_box(2, prev)
    union, fixed = chaining.stage_box(2, prev, relax="union")
    i = union.index("log_L")  # log kind: +-10 % of the prior width 42.5-43.5 -> [42.8, 43.0]
    assert (margin.lows[i], margin.highs[i]) == pytest.approx((42.8, 43.0))
    assert (union.lows[i], union.highs[i]) == pytest.approx((42.6, 43.2))  # the 99.7 % interval is wider
    j = union.index("v_inner")  # linear kind: +-1,050 km/s beats the interval's +-10 km/s
    assert (union.lows[j], union.highs[j]) == (margin.lows[j], margin.highs[j])
    # zone parameters the stage-1 fit does not carry keep the margin box (here: the full prior)
    k = union.index(union.zone_param_name("Si", 0))
    assert (union.lows[k], union.highs[k]) == (margin.lows[k], margin.highs[k])
    assert fixed == chaining.stage_box(2, prev)[1]


def test_union_box_needs_the_interval_and_a_known_rule():
    prev = _summary(1, MOCK1)
    with pytest.raises(UserError, match=r"--relax union needs the previous posterior's 99.7 % interval"):
        chaining.stage_box(2, prev, relax="union")
    with pytest.raises(UserError, match="--relax must be one of margin, union, got 'hull'"):
        chaining.stage_box(2, prev, relax="hull")
    # a parameter the previous fit held fixed has no interval and keeps the +-10 % box
    held = _with_interval(prev, {"t_exp": 3.0})
    held["free"] = [n for n in MOCK1 if n != "log_L"]
    del held["intervals"]["log_L"]
    union, _ = chaining.stage_box(2, held, relax="union")
    margin, _ = chaining.stage_box(2, held)
    i, j = union.index("log_L"), union.index("t_exp")
    assert (union.lows[i], union.highs[i]) == (margin.lows[i], margin.highs[i])
    assert (union.lows[j], union.highs[j]) == (max(15.0, union.prior_lows[j]), min(21.0, union.prior_highs[j]))


def test_union_box_rejects_a_shipped_emulator_trained_in_the_margin_box():
    """The shipped stage-2 emulator was trained in the +-10 % box: a wider union box is refused
    with the command that trains a matching one."""
    from lumina_jax.emulator import load_emulator

    prev_dir = default_previous(2)
    prev = json.loads((prev_dir / "summary.json").read_text())
    sd = {n: iv["sd"] for n, iv in prev["intervals"].items()}
    prev = _with_interval(prev, {n: 6 * s for n, s in sd.items()})
    space, _ = chaining.stage_box(2, prev, relax="union")
    with pytest.raises(UserError, match="--relax union` data"):
        chaining.check_emulator_box(load_emulator(default_checkpoint(2)).space, space, relax="union")


def test_pipeline_resumes_a_store_without_from_and_passes_the_rule_to_a_new_one(tmp_path, monkeypatch):
    """A resumed store keeps its box (the runner refuses --from / --relax on resume); a new
    one is generated from the previous results with the pipeline's rule."""
    import runners.campaign as rc
    from lumina_jax.workflows import pipeline

    seen = []
    monkeypatch.setattr(rc, "generate", lambda o: seen.append(o))
    opts = PipelineOptions(stages="2", workdir=tmp_path, relax="union", synth_config=None)
    prev, store = tmp_path / "stage1" / "results", tmp_path / "train.h5"
    pipeline._generate(opts, 2, store, prev)
    store.write_text("x")
    pipeline._generate(opts, 2, store, prev)
    assert [(o.resume, o.from_dir, o.relax, o.n_models) for o in seen] == [
        (False, prev, "union", opts.n_models), (True, None, chaining.DEFAULT_RELAX, None)]


def test_shipped_results_build_the_union_box():
    """The shipped SN 2011fe results carry the 99.7 % interval, so `--relax union` chains from
    them; the union box contains the +-10 % box and the interval itself (within the prior)."""
    for stage in (2,):
        prev = json.loads((default_previous(stage) / "summary.json").read_text())
        margin, _ = chaining.stage_box(stage, prev)
        union, _ = chaining.stage_box(stage, prev, relax="union")
        assert np.all(np.asarray(union.lows) <= np.asarray(margin.lows))
        assert np.all(np.asarray(union.highs) >= np.asarray(margin.highs))
        for n, iv in prev["intervals"].items():
            if n in union.names and n in prev["free"] and stage == 2:  # stage 1 -> 2: same names
                i = union.index(n)
                assert union.lows[i] <= max(iv["q0.15"], union.prior_lows[i]) + 1e-9, n
                assert union.highs[i] >= min(iv["q99.85"], union.prior_highs[i]) - 1e-9, n
