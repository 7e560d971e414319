"""Minerbo closure: Z solver (exact and Jedynak), limits, gradients, distribution moments."""

from decimal import Decimal, getcontext

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from box3d_jax import lebedev, maxent

getcontext().prec = 50
_dist_jit = jax.jit(maxent.distribution)


def _langevin_decimal(z: float) -> Decimal:
    """Independent 50-digit Langevin function."""
    Z = Decimal(z)
    if Z == 0:
        return Decimal(0)
    e = (-2 * Z).exp()
    return (1 + e) / (1 - e) - 1 / Z


@pytest.mark.parametrize(
    "f,Z", [(0.1, 0.301817), (1 / 3, 1.074563), (0.5, 1.796756), (0.9, 10.00000)]
)
def test_reference_values(f, Z):  # reference note §2
    assert float(maxent.minerbo_Z(f)) == pytest.approx(Z, abs=1e-6)


def test_exact_Z_solves_langevin_to_round_off():
    fs = np.concatenate([[1e-12, 1e-8, 1e-4], np.linspace(1e-3, 0.999, 400)])
    Z = np.asarray(maxent.minerbo_Z(fs))
    dL = np.asarray(maxent.langevin_derivative(Z))
    for f, z, d in zip(fs, Z, dL):
        resid = float(_langevin_decimal(float(z)) - Decimal(float(f)))
        # relative error in Z implied by the residual
        assert abs(resid) / (d * z) < 1e-12, (f, z)


def test_langevin_matches_decimal_across_series_switch():
    for z in [1e-6, 0.05, 0.0999, 0.1, 0.1001, 0.5, 3.0, 40.0]:
        ref = float(_langevin_decimal(z))
        assert float(maxent.langevin(z)) == pytest.approx(ref, rel=1e-13)


def test_jedynak_error_bound():
    fs = np.linspace(1e-4, 0.995, 20001)
    Z = np.asarray(maxent.minerbo_Z(fs))
    Za = np.asarray(maxent.minerbo_Z_approx(fs))
    rel = np.abs(Za - Z) / Z
    assert rel.max() < maxent.JEDYNAK_MAX_REL_ERROR
    assert rel.max() > 5e-4  # the bound is tight (stated, not loose)
    ff_err = np.abs(np.asarray(maxent.langevin(Za)) - fs).max()
    assert ff_err < 2.6e-4


def test_limits_f_to_0_and_1_finite():
    Z = np.asarray(maxent.minerbo_Z(jnp.array([0.0, 1e-300, 1.0 - 1e-9, 1.0, 1.5, -0.1])))
    assert np.all(np.isfinite(Z))
    assert Z[0] == 0.0 and Z[-1] == 0.0
    assert Z[2] == pytest.approx(1e9, rel=1e-6) and Z[3] == Z[2]
    g = jax.jit(jax.vmap(jax.grad(maxent.minerbo_Z)))(jnp.array([0.0, 1e-9, 0.5, 0.99, 0.999999]))
    assert np.all(np.isfinite(np.asarray(g)))
    assert float(g[0]) == pytest.approx(3.0)  # dZ/df = 1/L'(0) = 3
    # implicit gradient vs finite difference at f = 0.5
    h = 1e-6
    fd = (maxent.minerbo_Z(0.5 + h) - maxent.minerbo_Z(0.5 - h)) / (2 * h)
    assert float(g[2]) == pytest.approx(float(fd), rel=1e-7)


@settings(max_examples=30, deadline=None)
@given(
    N=st.floats(1e-3, 1e3),
    ff=st.floats(0.0, 0.9),
    theta=st.floats(0.0, np.pi),
    phi=st.floats(0.0, 2 * np.pi),
)
def test_distribution_moments_on_quadrature(N, ff, theta, phi):
    d, w = lebedev.rule(41)
    F = N * ff * np.array([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi), np.cos(theta)])
    f = np.asarray(_dist_jit(N, F, d, w))
    assert np.all(f >= 0)
    assert w @ f == pytest.approx(N, rel=1e-13)
    np.testing.assert_allclose((w * f) @ d, F, atol=1e-11 * N)
    # analytic normalisation agrees with the discrete one where the rule resolves f
    fa = np.asarray(_dist_jit(N, F, d, None))
    np.testing.assert_allclose(fa, f, rtol=1e-10, atol=1e-14 * N)


def test_distribution_shapes_zero_and_extreme_inputs():
    d, w = lebedev.rule(17)
    N = jnp.array([[1.0, 0.0], [2.0, -1.0]])
    F = jnp.array([[[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], [[0.0, 0.0, 2.0], [0.0, 0.0, 0.0]]])
    f = np.asarray(maxent.distribution(N, F, d, w))
    assert f.shape == (2, 2, 110)
    np.testing.assert_allclose(f[0, 0], 1 / (4 * np.pi), rtol=1e-14)  # isotropic
    assert np.all(f[0, 1] == 0) and np.all(f[1, 1] == 0)  # N = 0 and N < 0 -> 0
    # flux factor exactly 1 (a beam): finite, all weight on the rule's +z direction
    assert np.all(np.isfinite(f[1, 0])) and w @ f[1, 0] == pytest.approx(2.0)
    np.testing.assert_allclose((w * f[1, 0]) @ d, [0, 0, 2.0], atol=1e-8)
    # gradient through the distribution at zero flux is finite
    g = jax.jit(jax.grad(lambda F: jnp.sum(maxent.distribution(1.0, F, d, w) ** 2)))(jnp.zeros(3))
    assert np.all(np.isfinite(np.asarray(g)))


def test_distribution_jit_vmap_and_approx_close():
    d, w = lebedev.rule(29)
    N = jnp.linspace(0.5, 1.5, 7)
    F = jnp.stack([0.1 * N, -0.2 * N, 0.3 * N], axis=-1)
    fj = jax.jit(jax.vmap(lambda n, fv: maxent.distribution(n, fv, d, w)))(N, F)
    fa = maxent.distribution(N, F, d, w, approx_Z=True)
    np.testing.assert_allclose(fj, maxent.distribution(N, F, d, w), rtol=1e-14)
    np.testing.assert_allclose(fa, fj, rtol=2e-3)
