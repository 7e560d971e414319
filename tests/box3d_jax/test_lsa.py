"""Linear stability analysis: reference growth rates and an independent m = 0 reduction."""

import numpy as np
import pytest

from box3d_jax import lebedev, lsa, maxent

Z_AXIS = np.array([0.0, 0.0, 1.0])


def _fiducial_G(order):
    d, w = lebedev.rule(order)
    mu = d[:, 2]
    rho = np.zeros((2, 3, len(w)))
    rho[0, 0] = (1 + mu) / (4 * np.pi)  # ν_e: n = 1, f = n/4π (1 + μ)
    rho[1, 0] = (1 - mu) / (4 * np.pi)  # ν̄_e: n = 1, f = n/4π (1 − μ)
    return np.asarray(lsa.pair_G(rho, w)), d


def _m0_growth(g_of_mu, k, n=64):
    """Independent azimuthally reduced (m = 0) dispersion matrix on Gauss-Legendre nodes."""
    mu, wgl = np.polynomial.legendre.leggauss(n)
    G = 2 * np.pi * wgl * g_of_mu(mu)
    lam0, lam1 = G.sum(), (mu * G).sum()
    M = np.diag(k * mu + lam0 - mu * lam1) - G[:, None] * (1 - np.outer(mu, mu))
    return np.linalg.eigvals(M).imag.max()


def test_fiducial_growth_rate_reference():
    # reference note §10.3: Γ = 0.68963 √2G_F n/ħ at k = 0.91 (n = 1 per species)
    G, d = _fiducial_G(17)
    assert G.shape == (3, 110)
    np.testing.assert_allclose(G[0], G[1])  # e–μ and e–τ see the same ELN
    assert np.all(G[2] == 0)
    k = np.array([0.85, 0.9077, 0.95])
    gam = np.asarray(lsa.growth_rates(G[0], d, Z_AXIS, k))
    assert gam[1] == pytest.approx(0.68963, abs=2e-5)
    assert gam[1] > gam[0] and gam[1] > gam[2]
    # independent m = 0 reduction on a Gauss-Legendre grid
    ref = _m0_growth(lambda mu: 2 * mu / (4 * np.pi), 0.9077)
    assert gam[1] == pytest.approx(ref, rel=1e-6)


def test_minerbo_version_and_fastest_mode():
    d, w = lebedev.rule(11)
    N = np.array([[1.0, 0, 0], [1.0, 0, 0]])
    F = np.zeros((2, 3, 3))
    F[0, 0, 2], F[1, 0, 2] = 1 / 3, -1 / 3
    f = np.asarray(maxent.distribution(N, F, d, w))
    res = lsa.fastest_mode(np.asarray(lsa.pair_G(f, w)), d, Z_AXIS, n_scan=21, n_golden=10)
    # independent m = 0 reduction of the Minerbo distributions (Z = 1.074563)
    Z = float(maxent.minerbo_Z(1 / 3))
    g = lambda mu: Z / np.sinh(Z) / (4 * np.pi) * (np.exp(Z * mu) - np.exp(-Z * mu))
    ref = _m0_growth(g, res.k)
    assert res.growth_rate == pytest.approx(ref, rel=2e-3)  # Lebedev 11 vs continuum
    assert res.growth_rate == pytest.approx(0.68768, rel=3e-3)  # reference note §10.3
    assert res.pair in (0, 1)


def test_stable_without_crossing():
    # ν_e forward-peaked, ν̄_e isotropic and smaller everywhere: no ELN crossing
    d, w = lebedev.rule(11)
    rho = np.zeros((2, 3, len(w)))
    rho[0, 0] = w * (1 + 0.5 * d[:, 2]) / (4 * np.pi)
    rho[1, 0] = w * 0.3 / (4 * np.pi)
    res = lsa.fastest_mode(np.asarray(lsa.pair_G(rho)), d, Z_AXIS, n_scan=21, n_golden=4)
    assert res.growth_rate == 0.0
