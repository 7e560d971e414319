"""Simulation-based calibration (SBC) of an amortised posterior.

For each held-out model ``theta*`` (a synthesizer spectrum never trained on, made into a mock
observation by the same noise and preprocessing as ``infer``'s mock, times a Legendre warp ``c*``
drawn from the prior the NPE was trained with) the posterior's ``L``
draws give the rank of ``theta*_j`` among them per parameter (uniform on 0..L for a calibrated
posterior, Talts et al. 2018), and the rank of ``log q(theta* | x)`` among the draws' log
densities (at ``(theta*, c*)``) gives the expected coverage of the highest-density regions (the fraction of
models whose truth lies inside the ``alpha`` HPD region should be ``alpha``).

Pure NumPy statistics (:func:`rank_statistics`, :func:`expected_coverage`) plus the loop
over a store (:func:`run_sbc`) and the figure (:func:`plot_sbc`).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

LEVELS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.68, 0.7, 0.8, 0.9, 0.95, 0.99)


def ranks(truth, draws):
    """Rank of ``truth [d]`` among ``draws [L, d]`` per parameter -> ``[d]`` ints in 0..L."""
    return np.sum(np.asarray(draws) < np.asarray(truth)[None, :], axis=0)


def rank_statistics(r, n_draws: int, n_bins: int = 20) -> dict:
    """Histogram chi-square test of uniform ranks ``r [n]`` (0..n_draws): counts, statistic,
    p-value (scipy's chi-square survival function with ``n_bins - 1`` degrees of freedom)."""
    from scipy.stats import chi2

    r = np.asarray(r)
    edges = np.linspace(0, n_draws + 1, n_bins + 1)
    counts, _ = np.histogram(r, bins=edges)
    expected = r.size / n_bins
    stat = float(np.sum((counts - expected) ** 2 / expected))
    return {"counts": counts.tolist(), "chi2": stat, "p": float(chi2.sf(stat, n_bins - 1))}


def expected_coverage(hpd_rank, n_draws: int, levels=LEVELS) -> dict:
    """Expected HPD coverage: ``hpd_rank [n]`` = number of draws with a higher log density
    than the truth's; the truth lies in the ``alpha`` HPD region when that fraction < alpha."""
    frac = np.asarray(hpd_rank) / float(n_draws)
    return {f"{a:g}": float(np.mean(frac < a)) for a in levels}


def central_coverage(r, n_draws: int, levels=LEVELS) -> dict:
    """Fraction of truths inside the central ``alpha`` interval of the draws, per level (all
    parameters pooled): ranks ``r [n, d]``."""
    q = np.asarray(r) / float(n_draws)
    return {f"{a:g}": float(np.mean(np.abs(q - 0.5) < a / 2)) for a in levels}


def warped(obj, flux, sigma, coeffs, basis=None):
    """``(flux, sigma)`` on the grid times the NPE's Legendre warp ``1 + sum_k c_k P_k(x)`` over its
    band rows (the warp :func:`lumina_jax.inference.npe.simulate` draws in training; 1 elsewhere)."""
    from lumina_jax.inference import npe

    coeffs = np.asarray(coeffs, float)
    if basis is None:
        basis = np.asarray(npe.legendre_basis(obj.noise.x, coeffs.size))
    w = np.ones(np.shape(flux))
    w[obj.rows] = 1.0 + coeffs @ basis
    return np.asarray(flux, float) * w, np.asarray(sigma, float) * w


def run_sbc(obj, paths, *, n: int, n_draws: int, noise_frac: float, seed: int, n_bins: int = 20,
            log: Callable[[str], None] = print, progress: Callable[[int], None] | None = None) -> dict:
    """SBC of the NPE ``obj`` (:class:`~lumina_jax.workflows.npe.NPE`) on the first ``n``
    finished models of the stores ``paths``: each made into a mock (``noise_frac`` per pixel,
    preprocessing over the NPE's band, as ``infer``'s mock)."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    from lumina_jax.errors import UserError
    from lumina_jax.inference import npe
    from lumina_jax.workflows import npe as npe_io
    from lumina_jax.observed import observation_from_model
    from lumina_jax.preprocess import Preprocessor
    from runners.store import load_training_set

    thetas, specs, wl = [], [], None
    for p in paths:
        ts = load_training_set(p, stage=int(obj.space.stage))
        if ts.space.names != obj.space.names or not np.allclose(ts.space.lower, obj.space.lower) \
                or not np.allclose(ts.space.upper, obj.space.upper):
            raise UserError(f"{p}: its parameter box differs from the NPE's")
        thetas.append(ts.theta)
        specs.append(ts.spectra)
        wl = ts.wavelength
    theta, spectra = np.concatenate(thetas), np.concatenate(specs)
    if theta.shape[0] < n:
        raise UserError(f"the held-out stores hold {theta.shape[0]} finished models, --n asks for {n}")
    seen = set(obj.metadata.get("stores", []))
    if any(str(p) in seen for p in paths):
        log("warning: a held-out store is one the NPE was trained on; SBC needs models never trained on")
    prep = Preprocessor(obj.preprocess)
    idx = np.array([obj.space.index(nm) for nm in obj.free])
    grid = obj.preprocess.grid
    d = obj.settings.n_box
    sample = eqx.filter_jit(lambda m, k, f: npe.sample(m, k, f, n_draws, obj.box, obj.settings.n_box))
    lp = eqx.filter_jit(lambda m, t, f: npe.log_prob(m, t, jnp.broadcast_to(f, (t.shape[0], f.shape[-1])),
                                                      obj.box, obj.settings.n_box))
    key = jax.random.PRNGKey(seed)
    rng = np.random.default_rng(seed)
    n_poly = obj.settings.n_poly
    basis = np.asarray(npe.legendre_basis(obj.noise.x, n_poly))
    rk, hpd, times = [], [], []
    for i in range(n):
        obs = observation_from_model(wl, spectra[i], grid, prep.normalised, noise_frac=noise_frac, seed=seed + 7919 * i,
                                     window=obj.band)
        # the warp from its prior, as in training, so that (theta*, c*) is a draw of the joint prior
        c_true = obj.box.poly_sd * rng.standard_normal(n_poly)
        flux, sigma = warped(obj, obs.flux, obs.sigma, c_true, basis)
        t0 = time.perf_counter()
        feats, _ = npe_io.observation_features(obj, flux, sigma, obs.mask)
        key, k = jax.random.split(key)
        t_draws = np.asarray(sample(obj.model, k, feats))
        times.append(time.perf_counter() - t0)
        truth = theta[i, idx]
        rk.append(ranks(truth, t_draws[:, :d]))
        # HPD rank on the joint density of the box parameters and the warp coefficients
        t_true = np.concatenate([truth, c_true])[None, :]
        lq = np.asarray(lp(obj.model, jnp.asarray(np.concatenate([t_true, t_draws])), feats))
        hpd.append(int(np.sum(lq[1:] > lq[0])))
        if progress is not None:
            progress(i + 1)
    rk = np.asarray(rk)
    per = {nm: rank_statistics(rk[:, j], n_draws, n_bins) for j, nm in enumerate(obj.free)}
    m = len(per)
    for v in per.values():
        v["p_bonferroni"] = float(min(1.0, v["p"] * m))
    cov = expected_coverage(hpd, n_draws)
    cen = central_coverage(rk, n_draws)
    return {"stage": int(obj.space.stage), "n": int(n), "n_draws": int(n_draws), "noise_frac": noise_frac,
            "stores": [str(p) for p in paths], "n_bins": n_bins, "per_parameter": per,
            "min_p_bonferroni": float(min(v["p_bonferroni"] for v in per.values())),
            "all_uniform": bool(all(v["p_bonferroni"] > 0.01 for v in per.values())),
            "expected_coverage_hpd": cov, "central_coverage": cen,
            "coverage_68": {"hpd": cov["0.68"], "central": cen["0.68"]},
            "coverage_95": {"hpd": cov["0.95"], "central": cen["0.95"]},
            "ranks": rk.tolist(), "hpd_ranks": hpd,
            "seconds_per_posterior": {"median": float(np.median(times[1:] if n > 1 else times)),
                                      "first_with_compile": float(times[0])}}


def describe(res: dict) -> str:
    """A few lines summarising :func:`run_sbc`'s result."""
    worst = min(res["per_parameter"].items(), key=lambda kv: kv[1]["p"])
    return (f"SBC over {res['n']} held-out models ({res['n_draws']} draws each): rank histograms "
            f"{'uniform' if res['all_uniform'] else 'NOT uniform'} (lowest Bonferroni p {res['min_p_bonferroni']:.3g}, "
            f"{worst[0]}); HPD coverage {res['coverage_68']['hpd']:.3f} at 68 %, "
            f"{res['coverage_95']['hpd']:.3f} at 95 %; "
            f"central-interval coverage {res['coverage_68']['central']:.3f} / {res['coverage_95']['central']:.3f}; "
            f"{res['seconds_per_posterior']['median']:.2f} s per posterior")


def plot_sbc(res: dict, path) -> None:
    """Rank histograms per parameter (with the 99 % band of a uniform histogram) and the
    expected-coverage curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import binom

    names = list(res["per_parameter"])
    ncol = 4
    nrow = int(np.ceil((len(names) + 1) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.4 * nrow))
    axes = np.atleast_1d(axes).ravel()
    nb, n = res["n_bins"], res["n"]
    lo, hi = binom.ppf([0.005, 0.995], n, 1.0 / nb)
    for ax, nm in zip(axes, names):
        c = res["per_parameter"][nm]["counts"]
        ax.axhspan(lo, hi, color="0.85")
        ax.bar(np.arange(nb), c, width=1.0, color="C0", alpha=0.8)
        ax.set_title(f"{nm}  p={res['per_parameter'][nm]['p_bonferroni']:.2g}", fontsize=8)
        ax.set_xticks([])
    ax = axes[len(names)]
    lv = [float(k) for k in res["expected_coverage_hpd"]]
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.plot(lv, list(res["expected_coverage_hpd"].values()), "o-", ms=3, label="HPD (joint)")
    ax.plot(lv, list(res["central_coverage"].values()), "s-", ms=3, label="central (per parameter)")
    ax.set_xlabel("credibility level")
    ax.set_ylabel("coverage")
    ax.legend(fontsize=7)
    for a in axes[len(names) + 1:]:
        a.axis("off")
    fig.suptitle(f"SBC, stage {res['stage']}: {n} held-out models, {res['n_draws']} draws", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
