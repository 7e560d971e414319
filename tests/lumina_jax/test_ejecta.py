import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, strategies as st

from lumina_jax.ejecta import DAY, build_ejecta, ni56_decay, renormalise, stage1_composition_in_zones
from lumina_jax.params import ELEMENTS, load_space

SPACES = {1: load_space(1), 2: load_space(2), 3: load_space(3), "3k": load_space(3, parametrisation="knots")}
EL = {e: i for i, e in enumerate(ELEMENTS)}


def valid_point(space, u):
    """A point of the box, with the velocity orderings repaired (the validation rejects others)."""
    theta = space.from_unit(np.asarray(u))
    d = dict(zip(space.names, theta))
    lo, hi = sorted((d["v_core"], d["v_wall"]))
    theta[space.index("v_core")], theta[space.index("v_wall")] = lo, max(hi, lo + 1.0)
    vb = space.index("v_break")
    theta[vb] = max(theta[vb], d["v_inner"] + 100.0)
    return theta


def test_ni56_decay_reference_numbers():
    ni, co, fe = ni56_decay(1.0, 19.0)
    assert float(ni) == pytest.approx(0.1154, abs=5e-4)
    assert float(co) == pytest.approx(0.790, abs=5e-4)
    assert float(fe) == pytest.approx(0.094, abs=5e-4)
    # half-life of 56Ni is tau ln 2 = 6.0997 d
    assert float(ni56_decay(1.0, 8.8 * np.log(2))[0]) == pytest.approx(0.5, rel=1e-12)
    # independent check of the Co term: integrate dCo/dt = ni/8.8 - co/111.4 with scipy
    from scipy.integrate import solve_ivp

    sol = solve_ivp(lambda t, y: [-y[0] / 8.8, y[0] / 8.8 - y[1] / 111.4], (0, 19), [1.0, 0.0], rtol=1e-10, atol=1e-12)
    assert float(co) == pytest.approx(sol.y[1, -1], rel=1e-7)


@given(x=st.floats(0, 1), t=st.floats(0, 400))
def test_decay_conserves_mass(x, t):
    ni, co, fe = ni56_decay(x, t)
    assert float(ni + co + fe) == pytest.approx(x, abs=1e-12)
    assert min(float(ni), float(co), float(fe)) >= -1e-15


@pytest.mark.parametrize("key", [1, 2, 3, "3k"])
@given(data=st.data())
def test_mass_fractions_nonnegative_and_normalised(key, data):
    space = SPACES[key]
    u = data.draw(st.lists(st.floats(0, 1), min_size=space.dim, max_size=space.dim))
    ej = build_ejecta(valid_point(space, u), space)
    X = np.asarray(ej.X)
    assert X.shape == (30, 11)
    assert X.min() >= 0.0
    np.testing.assert_allclose(X.sum(axis=1), 1.0, atol=1e-6)
    assert np.all(np.asarray(ej.rho) > 0)


def test_density_law_continuous_at_break_and_scaling():
    s = load_space(1)
    d = dict(zip(s.names, s.from_unit(np.full(15, 0.5))))
    d.update(v_inner=10000.0, log_rho_0=-13.0, density_exp=-7.0, density_exp_outer=-10.0, v_break=15000.0, t_exp=19.0)
    th = s.from_dict(d)
    ej = build_ejecta(th, s)
    v = np.asarray(ej.v_mid)
    expected = np.where(v < 15000, 1e-13 * (v / 1e4) ** -7, 1e-13 * 1.5**-7 * (v / 15000) ** -10)
    np.testing.assert_allclose(np.asarray(ej.rho), expected, rtol=1e-12)
    # (t_ref / t_exp)^3 scaling
    d["t_exp"] = 38.0
    ej2 = build_ejecta(s.from_dict(d), s)
    np.testing.assert_allclose(np.asarray(ej2.rho), expected / 8.0, rtol=1e-12)
    assert float(ej2.t_exp) == 38.0 * DAY
    # shells uniform from v_inner to 25000 km/s
    np.testing.assert_allclose(np.asarray(ej.v_inner)[0], 10000.0)
    np.testing.assert_allclose(np.asarray(ej.v_outer)[-1], 25000.0)


def test_stage1_zones_and_decay_in_shells():
    s = load_space(1)
    d = dict(zip(s.names, s.from_unit(np.full(15, 0.5))))
    d.update(v_inner=8000.0, v_core=11000.0, v_wall=17000.0, X_Fe_core=0.3, X_Si_wall=0.4, X_Fe_wall=0.05,
             X_Fe_outer=0.01, X_Ni=0.2, t_exp=19.0)
    ej = build_ejecta(s.from_dict(d), s)
    X, v = np.asarray(ej.X), np.asarray(ej.v_mid)
    core = v < 10500  # shells entirely inside the core (edges every 566.7 km/s)
    wall = (v > 11600) & (v < 16500)
    ni, co, fe = (float(a) for a in ni56_decay(0.2, 19.0))
    np.testing.assert_allclose(X[core, EL["Fe"]], 0.3 + fe, rtol=1e-10)
    np.testing.assert_allclose(X[core, EL["Ni"]], ni, rtol=1e-10)
    np.testing.assert_allclose(X[core, EL["Co"]], co, rtol=1e-10)
    np.testing.assert_allclose(X[wall, EL["Si"]], 0.4, rtol=1e-10)
    np.testing.assert_allclose(X[:, EL["C"]], 0.02)
    # a shell straddling v_core gets the volume-weighted mixture
    i = int(np.argmax(np.asarray(ej.v_outer) > 11000))
    a, b = float(ej.v_inner[i]), float(ej.v_outer[i])
    w_core = (11000**3 - a**3) / (b**3 - a**3)
    assert X[i, EL["Si"]] == pytest.approx(w_core * 0.05 + (1 - w_core) * 0.4, rel=1e-10)


def test_velocity_anchored_vs_index_zones():
    import dataclasses

    s = load_space(2)
    th = s.from_unit(np.zeros(s.dim))  # all species at their lower bounds: no renormalisation
    th[s.index("v_break")] = 20000.0
    for z in range(6):
        th[s.index(f"X_Si_z{z}")] = 0.05 + 0.1 * z
    ej = build_ejecta(th, s)
    # velocity-anchored: zone z covers 7000+3000z .. 10000+3000z km/s, independent of v_inner
    lo, hi = np.asarray(ej.v_inner), np.asarray(ej.v_outer)
    inside4 = (lo >= 19000) & (hi <= 22000)
    assert inside4.sum() >= 4
    np.testing.assert_allclose(np.asarray(ej.X[inside4, EL["Si"]]), 0.45, rtol=1e-10)
    th2 = th.copy()
    th2[s.index("v_inner")] = 12000.0
    ej_moved = build_ejecta(th2, s)
    lo2, hi2 = np.asarray(ej_moved.v_inner), np.asarray(ej_moved.v_outer)
    np.testing.assert_allclose(np.asarray(ej_moved.X[(lo2 >= 19000) & (hi2 <= 22000), EL["Si"]]), 0.45, rtol=1e-10)
    si = dataclasses.replace(s, zones=dataclasses.replace(s.zones, mapping="index"))
    ej2 = build_ejecta(th, si)
    np.testing.assert_allclose(np.asarray(ej2.X[:5, EL["Si"]]), 0.05)  # shells 0-4 -> zone 0
    np.testing.assert_allclose(np.asarray(ej2.X[25:, EL["Si"]]), 0.55)


def test_renormalise_smooth_and_identity_below_knee():
    h = jnp.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(renormalise(h), h)
    big = jnp.array([0.9, 0.9, 0.9])
    assert float(renormalise(big).sum()) < 0.98
    g = jax.grad(lambda x: renormalise(x).sum())(big)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("key", [1, 2, 3])
def test_jit_vmap_grad(key):
    space = SPACES[key]
    rng = np.random.default_rng(1)
    thetas = np.stack([valid_point(space, rng.random(space.dim)) for _ in range(16)])
    f = jax.jit(jax.vmap(lambda t: build_ejecta(t, space)))
    ejs = f(thetas)
    assert ejs.X.shape == (16, 30, 11)
    one = build_ejecta(thetas[3], space)
    np.testing.assert_allclose(np.asarray(ejs.X[3]), np.asarray(one.X), rtol=1e-9, atol=1e-14)

    def scalar(t):
        e = build_ejecta(t, space)
        return jnp.sum(e.rho * e.X[:, EL["Si"]]) / jnp.sum(e.rho) + jnp.sum(e.X[:, EL["Ni"]])

    grads = jax.vmap(jax.grad(scalar))(jnp.asarray(thetas))
    assert np.all(np.isfinite(np.asarray(grads)))
    # a stage-1 gradient with respect to v_core is non-zero: zones respond smoothly
    if key == 1:
        assert np.any(np.abs(np.asarray(grads)[:, space.index("v_core")]) > 0)


def test_stage1_composition_in_zones_is_the_volume_average_of_the_layers():
    """Stage-2 zones (edges 7000, 10000, ..., 25000 km/s) of a stage-1 layered model with
    v_core = 12000 and v_wall = 16000: a zone inside one layer takes its values, the zone
    10000-13000 the volume (v^3) weighted mix of core and wall."""
    s2 = load_space(2)
    p = {"v_core": 12000.0, "v_wall": 16000.0, "X_Fe_core": 0.4, "X_Si_wall": 0.5, "X_Fe_wall": 0.05,
         "X_Ni": 0.15, "X_Fe_outer": 0.01}
    z = stage1_composition_in_zones(p, s2)
    assert len(z) == 6 * 8 and all(n in s2.names for n in z)
    assert z["X_Fe_z0"] == pytest.approx(0.4) and z["X_Si_z2"] == pytest.approx(0.5)
    assert z["X_Fe_z5"] == pytest.approx(0.01) and z["X_Ni_z3"] == pytest.approx(0.15)
    w_core = (12.0**3 - 10.0**3) / (13.0**3 - 10.0**3)
    assert z["X_Fe_z1"] == pytest.approx(w_core * 0.4 + (1 - w_core) * 0.05)
    with pytest.raises(ValueError):
        stage1_composition_in_zones(p, load_space(1))
