"""Derived quantities: masses above the photosphere, 56Ni at explosion, abundance profiles."""

import jax
import numpy as np
import pytest

from lumina_jax import derived
from lumina_jax.ejecta import build_ejecta, ni56_decay
from lumina_jax.params import load_space

MOCK = {"log_L": 43.0, "v_inner": 10500.0, "log_rho_0": -13.2, "density_exp": -7.0, "T_e_ratio": 0.9,
        "v_core": 12000.0, "v_wall": 16000.0, "X_Fe_core": 0.4, "X_Si_wall": 0.5, "v_break": 18000.0,
        "density_exp_outer": -10.0, "t_exp": 18.0, "X_Fe_wall": 0.05, "X_Ni": 0.15, "X_Fe_outer": 0.01}


@pytest.fixture(scope="module")
def space1():
    return load_space(1)


def _theta(space, **over):
    return space.from_dict({**MOCK, **over})


def test_element_masses_add_up_to_the_total(space1):
    m = {k: float(v) for k, v in derived.masses(_theta(space1), space1).items()}
    parts = sum(m[f"M_{e}"] for e in ("C", "O", "Mg", "Si", "S", "Ca", "Ti", "Cr")) + m["M_Fe_stable"] + m["M_56Ni_0"]
    assert parts == pytest.approx(m["M_total"], rel=1e-12)


def test_total_mass_is_the_integral_of_the_density_law(space1):
    """Shell sum against the analytic integral of rho(v) 4 pi r^2 dr for a single power law
    (v_break above v_outer): the mid-point shells agree to the quadrature error of 30 shells."""
    th = _theta(space1, v_break=26000.0 if space1.highs[space1.index("v_break")] >= 26000 else
                space1.highs[space1.index("v_break")])
    ej = build_ejecta(th, space1)
    n = MOCK["density_exp"]
    v_br = float(th[space1.index("v_break")])
    t = MOCK["t_exp"] * 86400.0
    rho0 = 10 ** MOCK["log_rho_0"] * (19.0 / MOCK["t_exp"]) ** 3  # t_ref 19 d
    v0 = MOCK["v_inner"] * 1e5
    def seg(a, b, k, c):  # integral of c (v/v0)^k 4 pi (v t)^2 t dv from a to b (cm/s)
        return 4 * np.pi * t**3 * c * v0 ** (-k) * (b ** (k + 3) - a ** (k + 3)) / (k + 3)
    vb, vo = v_br * 1e5, 25000e5
    exact = seg(v0, min(vb, vo), n, rho0)
    if vb < vo:
        n2 = MOCK["density_exp_outer"]
        c2 = rho0 * (vb / v0) ** n * (vb / v0) ** (-n2)
        exact += seg(vb, vo, n2, c2)
    got = float(np.sum(ej.shell_masses()))
    assert got == pytest.approx(exact, rel=0.02)
    assert float(derived.masses(th, space1)["M_total"]) == pytest.approx(got / derived.M_SUN_G, rel=1e-12)


def test_56ni_at_explosion_does_not_depend_on_the_epoch(space1):
    """The decay is undone: the initial 56Ni mass is the same at any t_exp (mass is homologous),
    while the surviving Ni mass follows exp(-t / 8.8 d)."""
    a = derived.masses(_theta(space1, t_exp=15.0), space1)
    b = derived.masses(_theta(space1, t_exp=21.0), space1)
    assert float(a["M_56Ni_0"]) == pytest.approx(float(b["M_56Ni_0"]), rel=1e-10)
    assert float(a["M_total"]) == pytest.approx(float(b["M_total"]), rel=1e-10)
    ej = build_ejecta(_theta(space1, t_exp=15.0), space1)
    m_ni_now = float(np.sum(ej.X[:, 10] * ej.shell_masses())) / derived.M_SUN_G
    f_ni = float(ni56_decay(1.0, 15.0)[0])
    assert m_ni_now == pytest.approx(float(a["M_56Ni_0"]) * f_ni, rel=1e-10)


def test_profile_recovers_the_zone_fractions(space1):
    """Inside the core (below v_core) the initial 56Ni and stable Fe fractions are the parameters
    X_Ni and X_Fe_core (the heavy sum is below the renormalisation knee)."""
    th = _theta(space1)
    grid = np.array([9000.0, 11000.0, 11500.0, 14000.0, 30000.0])
    prof = np.asarray(derived.profile(th, space1, grid))
    k_ni = derived.PROFILE_SPECIES.index("56Ni (t=0)")
    k_fe = derived.PROFILE_SPECIES.index("Fe (stable)")
    k_si = derived.PROFILE_SPECIES.index("Si")
    assert np.all(np.isnan(prof[0])) and np.all(np.isnan(prof[-1]))  # below v_inner, above v_outer
    assert prof[1, k_ni] == pytest.approx(MOCK["X_Ni"], rel=1e-9)
    assert prof[1, k_fe] == pytest.approx(MOCK["X_Fe_core"], rel=1e-9)
    assert prof[3, k_si] == pytest.approx(MOCK["X_Si_wall"], rel=1e-9)
    assert np.nansum(prof[1]) == pytest.approx(1.0 - 0.02, rel=1e-9)  # all but C


def test_summarise_vmaps_over_draws(space1):
    rng = np.random.default_rng(0)
    th = _theta(space1)
    draws = np.repeat(th[None], 7, axis=0)
    draws[:, space1.index("log_rho_0")] += rng.normal(0, 0.05, 7)
    s = derived.summarise(draws, space1, chunk=3)
    one = jax.vmap(lambda t: derived.masses(t, space1))(draws)
    assert s["M_total"]["median"] == pytest.approx(float(np.median(np.asarray(one["M_total"]))), rel=1e-12)
    assert s["M_total"]["q2.5"] <= s["M_total"]["q16"] <= s["M_total"]["median"] <= s["M_total"]["q84"]


def test_stage3_profile_is_stepwise_in_the_zones():
    sp = load_space(3)
    rng = np.random.default_rng(1)
    lo, hi = np.asarray(sp.lows), np.asarray(sp.highs)
    th = lo + rng.uniform(0.2, 0.8, sp.dim) * (hi - lo)
    grid = np.linspace(5000.0, 24990.0, 300)
    prof = np.asarray(derived.profile(th, sp, grid))
    ok = ~np.isnan(prof[:, 0])
    assert ok.any() and np.all(prof[ok] >= -1e-12) and np.all(prof[ok] <= 1.0 + 1e-12)
    assert np.nansum(prof[ok], axis=1) == pytest.approx(np.full(ok.sum(), 0.98), rel=1e-9)
