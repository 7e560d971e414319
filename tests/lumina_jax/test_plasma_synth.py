"""Plasma pieces of the synthesizer against hand calculations."""

import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
import jax.numpy as jnp

from lumina_jax.atomic.data import HC_EV_A, Levels, assemble, partition_tables, vacuum_to_air, K_EV
from lumina_jax.synth import plasma as pl


def small_atomic(extra_lines=None):
    """Four levels for every ion: ground (g=2), metastable 1 eV (g=4), odd 2 eV (g=6), even 3.5 eV (g=8);
    Si II lines 1 -> 2 eV and 2 -> 3.5 eV (air wavelengths of the level differences)."""
    lv = Levels(np.array([0.0, 1.0, 2.0, 3.5]), np.array([2.0, 4.0, 6.0, 8.0]), np.array([0, 0, 1, 0]))
    levels = {(e, s): lv for e in range(11) for s in range(5)}
    chi = np.tile([8.0, 16.0, 30.0, 45.0], (11, 1))
    wl = vacuum_to_air(HC_EV_A / np.array([1.0, 1.5]))
    lines = {"wl": wl, "gf": np.array([2.0, 0.5]), "e_low": np.array([1.0, 2.0]),
             "el": np.array([3, 3]), "stage": np.array([1, 1])}
    if extra_lines:
        lines = extra_lines
    return assemble(lines, levels, chi)


def test_partition_function_from_levels_matches_hand_calculation():
    lv = Levels(np.array([0.0, 1.0, 2.0]), np.array([2.0, 4.0, 6.0]), np.array([0, 0, 1]))
    assert lv.metastable_threshold() == 2.0
    t = np.array([5000.0, 10000.0])
    um, un = partition_tables(lv, t)
    np.testing.assert_allclose(um, 2 + 4 * np.exp(-1.0 / (K_EV * t)), rtol=1e-12)
    np.testing.assert_allclose(un, 6 * np.exp(-2.0 / (K_EV * t)), rtol=1e-12)
    a = small_atomic()
    w = jnp.array([0.3])
    z = pl.partition_functions(a, jnp.array([10000.0]), w)
    kt = K_EV * 1e4
    hand = 2 + 4 * np.exp(-1.0 / kt) + 0.3 * (6 * np.exp(-2.0 / kt) + 8 * np.exp(-3.5 / kt))
    np.testing.assert_allclose(z[0, 3, 1], hand, rtol=2e-3)  # table interpolation in log T
    # the lines connect the reference levels: no level is derived
    assert a.n_levels == 11 * 5 * 4 and not np.any(a.lev_origin)
    np.testing.assert_allclose(a.e_low, [2.0, 1.0])  # sorted by wavelength: 8265 A, then 12395 A
    np.testing.assert_allclose(a.e_up, [3.5, 2.0])
    # lines: the 1 eV lower level is metastable, the 2 eV one is not
    assert list(a.meta[np.argsort(a.wl)]) == [0.0, 1.0]


def test_saha_ratio_lte_limit_and_nebular_corrections():
    a = small_atomic()
    t = 10000.0
    z = pl.partition_functions(a, jnp.array([t]), jnp.array([1.0]))
    # W = 1, T_e = T_rad and chi_T = chi: delta = 1 and the ratio is the LTE Saha ratio
    lr = pl.log_ionisation_ratios(a, jnp.array([t]), jnp.array([t]), jnp.array([1.0]), z, chi_threshold=8.0)
    zz = np.asarray(z[0, 0])
    hand = 2 * 2.4146830395719654e15 * t**1.5 * zz[1] / zz[0] * np.exp(-8.0 / (K_EV * t))
    np.testing.assert_allclose(np.exp(lr[0, 0, 0]), hand, rtol=1e-10)
    # by hand from the constants: (2 pi m_e k / h^2)^1.5
    me, k, h = 9.1093837015e-28, 1.380649e-16, 6.62607015e-27
    np.testing.assert_allclose((2 * np.pi * me * k / h**2) ** 1.5, pl.SAHA_CONST, rtol=1e-8)
    # nebular: W = 0.2, T_e = 0.9 T, zeta = 1 -> W * delta * sqrt(T_e/T) with delta = 0.9 exp(chi/kT (1 - 1/0.9))
    w = 0.2
    z = pl.partition_functions(a, jnp.array([t]), jnp.array([w]))
    lr = pl.log_ionisation_ratios(a, jnp.array([t]), jnp.array([0.9 * t]), jnp.array([w]), z)
    zz = np.asarray(z[0, 0])
    phi = 2 * pl.SAHA_CONST * t**1.5 * zz[1] / zz[0] * np.exp(-8.0 / (K_EV * t))
    kt = K_EV * t
    delta = 0.9 * np.exp(pl.CHI_CA_II / kt - 8.0 / (0.9 * kt))  # chi = 8 eV < chi_T (Ca II)
    np.testing.assert_allclose(np.exp(lr[0, 0, 0]), phi * w * delta * np.sqrt(0.9), rtol=1e-10)
    # chi = 16 eV > chi_T: delta = 1 - exp((chi_T - chi)/kT) + 0.9 exp(chi_T/kT - chi/kT_e)
    phi2 = 2 * pl.SAHA_CONST * t**1.5 * zz[2] / zz[1] * np.exp(-16.0 / kt)
    delta2 = 1 - np.exp((pl.CHI_CA_II - 16.0) / kt) + 0.9 * np.exp(pl.CHI_CA_II / kt - 16.0 / (0.9 * kt))
    np.testing.assert_allclose(np.exp(lr[0, 0, 1]), phi2 * w * delta2 * np.sqrt(0.9), rtol=1e-10)


def test_electron_density_conserves_charge():
    a = small_atomic()
    t = jnp.array([9000.0, 12000.0])
    w = jnp.array([0.4, 0.1])
    z = pl.partition_functions(a, t, w)
    lr = pl.log_ionisation_ratios(a, t, 0.9 * t, w, z)
    nuc = jnp.full((2, 11), 1e8)
    ne, f = pl.solve_electron_density(nuc, lr, n_iter=60)
    charge = np.sum(np.asarray(nuc)[..., None] * np.asarray(f) * np.arange(5), axis=(1, 2))
    np.testing.assert_allclose(ne, charge, rtol=1e-6)
    # the fractions obey the ratios
    np.testing.assert_allclose(np.asarray(f[..., 1] / f[..., 0]), np.exp(np.asarray(lr[..., 0])) / np.asarray(ne)[:, None], rtol=1e-10)
    np.testing.assert_allclose(np.sum(f, axis=-1), 1.0, rtol=1e-12)


def test_sobolev_tau_formula():
    a = small_atomic()
    t, w, t_exp = 10000.0, 0.25, 19 * 86400.0
    n_ion = jnp.zeros((1, 11, 5)).at[0, 3, 1].set(1e6)
    z = pl.partition_functions(a, jnp.array([t]), jnp.array([w]))
    tau = np.asarray(pl.sobolev_tau(a, n_ion, z, jnp.array([t]), jnp.array([w]), t_exp))[0]
    zz = float(z[0, 3, 1])
    kt = K_EV * t
    for i in range(a.n_lines):
        g_l, g_u = (4.0, 6.0) if a.e_low[i] == 1.0 else (6.0, 8.0)
        f_lu = a.gf[i] / g_l
        lam = a.wl[i] * 1e-8
        w_l = 1.0 if a.meta[i] else w
        n_l = 1e6 * g_l * np.exp(-a.e_low[i] / kt) * w_l / zz
        n_u = 1e6 * g_u * np.exp(-a.e_up[i] / kt) * w / zz
        hand = 0.02654 * f_lu * lam * t_exp * n_l * (1 - g_l * n_u / (g_u * n_l))
        np.testing.assert_allclose(tau[i], hand, rtol=1e-4)


def test_dilution_factor():
    np.testing.assert_allclose(pl.dilution_factor(jnp.array(1e4 * (1 + 1e-12)), 1e4), 0.5, rtol=1e-5)
    np.testing.assert_allclose(pl.dilution_factor(jnp.array(2e4), 1e4), 0.5 * (1 - np.sqrt(0.75)), rtol=1e-12)
