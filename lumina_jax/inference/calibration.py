"""Calibration of the emulator-error covariance that the likelihood uses (projected chi-square).

The emulator's sigma is calibrated bin by bin (``lumina-jax emulator report``: fraction of
held-out residuals within 1 sigma) and its wavelength correlation is one global low-rank
basis (``Emulator.error_basis``).  A posterior, however, only sees the error's projection onto
the directions in which the parameters move the spectrum, and an emulator's errors are smooth
functions of theta that look much like parameter changes.  For a validation model k with
residual ``r_k = F_emu(theta_k) - F_true,k`` on the likelihood's bins, the likelihood's emulator
covariance ``Sigma_k`` and ``J_k = dF_emu/du`` (u: unit-box coordinates of the free parameters,
plus a column ``F_emu`` for the free flux scale, p columns), the parameter shift that the
residual causes is ``delta_k = (J^T Sigma^-1 J)^-1 J^T Sigma^-1 r_k`` and

    q_k = delta_k^T (J^T Sigma^-1 J) delta_k  ~  chi^2_p   if  r_k ~ N(0, Sigma_k).

``error_cov_scale = median(q_k) / median(chi^2_p)`` is the factor on ``Sigma`` that makes this
hold for the typical model (the median: interval coverage is about typical models, and a few
badly emulated ones would dominate a mean).  Measured on the stage-1 checkpoints it is ~2
(the global correlation basis under-represents the parameter-like part of the error), while
the plain per-bin chi-square is ~1.3-1.4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from lumina_jax.inference.likelihood import make_likelihood_data
from lumina_jax.preprocess import within


def projected_chi2(spectrum_and_sigma, theta, flux_true, wavelength, basis, free_index, widths, *,
                   stride: int = 8, window=(3300.0, 9700.0), emu_rank: int | None = None, batch: int = 64) -> dict:
    """Projected chi-square of emulator residuals (module docstring), per model.

    spectrum_and_sigma: pure ``theta [dim] -> (flux [n_wave], sigma [n_wave])``;
    theta ``[N, dim]``, flux_true ``[N, n_wave]`` (preprocessed); basis ``[n_wave, r]``;
    free_index: indices of the free parameters; widths: their box widths (u -> theta).
    Returns ``q [N]``, ``chi2 [N]`` (full ``r^T Sigma^-1 r``), ``p`` and ``n_bins``."""
    theta = np.asarray(theta, np.float64)
    flux_true = np.asarray(flux_true, np.float64)
    wl = np.asarray(wavelength, float)
    mask = within(wl, [tuple(window)])
    data = make_likelihood_data(wl, np.zeros_like(wl), np.zeros_like(wl), mask, emu_basis=np.asarray(basis, float),
                                stride=stride, emu_rank=emu_rank)
    rows, b, dg = data.rows, data.emu_basis, data.emu_diag
    free_index = jnp.asarray(free_index)
    widths = jnp.asarray(widths, float)

    def one(th, ft):
        fe, se = spectrum_and_sigma(th)
        jac = jax.jacfwd(lambda t: spectrum_and_sigma(t)[0])(th)[:, free_index] * widths[None, :]
        j = jnp.concatenate([jac[rows], fe[rows, None]], axis=1)
        ws = se[rows]
        u = ws[:, None] * b
        cov = jnp.diag(ws**2 * dg) + u @ u.T
        r = fe[rows] - ft[rows]
        si_r = jnp.linalg.solve(cov, r)
        si_j = jnp.linalg.solve(cov, j)
        fisher = j.T @ si_j
        g = j.T @ si_r
        q = g @ jnp.linalg.solve(fisher, g)
        return q, r @ si_r

    fn = jax.jit(jax.vmap(one))
    qs, chis = [], []
    for s in range(0, theta.shape[0], batch):
        q, c = fn(jnp.asarray(theta[s:s + batch]), jnp.asarray(flux_true[s:s + batch]))
        qs.append(np.asarray(q))
        chis.append(np.asarray(c))
    return {"q": np.concatenate(qs), "chi2": np.concatenate(chis), "p": int(free_index.size + 1),
            "n_bins": int(rows.size)}


def projected_error_scale(spectrum_and_sigma, theta, flux_true, wavelength, basis, free_index, widths,
                          **kw) -> dict:
    """``error_cov_scale`` and its diagnostics (module docstring) from validation models."""
    res = projected_chi2(spectrum_and_sigma, theta, flux_true, wavelength, basis, free_index, widths, **kw)
    q, p, n = res["q"], res["p"], res["n_bins"]
    ok = np.isfinite(q) & np.isfinite(res["chi2"])
    if ok.sum() < 10:
        raise ValueError(f"only {int(ok.sum())} models gave a finite projected chi-square; need >= 10")
    q = q[ok]
    scale = float(np.median(q) / stats.chi2.median(p))
    return {"error_cov_scale": scale, "n_models": int(ok.sum()), "p": p, "n_bins": n,
            "median_q_over_p": float(np.median(q) / p), "mean_q_over_p": float(np.mean(q) / p),
            "chi2_per_bin_median": float(np.median(res["chi2"][ok]) / n),
            "chi2_per_bin_mean": float(np.mean(res["chi2"][ok]) / n),
            "stride": int(kw.get("stride", 8)), "window": list(kw.get("window", (3300.0, 9700.0)))}
