"""One stage's fit: MAP, sampling, diagnostics and the results directory.

``results/stage{N}/`` holds
  posterior.nc   arviz InferenceData (posterior of the free parameters and nuisances,
                 sample_stats, observed_data, constant_data with the best-fit model)
  summary.json   {"stage", "best_fit", "posterior_median", "intervals", "diagnostics",
                  "converged", "residual_rms", ...}  (``best_fit`` and the intervals are read by --from)
  best_fit.json  {name: value} of the best fit (all parameters, fixed ones included)
  space.json     the sampling box
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.errors import UserError
from lumina_jax.observed import Observation
from lumina_jax.inference import diagnostics as diag
from lumina_jax.inference.likelihood import describe_emulator_error, make_likelihood_data, normalised_residual_rms, predicted_flux
from lumina_jax.inference.density import FitSetup, LikelihoodConfig, flatten_model, prior_draws, z_names
from lumina_jax.inference.optimize import find_map, hold_sigma_at_mode
from lumina_jax.inference.ridge import ridge_coordinate
from lumina_jax.inference.sampling import SamplerConfig, chain_count, run_nested
from lumina_jax.inference.precondition import run_preconditioned
from lumina_jax.workflows.config import EMULATOR_SIGMA_MODES, ConvergenceCriteria
from lumina_jax.workflows.results import FORMAT_VERSION, PLOT_FILES, write_netcdf

RMS_BAND = (3300.0, 9700.0)
#: what :func:`write_results` writes (``summary.json`` last: its presence marks a complete result)
RESULT_FILES = ("posterior.nc", "best_fit.json", "space.json", "summary.json")
MAX_SAVED_VALUES = 2e7  # thin very long (emcee) chains before writing NetCDF


@dataclasses.dataclass
class FitOutput:
    summary: dict
    idata: object
    draws_theta: np.ndarray  # [chains, draws, dim]
    flat_model: object


def _nuisance_draws(fm, zs):
    c = jax.vmap(jax.vmap(fm.constrain))(jnp.asarray(zs))
    out = {"f_sys": np.asarray(c["f_sys"]), "log_scale": np.asarray(c["log_scale"])}
    if "poly" in c:
        p = np.asarray(c["poly"])
        for k in range(p.shape[-1]):
            out[f"poly_{k + 1}"] = p[..., k]
    return out


@dataclasses.dataclass(frozen=True)
class FitProblem:
    """What one stage's fit is about: the model, the data and the likelihood's settings.

    setup: box, free and fixed parameters, priors (:class:`~lumina_jax.inference.density.FitSetup`);
    spectrum_and_sigma: the emulator, pure ``theta [dim] -> (flux, sigma)``; obs: the observation;
    on_bins: the same model restricted to grid bins (``Emulator.on_bins``; the density then
    evaluates only the likelihood's bins); likelihood: its settings (``stride``,
    ``emulator_rank``, ``emulator_sigma``; the error model below is already resolved from them);
    emu_basis ``[n_wave, r]`` (the emulator's empirical error correlation) or corr_length (A)
    select the correlated emulator-error likelihood, emu_var_scale its variance factor;
    truth: the mock's parameters (None for data); meta: recorded in the summary as given."""

    setup: FitSetup
    spectrum_and_sigma: Callable
    obs: Observation
    likelihood: LikelihoodConfig = LikelihoodConfig()
    on_bins: Callable | None = None
    emu_basis: object = None
    corr_length: float | None = None
    emu_var_scale: float = 1.0
    truth: dict | None = None
    meta: dict | None = None


def build_model(problem: FitProblem, spectrum_and_sigma: Callable | None = None, on_bins: Callable | None = None):
    """(flat model, likelihood data) of ``problem``: the density :func:`run_fit` samples, with
    the emulator's sigma still varying (``spectrum_and_sigma`` / ``on_bins``: another model in
    place of the problem's, e.g. the sigma-frozen one)."""
    lk = problem.likelihood
    obs = problem.obs
    data = make_likelihood_data(obs.wavelength, obs.flux, obs.sigma, obs.mask, corr_length=problem.corr_length,
                                emu_basis=problem.emu_basis, stride=lk.stride, emu_rank=lk.emulator_rank,
                                emu_var_scale=problem.emu_var_scale)
    model = spectrum_and_sigma or problem.spectrum_and_sigma
    bins = on_bins if spectrum_and_sigma is not None else problem.on_bins
    return flatten_model(problem.setup, model, data, on_bins=bins), data


def run_fit(problem: FitProblem, cfg: SamplerConfig, *, convergence: ConvergenceCriteria = ConvergenceCriteria(),
            log: Callable[[str], None] = lambda s: None) -> FitOutput:
    """Fit ``problem`` with the sampler ``cfg``: MAP search (or the NPE start), the emulator's
    sigma held at the mode when ``problem.likelihood.emulator_sigma`` is ``fixed`` (see
    :func:`~lumina_jax.inference.density.freeze_sigma`), Laplace preconditioning with the ridge
    shear, sampling, diagnostics judged by ``convergence``, best fit and summary."""
    setup, spectrum_and_sigma, obs = problem.setup, problem.spectrum_and_sigma, problem.obs
    lk = problem.likelihood
    emulator_sigma, corr_length, on_bins = lk.emulator_sigma, problem.corr_length, problem.on_bins
    stride, emu_var_scale, truth, meta = lk.stride, problem.emu_var_scale, problem.truth, problem.meta
    map_starts = cfg.map_starts
    if emulator_sigma not in EMULATOR_SIGMA_MODES:
        raise ValueError(f"emulator_sigma must be 'varying' or 'fixed', got {emulator_sigma!r}")
    space = setup.space
    fm, data = build_model(problem)
    emu_error = describe_emulator_error(data, corr_length)
    ridge = ridge_coordinate(cfg.ridge, setup, z_names(fm))  # an unknown name stops here, before the MAP
    key = jax.random.PRNGKey(cfg.seed)
    k_map, k_init = jax.random.split(key)
    t0 = time.perf_counter()
    npe_start = None
    if cfg.name == "npe" or cfg.init == "npe":  # amortised posterior: its draws, or its best draws as the starts
        from lumina_jax.workflows.npe_fit import MAP_STARTS as NPE_MAP_STARTS, npe_start as _npe_start

        npe_start = _npe_start(cfg, setup, obs, fm, data, spectrum_and_sigma, log=log)
        z_map, ld_map = npe_start.z_best, npe_start.ld_best
        if cfg.name != "npe":  # the climb from the NPE's best draws to the emulator posterior's mode
            top = npe_start.top_draws(NPE_MAP_STARTS)
            map_starts = int(top.shape[0])
            log(f"MAP search from the NPE's {map_starts} best draws: Adam + L-BFGS polish")
            z_map, ld_map, _, _ = find_map(fm, k_map, starts=top)
    else:
        log(f"MAP search: {map_starts} Adam starts + L-BFGS polish over {setup.n_free} free parameters + {fm.n_z - setup.n_free} nuisances")
        z_map, ld_map, _, _ = find_map(fm, k_map, n_starts=map_starts)
    _check_finite_map(ld_map, z_map)
    theta_ref, fm_sigma = None, spectrum_and_sigma
    if emulator_sigma == "fixed" and cfg.name != "npe":
        fm, z_map, ld0, ld_map, theta_ref, fm_sigma = hold_sigma_at_mode(fm, spectrum_and_sigma, data, z_map, on_bins)
        log(f"emulator sigma fixed at the MAP; mode re-polished: log posterior {ld0:.2f} -> {ld_map:.2f}")
        _check_finite_map(ld_map, z_map)
    t_map = time.perf_counter() - t0
    n_ch = chain_count(cfg)
    log(f"MAP log posterior {ld_map:.2f} ({t_map:.1f} s); sampling with {cfg.name}"
        + (f" ({n_ch} chains: its adaptation pools at least {cfg.chees.min_chains})" if n_ch != cfg.num_chains else ""))
    if cfg.name == "npe":  # independent draws of the amortised posterior
        run, pre = npe_start.run, {"preconditioned": False, "hessian_s": 0.0}
    elif cfg.name == "blackjax-nss":  # from the prior: no MAP start, no preconditioning
        if ridge is not None:
            log(f"ridge: blackjax-nss samples from the prior without preconditioning; the {cfg.ridge} shear is not used")
        run = run_nested(cfg, fm.logprior, fm.loglikelihood, lambda k, n: prior_draws(fm, k, n), log=log)
        pre = {"preconditioned": False, "hessian_s": 0.0}
    else:
        if cfg.ridge is not None and ridge is None:
            log(f"ridge: {cfg.ridge} is not a free parameter of this fit; sampling without the profile-path shear")
        elif ridge is not None and not cfg.precondition:
            log(f"ridge: the {cfg.ridge} shear needs the Laplace preconditioning, which is off; not used")
        run, pre = run_preconditioned(cfg, fm.logdensity, z_map, k_init, hessian=fm.hessian, ridge_index=ridge,
                                      value_and_grad=fm.value_and_grad)
        if pre.get("ridge"):
            r = pre["ridge"]
            w = r.get("width_ratio")
            widths = "" if not w else (f"; conditional widths x{w['min']:.2f}-{w['max']:.2f} along it, most "
                                       f"{z_names(fm)[w['most_varying']].removeprefix('u:')}")
            log(f"ridge: profile path along {cfg.ridge} straightened ({len(r['profile_offsets'])} points, "
                f"log density down {max(r['profile_drops']):.1f} at its ends{widths}, {r['seconds']:.1f} s)")
        elif ridge is not None and cfg.precondition:
            log(f"ridge: too few profile points along {cfg.ridge}; sampling without the shear")
    zs = run.positions
    theta = np.asarray(jax.jit(jax.vmap(jax.vmap(fm.theta)))(jnp.asarray(zs)))
    nuis = _nuisance_draws(fm, zs)
    free_idx = setup.free_index
    names = list(setup.free) + list(nuis)
    phys = np.concatenate([theta[..., free_idx]] + [v[..., None] for v in nuis.values()], axis=-1)
    d = diag.summarize_run(run, names, phys)
    problems = diag.convergence_problems(d, rhat_max=convergence.rhat_max,
                                         max_divergent_frac=convergence.max_divergent_frac)

    # best fit: the MAP, or the highest-density draw if a draw beats it
    i_best = np.unravel_index(np.nanargmax(run.logdensity), run.logdensity.shape)
    z_best = np.asarray(z_map) if ld_map >= run.logdensity[i_best] else zs[i_best]
    ld_best = max(ld_map, float(run.logdensity[i_best]))
    theta_best = np.asarray(fm.theta(jnp.asarray(z_best)))
    nuis_best = {k: np.asarray(v).tolist() for k, v in fm.nuisance(jnp.asarray(z_best)).items()}
    # the sigma the likelihood used: at the reference point when it was held there
    flux_best, sig_best = (np.asarray(a) for a in fm_sigma(jnp.asarray(theta_best)))
    coeffs = jnp.asarray(nuis_best.get("poly", []), dtype=float)
    model_best = np.asarray(predicted_flux(jnp.asarray(flux_best), nuis_best["log_scale"], coeffs, data.x))
    rms = float(normalised_residual_rms(jnp.asarray(flux_best), data, nuis_best["log_scale"], coeffs,
                                        obs.wavelength, RMS_BAND))
    flat = phys.reshape(-1, phys.shape[-1])
    # q0.15 / q99.85: the central 99.7 % that `--relax union` adds to the next stage's box
    q = np.percentile(flat, [0.15, 2.5, 16, 50, 84, 97.5, 99.85], axis=0)
    intervals = {n: {"q0.15": q[0, i], "q2.5": q[1, i], "q16": q[2, i], "median": q[3, i], "q84": q[4, i],
                     "q97.5": q[5, i], "q99.85": q[6, i], "mean": float(flat[:, i].mean()),
                     "sd": float(flat[:, i].std())}
                 for i, n in enumerate(names)}
    intervals = {n: {k: float(v) for k, v in iv.items()} for n, iv in intervals.items()}
    summary = {
        "format_version": FORMAT_VERSION,
        "stage": int(space.stage),
        "best_fit": space.to_dict(theta_best),
        "best_fit_log_posterior": float(ld_best),
        "nuisance_best_fit": nuis_best,
        "posterior_median": {n: intervals[n]["median"] for n in setup.free},
        "fixed": dict(setup.fixed),
        "free": list(setup.free),
        "intervals": intervals,
        "residual_rms": {"band_angstrom": list(RMS_BAND), "value": rms,
                         "definition": "RMS of (y_obs - m_best) over used bins, normalised flux"},
        "n_bins_used": int(obs.n_used),
        "converged": not problems,
        "problems": problems,
        "diagnostics": d,
        "map": {"log_posterior": float(ld_map), "wall_s": t_map, "starts": map_starts},
        "preconditioning": {"laplace": pre["preconditioned"], "hessian_s": pre["hessian_s"],
                            "init_scale": cfg.init_scale, "ridge": pre.get("ridge")},
        "sampler_config": dataclasses.asdict(cfg),
        "convergence_criteria": dataclasses.asdict(convergence),
        "evidence": ({k: run.info[k] for k in ("log_evidence", "log_evidence_sd", "runs")}
                     if cfg.name == "blackjax-nss" else None),
        "likelihood": {"emulator_error": emu_error, "emulator_corr_length": corr_length, "stride": stride,
                       "emulator_error_cov_scale": float(emu_var_scale) if data.emu_diag is not None and corr_length is None else None,
                       "emulator_rank": None if data.emu_basis is None else int(data.emu_basis.shape[1]), "n_poly": setup.n_poly, "f_sys_range": list(setup.f_sys_range),
                       "f_sys_prior": setup.f_sys_prior, "f_sys_scale": setup.f_sys_scale,
                       "log_scale_sd": setup.log_scale_sd, "poly_sd": setup.poly_sd,
                       "ordering_softness": setup.ordering_softness, "box_link": setup.box_link,
                       "emulator_sigma": emulator_sigma if cfg.name != "npe" else "varying",
                       "emulator_sigma_reference": (space.to_dict(np.asarray(theta_ref)) if theta_ref is not None
                                                    else None),
                       "priors": {n: [m, s] for n, m, s in setup.priors},
                       "has_observational_errors": bool(obs.has_errors)},
        "observation": obs.meta,
        "space": space.to_dict(),
    }
    summary.update(meta or {})
    if npe_start is not None:
        summary["npe"] = npe_start.info
    if truth is not None:
        cover = {}
        for n in setup.free:
            iv = intervals[n]
            t = float(truth[n])
            cover[n] = {"truth": t, "in68": iv["q16"] <= t <= iv["q84"], "in95": iv["q2.5"] <= t <= iv["q97.5"]}
        summary["truth_recovery"] = {"per_parameter": cover,
                                     "all_in95": all(c["in95"] for c in cover.values()),
                                     "frac_in68": float(np.mean([c["in68"] for c in cover.values()])),
                                     "frac_in95": float(np.mean([c["in95"] for c in cover.values()]))}

    # InferenceData
    c, dr = phys.shape[:2]
    step = max(1, int(np.ceil(phys.size / MAX_SAVED_VALUES / 1.0)))
    post = {n: phys[:, ::step, i] for i, n in enumerate(names)}
    stats = {"lp": run.logdensity[:, ::step], "diverging": run.diverging[:, ::step]}
    observed = {"flux": obs.flux, "sigma_obs": obs.sigma, "mask": obs.mask.astype(np.int8)}
    constant = {"wavelength": obs.wavelength, "best_model_flux": model_best, "best_emulator_flux": flux_best,
                "best_emulator_sigma": sig_best, "theta_best": theta_best,
                "fixed_theta": setup.base_theta()}
    idata = diag.make_inference_data(post, sample_stats=stats, observed=observed, constant=constant,
                                     attrs={"stage": int(space.stage), "sampler": cfg.name,
                                            "thinned_by": step, "parameter_names": json.dumps(list(space.names))})
    return FitOutput(summary, idata, theta, fm)


def _check_finite_map(ld_map, z_map) -> None:
    """Stop before sampling when the mode search ended at a non-finite log posterior: the
    emulator (e.g. a damaged checkpoint) or the data give NaN / inf, and every draw would too."""
    if not (np.isfinite(float(ld_map)) and np.all(np.isfinite(np.asarray(z_map)))):
        raise UserError(f"the MAP search found no finite log posterior (log posterior {float(ld_map)}): the emulator "
                        "returns non-finite spectra or the data cannot be fitted; nothing was sampled -- check the "
                        "emulator checkpoint (`lumina-jax emulator report CKPT --data STORE`) and the observed spectrum")


def write_results(out: FitOutput, out_dir: Path) -> Path:
    """Write posterior.nc, summary.json, best_fit.json, space.json into ``out_dir``.

    A previous run's results and plots there (:data:`RESULT_FILES`, ``results.PLOT_FILES``) are
    removed first, ``summary.json`` before the others, so that no file of an older fit is
    left beside the new one (the caller decided that ``out_dir`` may be overwritten)."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("summary.json",) + RESULT_FILES + PLOT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    write_netcdf(out.idata, out_dir / "posterior.nc")
    _write_json(out_dir / "best_fit.json", out.summary["best_fit"])
    _write_json(out_dir / "space.json", out.summary["space"])
    _write_json(out_dir / "summary.json", out.summary)  # last: its presence marks a complete result
    return out_dir


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_json_default))
    tmp.replace(path)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.bool_):
        return bool(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
