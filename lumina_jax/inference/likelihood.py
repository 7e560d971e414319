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
OUTER_MAX_ELEMENTS = 8_000_000  # store packed basis products up to 64 MB (float64); above, the direct products


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
    emu_basis: jnp.ndarray | None = None  # [n_used, r] correlated emulator-error basis on ``rows``, or None
    emu_diag: jnp.ndarray | None = None   # [n_used] 1 - |emu_basis_i|^2: uncorrelated part of the emulator variance
    rows: jnp.ndarray | None = None       # [n_used] int indices of the used bins (correlated likelihood only)
    emu_outer: jnp.ndarray | None = None  # [n_used, r(r+1)/2] packed B_ij B_ik, j <= k (woodbury_outer), or None


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
                         emu_basis=None, stride: int = 1, emu_rank: int | None = None,
                         emu_var_scale: float = 1.0) -> LikelihoodData:
    """Build :class:`LikelihoodData` from NumPy arrays (boundary helper, not jitted).

    ``emu_basis`` ``[n_wave, R]``: empirical emulator-error correlation factor (rows with
    ``|B_i| <= 1``, see the module docstring); restricted to the used bins and re-factorised
    there (SVD) to its leading ``emu_rank`` directions (default: all ``R``).
    ``corr_length`` (Angstrom): instead, model the emulator error as correlated over this
    length with Gaussian bumps; neither: independent bins.
    ``stride``: use every ``stride``-th bin of the mask (the smoothed spectra are oversampled
    by the Savitzky-Golay windows, 55-155 Å vs 5 Å bins, so little information is lost while the
    short-range correlation the low-rank model leaves on the diagonal is thinned out).
    ``emu_var_scale``: factor on the whole correlated emulator-error covariance (the
    checkpoint's ``error_cov_scale``, calibrated on validation models by
    :func:`lumina_jax.inference.calibration.projected_error_scale`); only with ``emu_basis``."""
    w = np.asarray(wavelength, float)
    m = np.asarray(mask, bool).copy()
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if stride > 1:
        used = np.flatnonzero(m)
        m[:] = False
        m[used[::stride]] = True
    lo, hi = w[m].min(), w[m].max()
    x = np.clip(2.0 * (w - lo) / (hi - lo) - 1.0, -1.0, 1.0)
    y = np.where(m, np.asarray(y, float), 0.0)
    s = np.where(m, np.asarray(sigma_obs, float), 0.0)
    if emu_basis is not None and corr_length:
        raise ValueError("give either an empirical emulator-error basis or a correlation length, not both")
    basis = diag = rows = outer = None
    if emu_basis is not None:
        b = np.asarray(emu_basis, float)
        if b.ndim != 2 or b.shape[0] != w.size:
            raise ValueError(f"emulator-error basis {b.shape} does not match the {w.size}-bin grid")
        if not np.all(np.isfinite(b)):
            raise ValueError("emulator-error basis has non-finite entries")
        rows = np.flatnonzero(m)
        u_, sv, _ = np.linalg.svd(b[rows], full_matrices=False)  # same span, ordered by variance
        k = b.shape[1] if emu_rank is None else max(1, min(int(emu_rank), b.shape[1]))
        b = u_[:, :k] * sv[:k]
        if not (np.isfinite(emu_var_scale) and emu_var_scale > 0):
            raise ValueError(f"emu_var_scale must be a positive number, got {emu_var_scale}")
        diag = jnp.asarray(emu_var_scale * np.clip(1.0 - np.sum(b * b, axis=1), 0.0, 1.0))
        basis = jnp.asarray(np.sqrt(emu_var_scale) * b)
    elif corr_length:
        rows = np.flatnonzero(m)
        basis = jnp.asarray(emulator_error_basis(w, m, float(corr_length))[rows])
        diag = jnp.zeros(rows.size)
    if basis is not None and basis.shape[0] * basis.shape[1] * (basis.shape[1] + 1) // 2 <= OUTER_MAX_ELEMENTS:
        outer = jnp.asarray(woodbury_outer(np.asarray(basis)))  # else (e.g. hundreds of bumps): direct products
    return LikelihoodData(jnp.asarray(y), jnp.asarray(s), jnp.asarray(m, dtype=jnp.float64), jnp.asarray(x),
                          basis, diag, None if rows is None else jnp.asarray(rows), outer)


def used_bins(data: LikelihoodData) -> np.ndarray:
    """Indices ``[n_used]`` of the grid bins that enter the likelihood (boundary helper)."""
    return np.asarray(data.rows) if data.rows is not None else np.flatnonzero(np.asarray(data.mask) > 0)


def restrict_to_bins(data: LikelihoodData, rows) -> LikelihoodData:
    """The same likelihood on the grid bins ``rows`` only: every per-bin array ``[len(rows)]``.

    ``rows`` must be :func:`used_bins` of ``data``, so the log-likelihood of a model evaluated on
    those bins equals that of the full-grid model (the warp's ``x`` is kept per bin, so the
    calibration polynomial is unchanged).  Pair it with a model that predicts these bins only,
    e.g. :meth:`lumina_jax.emulator.Emulator.on_bins`."""
    rows = np.asarray(rows)
    if not np.array_equal(rows, used_bins(data)):
        raise ValueError("rows must be the bins the likelihood uses (likelihood.used_bins(data))")
    take = lambda a: jnp.asarray(np.asarray(a)[rows])  # noqa: E731
    return data._replace(y=take(data.y), sigma_obs=take(data.sigma_obs), mask=take(data.mask), x=take(data.x),
                         rows=None if data.rows is None else jnp.arange(rows.size))


def describe_emulator_error(data: LikelihoodData, corr_length: float | None = None) -> str:
    """One-line description of the emulator-error model of ``data`` (for summaries and logs)."""
    if data.emu_basis is None:
        return "independent bins"
    if corr_length:
        return f"Gaussian bumps, {corr_length} A"
    return f"empirical rank-{data.emu_basis.shape[1]} correlation"


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
    ws = w * model_sigma
    idx = data.rows  # gather the used bins: the O(n r^2) work runs over them only
    m, ws, y, s_obs = m[idx], ws[idx], data.y[idx], data.sigma_obs[idx]
    d = s_obs**2 + (f_sys * m) ** 2 + ws**2 * data.emu_diag
    return woodbury_gaussian_logpdf(y - m, ws, d, data.emu_basis, data.emu_outer)


def woodbury_outer(basis):
    """Packed outer products of the rows of ``basis [n, r]``: ``[n, r(r+1)/2]`` with column
    ``t`` = ``B[:, j_t] * B[:, k_t]`` over the upper triangle ``j_t <= k_t`` (``np.triu_indices``).

    Precomputed once per data set, it turns the capacitance matrix
    ``C = I + sum_i g_i B_i B_i^T`` into one matrix product ``g @ outer`` (a single GEMM for a
    batch of chains instead of one small ``[r, n] x [n, r]`` product per chain)."""
    j, k = np.triu_indices(basis.shape[1])
    return basis[:, j] * basis[:, k]


def _unpack_sym(packed, r: int):
    """``[r(r+1)/2]`` upper-triangle values -> symmetric ``[r, r]``."""
    j, k = np.triu_indices(r)
    idx = np.zeros((r, r), int)
    idx[j, k] = np.arange(j.size)
    idx[k, j] = np.arange(j.size)
    return packed[idx]


@jax.custom_vjp
def woodbury_gaussian_logpdf(r, ws, d, basis, outer=None):
    """log N(r; 0, Sigma) with Sigma = diag(d) + U U^T, U = diag(ws) basis.

    r, ws, d: [n]; basis: [n, k]; outer: :func:`woodbury_outer` of ``basis`` or None (then
    the same sums are formed as ``[k, n] x [n, k]`` products; both constants: no gradient).
    With ``g = ws^2 / d`` the capacitance matrix is ``C = I + U^T D^-1 U = I + sum_i g_i B_i
    B_i^T`` (one product with ``outer``), and::

        Sigma^-1 r = r / d - (ws / d) * (B C^-1 B^T (ws r / d))
        log det Sigma = sum log d + log det C

    Hand-written reverse-mode rule (no differentiation through the Cholesky factor, whose
    batched backward pass is slow on CPU), with ``alpha = Sigma^-1 r`` and
    ``q_i = B_i^T C^-1 B_i`` (one more product with ``outer``)::

        dL/dr = -alpha,  (Sigma^-1)_ii = 1/d_i - (ws_i / d_i)^2 q_i,
        dL/dd_i = (alpha_i^2 - (Sigma^-1)_ii) / 2,
        dL/dws_i = alpha_i B_i . (B^T (ws alpha)) - (ws_i / d_i) q_i
    """
    return _woodbury_parts(r, ws, d, basis, outer)[0]


def _woodbury_parts(r, ws, d, basis, outer):
    """(log density, alpha, Cholesky factor of C)."""
    k = basis.shape[1]
    g = ws * ws / d
    gram = _unpack_sym(g @ outer, k) if outer is not None else (basis * g[:, None]).T @ basis
    cap = jnp.eye(k, dtype=r.dtype) + gram
    chol = jnp.linalg.cholesky(cap)
    dinv_r = r / d
    cv = jax.scipy.linalg.cho_solve((chol, True), basis.T @ (ws * dinv_r))  # C^-1 U^T D^-1 r
    alpha = dinv_r - (ws / d) * (basis @ cv)
    logdet = jnp.sum(jnp.log(d)) + 2.0 * jnp.sum(jnp.log(jnp.diag(chol)))
    val = -0.5 * (r @ alpha + logdet + r.shape[0] * LOG_2PI)
    return val, alpha, chol


def _woodbury_fwd(r, ws, d, basis, outer):
    val, alpha, chol = _woodbury_parts(r, ws, d, basis, outer)
    return val, (alpha, chol, ws, d, basis, outer)


def _woodbury_bwd(res, g):
    alpha, chol, ws, d, basis, outer = res
    k = basis.shape[1]
    cinv = jax.scipy.linalg.cho_solve((chol, True), jnp.eye(k, dtype=chol.dtype))
    if outer is not None:  # q_i = B_i^T C^-1 B_i: upper triangle, off-diagonal terms twice
        j, kk = np.triu_indices(k)
        q = outer @ (cinv[j, kk] * jnp.asarray(np.where(j == kk, 1.0, 2.0), cinv.dtype))
    else:
        q = jnp.sum((basis @ cinv) * basis, axis=1)
    wd = ws / d
    sigma_inv_diag = 1.0 / d - wd * wd * q
    d_r = -alpha
    d_d = 0.5 * (alpha**2 - sigma_inv_diag)
    d_ws = alpha * (basis @ (basis.T @ (ws * alpha))) - wd * q
    return g * d_r, g * d_ws, g * d_d, jnp.zeros_like(basis), None if outer is None else jnp.zeros_like(outer)


woodbury_gaussian_logpdf.defvjp(_woodbury_fwd, _woodbury_bwd)


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
