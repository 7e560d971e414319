"""`lumina-jax chain-report`, the abundance-profile figure and the corner plot on results
directories of the stage-1 ejecta space (written here with made-up draws around a known model)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from lumina_jax import derived
from lumina_jax.cli import app
from lumina_jax.inference import diagnostics as diag
from lumina_jax.workflows.results import write_netcdf
from lumina_jax.workflows import plots
from lumina_jax.params import load_space

MOCK1 = {"log_L": 43.0, "v_inner": 10500.0, "log_rho_0": -13.2, "density_exp": -7.0, "T_e_ratio": 0.9,
         "v_core": 12000.0, "v_wall": 16000.0, "X_Fe_core": 0.4, "X_Si_wall": 0.5, "v_break": 18000.0,
         "density_exp_outer": -10.0, "t_exp": 18.0, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}


def _results(d, rms, seed=0, record_derived=False):
    space = load_space(1)
    rng = np.random.default_rng(seed)
    theta = space.from_dict(MOCK1)
    free = [n for n in space.names if n not in space.inactive]
    draws = {n: theta[space.index(n)] * (1 + 1e-4 * rng.standard_normal((2, 50))) for n in free}
    wave = np.linspace(3300.0, 9700.0, 64)
    flux = 1.0 + 0.1 * np.sin(wave / 500.0)
    idata = diag.make_inference_data(
        draws, observed={"flux": flux, "sigma_obs": np.full(64, 0.02), "mask": np.ones(64, np.int8)},
        constant={"wavelength": wave, "best_model_flux": flux + rms, "fixed_theta": theta},
        attrs={"stage": 1, "parameter_names": json.dumps(list(space.names))})
    d.mkdir(parents=True)
    write_netcdf(idata, d / "posterior.nc")
    summary = {"stage": 1, "free": free, "fixed": {}, "space": space.to_dict(), "likelihood": {},
               "nuisance_best_fit": {}, "converged": True, "best_fit": MOCK1,
               "diagnostics": {"max_rhat": 1.003, "divergences": 0},
               "residual_rms": {"value": rms, "band_angstrom": [3300.0, 9700.0]}}
    if record_derived:
        summary["derived"] = derived.summarise(np.repeat(theta[None], 3, 0), space)
    (d / "summary.json").write_text(json.dumps(summary))
    return theta, space


def test_chain_report_computes_masses_from_the_draws(tmp_path):
    theta, space = _results(tmp_path / "a", 0.11)
    _results(tmp_path / "b", 0.07, seed=1, record_derived=True)
    rep = plots.chain_report([tmp_path / "a", tmp_path / "b"])
    assert [r["residual_rms"] for r in rep["stages"]] == [0.11, 0.07]
    exact = {k: float(v) for k, v in derived.masses(theta, space).items()}
    for r in rep["stages"]:
        # the draws scatter by 1e-4 (relative) around the model: medians within 1 % of its masses
        assert r["derived"]["M_total"]["median"] == pytest.approx(exact["M_total"], rel=0.01)
        assert r["derived"]["M_56Ni_0"]["median"] == pytest.approx(exact["M_56Ni_0"], rel=0.01)


def test_chain_report_cli_writes_both_figures_and_refuses_to_overwrite(tmp_path):
    _results(tmp_path / "a", 0.11)
    fig, ab = tmp_path / "chain.png", tmp_path / "ab.png"
    r = CliRunner().invoke(app, ["chain-report", str(tmp_path / "a"), "--figure", str(fig), "--abundance", str(ab)])
    assert r.exit_code == 0, r.output
    assert "RMS 0.1100" in r.output and "M_56Ni_0" in r.output
    assert fig.stat().st_size > 10_000 and ab.stat().st_size > 10_000
    before = fig.read_bytes()
    r = CliRunner().invoke(app, ["chain-report", str(tmp_path / "a"), "--figure", str(fig)])
    assert r.exit_code != 0 and fig.read_bytes() == before


def test_corner_plot_labels_every_parameter_with_its_unit_and_marks_the_truths(tmp_path):
    import re

    from lumina_jax.params import label
    from lumina_jax.workflows.results import load_results

    _results(tmp_path / "a", 0.1)
    summary, idata = load_results(tmp_path / "a")
    summary["mock"] = {"truth": MOCK1}
    summary["diagnostics"]["sampler"] = "nuts"
    fig = plots.corner_plot(summary, idata, tmp_path / "corner.png")
    assert (tmp_path / "corner.png").stat().st_size > 50_000
    names = summary["free"]
    k = len(names)
    axes = np.asarray(fig.axes).reshape(k, k)
    xlabels = [ax.get_xlabel() for ax in axes[-1]]
    ylabels = [ax.get_ylabel() for ax in axes[1:, 0]]
    assert xlabels == [label(n) for n in names] and ylabels == xlabels[1:]
    for lab in xlabels:  # "symbol [unit]" with a unit for every parameter
        assert re.fullmatch(r".+ \[[^\]]+\]", lab), lab
    by_name = dict(zip(names, xlabels))
    assert by_name["v_inner"].endswith("[km/s]") and by_name["t_exp"].endswith("[d]")
    assert by_name["log_L"].endswith("[erg/s]") and by_name["log_rho_0"].endswith("[g/cm$^{3}$]")
    assert by_name["X_Ni"].endswith("[dimensionless]") and by_name["density_exp"].endswith("[dimensionless]")
    # diagonals: the truth as a vertical line, the 16 / 50 / 84 % quantiles dashed
    for i, n in enumerate(names):
        lines = axes[i, i].get_lines()
        assert any(np.allclose(ln.get_xdata(), MOCK1[n]) for ln in lines), n
        assert sum(ln.get_linestyle() == "--" for ln in lines) == 3, n
    title = fig._suptitle.get_text()
    assert "stage 1" in title and "nuts" in title and "68 / 95 % contours" in title and "omitted" not in title


def test_corner_plot_of_a_large_space_shows_15_parameters_and_says_which(tmp_path):
    import arviz as az

    space = load_space(3)
    free = [n for n in space.names if n not in space.inactive]
    rng = np.random.default_rng(0)
    idata = az.from_dict(posterior={n: 0.5 + rng.random((2, 40)) for n in free})
    summary = {"stage": 3, "free": free, "space": space.to_dict(), "diagnostics": {"sampler": "blackjax-chees"}}
    fig = plots.corner_plot(summary, idata, tmp_path / "corner.png")
    assert len(fig.axes) == plots.MAX_CORNER ** 2 == 225
    title = fig._suptitle.get_text()
    assert f"15 of {len(free)} free parameters shown: {', '.join(free[:15])}" in title
    assert f"omitted: {free[15]} ... {free[-1]}" in title and "blackjax-chees" in title
    assert fig.axes[-1].get_xlabel() == "$X_{\\mathrm{Ti}}$ zone 0 [dimensionless]"
