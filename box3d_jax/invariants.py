"""Lorentz-scalar invariants of the six neutrino four-fluxes (27 numbers per point).

Metric convention (explicit): four-vectors are stored ``(x, y, z, t)`` -- time LAST, as
in the data files -- and the Minkowski product has signature (−, +, +, +):

    a·b = a_x b_x + a_y b_y + a_z b_z − a_t b_t.

The fluid four-velocity in the comoving orthonormal frame is u = (0, 0, 0, 1), so
F_s·u = −N_s. The 27 invariants (Rhea's ML inputs) are, with species s = 0..5 ordered
(ν_e, ν_μ, ν_τ, ν̄_e, ν̄_μ, ν̄_τ) and n_tot = Σ_s N_s:

* 21 pair products F_s·F_s' / n_tot² for s <= s' (order of :data:`PAIRS`);
* 6 products F_s·u / n_tot = −N_s / n_tot.

They are invariant under rotations (and boosts would leave the pair products
invariant); dividing by n_tot makes them scale invariant. For NF = 2 inputs there are
10 + 4 = 14 invariants.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["METRIC", "U", "minkowski_dot", "pairs", "PAIRS", "invariants", "n_invariants"]

#: diag(g) for (x, y, z, t) ordering.
METRIC = np.array([1.0, 1.0, 1.0, -1.0])
#: Fluid four-velocity in the comoving orthonormal frame, (x, y, z, t) ordering.
U = np.array([0.0, 0.0, 0.0, 1.0])


def minkowski_dot(a: jax.Array, b: jax.Array) -> jax.Array:
    """a·b = a_x b_x + a_y b_y + a_z b_z − a_t b_t over the last axis (size 4)."""
    return jnp.sum(a * b * jnp.asarray(METRIC, dtype=jnp.result_type(a, b)), axis=-1)


def pairs(n_species: int) -> tuple[tuple[int, int], ...]:
    """Species index pairs (s, s') with s <= s', row-major."""
    return tuple((i, j) for i in range(n_species) for j in range(i, n_species))


#: The 21 species pairs for NF = 3.
PAIRS = pairs(6)


def n_invariants(nf: int = 3) -> int:
    """Number of invariants for NF flavors (27 for NF = 3)."""
    ns = 2 * nf
    return ns * (ns + 1) // 2 + ns


def invariants(F4: jax.Array) -> jax.Array:
    """The n_tot-normalised invariants of ``F4[..., 2, NF, 4]``, shape ``[..., 27]`` (NF = 3).

    Order: the 21 pair products F_s·F_s'/n_tot² (:data:`PAIRS`), then the 6 F_s·u/n_tot.
    Points with n_tot = 0 give zeros.
    """
    F4 = jnp.asarray(F4)
    ns = 2 * F4.shape[-2]
    species = F4.reshape(F4.shape[:-3] + (ns, 4))
    ntot = jnp.sum(species[..., 3], axis=-1)
    scale = jnp.where(ntot > 0, ntot, 1.0)
    x = species / scale[..., None, None]
    gram = jnp.einsum("...ia,...ja->...ij", x * jnp.asarray(METRIC, x.dtype), x)
    iu, ju = np.triu_indices(ns)
    dots_u = minkowski_dot(x, jnp.asarray(U, x.dtype))
    return jnp.concatenate([gram[..., iu, ju], dots_u], axis=-1)
