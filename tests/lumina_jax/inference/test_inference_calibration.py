"""The projected chi-square calibration of the emulator-error covariance against a linear toy
whose residuals are drawn from a known covariance."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
from lumina_jax.inference.calibration import projected_error_scale

N_WAVE, DIM, RANK = 300, 4, 6


def _toy(seed=0):
    rng = np.random.default_rng(seed)
    wl = np.linspace(3000.0, 10000.0, N_WAVE)
    a = rng.standard_normal((N_WAVE, DIM)) * 0.05
    sig = 0.01 * (1.0 + 0.5 * np.sin(wl / 700.0))
    b = rng.standard_normal((N_WAVE, RANK))
    b *= 0.9 / np.sqrt(np.sum(b * b, axis=1, keepdims=True))  # |B_i|^2 = 0.81 <= 1

    def spectrum_and_sigma(th):
        return 1.0 + jnp.asarray(a) @ th, jnp.asarray(sig)

    return wl, a, sig, b, spectrum_and_sigma, rng


@pytest.mark.parametrize("amp", [1.0, 2.0])
def test_scale_recovers_the_inflation_of_residuals_drawn_from_the_model(amp):
    """Residuals r ~ N(0, amp^2 Sigma) with Sigma the likelihood's covariance on the used bins:
    error_cov_scale ~ amp^2 (600 models: the median of chi^2_5 is known to ~6 %), and the
    per-bin chi-square ~ amp^2 too."""
    wl, a, sig, b, fn, rng = _toy()
    stride = 2
    rows = np.flatnonzero((wl >= 3300.0) & (wl <= 9700.0))[::stride]
    n = 600
    theta = rng.uniform(0, 1, (n, DIM))
    # draw from the same covariance the likelihood builds: its re-factorised basis spans the same
    # rows as b, so draw with b restricted to the used rows plus the diagonal remainder
    br = b[rows]
    z = rng.standard_normal((n, RANK)) @ br.T + rng.standard_normal((n, rows.size)) * np.sqrt(1 - np.sum(br * br, 1))
    flux_true = np.asarray([np.asarray(fn(jnp.asarray(t))[0]) for t in theta])
    flux_true[:, rows] -= amp * z * sig[rows]
    res = projected_error_scale(fn, theta, flux_true, wl, b, np.arange(DIM), np.ones(DIM), stride=stride)
    assert res["p"] == DIM + 1 and res["n_bins"] == rows.size
    assert res["error_cov_scale"] == pytest.approx(amp**2, rel=0.15)
    assert res["chi2_per_bin_median"] == pytest.approx(amp**2, rel=0.1)
