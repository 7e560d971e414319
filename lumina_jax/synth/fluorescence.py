"""Line source functions of Lucy's macro-atom without Monte Carlo (pure JAX, float64).

TARDIS builds the line source functions of its formal integral from Monte Carlo estimators
(Lucy 1999; Lucy 2002, 2003); here the radiation field of the plasma model replaces the
estimators.  Per shell ``s`` and line ``l -> u`` (``fluorescence.md`` section 3 of the reference
notes; TARDIS ``spectrum/formal_integral/source_function.py``):

1. absorbed power in the line, from the blue-wing intensity ``J_b = W B_nu(T_rad)`` (a dilute
   blackbody) attenuated as in the Sobolev approximation: ``E_lu = (4 pi nu / c t)(1 - e^{-tau}) J_b``;
2. activation of the upper level: ``c_u = sum_l E_lu`` (the factors ``4 pi / c t`` cancel);
3. the macro-atom's energy flow through its levels: ``(I - P_int^T) F = c`` with the internal-jump
   probabilities ``P_int`` of :mod:`lumina_jax.atomic.macroatom` (Lucy's level-energy weights);
4. emission in line ``u -> l``: ``nu (1 - e^{-tau}) S = p_em(u -> l) F_u``, i.e.
   ``att_S = (1 - e^{-tau}) S = p_em F_u / nu`` (erg s^-1 cm^-2 Hz^-1 sr^-1).

Two independent two-level atoms give ``att_S = (1 - e^{-tau}) W B_nu``: resonance scattering.
Energy is conserved per ion and shell: ``sum_l nu att_S = sum_l nu (1 - e^{-tau}) J_b``.

The flow (step 3) is solved by a fixed number of Neumann steps ``F <- c + P_int^T F`` (the
in-flight energy after k steps falls below 1e-3 of the absorbed energy by k = 30 at SN 2011fe-like
states) inside ``lax.custom_linear_solve``, so gradients come from the implicit-function theorem
(one transposed solve) and the iterations are never taped.  The residual in-flight energy is
returned to the lines of its ion in proportion to their emission, so energy conservation holds
exactly.  ``downbranch`` (Lucy 1999) skips the internal jumps: the absorbed energy leaves through
the upper level's emission lines only, with probabilities renormalised over them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.atomic import macroatom as ma

LINE_INTERACTIONS = ("scatter", "downbranch", "macroatom")
TINY = 1e-200  # energies / probabilities below this are treated as zero (their squares underflow)


class SourcePlan(NamedTuple):
    """Static index tables of the macro-atom over a line set (NumPy ints; built once).

    macro : the :class:`~lumina_jax.atomic.macroatom.MacroAtom` of the lines
    internal : [T_int] indices of the internal transitions (kinds 0, 1)
    emission : [n_lines] index of each line's emission transition
    n_levels : number of levels; line_ion : [n_lines] ion id (el * 5 + stage) of each line
    n_ions : number of ion ids
    """

    macro: ma.MacroAtom
    internal: np.ndarray
    emission: np.ndarray
    n_levels: int
    line_ion: np.ndarray
    n_ions: int


def build_plan(atomic) -> SourcePlan:
    """The static tables for the lines of a level-resolved :class:`~lumina_jax.atomic.AtomicData`."""
    macro = ma.from_atomic(atomic)
    internal = np.flatnonzero(macro.kind != ma.EMISSION)
    em = np.flatnonzero(macro.kind == ma.EMISSION)
    emission = np.empty(len(np.asarray(atomic.wl)), np.int64)
    emission[macro.line[em]] = em
    line_ion = (np.asarray(atomic.el) * 5 + np.asarray(atomic.stage)).astype(np.int64)
    return SourcePlan(macro, internal, emission, int(np.shape(atomic.lev_energy)[0]), line_ion,
                      int(len(np.asarray(atomic.chi)) * 5))


def add_outlets(atomic, keep, share: float = 1e-3) -> np.ndarray:
    """Line mask ``keep`` plus the emission outlets of every level the kept lines can activate.

    A level is active when it is the upper level of a kept line or is reached from an active level
    by a kept downward line (the cascade); every line out of an active level whose thin-line weight
    ``nu^2 gf (eps_u - eps_l)`` is at least ``share`` of its level's total is kept too, repeated
    until nothing changes.  Thin lines are the main outlets of fluorescence: pruning them by their
    optical depth alone would force the absorbed energy into the remaining (thick) lines.
    """
    lower, upper = np.asarray(atomic.lower), np.asarray(atomic.upper)
    energy = np.asarray(atomic.lev_energy)
    wl = np.asarray(atomic.wl)
    w = np.asarray(atomic.gf) / wl**2 * (energy[upper] - energy[lower])
    tot = np.bincount(upper, weights=w, minlength=len(energy))
    outlet = w >= share * tot[upper]
    keep = np.asarray(keep, bool).copy()
    active = np.zeros(len(energy), bool)
    active[upper[keep]] = True
    while True:
        new = active[upper] & outlet & ~keep
        if not new.any():
            return keep
        keep |= new
        active[lower[new]] = True


def _flow(plan: SourcePlan, p_int, c, n_iter: int):
    """Solve ``(I - P_int^T) F = c`` per shell (``p_int [n_s, T_int]``, ``c [n_s, n_levels]``)."""
    src = plan.macro.src[plan.internal]
    dst = plan.macro.dst[plan.internal]
    n = plan.n_levels

    def pt(x):  # (P^T x)[j] = sum_{i -> j} p x_i
        return jax.vmap(lambda p, xs: jax.ops.segment_sum(p * xs[src], dst, num_segments=n))(p_int, x)

    def pmat(x):  # (P x)[i] = sum_{i -> j} p x_j
        return jax.vmap(lambda p, xs: jax.ops.segment_sum(p * xs[dst], src, num_segments=n))(p_int, x)

    def neumann(op):
        def solve(_, b):
            return jax.lax.fori_loop(0, n_iter, lambda _, x: b + op(x), b)
        return solve

    return jax.lax.custom_linear_solve(lambda x: x - pt(x), c, solve=neumann(pt), transpose_solve=neumann(pmat))


def line_emissivity(plan: SourcePlan, atomic, tau, w, t_rad, *, mode: str = "macroatom", n_iter: int = 30,
                    j_b=None):
    """``att_S = (1 - e^{-tau}) S`` of every line ``[n_s, n_lines]`` (erg s^-1 cm^-2 Hz^-1 sr^-1).

    atomic : level-resolved AtomicData (jnp arrays) of the lines of ``plan``; tau : [n_s, n_lines]
    Sobolev depths; w, t_rad : [n_s] dilution factor and radiation temperature (K).
    mode : ``scatter`` (``(1 - e^{-tau}) J_b``), ``downbranch`` or ``macroatom`` (static).
    j_b : [n_s, n_lines] blue-wing mean intensities (default the dilute blackbody ``W B_nu(T_rad)``).
    """
    nu = ma.C_CGS / (ma.air_to_vacuum_jnp(atomic.wl) * 1e-8)
    if j_b is None:
        j_b = w[:, None] * ma.planck_nu(nu[None, :], t_rad[:, None])
    absorbed = -jnp.expm1(-jnp.maximum(tau, 0.0)) * j_b  # (1 - e^-tau) J_b
    if mode == "scatter":
        return absorbed
    upper = atomic.upper
    activation = jax.vmap(lambda e: jax.ops.segment_sum(e, upper, num_segments=plan.n_levels))(nu[None, :] * absorbed)
    nbar = j_b * (ma.C_CGS**2 / (2.0 * ma.H_CGS * nu**3))[None, :]
    p = ma.transition_probabilities(plan.macro, atomic, tau, w, t_rad, nbar=nbar)
    p_em = p[:, plan.emission]  # [n_s, n_lines]
    if mode == "downbranch":
        tot = jax.vmap(lambda q: jax.ops.segment_sum(q, upper, num_segments=plan.n_levels))(p_em)[:, upper]
        ok = tot > TINY
        p_em = jnp.where(ok, p_em / jnp.where(ok, tot, 1.0), 0.0)
        flow = activation
    elif mode == "macroatom":
        flow = _flow(plan, p[:, plan.internal], activation, n_iter)
    else:
        raise ValueError(f"line interaction must be one of {LINE_INTERACTIONS}, got {mode!r}")
    emitted = p_em * flow[:, upper]  # energy leaving in each line, same units as nu * absorbed
    # return the in-flight residual to the lines of its ion: exact energy conservation per ion and shell
    seg = lambda x: jax.vmap(lambda r: jax.ops.segment_sum(r, plan.line_ion, num_segments=plan.n_ions))(x)  # noqa: E731
    e_in, e_out = seg(nu[None, :] * absorbed), seg(emitted)
    # in log form: the gradient of e_in / e_out squares e_out, which underflows for (irrelevantly) faint ions
    ok = (e_out > TINY) & (e_in > TINY)
    log_scale = jnp.log(jnp.where(ok, e_in, 1.0)) - jnp.log(jnp.where(ok, e_out, 1.0))
    scale = jnp.exp(jnp.where(ok, log_scale, 0.0))[:, plan.line_ion]
    return emitted * scale / nu[None, :]


def energy_balance(plan: SourcePlan, atomic, tau, w, t_rad, att_s, j_b=None):
    """Per ion and shell: ``(absorbed, emitted)`` ``[n_s, n_ions]`` = ``sum nu (1 - e^-tau) J_b`` and ``sum nu att_S``."""
    nu = ma.C_CGS / (ma.air_to_vacuum_jnp(atomic.wl) * 1e-8)
    if j_b is None:
        j_b = w[:, None] * ma.planck_nu(nu[None, :], t_rad[:, None])
    seg = lambda x: jax.vmap(lambda r: jax.ops.segment_sum(r, plan.line_ion, num_segments=plan.n_ions))(x)  # noqa: E731
    return seg(nu * -jnp.expm1(-tau) * j_b), seg(nu * att_s)


def in_flight_fraction(plan: SourcePlan, atomic, tau, w, t_rad, n_iter: int = 30):
    """Energy still in internal jumps after ``n_iter`` Neumann steps over the absorbed energy ``[n_s]``
    (the quantity the renormalisation of :func:`line_emissivity` returns to the lines)."""
    nu = ma.C_CGS / (ma.air_to_vacuum_jnp(atomic.wl) * 1e-8)
    j_b = w[:, None] * ma.planck_nu(nu[None, :], t_rad[:, None])
    act = jax.vmap(lambda e: jax.ops.segment_sum(e, atomic.upper, num_segments=plan.n_levels))(
        nu[None, :] * -jnp.expm1(-tau) * j_b)
    p = ma.transition_probabilities(plan.macro, atomic, tau, w, t_rad)
    p_int = p[:, plan.internal]
    src, dst = plan.macro.src[plan.internal], plan.macro.dst[plan.internal]
    x = act
    for _ in range(n_iter):
        x = jax.vmap(lambda q, xs: jax.ops.segment_sum(q * xs[src], dst, num_segments=plan.n_levels))(p_int, x)
    return x.sum(-1) / act.sum(-1)
