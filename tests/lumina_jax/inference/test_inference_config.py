"""The typed inference configuration: defaults stated once, every YAML key checked at load (one
error line naming it), the sampler section as the defaults of `infer`'s flags."""

from __future__ import annotations

import pytest

from lumina_jax.errors import UserError
from lumina_jax.workflows import infer as api
from lumina_jax.workflows.config import load_inference_config

from inference_toys import run_cli as _run_cli


class _Stop(Exception):
    pass


@pytest.fixture
def seen_request(monkeypatch):
    """Replace api.infer by a spy that records the request and stops (no fit)."""
    seen = []

    def spy(req, **kw):
        seen.append(req)
        raise _Stop

    monkeypatch.setattr(api, "infer", spy)
    return seen


@pytest.mark.parametrize("yaml_text, msg", [
    ("likelihood: {emulator_corr_length: abc}", "likelihood.emulator_corr_length must be a positive length"),
    ("likelihood: {poly_sd: abc}", "likelihood.poly_sd must be a positive number, got 'abc'"),
    ("likelihood: {log_scale_sd: -1}", "likelihood.log_scale_sd must be a positive number, got -1"),
    ("likelihood: {f_sys_range: abc}", "likelihood.f_sys_range must be [low, high] with 0 < low < high"),
    ("likelihood: {f_sys_range: [0.3, 0.001]}", "likelihood.f_sys_range must be"),
    ("likelihood: {n_poly: abc}", "likelihood.n_poly must be an integer in 0..10"),
    ("likelihood: {n_poly: -1}", "likelihood.n_poly must be an integer in 0..10"),
    ("likelihood: {ordering_softness: .nan}", "likelihood.ordering_softness must be"),
    ("priors: {t_exp: [a, 1]}", "priors.t_exp must be [mean, sd]"),
    ("priors: {t_exp: [18, 0]}", "priors.t_exp must be [mean, sd]"),
    ("priors: {t_exp: 18}", "priors.t_exp must be [mean, sd]"),
    ("observed: {redshift: abc}", "observed.redshift must be a number in (-0.01, 5)"),
    ("observed: {telluric: yes please}", "observed.telluric must be true or false"),
    ("observed: {edge_trim: -5}", "observed.edge_trim must be a number >= 0"),
    ("observed: {window: [9000, 3000]}", "observed.window must be [low, high] with low < high"),
    ("mock: {noise_frac: 0}", "mock.noise_frac must be a positive number"),
    ("mock: {stage1: {t_exp: abc}}", "mock.stage1 must be a mapping {name: number}"),
    ("sampler: {map_starts: abc}", "sampler.map_starts must be an integer >= 1"),
    ("sampler: {map_starts: 0}", "sampler.map_starts must be an integer >= 1"),
    ("sampler: {num_chains: 0}", "sampler.num_chains must be an integer >= 1"),
    ("sampler: {name: gibbs}", "sampler.name must be one of nuts, hmc"),
    ("sampler: {target_accept: 1.5}", "sampler.target_accept must be a number in (0, 1)"),
    ("sampler: {ridge: 3}", "sampler.ridge must be a parameter name (e.g. t_exp), or null / none"),
    ("sampler: {ridge: t exp}", "sampler.ridge must be a parameter name"),
    ("convergence: {rhat_max: abc}", "convergence.rhat_max must be a number >= 1"),
    ("convergence: {max_divergent_frac: 2}", "convergence.max_divergent_frac must be a number in [0, 1]"),
])
def test_bad_config_values_stop_at_load_naming_the_key(tmp_path, yaml_text, msg):
    p = tmp_path / "c.yaml"
    p.write_text(yaml_text + "\n")
    with pytest.raises(UserError) as exc:
        load_inference_config(p)
    assert msg in str(exc.value) and str(exc.value).startswith(str(p))


@pytest.mark.parametrize("section", ["mock", "likelihood", "observed", "sampler", "convergence"])
def test_unknown_keys_are_rejected_in_every_section(tmp_path, section):
    p = tmp_path / "c.yaml"
    p.write_text(f"{section}: {{bogus_key: 1}}\n")
    with pytest.raises(UserError, match=rf"unknown key {section}\.bogus_key; known keys of '{section}': "):
        load_inference_config(p)
    p.write_text("f_sys_priors: {}\n")
    with pytest.raises(UserError, match=r"unknown section\(s\) \['f_sys_priors'\]; known: convergence, likelihood"):
        load_inference_config(p)


def test_defaults_are_stated_once_so_the_library_fits_what_the_cli_fits():
    """No file restates a default: no YAML means InferenceConfig(); the library's own defaults
    (SamplerConfig(), make_setup, FitProblem) are the configuration's."""
    import numpy as np

    from lumina_jax.inference.density import LikelihoodConfig, make_setup
    from lumina_jax.inference.sampling import SamplerConfig
    from lumina_jax.observed import Observation
    from lumina_jax.params import load_space
    from lumina_jax.workflows.config import InferenceConfig
    from lumina_jax.workflows.fit import FitProblem

    cfg = load_inference_config()
    assert cfg == InferenceConfig()
    assert cfg.sampler == SamplerConfig()
    assert (cfg.sampler.num_samples, cfg.sampler.ridge, cfg.sampler.map_starts) == (1000, "t_exp", 32)
    assert (cfg.likelihood.n_poly, cfg.likelihood.stride, cfg.observed.edge_trim) == (2, 8, 10.0)
    for stage, link in ((1, "logit"), (2, "probit"), (3, "probit")):
        setup = make_setup(load_space(stage))
        assert (setup.n_poly, setup.box_link, setup.f_sys_prior) == (2, link, "half-normal")
        assert setup.box_link == cfg.likelihood.link(stage)
    obs = Observation(np.arange(3.0), np.ones(3), np.ones(3), np.ones(3, bool), True, {})
    assert FitProblem(make_setup(load_space(1)), lambda th: None, obs).likelihood == LikelihoodConfig()
    from lumina_jax.params import CONFIG_DIR

    assert not (CONFIG_DIR / "inference.yaml").exists()  # no second statement of the defaults


def test_config_show_prints_a_file_that_loads_back_to_the_same_configuration(tmp_path, monkeypatch, capsys):
    import dataclasses
    import json

    from lumina_jax.workflows.config import CONFIG_FORMAT_VERSION, InferenceConfig

    code, out, _ = _run_cli(["config", "show"], monkeypatch, capsys)
    assert code == 0
    p = tmp_path / "all.yaml"
    p.write_text(out)
    assert load_inference_config(p) == InferenceConfig()
    p.write_text(out.replace("n_poly: 2", "n_poly: 3").replace("moves: stretch", "moves: de"))
    cfg = load_inference_config(p)
    want = InferenceConfig()
    want = dataclasses.replace(want, likelihood=dataclasses.replace(want.likelihood, n_poly=3),
                               sampler=dataclasses.replace(want.sampler, emcee=dataclasses.replace(want.sampler.emcee,
                                                                                                   moves="de")))
    assert cfg == want
    code, out, _ = _run_cli(["config", "show", "--config", str(p), "--json"], monkeypatch, capsys)
    rec = json.loads(out)
    assert rec["format_version"] == CONFIG_FORMAT_VERSION and rec["likelihood"]["n_poly"] == 3
    code, _, err = _run_cli(["config", "show", "--config", str(tmp_path / "missing.yaml")], monkeypatch, capsys)
    assert code == 2 and "inference config not found" in err and err.count("\n") == 1


def test_nested_sampler_options_are_checked(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sampler: {emcee: {moves: gibbs}}\n")
    with pytest.raises(UserError, match=r"sampler\.emcee\.moves must be one of stretch, de"):
        load_inference_config(p)
    p.write_text("sampler: {nested: {bogus: 1}}\n")
    with pytest.raises(UserError, match=r"unknown key sampler\.nested\.bogus; known keys of 'sampler.nested'"):
        load_inference_config(p)
    p.write_text("sampler: {emcee: 3}\n")
    with pytest.raises(UserError, match="'sampler.emcee' must be a mapping"):
        load_inference_config(p)


def test_sampler_section_gives_the_defaults_that_flags_override(tmp_path, monkeypatch, capsys, seen_request):
    p = tmp_path / "c.yaml"
    p.write_text("sampler: {name: hmc, num_chains: 2, num_warmup: 100, num_samples: 200, target_accept: 0.9, "
                 "max_tree_depth: 6, map_starts: 3}\n")
    with pytest.raises(_Stop):
        _run_cli(["infer", "--config", str(p), "--out", str(tmp_path / "r")], monkeypatch, capsys)
    sc = seen_request[-1].sampler
    assert (sc.name, sc.num_chains, sc.num_warmup, sc.num_samples, sc.target_accept, sc.max_tree_depth) == \
        ("hmc", 2, 100, 200, 0.9, 6)
    with pytest.raises(_Stop):
        _run_cli(["infer", "--config", str(p), "--out", str(tmp_path / "r"), "--sampler", "nuts", "--chains", "3",
                  "--warmup", "50", "--samples", "60", "--target-accept", "0.7"], monkeypatch, capsys)
    sc = seen_request[-1].sampler
    assert (sc.name, sc.num_chains, sc.num_warmup, sc.num_samples, sc.target_accept, sc.max_tree_depth) == \
        ("nuts", 3, 50, 60, 0.7, 6)
    assert sc.ridge == "t_exp"  # this config has no ridge key: the schema's default, as the shipped config
    for text, flag, want in (("", [], "t_exp"), ("", ["--ridge", "log_L"], "log_L"), ("", ["--ridge", "none"], None),
                             ("ridge: none", [], None), ("ridge: null", [], None), ("ridge: null", ["--ridge", "t_exp"], "t_exp")):
        p.write_text(f"sampler: {{{text}}}\n")
        with pytest.raises(_Stop):
            _run_cli(["infer", "--config", str(p), "--out", str(tmp_path / "r")] + flag, monkeypatch, capsys)
        assert seen_request[-1].sampler.ridge == want, (text, flag)
    p.write_text("sampler: {name: hmc, map_starts: 3}\n")
    # a bad config stops the CLI with one line before any work
    p.write_text("likelihood: {bogus_key: 1}\n")
    code, _, err = _run_cli(["infer", "--config", str(p), "--out", str(tmp_path / "r")], monkeypatch, capsys)
    assert code == 2 and err.startswith("error:") and "likelihood.bogus_key" in err and err.count("\n") == 1


@pytest.mark.parametrize("args, msg", [
    (["--prior", "t_exp=nan,1"], "MEAN must be finite and SD finite and > 0"),
    (["--prior", "t_exp=18,0"], "MEAN must be finite and SD finite and > 0"),
    (["--prior", "t_exp=18"], "must look like NAME=MEAN,SD"),
    (["--mock-noise", "0"], "--mock-noise must be a finite fraction of the flux > 0"),
    (["--mock-noise", "-0.1"], "--mock-noise must be"),
    (["--mock-noise", "nan"], "--mock-noise must be"),
    (["--window", "nan,9000"], "LO and HI must be finite"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--chains", "0"], "num_chains >= 1"),
    (["--ridge", "t-exp"], "--ridge must be a parameter name (e.g. t_exp) or none"),
])
def test_bad_flag_values_stop_before_any_work(tmp_path, monkeypatch, capsys, seen_request, args, msg):
    code, _, err = _run_cli(["infer", "--out", str(tmp_path / "r")] + args, monkeypatch, capsys)
    assert code == 2 and err.startswith("error:") and msg in err and err.count("\n") == 1, err
    assert not seen_request


def test_setup_rejects_non_finite_prior_and_nuisance_widths():
    from inference_toys import toy_space
    from lumina_jax.inference.density import make_setup

    for kw, msg in [({"priors": {"a": (float("nan"), 1.0)}}, "finite mean"), ({"log_scale_sd": -1.0}, "log_scale_sd"),
                    ({"poly_sd": float("inf")}, "poly_sd")]:
        with pytest.raises(UserError, match=msg):
            make_setup(toy_space(), **kw)
