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
