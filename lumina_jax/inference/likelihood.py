"""Gaussian likelihood of a preprocessed spectrum with emulator error and a free systematic.

All functions are pure JAX (jit / vmap / grad).  Notation, per model-grid bin ``i`` inside
the data's coverage and mask:

    w(lambda)   = exp(log_scale) * (1 + sum_{k=1..K} c_k P_k(x))      smooth warp, x in [-1, 1]
    m_i         = w_i * F_emu,i(theta)                                predicted flux
    var_i       = sigma_obs,i^2 + (w_i sigma_emu,i(theta))^2 + (f_sys m_i)^2
    log L       = -1/2 sum_i [ (y_i - m_i)^2 / var_i + log(2 pi var_i) ]

``y`` and ``sigma_obs`` are the observed flux and its 1-sigma noise after the *same*
preprocessing as the emulator's training spectra (Savitzky-Golay smoothing, normalisation);
``sigma_emu`` is the emulator's calibrated 1-sigma error; ``f_sys`` a free fractional
systematic (model misspecification, calibration).  ``P_k`` are Legendre polynomials over
the fitted wavelength range (flux calibration / residual reddening); ``K = 0`` disables
the warp.

Emulator error correlated in wavelength (optional, ``corr_length`` in
:func:`make_likelihood_data`): the emulator's error is a smooth function of wavelength, so
treating ``sigma_emu`` as independent per bin overweights it by the number of bins per
correlation length.  With a basis ``B [n, r]`` of Gaussian bumps of width ``corr_length``
(rows normalised to unit length, so the marginal variance per bin is unchanged) the
emulator term becomes a rank-``r`` covariance::

    Sigma = diag(sigma_obs^2 + (f_sys m)^2) + U U^T,    U_ik = w_i sigma_emu,i B_ik

evaluated exactly with the Woodbury identity and a Cholesky factor of the ``r x r`` capacitance
matrix (cost O(n r^2)).  Without a basis the bins are independent (``var_i`` above).

Empirical emulator-error correlation (``emu_basis`` in :func:`make_likelihood_data`, the
default when the checkpoint carries one): ``B = V_r Lambda_r^(1/2)``, the leading ``r``
eigenpairs of the correlation matrix of the emulator's validation residuals in units of its
calibrated sigma (``Emulator.error_basis``).  Rows then have ``|B_i|^2 <= 1``; the rest of each
bin's emulator variance, ``(w_i sigma_emu,i)^2 (1 - |B_i|^2)``, stays on the diagonal, so the
marginal variance per bin is unchanged and only its correlation is modelled.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg  # noqa: F401
import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


class LikelihoodData(NamedTuple):
    """The data term, all arrays [n_wave] on the emulator grid.

    y: preprocessed observed flux (0 where unused); sigma_obs: its 1-sigma noise (0 if none);
    mask: 1.0 for bins in the likelihood, else 0.0; x: wavelength mapped to [-1, 1] over the
    fitted range (argument of the calibration polynomial).
    """

    y: jnp.ndarray
    sigma_obs: jnp.ndarray
    mask: jnp.ndarray
    x: jnp.ndarray
    emu_basis: jnp.ndarray | None = None  # [n_wave, r] correlated emulator-error basis, or None
    emu_diag: jnp.ndarray | None = None   # [n_wave] 1 - |emu_basis_i|^2: uncorrelated part of the emulator variance


def emulator_error_basis(wavelength, mask, corr_length: float) -> np.ndarray:
    """Gaussian bumps of width ``corr_length`` (Angstrom) spaced ``corr_length`` apart over the
    used bins, rows normalised to unit length (zero outside the mask): ``[n_wave, r]``."""
    w = np.asarray(wavelength, float)
    m = np.asarray(mask, bool)
    lo, hi = w[m].min(), w[m].max()
    n_c = max(int(np.ceil((hi - lo) / corr_length)) + 1, 2)
    centres = np.linspace(lo, hi, n_c)
    b = np.exp(-0.5 * ((w[:, None] - centres[None, :]) / corr_length) ** 2)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    return np.where(m[:, None], b, 0.0)


def make_likelihood_data(wavelength, y, sigma_obs, mask, corr_length: float | None = None,
                         emu_basis=None) -> LikelihoodData:
    """Build :class:`LikelihoodData` from NumPy arrays (boundary helper, not jitted).

    ``emu_basis`` ``[n_wave, r]``: empirical emulator-error correlation factor (rows with
    ``|B_i| <= 1``, see the module docstring); ``corr_length`` (Angstrom): instead, model the
    emulator error as correlated over this length with Gaussian bumps; neither: independent
    bins."""
    w = np.asarray(wavelength, float)
    m = np.asarray(mask, bool)
    lo, hi = w[m].min(), w[m].max()
    x = np.clip(2.0 * (w - lo) / (hi - lo) - 1.0, -1.0, 1.0)
    y = np.where(m, np.asarray(y, float), 0.0)
    s = np.where(m, np.asarray(sigma_obs, float), 0.0)
    if emu_basis is not None and corr_length:
        raise ValueError("give either an empirical emulator-error basis or a correlation length, not both")
    basis = diag = None
    if emu_basis is not None:
        b = np.asarray(emu_basis, float)
        if b.ndim != 2 or b.shape[0] != w.size:
            raise ValueError(f"emulator-error basis {b.shape} does not match the {w.size}-bin grid")
        if not np.all(np.isfinite(b)):
            raise ValueError("emulator-error basis has non-finite entries")
        b = np.where(m[:, None], b, 0.0)
        diag = jnp.asarray(np.clip(1.0 - np.sum(b * b, axis=1), 0.0, 1.0))
        basis = jnp.asarray(b)
    elif corr_length:
        basis = jnp.asarray(emulator_error_basis(w, m, float(corr_length)))
    return LikelihoodData(jnp.asarray(y), jnp.asarray(s), jnp.asarray(m, dtype=jnp.float64), jnp.asarray(x),
                          basis, diag)


def legendre_basis(x, order: int):
    """P_1..P_order at ``x`` [n] -> [order, n] (Bonnet recursion; order 0 -> [0, n])."""
    if order == 0:
        return jnp.zeros((0,) + jnp.shape(x))
    p_prev, p = jnp.ones_like(x), x
    out = [p]
    for n in range(1, order):
        p_prev, p = p, ((2 * n + 1) * x * p - n * p_prev) / (n + 1)
        out.append(p)
    return jnp.stack(out)


def warp(log_scale, coeffs, x):
    """Multiplicative warp w = exp(log_scale) (1 + sum_k c_k P_k(x)); coeffs [K], x [n] -> [n]."""
    k = jnp.shape(coeffs)[0]
    poly = 1.0 + (jnp.asarray(coeffs) @ legendre_basis(x, k) if k else 0.0)
    return jnp.exp(log_scale) * poly


def predicted_flux(model_flux, log_scale, coeffs, x):
    """m = w * F_emu; [n] -> [n]."""
    return warp(log_scale, coeffs, x) * model_flux


def total_variance(model_flux, model_sigma, sigma_obs, log_scale, coeffs, x, f_sys):
    """var_i (see module docstring); [n]."""
    w = warp(log_scale, coeffs, x)
    m = w * model_flux
    return sigma_obs**2 + (w * model_sigma) ** 2 + (f_sys * m) ** 2


def log_likelihood(model_flux, model_sigma, data: LikelihoodData, log_scale, f_sys, coeffs=None):
    """Gaussian log-likelihood (scalar) of ``data`` given the emulator output.

    model_flux, model_sigma: [n_wave] emulator mean and 1-sigma; log_scale, f_sys: scalars;
    coeffs: [K] Legendre warp coefficients or None.
    """
    coeffs = jnp.zeros((0,)) if coeffs is None else coeffs
    if data.emu_basis is not None and data.emu_basis.shape[-1] > 0:
        return _log_likelihood_lowrank(model_flux, model_sigma, data, log_scale, f_sys, coeffs)
    m = predicted_flux(model_flux, log_scale, coeffs, data.x)
    var = total_variance(model_flux, model_sigma, data.sigma_obs, log_scale, coeffs, data.x, f_sys)
    used = data.mask > 0
    var = jnp.where(used, var, 1.0)
    r2 = jnp.where(used, (data.y - m) ** 2, 0.0)
    return -0.5 * jnp.sum(data.mask * (r2 / var + jnp.log(var) + LOG_2PI))


def _log_likelihood_lowrank(model_flux, model_sigma, data: LikelihoodData, log_scale, f_sys, coeffs):
    """Exact Gaussian log-likelihood with Sigma = D + U U^T (Woodbury; see module docstring)."""
    w = warp(log_scale, coeffs, data.x)
    m = w * model_flux
    used = data.mask > 0
    ws = w * model_sigma
    d = data.sigma_obs**2 + (f_sys * m) ** 2
    if data.emu_diag is not None:
        d = d + ws**2 * data.emu_diag
    d = jnp.where(used, d, 1.0)
    r = jnp.where(used, data.y - m, 0.0)
    u = jnp.where(used[:, None], ws[:, None] * data.emu_basis, 0.0)  # [n, r]
    dinv_r = r / d
    dinv_u = u / d[:, None]
    cap = jnp.eye(u.shape[1]) + u.T @ dinv_u
    chol = jnp.linalg.cholesky(cap)
    z = jax.scipy.linalg.solve_triangular(chol, u.T @ dinv_r, lower=True)
    quad = jnp.sum(r * dinv_r) - jnp.sum(z**2)
    logdet = jnp.sum(jnp.where(used, jnp.log(d), 0.0)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    return -0.5 * (quad + logdet + jnp.sum(data.mask) * LOG_2PI)


def normalised_residual_rms(model_flux, data: LikelihoodData, log_scale=0.0, coeffs=None,
                            wavelength=None, band=(3300.0, 9700.0)):
    """RMS of (y - m) over used bins within ``band`` (Angstrom) -- the figure of merit of the
    original LUMINA-SN parameter search (there: 0.089 for the best 5-parameter grid model)."""
    coeffs = jnp.zeros((0,)) if coeffs is None else coeffs
    m = predicted_flux(model_flux, log_scale, coeffs, data.x)
    sel = data.mask > 0
    if wavelength is not None:
        w = jnp.asarray(wavelength)
        sel = sel & (w >= band[0]) & (w <= band[1])
    n = jnp.maximum(jnp.sum(sel), 1)
    return jnp.sqrt(jnp.sum(jnp.where(sel, (data.y - m) ** 2, 0.0)) / n)
