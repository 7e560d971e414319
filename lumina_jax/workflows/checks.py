"""Posterior checks against the physics.

1. :func:`coverage` -- injection-recovery: draw theta from the prior (the sampling box),
   simulate with the *synthesizer*, add noise, infer with the *emulator* exactly as
   ``lumina-jax infer`` does (``run_fit``: MAP, Laplace preconditioning, NUTS), and count how
   often the central 68 % / 95 % intervals contain the truth.
2. :func:`gradient_agreement` -- at the posterior mode, d logL / d u (unit box) through the
   emulator vs through the synthesizer (jax.grad through the physics; central finite
   differences when the preprocessing is not traceable); cosine similarity and per-parameter ratios.
3. :func:`ppc_physics` -- posterior draws re-simulated by the synthesizer: residual RMS of
   the synthesizer spectra against the data beside that of the emulator spectra.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.diagnostics import format_rhat
from lumina_jax.inference.likelihood import LikelihoodData, log_likelihood, predicted_flux
from lumina_jax.inference.density import FitSetup, LikelihoodConfig, freeze_sigma
from lumina_jax.observed import observation_from_model, observation_from_prediction
from lumina_jax.inference.sampling import SamplerConfig, chain_count


def coverage(setup: FitSetup, emulator, simulate: Callable, *, n_injections: int = 50, noise_frac: float = 0.02,
             sampler: SamplerConfig | None = None, seed: int = 0, window=None,
             likelihood: LikelihoodConfig = LikelihoodConfig(), emu_basis=None, corr_length=None,
             emu_var_scale: float = 1.0, log: Callable[[str], None] = lambda s: None, done: list | None = None,
             on_record: Callable[[list], None] | None = None, shard: tuple[int, int] | None = None,
             simulates_prediction: bool = False) -> dict:
    """Injection-recovery coverage (see module docstring).  ``simulate(theta) -> (wave, L_lambda)``;
    with ``simulates_prediction`` it returns the emulator's own preprocessed prediction on its grid
    instead (a self-consistency run: the mock's mean is the prediction exactly,
    :func:`lumina_jax.observed.observation_from_prediction`).

    Truths are drawn by :func:`injection_draws` (the box with valid velocity orderings).
    Each injection is fitted exactly like ``lumina-jax infer`` (:func:`lumina_jax.workflows.fit.run_fit`:
    multi-start MAP, Laplace preconditioning, ``sampler``; default NumPyro NUTS with 4 chains
    x (300 warm-up + 300 draws)), one after the other, with ``log`` progress after each.
    ``done``: per-injection records of an interrupted run to resume from (``on_record(records)``
    is called after every injection, e.g. to save them).  ``shard=(k, m)``: fit only the
    injections ``i`` with ``i % m == k`` (the draws are those of the full run, so shards run
    in parallel and their records, passed together as ``done``, make the full run).
    ``likelihood`` (its stride, rank and emulator-sigma mode), ``emu_basis`` / ``corr_length`` /
    ``emu_var_scale``: the emulator-error likelihood, as in :class:`~lumina_jax.workflows.fit.FitProblem`.

    Returns the fraction of injections whose central 68 % / 95 % intervals (per free
    parameter) contain the truth, per parameter and on average, the per-injection max R-hat
    and divergence fraction, and the per-injection records."""
    import time

    from lumina_jax.workflows.fit import FitProblem, run_fit

    sampler = sampler or SamplerConfig(num_chains=4, num_warmup=300, num_samples=300)
    thetas, u_true = injection_draws(setup, n_injections, seed)
    records = list(done or [])
    for r in records:  # a resumed run must be the same injections
        if r["index"] >= n_injections or not np.allclose(r["u_true"], u_true[r["index"]]):
            raise ValueError("the records to resume from were made with other settings (seed / n / stage)")
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (k, m) with 0 <= k < m, got {shard}")
    mine = [i for i in range(n_injections) if shard is None or i % shard[1] == shard[0]]
    have = {r["index"] for r in records}
    todo = [i for i in mine if i not in have]
    emu_error = None
    t0 = time.perf_counter()
    n_done0 = len(records)
    for i in todo:
        obs = _one_observation(thetas[i], simulate, emulator, noise_frac, seed + 7919 * i, window, simulates_prediction)
        problem = FitProblem(setup, emulator.spectrum_and_sigma, obs, likelihood=likelihood,
                             on_bins=getattr(emulator, "on_bins", None), emu_basis=emu_basis, corr_length=corr_length,
                             emu_var_scale=emu_var_scale, truth=setup.space.to_dict(thetas[i]))
        fit = run_fit(problem, dataclasses.replace(sampler, seed=seed + i))
        s = fit.summary
        emu_error = s["likelihood"]["emulator_error"]
        tr = s["truth_recovery"]["per_parameter"]
        d = s["diagnostics"]
        draws = fit.draws_theta[..., setup.free_index].reshape(-1, setup.n_free)
        rec = {"index": int(i), "u_true": u_true[i].tolist(), "max_rhat": d["max_rhat"],
               "divergent_fraction": float(d["divergent_fraction"]),
               "in68": [bool(tr[n]["in68"]) for n in setup.free], "in95": [bool(tr[n]["in95"]) for n in setup.free],
               # posterior quantile of the truth per parameter: uniform on [0, 1] for calibrated posteriors
               "truth_quantile": np.mean(draws < thetas[i][setup.free_index], axis=0).tolist(),
               "f_sys_median": float(s["intervals"]["f_sys"]["median"])}
        hits = _next_box_hits(setup, thetas[i], s["best_fit"], draws)
        if hits is not None:
            rec["next_box"] = hits
        records.append(rec)
        if on_record is not None:
            on_record(records)
        n_new = len(records) - n_done0
        el = time.perf_counter() - t0
        eta = el / n_new * (len(todo) - n_new)
        run68 = np.mean([r["in68"] for r in records])
        run95 = np.mean([r["in95"] for r in records])
        log(f"coverage: {len(records)}/{len(mine)} injections, {el:.0f} s elapsed, ~{eta:.0f} s left; running "
            f"mean in68 {run68:.3f}, in95 {run95:.3f}; this one: max R-hat {format_rhat(rec['max_rhat'], 3)}, "
            f"in68 {np.mean(rec['in68']):.2f}")

    records.sort(key=lambda r: r["index"])
    multi = chain_count(sampler) > 1  # one chain: no R-hat
    rhats = np.asarray([np.nan if r["max_rhat"] is None else r["max_rhat"] for r in records], float)
    out = {"n_injections": n_injections, "n_fitted": len(records), "shard": list(shard) if shard else None,
           "noise_frac": noise_frac, "emulator_error": emu_error,
           "sampler": {**dataclasses.asdict(sampler), "laplace_preconditioned": sampler.precondition},
           "per_parameter": {},
           "divergent_fraction": float(np.mean([r["divergent_fraction"] for r in records])),
           "max_rhat_median": float(np.nanmedian(rhats)) if multi else None,
           "frac_injections_rhat_le_1.01": float(np.mean(rhats <= 1.01)) if multi else None,
           "wall_s": time.perf_counter() - t0}
    for key in ("in68", "in95"):
        inside = np.asarray([r[key] for r in records], bool)  # [n_inj, n_free]
        for j, n in enumerate(setup.free):
            out["per_parameter"].setdefault(n, {})[key] = float(inside[:, j].mean())
        out[f"mean_{key}"] = float(inside.mean())
        if multi:  # the same figure over the injections that converged (R-hat <= 1.01)
            ok = rhats <= 1.01
            out[f"mean_{key}_converged"] = float(inside[ok].mean()) if ok.any() else None
    out.update(coverage_uncertainty(records, list(setup.free)))
    relax = relaxation_summary(records)
    if relax is not None:
        out["relaxation"] = relax
    for n, p in out.pop("truth_quantile_ks_pvalue").items():
        out["per_parameter"][n]["truth_quantile_ks_pvalue"] = p
    out["injections"] = records
    return out


#: central posterior mass of the interval that the posterior-aware box adds to the +-10 % box
UNION_MASS = 0.997


def _next_box_hits(setup: FitSetup, theta_true, best_fit: dict, draws) -> dict | None:
    """:func:`lumina_jax.params.next_box_hits` of one injection (None at the last stage): the
    truth carried into stage N+1 against the +-10 % box around the fit and against its union with
    the central ``UNION_MASS`` interval of the draws ``[n_draws, n_free]``."""
    from lumina_jax.params import load_space, next_box_hits

    space = setup.space
    if space.stage >= 3:
        return None
    nxt = load_space(space.stage + 1, parametrisation=space.parametrisation)
    tail = 0.5 * (1.0 - UNION_MASS)
    q = np.quantile(np.asarray(draws), [tail, 1.0 - tail], axis=0)
    lo = {n: float(v) for n, v in zip(setup.free, q[0])}
    hi = {n: float(v) for n, v in zip(setup.free, q[1])}
    hits = next_box_hits(space.to_dict(theta_true), best_fit, space, nxt, interval=(lo, hi))
    return hits if hits["names"] else None  # a space that shares no parameter with the next stage


def relaxation_summary(records: list[dict]) -> dict | None:
    """How often the next stage's box holds the next stage's truth over the injections with a
    ``next_box`` record: every parameter at once and per parameter, for the +-10 % box and the
    posterior-aware union, with the union's median width relative to the +-10 % box."""
    recs = [r["next_box"] for r in records if r.get("next_box")]
    if not recs:
        return None
    names = recs[0]["names"]
    m = np.asarray([r["margin"] for r in recs], bool)
    out = {"n_injections": len(recs), "union_mass": UNION_MASS,
           "all_inside_margin": float(np.mean(m.all(axis=1))), "per_parameter": {}}
    u = None
    if all(r.get("union") is not None for r in recs):
        u = np.asarray([r["union"] for r in recs], bool)
        w = np.asarray([r["width_ratio"] for r in recs], float)
        out["all_inside_union"] = float(np.mean(u.all(axis=1)))
        out["union_width_ratio_median"] = float(np.median(w))
    for j, n in enumerate(names):
        d = {"margin": float(m[:, j].mean())}
        if u is not None:
            d["union"] = float(u[:, j].mean())
            d["union_width_ratio_median"] = float(np.median(w[:, j]))
        out["per_parameter"][n] = d
    return out


NOMINAL = {"in68": 0.6827, "in95": 0.9545}  # central 1- and 2-sigma mass of a normal


def coverage_uncertainty(records: list[dict], names: list[str]) -> dict:
    """How far the coverage figures of ``records`` (per-injection ``in68`` / ``in95`` flags
    ``[n_free]`` and ``truth_quantile``) may be from their expectation by chance.

    The parameters of one injection share its noise draw, so their misses are correlated (a
    posterior displaced along a correlated direction misses several marginals at once) and a
    binomial error over all (injection, parameter) pairs would be too small.  The injections
    are independent: ``mean_<key>_se`` is the standard error of the mean over injections of
    each injection's fraction of parameters inside (sample sd, ddof 1, / sqrt(n)), and
    ``mean_<key>_z`` the distance of the mean from the nominal rate in those units.  Per
    parameter, ``truth_quantile_ks_pvalue`` is the Kolmogorov-Smirnov p-value of the truths'
    posterior quantiles against the uniform law of a calibrated posterior (no look-elsewhere
    correction: expect one p < 0.07 in 15 parameters by chance)."""
    from scipy.stats import kstest

    out = {}
    n = len(records)
    for key in ("in68", "in95"):
        per_inj = np.asarray([np.mean(r[key]) for r in records], float)
        se = float(per_inj.std(ddof=1) / np.sqrt(n)) if n > 1 else None
        out[f"mean_{key}_se"] = se
        out[f"mean_{key}_z"] = float((per_inj.mean() - NOMINAL[key]) / se) if se else None
    q = [r.get("truth_quantile") for r in records]
    ks = {}
    for j, name in enumerate(names):
        col = np.asarray([v[j] for v in q if v is not None], float)
        ks[name] = float(kstest(col, "uniform").pvalue) if col.size >= 2 else None
    out["truth_quantile_ks_pvalue"] = ks
    return out


def _coverage_ticks(names: list[str], max_named: int = 40) -> tuple[list[int], list[str]]:
    """Tick positions and labels of the coverage plot: every name up to ``max_named``
    parameters; beyond, each run of parameters once at its first (``zone K`` for a zone's
    abundances, ``globals (N)`` for the others), so 135-D labels stay legible."""
    if len(names) <= max_named:
        return list(range(len(names))), names
    groups = []
    for n in names:
        m = re.fullmatch(r"X_[A-Za-z]+_[zk](\d+)", n)
        groups.append(f"zone {m.group(1)}" if m else "globals")
    ticks = [i for i, g in enumerate(groups) if i == 0 or g != groups[i - 1]]
    labels = [f"globals ({groups.count('globals')})" if groups[i] == "globals" else groups[i] for i in ticks]
    return ticks, labels


def plot_coverage(res: dict, names, path) -> None:
    """Per-parameter coverage with binomial error bars, and the P-P plot of the truths'
    posterior quantiles (on the diagonal for calibrated posteriors; an S-shape means too
    narrow, a reversed S too wide)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = res["n_injections"]
    fig, ax = plt.subplots(1, 2, figsize=(13, 5), constrained_layout=True, gridspec_kw={"width_ratios": [1.6, 1]})
    x = np.arange(len(names))
    for k, (key, lev, c) in enumerate((("in68", 0.68, "C0"), ("in95", 0.95, "C1"))):
        v = np.array([res["per_parameter"][m][key] for m in names])
        err = np.sqrt(lev * (1 - lev) / n)
        ax[0].errorbar(x + 0.15 * (2 * k - 1), v, yerr=np.sqrt(np.maximum(v * (1 - v), 1e-4) / n), fmt="o", color=c,
                       label=f"{int(lev * 100)} % intervals (mean {res[f'mean_{key}']:.3f})")
        ax[0].axhspan(lev - 2 * err, lev + 2 * err, color=c, alpha=0.12)
    ticks, labels = _coverage_ticks(list(names))
    ax[0].set_xticks(ticks, labels, rotation=60, ha="right")
    if len(ticks) < len(names):
        ax[0].set_xticks(x, minor=True)
        ax[0].set_xlabel("parameters: one minor tick each, each group named at its first")
    ax[0].set_ylim(0, 1.02)
    ax[0].set_ylabel("fraction of injections containing the truth")
    ax[0].set_title(f"coverage over {n} injections (bands: nominal +- 2 binomial sd)")
    ax[0].legend(loc="lower left")
    q = np.array([r["truth_quantile"] for r in res["injections"] if "truth_quantile" in r])
    grid = np.linspace(0, 1, 101)
    if q.size:
        for j in range(q.shape[1]):
            ax[1].plot(grid, np.mean(q[:, j][:, None] <= grid[None], axis=0), color="0.6", lw=0.8)
        ax[1].plot(grid, np.mean(q.ravel()[:, None] <= grid[None], axis=0), color="k", lw=2, label="all parameters")
    band = 2 * np.sqrt(grid * (1 - grid) / max(len(q), 1))
    ax[1].fill_between(grid, grid - band, grid + band, color="C2", alpha=0.2, label="uniform +- 2 sd (one parameter)")
    ax[1].plot(grid, grid, color="C2", lw=1)
    ax[1].set_xlabel("posterior quantile of the truth")
    ax[1].set_ylabel("empirical CDF")
    ax[1].set_title("P-P plot")
    ax[1].legend(loc="upper left")
    fig.savefig(path, dpi=120)
    plt.close(fig)


def injection_draws(setup: FitSetup, n: int, seed: int, margin: float = 0.02):
    """``n`` truths from the prior the emulator was trained on: uniform in the box (``u`` in
    ``[margin, 1 - margin]``), velocity orderings valid (the campaigns reject the others, a
    quarter of the stage-1 box).  Returns (thetas [n, dim], u_true [n, n_free])."""
    rng = np.random.default_rng(seed)
    base = setup.base_theta()
    idx = setup.free_index
    lo, hi = setup.space.lower[idx], setup.space.upper[idx]
    us, got = [], 0
    for _ in range(1000):
        u = rng.uniform(margin, 1 - margin, size=(max(4 * n, 64), setup.n_free))
        th = np.repeat(base[None], u.shape[0], 0)
        th[:, idx] = lo + u * (hi - lo)
        ok = setup.space.valid_mask(th)
        us.append(u[ok])
        got += int(ok.sum())
        if got >= n:
            break
    else:
        raise ValueError("could not draw valid injections: the velocity orderings exclude almost all of the box")
    u_true = np.concatenate(us)[:n]
    thetas = np.repeat(base[None], n, 0)
    thetas[:, idx] = lo + u_true * (hi - lo)
    return thetas, u_true


def _one_observation(theta, simulate, emulator, noise_frac, seed, window, prediction=False):
    w, f = simulate(theta)
    if prediction:
        return observation_from_prediction(np.asarray(f), emulator.wavelength, emulator.preprocess,
                                           noise_frac=noise_frac, seed=seed, window=window, source="coverage injection")
    return observation_from_model(np.asarray(w), np.asarray(f), emulator.wavelength, emulator.preprocess,
                                  noise_frac=noise_frac, seed=seed, window=window, source="coverage injection")


def _synth_path(emulator, synthesizer, theta_sigma=None):
    """theta -> (the synthesizer's flux after the emulator's preprocessing, the emulator's sigma):
    only the mean differs from the emulator's own path.  ``theta_sigma``: the sigma held at
    that point (a fit made with ``emulator_sigma: fixed``) instead of sigma(theta)."""
    emu = _emulator_path(emulator, theta_sigma)

    def f(theta):
        w, lum = synthesizer.spectrum(theta)
        return jnp.nan_to_num(jnp.asarray(emulator.preprocess(w, lum, None))), emu(theta)[1]

    return f


def _emulator_path(emulator, theta_sigma=None):
    """The emulator's (flux, sigma), with sigma held at ``theta_sigma`` when given."""
    if theta_sigma is None:
        return emulator.spectrum_and_sigma
    return freeze_sigma(emulator.spectrum_and_sigma, jnp.asarray(theta_sigma))[0]


def _u_gradients(setup: FitSetup, data: LikelihoodData, flux_fn, thetas, nuisances: list[tuple],
                 fd_step: float = 1e-3):
    """d logL / d u of the free parameters (u: unit box) at each ``thetas[i]`` with nuisances
    ``(log_scale, f_sys, poly coefficients)``: ``([n, k], method)``.  One jitted ``jax.grad``
    for all points; central differences when ``flux_fn`` is not traceable by JAX."""
    idx = setup.free_index
    width = np.asarray(setup.space.upper[idx] - setup.space.lower[idx])

    def ll(theta, log_scale, f_sys, coeffs):
        flux, sigma = flux_fn(theta)
        return log_likelihood(flux, sigma, data, log_scale, f_sys, coeffs)

    def central(args):
        theta = args[0]
        g = []
        for j, i in enumerate(idx):
            e = jnp.zeros_like(theta).at[i].set(fd_step * width[j])
            g.append(float(ll(theta + e, *args[1:]) - ll(theta - e, *args[1:])) / (2 * fd_step * width[j]))
        return np.asarray(g)

    grad = jax.jit(jax.grad(ll))
    points = [(jnp.asarray(th, dtype=float), float(ls), float(fs), jnp.asarray(c, dtype=float))
              for th, (ls, fs, c) in zip(np.asarray(thetas, float), nuisances)]
    try:
        out, method = [np.asarray(grad(*a))[idx] for a in points], "autodiff"
    except Exception:  # noqa: BLE001  (e.g. a NumPy preprocessing step)
        out, method = [central(a) for a in points], "finite-difference"
    return np.asarray(out) * width, method


def _agreement(g_emu, g_syn):
    """(cosine, |g_emu| / |g_syn|) of two gradient vectors."""
    n_e, n_s = np.linalg.norm(g_emu), np.linalg.norm(g_syn)
    return float(g_emu @ g_syn / max(n_e * n_s, 1e-300)), float(n_e / max(n_s, 1e-300))


def gradient_agreement(setup: FitSetup, emulator, synthesizer, data: LikelihoodData, theta_mode, nuisance: dict,
                       fd_step: float = 1e-3, theta_sigma=None) -> dict:
    """Compare d logL / d u at the mode through the emulator and through the synthesizer.

    The synthesizer path uses the emulator's sigma (so only the mean differs) and the
    emulator's preprocessing; u is the unit-box coordinate of the free parameters.
    ``theta_sigma``: for a fit made with the emulator's sigma fixed, its reference point (both
    paths then hold sigma there, as the fit's likelihood did)."""
    nuis = [(nuisance["log_scale"], nuisance["f_sys"], np.asarray(nuisance.get("poly", []), float))]
    g_emu = _u_gradients(setup, data, _emulator_path(emulator, theta_sigma), [theta_mode], nuis, fd_step)[0][0]
    g_syn, method = _u_gradients(setup, data, _synth_path(emulator, synthesizer, theta_sigma), [theta_mode], nuis,
                                 fd_step)
    g_syn = g_syn[0]
    cos, ratio = _agreement(g_emu, g_syn)
    per = {n: {"emulator": float(a), "synthesizer": float(b), "ratio": float(a / b) if b != 0 else None}
           for n, a, b in zip(setup.free, g_emu, g_syn)}
    return {"cosine_similarity": cos, "synthesizer_gradient_method": method, "norm_ratio": ratio, "per_parameter": per}


def gradient_agreement_draws(setup: FitSetup, emulator, synthesizer, data: LikelihoodData, thetas,
                             nuisances: dict, theta_sigma=None) -> dict:
    """d logL / d u through the emulator and through the synthesizer at posterior draws.

    At the fit's own mode the emulator's likelihood gradient is ~0 by construction, so
    :func:`gradient_agreement` there says how far the physics would move the mode; at draws
    (away from the mode in every direction) both gradients are large and their agreement
    measures the emulator's slopes.  ``thetas [n, dim]`` physical; ``nuisances``: per-draw
    arrays ``log_scale``, ``f_sys`` and ``poly_k`` (as :func:`~lumina_jax.workflows.plots.full_theta_draws`).
    Same conventions as :func:`gradient_agreement` (emulator sigma on both paths, unit-box u).
    Returns the per-draw cosine and norm ratio |g_emu| / |g_syn| and their median / 10th pct."""
    polys = sorted((k for k in nuisances if k.startswith("poly_")), key=lambda k: int(k.split("_")[1]))
    nuis = [(nuisances["log_scale"][i], nuisances["f_sys"][i], [nuisances[k][i] for k in polys])
            for i in range(len(thetas))]
    g_emu, _ = _u_gradients(setup, data, _emulator_path(emulator, theta_sigma), thetas, nuis)
    g_syn, method = _u_gradients(setup, data, _synth_path(emulator, synthesizer, theta_sigma), thetas, nuis)
    cos, ratio = (list(x) for x in zip(*(_agreement(a, b) for a, b in zip(g_emu, g_syn))))
    return {"n_draws": len(cos), "cosine_median": float(np.median(cos)), "cosine_p10": float(np.percentile(cos, 10)),
            "norm_ratio_median": float(np.median(ratio)), "synthesizer_gradient_method": method,
            "cosine": cos, "norm_ratio": ratio}


def ppc_physics(emulator, synthesizer, thetas, nuisances: dict, data: LikelihoodData, wavelength,
                band=(3300.0, 9700.0)) -> dict:
    """Residual RMS over ``band`` of posterior draws ``thetas`` [n, dim] simulated by the synthesizer
    and predicted by the emulator (same nuisance warp per draw)."""
    polys = sorted(k for k in nuisances if k.startswith("poly_"))
    sel = np.asarray(data.mask > 0) & (wavelength >= band[0]) & (wavelength <= band[1])
    y = np.asarray(data.y)
    rms_s, rms_e, frac = [], [], []
    for i, th in enumerate(thetas):
        w, lum = synthesizer.spectrum(th)
        f_syn = np.asarray(emulator.preprocess(np.asarray(w), np.asarray(lum), None))
        f_emu = np.asarray(emulator.spectrum_and_sigma(jnp.asarray(th))[0])
        c = jnp.asarray([nuisances[k][i] for k in polys], dtype=float)
        ls = nuisances["log_scale"][i]
        m_s = np.asarray(predicted_flux(jnp.asarray(np.nan_to_num(f_syn)), ls, c, data.x))
        m_e = np.asarray(predicted_flux(jnp.asarray(f_emu), ls, c, data.x))
        ok = sel & np.isfinite(f_syn)
        rms_s.append(float(np.sqrt(np.mean((y[ok] - m_s[ok]) ** 2))))
        rms_e.append(float(np.sqrt(np.mean((y[ok] - m_e[ok]) ** 2))))
        frac.append(float(np.mean(np.abs(f_emu[ok] - f_syn[ok]) / np.maximum(np.abs(f_syn[ok]), 1e-3))))
    return {"n_draws": len(thetas), "band_angstrom": list(band),
            "rms_synthesizer_median": float(np.median(rms_s)), "rms_emulator_median": float(np.median(rms_e)),
            "mean_frac_error_emulator_vs_synth": float(np.mean(frac)),
            "rms_synthesizer": rms_s, "rms_emulator": rms_e}
