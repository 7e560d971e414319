"""The flat density's coordinates: one source (the NumPyro model's transforms) for the density,
``constrain``, ``z_from_values``, ``prior_draws`` and the MAP search's box Jacobian."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import stats

import lumina_jax  # noqa: F401  (float64)
from lumina_jax.inference import density as D
from lumina_jax.inference.likelihood import make_likelihood_data

from inference_toys import ToyEmulator, toy_space

LINKS_AND_PRIORS = [(link, prior) for link in D.BOX_LINKS for prior in D.F_SYS_PRIORS]


def _model(box_link, f_sys_prior, n_poly=2):
    sp = toy_space()
    emu = ToyEmulator(sp)
    w = np.asarray(emu.wavelength)
    data = make_likelihood_data(w, np.ones_like(w), 0.01 * np.ones_like(w), np.ones(w.size, bool))
    setup = D.make_setup(sp, n_poly=n_poly, box_link=box_link, f_sys_prior=f_sys_prior)
    return D.flatten_model(setup, emu.spectrum_and_sigma, data), setup


@pytest.mark.parametrize("box_link, f_sys_prior", LINKS_AND_PRIORS)
def test_layout_is_explicit_and_names_follow_it(box_link, f_sys_prior):
    fm, setup = _model(box_link, f_sys_prior)
    sys = "f_sys_signed" if f_sys_prior == "half-normal" else "log_f_sys"
    assert [k for k, _ in fm.site_shapes] == [sys, "log_scale", "poly", "u"]
    assert D.z_names(fm) == [sys, "log_scale", "poly_1", "poly_2", "u:a", "u:v", "u:d"]
    z = jnp.arange(fm.n_z, dtype=float)
    parts = fm.unravel(z)
    assert float(parts[sys]) == 0.0 and np.array_equal(np.asarray(parts["u"]), [4.0, 5.0, 6.0])
    np.testing.assert_array_equal(np.asarray(fm.ravel(parts)), np.asarray(z))


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(LINKS_AND_PRIORS), st.lists(st.floats(0.03, 0.97), min_size=3, max_size=3),
       st.floats(-1.0, 1.0), st.floats(0.002, 0.25))
def test_z_from_values_inverts_constrain(link_prior, u, log_scale, f_sys):
    fm, _ = _model(*link_prior)
    z = D.z_from_values(fm, jnp.asarray(u), log_scale, f_sys, jnp.array([0.05, -0.02]))
    c = fm.constrain(z)
    np.testing.assert_allclose(np.asarray(c["u"]), u, rtol=1e-9)
    assert float(c["log_scale"]) == pytest.approx(log_scale, abs=1e-12)
    assert float(c["f_sys"]) == pytest.approx(f_sys, rel=1e-9)
    np.testing.assert_allclose(np.asarray(c["poly"]), [0.05, -0.02], atol=1e-15)


@pytest.mark.parametrize("box_link", D.BOX_LINKS)
def test_box_jacobian_is_the_derivative_of_the_link(box_link):
    """box_log_jacobian = sum log |du_i / dz_i|, by automatic differentiation of constrain."""
    fm, setup = _model(box_link, "half-normal")
    z = jax.random.normal(jax.random.PRNGKey(2), (fm.n_z,))
    jac = jax.jacfwd(lambda zz: fm.constrain(zz)["u"])(z)
    iu = [D.z_names(fm).index(f"u:{n}") for n in setup.free]
    want = float(jnp.sum(jnp.log(jnp.abs(jnp.diagonal(jac[:, jnp.array(iu)])))))
    assert float(D.box_log_jacobian(fm, z)) == pytest.approx(want, rel=1e-10)


def test_probit_link_is_a_numpyro_transform_with_the_normal_density():
    t = D.box_transform("probit")
    assert isinstance(t, D.ProbitTransform)
    w = jnp.linspace(-4.0, 4.0, 9)
    np.testing.assert_allclose(np.asarray(t(w)), stats.norm.cdf(np.asarray(w)), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t.log_abs_det_jacobian(w, t(w))), stats.norm.logpdf(np.asarray(w)),
                               rtol=1e-12)
    np.testing.assert_allclose(np.asarray(t.inv(t(w))), np.asarray(w), atol=1e-9)


@pytest.mark.parametrize("box_link, f_sys_prior", LINKS_AND_PRIORS)
def test_prior_draws_give_uniform_box_coordinates_and_the_nuisance_priors(box_link, f_sys_prior):
    fm, setup = _model(box_link, f_sys_prior)
    z = D.prior_draws(fm, jax.random.PRNGKey(1), 4000)
    c = jax.vmap(fm.constrain)(z)
    for j in range(setup.n_free):  # u ~ U(0, 1): KS test at the 1e-3 level
        assert stats.kstest(np.asarray(c["u"][:, j]), "uniform").pvalue > 1e-3
    assert stats.kstest(np.asarray(c["log_scale"]) / setup.log_scale_sd, "norm").pvalue > 1e-3
    if f_sys_prior == "half-normal":
        assert stats.kstest(np.asarray(c["f_sys"]) / setup.f_sys_scale, "halfnorm").pvalue > 1e-3
    else:
        lo, hi = np.log(setup.f_sys_range)
        assert stats.kstest((np.log(np.asarray(c["f_sys"])) - lo) / (hi - lo), "uniform").pvalue > 1e-3
