"""End-to-end: a small NUTS fit of the toy model through the CLI recovers the mock's parameters;
bad inputs give one-line errors with exit code 2."""

from __future__ import annotations

import json

import numpy as np
import pytest

import lumina_jax.workflows.loaders as loaders

from inference_toys import ToyEmulator, ToySynth, run_cli as _run_cli, toy_space

CONFIG = """
mock:
  stage1: {a: 1.0, v: 11000.0, d: 0.5}
  noise_frac: 0.01
  seed: 3
  window: [3300.0, 8800.0]
likelihood: {n_poly: 1, f_sys_range: [0.001, 0.3], log_scale_sd: 0.5, poly_sd: 0.1}
priors: {}
observed: {}
sampler: {map_starts: 8, ridge: null}  # the toy space has no t_exp
convergence: {rhat_max: 1.01, max_divergent_frac: 0.01}
"""


@pytest.fixture
def toys(monkeypatch):
    sp = toy_space()
    emu, synth = ToyEmulator(sp), ToySynth(sp)
    monkeypatch.setattr(loaders, "get_emulator", lambda path: emu)
    monkeypatch.setattr(loaders, "get_synthesizer", lambda space, config=None: synth)
    return emu, synth


def test_small_nuts_run_recovers_mock_and_writes_results(tmp_path, toys, monkeypatch, capsys):
    cfg = tmp_path / "inf.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "res"
    code, stdout, err = _run_cli(["infer", "--stage", "1", "--config", str(cfg), "--out", str(out), "--chains", "2",
                                  "--warmup", "200", "--samples", "200", "--json"], monkeypatch, capsys)
    assert "MOCK observation made by the synthesizer" in err
    s = json.loads(stdout[stdout.index("{"):]) if "{" in stdout else pytest.fail(f"no JSON: {stdout[:300]!r} {err[-500:]!r}")
    assert s["stage"] == 1 and set(s["best_fit"]) == {"a", "v", "d"}
    tr = s["truth_recovery"]
    assert tr["all_in95"], tr
    # posterior width matches the noise: line velocity known to better than 100 km/s
    assert s["intervals"]["v"]["sd"] < 100.0
    assert abs(s["best_fit"]["v"] - 11000.0) < 3 * s["intervals"]["v"]["sd"] + 1.0
    # the central 99.7 % that `--relax union` reads: ordered, and about +-3 sd of this near-Gaussian posterior
    keys = ("q0.15", "q2.5", "q16", "median", "q84", "q97.5", "q99.85")
    for n, iv in s["intervals"].items():
        assert [iv[k] for k in keys] == sorted(iv[k] for k in keys), n
    v = s["intervals"]["v"]
    assert 4.5 < (v["q99.85"] - v["q0.15"]) / v["sd"] < 7.5
    assert code == (0 if s["converged"] else 3)
    for f in ("posterior.nc", "summary.json", "best_fit.json", "corner.png", "spectrum_fit.png",
              "trace.png", "rank.png", "synth_vs_emulator.png"):
        assert (out / f).is_file(), f
    # the toy emulator equals the synthesizer up to resampling: tiny residual
    assert s["residual_rms"]["value"] < 0.02
    # the results record the configuration they ran with, as a file --config reads back
    from lumina_jax.workflows.config import load_inference_config
    from lumina_jax.workflows.results import FORMAT_VERSION

    assert s["format_version"] == FORMAT_VERSION and s["config"]["format_version"] == 2
    again = tmp_path / "again.yaml"
    again.write_text(json.dumps({k: v for k, v in s["config"].items() if k != "format_version"}))
    ran = load_inference_config(again)
    assert ran.sampler.num_warmup == 200 and ran.sampler.num_chains == 2 and ran.likelihood.n_poly == 1
    assert ran.mock.stage1 == {"a": 1.0, "v": 11000.0, "d": 0.5}


def test_corrupted_observed_file_gives_one_line_error(tmp_path, toys, monkeypatch, capsys):
    p = tmp_path / "bad.csv"
    p.write_text("wavelength_angstrom,flux_erg_s_cm2_angstrom\n" + "\n".join(f"{w},{1.0}" for w in
                                                                            [4000, 3990] + list(range(5000, 5100))))
    code, _, err = _run_cli(["infer", "--observed", str(p), "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:") and "not sorted" in err and "Traceback" not in err


def test_unknown_emcee_move_rejected_before_any_work(tmp_path, monkeypatch, capsys):
    code, _, err = _run_cli(["infer", "--sampler", "emcee", "--emcee-moves", "walk", "--out", str(tmp_path / "r")],
                            monkeypatch, capsys)
    assert code == 2 and "emcee moves must be one of stretch, de" in err and not (tmp_path / "r").exists()


def test_relax_rule_needs_a_previous_result(tmp_path, monkeypatch, capsys):
    code, _, err = _run_cli(["infer", "--relax", "union", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and "--relax union applies only to a stage chained" in err and not (tmp_path / "r").exists()
    code, _, err = _run_cli(["infer", "--relax", "wide", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and "--relax must be one of margin, union" in err


def test_checkpoint_for_wrong_stage_rejected(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(loaders, "get_emulator", lambda path: ToyEmulator(toy_space(stage=1)))
    code, _, err = _run_cli(["infer", "--stage", "2", "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and "stage 1, not stage 2" in err


def test_nested_sampling_run_reports_evidence_and_recovers_mock(tmp_path, toys, monkeypatch, capsys):
    cfg = tmp_path / "inf.yaml"
    cfg.write_text(CONFIG)
    code, stdout, err = _run_cli(["infer", "--stage", "1", "--config", str(cfg), "--out", str(tmp_path / "ns"),
                                  "--sampler", "blackjax-nss", "--chains", "2", "--ns-live", "100",
                                  "--samples", "500", "--no-plots", "--json", "--allow-unconverged"],
                                 monkeypatch, capsys)
    assert code == 0, err[-800:]
    s = json.loads(stdout[stdout.index("{"):])
    ev = s["evidence"]
    assert len(ev["runs"]) == 2 and np.isfinite(ev["log_evidence"]) and ev["log_evidence_sd"] > 0
    # two independent runs agree within their combined Monte-Carlo error (+ a small floor)
    a, b = (r["log_evidence"] for r in ev["runs"])
    sab = np.hypot(*(r["log_evidence_sd"] for r in ev["runs"]))
    assert abs(a - b) < 4 * sab + 0.1, ev
    assert "log evidence" in err
    assert s["truth_recovery"]["all_in95"], s["truth_recovery"]
    # the nested-sampling posterior is as narrow as NUTS's on the same mock (test above: sd(v) < 100 km/s)
    assert s["intervals"]["v"]["sd"] < 100.0


def test_check_coverage_shards_merge_into_the_full_run(tmp_path, toys, monkeypatch, capsys):
    """`check coverage --shard K/M` runs fit disjoint injections; `--merge` joins them without refitting."""
    cfg = tmp_path / "inf.yaml"
    cfg.write_text(CONFIG)  # ridge: null (the toy space has no t_exp)
    common = ["check", "coverage", "--n", "2", "--chains", "2", "--warmup", "50", "--samples", "50",
              "--map-starts", "1", "--seed", "1", "--config", str(cfg)]
    for k in (0, 1):
        code, _, err = _run_cli(common + ["--shard", f"{k}/2", "--out", str(tmp_path / f"s{k}.json")],
                                monkeypatch, capsys)
        assert code == 0, err[-800:]
        part = json.loads((tmp_path / f"s{k}.json").read_text())
        assert [r["index"] for r in part["injections"]] == [k] and part["settings"]["shard"] == f"{k}/2"
    code, stdout, err = _run_cli(common + ["--merge", str(tmp_path / "s0.json"), "--merge", str(tmp_path / "s1.json"),
                                           "--out", str(tmp_path / "all.json"), "--json"], monkeypatch, capsys)
    assert code == 0, err[-800:]
    res = json.loads(stdout[stdout.index("{"):])
    assert [r["index"] for r in res["injections"]] == [0, 1] and res["n_fitted"] == 2
    parts = [json.loads((tmp_path / f"s{k}.json").read_text())["injections"][0] for k in (0, 1)]
    assert res["injections"] == parts
    code, _, err = _run_cli(common + ["--shard", "2/2"], monkeypatch, capsys)
    assert code == 2 and "0 <= K < M" in err
    code, _, err = _run_cli(common[:3] + ["3"] + common[4:] + ["--merge", str(tmp_path / "s0.json")],
                            monkeypatch, capsys)
    assert code == 2 and "other settings" in err


def test_checkpoint_option_is_resolved_from_a_path(monkeypatch, tmp_path):
    """`check gradient|ppc --checkpoint FILE` hands typer's Path to the loader (it once crashed on
    ``Path.startswith``); without it the results' recorded checkpoint is used, a toy one refused."""
    from lumina_jax.errors import UserError
    from lumina_jax.workflows.results import emulator_and_space

    seen = []
    toy = ToyEmulator(toy_space(stage=1))
    monkeypatch.setattr(loaders, "get_emulator", lambda path: seen.append(path) or toy)
    ck = tmp_path / "stage3.ckpt"
    summary = {"stage": 1, "space": json.loads(toy.space.to_json())}
    assert emulator_and_space({**summary, "checkpoint": "(random toy)"}, ck)[0] is toy
    assert emulator_and_space({**summary, "checkpoint": "recorded.ckpt"}, None)[0] is toy
    assert seen == [str(ck), "recorded.ckpt"]
    with pytest.raises(UserError, match="pass --checkpoint"):
        emulator_and_space({**summary, "checkpoint": "(random toy)"}, None)


def test_one_chain_infer_and_coverage_run_without_rhat(tmp_path, toys, monkeypatch, capsys):
    """`--chains 1` (nuts) fits, plots and reports R-hat as unavailable instead of crashing
    after the MAP; `check coverage --chains 1` likewise."""
    cfg = tmp_path / "inf.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "res"
    code, stdout, err = _run_cli(["infer", "--config", str(cfg), "--out", str(out), "--chains", "1",
                                  "--warmup", "50", "--samples", "50", "--json", "--allow-unconverged"],
                                 monkeypatch, capsys)
    assert code == 0, err[-800:]
    s = json.loads(stdout[stdout.index("{"):])
    d = s["diagnostics"]
    assert d["chains"] == 1 and d["max_rhat"] is None and d["per_parameter"]["v"]["rhat"] is None
    assert not any("R-hat" in p for p in s["problems"])
    assert "max R-hat n/a (1 chain)" in err and (out / "rank.png").is_file()
    code, stdout, err = _run_cli(["check", "coverage", "--n", "1", "--chains", "1", "--warmup", "30", "--samples",
                                  "30", "--map-starts", "1", "--json", "--out", str(tmp_path / "cov.json"),
                                  "--config", str(cfg)],
                                 monkeypatch, capsys)
    assert code == 0, err[-800:]
    res = json.loads(stdout[stdout.index("{"):])
    assert res["n_fitted"] == 1 and res["max_rhat_median"] is None and res["injections"][0]["max_rhat"] is None
    assert "max R-hat n/a (1 chain)" in err


def test_existing_results_dir_needs_force(tmp_path, toys, monkeypatch, capsys):
    """`infer --out DIR` never replaces someone's results silently: a non-empty DIR stops before any
    work with one line naming --force; with --force (or an empty DIR) the run goes on (here to
    the missing --observed file); a file as --out is refused even with --force."""
    res = tmp_path / "res"
    res.mkdir()
    (res / "summary.json").write_text('{"my": "old fit"}')
    code, _, err = _run_cli(["infer", "--out", str(res)], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:") and "--force" in err and "another --out" in err
    assert err.count("\n") == 1 and (res / "summary.json").read_text() == '{"my": "old fit"}'
    missing = str(tmp_path / "nope.csv")
    for args in (["--out", str(res), "--force"], ["--out", str(tmp_path / "empty")]):
        (tmp_path / "empty").mkdir(exist_ok=True)
        code, _, err = _run_cli(["infer", "--observed", missing] + args, monkeypatch, capsys)
        assert code == 2 and "observed spectrum not found" in err, err
    (tmp_path / "f.txt").write_text("x")
    code, _, err = _run_cli(["infer", "--out", str(tmp_path / "f.txt"), "--force"], monkeypatch, capsys)
    assert code == 2 and "is a file" in err


@pytest.fixture(scope="module")
def toy_results(tmp_path_factory):
    """A small real results directory of the toy model (one chain, 30 draws, no plots)."""
    from lumina_jax.workflows import infer as api
    from lumina_jax.inference.sampling import SamplerConfig

    d = tmp_path_factory.mktemp("toyfit")
    (d / "inf.yaml").write_text(CONFIG)
    sp = toy_space()
    req = api.InferRequest(stage=1, out=d / "res", config_path=d / "inf.yaml", map_starts=2,
                           sampler=SamplerConfig(num_chains=1, num_warmup=30, num_samples=30, ridge=None))
    api.infer(req, emulator=ToyEmulator(sp), synthesizer=ToySynth(sp), log=lambda m: None)
    return d / "res"


def _strict_json(text):
    def no_constant(name):
        raise AssertionError(f"non-strict JSON token {name}")
    return json.loads(text[text.index("{"):], parse_constant=no_constant)


def test_check_ppc_needs_n_of_1_or_more_and_json_is_strict(tmp_path, toy_results, toys, monkeypatch, capsys):
    from lumina_jax.workflows import checks

    for n in ("0", "-3"):
        code, _, err = _run_cli(["check", "ppc", str(toy_results), "--n", n, "--json"], monkeypatch, capsys)
        assert code == 2 and f"--n must be >= 1, got {n}" in err and err.count("\n") == 1
    code, stdout, err = _run_cli(["check", "ppc", str(toy_results), "--n", "2", "--json", "--checkpoint", "toy.ckpt"], monkeypatch, capsys)
    assert code == 0, err[-800:]
    assert _strict_json(stdout)["n_draws"] == 2
    # a non-finite figure is written as null, never as a bare NaN token
    monkeypatch.setattr(checks, "ppc_physics", lambda *a, **k: {"n_draws": 1, "rms_synthesizer_median": float("nan")})
    code, stdout, _ = _run_cli(["check", "ppc", str(toy_results), "--json", "--checkpoint", "toy.ckpt"], monkeypatch, capsys)
    assert code == 0 and _strict_json(stdout)["rms_synthesizer_median"] is None


def test_damaged_results_and_wrong_stage_checkpoint_give_one_line_errors(tmp_path, toy_results, toys, monkeypatch,
                                                                          capsys):
    """`plot` / `check gradient` on a corrupt or foreign summary.json, a truncated posterior.nc, or with an
    emulator of another stage: one `error:` line, exit 2 (they were tracebacks)."""
    import shutil

    cases = {}
    for name, damage, msg in [
        ("badsum", lambda d: (d / "summary.json").write_text('{"stage": 1, "free": [\x01'), "not readable JSON"),
        ("foreign", lambda d: (d / "summary.json").write_text('{"my": "old fit"}'), "not a summary written by"),
        ("trunc", lambda d: (d / "posterior.nc").write_bytes((d / "posterior.nc").read_bytes()[:5000]),
         "posterior.nc is unreadable, truncated"),
    ]:
        d = tmp_path / name
        shutil.copytree(toy_results, d)
        damage(d)
        cases[name] = (d, msg)
    for d, msg in cases.values():
        for cmd in (["plot"], ["check", "gradient"], ["check", "ppc"]):
            code, _, err = _run_cli(cmd + [str(d)], monkeypatch, capsys)
            assert code == 2 and err.startswith("error:") and msg in err and err.count("\n") == 1, (cmd, err)
    monkeypatch.setattr(loaders, "get_emulator", lambda path: ToyEmulator(toy_space(stage=2)))
    for cmd in (["plot"], ["check", "gradient"]):
        code, _, err = _run_cli(cmd + [str(toy_results), "--checkpoint", "stage2.ckpt"], monkeypatch, capsys)
        assert code == 2 and "the emulator checkpoint is for stage 2, not stage 1" in err, err


def test_coverage_files_that_are_not_coverage_runs_are_refused(tmp_path, toys, monkeypatch, capsys):
    common = ["check", "coverage", "--n", "1", "--chains", "1", "--warmup", "10", "--samples", "10", "--map-starts", "1"]
    code, _, err = _run_cli(common + ["--noise", "0"], monkeypatch, capsys)
    assert code == 2 and "--noise must be a finite fraction of the flux > 0" in err
    for text in ("[1, 2, 3]", "garbage", '{"settings": 3}'):
        f = tmp_path / "x.json"
        f.write_text(text)
        for opt in ("--out", "--merge"):
            code, _, err = _run_cli(common + [opt, str(f)], monkeypatch, capsys)
            assert code == 2 and err.startswith("error:") and "coverage file" in err and err.count("\n") == 1, err



def test_fixed_emulator_sigma_reaches_the_fit_and_bad_values_stop_at_load(tmp_path, monkeypatch):
    """``likelihood: {emulator_sigma: fixed}``: ``infer`` samples with the emulator's sigma held
    at the MAP of the varying model (recorded in the summary); the density the sampler saw equals
    the frozen model rebuilt here from that reference point, and differs from the varying one."""
    import dataclasses

    import jax
    import jax.numpy as jnp

    from lumina_jax.errors import UserError
    from lumina_jax.inference import density as M
    from lumina_jax.workflows import infer as api, fit as F
    from lumina_jax.workflows.config import load_inference_config
    from lumina_jax.inference.sampling import SamplerConfig

    (tmp_path / "bad.yaml").write_text("likelihood: {emulator_sigma: sometimes}\n")
    with pytest.raises(UserError, match="emulator_sigma must be"):
        load_inference_config(tmp_path / "bad.yaml")
    assert load_inference_config().likelihood.emulator_sigma in ("varying", "fixed")
    (tmp_path / "inf.yaml").write_text(CONFIG.replace("log_scale_sd: 0.5,", "log_scale_sd: 0.5, emulator_sigma: fixed,"))
    seen = []
    make = F.make_likelihood_data
    monkeypatch.setattr(F, "make_likelihood_data", lambda *a, **k: seen.append(make(*a, **k)) or seen[-1])
    sp = toy_space()
    emu = ToyEmulator(sp, rel_sigma=0.01)
    req = api.InferRequest(stage=1, out=tmp_path / "res", config_path=tmp_path / "inf.yaml", map_starts=2,
                           sampler=SamplerConfig(num_chains=1, num_warmup=30, num_samples=30, ridge=None))
    out, _ = api.infer(req, emulator=emu, synthesizer=ToySynth(sp), log=lambda m: None)
    lk = out.summary["likelihood"]
    assert lk["emulator_sigma"] == "fixed"
    theta_ref = np.array([lk["emulator_sigma_reference"][n] for n in sp.names])
    assert np.all((theta_ref > sp.lower) & (theta_ref < sp.upper))
    setup, data = out.flat_model.setup, seen[0]
    frozen = M.flatten_model(setup, M.freeze_sigma(emu.spectrum_and_sigma, jnp.asarray(theta_ref))[0], data)
    varying = M.flatten_model(setup, emu.spectrum_and_sigma, data)
    z = 0.3 * jax.random.normal(jax.random.PRNGKey(1), (4, frozen.n_z))
    v_run, v_frozen, v_var = (np.asarray(jax.vmap(f.logdensity)(z)) for f in (out.flat_model, frozen, varying))
    np.testing.assert_allclose(v_run, v_frozen, rtol=1e-10)
    assert np.max(np.abs(v_run - v_var)) > 1e-3  # sigma moves with theta in the varying model
    # the request's value wins over the config's; the varying model is then what was sampled
    seen.clear()
    req_v = api.InferRequest(stage=1, out=tmp_path / "res_v", config_path=tmp_path / "inf.yaml", map_starts=2,
                             emulator_sigma="varying", sampler=SamplerConfig(num_chains=1, num_warmup=30, num_samples=30, ridge=None))
    out_v, _ = api.infer(req_v, emulator=emu, synthesizer=ToySynth(sp), log=lambda m: None)
    assert out_v.summary["likelihood"]["emulator_sigma"] == "varying"
    assert out_v.summary["likelihood"]["emulator_sigma_reference"] is None
    varying_v = M.flatten_model(setup, emu.spectrum_and_sigma, seen[0])
    np.testing.assert_allclose(np.asarray(jax.vmap(out_v.flat_model.logdensity)(z)),
                               np.asarray(jax.vmap(varying_v.logdensity)(z)), rtol=1e-10)
    with pytest.raises(UserError, match="emulator_sigma must be"):
        api.infer(dataclasses.replace(req_v, emulator_sigma="sometimes"), emulator=emu, log=lambda m: None)


def test_emulator_sigma_flag_is_checked_before_any_work(tmp_path, toys, monkeypatch, capsys):
    for cmd in (["infer", "--out", str(tmp_path / "r")], ["check", "coverage", "--n", "1"]):
        code, _, err = _run_cli(cmd + ["--emulator-sigma", "bogus"], monkeypatch, capsys)
        assert code == 2 and "--emulator-sigma must be varying or fixed" in err, err


def test_prepare_builds_infers_problem_without_fitting(tmp_path):
    """`api.prepare` (what the sampler benchmark's `--stage1-mock main` times) gives infer's problem:
    the config's mock truth, the synthesizer's spectrum on the emulator's grid within the window,
    the config's MAP starts; it writes nothing; the mode of the model it builds sits at the mock's
    line velocity (posterior sd < 100 km/s, see the first test)."""
    import jax
    import jax.numpy as jnp

    from lumina_jax.workflows import infer as api
    from lumina_jax.workflows.fit import build_model
    from lumina_jax.inference.optimize import find_map

    (tmp_path / "inf.yaml").write_text(CONFIG)
    sp = toy_space()
    emu = ToyEmulator(sp)
    req = api.InferRequest(stage=1, out=tmp_path / "res", config_path=tmp_path / "inf.yaml")
    p = api.prepare(req, emulator=emu, synthesizer=ToySynth(sp), log=lambda m: None)
    assert not (tmp_path / "res").exists()
    assert p.truth == {"a": 1.0, "v": 11000.0, "d": 0.5}
    assert p.sampler.map_starts == 8 and p.problem.truth == p.truth
    used = p.obs.wavelength[p.obs.mask]
    assert used.min() >= 3300.0 and used.max() <= 8800.0
    assert p.problem.meta["config"]["sampler"]["map_starts"] == 8  # the configuration it ran with is recorded
    fm, _ = build_model(p.problem)
    z_map, _, _, _ = find_map(fm, jax.random.PRNGKey(0), n_starts=4, n_steps=300)
    theta = np.asarray(fm.theta(jnp.asarray(z_map)))
    assert abs(theta[sp.index("v")] - 11000.0) < 300.0, theta
