"""Profile-path shear: sampler coordinates that straighten a curved posterior ridge.

Spectra constrain the ejecta only up to the homologous degeneracy: at fixed velocities a later
epoch with a denser, more luminous model gives nearly the same spectrum (Sobolev depths
``tau ~ rho_0 t^-2``, photospheric temperature ``T ~ (L / t^2)^(1/4)``), so ``t_exp``,
``log_L`` and ``log_rho_0`` (and the composition that follows them) share a long ridge.  In the
sampler's unconstrained coordinates the ridge is *curved*: where it meets a wall of the ``+-10 %``
box the probit / logit link bends it, and a Laplace (linear) whitening at the mode cannot
follow a bend -- away from the mode the Hessian of the 135-D seed-1 benchmark posterior had one
eigenvalue 10-280 times its value at the mode, so NUTS's step size, adapted in the bulk,
diverged at the ends (docs/design/decisions.md, *Ridge shear*).

The shear
    ``z_j = m_j + r_j(d) + s_j(d) (v_j - m_j)`` for ``j != k``,   ``z_k = v_k``,   ``d = v_k - c``,
with ``m`` the mode (``c = m_k``) and ``r(d)`` the *profile path* -- the other coordinates'
conditional maximiser of the log density at ``z_k = c + d``, minus the mode (``r(0) = 0``) --
maps the ridge onto the ``v_k`` axis.  ``s_j(d) = exp(l_j(d))`` (``s(0) = 1``) follows the
*width* of the ridge: the conditional (Laplace) standard deviation of ``z_j`` at the profile
point over its value at the mode.  A ridge that widens or narrows along ``z_k`` is a funnel,
which no fixed metric fits: on the 135-D seed-2 benchmark posterior ``log_L``'s conditional
width grew 5.6-fold along the ``t_exp`` ridge (0.66 to 3.7 times its width at the mode; the
draws showed the same), and NUTS's slowest mode had kurtosis 32 (docs/design/decisions.md,
*Ridge shear*).  The map is triangular, so ``log |det dz/dv| = sum_j l_j(d)``
(:meth:`RidgeShear.log_det_jacobian`), which the sampled density adds: every posterior is
sampled exactly, and draws map back to ``z`` by :meth:`RidgeShear.forward`.  A poor path or
poor widths cost efficiency only.  Without widths (``s = 1``) the shear has unit Jacobian.

``r`` and ``l`` are not-a-knot cubic splines through profile points found by
predictor-corrector continuation (tangent step from the implicit-function theorem, then Newton
on the other coordinates) every half Laplace standard deviation of ``z_k``, up to 12 steps on each
side, until the profile has dropped by 12.5 (5 sigma) from the mode or a corrector fails to
reach it; beyond the fitted range
the path continues along its end tangent, and ``l`` bends to a constant
(``l(hi) + l'(hi) tau tanh((d - hi) / tau)``, ``tau`` half the fitted range or less, so that
``l`` moves at most log 2 beyond an end: C1 and bounded, so a warm-up excursion far out cannot
overflow or collapse ``s``).  Pure numpy around compiled JAX calls (run once,
before sampling); the shear itself is pure ``jnp`` and traced into the sampler's density.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.inference.optimize import newton_ascent


def _xp(a):
    """The array module of ``a``: jnp for jax arrays and tracers (inside the sampler), numpy otherwise."""
    return jnp if isinstance(a, jax.Array) else np


@dataclasses.dataclass(frozen=True)
class RidgeShear:
    """``z = forward(v)`` (see the module docstring).

    index: the ridge coordinate k of z; centre: ``c`` (its value at the mode); knots [m]: the
    profile points' offsets ``d`` (ascending, 0 among them); coef [4, m - 1, n_z]: the cubic
    pieces of ``r`` between knots (``scipy.interpolate.PPoly`` layout, highest power first; column
    k is zero); drops: the log density's drop below the mode at the knots; seconds: time the fit
    took; mode [n_z]: ``m``; width_coef [4, m - 1, n_z] or None (``s = 1``): the pieces of
    ``l = log s`` (column k zero).  Build it with :meth:`from_points`."""

    index: int
    centre: float
    knots: np.ndarray
    coef: np.ndarray
    drops: tuple = ()
    seconds: float = 0.0
    mode: np.ndarray | None = None
    width_coef: np.ndarray | None = None

    @classmethod
    def from_points(cls, index: int, centre: float, offsets, path, drops=(), seconds: float = 0.0, *,
                    mode=None, log_widths=None) -> "RidgeShear":
        """Not-a-knot cubic splines (exact for cubic paths) through ``path [m, n_z]`` and
        ``log_widths [m, n_z]`` (``l`` at the knots; None: no width scaling) at ``offsets [m]``
        (m >= 4; both 0 at offset 0 and in column ``index``).  ``mode`` [n_z]: the mode ``m``
        (needed with ``log_widths``; its entry ``index`` is ``centre``)."""
        from scipy.interpolate import CubicSpline

        offsets = np.asarray(offsets, float)
        order = np.argsort(offsets)

        def pieces(vals):
            vals = np.array(vals, float)[order]
            vals[:, index] = 0.0
            return np.asarray(CubicSpline(offsets[order], vals, axis=0, bc_type="not-a-knot").c)

        coef = pieces(path)
        if log_widths is None:
            return cls(int(index), float(centre), offsets[order], coef, tuple(drops), float(seconds))
        if mode is None:
            raise ValueError("log_widths need the mode")
        mode = np.array(mode, float)
        mode[index] = centre
        return cls(int(index), float(centre), offsets[order], coef, tuple(drops), float(seconds), mode,
                   pieces(log_widths))

    @property
    def lo(self) -> float:
        return float(self.knots[0])

    @property
    def hi(self) -> float:
        return float(self.knots[-1])

    def _path(self, d, order: int):
        """``r`` (order 0), ``r'`` (1) or ``r''`` (2) at ``d`` [...] -> [..., n_z]; linear beyond [lo, hi]."""
        return self._spline(self.coef, d, order, bounded=False)

    def _log_width(self, d, order: int):
        """``l`` (order 0), ``l'`` (1) or ``l''`` (2) at ``d`` [...] -> [..., n_z] (zeros without widths)."""
        if self.width_coef is None:
            xp = _xp(d)
            return xp.zeros(xp.shape(d) + (self.coef.shape[2],))
        return self._spline(self.width_coef, d, order, bounded=True)

    def _spline(self, coef, d, order: int, bounded: bool):
        """Piecewise cubic ``coef`` at ``d``: beyond [lo, hi] along the end tangent (``bounded``
        False) or bending to a constant at most log 2 away (True: ``tau tanh(out / tau)`` times the
        end slope, ``tau = min((hi - lo) / 2, log 2 / |end slope|)``); jnp or numpy."""
        xp = _xp(d)
        knots, coef = xp.asarray(self.knots), xp.asarray(coef)
        dc = xp.clip(d, self.lo, self.hi)
        i = xp.clip(xp.searchsorted(knots, dc, side="right") - 1, 0, self.knots.size - 2)
        t = (dc - knots[i])[..., None]
        c3, c2, c1, c0 = coef[0][i], coef[1][i], coef[2][i], coef[3][i]
        slope = (3.0 * c3 * t + 2.0 * c2) * t + c1
        out = (d - dc)[..., None]
        inside = ((d >= self.lo) & (d <= self.hi))[..., None]
        if bounded:  # at most log 2 beyond the end: tau = min(half the range, log 2 / |end slope|)
            tau = xp.minimum(0.5 * (self.hi - self.lo), np.log(2.0) / (xp.abs(slope) + 1e-12))
            th = xp.tanh(out / tau)
            ext = (tau * th, 1.0 - th ** 2, -2.0 * th * (1.0 - th ** 2) / tau)[order]  # d^n/dd^n tau tanh(out/tau)
        else:
            ext = (out, 1.0, 0.0)[order]
        if order == 0:
            return ((c3 * t + c2) * t + c1) * t + c0 + slope * ext
        if order == 1:
            return slope * ext
        return xp.where(inside, 6.0 * c3 * t + 2.0 * c2, slope * ext)

    def forward(self, v):
        """Sampler coordinates ``v`` [..., n_z] -> model coordinates ``z`` (jnp or numpy)."""
        d = v[..., self.index] - self.centre
        if self.width_coef is None:
            return v + self._path(d, 0)
        xp = _xp(v)
        return self.mode + self._path(d, 0) + xp.exp(self._log_width(d, 0)) * (v - self.mode)

    def inverse(self, z):
        """Model coordinates ``z`` [..., n_z] -> sampler coordinates ``v``."""
        d = z[..., self.index] - self.centre
        if self.width_coef is None:
            return z - self._path(d, 0)
        xp = _xp(z)
        return self.mode + (z - self.mode - self._path(d, 0)) * xp.exp(-self._log_width(d, 0))

    def log_det_jacobian(self, v):
        """``log |det dz/dv|`` at ``v`` [..., n_z] -> [...] (0 without widths): add it to
        ``logdensity(forward(v))`` for the density of ``v``."""
        if self.width_coef is None:
            xp = _xp(v)
            return xp.zeros(xp.shape(v)[:-1])
        return self._log_width(v[..., self.index] - self.centre, 0).sum(-1)

    def pullback_hessian(self, hess_z, grad_z, v) -> np.ndarray:
        """Hessian in ``v`` of ``f(forward(v)) + log_det_jacobian(v)`` from ``f``'s Hessian
        ``hess_z`` and gradient ``grad_z`` at ``forward(v)`` (chain rule; saves compiling a
        second Hessian)."""
        v, g = np.asarray(v, float), np.asarray(grad_z, float)
        k = self.index
        d = np.asarray(v[k] - self.centre)
        l0, l1, l2 = (np.asarray(self._log_width(d, n)) for n in (0, 1, 2))
        s = np.exp(l0)
        s1, s2 = s * l1, s * (l2 + l1 ** 2)  # s', s''
        dv = v - (self.mode if self.mode is not None else v)
        jac = np.diag(s)
        jac[:, k] += np.asarray(self._path(d, 1)) + s1 * dv
        h = jac.T @ np.asarray(hess_z, float) @ jac
        h[k, k] += float(g @ (np.asarray(self._path(d, 2)) + s2 * dv)) + float(l2.sum())
        h[k, :] += g * s1
        h[:, k] += g * s1
        return h

    def record(self) -> dict:
        """JSON-ready summary (written to the fit's summary)."""
        rec = {"index": self.index, "centre": self.centre, "range": [self.lo, self.hi],
               "profile_offsets": self.knots.tolist(), "profile_drops": list(self.drops),
               "path_max_shift": float(np.abs(self._path(self.knots, 0)).max()), "seconds": self.seconds,
               "width_ratio": None}
        if self.width_coef is not None:
            log_s = self._log_width(self.knots, 0)
            s, j = np.exp(log_s), int(np.argmax(np.abs(log_s).max(0)))
            rec["width_ratio"] = {"min": float(s.min()), "max": float(s.max()), "most_varying": j,
                                  "most_varying_at_knots": s[:, j].tolist()}
        return rec


def fit_ridge(logdensity: Callable, z_map, index: int, scale: float, *, hessian: Callable | None = None,
              value_and_grad: Callable | None = None, step: float = 0.5, max_steps: int = 12,
              max_drop: float = 12.5, newton_steps: int = 12, max_decrement: float = 0.05,
              min_curvature: float = 0.1, widths: bool = True, max_floored_share: float = 0.01) -> RidgeShear | None:
    """Profile path of ``logdensity`` along ``z[index]`` from the mode ``z_map`` [n_z] and its
    :class:`RidgeShear` (module docstring).  ``scale``: the step unit (the Laplace standard
    deviation of ``z[index]``).  ``hessian`` / ``value_and_grad``: compiled derivatives of
    ``logdensity`` (default: compiled here).  A side's continuation stops at the first point
    where the log density is not finite or the corrector left a Newton decrement above
    ``max_decrement`` (it did not reach the profile), so no unconverged point becomes a knot.
    ``widths``: also follow the conditional standard deviations of the other coordinates
    (diagonal of the inverse of their block of ``-H`` at each profile point) -- the width
    scaling ``s``; a coordinate's width is held at its last value from the first point outward
    where eigen-directions with curvature below ``min_curvature`` (floored) carry more than
    ``max_floored_share`` of its conditional variance (the floor, not the density, then sets it:
    :func:`_held_widths`); False: the unit-Jacobian shear.  Returns None when fewer than 4
    profile points could be found (the caller then samples without the shear)."""
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

    def floored(h):  # eigenpairs of the others' block of -H, eigenvalues floored
        ev, vec = np.linalg.eigh(0.5 * (h[np.ix_(others, others)] + h[np.ix_(others, others)].T))
        return np.maximum(ev, min_curvature), vec

    def log_sd(ev, vec):
        """(log conditional standard deviations of z [n] (0 in column ``index``), defined [n] bool):
        a coordinate's Laplace width is defined where the floor on the eigenvalues does not set it
        (near a bifurcation -- e.g. the signed systematic, symmetric about 0, whose conditional can
        turn bimodal at +-f where the fit worsens -- the curvature passes through zero and the
        Laplace width through infinity while the true width stays finite)."""
        out, ok = np.zeros(n), np.ones(n, bool)
        var = np.einsum("ij,j,ij->i", vec, 1.0 / ev, vec)
        out[others] = 0.5 * np.log(var)
        # share of each coordinate's variance from floored directions (eigenvalue exactly min_curvature)
        floored_var = np.einsum("ij,j,ij->i", vec, np.where(ev <= min_curvature, 1.0 / ev, 0.0), vec)
        ok[others] = floored_var <= max_floored_share * var
        return out, ok

    points, drops, log_sds = {0.0: z0}, {0.0: 0.0}, {0.0: log_sd(*floored(h_mode))}

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
            points[off], drops[off], log_sds[off] = z, f_mode - f, log_sd(ev, vec)
            if f_mode - f > max_drop:
                break
    if len(points) < 4:
        return None
    offs = np.array(sorted(points))
    log_widths = _held_widths(offs, log_sds) if widths else None
    return RidgeShear.from_points(index, float(z0[index]), offs, np.stack([points[o] - z0 for o in offs]),
                                  tuple(float(drops[o]) for o in offs), time.perf_counter() - t0,
                                  mode=z0, log_widths=log_widths)


def _held_widths(offs, log_sds) -> np.ndarray:
    """``l`` [m, n_z] at the sorted knot offsets ``offs`` from ``log_sds`` {offset: (log sd, defined)}:
    the log sd over its value at the mode where the Laplace width is defined; from a coordinate's
    first undefined knot outward on each side, its last defined value (0 throughout for a
    coordinate whose width is undefined at the mode itself)."""
    ref, ok0 = log_sds[0.0]
    out = np.zeros((len(offs), ref.size))
    i0 = int(np.flatnonzero(offs == 0.0)[0])
    for side in (range(i0 + 1, len(offs)), range(i0 - 1, -1, -1)):
        last, held = np.zeros(ref.size), ~ok0
        for i in side:
            ls, ok = log_sds[float(offs[i])]
            held |= ~ok
            last = np.where(held, last, ls - ref)
            out[i] = last
    return out


def ridge_coordinate(name: str | None, setup, names: list[str]) -> int | None:
    """Index in ``z`` of the ridge parameter ``name`` (``SamplerConfig.ridge``) of a fit with
    ``setup`` (:class:`~lumina_jax.inference.density.FitSetup`) and flat coordinate ``names``
    (:func:`~lumina_jax.inference.density.z_names`); None when ``name`` is None or the parameter is
    fixed in this fit.  An unknown name raises :class:`~lumina_jax.errors.ParameterError`."""
    if name is None:
        return None
    setup.space.index(name)
    label = f"u:{name}"
    return names.index(label) if label in names else None
