"""Quantities a modeller reads off an ejecta model: 56Ni mass at explosion, the mass of each
element above the photosphere, and the abundance profile against velocity.

Pure JAX over one parameter vector (``jit`` with the space static, ``vmap`` over draws).  Every
mass counts only the model's shells, i.e. the ejecta above the photosphere ``v_inner`` up to
``v_outer``: a photospheric-epoch spectrum says nothing about the mass below ``v_inner``.

56Ni at explosion follows from the composition at ``t_exp`` by inverting the Bateman solution
(:func:`lumina_jax.ejecta.ni56_decay`): Ni and Co at ``t_exp`` descend only from 56Ni, so
``X(56Ni, 0) = (X_Ni + X_Co) / (f_Ni(t) + f_Co(t))`` and stable Fe is ``X_Fe - X(56Ni, 0) f_Fe(t)``.
"""

from __future__ import annotations

import jax.numpy as jnp

from lumina_jax.ejecta import build_ejecta, ni56_decay
from lumina_jax.params import ELEMENTS, ParameterSpace

M_SUN_G = 1.98847e33  # g, IAU 2015 nominal solar mass

#: Profile species: (label, how to read it from the [n_shells, 11] composition at t_exp).
PROFILE_SPECIES = ("O", "Mg", "Si", "S", "Ca", "Ti+Cr", "Fe (stable)", "56Ni (t=0)")

_EL = {e: i for i, e in enumerate(ELEMENTS)}


#: the parameters an ejecta model needs (a stage space has them; the tests' toy spaces do not)
EJECTA_PARAMETERS = ("log_L", "v_inner", "log_rho_0", "density_exp", "density_exp_outer", "v_break", "t_exp",
                     "T_e_ratio")


def is_ejecta_space(space: ParameterSpace) -> bool:
    """Whether ``space`` parametrises the ejecta model (so masses and profiles exist)."""
    return all(n in space.names for n in EJECTA_PARAMETERS) and space.ejecta is not None


def initial_composition(theta, space: ParameterSpace):
    """(v_mid [n_shells] km/s, X [n_shells, len(PROFILE_SPECIES)]) at explosion: the model's
    composition with the 56Ni chain undone (stable Fe and 56Ni at t = 0 separated)."""
    ej = build_ejecta(theta, space)
    f_ni, f_co, f_fe = ni56_decay(1.0, ej.t_exp / 86400.0)
    X = ej.X
    ni0 = (X[:, _EL["Ni"]] + X[:, _EL["Co"]]) / (f_ni + f_co)
    fe_stable = X[:, _EL["Fe"]] - ni0 * f_fe
    cols = [X[:, _EL["O"]], X[:, _EL["Mg"]], X[:, _EL["Si"]], X[:, _EL["S"]], X[:, _EL["Ca"]],
            X[:, _EL["Ti"]] + X[:, _EL["Cr"]], fe_stable, ni0]
    return ej.v_mid, jnp.stack(cols, axis=-1)


def masses(theta, space: ParameterSpace) -> dict:
    """Masses above the photosphere in solar masses: ``M_total``, ``M_56Ni_0`` (56Ni at
    explosion), ``M_Fe_stable`` and ``M_<element>`` for C, O, Mg, Si, S, Ca, Ti, Cr at t = 0
    (these are not changed by the decay).  Each value is a scalar array."""
    ej = build_ejecta(theta, space)
    m = ej.shell_masses()  # [n_shells] g
    _, X0 = initial_composition(theta, space)
    out = {"M_total": jnp.sum(m) / M_SUN_G}
    for e in ("C", "O", "Mg", "Si", "S", "Ca", "Ti", "Cr"):
        out[f"M_{e}"] = jnp.sum(ej.X[:, _EL[e]] * m) / M_SUN_G
    out["M_Fe_stable"] = jnp.sum(X0[:, PROFILE_SPECIES.index("Fe (stable)")] * m) / M_SUN_G
    out["M_56Ni_0"] = jnp.sum(X0[:, PROFILE_SPECIES.index("56Ni (t=0)")] * m) / M_SUN_G
    return out


def profile_on_grid(v_mid, X, v_lo, v_hi, grid):
    """Composition of one model's shells on a velocity ``grid`` [n_grid] km/s: the shell whose
    [v_lo, v_hi) holds each grid point; NaN below the photosphere or above ``v_outer``.
    ``X``: [n_shells, n_species]; returns [n_grid, n_species]."""
    k = jnp.clip(jnp.searchsorted(v_hi, grid, side="right"), 0, v_mid.shape[0] - 1)
    inside = (grid >= v_lo[0]) & (grid < v_hi[-1])
    return jnp.where(inside[:, None], X[k], jnp.nan)


def profile(theta, space: ParameterSpace, grid):
    """[n_grid, len(PROFILE_SPECIES)] composition at explosion on ``grid`` km/s (NaN outside the
    model's shells)."""
    ej = build_ejecta(theta, space)
    v_mid, X0 = initial_composition(theta, space)
    return profile_on_grid(v_mid, X0, ej.v_inner, ej.v_outer, jnp.asarray(grid, dtype=jnp.float64))


def summarise(draws, space: ParameterSpace, *, chunk: int = 512) -> dict:
    """Posterior summaries of :func:`masses` over ``draws`` [n, dim] (full parameter vectors):
    ``{name: {"unit": "Msun", "median", "q2.5", "q16", "q84", "q97.5"}}``."""
    import jax
    import numpy as np

    draws = np.asarray(draws, dtype=np.float64).reshape(-1, space.dim)
    fn = jax.jit(jax.vmap(lambda t: masses(t, space)))
    parts = [jax.tree_util.tree_map(np.asarray, fn(draws[i:i + chunk])) for i in range(0, len(draws), chunk)]
    out = {}
    for name in parts[0]:
        v = np.concatenate([p[name] for p in parts])
        q = np.percentile(v, [2.5, 16, 50, 84, 97.5])
        out[name] = {"unit": "Msun", "median": float(q[2]), "q2.5": float(q[0]), "q16": float(q[1]),
                     "q84": float(q[3]), "q97.5": float(q[4])}
    return out
