"""The physical ejecta model: parameter vector -> shells, density, mass fractions.

Pure JAX, float64; ``jit``, ``vmap`` and ``grad`` work on :func:`build_ejecta`
(pass the :class:`~lumina_jax.params.ParameterSpace` as a static argument).

Conventions
-----------
* Shells: ``n_shells`` (default 30) uniform in velocity from ``v_inner`` to ``v_outer``
  (default 25,000 km/s); homologous radii ``r = v t_exp``.
* Density at the shell mid-velocity, at ``t_exp``::

      rho(v) = rho_0 (v / v_inner)^n_in                              v <  v_break
             = rho_0 (v_break / v_inner)^n_in (v / v_break)^n_out     v >= v_break
      rho(v, t_exp) = rho(v) (t_ref / t_exp)^3,   t_ref = 19 d

  so ``rho_0 = 10**log_rho_0`` g/cm^3 is the density at ``v_inner`` at ``t_ref`` and the law is
  continuous at ``v_break`` (the LUMINA / lumina-ml convention).
* Composition zones are anchored in velocity (velocity is the Lagrangian coordinate of a
  homologous flow, so a zone keeps its meaning when the photosphere ``v_inner`` moves).  A
  shell takes the volume-weighted mean (weights ``v^3`` overlap) of the zones it overlaps,
  which also makes the spectrum a continuous function of ``v_inner``, ``v_core`` and
  ``v_wall`` -- the sampler gets gradients instead of jumps.  Stage 1: core
  ``[0, v_core)``, Si-wall ``[v_core, v_wall)``, outer ``[v_wall, inf)``.  Stages 2 and 3:
  edges uniform from ``zones.v_min`` to ``v_outer``; ``zones.mapping = "index"`` restores the
  original shell-index zones.
* C is fixed at 0.02; O fills the rest.  When the free heavy elements of a zone sum to more
  than ``1 - X_C`` they are rescaled smoothly (:func:`renormalise`): identity up to 90 % of
  the budget, then ``tanh``-saturating, so O stays > 0 and gradients stay finite.  The
  parameter validation reports such zones.
* 56Ni decay (:func:`ni56_decay`) with the *mean lives* tau_Ni = 8.8 d and tau_Co = 111.4 d
  (half-lives 6.075 d and 77.2 d).  The original lumina-ml used 8.8 d and 111.4 d as
  half-lives, which overestimates the surviving Ni by 40-95 % (22.4 % instead of 11.5 % at
  19 d): that is wrong.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from lumina_jax.params import ELEMENTS, ZONE_SPECIES, ParameterSpace

DAY = 86400.0  # s
KM = 1.0e5  # cm
TAU_NI56_DAYS = 8.8  # mean life of 56Ni (half-life 6.075 d)
TAU_CO56_DAYS = 111.4  # mean life of 56Co (half-life 77.2 d)
X_CARBON = 0.02
BUDGET_KNEE = 0.9

#: Fixed (non-free) initial fractions of the zone species in stage 1, per zone
#: (core, Si-wall, outer); ``None`` marks the free parameter.  From lumina-ml config.py.
STAGE1_ZONE_DEFAULTS = {
    #        Fe            Si            S     Ca    Ni      Mg     Ti      Cr
    "core": ("X_Fe_core", 0.05, 0.05, 0.03, "X_Ni", 0.005, 0.001, 0.002),
    "wall": ("X_Fe_wall", "X_Si_wall", 0.05, 0.03, "X_Ni", 0.01, 0.002, 0.003),
    "outer": ("X_Fe_outer", 0.02, 0.02, 0.01, "X_Ni", 0.02, 0.0005, 0.001),
}

_EL = {e: i for i, e in enumerate(ELEMENTS)}
_SP = {s: i for i, s in enumerate(ZONE_SPECIES)}


class Ejecta(NamedTuple):
    """A physical ejecta model at ``t_exp`` (a pytree; batch dims lead when vmapped).

    v_inner, v_outer, v_mid : [n_shells] shell edge / mid velocities, km/s
    t_exp : [] time since explosion, s
    rho : [n_shells] mass density at t_exp, g/cm^3
    X : [n_shells, 11] mass fractions of ``ELEMENTS`` (C, O, Mg, Si, S, Ca, Ti, Cr, Fe, Co, Ni)
    luminosity : [] requested emergent luminosity, erg/s
    t_e_ratio : [] T_e / T_rad
    """

    v_inner: jax.Array
    v_outer: jax.Array
    v_mid: jax.Array
    t_exp: jax.Array
    rho: jax.Array
    X: jax.Array
    luminosity: jax.Array
    t_e_ratio: jax.Array

    @property
    def r_inner(self):
        """[n_shells] inner radii, cm."""
        return self.v_inner * KM * self.t_exp

    @property
    def r_outer(self):
        """[n_shells] outer radii, cm."""
        return self.v_outer * KM * self.t_exp

    def shell_masses(self):
        """[n_shells] shell masses, g."""
        return 4.0 / 3.0 * jnp.pi * (self.r_outer**3 - self.r_inner**3) * self.rho


# ----------------------------------------------------------------------------- decay
def ni56_decay(x_ni0, t_days):
    """56Ni -> 56Co -> 56Fe Bateman solution.

    Parameters: initial 56Ni mass fraction (any shape) and time since explosion in days.
    Returns ``(x_ni, x_co, x_fe)`` with ``x_ni + x_co + x_fe == x_ni0`` (mass is conserved:
    the mass-number change is zero).  For ``x_ni0 = 1`` at 19 d: (0.1154, 0.7902, 0.0944).
    """
    x_ni0 = jnp.asarray(x_ni0, dtype=jnp.float64)
    t = jnp.asarray(t_days, dtype=jnp.float64)
    lam_ni, lam_co = 1.0 / TAU_NI56_DAYS, 1.0 / TAU_CO56_DAYS
    f_ni = jnp.exp(-lam_ni * t)
    f_co = lam_ni / (lam_ni - lam_co) * (jnp.exp(-lam_co * t) - f_ni)
    f_fe = 1.0 - f_ni - f_co
    return x_ni0 * f_ni, x_ni0 * f_co, x_ni0 * f_fe


# --------------------------------------------------------------------- composition
def renormalise(heavy, budget=1.0 - X_CARBON, knee=BUDGET_KNEE):
    """Smoothly cap the sum of the heavy-element fractions ``heavy[..., n_species]``.

    With ``s = sum(heavy)`` and ``x = s / budget``: identity for ``x <= knee``; above it
    ``x -> knee + (1 - knee) tanh((x - knee) / (1 - knee))`` (C2-continuous at the knee,
    tends to 1), applied as a common scale factor.  The room left for O is therefore always
    positive and the map is differentiable everywhere.
    """
    s = jnp.sum(heavy, axis=-1, keepdims=True)
    x = s / budget
    over = (x - knee) / (1.0 - knee)
    capped = jnp.where(x > knee, knee + (1.0 - knee) * jnp.tanh(jnp.maximum(over, 0.0)), x)
    return heavy * (capped / jnp.maximum(x, 1e-300))


def _stage1_zone_matrix(p: dict):
    rows = []
    for zone in ("core", "wall", "outer"):
        vals = [p[v] if isinstance(v, str) else jnp.asarray(v, dtype=jnp.float64)
                for v in STAGE1_ZONE_DEFAULTS[zone]]
        rows.append(jnp.stack(vals))
    return jnp.stack(rows)  # [3, 8]


def _zone_matrix(theta, space: ParameterSpace):
    """Initial (pre-decay, pre-renormalisation) zone compositions ``[n_zones, 8]``."""
    p = {n: theta[..., i] for i, n in enumerate(space.names)}
    if space.zones is None:
        return _stage1_zone_matrix(p)
    z = space.zones
    if space.parametrisation == "knots":
        knots_v = jnp.linspace(z.v_min, z.v_max, space.n_knots)
        centres = jnp.asarray(0.5 * (z.edges[1:] + z.edges[:-1]))
        cols = []
        for sp in ZONE_SPECIES:
            logk = jnp.log(jnp.stack([p[space.zone_param_name(sp, k)] for k in range(space.n_knots)]))
            cols.append(jnp.exp(jnp.interp(centres, knots_v, logk)))
        return jnp.stack(cols, axis=-1)
    return jnp.stack(
        [jnp.stack([p[space.zone_param_name(sp, zi)] for sp in ZONE_SPECIES]) for zi in range(z.n)]
    )


def zone_heavy_sums(theta, space: ParameterSpace):
    """Sum of the free heavy-element fractions per zone (before renormalisation), ``[n_zones]``."""
    return jnp.sum(_zone_matrix(jnp.asarray(theta, dtype=jnp.float64), space), axis=-1)


def check_parameters(theta, space: ParameterSpace, *, bounds: str = "current") -> list[str]:
    """Validate ``theta`` at a boundary (:meth:`ParameterSpace.check`: raises ParameterError) and
    return warnings about what the model makes of it: zones whose free heavy-element fractions
    exceed 1 - X_C, which :func:`renormalise` scales down smoothly."""
    space.check(theta, bounds=bounds)
    sums = np.asarray(zone_heavy_sums(np.asarray(theta, dtype=float), space))
    budget = 1.0 - X_CARBON
    return [f"zone {z}: heavy-element fractions sum to {s:.3f} > {budget:.2f}; "
            "they are renormalised smoothly (see lumina_jax.ejecta.renormalise)"
            for z, s in enumerate(sums) if s > budget]


def _volume_weights(v_lo, v_hi, zone_edges):
    """Volume overlap of shells ``[v_lo, v_hi]`` with zones ``[e_z, e_{z+1})``: ``[n_shells, n_zones]``."""
    a, b = v_lo[:, None], v_hi[:, None]
    e = jnp.clip(zone_edges[None, :], a, b)
    cum = (e**3 - a**3) / (b**3 - a**3)
    return cum[:, 1:] - cum[:, :-1]


def _shell_weights(space: ParameterSpace, p: dict, v_lo, v_hi):
    n = space.ejecta.n_shells
    if space.zones is None:
        # an inverted ordering (v_wall < v_core, rejected by the validation) empties the wall
        edges = jnp.stack([jnp.zeros_like(p["v_core"]), p["v_core"], jnp.maximum(p["v_wall"], p["v_core"]),
                           jnp.full_like(p["v_core"], 1e9)])
        return _volume_weights(v_lo, v_hi, edges)
    z = space.zones
    if z.mapping == "index":
        idx = (np.arange(n) * z.n) // n
        return jnp.asarray(np.eye(z.n)[idx])
    edges = np.asarray(z.edges, dtype=np.float64).copy()
    edges[0], edges[-1] = 0.0, 1e9  # material below v_min belongs to zone 0, beyond v_max to the last
    return _volume_weights(v_lo, v_hi, jnp.asarray(edges))


def stage1_composition_in_zones(values: dict, space: ParameterSpace) -> dict[str, float]:
    """The stage-1 layered composition (core / Si wall / outer, ``STAGE1_ZONE_DEFAULTS``) of the
    stage-1 parameters ``values`` expressed as ``space``'s zone parameters.

    Each zone of ``space`` (velocity-anchored, ``parametrisation: full``) takes the
    volume-weighted mean of the stage-1 layers over its velocity range, i.e. the same
    composition the stage-1 model puts there (up to the averaging within a zone).  Used to
    express the SN 2011fe-like stage-1 mock in the stage-2 / stage-3 parameters.
    Returns ``{"X_<species>_z<k>": value}``.
    """
    z = space.zones
    if z is None or space.parametrisation != "full":
        raise ValueError("stage1_composition_in_zones needs a zoned space with parametrisation 'full'")
    p = {n: float(v) for n, v in values.items()}
    layers = np.asarray(_stage1_zone_matrix({k: jnp.asarray(v) for k, v in p.items()}))  # [3, 8]
    edges1 = jnp.asarray([0.0, p["v_core"], max(p["v_wall"], p["v_core"]), 1e9])
    lo, hi = jnp.asarray(z.edges[:-1], dtype=jnp.float64), jnp.asarray(z.edges[1:], dtype=jnp.float64)
    w = np.asarray(_volume_weights(lo, hi, edges1))  # [n_zones, 3]
    comp = w @ layers
    return {space.zone_param_name(sp, k): float(comp[k, j]) for k in range(z.n) for j, sp in enumerate(ZONE_SPECIES)}


# ------------------------------------------------------------------------- ejecta
def build_ejecta(theta, space: ParameterSpace) -> Ejecta:
    """Parameter vector ``[dim]`` (physical units) -> :class:`Ejecta`.

    Pure and jittable: ``jax.jit(build_ejecta, static_argnums=1)``; vmap over a batch with
    ``jax.vmap(lambda t: build_ejecta(t, space))``.  No validation happens here (call
    ``check_parameters(theta, space)`` at the boundary).
    """
    theta = jnp.asarray(theta, dtype=jnp.float64)
    p = {n: theta[i] for i, n in enumerate(space.names)}
    ej = space.ejecta
    n = ej.n_shells
    frac = jnp.linspace(0.0, 1.0, n + 1)
    v_edges = p["v_inner"] + frac * (ej.v_outer - p["v_inner"])
    v_lo, v_hi = v_edges[:-1], v_edges[1:]
    v_mid = 0.5 * (v_lo + v_hi)
    t_exp = p["t_exp"] * DAY

    rho0 = 10.0 ** p["log_rho_0"]
    n_in, n_out, v_br = p["density_exp"], p["density_exp_outer"], p["v_break"]
    inner = rho0 * (v_mid / p["v_inner"]) ** n_in
    outer = rho0 * (v_br / p["v_inner"]) ** n_in * (v_mid / v_br) ** n_out
    rho = jnp.where(v_mid < v_br, inner, outer) * (ej.t_ref_days / p["t_exp"]) ** 3

    zones = renormalise(_zone_matrix(theta, space))  # [n_zones, 8]
    heavy = _shell_weights(space, p, v_lo, v_hi) @ zones  # [n_shells, 8]
    ni, co, fe_decay = ni56_decay(heavy[:, _SP["Ni"]], p["t_exp"])
    X = jnp.zeros((n, len(ELEMENTS)))
    X = X.at[:, _EL["C"]].set(X_CARBON)
    for sp in ("Mg", "Si", "S", "Ca", "Ti", "Cr"):
        X = X.at[:, _EL[sp]].set(heavy[:, _SP[sp]])
    X = X.at[:, _EL["Fe"]].set(heavy[:, _SP["Fe"]] + fe_decay)
    X = X.at[:, _EL["Co"]].set(co)
    X = X.at[:, _EL["Ni"]].set(ni)
    X = X.at[:, _EL["O"]].set(1.0 - X_CARBON - jnp.sum(heavy, axis=-1))
    return Ejecta(
        v_inner=v_lo,
        v_outer=v_hi,
        v_mid=v_mid,
        t_exp=t_exp,
        rho=rho,
        X=X,
        luminosity=10.0 ** p["log_L"],
        t_e_ratio=p["T_e_ratio"],
    )


def ejecta_table(ej: Ejecta) -> list[dict]:
    """Rows of a shell table (for printing / JSON): velocity, radius, density, mass fractions."""
    ej = jax.tree_util.tree_map(np.asarray, ej)
    rows = []
    for i in range(ej.v_mid.shape[0]):
        row = {
            "shell": i,
            "v_inner_kms": float(ej.v_inner[i]),
            "v_outer_kms": float(ej.v_outer[i]),
            "v_mid_kms": float(ej.v_mid[i]),
            "rho_gcm3": float(ej.rho[i]),
        }
        row.update({f"X_{e}": float(ej.X[i, k]) for k, e in enumerate(ELEMENTS)})
        rows.append(row)
    return rows
