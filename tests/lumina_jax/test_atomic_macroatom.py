"""Lucy's macro-atom blocks and branching probabilities against hand computations."""

import numpy as np
import pytest

import lumina_jax  # noqa: F401  (float64)
import jax
import jax.numpy as jnp
from hypothesis import given, strategies as st

from lumina_jax.atomic import macroatom as M

H_EV_S = 4.135667696e-15

# three-level atom: levels at 0, 2, 5 eV; lines 0-2, 1-2, 0-1 with A = 1e8, 3e7, 5e7 1/s
LOWER, UPPER = np.array([0, 1, 0]), np.array([2, 2, 1])
EPS = np.array([0.0, 2.0, 5.0])
A = np.array([1e8, 3e7, 5e7])
NU = (EPS[UPPER] - EPS[LOWER]) / H_EV_S
GF = A / NU**2  # with g_u = 1 the weights a = nu^2 gf beta are A beta


def probabilities(tau, nbar=0.0, sigma=1.0, g_scale=1.0):
    macro = M.build(LOWER, UPPER, 3)
    tau = jnp.atleast_2d(jnp.asarray(tau, dtype=jnp.float64))
    w = M.transition_weights(macro, jnp.asarray(NU), jnp.asarray(GF * g_scale), jnp.asarray(EPS), tau,
                             jnp.full(tau.shape, sigma), jnp.full(tau.shape, nbar))
    return macro, np.asarray(M.normalise(macro, w))


def prob(macro, p, src, dst, kind):
    k = np.flatnonzero((macro.src == src) & (macro.dst == dst) & (macro.kind == kind))
    return float(p[0, k].sum())


def test_block_layout():
    macro = M.build(LOWER, UPPER, 3)
    assert macro.n_transitions == 9
    assert list(macro.block_start) == [0, 2, 5, 9]
    for i in range(3):
        blk = slice(macro.block_start[i], macro.block_start[i + 1])
        assert np.all(macro.src[blk] == i)
        assert np.all(np.diff(macro.kind[blk]) >= 0)  # emission, internal down, internal up
    # each line: one emission and one internal down out of its upper level, one internal up out of its lower
    for k in range(3):
        sel = macro.line == k
        assert sorted(zip(macro.kind[sel], macro.src[sel], macro.dst[sel])) == sorted(
            [(M.EMISSION, UPPER[k], LOWER[k]), (M.INTERNAL_DOWN, UPPER[k], LOWER[k]), (M.INTERNAL_UP, LOWER[k], UPPER[k])])


def test_three_level_atom_lucy_weights_by_hand():
    tau = np.array([50.0, 0.5, 2.0])
    macro, p = probabilities(tau)
    beta = (1 - np.exp(-tau)) / tau
    a = A * beta
    # level 2: emission 2->0 weight a02 * 5, emission 2->1 a12 * 3, internal 2->1 a12 * 2, internal 2->0 a02 * 0
    d2 = a[0] * 5 + a[1] * 3 + a[1] * 2
    assert prob(macro, p, 2, 0, M.EMISSION) == pytest.approx(a[0] * 5 / d2, rel=1e-12)
    assert prob(macro, p, 2, 1, M.EMISSION) == pytest.approx(a[1] * 3 / d2, rel=1e-12)
    assert prob(macro, p, 2, 1, M.INTERNAL_DOWN) == pytest.approx(a[1] * 2 / d2, rel=1e-12)
    assert prob(macro, p, 2, 0, M.INTERNAL_DOWN) == 0.0  # Lucy: a jump into the ground state has weight eps_0 = 0
    # the energy fractions of the reference note (checked there with a direct solve): 0.07810 / 0.55314 / 0.36876
    np.testing.assert_allclose([prob(macro, p, 2, 0, M.EMISSION), prob(macro, p, 2, 1, M.EMISSION),
                                prob(macro, p, 2, 1, M.INTERNAL_DOWN)], [0.07810, 0.55314, 0.36876], atol=5e-6)
    # level 1 (no pumping): emits 1->0 with probability 1; the ground level has no weight at all
    assert prob(macro, p, 1, 0, M.EMISSION) == pytest.approx(1.0)
    assert np.all(p[0, macro.block_start[0]:macro.block_start[1]] == 0.0)


def test_pumping_weights_and_block_sums():
    tau, nbar, sigma = np.array([3.0, 0.2, 1.0]), 0.05, 0.9
    macro, p = probabilities(tau, nbar=nbar, sigma=sigma)
    a = A * (1 - np.exp(-tau)) / tau
    # level 1: emission 1->0 a01 * 2, internal down 1->0 a01 * 0, internal up 1->2 a12 sigma nbar * 2
    d1 = a[2] * 2 + a[1] * sigma * nbar * 2
    assert prob(macro, p, 1, 2, M.INTERNAL_UP) == pytest.approx(a[1] * sigma * nbar * 2 / d1, rel=1e-12)
    sums = [p[0, macro.block_start[i]:macro.block_start[i + 1]].sum() for i in range(3)]
    np.testing.assert_allclose(sums, [0.0, 1.0, 1.0], atol=1e-14)


def test_probabilities_do_not_depend_on_a_common_scale_of_gf():
    # weights of a block carry the source level's 1/g: scaling all gf (or all g) leaves p unchanged
    _, p1 = probabilities(np.array([5.0, 0.1, 0.7]), nbar=0.1)
    _, p2 = probabilities(np.array([5.0, 0.1, 0.7]), nbar=0.1, g_scale=7.0)
    np.testing.assert_allclose(p1, p2, rtol=1e-12)


@given(st.lists(st.floats(0.0, 1e4), min_size=3, max_size=3), st.floats(0.0, 1.0))
def test_probabilities_and_gradients_finite_for_any_depth(tau, nbar):
    tau = np.asarray(tau)
    macro, p = probabilities(tau, nbar=nbar)
    assert np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(p <= 1 + 1e-12)

    def f(t):
        w = M.transition_weights(macro, jnp.asarray(NU), jnp.asarray(GF), jnp.asarray(EPS), t[None],
                                 jnp.ones((1, 3)), jnp.full((1, 3), nbar))
        return M.normalise(macro, w)[0, 5]

    g = jax.grad(f)(jnp.asarray(tau))
    assert np.all(np.isfinite(np.asarray(g)))


def test_gradient_equals_finite_differences():
    macro = M.build(LOWER, UPPER, 3)

    def f(t):
        w = M.transition_weights(macro, jnp.asarray(NU), jnp.asarray(GF), jnp.asarray(EPS), t[None],
                                 jnp.ones((1, 3)), jnp.full((1, 3), 0.02))
        return M.normalise(macro, w)[0, 6]  # emission 2 -> 1

    t0 = jnp.array([40.0, 0.3, 2.0])
    g = np.asarray(jax.grad(f)(t0))
    h = 1e-6
    fd = [(f(t0.at[i].add(h)) - f(t0.at[i].add(-h))) / (2 * h) for i in range(3)]
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-12)


def test_escape_probability_limits():
    tau = jnp.array([0.0, 1e-8, 1e-3, 1.0, 1e3])
    b = np.asarray(M.escape_probability(tau))
    np.testing.assert_allclose(b, [1.0, 1.0 - 5e-9, (1 - np.exp(-1e-3)) / 1e-3, 1 - np.exp(-1.0), 1e-3], rtol=1e-9)
    assert np.isfinite(float(jax.grad(lambda t: M.escape_probability(t))(0.0)))


def test_dilute_blackbody_occupation_number():
    nu, w, t = jnp.array([5e14]), jnp.array([0.3]), jnp.array([9000.0])
    nbar = float(M.dilute_blackbody_occupation(nu, w, t)[0, 0])
    jb = 0.3 * float(M.planck_nu(5e14, 9000.0))
    assert nbar == pytest.approx(jb * M.C_CGS**2 / (2 * M.H_CGS * 5e14**3), rel=1e-12)
