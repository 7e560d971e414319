"""Lucy's macro-atom: transition blocks per level and their branching probabilities (pure JAX).

Every line ``k`` (lower level ``l``, upper ``u``) gives three transitions (Lucy 2002, A&A 384,
725, eqs. 20-22; Lucy 2003, A&A 403, 261; the line-only macro-atom of TARDIS):

======  ===========  ====  ====  ==========================================
kind    name         from  to    weight (per atom in the source level)
======  ===========  ====  ====  ==========================================
  -1    emission     u     l     ``A_ul beta (eps_u - eps_l)``
   0    internal down u    l     ``A_ul beta eps_l``
   1    internal up  l     u     ``B_lu sigma beta J_b eps_l``
======  ===========  ====  ====  ==========================================

``beta = (1 - exp(-tau)) / tau`` is the Sobolev escape probability, ``sigma = 1 - g_l n_u / (g_u
n_l)`` the stimulated-emission correction, ``J_b`` the mean intensity at the line's blue wing and
``eps`` the level energies above the ion's ground state (Lucy's level-energy weights; LUMINA's
own dynamic formula omits them).  Probabilities are the weights normalised over each source
level's whole block (all three kinds), per shell; a level with no weight has probability 0.

Every weight of a block carries the source level's ``1/g``, so with ``a = nu^2 gf beta`` the
weights are ``a (eps_u - eps_l)``, ``a eps_l`` and ``a sigma nbar eps_l`` with the photon
occupation number ``nbar = c^2 J_b / (2 h nu^3)`` -- the probabilities need no g at all.

Transitions are ordered by source level, then by kind (-1, 0, 1), then by line: level ``i``'s
block is ``block_start[i] : block_start[i + 1]`` (the layout of LUMINA's
``macro_atom_references.csv`` / ``macro_atom_data.csv``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

EMISSION, INTERNAL_DOWN, INTERNAL_UP = -1, 0, 1
K_EV = 8.617333262e-5  # eV/K
H_CGS = 6.62607015e-27  # erg s
C_CGS = 2.99792458e10  # cm/s
K_CGS = 1.380649e-16  # erg/K


class MacroAtom(NamedTuple):
    """Static transition table (int arrays; a pytree).

    src, dst : [T] source / destination level (index into the atomic data's level table)
    line : [T] line index; kind : [T] EMISSION / INTERNAL_DOWN / INTERNAL_UP
    block_start : [n_levels + 1] first transition of each level's block
    """

    src: np.ndarray
    dst: np.ndarray
    line: np.ndarray
    kind: np.ndarray
    block_start: np.ndarray

    @property
    def n_transitions(self) -> int:
        return int(np.shape(self.src)[0])


def build(lower, upper, n_levels: int) -> MacroAtom:
    """Transition table of the lines ``lower[k] -> upper[k]`` (level indices) over ``n_levels`` levels."""
    lower = np.asarray(lower, np.int64)
    upper = np.asarray(upper, np.int64)
    k = np.arange(len(lower))
    src = np.concatenate([upper, upper, lower])
    dst = np.concatenate([lower, lower, upper])
    line = np.concatenate([k, k, k])
    kind = np.concatenate([np.full(len(k), EMISSION), np.full(len(k), INTERNAL_DOWN), np.full(len(k), INTERNAL_UP)])
    order = np.lexsort((line, kind, src))
    src, dst, line, kind = src[order], dst[order], line[order], kind[order]
    block_start = np.searchsorted(src, np.arange(n_levels + 1)).astype(np.int64)
    return MacroAtom(src, dst, line, kind.astype(np.int64), block_start)


def from_atomic(atomic) -> MacroAtom:
    """The macro-atom of a level-resolved :class:`~lumina_jax.atomic.AtomicData`."""
    return build(np.asarray(atomic.lower), np.asarray(atomic.upper), int(np.shape(atomic.lev_energy)[0]))


def air_to_vacuum_jnp(wl_air):
    """:func:`lumina_jax.atomic.air.air_to_vacuum` in jnp (traceable)."""
    wl = jnp.asarray(wl_air)
    s2 = (1e4 / wl) ** 2
    n = 1 + 0.00008336624212083 + 0.02408926869968 / (130.1065924522 - s2) + 0.0001599740894897 / (38.92568793293 - s2)
    return jnp.where(wl > 2000.0, wl * n, wl)


def escape_probability(tau):
    """Sobolev escape probability ``(1 - e^{-tau}) / tau`` (1 - tau/2 near 0; smooth, finite gradients)."""
    small = tau < 1e-6
    safe = jnp.where(small, 1.0, tau)
    return jnp.where(small, 1.0 - 0.5 * tau, -jnp.expm1(-safe) / safe)


def planck_nu(nu, t):
    """Planck function B_nu(T), erg s^-1 cm^-2 Hz^-1 sr^-1."""
    x = H_CGS * nu / (K_CGS * t)
    return 2.0 * H_CGS * nu**3 / C_CGS**2 / jnp.expm1(x)


def dilute_blackbody_occupation(nu, w, t_rad):
    """Photon occupation number ``nbar = c^2 J_b / (2 h nu^3)`` of ``J_b = W B_nu(T_rad)``: ``W / (e^{h nu/kT} - 1)``.

    nu [n_l] Hz; w, t_rad [n_s] -> [n_s, n_l]."""
    x = H_CGS * nu[None, :] / (K_CGS * t_rad[:, None])
    return w[:, None] / jnp.expm1(x)


def stimulated_factor(atomic, w, t_rad):
    """``sigma = 1 - g_l n_u / (g_u n_l)`` [n_s, n_l] with dilute-LTE populations (levels' metastable
    flags: dilution 1 if metastable else W), clipped at 0 (no population inversion, as TARDIS)."""
    meta = atomic.lev_meta
    w_low = meta[atomic.lower][None, :] + (1.0 - meta[atomic.lower][None, :]) * w[:, None]
    w_up = meta[atomic.upper][None, :] + (1.0 - meta[atomic.upper][None, :]) * w[:, None]
    de = (atomic.lev_energy[atomic.upper] - atomic.lev_energy[atomic.lower])[None, :]
    return jnp.maximum(1.0 - (w_up / w_low) * jnp.exp(-de / (K_EV * t_rad[:, None])), 0.0)


def transition_weights(macro: MacroAtom, nu, gf, energy, tau, sigma, nbar):
    """Unnormalised Lucy weights ``[n_s, T]`` (common factors of a block dropped, see module doc).

    nu, gf : [n_l] line frequency (Hz) and g_l f_lu; energy : [n_levels] eV above the ion ground;
    tau, sigma, nbar : [n_s, n_l] Sobolev depth, stimulated-emission factor, occupation number.
    """
    a = (nu**2 * gf)[None, :] * escape_probability(tau)  # [n_s, n_l]
    a_t = a[:, macro.line]
    e_src = energy[macro.src][None, :]
    e_dst = energy[macro.dst][None, :]
    kind = macro.kind[None, :]
    up = sigma[:, macro.line] * nbar[:, macro.line] * e_src  # source = the lower level
    return a_t * jnp.where(kind == EMISSION, e_src - e_dst, jnp.where(kind == INTERNAL_DOWN, e_dst, up))


def normalise(macro: MacroAtom, weights):
    """Weights ``[n_s, T]`` -> probabilities normalised over each source level's block (0 for empty blocks)."""
    n_levels = int(np.shape(macro.block_start)[0]) - 1
    total = jax.vmap(lambda w: jax.ops.segment_sum(w, macro.src, num_segments=n_levels))(weights)
    d = total[:, macro.src]
    ok = d > 0
    return jnp.where(ok, weights / jnp.where(ok, d, 1.0), 0.0)


def transition_probabilities(macro: MacroAtom, atomic, tau, w, t_rad, nbar=None):
    """Branching probabilities ``[n_s, T]`` of every transition for a plasma state.

    atomic : level-resolved AtomicData (jnp arrays); tau : [n_s, n_l] Sobolev depths;
    w, t_rad : [n_s] dilution factor and radiation temperature (K); nbar : [n_s, n_l] photon
    occupation numbers of the blue-wing intensity (default: the dilute blackbody ``W B_nu(T_rad)``).
    Differentiable in ``tau``, ``w``, ``t_rad`` (float64).
    """
    nu = C_CGS / (air_to_vacuum_jnp(atomic.wl) * 1e-8)
    if nbar is None:
        nbar = dilute_blackbody_occupation(nu, w, t_rad)
    sigma = stimulated_factor(atomic, w, t_rad)
    weights = transition_weights(macro, nu, atomic.gf, atomic.lev_energy, tau, sigma, nbar)
    return normalise(macro, weights)
