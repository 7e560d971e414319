"""Linear stability analysis (LSA) of the fast flavor instability along one axis.

Units: densities are normalised by a reference density n_ref (the caller's choice,
usually n_tot), times by ħ/(√2 G_F n_ref) and wave numbers by √2 G_F n_ref/(ħc); a
growth rate Γ returned here is Γ_phys = Γ · n_ref · √2G_F/ħ (:data:`SQRT2_GF_OVER_HBAR`).

Linearised problem (reference note §10.3; Banerjee, Dighe & Raffelt 2011; Emu paper 1).
For one flavor pair (a, b) let ψ_v be the off-diagonal element of D_v = ρ_v − ρ̄*_v
in the discrete direction v, and G_v = (ρ_aa − ρ_bb − ρ̄_aa + ρ̄_bb)_v the background
lepton-number difference carried by that direction (number in the angular bin, i.e.
weight × per-steradian value). A plane wave ψ_v ∝ exp(i(k z − Ωt)) along the unit axis
ê (z = ê·x) solves

    Ω ψ = M(k) ψ,   M(k) = diag(k v·ê + Λ0 − v·Λ1) − diag(G) K,   K_vv' = 1 − v·v',
    Λ0 = Σ_v G_v,   Λ1 = Σ_v v G_v .

M is real, so eigenvalues come in complex-conjugate pairs; the growth rate is
Γ(k) = max Im Ω. For three flavors the (e,μ), (e,τ) and (μ,τ) pairs decouple in the
linear regime; the growth rate is the largest of the three.

Public API
----------
``pair_G(f, weights) -> G [3, n_dir]``   per-direction ELN−XLN of the three pairs,
``growth_rates(G, directions, axis, k) -> Γ [n_k]``   (jitted, vmappable over k),
``fastest_mode(G, directions, axis) -> LSAResult``   (scan + refinement, NumPy driver).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["PAIRS", "LSAResult", "pair_G", "dispersion_matrix", "growth_rates", "fastest_mode"]

#: Flavor pairs (a, b) of a three-flavor system.
PAIRS = ((0, 1), (0, 2), (1, 2))


class LSAResult(NamedTuple):
    """Fastest-growing mode along an axis (units of the module docstring).

    growth_rate: Γ_max = max_k Im Ω; 0 if stable.
    k: wave number of the fastest mode (signed, along ``axis``).
    pair: index into :data:`PAIRS` of the flavor pair that grows fastest.
    k_grid, gamma_grid: the coarse scan (for plots/diagnostics).
    """

    growth_rate: float
    k: float
    pair: int
    k_grid: np.ndarray
    gamma_grid: np.ndarray


def pair_G(rho_diag: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Per-direction lepton-number differences G of the flavor pairs.

    Args:
      rho_diag: ``[2, NF, n_dir]`` diagonal densities of ν and ν̄ in each direction:
        either numbers per bin (weights=None) or per steradian (then pass ``weights``).
      weights: optional quadrature weights ``[n_dir]``.

    Returns:
      ``[n_pairs, n_dir]`` G_v for the pairs of :data:`PAIRS` (NF = 3) or (e, x) (NF = 2).
    """
    rho_diag = jnp.asarray(rho_diag)
    if weights is not None:
        rho_diag = rho_diag * jnp.asarray(weights)
    lep = rho_diag[0] - rho_diag[1]  # [NF, n_dir] lepton number per flavor
    nf = lep.shape[0]
    pairs = PAIRS if nf == 3 else ((0, 1),)
    return jnp.stack([lep[a] - lep[b] for a, b in pairs])


def dispersion_matrix(G: jax.Array, directions: jax.Array, axis: jax.Array, k: jax.Array) -> jax.Array:
    """M(k) of the module docstring, ``[n_dir, n_dir]`` (real). G: ``[n_dir]``."""
    directions = jnp.asarray(directions)
    G = jnp.asarray(G)
    lam0 = jnp.sum(G)
    lam1 = directions.T @ G
    vz = directions @ jnp.asarray(axis)
    K = 1.0 - directions @ directions.T
    diag = k * vz + lam0 - directions @ lam1
    return jnp.diag(diag) - G[:, None] * K


@jax.jit
def _gamma_one(G: jax.Array, directions: jax.Array, axis: jax.Array, k: jax.Array) -> jax.Array:
    M = dispersion_matrix(G, directions, axis, k)
    return jnp.max(jnp.imag(jnp.linalg.eigvals(M)))


def growth_rates(G: jax.Array, directions: jax.Array, axis: jax.Array, k: jax.Array) -> jax.Array:
    """Γ(k) = max Im Ω(k) for one pair, ``k`` of any shape (CPU: uses a general eigensolver)."""
    k = jnp.asarray(k, dtype=jnp.float64)
    flat = jax.vmap(_gamma_one, in_axes=(None, None, None, 0))(
        jnp.asarray(G), jnp.asarray(directions), jnp.asarray(axis, dtype=jnp.float64), k.reshape(-1)
    )
    return jnp.maximum(flat, 0.0).reshape(k.shape)


def fastest_mode(
    G: np.ndarray,
    directions: np.ndarray,
    axis: np.ndarray,
    *,
    n_scan: int = 41,
    n_golden: int = 14,
    tol: float = 1e-9,
) -> LSAResult:
    """Scan k along ``axis`` for every distinct pair and refine around the maximum.

    The scan covers k ∈ Λ1·ê ± 2.5 Σ|G| (the unstable band lies within a few Σ|G| of
    the Doppler-shifted origin) with ``n_scan`` points, then a golden-section search of
    ``n_golden`` steps in the bracket around the best scan point (relative k accuracy
    ~ 0.618^n_golden of the scan step). Pairs with identical G (μ = τ) are solved once.
    Cost: (n_scan + n_golden) eigenvalue problems of size n_dir per distinct pair.

    Args:
      G: ``[n_pairs, n_dir]`` from :func:`pair_G` (or ``[n_dir]``).
      directions: ``[n_dir, 3]`` unit vectors; axis: ``[3]`` unit vector.
      tol: growth rates below ``tol``·Σ|G| count as stable (round-off of the eigensolver).
    """
    G = np.atleast_2d(np.asarray(G, dtype=np.float64))
    directions = np.asarray(directions, dtype=np.float64)
    axis = np.asarray(axis, dtype=np.float64)
    scale = float(np.abs(G).sum(axis=1).max())
    if scale <= 0.0:
        return LSAResult(0.0, 0.0, 0, np.zeros(0), np.zeros(0))
    best = (0.0, 0.0, 0)
    k_grid_all, g_grid_all = [], []
    done: list[np.ndarray] = []
    for p in range(G.shape[0]):
        s = float(np.abs(G[p]).sum())
        if s <= tol * scale or any(np.array_equal(G[p], q) for q in done):
            continue
        done.append(G[p])

        def gamma(kk, p=p):
            return np.asarray(growth_rates(G[p], directions, axis, np.atleast_1d(kk)))

        k0 = float(axis @ (directions.T @ G[p]))
        k = np.linspace(k0 - 2.5 * s, k0 + 2.5 * s, n_scan)
        g = gamma(k)
        k_grid_all.append(k)
        g_grid_all.append(g)
        i = int(np.argmax(g))
        kb, gb = float(k[i]), float(g[i])
        if gb > tol * scale:
            lo, hi = k[max(i - 1, 0)], k[min(i + 1, n_scan - 1)]
            r = (np.sqrt(5.0) - 1.0) / 2.0
            c, d = hi - r * (hi - lo), lo + r * (hi - lo)
            gc, gd = gamma(c)[0], gamma(d)[0]
            for _ in range(n_golden):
                if gc > gd:
                    hi, d, gd = d, c, gc
                    c = hi - r * (hi - lo)
                    gc = gamma(c)[0]
                else:
                    lo, c, gc = c, d, gd
                    d = lo + r * (hi - lo)
                    gd = gamma(d)[0]
            for kk, gg in ((c, gc), (d, gd)):
                if gg > gb:
                    kb, gb = float(kk), float(gg)
        if gb > best[0]:
            best = (gb, kb, p)
    if best[0] <= tol * scale:
        best = (0.0, 0.0, best[2])
    kg = np.concatenate(k_grid_all) if k_grid_all else np.zeros(0)
    gg = np.concatenate(g_grid_all) if g_grid_all else np.zeros(0)
    return LSAResult(best[0], best[1], best[2], kg, gg)
