"""Plain NumPy, one-point-at-a-time Box3D: an independent reference implementation.

Written directly from the paper's "mixed distribution" form (Eq. 22: f' = P f_e +
(1 − P) f_x, ...; moments of f') with the analytic Minerbo normalisation, unlike
:mod:`box3d_jax.box3d`, which uses the difference form. On the same Lebedev rule the two
agree with the "sharp" method to the quadrature's accuracy for the smooth Minerbo parts
(~1e-12 at Lebedev 41 for flux factors <= 0.9). Used by the tests as an independent check
and by ``benchmarks/bench_box3d.py`` as the accuracy reference (order 131) and speed
baseline. :func:`box3d_axisymmetric` integrates inputs with all fluxes along z
adaptively, with no angular rule at all. Not jitted, not for production.
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


def box3d_axisymmetric(F4: np.ndarray, nf: int = 3) -> tuple[np.ndarray, float, float]:
    """Box3D to ~1e-12 for one point whose fluxes all lie along ±z: 1D adaptive quadrature.

    With every flux along z the distributions depend on μ = cos θ only, the crossing is a
    set of circles μ = μ_k (roots of G(μ), bracketed on a 4001-point grid, refined by
    Brent's method) and every integral is 2π ∫ dμ over the pieces between them
    (``scipy.integrate.quad``). Independent of any angular quadrature rule: the reference
    for the analytic cases of the tests.

    Returns:
      ``(F4' [2, nf, 4], I₊, I₋)`` in the units of ``F4``.
    """
    from scipy import integrate, optimize

    F4 = np.asarray(F4, dtype=float)
    if np.abs(F4[..., :2]).max() > 0:
        raise ValueError("box3d_axisymmetric needs all fluxes along z (F_x = F_y = 0)")
    ntot = F4[..., 3].sum()
    x = F4 / ntot
    heavy = x[:, 1:, :].mean(axis=1)
    spec = np.stack([x[0, 0], heavy[0], x[1, 0], heavy[1]])  # ν_e, ν_x, ν̄_e, ν̄_x
    N, Fz = spec[:, 3], spec[:, 2]
    Z = minerbo_Z(np.where(N > 0, np.abs(Fz) / np.where(N > 0, N, 1.0), 0.0))
    sign = np.where(Fz < 0, -1.0, 1.0)

    def f(mu: float) -> np.ndarray:  # the four distributions at μ
        with np.errstate(over="ignore", invalid="ignore"):
            pref = np.where(Z > 1e-12, 2 * Z / -np.expm1(-2 * np.where(Z > 1e-12, Z, 1.0)), 1.0)
        return np.maximum(N, 0) / (4 * np.pi) * pref * np.exp(Z * (sign * mu - 1))

    def G(mu: float) -> float:
        v = f(mu)
        return (v[0] - v[1]) - (v[2] - v[3])

    grid = np.linspace(-1.0, 1.0, 4001)
    g = np.array([G(m) for m in grid])
    pos = g > 0
    roots = [optimize.brentq(G, grid[i], grid[i + 1], xtol=1e-15) for i in np.nonzero(pos[1:] != pos[:-1])[0]]
    edges = [-1.0, *roots, 1.0]

    def quad(h, a, b):
        return 2 * np.pi * integrate.quad(h, a, b, epsabs=1e-15, epsrel=1e-13, limit=200)[0]

    I = {1: 0.0, -1: 0.0}
    A = {1: np.zeros((2, 2)), -1: np.zeros((2, 2))}  # side -> [ν/ν̄, (F_z, N)] of ∫(f_e − f_x)
    for a, b in zip(edges[:-1], edges[1:]):
        side = 1 if G(0.5 * (a + b)) > 0 else -1
        I[side] += quad(lambda m: abs(G(m)), a, b)
        for k, (p, q) in enumerate(((0, 1), (2, 3))):
            A[side][k, 0] += quad(lambda m: m * (f(m)[p] - f(m)[q]), a, b)
            A[side][k, 1] += quad(lambda m: f(m)[p] - f(m)[q], a, b)
    out = np.empty_like(x)
    out[:, 0] = x[:, 0]
    out[:, 1:] = heavy[:, None, :]
    if min(I[1], I[-1]) > 1e-12:
        less = 1 if I[1] < I[-1] else -1
        r = I[less] / I[-less]
        dF = -(1 - 1 / nf) * (A[less] + r * A[-less])  # Σ (1 − P) over both sides
        out[:, 0, 2] += dF[:, 0]
        out[:, 0, 3] += dF[:, 1]
        out[:, 1:, 2] -= dF[:, 0][:, None] / (nf - 1)
        out[:, 1:, 3] -= dF[:, 1][:, None] / (nf - 1)
    return out * ntot, I[1] * ntot, I[-1] * ntot


def box3d_adaptive(F4: np.ndarray, nf: int = 3, epsabs: float = 1e-10) -> tuple[np.ndarray, float, float]:
    """Converged Box3D for one point by adaptive quadrature split along G = 0 (slow: minutes).

    Spherical coordinates about z: for each azimuth φ the crossings θ_k (roots of G on a
    2001-point θ grid, refined by Brent's method) split [0, π]; the integrals over the
    minority side Ω_< of |G| and (f_e − f_x)(n̂, 1) are ``scipy.integrate.quad_vec`` over
    θ inside ``quad_vec`` over φ. The whole-sphere integrals are the exact Minerbo moments,
    so F4' = F4_avg + ΔF4 with ΔF4_e = −(1 − 1/NF)[(1 − r) A_< + r A_tot], r = I_</I_>,
    I_> = I_< + |∫G| (:mod:`box3d_jax.box3d`). No angular rule: the reference that fixes
    the converged NSM1 value (docs/box3d.md).

    Returns:
      ``(F4' [2, nf, 4], I₊, I₋)`` in the units of ``F4``.
    """
    from scipy import integrate, optimize

    F4 = np.asarray(F4, dtype=float)
    ntot = F4[..., 3].sum()
    x = F4 / ntot
    heavy = x[:, 1:, :].mean(axis=1)
    spec = np.stack([x[0, 0], heavy[0], x[1, 0], heavy[1]])  # ν_e, ν_x, ν̄_e, ν̄_x
    N, F = spec[:, 3], spec[:, :3]
    norm = np.linalg.norm(F, axis=1)
    Z = minerbo_Z(np.where(N > 0, norm / np.where(N > 0, N, 1.0), 0.0))
    Fhat = np.where(norm[:, None] > 0, F / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
    with np.errstate(over="ignore", invalid="ignore"):
        norm_Z = np.where(Z > 1e-12, 2 * Z / -np.expm1(-2 * np.where(Z > 1e-12, Z, 1.0)), 1.0)
        pref = np.maximum(N, 0) / (4 * np.pi) * norm_Z
    int_G = (N[0] - N[1]) - (N[2] - N[3])
    s = -1.0 if int_G > 0 else 1.0  # sign of G on the minority side

    def direction(th, ph):
        return np.array([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)])

    def sG(th, ph):
        f = pref * np.exp(Z * (Fhat @ direction(th, ph) - 1))
        return s * ((f[0] - f[1]) - (f[2] - f[3]))

    def integrand(th, ph):  # [I, A^ν (x, y, z, N), A^ν̄ (x, y, z, N)] density, times sin θ
        n = direction(th, ph)
        f = pref * np.exp(Z * (Fhat @ n - 1))
        m = np.append(n, 1.0)
        G = s * ((f[0] - f[1]) - (f[2] - f[3]))
        return np.concatenate([[G], (f[0] - f[1]) * m, (f[2] - f[3]) * m]) * np.sin(th)

    grid = np.linspace(0.0, np.pi, 2001)

    def inner(ph):
        g = np.array([sG(t, ph) for t in grid])
        pos = g > 0
        cuts = [optimize.brentq(sG, grid[i], grid[i + 1], args=(ph,), xtol=1e-14)
                for i in np.nonzero(pos[1:] != pos[:-1])[0]]
        edges = [0.0, *cuts, np.pi]
        total = np.zeros(9)
        for a, b in zip(edges[:-1], edges[1:]):
            if b > a and sG(0.5 * (a + b), ph) > 0:
                total += integrate.quad_vec(lambda t: integrand(t, ph), a, b, epsabs=epsabs)[0]
        return total

    res = integrate.quad_vec(inner, 0.0, 2 * np.pi, epsabs=epsabs, limit=400)[0]
    I_less, A_less = res[0], res[1:].reshape(2, 4)
    A_tot = np.array([np.append(F[0] - F[1], N[0] - N[1]), np.append(F[2] - F[3], N[2] - N[3])])
    out = np.empty_like(x)
    out[:, 0] = x[:, 0]
    out[:, 1:] = heavy[:, None, :]
    I_more = I_less + abs(int_G)
    if I_less > 1e-12:
        r = I_less / I_more
        dF = -(1 - 1 / nf) * ((1 - r) * A_less + r * A_tot)
        out[:, 0] += dF
        out[:, 1:] -= dF[:, None, :] / (nf - 1)
    I_plus, I_minus = (I_less, I_more) if s > 0 else (I_more, I_less)
    return out * ntot, I_plus * ntot, I_minus * ntot
