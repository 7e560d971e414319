"""Radiation field, ionisation, excitation and Sobolev optical depths (pure JAX, float64).

All functions act on one ejecta model (no batch axis); ``vmap`` them for batches.
Shapes: ``n_s`` shells, ``n_el`` elements (ELEMENTS), ``N`` = N_STAGES ion stages, ``n_l`` lines.

Physics (references in docs/forward_model.md):

* Dilution factor of a uniform photosphere of radius R_ph seen from r:
  ``W = 0.5 (1 - sqrt(1 - (R_ph/r)^2))`` (Mihalas 1978), averaged over each shell's volume.
* ``T_rad(r) = T_inner (R_ph / r)^q`` (q = 0.45, the lumina-ml initial profile), ``T_e = ratio * T_rad``.
* Dilute-LTE partition functions ``Z = U_meta(T_rad) + W U_nonmeta(T_rad)`` and level populations
  ``n_l / n_ion = g_l exp(-E_l/kT_rad) w_l / Z`` with ``w_l = 1`` (metastable) or ``W`` (Lucy 1999).
* Nebular ionisation (Mazzali & Lucy 1993; TARDIS ``nebular``):
  ``n_{j+1} n_e / n_j = Phi_LTE(T_rad) W [zeta delta + W (1 - zeta)] sqrt(T_e/T_rad)`` with the
  radiation-field correction delta of ML93 eqs. 15/20 in TARDIS's form (:func:`radiation_field_correction`).
* ``n_e`` from charge conservation by a fixed number of damped fixed-point steps in log n_e
  (differentiable; 0.5 damping as in LUMINA/TARDIS).
* Sobolev optical depth with stimulated emission (Castor 1970; TARDIS):
  ``tau = (pi e^2 / m_e c) f_lu lambda t n_l (1 - g_l n_u / (g_u n_l))``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

K_EV = 8.617333262e-5  # eV/K
SAHA_CONST = 2.4146830395719654e15  # (2 pi m_e k / h^2)^{3/2}, cm^-3 K^-3/2
SOBOLEV_CONST = 2.6540281e-2  # pi e^2 / (m_e c), cm^2 s^-1
M_U = 1.66053906660e-24  # g
SIGMA_T = 6.6524587321e-25  # cm^2
SIGMA_SB = 5.670374419e-5  # erg cm^-2 s^-1 K^-4
CHI_CA_II = 11.871718  # eV, threshold chi_T of the radiation-field correction (TARDIS default species Ca II)


def dilution_factor(v, v_ph):
    """Geometric dilution factor W at velocity radius ``v`` for a photosphere at ``v_ph``."""
    x = jnp.clip(v_ph / v, 0.0, 1.0 - 1e-12)
    return 0.5 * (1.0 - jnp.sqrt(1.0 - x * x))


def shell_dilution_factor(v_lo, v_hi, v_ph):
    """Volume average of W over shells ``[v_lo, v_hi]``: with x = r/R_ph,
    ``int W x^2 dx = [x^3 - (x^2 - 1)^{3/2}] / 6``.  Using the volume average makes the absorbed
    and re-emitted energy of an optically thin scattering line in a shell equal (energy
    conservation of the discretised model); TARDIS's Monte Carlo W estimator is a volume average too."""

    def prim(v):
        x = v / v_ph
        q = x * x - 1.0
        pos = q > 0
        return (x**3 - jnp.where(pos, jnp.where(pos, q, 1.0) ** 1.5, 0.0)) / 6.0

    return (prim(v_hi) - prim(v_lo)) / (((v_hi / v_ph) ** 3 - (v_lo / v_ph) ** 3) / 3.0)


def photospheric_temperature(luminosity, r_ph):
    """Blackbody temperature (K) of a sphere of radius ``r_ph`` (cm) emitting ``luminosity`` (erg/s)."""
    return (luminosity / (4.0 * jnp.pi * r_ph**2 * SIGMA_SB)) ** 0.25


def radiation_field(v_lo, v_hi, v_ph, t_inner, exponent):
    """(W, T_rad) per shell: volume-averaged geometric dilution and ``T_rad = T_inner (v_ph/v_mid)^exponent``."""
    w = shell_dilution_factor(v_lo, v_hi, v_ph)
    v_mid = 0.5 * (v_lo + v_hi)
    t_rad = t_inner * (v_ph / v_mid) ** exponent
    return w, t_rad


def _interp_log_t(table, t_grid, t):
    """Linear interpolation in log T of ``table[..., n_T]`` at temperatures ``t[n_s]`` -> ``[n_s, ...]``."""
    lg = jnp.log(t_grid)
    x = jnp.clip(jnp.log(t), lg[0], lg[-1])
    i = jnp.clip(jnp.searchsorted(lg, x) - 1, 0, lg.shape[0] - 2)
    w = (x - lg[i]) / (lg[i + 1] - lg[i])
    lo = jnp.moveaxis(table[..., i], -1, 0)
    hi = jnp.moveaxis(table[..., i + 1], -1, 0)
    wb = w.reshape(w.shape + (1,) * (lo.ndim - 1))
    return lo * (1.0 - wb) + hi * wb


def partition_functions(atomic, t_rad, w):
    """Dilute-LTE partition functions ``[n_s, n_el, N]``."""
    um = _interp_log_t(atomic.pf_meta, atomic.pf_t, t_rad)
    un = _interp_log_t(atomic.pf_nonmeta, atomic.pf_t, t_rad)
    return um + w[:, None, None] * un


def radiation_field_correction(chi, chi_threshold, kt_rad, te_over_tr):
    """Mazzali & Lucy (1993) eqs. 15/20 as in TARDIS with departure coefficient b_1 = 1/W:
    ``delta = (T_e/T_R) exp(chi_T/kT_R - chi/kT_e)`` for chi <= chi_T, and
    ``delta = 1 - exp((chi_T - chi)/kT_R) + (T_e/T_R) exp(chi_T/kT_R - chi/kT_e)`` above, with the
    threshold chi_T = ionisation energy of Ca II (TARDIS default for SNe Ia)."""
    kt_e = kt_rad * te_over_tr
    tail = te_over_tr * jnp.exp(jnp.minimum(chi_threshold / kt_rad - chi / kt_e, 300.0))
    above = 1.0 - jnp.exp(jnp.minimum((chi_threshold - chi) / kt_rad, 0.0)) + tail
    return jnp.where(chi > chi_threshold, above, tail)


def log_ionisation_ratios(atomic, t_rad, t_e, w, z_part, chi_threshold=CHI_CA_II):
    """``log(n_{j+1} n_e / n_j)`` for j = 0..N-2, nebular approximation: ``[n_s, n_el, N-1]``."""
    kt = K_EV * t_rad[:, None, None]
    chi = atomic.chi[None]
    log_phi = (jnp.log(2.0 * SAHA_CONST) + 1.5 * jnp.log(t_rad)[:, None, None]
               + jnp.log(z_part[..., 1:]) - jnp.log(z_part[..., :-1]) - chi / kt)
    zeta = _interp_log_t(atomic.zeta, atomic.zeta_t, t_rad)[..., 1:]  # zeta of the upper ion
    ratio = (t_e / t_rad)[:, None, None]
    ww = w[:, None, None]
    delta = radiation_field_correction(chi, chi_threshold, kt, ratio)
    corr = ww * (zeta * delta + ww * (1.0 - zeta)) * jnp.sqrt(ratio)
    return log_phi + jnp.log(corr)


def ion_fractions(log_ratios, log_ne):
    """Ion-stage fractions ``[n_s, n_el, N]`` from log ratios ``[n_s, n_el, N-1]`` and ``log n_e [n_s]``."""
    steps = log_ratios - log_ne[:, None, None]
    logf = jnp.concatenate([jnp.zeros_like(steps[..., :1]), jnp.cumsum(steps, axis=-1)], axis=-1)
    return jax.nn.softmax(logf, axis=-1)


def solve_electron_density(n_nuclei, log_ratios, n_iter: int = 30, damping: float = 0.5):
    """Charge conservation ``n_e = sum_el n_el sum_j j f_j(n_e)`` by ``n_iter`` damped steps in log n_e.

    n_nuclei : [n_s, n_el] number densities (cm^-3); log_ratios : [n_s, n_el, N-1].
    Returns (n_e [n_s], fractions [n_s, n_el, N]).
    """
    charges = jnp.arange(log_ratios.shape[-1] + 1, dtype=n_nuclei.dtype)
    log_ne0 = jnp.log(jnp.sum(n_nuclei, axis=-1))

    def step(_, log_ne):
        f = ion_fractions(log_ratios, log_ne)
        ne_new = jnp.sum(n_nuclei * jnp.sum(f * charges, axis=-1), axis=-1)
        return (1.0 - damping) * jnp.log(jnp.maximum(ne_new, 1e-30)) + damping * log_ne

    log_ne = jax.lax.fori_loop(0, n_iter, step, log_ne0)
    return jnp.exp(log_ne), ion_fractions(log_ratios, log_ne)


def number_densities(rho, mass_fractions, masses):
    """Nuclei per cm^3 ``[n_s, n_el]`` from density [n_s] (g/cm^3) and mass fractions [n_s, n_el]."""
    return rho[:, None] * mass_fractions / (masses[None, :] * M_U)


def sobolev_tau(atomic, n_ion, z_part, t_rad, w, t_exp):
    """Sobolev optical depths ``[n_s, n_l]`` of all lines (stimulated emission included).

    ``tau = 0.02654 * gf * lambda[cm] * t * (n_ion/Z) exp(-E_l/kT) (w_l - W exp(-(E_u - E_l)/kT))``,
    which is the Sobolev formula with dilute-LTE populations of both levels.
    """
    el, st = atomic.el, atomic.stage
    dens = n_ion[:, el, st] / z_part[:, el, st]  # [n_s, n_l]
    kt = (K_EV * t_rad)[:, None]
    wl = w[:, None]
    w_low = atomic.meta[None, :] + (1.0 - atomic.meta[None, :]) * wl
    stim = w_low - wl * jnp.exp(-(atomic.e_up - atomic.e_low)[None, :] / kt)
    pref = SOBOLEV_CONST * (atomic.gf * atomic.wl * 1e-8)[None, :] * t_exp
    return pref * dens * jnp.exp(-atomic.e_low[None, :] / kt) * stim


def plasma_state(atomic, ejecta, t_inner, *, t_rad_exponent=0.45, n_e_iterations=30, field=None):
    """Everything the transfer needs for one model.

    ``field``: optional ``(W, T_rad)`` [n_s] to use instead of :func:`radiation_field`'s geometric
    dilution and power-law temperature (e.g. estimated from the transfer's own mean intensity).
    Returns dict: w, t_rad, t_e, n_e [n_s]; fractions [n_s, n_el, N]; tau [n_s, n_l].
    """
    v_ph = ejecta.v_inner[0]
    if field is None:
        w, t_rad = radiation_field(ejecta.v_inner, ejecta.v_outer, v_ph, t_inner, t_rad_exponent)
    else:
        w, t_rad = field
    t_e = ejecta.t_e_ratio * t_rad
    z_part = partition_functions(atomic, t_rad, w)
    lr = log_ionisation_ratios(atomic, t_rad, t_e, w, z_part)
    nuc = number_densities(ejecta.rho, ejecta.X, atomic.mass)
    n_e, frac = solve_electron_density(nuc, lr, n_e_iterations)
    n_ion = nuc[..., None] * frac
    tau = sobolev_tau(atomic, n_ion, z_part, t_rad, w, ejecta.t_exp)
    return {"w": w, "t_rad": t_rad, "t_e": t_e, "n_e": n_e, "fractions": frac, "tau": tau}
