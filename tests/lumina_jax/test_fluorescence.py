"""Macro-atom line source functions (lumina_jax.synth.fluorescence) against hand computations."""

import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
import jax
import jax.numpy as jnp
from hypothesis import given, strategies as st

from lumina_jax.atomic.data import HC_EV_A, Levels, assemble, vacuum_to_air
from lumina_jax.synth import fluorescence as fl
from lumina_jax.synth import transfer as tr

C, H, K = 2.99792458e10, 6.62607015e-27, 1.380649e-16


def atom(levels_ev, g, parity, lines, el=3, stage=1):
    """One ion with the given levels; lines (lower, upper, gf) between them; every other ion: ground only."""
    lv = Levels(np.asarray(levels_ev, float), np.asarray(g, float), np.asarray(parity))
    e = np.asarray(levels_ev, float)
    lo, up, gf = (np.array(x) for x in zip(*lines))
    cols = {"wl": vacuum_to_air(HC_EV_A / (e[up] - e[lo])), "gf": gf.astype(float), "e_low": e[lo],
            "el": np.full(len(lo), el), "stage": np.full(len(lo), stage)}
    return assemble(cols, {(el, stage): lv}, np.tile([8.0, 16.0, 30.0, 45.0], (11, 1)))


def jnp_atomic(a):
    return type(a)(*(jnp.asarray(x) for x in a))


def planck(nu, t):
    return 2 * H * nu**3 / C**2 / np.expm1(H * nu / (K * t))


def nu_of(a):
    return C / (fl.ma.air_to_vacuum_jnp(a.wl) * 1e-8)


def test_two_level_atoms_are_resonance_scattering():
    # two ions, each a two-level atom: the macro-atom gives att_S = (1 - e^-tau) W B_nu(T_rad)
    a1 = atom([0.0, 2.5], [2, 4], [0, 1], [(0, 1, 0.7)], el=3, stage=1)
    a2 = atom([0.0, 3.1], [1, 3], [0, 1], [(0, 1, 0.3)], el=8, stage=2)
    lines = {k: np.concatenate([getattr(a1, k), getattr(a2, k)]) for k in ("wl", "gf", "e_low", "el", "stage")}
    lv = {(3, 1): Levels(np.array([0.0, 2.5]), np.array([2.0, 4.0]), np.array([0, 1])),
          (8, 2): Levels(np.array([0.0, 3.1]), np.array([1.0, 3.0]), np.array([0, 1]))}
    a = assemble(lines, lv, np.tile([8.0, 16.0, 30.0, 45.0], (11, 1)))
    plan = fl.build_plan(a)
    aj = jnp_atomic(a)
    tau = jnp.array([[0.0, 3.0], [50.0, 1e-4], [1e-9, 0.7]])
    w, t = jnp.array([0.4, 0.2, 0.1]), jnp.array([11000.0, 9000.0, 7000.0])
    want = -np.expm1(-np.asarray(tau)) * np.asarray(w)[:, None] * planck(np.asarray(nu_of(aj))[None, :],
                                                                          np.asarray(t)[:, None])
    for mode in ("macroatom", "downbranch", "scatter"):
        got = np.asarray(fl.line_emissivity(plan, aj, tau, w, t, mode=mode))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)


def three_level():
    # levels 0, 2, 5 eV; lines 0-2 (strong), 1-2, 0-1
    return atom([0.0, 2.0, 5.0], [1, 3, 5], [0, 1, 0], [(0, 2, 0.5), (1, 2, 0.8), (0, 1, 0.2)])


def hand_macro_atom(a, tau, w, t):
    """Independent solve: Lucy's weights from A, B (gf and g), dense (I - P^T) F = c by numpy."""
    nu = np.asarray(nu_of(jnp_atomic(a)))
    lo, up = np.asarray(a.lower), np.asarray(a.upper)
    eps, g = np.asarray(a.lev_energy), np.asarray(a.lev_g)
    n = a.n_levels
    A = 8 * np.pi**2 * 4.80320471e-10**2 * nu**2 * a.gf / (9.1093837015e-28 * C**3 * g[up])
    beta = -np.expm1(-tau) / tau
    j_b = w * planck(nu, t)
    blu = 4 * np.pi**2 * 4.80320471e-10**2 * (a.gf / g[lo]) / (9.1093837015e-28 * C * H * nu)
    meta = np.asarray(a.lev_meta)
    wl_ = np.where(meta[lo] > 0, 1.0, w)
    wu_ = np.where(meta[up] > 0, 1.0, w)
    sigma = np.maximum(1 - wu_ / wl_ * np.exp(-(eps[up] - eps[lo]) / (8.617333262e-5 * t)), 0)
    em, down, upw = np.zeros((n, n)), np.zeros((n, n)), np.zeros((n, n))
    emline = {}
    for k in range(len(nu)):
        em[up[k], lo[k]] += A[k] * beta[k] * (eps[up[k]] - eps[lo[k]])
        down[up[k], lo[k]] += A[k] * beta[k] * eps[lo[k]]
        upw[lo[k], up[k]] += blu[k] * sigma[k] * beta[k] * j_b[k] * eps[lo[k]]
        emline[k] = A[k] * beta[k] * (eps[up[k]] - eps[lo[k]])
    d = em.sum(1) + down.sum(1) + upw.sum(1)
    d = np.where(d > 0, d, 1.0)
    p_int = (down + upw) / d[:, None]
    c = np.zeros(n)
    np.add.at(c, up, nu * -np.expm1(-tau) * j_b)
    F = np.linalg.solve(np.eye(n) - p_int.T, c)
    return np.array([emline[k] / d[up[k]] * F[up[k]] / nu[k] for k in range(len(nu))])


def test_three_level_atom_fluoresces_as_the_hand_solution():
    a = three_level()
    plan = fl.build_plan(a)
    aj = jnp_atomic(a)
    order = np.argsort(np.asarray(a.upper) * 10 + np.asarray(a.lower))  # lines 0-1, 0-2, 1-2
    tau = np.array([2.0, 50.0, 0.5])[np.argsort(order)]
    w, t = 0.3, 10000.0
    got = np.asarray(fl.line_emissivity(plan, aj, jnp.asarray(tau)[None], jnp.array([w]), jnp.array([t]),
                                        n_iter=200))[0]
    want = hand_macro_atom(a, tau, w, t)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    # fluorescence: energy absorbed in the strong 0-2 line leaves partly through 1-2 and 0-1 (redder)
    nu = np.asarray(nu_of(aj))
    absorbed = nu * -np.expm1(-tau) * w * planck(nu, t)
    k02 = int(np.flatnonzero((a.lower == a.lower.min()) & (a.upper == a.upper.max()))[0])
    assert nu[k02] * got[k02] < absorbed[k02]
    # thin lines, no pumping: photons out of level 2 split as the A-values (Lucy's weights: energy = photons x h nu)
    tiny = np.full(3, 1e-8)
    got = np.asarray(fl.line_emissivity(plan, aj, jnp.asarray(tiny)[None], jnp.array([1e-12]), jnp.array([t]),
                                        n_iter=200))[0]
    want = hand_macro_atom(a, tiny, 1e-12, t)
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_energy_is_conserved_per_ion_and_shell_even_with_few_iterations():
    a = three_level()
    plan = fl.build_plan(a)
    aj = jnp_atomic(a)
    tau = jnp.array([[2.0, 50.0, 0.5], [1e-3, 1e3, 5.0]])
    w, t = jnp.array([0.5, 0.1]), jnp.array([12000.0, 8000.0])
    for n_iter in (1, 3, 100):
        att = fl.line_emissivity(plan, aj, tau, w, t, n_iter=n_iter)
        e_in, e_out = fl.energy_balance(plan, aj, tau, w, t, att)
        np.testing.assert_allclose(np.asarray(e_out), np.asarray(e_in), rtol=1e-12, atol=0)
    assert float(fl.in_flight_fraction(plan, aj, tau, w, t, n_iter=100).max()) < 1e-10


def test_gradient_through_the_solve_equals_finite_differences():
    a = three_level()
    plan = fl.build_plan(a)
    aj = jnp_atomic(a)

    def f(x):
        tau = jnp.stack([x[0], 30.0 * x[1], 0.4 + 0 * x[0]])[None]
        att = fl.line_emissivity(plan, aj, tau, jnp.array([0.2]) * x[2], jnp.array([9000.0]) * x[3], n_iter=60)
        return jnp.sum(att[0] * jnp.array([1.0, 2.0, 3.0])) * 1e5

    f = jax.jit(f)
    x0 = jnp.array([1.5, 1.0, 1.0, 1.0])
    g = np.asarray(jax.jit(jax.grad(f))(x0))
    h = 1e-6
    fd = np.array([(f(x0.at[i].add(h)) - f(x0.at[i].add(-h))) / (2 * h) for i in range(4)])
    np.testing.assert_allclose(g, fd, rtol=1e-5)


def _value_and_grad():
    a = three_level()
    plan = fl.build_plan(a)
    aj = jnp_atomic(a)

    def f(tv, w, t):
        return jnp.sum(fl.line_emissivity(plan, aj, tv[None], w[None], t[None]) * 1e5)

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))


VALUE_AND_GRAD = _value_and_grad()


@given(st.floats(0.02, 0.5), st.floats(5000.0, 20000.0), st.lists(st.floats(0.0, 1e5), min_size=3, max_size=3))
def test_no_nan_in_values_or_gradients(w, t, tau):
    v, g = VALUE_AND_GRAD(jnp.asarray(tau), jnp.asarray(w), jnp.asarray(t))
    assert np.isfinite(float(v)) and all(np.all(np.isfinite(np.asarray(x))) for x in g)


def test_outlets_keep_the_thin_decays_of_activated_levels():
    a = three_level()
    keep = np.zeros(a.n_lines, bool)
    k02 = int(np.flatnonzero((a.upper == a.upper.max()) & (a.lower == a.lower.min()))[0])
    keep[k02] = True
    out = fl.add_outlets(a, keep, share=1e-3)
    assert out.all()  # 2 -> 1 from the activated level 2, then 1 -> 0 from the cascade's level 1
    assert fl.add_outlets(a, np.zeros(a.n_lines, bool)).sum() == 0


def test_emission_table_with_a_constant_source_is_the_closed_form():
    wl = np.sort(np.random.default_rng(1).uniform(4000, 6000, 300))
    grid = tr.make_grid(wl, np.linspace(4200, 5800, 81), v_max_kms=20000.0, opacity_dv_kms=50.0, obs_dv_kms=100.0)
    tau = jnp.asarray(np.random.default_rng(2).exponential(0.3, (2, len(wl))))
    s = jnp.array([2.0, 0.5])
    h = jax.jit(lambda t: tr.emission_table(-jnp.expm1(-t) * s[:, None], t, grid))(tau)
    c = jax.jit(lambda t: tr.cumulative_opacity(t, grid))(tau)
    # at every fine edge pair (a, b): H(b) - H(a) e^{-(C(b) - C(a))} = S (1 - e^{-(C(b) - C(a))})
    hf = np.asarray(h).transpose(0, 2, 1).reshape(2, -1)
    cf = np.asarray(c).transpose(0, 2, 1).reshape(2, -1)
    for qa, qb in ((100, 900), (0, len(hf[0]) - 1), (500, 501)):
        lhs = hf[:, qb] - hf[:, qa] * np.exp(-(cf[:, qb] - cf[:, qa]))
        np.testing.assert_allclose(lhs, np.asarray(s) * -np.expm1(-(cf[:, qb] - cf[:, qa])), rtol=1e-10, atol=1e-14)


def test_synthesizer_macroatom_mode_reduces_to_scattering_for_two_level_atoms(tmp_path):
    from lumina_jax.atomic.data import save_npz
    from lumina_jax.params import load_space
    from lumina_jax.synth import SynthConfig, Synthesizer
    from lumina_jax.synth.state import SN2011FE_LIKE

    # one two-level atom in each of four ions (Si II, Ca II, Fe II, Co II): no fluorescence is possible
    ions = [(3, 1, 3.1, 1.0), (5, 1, 3.15, 0.8), (8, 1, 2.9, 0.5), (9, 1, 3.0, 0.3)]
    lines = {"wl": vacuum_to_air(HC_EV_A / np.array([e for *_, e, _ in ions])), "gf": np.array([g for *_, g in ions]),
             "e_low": np.zeros(4), "el": np.array([i[0] for i in ions]), "stage": np.array([i[1] for i in ions])}
    lv = {(e, s): Levels(np.array([0.0, de]), np.array([2.0, 4.0]), np.array([0, 1])) for e, s, de, _ in ions}
    a = assemble(lines, lv, np.tile([8.0, 16.0, 30.0, 45.0], (11, 1)))
    save_npz(tmp_path / "two.npz", a, {"name": "two-level"})
    space = load_space(1)
    fast = dict(atomic=str(tmp_path / "two.npz"), wl_start=3500.0, wl_stop=4500.0, wl_step=10.0, n_samples=2,
                n_p_core=6, n_p_per_shell=1, obs_dv_kms=300.0, opacity_dv_kms=20.0, t_inner_iterations=0, tau_min=0.0)
    theta = jnp.asarray(space.from_dict(SN2011FE_LIKE))
    out = {}
    for mode in ("scatter", "macroatom"):
        synth = Synthesizer(SynthConfig().replace(line_interaction=mode, **fast), a, space, select_lines=False)
        out[mode] = np.asarray(synth.l_lambda(theta))
    # the scattering integrator takes S at each segment's mid comoving frequency, the line-emission
    # table at each line's own frequency: a few per cent inside the troughs, far less elsewhere
    np.testing.assert_allclose(out["macroatom"], out["scatter"], rtol=0.05)
    assert np.median(np.abs(out["macroatom"] / out["scatter"] - 1)) < 0.01
