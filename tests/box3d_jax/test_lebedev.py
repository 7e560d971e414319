"""Lebedev rules: weights, unit directions, exact low-order moments, inversion symmetry."""

import math

import numpy as np
import pytest

from box3d_jax import lebedev
from box3d_jax.errors import ParameterError


@pytest.mark.parametrize("order,n", [(17, 110), (29, 302), (41, 590), (131, 5810)])
def test_rule_sizes_weights_and_unit_directions(order, n):
    d, w = lebedev.rule(order)
    assert d.shape == (n, 3) and w.shape == (n,)
    assert lebedev.n_points(order) == n
    assert abs(w.sum() - 4 * math.pi) < 1e-13
    assert np.all(w > 0)
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-15)


@pytest.mark.parametrize("order", [17, 29, 41])
def test_low_order_moments_exact(order):
    d, w = lebedev.rule(order)
    # ∫ n_i dΩ = 0, ∫ n_i n_j dΩ = 4π/3 δ_ij, ∫ n_x² n_y² dΩ = 4π/15, ∫ n_z⁴ = 4π/5
    np.testing.assert_allclose(w @ d, 0.0, atol=1e-14)
    np.testing.assert_allclose((d * w[:, None]).T @ d, 4 * math.pi / 3 * np.eye(3), atol=1e-14)
    assert abs(w @ (d[:, 0] ** 2 * d[:, 1] ** 2) - 4 * math.pi / 15) < 1e-14
    assert abs(w @ d[:, 2] ** 4 - 4 * math.pi / 5) < 1e-14
    # a degree-`order` polynomial: ∫ n_z^16 dΩ = 4π/17 (exact up to the order)
    assert abs(w @ d[:, 2] ** 16 - 4 * math.pi / 17) < 1e-13


def test_inversion_symmetric():
    d, w = lebedev.rule(17)
    # for every direction, −n̂ is in the rule with the same weight
    idx = np.argmin(np.linalg.norm(d[:, None, :] + d[None, :, :], axis=-1), axis=1)
    np.testing.assert_allclose(d[idx], -d, atol=1e-14)
    np.testing.assert_allclose(w[idx], w, rtol=1e-13)


def test_rule_is_cached_and_read_only():
    d1, w1 = lebedev.rule(17)
    d2, _ = lebedev.rule(17)
    assert d1 is d2
    with pytest.raises(ValueError):
        w1[0] = 1.0


@pytest.mark.parametrize("bad", [4, 0, 200, 17.5, True])
def test_bad_order_raises_parameter_error(bad):
    with pytest.raises(ParameterError, match="Lebedev order"):
        lebedev.rule(bad)
