"""Lebedev quadrature rules on the unit sphere.

Public API
----------
``rule(order) -> (directions [n, 3], weights [n])``
    Unit vectors and weights (sum 4π) of the Lebedev rule that integrates every
    spherical polynomial of degree <= ``order`` exactly:
    ``∫ g(n̂) dΩ ≈ Σ_k weights[k] g(directions[k])``.
``ORDERS``
    The orders available (those of :func:`scipy.integrate.lebedev_rule`).
``n_points(order)``
    Number of directions of a rule (17 -> 110, 29 -> 302, 41 -> 590, 131 -> 5810).

The rules come from the maintained implementation in SciPy (>= 1.15) and are
cached as read-only float64 NumPy arrays; pass them to jitted code as constants.
Every Lebedev rule is inversion symmetric (n̂ and −n̂ both appear with equal weight),
which the Box3D mirror tests rely on.
"""

from __future__ import annotations

import functools

import numpy as np

from box3d_jax.errors import ParameterError

__all__ = ["ORDERS", "rule", "n_points"]

#: Degrees of precision provided by scipy.integrate.lebedev_rule.
ORDERS: tuple[int, ...] = (
    3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31, 35, 41, 47, 53, 59, 65, 71,
    77, 83, 89, 95, 101, 107, 113, 119, 125, 131,
)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _cached(order: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.integrate import lebedev_rule

    x, w = lebedev_rule(order)
    directions = np.ascontiguousarray(np.asarray(x, dtype=np.float64).T)
    # Re-normalise the directions to unit length and the weights to exactly 4π (round-off only).
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    weights = np.asarray(w, dtype=np.float64)
    weights *= 4.0 * np.pi / weights.sum()
    directions.setflags(write=False)
    weights.setflags(write=False)
    return directions, weights


def rule(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Lebedev rule of the given degree of precision.

    Args:
      order: degree of precision; one of :data:`ORDERS` (e.g. 17, 29, 41, 131).

    Returns:
      ``(directions, weights)``: unit vectors, shape ``[n, 3]`` (x, y, z), and weights,
      shape ``[n]``, summing to 4π. Read-only float64 arrays shared between calls.

    Raises:
      ParameterError: if ``order`` is not an available Lebedev order.
    """
    if isinstance(order, bool) or int(order) != order or int(order) not in ORDERS:
        raise ParameterError(f"Lebedev order {order!r} not available; choose one of {ORDERS}")
    return _cached(int(order))


def n_points(order: int) -> int:
    """Number of directions of the Lebedev rule of this order."""
    return rule(order)[1].shape[0]
