"""Invariants (27, metric convention, rotation/scale invariance) and error metrics."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from box3d_jax import invariants as I
from box3d_jax import metrics


def _random(seed, n=8):
    rng = np.random.default_rng(seed)
    F = rng.normal(size=(n, 2, 3, 4))
    F[..., 3] = rng.uniform(0.1, 1.0, (n, 2, 3))
    return F


def test_count_order_and_metric_convention():
    assert I.n_invariants(3) == 27 and len(I.PAIRS) == 21 and I.n_invariants(2) == 14
    F = np.zeros((2, 3, 4))
    F[0, 0] = [0.3, 0.0, 0.4, 1.0]  # ν_e: |F| = 0.5, N = 1
    F[1, 0] = [0.0, 0.0, 0.0, 1.0]  # ν̄_e isotropic
    ntot = 2.0
    inv = np.asarray(I.invariants(F))
    assert inv.shape == (27,)
    # pair (ν_e, ν_e): |F|² − N² = 0.25 − 1; pair (ν_e, ν̄_e) = index of (0, 3): −N N̄
    assert inv[I.PAIRS.index((0, 0))] == pytest.approx((0.25 - 1.0) / ntot**2)
    assert inv[I.PAIRS.index((0, 3))] == pytest.approx(-1.0 / ntot**2)
    assert inv[I.PAIRS.index((1, 1))] == 0.0
    np.testing.assert_allclose(inv[21:], -F[..., 3].ravel() / ntot)  # F·u = −N
    assert float(I.minkowski_dot(np.array([1.0, 2, 3, 4]), np.array([1.0, 1, 1, 1]))) == 6.0 - 4.0


def test_invariant_under_rotation_reflection_and_scale():
    F = _random(0)
    Rm = Rotation.random(random_state=3).as_matrix() @ np.diag([1, 1, -1])
    Fr = F.copy()
    Fr[..., :3] = F[..., :3] @ Rm.T
    a = np.asarray(I.invariants(F))
    np.testing.assert_allclose(np.asarray(I.invariants(Fr)), a, atol=1e-14)
    np.testing.assert_allclose(np.asarray(I.invariants(7.3e32 * F)), a, rtol=1e-13, atol=1e-15)
    assert np.asarray(I.invariants(np.zeros((2, 3, 4)))).tolist() == [0.0] * 27


def test_metrics_definitions():
    Fi = _random(1, 4)
    Fi[..., :3] *= 0.1
    true = Fi.copy()
    pred = Fi.copy()
    ntot = Fi[..., 3].sum(axis=(1, 2))
    pred[:, 0, 0, 3] += 0.02 * ntot  # ΔN_e = 0.02 n_tot everywhere
    pred[2, 1, 0, 3] -= 0.08 * ntot[2]  # one ΔN̄_e of 0.08
    m = metrics.prediction_errors(pred, true, Fi)
    assert m["mean_abs_dNe"] == pytest.approx(0.02)
    assert m["mean_abs_dNebar"] == pytest.approx(0.02)
    assert m["max_error"] == pytest.approx(0.08)
    assert m["rms"] == pytest.approx(np.sqrt((4 * 0.02**2 + 0.08**2) / (4 * 24)))
    both = metrics.compare_methods({"a": pred, "b": true}, true, Fi)
    assert both["b"] == {k: 0.0 for k in metrics.METRIC_NAMES}
