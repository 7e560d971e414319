"""Plain NumPy, one-point-at-a-time Box3D: an independent reference implementation.

Written directly from the paper's "mixed distribution" form (Eq. 22: f' = P f_e +
(1 − P) f_x, ...; moments of f') with the analytic Minerbo normalisation, unlike
:mod:`box3d_jax.box3d`, which uses the difference form and quadrature normalisation.
The two agree to the quadrature's accuracy for the smooth Minerbo parts (~1e-12 at
Lebedev 41 for flux factors <= 0.9). Used by the tests as an independent check and by
``benchmarks/bench_box3d.py`` as the speed baseline. Not jitted, not for production.
"""

from __future__ import annotations

import numpy as np


def _langevin(Z: np.ndarray) -> np.ndarray:
    Z = np.asarray(Z, dtype=float)
    out = np.empty_like(Z)
    s = Z < 1e-2
    z = Z[s]
    out[s] = z / 3 - z**3 / 45 + 2 * z**5 / 945
    z = Z[~s]
    out[~s] = 1 / np.tanh(z) - 1 / z
    return out


def _dlangevin(Z: np.ndarray) -> np.ndarray:
    Z = np.asarray(Z, dtype=float)
    out = np.empty_like(Z)
    s = Z < 1e-2
    z = Z[s]
    out[s] = 1 / 3 - z**2 / 15 + 2 * z**4 / 189
    z = Z[~s]
    out[~s] = 1 / z**2 - 1 / np.sinh(np.minimum(z, 300.0)) ** 2
    return out


def minerbo_Z(f: np.ndarray) -> np.ndarray:
    """Z with L(Z) = f: bisection-safeguarded Newton iteration in NumPy."""
    f = np.clip(np.asarray(f, dtype=float), 0.0, 1 - 1e-9)
    Z = 3 * f / (1 - f**2) * (1 - 0.4 * f**2)  # rough start, refined below
    lo, hi = np.zeros_like(f), np.full_like(f, 2e9)
    for _ in range(60):
        r = _langevin(Z) - f
        lo = np.where(r < 0, Z, lo)
        hi = np.where(r > 0, Z, hi)
        Zn = Z - r / _dlangevin(Z)
        bad = (Zn < lo) | (Zn > hi)
        Zn = np.where(bad, 0.5 * (lo + hi), Zn)
        if np.all(np.abs(Zn - Z) <= 1e-15 * np.maximum(Z, 1e-300)):
            Z = Zn
            break
        Z = Zn
    return Z


def _minerbo(N: np.ndarray, F: np.ndarray, d: np.ndarray) -> np.ndarray:
    """f [n_species, n_dir] = N/(4π) Z/sinh Z exp(Z F̂·n̂)."""
    norm = np.linalg.norm(F, axis=-1)
    ff = np.where(N > 0, norm / np.where(N > 0, N, 1.0), 0.0)
    Z = minerbo_Z(ff)
    Fhat = np.where(norm[:, None] > 0, F / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
    mu = Fhat @ d.T
    with np.errstate(over="ignore", invalid="ignore"):
        pref = np.where(Z > 1e-8, 2 * Z / -np.expm1(-2 * np.where(Z > 1e-8, Z, 1.0)), 1.0)
    return np.maximum(N, 0)[:, None] / (4 * np.pi) * pref[:, None] * np.exp(Z[:, None] * (mu - 1))


def box3d_point(F4: np.ndarray, d: np.ndarray, w: np.ndarray, nf: int = 3) -> np.ndarray:
    """Box3D for one point: F4 ``[2, nf, 4]`` (x, y, z, N last) -> F4' ``[2, nf, 4]``."""
    F4 = np.asarray(F4, dtype=float)
    ntot = F4[..., 3].sum()
    if ntot <= 0:
        return F4.copy()
    x = F4 / ntot
    heavy = x[:, 1:, :].mean(axis=1)
    spec = np.stack([x[0, 0], heavy[0], x[1, 0], heavy[1]])  # ν_e, ν_x, ν̄_e, ν̄_x
    f = _minerbo(spec[:, 3], spec[:, :3], d)
    fe, fx, fa, fxa = f
    G = (fe - fa) - (fx - fxa)
    Ip = w @ np.where(G > 0, G, 0.0)
    Im = w @ np.where(G < 0, -G, 0.0)
    out = np.empty_like(x)
    if min(Ip, Im) <= 1e-12:
        out[:, 0] = x[:, 0]
        out[:, 1:] = heavy[:, None, :]
        return out * ntot
    if Ip < Im:
        less = G > 0
        r = Ip / Im
    else:
        less = G < 0
        r = Im / Ip
    P = np.where(less, 1.0 / nf, 1.0 - (1.0 - 1.0 / nf) * r)
    fe2 = P * fe + (1 - P) * fx
    fa2 = P * fa + (1 - P) * fxa
    fx2 = fx + (1 - P) * (fe - fx) / (nf - 1)
    fxa2 = fxa + (1 - P) * (fa - fxa) / (nf - 1)

    def mom(g: np.ndarray) -> np.ndarray:
        return np.concatenate([(w * g) @ d, [w @ g]])

    out[0, 0], out[1, 0] = mom(fe2), mom(fa2)
    out[0, 1:] = mom(fx2)
    out[1, 1:] = mom(fxa2)
    return out * ntot


def box3d_loop(F4: np.ndarray, d: np.ndarray, w: np.ndarray, nf: int = 3) -> np.ndarray:
    """Python loop of :func:`box3d_point` over ``F4[n, 2, nf, 4]``."""
    return np.stack([box3d_point(p, d, w, nf) for p in np.asarray(F4)])
