"""Profile-path shear: sampler coordinates that straighten a curved posterior ridge.

Spectra constrain the ejecta only up to the homologous degeneracy: at fixed velocities a later
epoch with a denser, more luminous model gives nearly the same spectrum (Sobolev depths
``tau ~ rho_0 t^-2``, photospheric temperature ``T ~ (L / t^2)^(1/4)``), so ``t_exp``,
``log_L`` and ``log_rho_0`` (and the composition that follows them) share a long ridge.  In the
sampler's unconstrained coordinates the ridge is *curved*: where it meets a wall of the ``+-10 %``
box the probit / logit link bends it, and a Laplace (linear) whitening at the mode cannot
follow a bend -- away from the mode the Hessian of the 135-D seed-1 benchmark posterior had one
eigenvalue 10-280 times its value at the mode, so NUTS's step size, adapted in the bulk,
diverged at the ends (docs/inference.md, session 19).

The shear
    ``z_j = v_j + r_j(v_k - c)`` for ``j != k``,   ``z_k = v_k``,
with ``r(d)`` the *profile path* -- the other coordinates' conditional maximiser of the log
density at ``z_k = c + d``, minus the mode (``r(0) = 0``) -- maps the ridge onto the ``v_k`` axis.
It is triangular with a unit diagonal, so its Jacobian determinant is exactly 1: the density of
``v`` is ``logdensity(shear(v))`` with nothing added, every posterior is sampled exactly, and
draws map back to ``z`` by :meth:`RidgeShear.forward`.  A poor path costs efficiency only.

``r`` is the not-a-knot cubic spline through profile points found by
predictor-corrector continuation (tangent step from the implicit-function theorem, then Newton
on the other coordinates) every half Laplace standard deviation of ``z_k``, up to 12 steps on each
side, until the profile has dropped by 12.5 (5 sigma) from the mode or a corrector fails to
reach it; beyond the fitted range
the path continues along its end tangent (C1).  Pure numpy around compiled JAX calls (run once,
before sampling); the shear itself is pure ``jnp`` and traced into the sampler's density.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.model import newton_ascent


@dataclasses.dataclass(frozen=True)
class RidgeShear:
    """``z = forward(v)`` (see the module docstring).

    index: the ridge coordinate k of z; centre: ``c`` (its value at the mode); knots [m]: the
    profile points' offsets ``d`` (ascending, 0 among them); coef [4, m - 1, n_z]: the cubic
    pieces of ``r`` between knots (``scipy.interpolate.PPoly`` layout, highest power first; column
    k is zero); drops: the log density's drop below the mode at the knots; seconds: time the fit
    took.  Build it with :meth:`from_points`."""

    index: int
    centre: float
    knots: np.ndarray
    coef: np.ndarray
    drops: tuple = ()
    seconds: float = 0.0

    @classmethod
    def from_points(cls, index: int, centre: float, offsets, path, drops=(), seconds: float = 0.0) -> "RidgeShear":
        """Not-a-knot cubic spline (exact for cubic paths) through ``path [m, n_z]`` at ``offsets [m]``
        (m >= 4; ``path`` 0 at offset 0 and in column ``index``)."""
        from scipy.interpolate import CubicSpline

        offsets = np.asarray(offsets, float)
        order = np.argsort(offsets)
        path = np.array(path, float)[order]
        path[:, index] = 0.0
        spline = CubicSpline(offsets[order], path, axis=0, bc_type="not-a-knot")
        return cls(int(index), float(centre), offsets[order], np.asarray(spline.c), tuple(drops), float(seconds))

    @property
    def lo(self) -> float:
        return float(self.knots[0])

    @property
    def hi(self) -> float:
        return float(self.knots[-1])

    def _path(self, d, order: int):
        """``r`` (order 0), ``r'`` (1) or ``r''`` (2) at ``d`` [...] -> [..., n_z]; linear beyond [lo, hi]."""
        xp = jnp if isinstance(d, jax.Array) else np
        knots, coef = xp.asarray(self.knots), xp.asarray(self.coef)
        dc = xp.clip(d, self.lo, self.hi)
        i = xp.clip(xp.searchsorted(knots, dc, side="right") - 1, 0, self.knots.size - 2)
        t = (dc - knots[i])[..., None]
        c3, c2, c1, c0 = coef[0][i], coef[1][i], coef[2][i], coef[3][i]
        slope = (3.0 * c3 * t + 2.0 * c2) * t + c1
        if order == 0:
            return ((c3 * t + c2) * t + c1) * t + c0 + slope * (d - dc)[..., None]
        if order == 1:
            return slope
        inside = (d >= self.lo) & (d <= self.hi)
        return xp.where(inside[..., None], 6.0 * c3 * t + 2.0 * c2, 0.0)

    def forward(self, v):
        """Sampler coordinates ``v`` [..., n_z] -> model coordinates ``z`` (jnp or numpy)."""
        return v + self._path(v[..., self.index] - self.centre, 0)

    def inverse(self, z):
        """Model coordinates ``z`` [..., n_z] -> sampler coordinates ``v``."""
        return z - self._path(z[..., self.index] - self.centre, 0)

    def pullback_hessian(self, hess_z, grad_z, v) -> np.ndarray:
        """Hessian in ``v`` of ``f(forward(v))`` from ``f``'s Hessian ``hess_z`` and gradient
        ``grad_z`` at ``forward(v)`` (chain rule; saves compiling a second Hessian)."""
        v = np.asarray(v, float)
        d = v[self.index] - self.centre
        jac = np.eye(v.size)
        jac[:, self.index] += np.asarray(self._path(np.asarray(d), 1))
        h = jac.T @ np.asarray(hess_z, float) @ jac
        h[self.index, self.index] += float(np.asarray(grad_z, float) @ np.asarray(self._path(np.asarray(d), 2)))
        return h

    def record(self) -> dict:
        """JSON-ready summary (written to the fit's summary)."""
        return {"index": self.index, "centre": self.centre, "range": [self.lo, self.hi],
                "profile_offsets": self.knots.tolist(), "profile_drops": list(self.drops),
                "path_max_shift": float(np.abs(self._path(self.knots, 0)).max()), "seconds": self.seconds}


def fit_ridge(logdensity: Callable, z_map, index: int, scale: float, *, hessian: Callable | None = None,
              value_and_grad: Callable | None = None, step: float = 0.5, max_steps: int = 12,
              max_drop: float = 12.5, newton_steps: int = 12, max_decrement: float = 0.05,
              min_curvature: float = 0.1) -> RidgeShear | None:
    """Profile path of ``logdensity`` along ``z[index]`` from the mode ``z_map`` [n_z] and its
    :class:`RidgeShear` (module docstring).  ``scale``: the step unit (the Laplace standard
    deviation of ``z[index]``).  ``hessian`` / ``value_and_grad``: compiled derivatives of
    ``logdensity`` (default: compiled here).  A side's continuation stops at the first point
    where the log density is not finite or the corrector left a Newton decrement above
    ``max_decrement`` (it did not reach the profile), so no unconverged point becomes a knot.
    Returns None when fewer than 4 profile points could be found (the caller then samples
    without the shear)."""
    t0 = time.perf_counter()
    vg = value_and_grad if value_and_grad is not None else jax.jit(jax.value_and_grad(logdensity))
    hess = hessian if hessian is not None else jax.jit(jax.hessian(logdensity))
    z0 = np.asarray(z_map, float)
    n = z0.size
    others = np.array([i for i in range(n) if i != index])
    f_mode = float(vg(jnp.asarray(z0))[0])
    h_mode = -np.asarray(hess(jnp.asarray(z0)), float)
    if not np.all(np.isfinite(h_mode)):
        return None
    points, drops = {0.0: z0}, {0.0: 0.0}

    def floored(h):  # eigenpairs of the others' block of -H, eigenvalues floored
        ev, vec = np.linalg.eigh(0.5 * (h[np.ix_(others, others)] + h[np.ix_(others, others)].T))
        return np.maximum(ev, min_curvature), vec

    for sign in (1.0, -1.0):
        z, h = z0.copy(), h_mode
        for k in range(1, max_steps + 1):
            ev, vec = floored(h)
            tangent = -vec @ ((vec.T @ h[others, index]) / ev)
            dc = sign * step * scale
            z_new = z.copy()
            z_new[others] += tangent * dc
            z_new[index] += dc
            f_pred = float(vg(jnp.asarray(z_new))[0])
            if not np.isfinite(f_pred):
                break
            z_new, f = newton_ascent(logdensity, jnp.asarray(z_new), f_pred, newton_steps, hessian=hess,
                                     value_and_grad=vg, free=others, min_curvature=min_curvature)
            z_new = np.asarray(z_new, float)
            h_new = -np.asarray(hess(jnp.asarray(z_new)), float)
            g = np.asarray(vg(jnp.asarray(z_new))[1], float)[others]
            if not (np.isfinite(f) and np.all(np.isfinite(h_new)) and np.all(np.isfinite(g))):
                break
            ev, vec = floored(h_new)
            if (vec.T @ g) @ ((vec.T @ g) / ev) > max_decrement:  # the corrector did not reach the profile
                break
            z, h = z_new, h_new
            off = sign * k * step * scale
            points[off], drops[off] = z, f_mode - f
            if f_mode - f > max_drop:
                break
    if len(points) < 4:
        return None
    offs = np.array(sorted(points))
    return RidgeShear.from_points(index, float(z0[index]), offs, np.stack([points[o] - z0 for o in offs]),
                                  tuple(float(drops[o]) for o in offs), time.perf_counter() - t0)


def ridge_coordinate(name: str | None, setup, names: list[str]) -> int | None:
    """Index in ``z`` of the ridge parameter ``name`` (``SamplerConfig.ridge``) of a fit with
    ``setup`` (:class:`~lumina_jax.inference.model.FitSetup`) and flat coordinate ``names``
    (:func:`~lumina_jax.inference.model.z_names`); None when ``name`` is None or the parameter is
    fixed in this fit.  An unknown name raises :class:`~lumina_jax.errors.ParameterError`."""
    if name is None:
        return None
    setup.space.index(name)
    label = f"u:{name}"
    return names.index(label) if label in names else None
