"""Small synthetic asymptotic-state datasets for tests, demos and benchmarks.

NOT physics ground truth (that comes from a multi-angle QKE solver or Emu runs): the
"final" state is Box3D (converged default quadrature) plus a smooth, rotation-equivariant,
conservative distortion of relative size ``distortion`` -- a known residual that
the :mod:`box3d_jax.residual` model can learn, so that training and evaluation can
be tested end to end. The distortion conserves the flavor-summed four-fluxes and
every lepton number and keeps μ = τ, like the residual model itself.
"""

from __future__ import annotations

import numpy as np

from box3d_jax import box3d as B

__all__ = ["random_initial_states", "random_isotropic_states", "make_synthetic_dataset"]


def random_initial_states(
    rng: np.random.Generator, n: int, *, max_flux_factor: float = 0.95, n_tot: float = 4.9e32
) -> np.ndarray:
    """Random physical four-fluxes ``[n, 2, 3, 4]`` (cm⁻³): uniform densities, isotropic
    random flux directions, flux factors uniform in [0, max_flux_factor), ν̄ fluxes biased
    opposite to ν so that most points cross (are FFI unstable)."""
    N = rng.uniform(0.05, 1.0, (n, 2, 3))
    ff = rng.uniform(0.0, max_flux_factor, (n, 2, 3))
    v = rng.normal(size=(n, 2, 3, 3))
    axis = rng.normal(size=(n, 1, 1, 3))
    v[:, 0] += 1.0 * axis[:, 0]
    v[:, 1] -= 1.0 * axis[:, 0]
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    F4 = np.concatenate([v * (N * ff)[..., None], N[..., None]], axis=-1)
    return F4 * (n_tot / F4[..., 3].sum(axis=(1, 2)))[:, None, None, None]


def random_isotropic_states(
    rng: np.random.Generator, n: int, *, max_flux_factor: float = 0.9, n_tot: float = 4.9e32
) -> np.ndarray:
    """Random physical four-fluxes ``[n, 2, 3, 4]`` (cm⁻³) with no preferred axis: every
    species independently gets N uniform in [0.02, 1), a flux factor uniform in
    [0, max_flux_factor) and an isotropic flux direction (μ ≠ τ in general)."""
    N = rng.uniform(0.02, 1.0, (n, 2, 3))
    ff = rng.uniform(0.0, max_flux_factor, (n, 2, 3))
    v = rng.normal(size=(n, 2, 3, 3))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    F4 = np.concatenate([v * (N * ff)[..., None], N[..., None]], axis=-1)
    return F4 * (n_tot / F4[..., 3].sum(axis=(1, 2)))[:, None, None, None]


def _distortion(F4: np.ndarray, amplitude: float) -> np.ndarray:
    """Equivariant, conservative ΔF4 ``[n, 2, 3, 4]`` of size ~amplitude·n_tot."""
    ntot = F4[..., 3].sum(axis=(1, 2))[:, None, None]
    x = np.asarray(B.heavy_average(F4)) / ntot[..., None]
    # scalar modulation from two invariants: ELN-XLN density and |ELN flux|²
    eln = (x[:, 0, 0, 3] - x[:, 1, 0, 3]) - (x[:, 0, 1, 3] - x[:, 1, 1, 3])
    flux2 = np.sum((x[:, 0, 0, :3] - x[:, 1, 0, :3]) ** 2, axis=-1)
    s = (1.0 + 2.0 * eln + 3.0 * flux2)[:, None, None]
    dF_e = amplitude * s * np.stack([x[:, 0, 1] - x[:, 0, 0], x[:, 1, 1] - x[:, 1, 0]], axis=1)  # [n, 2, 4]
    dN = 0.5 * (dF_e[:, 0, 3] + dF_e[:, 1, 3])
    dF_e[:, :, 3] = dN[:, None]
    dF = np.stack([dF_e, -0.5 * dF_e, -0.5 * dF_e], axis=2)
    return dF * ntot[..., None]


def make_synthetic_dataset(
    n: int, *, seed: int = 0, distortion: float = 0.1, order: int | None = None, max_flux_factor: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """``(F4_initial, F4_final)`` ``[n, 2, 3, 4]`` cm⁻³; rows with unphysical finals are redrawn."""
    rng = np.random.default_rng(seed)
    out_i, out_f, have = [], [], 0
    draw = max(2 * n, 8)  # fixed draw size: Box3D compiles once
    while have < n:
        F4 = random_initial_states(rng, draw, max_flux_factor=max_flux_factor)
        final = np.asarray(B.box3d(F4, order=order)) + _distortion(F4, distortion)
        N = final[..., 3]
        ok = np.all(N > 0, axis=(1, 2)) & np.all(np.linalg.norm(final[..., :3], axis=-1) < N, axis=(1, 2))
        out_i.append(F4[ok])
        out_f.append(final[ok])
        have += int(ok.sum())
    return np.concatenate(out_i)[:n], np.concatenate(out_f)[:n]
